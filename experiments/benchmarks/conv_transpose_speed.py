"""Sub-pixel versus XLA convolutions, PRNet's stride-2 layers at 256x256.

  python -m experiments.benchmarks.conv_transpose_speed --batch 4
  python -m experiments.benchmarks.conv_transpose_speed --batch 128 \
      --dtype bfloat16 --repeats 20   # on an accelerator

Times forward + backward (value and gradients w.r.t. input and kernel),
jitted, medians of --repeats (5), in --dtype (float32):
- each stride-2 transposed 4x4 convolution of the decoder (8 -> 16 ...
  128 -> 256): `jax.lax.conv_transpose` against
  `layers.conv_transpose_subpixel`;
- each stride-2 4x4 convolution of the encoder (256 -> 128 ... 16 -> 8):
  `jax.lax.conv_general_dilated` against the same convolution with
  `layers.strided_conv_input_grad` as its input gradient on any device
  (`layers.conv_stride2` uses it on the CPU alone, and `layers.Conv` from
  `layers.SUBPIXEL_GRAD_MIN_ELEMENTS` inputs).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from jaxface.models import layers

# (input side, input channels, output channels) of PRNet's stride-2 layers.
_DIMS = ('NHWC', 'HWIO', 'NHWC')
LAYERS = ((8, 512, 256), (16, 256, 128), (32, 128, 64), (64, 64, 32),
          (128, 32, 16))
ENCODER_LAYERS = ((256, 16, 16), (128, 32, 32), (64, 64, 64), (32, 128, 128),
                  (16, 256, 256))


_PADDING = ((1, 1), (1, 1))  # 'SAME' for a stride-2 4x4 convolution


def _conv(x, k):
  return jax.lax.conv_general_dilated(x, k, (2, 2), _PADDING,
                                      dimension_numbers=_DIMS)


@jax.custom_vjp
def subpixel_grad_conv(x, k):
  """The stride-2 convolution whose input gradient is sub-pixel on every
  device."""
  return _conv(x, k)


def _subpixel_grad_conv_fwd(x, k):
  return _conv(x, k), (x, k)


def _subpixel_grad_conv_bwd(residuals, g):
  x, k = residuals
  dx = layers.strided_conv_input_grad(g, k, _PADDING, x.shape[1:-1])
  return dx.astype(x.dtype), jax.vjp(lambda k: _conv(x, k), k)[1](g)[0]


subpixel_grad_conv.defvjp(_subpixel_grad_conv_fwd, _subpixel_grad_conv_bwd)


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


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--dtype', default='float32',
                      choices=('float32', 'bfloat16'))
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  _compare('the five transposed convolutions', LAYERS, args,
           lambda x, k: jax.lax.conv_transpose(x, k, (2, 2), 'SAME',
                                               dimension_numbers=_DIMS),
           layers.conv_transpose_subpixel, lambda side: 2 * side)
  _compare('the five stride-2 convolutions', ENCODER_LAYERS, args, _conv,
           subpixel_grad_conv, lambda side: side // 2)


if __name__ == '__main__':
  main()
