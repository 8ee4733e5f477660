"""Sub-pixel versus XLA convolutions, PRNet's stride-2 layers at 256x256.

  python -m experiments.benchmarks.conv_transpose_speed --batch 4 \
      [--quick-shapes] [--voxel]
  python -m experiments.benchmarks.conv_transpose_speed --batch 128 \
      --dtype bfloat16 --repeats 20   # on an accelerator

With the `jaxface` command's host setup (`jaxface.host_setup`: on CPU,
XLA's Eigen convolutions and huge pages), times forward + backward (value
and gradients w.r.t. input and kernel), jitted, medians of --repeats (5),
in --dtype (float32):
- each stride-2 transposed 4x4 convolution of the decoder (8 -> 16 ...
  128 -> 256): `jax.lax.conv_transpose` against
  `layers.conv_transpose_subpixel`;
- each stride-2 4x4 convolution of the encoder (256 -> 128 ... 16 -> 8):
  `jax.lax.conv_general_dilated` against the same convolution with
  `layers.strided_conv_input_grad` as its input gradient and
  `layers.strided_conv_kernel_grad` as its kernel gradient on any device
  (`layers.conv_stride2` uses them on the CPU alone, from
  `layers.SUBPIXEL_GRAD_MIN_ELEMENTS` and
  `layers.PHASE_KERNEL_GRAD_MIN_ELEMENTS` inputs);
- the kernel gradient of those alone (and with --quick-shapes, at the
  quickstart's batch 16 and 64x64 input, where XLA's is kept): XLA's (a
  convolution with a dilated window) against `strided_conv_kernel_grad`;
- with --voxel, the input and kernel gradients of the face GAN's voxel
  discriminator's 4x4x4 stride-2 convolutions (`facegen_quick.py` with
  `--config.facegen.head=voxel --config.facegen.voxel_size=32`, batch 16):
  XLA's against `strided_conv_input_grad` and `strided_conv_kernel_grad`;
  and the generator's output convolution (3x3x3, 16 -> 1 channel), XLA's
  against `conv_with_tap_channels`, and its stride-2 transposed
  convolutions, `conv_transpose_subpixel`'s 2^3 parity convolutions
  against `conv_transpose_stacked`, forward and both gradients.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from jaxface import host_setup
from jaxface.models import layers

# (input side, input channels, output channels) of PRNet's stride-2 layers.
_DIMS = ('NHWC', 'HWIO', 'NHWC')
LAYERS = ((8, 512, 256), (16, 256, 128), (32, 128, 64), (64, 64, 32),
          (128, 32, 16))
ENCODER_LAYERS = ((256, 16, 16), (128, 32, 32), (64, 64, 64), (32, 128, 128),
                  (16, 256, 256))
# (input side, channels in, out) of the voxel discriminator's stride-2
# convolutions at voxel_size 32, disc_base_channels 32.
VOXEL_LAYERS = ((32, 1, 32), (16, 32, 64), (8, 64, 128))
# (input side, channels in, out) of the voxel generator's stride-2
# transposed convolutions (`facegen_quick.py`, voxel_size 32; the input
# channels include the code every stage gets).
GENERATOR_VOXEL_LAYERS = ((4, 128, 32), (8, 96, 16), (16, 80, 16))
# The same at a quarter of the width and 64x64: the quickstart's encoder.
QUICK_ENCODER_LAYERS = ((64, 4, 4), (32, 8, 8), (16, 16, 16), (8, 32, 32),
                        (4, 64, 64))


_PADDING = ((1, 1), (1, 1))  # 'SAME' for a stride-2 4x4 convolution


def _conv(x, k):
  return jax.lax.conv_general_dilated(x, k, (2, 2), _PADDING,
                                      dimension_numbers=_DIMS)


@jax.custom_vjp
def subpixel_grad_conv(x, k):
  """The stride-2 convolution whose gradients are stride-1 convolutions on
  every device: the sub-pixel input gradient, the phase kernel gradient."""
  return _conv(x, k)


def _subpixel_grad_conv_fwd(x, k):
  return _conv(x, k), (x, k)


def _subpixel_grad_conv_bwd(residuals, g):
  x, k = residuals
  dx = layers.strided_conv_input_grad(g, k, _PADDING, x.shape[1:-1])
  dk = layers.strided_conv_kernel_grad(x, g, _PADDING, k.shape[:2])
  return dx.astype(x.dtype), dk.astype(k.dtype)


subpixel_grad_conv.defvjp(_subpixel_grad_conv_fwd, _subpixel_grad_conv_bwd)


def xla_kernel_grad(x, g):
  """XLA's kernel gradient of the stride-2 4x4 convolution."""
  kernel = jnp.zeros((4, 4, x.shape[-1], g.shape[-1]), x.dtype)
  return jax.vjp(lambda k: _conv(x, k), kernel)[1](g)[0]


def phase_kernel_grad(x, g):
  return layers.strided_conv_kernel_grad(x, g, _PADDING, (4, 4))


def median_seconds(fn, *args, repeats=5):
  """Median seconds of `repeats` calls of a jitted `fn(*args)`, after one."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _compare(title, shapes, args, reference, ours, out_side):
  batch = args.batch
  total_ref = total_ours = 0.0
  for side, cin, cout in shapes:
    x = jax.random.normal(jax.random.key(0), (batch, side, side, cin),
                          args.dtype)
    k = (jax.random.normal(jax.random.key(1), (4, 4, cin, cout)) * 0.05
         ).astype(args.dtype)
    times = []
    for fn in (reference, ours):
      step = jax.jit(jax.value_and_grad(
          lambda x, k, fn=fn: jnp.sum(fn(x, k).astype(jnp.float32)**2),
          argnums=(0, 1)))
      times.append(median_seconds(step, x, k, repeats=args.repeats))
    total_ref += times[0]
    total_ours += times[1]
    print(f'{side:>3} -> {out_side(side):<3} {cin:>3} -> {cout:<3} channels: '
          f'XLA {times[0] * 1e3:8.1f} ms, sub-pixel {times[1] * 1e3:8.1f} ms '
          f'({times[0] / times[1]:.1f}x)')
  print(f'{title}, forward + backward, batch {batch}, {args.dtype} on '
        f'{jax.devices()[0].device_kind}: {total_ref * 1e3:.0f} ms vs '
        f'{total_ours * 1e3:.0f} ms ({total_ref / total_ours:.1f}x faster)')


def _compare_kernel_grads(title, shapes, batch, args):
  total = [0.0, 0.0]
  for side, cin, cout in shapes:
    x = jax.random.normal(jax.random.key(0), (batch, side, side, cin),
                          args.dtype)
    g = jax.random.normal(jax.random.key(1),
                          (batch, side // 2, side // 2, cout), args.dtype)
    times = [median_seconds(jax.jit(fn), x, g, repeats=args.repeats)
             for fn in (xla_kernel_grad, phase_kernel_grad)]
    total = [t + dt for t, dt in zip(total, times)]
    print(f'{side:>3} -> {side // 2:<3} {cin:>3} -> {cout:<3} channels, '
          f'{x.size / 2**20:.2f}M inputs: XLA {times[0] * 1e3:7.2f} ms, '
          f'phases {times[1] * 1e3:7.2f} ms ({times[0] / times[1]:.1f}x)')
  print(f'{title}, batch {batch}, {args.dtype} on '
        f'{jax.devices()[0].device_kind}: {total[0] * 1e3:.1f} ms vs '
        f'{total[1] * 1e3:.1f} ms ({total[0] / total[1]:.1f}x faster)')


def _three_passes(name, conv, x, k, g, repeats) -> str:
  """'NAME forward / input gradient / kernel gradient' ms of conv(x, k),
  the gradients for the output gradient g."""
  passes = (lambda x, k, g: conv(x, k),
            lambda x, k, g: jax.vjp(lambda x: conv(x, k), x)[1](g)[0],
            lambda x, k, g: jax.vjp(lambda k: conv(x, k), k)[1](g)[0])
  times = [median_seconds(jax.jit(fn), x, k, g, repeats=repeats)
           for fn in passes]
  return f'{name} ' + ' / '.join(f'{t * 1e3:.1f}' for t in times)


def _compare_voxel_grads(args, batch: int = 16):
  dims = ('NDHWC', 'DHWIO', 'NDHWC')
  padding = ((1, 1),) * 3  # 'SAME' for a stride-2 4x4x4 convolution
  for side, cin, cout in VOXEL_LAYERS:
    x = jax.random.normal(jax.random.key(0), (batch, side, side, side, cin),
                          args.dtype)
    k = jax.random.normal(jax.random.key(1), (4, 4, 4, cin, cout), args.dtype)
    g = jax.random.normal(jax.random.key(2),
                          (batch,) + (side // 2,) * 3 + (cout,), args.dtype)
    conv = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
        x, k, (2, 2, 2), padding, dimension_numbers=dims)
    forms = {
        'input': (lambda x, k, g: jax.vjp(lambda x: conv(x, k), x)[1](g)[0],
                  lambda x, k, g: layers.strided_conv_input_grad(
                      g, k, padding, x.shape[1:-1])),
        'kernel': (lambda x, k, g: jax.vjp(lambda k: conv(x, k), k)[1](g)[0],
                   lambda x, k, g: layers.strided_conv_kernel_grad(
                       x, g, padding, k.shape[:3])),
    }
    cells = []
    for name, (xla, ours) in forms.items():
      times = [median_seconds(jax.jit(fn), x, k, g, repeats=args.repeats)
               for fn in (xla, ours)]
      cells.append(f'{name} gradient XLA {times[0] * 1e3:7.1f} ms, ours '
                   f'{times[1] * 1e3:6.1f} ms ({times[0] / times[1]:.1f}x)')
    print(f'{side:>2}^3 -> {side // 2:<2}^3 {cin:>3} -> {cout:<3} channels, '
          f'batch {batch}: ' + '; '.join(cells))
  # The generator's output convolution: 3x3x3, 16 -> 1 channel, stride 1.
  side, cin, cout, padding = 32, 16, 1, ((1, 1),) * 3
  x = jax.random.normal(jax.random.key(0), (batch,) + (side,) * 3 + (cin,),
                        args.dtype)
  k = jax.random.normal(jax.random.key(1), (3, 3, 3, cin, cout), args.dtype)
  g = jax.random.normal(jax.random.key(2), (batch,) + (side,) * 3 + (cout,),
                        args.dtype)
  cells = [_three_passes(name, conv, x, k, g, args.repeats)
           for name, conv in (
               ('XLA', lambda x, k: jax.lax.conv_general_dilated(
                   x, k, (1, 1, 1), padding, dimension_numbers=dims)),
               ('tap channels', lambda x, k: layers.conv_with_tap_channels(
                   x, k, padding)))]
  print(f'{side}^3 {cin} -> {cout} channel, 3x3x3 stride 1, batch {batch}, '
        'forward / input / kernel gradient ms: ' + '; '.join(cells))
  # The generator's transposed convolutions: 2^3 parity convolutions
  # against one to all their channels (`ConvTranspose` on CPU in 3D).
  for side, cin, cout in GENERATOR_VOXEL_LAYERS:
    x = jax.random.normal(jax.random.key(0), (batch,) + (side,) * 3 + (cin,),
                          args.dtype)
    k = (jax.random.normal(jax.random.key(1), (4, 4, 4, cin, cout)) * 0.05
         ).astype(args.dtype)
    g = jax.random.normal(jax.random.key(2),
                          (batch,) + (2 * side,) * 3 + (cout,), args.dtype)
    cells = [_three_passes(name, conv, x, k, g, args.repeats)
             for name, conv in (('parities', layers.conv_transpose_subpixel),
                                ('stacked', layers.conv_transpose_stacked))]
    print(f'{side:>2}^3 -> {2 * side:<2}^3 {cin:>3} -> {cout:<3} channels, '
          f'4x4x4 transposed, batch {batch}, forward / input / kernel '
          'gradient ms: ' + '; '.join(cells))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--dtype', default='float32',
                      choices=('float32', 'bfloat16'))
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--voxel', action='store_true',
                      help="also the voxel networks' 3D convolutions (the "
                      "discriminator's strided gradients, the generator's "
                      'output and transposed convolutions)')
  parser.add_argument('--quick-shapes', action='store_true',
                      help='also the kernel gradients at the quickstart\'s '
                      'shapes (batch 16, 64x64, a quarter of the width)')
  args = parser.parse_args()
  _compare('the five transposed convolutions', LAYERS, args,
           lambda x, k: jax.lax.conv_transpose(x, k, (2, 2), 'SAME',
                                               dimension_numbers=_DIMS),
           layers.conv_transpose_subpixel, lambda side: 2 * side)
  _compare('the five stride-2 convolutions', ENCODER_LAYERS, args, _conv,
           subpixel_grad_conv, lambda side: side // 2)
  _compare_kernel_grads('their kernel gradients', ENCODER_LAYERS, args.batch,
                        args)
  if args.quick_shapes:
    _compare_kernel_grads("the quickstart's kernel gradients",
                          QUICK_ENCODER_LAYERS, 16, args)
  if args.voxel:
    _compare_voxel_grads(args)


if __name__ == '__main__':
  host_setup.set_up()  # as the `jaxface` command runs
  main()
