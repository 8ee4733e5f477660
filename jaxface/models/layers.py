"""Layers shared by jaxface's networks.

`ConvTranspose` is a drop-in for `flax.linen.ConvTranspose` (same parameter,
same 'SAME' semantics as `jax.lax.conv_transpose`) whose stride-2, kernel-4
case is computed as sub-pixel convolution: XLA's transposed convolution with
an input dilation is about ten times slower on CPU than a plain convolution
of the same work. For kernel 4, stride 2 and 'SAME' padding, along each
spatial axis

    out[2 i]     = K[0] x[i - 1] + K[2] x[i]
    out[2 i + 1] = K[1] x[i]     + K[3] x[i + 1]

(measured from `jax.lax.conv_transpose`), so each output parity is a stride-1
convolution with a 2-tap slice of the kernel, and the parities interleave.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# Per output parity r: the kernel taps used and the input padding (lo, hi).
_SUBPIXEL_TAPS = {0: ((0, 2), (1, 0)), 1: ((1, 3), (0, 1))}


def conv_transpose_subpixel(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Equals `lax.conv_transpose(x, kernel, (2,) * n, 'SAME')` for kernel 4.

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
  spatial = ''.join('DHW'[-n:])
  dims = (f'N{spatial}C', f'{spatial}IO', f'N{spatial}C')
  outs = []
  for parity in itertools.product((0, 1), repeat=n):
    sub = kernel
    for axis, r in enumerate(parity):
      sub = jnp.take(sub, jnp.asarray(_SUBPIXEL_TAPS[r][0]), axis=axis)
    pads = [_SUBPIXEL_TAPS[r][1] for r in parity]
    outs.append(jax.lax.conv_general_dilated(
        x, sub.astype(x.dtype), (1,) * n, pads, dimension_numbers=dims))
  # (2,)*n parities -> interleave: out[..., 2 i + r, ...] = outs[r][..., i].
  y = jnp.stack(outs, axis=-2).reshape(x.shape[:-1] + (2,) * n + (-1,))
  batch, sizes = x.shape[0], x.shape[1:-1]
  order = [0]
  for axis in range(n):
    order += [1 + axis, 1 + n + axis]
  y = y.transpose(order + [1 + 2 * n])
  return y.reshape((batch,) + tuple(2 * s for s in sizes) + (y.shape[-1],))


class ConvTranspose(nn.Module):
  """`nn.ConvTranspose` with padding 'SAME' and no bias by default.

  Stride 2 with a 4-wide kernel runs as sub-pixel convolution (see module
  docstring); any other case calls `jax.lax.conv_transpose` (stride 1 is
  an ordinary convolution, fast everywhere). The parameters are those of
  `nn.ConvTranspose`: a `kernel` of shape kernel_size + (Cin, features).
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
      y = conv_transpose_subpixel(x, kernel)
    else:
      spatial = 'DHW'[-ndim:]
      y = jax.lax.conv_transpose(
          x, kernel, tuple(self.strides), 'SAME',
          dimension_numbers=(f'N{spatial}C', f'{spatial}IO', f'N{spatial}C'))
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
  conv = nn.Conv(features, kernel_size, strides or (1,) * ndim,
                 padding='SAME', use_bias=use_bias, dtype=dtype)
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
