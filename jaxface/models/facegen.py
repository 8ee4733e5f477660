"""The first seed's feature-conditioned 3D face GAN.

`FeatureEncoder` is the paper's function Phi: geometric features (distances
and FR/LS/RS areas, `jaxface.face.features`) -> dense -> leaky ReLU -> 128.

`FaceGenerator`: [Phi(features), z ~ N(0, I_128)] -> dense projection to a
4 x 4 (x 4) grid -> DCGAN upsampling blocks (4x4 stride-2 transposed
convolution, normalisation, leaky ReLU, channel attention) -> output head.
Two extra residual blocks follow the first two upsampling blocks.
- head 'uv': a canonical frontal UV position map (R x R x 3, default 64),
  sigmoid x 1.1 x R (`frames.POSITION_SCALE`), in pixels of the canonical
  frame (`jaxface.face.frames`).
- head 'voxel': a V^3 occupancy grid (default 64^3), one logit per voxel.
  The paper's "64*64*64*3" is read as a 64^3 grid over the 3 spatial axes;
  the single channel is the occupancy logit (sigmoid = probability that the
  voxel is inside the head).

`FaceDiscriminator`: strided convolutions down to 4 x 4 (x 4), the
conditioning code tiled over space and concatenated at the 8 x 8 (x 8)
stage (the first stage, for 8-wide inputs), one residual block and channel
attention there, a dense layer
compressing the 4 x 4 features to a vector, and a logit. It also returns
its intermediate feature maps for the perceptual (identity) loss.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxface.face import frames
from jaxface.models import layers

HEADS = ('uv', 'voxel')


def _lrelu(x):
  return nn.leaky_relu(x, 0.2)


class FeatureEncoder(nn.Module):
  """Phi: (B, F) geometric features -> (B, features) code.

  `normalize`: standardise each feature first (BatchNorm without scale and
  offset: batch statistics in training, running averages after). The
  features are ratios of distances and areas with means from 0.03 to 1.3
  and spreads of about a third of their means; raw, the Dense layer's
  output is mostly the same for every face.
  """
  features: int = 128
  normalize: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.normalize:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.99,
                       use_scale=False, use_bias=False, dtype=self.dtype,
                       use_fast_variance=False)(x)
    return _lrelu(nn.Dense(self.features, dtype=self.dtype)(x))


class ResidualBlock(nn.Module):
  """Two 3x3 (x3) convolutions with normalisation, leaky ReLU, attention."""
  norm: str = 'batch'
  attention: bool = True
  dtype: Any = None

  @nn.compact
  def __call__(self, x, train: bool):
    ndim = x.ndim - 2
    channels = x.shape[-1]
    y = x
    for k in range(2):
      y = layers.conv_layer(self.norm, train, channels, (3,) * ndim,
                            dtype=self.dtype)(y)
      norm = layers.make_norm(self.norm, train, self.dtype)
      y = y if norm is None else norm(y)
      if k == 0:
        y = _lrelu(y)
    if self.attention:
      y = layers.SqueezeExcite(dtype=self.dtype)(y)
    return _lrelu(x + y)


class UpBlock(nn.Module):
  """x2 upsampling: transposed conv 4/2, normalisation, leaky ReLU, SE."""
  features: int
  norm: str = 'batch'
  attention: bool = True
  dtype: Any = None

  @nn.compact
  def __call__(self, x, train: bool):
    ndim = x.ndim - 2
    x = layers.ConvTranspose(self.features, (4,) * ndim, (2,) * ndim,
                             dtype=self.dtype)(x)
    norm = layers.make_norm(self.norm, train, self.dtype)
    x = _lrelu(x if norm is None else norm(x))
    if self.attention:
      x = layers.SqueezeExcite(dtype=self.dtype)(x)
    return x


def _with_tiled(x, code):
  """(B, *spatial, C), (B, K) -> (B, *spatial, C + K): the code repeated at
  every position."""
  tiled = jnp.broadcast_to(code.reshape((code.shape[0],) + (1,) * (
      x.ndim - 2) + (code.shape[-1],)), x.shape[:-1] + (code.shape[-1],))
  return jnp.concatenate([x, tiled.astype(x.dtype)], axis=-1)


def _check_size(size: int, what: str) -> int:
  if size < 8 or size & (size - 1):
    raise ValueError(f'{what} must be a power of two >= 8, got {size}')
  return size.bit_length() - 3  # number of x2 steps from 4


class FaceGenerator(nn.Module):
  """Features + noise -> 3D face (see module docstring).

  Attributes:
    head: 'uv' or 'voxel'.
    size: output side (R for 'uv', V for 'voxel'), a power of two >= 8.
    base_channels: channels at 4 x 4; halved at each upsampling (min 16).
    code_dim, noise_dim: Phi's output and z sizes (128, 128 in the paper).
    attention: channel attention in the blocks.
    norm: normalisation of the generator blocks ('batch' as DCGAN).
    num_residual: extra residual blocks (2 in the paper).
    feature_norm: standardise the features in Phi (`FeatureEncoder`).
    code_every_stage: concatenate Phi's code, tiled over space, to the
      input of every upsampling block (not only to the noise at the start).
    dtype: compute dtype.

  Call: `(features (B, F), noise (B, noise_dim), train)` -> 'uv':
  (B, R, R, 3) float32 pixels; 'voxel': (B, V, V, V, 1) float32 logits.
  """
  head: str = 'uv'
  size: int = 64
  base_channels: int = 256
  code_dim: int = 128
  noise_dim: int = 128
  attention: bool = True
  norm: str = 'batch'
  num_residual: int = 2
  feature_norm: bool = False
  code_every_stage: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, features, noise, train: bool = False):
    if self.head not in HEADS:
      raise ValueError(f'unknown head {self.head!r}; choose from {HEADS}')
    if noise.shape[-1] != self.noise_dim:
      raise ValueError(f'noise must have {self.noise_dim} dims, got '
                       f'{noise.shape[-1]}')
    steps = _check_size(self.size, 'size')
    ndim = 2 if self.head == 'uv' else 3
    code = FeatureEncoder(self.code_dim, self.feature_norm, self.dtype)(
        features, train)
    h = jnp.concatenate([code, noise.astype(code.dtype)], axis=-1)
    channels = self.base_channels
    x = nn.Dense(4**ndim * channels, dtype=self.dtype)(h)
    x = x.reshape((x.shape[0],) + (4,) * ndim + (channels,))
    norm = layers.make_norm(self.norm, train, self.dtype)
    x = _lrelu(x if norm is None else norm(x))
    for step in range(steps):
      channels = max(16, channels // 2)
      if self.code_every_stage:
        x = _with_tiled(x, code)
      x = UpBlock(channels, self.norm, self.attention, self.dtype)(x, train)
      if step < self.num_residual:
        x = ResidualBlock(self.norm, self.attention, self.dtype)(x, train)
    out_channels = 3 if self.head == 'uv' else 1
    # layers.Conv: nn.Conv's parameters and name, CPU forms where XLA's
    # are slow (a 3D convolution to one channel: layers.conv_stride1).
    x = layers.Conv(out_channels, (3,) * ndim,
                    dtype=self.dtype)(x).astype(jnp.float32)
    if self.head == 'uv':
      return nn.sigmoid(x) * (frames.POSITION_SCALE * self.size)
    return x


class FaceDiscriminator(nn.Module):
  """Judges a 3D face given the features it should have.

  Attributes:
    head: 'uv' (input (B, R, R, 3) position map scaled to about [0, 1]) or
      'voxel' (input (B, V, V, V, 1) occupancy probabilities).
    base_channels: channels of the first convolution, doubled per stage
      (at most 512).
    code_dim: Phi's output size; cond_dim: the tiled conditioning channels.
    compress_dim: size of the vector the 4 x 4 features are compressed to.
    norm: 'instance' by default (no batch statistics), or 'spectral', ...
    attention: channel attention at the conditioning stage.
    feature_norm: standardise the features in Phi (`FeatureEncoder`).

  Call: `(x, features (B, F), train) -> (logits (B,), feature_maps)` where
  feature_maps is a tuple of the activations after each stage, coarsening.
  """
  head: str = 'uv'
  base_channels: int = 64
  code_dim: int = 128
  cond_dim: int = 32
  compress_dim: int = 256
  norm: str = 'instance'
  attention: bool = True
  feature_norm: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, x, features, train: bool = False):
    if self.head not in HEADS:
      raise ValueError(f'unknown head {self.head!r}; choose from {HEADS}')
    ndim = 2 if self.head == 'uv' else 3
    size = x.shape[1]
    steps = _check_size(size, 'input size')
    x = x.astype(self.dtype or x.dtype)
    code = FeatureEncoder(self.code_dim, self.feature_norm, self.dtype)(
        features, train)
    cond = nn.Dense(self.cond_dim, dtype=self.dtype)(code)
    maps = []
    channels = self.base_channels
    for step in range(steps):
      x = layers.conv_layer(self.norm, train, channels, (4,) * ndim,
                            (2,) * ndim, dtype=self.dtype)(x)
      if step > 0:  # DCGAN: no normalisation on the first layer
        norm = layers.make_norm(self.norm, train, self.dtype)
        x = x if norm is None else norm(x)
      x = _lrelu(x)
      if x.shape[1] == min(8, size // 2):
        x = _with_tiled(x, cond)
        x = layers.conv_layer(self.norm, train, channels, (3,) * ndim,
                              dtype=self.dtype)(x)
        x = _lrelu(x)
        x = ResidualBlock('none' if self.norm == 'batch' else self.norm,
                          self.attention, self.dtype)(x, train)
      maps.append(x)
      channels = min(512, channels * 2)
    x = x.reshape(x.shape[0], -1)
    x = _lrelu(layers.dense_layer(self.norm, train, self.compress_dim,
                                  self.dtype)(x))
    logit = layers.dense_layer(self.norm, train, 1, self.dtype)(x)
    return logit[:, 0].astype(jnp.float32), tuple(maps)
