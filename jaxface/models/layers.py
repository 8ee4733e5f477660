"""Layers shared by jaxface's networks, and fast stride-2 convolutions.

XLA's CPU backend runs a convolution with an input dilation (a transposed
convolution, and so the input gradient of a strided convolution) about ten
times slower than a plain convolution of the same work. Both are computed
here as sub-pixel convolutions: split the input side into its two
parities, and each parity of

    dx[2 j + b] = sum over taps t with t = 2 (j - i) + b + lo of  w[t] g[i]

is a stride-1 convolution of g with the taps of one parity of the kernel;
the parities interleave. `strided_conv_input_grad` does this for any
kernel and padding of a stride-2 convolution on even sides. Its kernel
gradient, which XLA computes as a convolution with a dilated window, is
likewise a stride-1 one on the input's 2^n phases stacked as channels
(`strided_conv_kernel_grad`). In 3D (the face GAN's voxel discriminator)
XLA's CPU forms of both are slow at every size: its input gradient 24 to 36
times, its kernel gradient 3 to 4 times slower.

- `Conv`: `flax.linen.Conv` ('SAME' padding) whose stride-2 case uses both
  for its gradients on CPU (`conv_stride2`, a `jax.custom_vjp`).
- `ConvTranspose`: `flax.linen.ConvTranspose` whose stride-2, kernel-4 case
  is its forward pass (a transposed convolution is the input gradient of
  the convolution with the flipped kernel). In 3D on CPU the 2^3 parities
  run as one convolution to all their output channels
  (`conv_transpose_stacked`): XLA's CPU 3D convolutions are several times
  faster per FLOP with more output channels.

XLA's CPU stride-1 convolutions are also slow in two corners that PRNet's
narrow and small variants reach (`conv_stride1`): an input smaller than
the kernel (PRNet's bottleneck at 2x2 or 3x3, 4x4 kernels: forward and
backward 3 to 5 times slower than the same product as one matrix
multiplication of the input's patches, which is computed there with its
own gradients) and very few channels (PRNet's first convolution, 5 -> 4
channels: 5 times slower than the same convolution on 2x2 pixel blocks,
which has 4 times the channels; its forward pass and its input gradient,
the same convolution of the output gradient with the flipped kernel, are
computed so; its kernel gradient stays XLA's). In 3D, a convolution to
few channels (the face GAN's voxel head, 16 -> 1) is 3 to 17 times slower
than one matrix product to every tap's output channels followed by the
taps' shifted sums (`conv_with_tap_channels`, with its own gradients).

The transposed convolutions are sub-pixel on every backend: on an H200
(bfloat16, batch 256, forward + backward) PRNet's five took 10 ms against
33 ms for XLA's. The strided gradients and the stride-1 forms are the
CPU's alone (`jax.lax.platform_dependent`): other backends keep XLA's own
convolutions there. Measured in
`experiments/benchmarks/conv_transpose_speed.py` and
`experiments/benchmarks/conv_stride1_speed.py`.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# XLA's CPU input gradient of a stride-2 convolution is fine on small inputs
# and ten times slower than the sub-pixel one from about 2M elements (batch
# 4 at 128x128x32 and 256x256x16, batch 16 at 128x128x8), 1.2x faster below
# 1M; `experiments/benchmarks/conv_transpose_speed.py` measures both.
SUBPIXEL_GRAD_MIN_ELEMENTS = 2**21

# From about 1M input elements XLA's CPU kernel gradient of a 2D stride-2
# convolution (a convolution with a dilated window) is 1.3 to 3 times slower
# than `strided_conv_kernel_grad` (4x4 kernels over 4x64x64x64: 8.2 against
# 4.9 ms; over 4x256x256x16: 27 against 14 ms); below, up to 1.4 times
# faster. In 3D it is 3-4 times slower at every size measured (4x4x4 over
# 2x8^3x16 to 4x64^3x1). `experiments/benchmarks/conv_transpose_speed.py`
# measures both.
PHASE_KERNEL_GRAD_MIN_ELEMENTS = 2**20


def _subpixel_input_grad_pays(x_shape, kernel_sides) -> bool:
  """Whether `strided_conv_input_grad` beats XLA's on CPU: in 3D (4x4x4
  kernels over 16x8^3x64 to 16x32^3x1: 20 against 480 ms, 200 against
  7,400), for large inputs, or where the output is smaller than the
  kernel."""
  return (len(x_shape) == 5 or
          math.prod(x_shape) >= SUBPIXEL_GRAD_MIN_ELEMENTS or
          all(s // 2 < k for s, k in zip(x_shape[1:-1], kernel_sides)))


def _phase_kernel_grad_pays(x_shape) -> bool:
  """Whether `strided_conv_kernel_grad` beats XLA's on CPU."""
  return (len(x_shape) == 5 or
          math.prod(x_shape) >= PHASE_KERNEL_GRAD_MIN_ELEMENTS)

# conv_stride1 works on 2x2 pixel blocks when Cin x Cout is at most this:
# there XLA's CPU convolution is 1.5x (8 x 8) to 5x (5 x 4) slower than the
# block one, which does 2.25 times the multiplications of a 4x4 kernel; at
# 16 x 16 channels and more the block one is slower
# (`experiments/benchmarks/conv_stride1_speed.py`).
BLOCK_CONV_MAX_CHANNEL_PRODUCT = 64

# conv_stride1 computes a 3D convolution with Cin >= this x Cout as
# `conv_with_tap_channels` (the face GAN's voxel head, 3x3x3, 16 -> 1
# channel at 32^3, batch 16: XLA's CPU forward, input and kernel gradients
# 328, 142 and 332 ms against 20, 47 and 92; 64 -> 8 at 16^3: 470 against
# 262 ms in all; 16 -> 4: even; 16 -> 16: 3 times slower).
TAP_CHANNELS_MIN_RATIO = 8

# `Conv` computes a 3D convolution whose patches are at most this wide
# (taps x Cin) as `conv_as_patches` on CPU: the voxel discriminator's
# first layer, 4x4x4 stride 2 from 1 channel (64 wide) at 32^3, batch 16,
# forward / kernel / input gradient 10.3 / 11.9 / 8.5 ms against XLA's
# 42.1 / 78.4 / 7398 (and 16.7 and 201 ms for the phase kernel gradient
# and the sub-pixel input gradient that `conv_stride2` would take).
PATCH_CONV_MAX_WIDTH = 64

_DIMS = {n: (f'N{"DHW"[-n:]}C', f'{"DHW"[-n:]}IO', f'N{"DHW"[-n:]}C')
         for n in (1, 2, 3)}


def _interleave(parts: list[jax.Array], n: int) -> jax.Array:
  """2^n arrays (B, *spatial, C), one per parity in `itertools.product`
  order -> (B, *(2 * spatial), C) with out[..., 2 i + r, ...] = parts[r]."""
  y = jnp.stack(parts, axis=-2)
  batch, sizes = y.shape[0], y.shape[1:1 + n]
  y = y.reshape((batch,) + sizes + (2,) * n + (y.shape[-1],))
  order = [0]
  for axis in range(n):
    order += [1 + axis, 1 + n + axis]
  y = y.transpose(order + [1 + 2 * n])
  return y.reshape((batch,) + tuple(2 * s for s in sizes) + (y.shape[-1],))


def depth_to_space(x: jax.Array) -> jax.Array:
  """(B, *spatial, 2^n C) -> (B, *(2 * spatial), C): each position's
  channels, in 2^n groups of C in `itertools.product((0, 1), repeat=n)`
  order of the offsets (row, column, ...), become its 2^n sub-positions."""
  n = x.ndim - 2
  return _interleave(jnp.split(x, 2 ** n, axis=-1), n)


def space_to_depth(x: jax.Array) -> jax.Array:
  """(B, *(2 * spatial), C) -> (B, *spatial, 2^n C), the inverse of
  `depth_to_space`: each position's 2^n sub-positions become channel
  groups of C, offsets (row, column, ...) in `itertools.product` order."""
  n = x.ndim - 2
  sides = tuple(s // 2 for s in x.shape[1:-1])
  split = x.reshape(x.shape[0], *itertools.chain.from_iterable(
      (s, 2) for s in sides), x.shape[-1])
  # (B, S1, 2, S2, 2, ..., C) -> (B, S1, S2, ..., 2, 2, ..., C)
  order = (0, *range(1, 2 * n, 2), *range(2, 2 * n + 1, 2), 2 * n + 1)
  return split.transpose(order).reshape(
      x.shape[0], *sides, 2 ** n * x.shape[-1])


def strided_conv_kernel_grad(x: jax.Array, g: jax.Array,
                             padding: tuple[tuple[int, int], ...],
                             kernel_sides: tuple[int, ...]) -> jax.Array:
  """The kernel gradient of a stride-2 convolution, by a stride-1 one.

  Equals `vjp(lambda k: lax.conv_general_dilated(x, k, (2,) * n, padding),
  kernel)(g)` (NHWC / HWIO). Tap t = 2 a + p of the kernel reads the padded
  input at 2 (i + a) + p: its phase p at offset a. So the gradient is that
  of a stride-1 convolution of the padded input's `space_to_depth` (2^n
  Cin channels) with a kernel of ceil(k / 2) taps a per axis, whose (a, p)
  taps reorder into the kernel's; an odd side gets a last tap that is
  computed and dropped. A kernel of 1 reads phase 0 alone: the padded
  input's strided slice. XLA's CPU form of this gradient, a convolution
  with a dilated window, is 1.3 to 3 times slower from about 1M input
  elements (`PHASE_KERNEL_GRAD_MIN_ELEMENTS`).

  Args:
    x: (B, *sides, Cin), the forward input.
    g: (B, *out_sides, Cout), the gradient of the convolution's output.
    padding: the forward convolution's (lo, hi) per spatial axis.
    kernel_sides: the kernel's spatial sides.

  Returns:
    (*kernel_sides, Cin, Cout), in g's dtype.
  """
  n = x.ndim - 2
  taps = tuple((k + 1) // 2 for k in kernel_sides)
  # Padded (or cut) at the end to the 2 (out + taps - 1) inputs the output
  # reads, the dropped taps' included.
  pads = [(0, 0, 0)] + [
      (lo, 2 * (out + a - 1) - side - lo, 0) for (lo, _), out, a, side in zip(
          padding, g.shape[1:-1], taps, x.shape[1:-1])] + [(0, 0, 0)]
  padded = jax.lax.pad(x, jnp.zeros((), x.dtype), pads)
  one_tap = all(k == 1 for k in kernel_sides)
  phases = (padded[(slice(None),) + (slice(None, None, 2),) * n] if one_tap
            else space_to_depth(padded))
  dk = jax.vjp(lambda k: jax.lax.conv_general_dilated(
      phases, k, (1,) * n, ((0, 0),) * n, dimension_numbers=_DIMS[n]),
      jnp.zeros(taps + phases.shape[-1:] + g.shape[-1:], g.dtype))[1](g)[0]
  if one_tap:
    return dk
  # (*a, *p, Cin, Cout) -> (a1, p1, a2, p2, ..., Cin, Cout) -> (*2a, ...)
  dk = dk.reshape(*taps, *(2,) * n, x.shape[-1], g.shape[-1])
  order = [*itertools.chain.from_iterable((i, n + i) for i in range(n)),
           2 * n, 2 * n + 1]
  dk = dk.transpose(order).reshape(*(2 * a for a in taps), *dk.shape[-2:])
  return dk[tuple(slice(0, k) for k in kernel_sides)]


def strided_conv_input_grad(g: jax.Array, kernel: jax.Array,
                            padding: tuple[tuple[int, int], ...],
                            input_sides: tuple[int, ...]) -> jax.Array:
  """The input gradient of a stride-2 convolution, by sub-pixel convolution.

  Equals `vjp(lambda x: lax.conv_general_dilated(x, kernel, (2,) * n,
  padding), x)(g)` (NHWC / HWIO), using only stride-1 convolutions.

  Args:
    g: (B, *out_sides, Cout), the gradient of the convolution's output.
    kernel: (*k, Cin, Cout).
    padding: the forward convolution's (lo, hi) per spatial axis.
    input_sides: the forward input's spatial sides, all even.

  Returns:
    (B, *input_sides, Cin).
  """
  n = g.ndim - 2
  if any(side % 2 for side in input_sides):
    raise ValueError(f'sub-pixel gradient needs even sides, got '
                     f'{input_sides}')
  parts = []
  for parity in itertools.product((0, 1), repeat=n):
    sub, pads = kernel, []
    for axis, r in enumerate(parity):
      lo = padding[axis][0]
      # Input 2 j + r takes output i through tap t = 2 (j - i) + r + lo;
      # taps in descending order read g at ascending offsets.
      taps = [t for t in range(kernel.shape[axis]) if (t - r - lo) % 2 == 0]
      taps.reverse()
      if not taps:
        break
      # A strided slice, not a gather (`jnp.take`): XLA's CPU gather of a
      # large kernel costs milliseconds, and its gradient is a scatter.
      index = [slice(None)] * sub.ndim
      index[axis] = slice(taps[0], taps[-1] - 1 if taps[-1] else None, -2)
      sub = sub[tuple(index)]
      first_offset = (r + lo - taps[0]) // 2
      pad_lo = -first_offset
      pad_hi = input_sides[axis] // 2 - g.shape[1 + axis] - pad_lo + (
          len(taps) - 1)
      pads.append((pad_lo, pad_hi))
    if len(pads) < n:  # no tap reaches this parity (e.g. 1x1 kernels)
      parts.append(jnp.zeros(
          (g.shape[0],) + tuple(s // 2 for s in input_sides) +
          (kernel.shape[-2],), g.dtype))
      continue
    parts.append(jax.lax.conv_general_dilated(
        g, jnp.swapaxes(sub, -1, -2).astype(g.dtype), (1,) * n, pads,
        dimension_numbers=_DIMS[n]))
  return _interleave(parts, n)


def conv_transpose_subpixel(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Equals `lax.conv_transpose(x, kernel, (2,) * n, 'SAME')` for kernel 4.

  A transposed convolution is the input gradient of the stride-2
  convolution with the spatially flipped kernel (inputs and outputs
  swapped), which pads (1, 1) for kernel 4 and 'SAME'. Worked out
  (`strided_conv_input_grad`'s taps of the flipped kernel, in its
  descending order), output 2 j + r along an axis is a stride-1
  convolution of x with the kernel's taps r, r + 2 as stored, padded
  (1, 0) for r = 0 and (0, 1) for r = 1: strided slices of the kernel, no
  flip or transpose of it (at inference those copies of a 4x4x512x256
  kernel cost milliseconds).

  Args:
    x: (B, *spatial, Cin) with n spatial dims.
    kernel: (4,) * n + (Cin, Cout), as `nn.ConvTranspose` stores it.

  Returns:
    (B, *(2 * spatial), Cout).
  """
  n = x.ndim - 2
  if kernel.shape[:n] != (4,) * n:
    raise ValueError(f'sub-pixel path needs a 4-wide kernel, got '
                     f'{kernel.shape[:n]}')
  parts = []
  for parity in itertools.product((0, 1), repeat=n):
    sub = kernel[tuple(slice(r, None, 2) for r in parity)]
    pads = [(1, 0) if r == 0 else (0, 1) for r in parity]
    parts.append(jax.lax.conv_general_dilated(
        x, sub, (1,) * n, pads, dimension_numbers=_DIMS[n]))
  return _interleave(parts, n)


@jax.custom_vjp
def conv_transpose_stacked(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`conv_transpose_subpixel` as one convolution to every parity's output
  channels: the 2^n parity kernels (2-wide each) stacked on the output
  axis, over x padded (1, 1), give (B, *(sides + 1), 2^n Cout); parity r's
  output is its channel group at offset r (its own padding, (1, 0) or
  (0, 1), shifts its window by r), and `_crop_interleave` puts them in
  place. (sides + 1)^n / sides^n more work than the 2^n convolutions, but
  one wide convolution: XLA's CPU 3D convolutions are several times faster
  per FLOP with 2^3 Cout output channels than with Cout (the voxel
  generator's 16^3 x 80 -> 16 layer at batch 16: forward, input and
  kernel gradient 139, 159 and 170 ms against 553, 184 and 613;
  `conv_transpose_speed --voxel`). Its gradients are likewise one
  convolution each; the kernel's is written out on the padded input
  (`_stacked_kernel_grad`), since XLA's own swaps the operands with a
  reversed window, which its CPU backend runs 20 times slower (12 s).

  Args:
    x: (B, *spatial, Cin) with n spatial dims.
    kernel: (4,) * n + (Cin, Cout), as `nn.ConvTranspose` stores it.

  Returns:
    (B, *(2 * spatial), Cout).
  """
  return _crop_interleave(_stacked_conv(x, kernel))


def _stacked_conv(x, kernel):
  """(B, *sides, Cin) -> (B, *(sides + 1), 2^n Cout), every parity's
  output at its offset in its channel group."""
  n = x.ndim - 2
  stacked = jnp.concatenate(
      [kernel[tuple(slice(r, None, 2) for r in parity)]
       for parity in itertools.product((0, 1), repeat=n)], axis=-1)
  return jax.lax.conv_general_dilated(x, stacked, (1,) * n, ((1, 1),) * n,
                                      dimension_numbers=_DIMS[n])


def _crop_interleave(y: jax.Array) -> jax.Array:
  """(B, *(sides + 1), 2^n C) -> (B, *(2 sides), C): channel group r (in
  `itertools.product` order) cropped at offset r and put at parity r."""
  n = y.ndim - 2
  sides = tuple(s - 1 for s in y.shape[1:1 + n])
  groups = jnp.split(y, 2 ** n, axis=-1)
  parts = [group[(slice(None),) + tuple(slice(r, r + s) for r, s in
                                        zip(parity, sides))]
           for group, parity in zip(
               groups, itertools.product((0, 1), repeat=n))]
  return _interleave(parts, n)


def _uncrop(g: jax.Array) -> jax.Array:
  """The transpose of `_crop_interleave`: each parity of g padded back to
  its offset, the parities as channel groups (one concatenation, where
  autodiff's would add 2^n padded arrays of the whole size)."""
  n = g.ndim - 2
  zero = ((0, 0),)
  return jnp.concatenate(
      [jnp.pad(g[(slice(None),) + tuple(slice(r, None, 2) for r in parity)],
               zero + tuple((r, 1 - r) for r in parity) + zero)
       for parity in itertools.product((0, 1), repeat=n)], axis=-1)


def _stacked_kernel_grad(x: jax.Array, dy: jax.Array) -> jax.Array:
  """The kernel gradient of `_stacked_conv` given its output gradient dy,
  in the kernel's (4,) * n + (Cin, Cout) layout: one convolution of the
  padded input (Cin as its batch, B as its features) with dy as the
  window, 'VALID', so that XLA keeps the operands in place."""
  n = x.ndim - 2
  padded = jnp.pad(x, ((0, 0),) + ((1, 1),) * n + ((0, 0),))
  spatial = tuple(range(1, n + 1))
  dims = jax.lax.ConvDimensionNumbers(lhs_spec=(n + 1, 0) + spatial,
                                      rhs_spec=(n + 1, 0) + spatial,
                                      out_spec=(0, n + 1) + spatial)
  taps = jax.lax.conv_general_dilated(padded, dy, (1,) * n, 'VALID',
                                      dimension_numbers=dims)
  # (Cin, 2, .., 2^n Cout): parity r's taps a are kernel[2 a + r].
  kernel = _interleave(jnp.split(taps, 2 ** n, axis=-1), n)
  return jnp.moveaxis(kernel, 0, -2)


def _conv_transpose_stacked_fwd(x, kernel):
  return conv_transpose_stacked(x, kernel), (x, kernel)


def _conv_transpose_stacked_bwd(residuals, g):
  x, kernel = residuals
  dy = _uncrop(g)
  dx = jax.vjp(lambda x: _stacked_conv(x, kernel), x)[1](dy)[0]
  return dx, _stacked_kernel_grad(x, dy).astype(kernel.dtype)


conv_transpose_stacked.defvjp(_conv_transpose_stacked_fwd,
                              _conv_transpose_stacked_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_stride2(x: jax.Array, kernel: jax.Array,
                 padding: tuple[tuple[int, int], ...]) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, (2,) * n, padding)`, channels
  last, whose gradients on CPU are `strided_conv_input_grad` and
  `strided_conv_kernel_grad` where they pay (from SUBPIXEL_GRAD_MIN_ELEMENTS
  and PHASE_KERNEL_GRAD_MIN_ELEMENTS input elements, and see
  `_subpixel_input_grad_pays`, `_phase_kernel_grad_pays`), elsewhere
  XLA's.
  x: (B, *sides, Cin) with even sides; kernel: (*k, Cin, Cout)."""
  n = x.ndim - 2
  return jax.lax.conv_general_dilated(x, kernel, (2,) * n, padding,
                                      dimension_numbers=_DIMS[n])


def _conv_stride2_fwd(x, kernel, padding):
  return conv_stride2(x, kernel, padding), (x, kernel)


def _conv_stride2_bwd(padding, residuals, g):
  x, kernel = residuals
  n = x.ndim - 2
  conv = lambda x, kernel: jax.lax.conv_general_dilated(  # noqa: E731
      x, kernel, (2,) * n, padding, dimension_numbers=_DIMS[n])
  xla_dx = lambda g, kernel: jax.vjp(  # noqa: E731
      lambda x: conv(x, kernel), x)[1](g)[0]
  xla_dkernel = lambda x, g: jax.vjp(  # noqa: E731
      lambda kernel: conv(x, kernel), kernel)[1](g)[0]
  kernel_sides = kernel.shape[:n]
  if _subpixel_input_grad_pays(x.shape, kernel_sides):
    dx = jax.lax.platform_dependent(
        g, kernel,
        cpu=lambda g, kernel: strided_conv_input_grad(
            g, kernel, padding, x.shape[1:-1]).astype(x.dtype),
        default=xla_dx)
  else:
    dx = xla_dx(g, kernel)
  if _phase_kernel_grad_pays(x.shape):
    dkernel = jax.lax.platform_dependent(
        x, g,
        cpu=lambda x, g: strided_conv_kernel_grad(
            x, g, padding, kernel_sides).astype(kernel.dtype),
        default=xla_dkernel)
  else:
    dkernel = xla_dkernel(x, g)
  return dx, dkernel


conv_stride2.defvjp(_conv_stride2_fwd, _conv_stride2_bwd)


def _direct_conv(x: jax.Array, kernel: jax.Array,
                 padding: tuple[tuple[int, int], ...],
                 strides: tuple[int, ...] | None = None) -> jax.Array:
  """XLA's own convolution, channels last; strides 1 if None."""
  n = x.ndim - 2
  return jax.lax.conv_general_dilated(x, kernel, strides or (1,) * n,
                                      padding, dimension_numbers=_DIMS[n])


def conv_as_patches(x: jax.Array, kernel: jax.Array,
                    padding: tuple[tuple[int, int], ...],
                    strides: tuple[int, ...] | None = None) -> jax.Array:
  """The convolution as one matrix product: the input's patches (B *out,
  taps Cin), gathered by one strided slice of the padded input per kernel
  tap, by the kernel (taps Cin, Cout). Its gradients are a matrix product
  and slice-adds too. For inputs of a few pixels and for few input
  channels, where the patches are small: taps x Cin wide.

  Args:
    x: (B, *sides, Cin) with n spatial dims.
    kernel: (*k, Cin, Cout).
    padding: (low, high) per spatial dim.
    strides: per spatial dim; 1 if None.
  """
  n = x.ndim - 2
  strides = tuple(strides or (1,) * n)
  sizes, (cin, cout) = kernel.shape[:n], kernel.shape[n:]
  padded = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  out = tuple((p - k) // s + 1 for p, k, s in zip(padded.shape[1:1 + n],
                                                  sizes, strides))
  patches = jnp.stack(
      [padded[(slice(None),) + tuple(slice(t, t + (o - 1) * s + 1, s)
                                     for t, o, s in zip(taps, out, strides))]
       for taps in itertools.product(*(range(k) for k in sizes))],
      axis=n + 1)
  width = math.prod(sizes) * cin
  y = patches.reshape(-1, width) @ kernel.reshape(width, cout)
  return y.reshape((x.shape[0],) + out + (cout,))


def conv_with_tap_channels(x: jax.Array, kernel: jax.Array,
                           padding: tuple[tuple[int, int], ...]) -> jax.Array:
  """The stride-1 convolution as one matrix product to every tap's output
  channels, then the taps' shifted sums: z = x (B, *S, Cin) times the kernel
  as (Cin, T Cout) (T taps), and y[o] = sum over taps t of z[o + t - lo, t].
  Its gradients are a matrix product and slices. For few output channels:
  z holds T Cout values a position where x holds Cin."""
  n = x.ndim - 2
  sides, (cin, cout) = kernel.shape[:n], kernel.shape[n:]
  taps = math.prod(sides)
  weights = jnp.moveaxis(kernel.reshape(taps, cin, cout), 0, 1)
  z = (x @ weights.reshape(cin, taps * cout)).reshape(
      *x.shape[:-1], taps, cout)
  return _tap_sum(z, tuple(sides), tuple(map(tuple, padding)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _tap_sum(z, sides, padding):
  """(B, *S, T, C) per-tap outputs -> (B, *S', C): y[o] = sum over taps t
  (offsets in `itertools.product` order) of z padded, at o + t."""
  zp = jnp.pad(z, ((0, 0), *padding, (0, 0), (0, 0)))
  out_sides = [zp.shape[1 + axis] - k + 1 for axis, k in enumerate(sides)]
  offsets = itertools.product(*(range(k) for k in sides))
  return functools.reduce(jnp.add, [
      zp[(slice(None), *(slice(o, o + m) for o, m in zip(offset, out_sides)),
          t)] for t, offset in enumerate(offsets)])


def _tap_sum_fwd(z, sides, padding):
  return _tap_sum(z, sides, padding), z.shape[1:-2]


def _tap_sum_bwd(sides, padding, in_sides, g):
  # dz[p, t] = g[p + lo - t]: every tap's window of g padded k - 1 both
  # sides, stacked in one array (autodiff's transpose of the slices would
  # be one padded array per tap).
  gp = jnp.pad(g, ((0, 0), *((k - 1, k - 1) for k in sides), (0, 0)))
  return (jnp.stack([
      gp[(slice(None), *(slice(k - 1 + lo - o, k - 1 + lo - o + s)
                         for o, k, (lo, _), s in zip(offset, sides, padding,
                                                     in_sides)))]
      for offset in itertools.product(*(range(k) for k in sides))], axis=-2),)


_tap_sum.defvjp(_tap_sum_fwd, _tap_sum_bwd)


def _block_taps(k: int, lo: int) -> tuple[np.ndarray, np.ndarray, int]:
  """Along one axis, a stride-1 convolution (kernel k, padding lo before)
  on 2-pixel blocks: out[2 I + a] reads in[2 J + b] through tap
  t = 2 (J - I) + b - a + lo. Returns the taps (D, 2, 2) indexed by
  (J - I - first, b, a), whether each exists, and first (<= 0)."""
  first = -((1 + lo) // 2)  # ceil((-1 - lo) / 2): a = 0, b = 1
  last = (k - lo) // 2  # a = 1, b = 0
  d = np.arange(first, last + 1)[:, None, None]
  t = 2 * d + np.arange(2)[None, :, None] - np.arange(2)[None, None, :] + lo
  return np.clip(t, 0, k - 1), (t >= 0) & (t < k), first


def conv_on_blocks(x: jax.Array, kernel: jax.Array,
                   padding: tuple[tuple[int, int], ...]) -> jax.Array:
  """The stride-1 2D convolution with 'SAME'-sized output (lo + hi = k - 1)
  on even sides, computed on 2x2 pixel blocks: (B, H/2, W/2, 4 Cin)
  convolved with a (D, D, 4 Cin, 4 Cout) block kernel, D = 3 for kernels
  of 3 or 4, then the blocks unfolded."""
  b, h, w, c = x.shape
  cout = kernel.shape[-1]
  (ty, vy, fy), (tx, vx, fx) = (
      _block_taps(kernel.shape[axis], padding[axis][0]) for axis in (0, 1))
  # (Dy, by, ay, Dx, bx, ax, Cin, Cout)
  block = kernel[ty[:, :, :, None, None, None], tx[None, None, None]]
  mask = vy[:, :, :, None, None, None] & vx[None, None, None]
  block = jnp.where(mask[..., None, None], block, 0)
  dy, dx = ty.shape[0], tx.shape[0]
  block = block.transpose(0, 3, 1, 4, 6, 2, 5, 7).reshape(dy, dx, 4 * c,
                                                          4 * cout)
  y = jax.lax.conv_general_dilated(
      space_to_depth(x), block, (1, 1),
      ((-fy, dy - 1 + fy), (-fx, dx - 1 + fx)),
      dimension_numbers=_DIMS[2])
  return y.reshape(b, h // 2, w // 2, 2, 2, cout).transpose(
      0, 1, 3, 2, 4, 5).reshape(b, h, w, cout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _forward_in_form(x, kernel, padding, form):
  """`form(x, kernel, padding)` forward, and `form` for the input gradient
  too; XLA's kernel gradient."""
  return form(x, kernel, padding)


def _forward_in_form_fwd(x, kernel, padding, form):
  return form(x, kernel, padding), (x, kernel)


def _forward_in_form_bwd(padding, form, residuals, g):
  x, kernel = residuals
  dkernel, = jax.vjp(lambda k: _direct_conv(x, k, padding), kernel)[1](g)
  # The input gradient: g convolved with the kernel flipped, its channels
  # swapped (Cout -> Cin), padded k - 1 - lo before: 'SAME'-sized again.
  sizes = kernel.shape[:-2]
  flipped = jnp.flip(kernel, tuple(range(len(sizes)))).swapaxes(-1, -2)
  flipped_padding = tuple((k - 1 - lo, k - 1 - hi)
                          for (lo, hi), k in zip(padding, sizes))
  return form(g, flipped, flipped_padding), dkernel


_forward_in_form.defvjp(_forward_in_form_fwd, _forward_in_form_bwd)


def conv_stride1(x: jax.Array, kernel: jax.Array,
                 padding: tuple[tuple[int, int], ...]) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, (1,) * n, padding)` (channels
  last, kernel (*k, Cin, Cout)); on CPU, for 2D inputs smaller than the
  kernel, `conv_as_patches` with its own gradients, and for 'SAME'-sized
  outputs on even sides with kernels wider than 1 and Cin x Cout <=
  BLOCK_CONV_MAX_CHANNEL_PRODUCT `conv_on_blocks` forward and for the
  input gradient (a convolution of the same channels with the flipped
  kernel), with XLA's kernel gradient (in a whole train step the block
  form's own backward pass, gathers and scatters of the kernel, costs more
  than it saves); for 3D inputs of at least TAP_CHANNELS_MIN_RATIO times
  the output channels, `conv_with_tap_channels` with its own gradients.
  Equal up to float rounding: sums in another order."""
  n = x.ndim - 2
  if n == 3 and x.shape[-1] >= TAP_CHANNELS_MIN_RATIO * kernel.shape[-1]:
    return jax.lax.platform_dependent(
        x, kernel, cpu=functools.partial(conv_with_tap_channels,
                                         padding=padding),
        default=functools.partial(_direct_conv, padding=padding))
  if n == 2:
    sides, sizes = x.shape[1:3], kernel.shape[:2]
    same_size = all(lo + hi == k - 1 for (lo, hi), k in zip(padding, sizes))
    if all(s < k for s, k in zip(sides, sizes)):
      return jax.lax.platform_dependent(
          x, kernel, cpu=functools.partial(conv_as_patches, padding=padding),
          default=functools.partial(_direct_conv, padding=padding))
    if (same_size and min(sizes) > 1 and not any(s % 2 for s in sides)
        and x.shape[-1] * kernel.shape[-1] <= BLOCK_CONV_MAX_CHANNEL_PRODUCT):
      return jax.lax.platform_dependent(
          x, kernel,
          cpu=lambda x, kernel: _forward_in_form(x, kernel, padding,
                                                 conv_on_blocks),
          default=functools.partial(_direct_conv, padding=padding))
  return _direct_conv(x, kernel, padding)


class Conv(nn.Module):
  """`nn.Conv` with 'SAME' padding: the same parameters ('kernel' (*k, Cin,
  features), 'bias') and, named `Conv`, the same auto-names, so checkpoints
  of either load in the other. A 3D convolution of few input channels
  (patches at most `PATCH_CONV_MAX_WIDTH` wide) runs as `conv_as_patches`
  on CPU. Stride 2 on even sides runs `conv_stride2` where one of its
  gradients pays: from `PHASE_KERNEL_GRAD_MIN_ELEMENTS` inputs, in 3D,
  and where the output is smaller than the kernel (PRNet's last encoder
  stage at 96x96: 6x6 -> 3x3, whose input gradient XLA computes 6-12
  times slower).
  """
  features: int
  kernel_size: tuple[int, ...]
  strides: tuple[int, ...] | None = None
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    n = len(self.kernel_size)
    strides = tuple(self.strides or (1,) * n)
    kernel = self.param('kernel', self.kernel_init,
                        tuple(self.kernel_size) + (x.shape[-1], self.features),
                        self.param_dtype)
    dtype = self.dtype or jnp.result_type(x, kernel)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    sides = x.shape[1:-1]
    padding = tuple(jax.lax.padtype_to_pads(sides, self.kernel_size, strides,
                                            'SAME'))
    if n == 3 and math.prod(self.kernel_size) * x.shape[-1] <= (
        PATCH_CONV_MAX_WIDTH):
      y = jax.lax.platform_dependent(
          x, kernel,
          cpu=functools.partial(conv_as_patches, padding=padding,
                                strides=strides),
          default=functools.partial(_direct_conv, padding=padding,
                                    strides=strides))
    elif (all(s == 2 for s in strides) and not any(s % 2 for s in sides)
          and (_subpixel_input_grad_pays(x.shape, self.kernel_size)
               or _phase_kernel_grad_pays(x.shape))):
      y = conv_stride2(x, kernel, padding)
    elif all(s == 1 for s in strides):
      y = conv_stride1(x, kernel, padding)
    else:
      y = _direct_conv(x, kernel, padding, strides)
    if self.use_bias:
      bias = self.param('bias', self.bias_init, (self.features,),
                        self.param_dtype)
      y = y + bias.astype(dtype)
    return y


class ConvTranspose(nn.Module):
  """`nn.ConvTranspose` with padding 'SAME' and no bias by default.

  Stride 2 with a 4-wide kernel runs as sub-pixel convolution (see module
  docstring; in 3D on CPU its parities as one convolution,
  `conv_transpose_stacked`); any other case calls `jax.lax.conv_transpose`
  (stride 1 is an ordinary convolution, fast everywhere). The parameters
  are those of `nn.ConvTranspose`: a `kernel` of shape kernel_size + (Cin,
  features).
  """
  features: int
  kernel_size: tuple[int, ...] = (4, 4)
  strides: tuple[int, ...] = (1, 1)
  use_bias: bool = False
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    ndim = x.ndim - 2
    kernel = self.param('kernel', self.kernel_init,
                        tuple(self.kernel_size) + (x.shape[-1], self.features),
                        self.param_dtype)
    dtype = self.dtype or jnp.result_type(x, kernel)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if all(s == 2 for s in self.strides) and all(
        k == 4 for k in self.kernel_size):
      if ndim == 3:
        y = jax.lax.platform_dependent(x, kernel, cpu=conv_transpose_stacked,
                                       default=conv_transpose_subpixel)
      else:
        y = conv_transpose_subpixel(x, kernel)
    elif all(s == 1 for s in self.strides):
      # lax.conv_transpose at stride 1, 'SAME': a convolution padded
      # ceil((k - 1) / 2) before and the rest after, kernel as it is.
      y = conv_stride1(x, kernel, tuple((k // 2, k - 1 - k // 2)
                                        for k in self.kernel_size))
    else:
      y = jax.lax.conv_transpose(x, kernel, tuple(self.strides), 'SAME',
                                 dimension_numbers=_DIMS[ndim])
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,),
                        self.param_dtype)
      y = y + bias.astype(dtype)
    return y


class SqueezeExcite(nn.Module):
  """Channel attention (squeeze-and-excitation; the first seed's
  "passage-wise attention"): x * sigmoid(MLP(mean over space of x))."""
  reduction: int = 8
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    squeezed = jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))
    hidden = nn.Dense(max(1, channels // self.reduction), dtype=self.dtype)(
        squeezed)
    scale = nn.sigmoid(nn.Dense(channels, dtype=self.dtype)(nn.relu(hidden)))
    return x * scale.reshape(
        (x.shape[0],) + (1,) * (x.ndim - 2) + (channels,)).astype(x.dtype)


NORMS = ('none', 'batch', 'layer', 'instance', 'spectral')


def make_norm(kind: str, train: bool, dtype=None) -> Callable | None:
  """A normalisation layer by name, or None for 'none' / 'spectral' (spectral
  normalisation wraps the convolutions instead; see `conv_layer`).

  'batch' normalises over the (global) batch, with running averages used
  when not training; 'layer' over (space, channels); 'instance' over space
  per channel.
  """
  if kind in ('none', 'spectral'):
    return None
  if kind == 'batch':
    return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                        epsilon=1e-5, dtype=dtype, use_fast_variance=False)
  if kind == 'layer':
    return nn.LayerNorm(dtype=dtype)
  if kind == 'instance':
    return nn.GroupNorm(num_groups=None, group_size=1, dtype=dtype)
  raise ValueError(f'unknown normalisation {kind!r}; choose from {NORMS}')


class SpectralConv(nn.Module):
  """A convolution (or dense layer) with spectral normalisation.

  The power-iteration vector lives in the 'batch_stats' collection and is
  updated when `update_stats` is True (pass mutable=['batch_stats']).
  """
  layer: nn.Module

  @nn.compact
  def __call__(self, x, update_stats: bool):
    return nn.SpectralNorm(self.layer)(x, update_stats=update_stats)


def conv_layer(norm: str, train: bool, features: int, kernel_size,
               strides=None, use_bias=True, dtype=None) -> Callable:
  """A convolution, spectrally normalised when `norm == 'spectral'`."""
  ndim = len(kernel_size)
  conv = Conv(features, kernel_size, strides or (1,) * ndim,
              use_bias=use_bias, dtype=dtype)
  if norm != 'spectral':
    return conv
  spectral = SpectralConv(conv)
  return lambda x: spectral(x, update_stats=train)


def dense_layer(norm: str, train: bool, features: int, dtype=None
                ) -> Callable:
  """A dense layer, spectrally normalised when `norm == 'spectral'`."""
  dense = nn.Dense(features, dtype=dtype)
  if norm != 'spectral':
    return dense
  spectral = SpectralConv(dense)
  return lambda x: spectral(x, update_stats=train)
