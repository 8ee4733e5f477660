"""PRNet's ResFCN256: the generator of the cycle reconstruction system.

From "Joint 3D Face Reconstruction and Dense Alignment with Position Map
Regression Network" (Feng et al., 2018) and its TensorFlow code: at 256 x
256, a 4x4 stride-1 convolution to 16 channels; 10 residual blocks to
8 x 8 x 512; 17 transposed 4x4 convolutions back to 256 x 256 x 3; BatchNorm
(with scale) + ReLU after every convolution except where noted; no biases
anywhere; a sigmoid at the end. The output times 1.1 x resolution
(`frames.POSITION_SCALE`) is the UV position map in pixels of the input crop.

Residual block (C output channels, stride s): 1x1 conv to C/2 (BN + ReLU),
4x4 conv to C/2 with stride s (BN + ReLU), 1x1 conv to C (no norm, no
activation); a 1x1 stride-s projection shortcut (no norm) when the shape
changes; BN + ReLU after the sum.

Other resolutions keep the same layers (the bottleneck is resolution / 32);
`width` multiplies every channel count except the 3 output channels.

`head='conv'` replaces the last three transposed convolutions (3 channels
each, the first two with BatchNorm + ReLU) by one 3x3 convolution with a
bias and a linear output, (conv + 0.5) x 1.1 x resolution. A 3-channel
ReLU bottleneck at full resolution loses most of the decoder's features,
and the sigmoid bounds the map to [0, 1.1 R]: right for PRNet's BFM face
region, which lies inside the crop, wrong for the procedural head, whose
forehead lies above the crop (a fifth of the weighted texels have y < 0)
and whose depth passes 1.1 R. `coords=True` appends x, y (image) and u, v
(map) coordinate channels to the input and to every decoder layer
(CoordConv). Measured in `experiments/diagnostics/prnet_learning.py`.

`lite=True` keeps one layer per resolution: the five stride-2 residual
blocks of the encoder, and of the decoder its first layer and the five
stride-2 transposed convolutions (plus the prnet head's three 3-channel
layers): 11 layers instead of 24, the same resolutions and channel
counts. `skips=True` adds, after each stride-2 transposed convolution, a
1x1 projection of the encoder's last features at that side (U-Net-like,
additive).

Two options take layers at full resolution out, where a quarter-width
network's feature maps have 4-6 channels and their normalisation,
activation and layout copies cost far more than their arithmetic (over
a third of the 96x96 train step on a CPU). `half_res_head=True` (conv head only)
drops the decoder's layers at full resolution (the last stride-2
transposed convolution and what follows it) and lets the head, at half
resolution, predict each position's 2x2 texels (12 channels, rearranged
depth to space). `half_res_stem=True` replaces the first convolution and
the first residual block by one 4x4 stride-2 convolution to that block's
channels: the first layer still sees every pixel. In the README's multi-
seed protocol the head kept the transfer to photos (without the ear
lobes) and the stem cost half a point ("The layers at full resolution").

`standardize=True` subtracts each image's mean and divides by its standard
deviation (per channel, over the pixels) before the first layer, so that a
photograph's brightness and contrast, which differ from the renders', do not
reach the features.

`flip_average=True` is for inference: with `train=False` the network also
sees each image mirrored left to right, and returns the mean of the two
position maps, the mirrored one mirrored back (`uv.mirror_position_maps`:
the UV layout is mirror-symmetric). Twice the compute; training
(`train=True`) ignores it.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxface.face import frames
from jaxface.face import uv as uv_lib
from jaxface.models import layers

ENCODER = ((32, 2), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2),
           (256, 1), (512, 2), (512, 1))
DECODER = ((512, 1), (256, 2), (256, 1), (256, 1), (128, 2), (128, 1),
           (128, 1), (64, 2), (64, 1), (64, 1), (32, 2), (32, 1), (16, 2),
           (16, 1), (3, 1), (3, 1), (3, 1))
HEADS = ('prnet', 'conv')
# Five stride-2 stages: a side must halve five times.
RESOLUTION_MULTIPLE = 32


def check_resolution(resolution: int, what: str = 'the resolution') -> int:
  """`resolution` if PRNet takes crops of that side, else a ValueError
  naming `what` (e.g. '--resolution')."""
  if resolution < RESOLUTION_MULTIPLE or resolution % RESOLUTION_MULTIPLE:
    raise ValueError(f'{what} must be a positive multiple of '
                     f'{RESOLUTION_MULTIPLE} (PRNet halves it five times), '
                     f'got {resolution}')
  return resolution


def _bn(train: bool, dtype, momentum: float) -> nn.BatchNorm:
  # TensorFlow's batch_norm epsilon, as PRNet trained with it. The two-pass
  # variance: E[x^2] - E[x]^2 cancels badly, and then depends on the
  # reduction order, i.e. on how the batch is sharded.
  return nn.BatchNorm(use_running_average=not train, momentum=momentum,
                      epsilon=1e-3, dtype=dtype, use_fast_variance=False)


def _with_coordinate_channels(x):
  """(B, H, W, C) -> (B, H, W, C + 2): appends each pixel's column and row
  in [-1, 1] (CoordConv, Liu et al. 2018): x, y of the image at the input,
  u, v of the map in the decoder."""
  h, w = x.shape[1:3]
  v, u = jnp.meshgrid(jnp.linspace(-1, 1, h), jnp.linspace(-1, 1, w),
                      indexing='ij')
  uv = jnp.broadcast_to(jnp.stack([u, v], -1).astype(x.dtype),
                        (x.shape[0], h, w, 2))
  return jnp.concatenate([x, uv], -1)


class ResBlock(nn.Module):
  """PRNet's residual block; see the module docstring."""
  features: int
  strides: int = 1
  dtype: Any = None
  bn_momentum: float = 0.99

  @nn.compact
  def __call__(self, x, train: bool):
    conv = lambda c, k, s: layers.Conv(  # noqa: E731
        c, (k, k), (s, s), use_bias=False, dtype=self.dtype)
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = conv(self.features, 1, self.strides)(x)
    half = self.features // 2
    bn = lambda: _bn(train, self.dtype, self.bn_momentum)  # noqa: E731
    y = nn.relu(bn()(conv(half, 1, 1)(x)))
    y = nn.relu(bn()(conv(half, 4, self.strides)(y)))
    y = conv(self.features, 1, 1)(y)
    return nn.relu(bn()(y + shortcut))


class PRNet(nn.Module):
  """ResFCN256 position map regressor.

  Attributes:
    width: channel multiplier (1.0 is the original).
    dtype: compute dtype (e.g. jnp.bfloat16); parameters stay float32.
    bn_momentum: decay of BatchNorm's running averages, used at inference.
      PRNet's TensorFlow default, 0.999, suits its 100k+ steps; after N
      steps the initial statistics still weigh momentum^N.
    head: 'prnet' (the original's three 3-channel transposed convolutions
      and a sigmoid), 'conv' (one 3x3 convolution with a bias, linear; see
      the module docstring).
    coords: append coordinate channels (see the module docstring).
    global_dim: width of a dense path through the bottleneck (0: none).
    skips: add projected encoder features in the decoder (see above).
    lite: one layer per resolution (see above).
    standardize: per-image, per-channel input standardisation (see above).
    flip_average: at inference, average with the mirror image's prediction
      (see above).
    half_res_head: the head at half resolution, 2x2 texels a position
      (see above); needs head 'conv'.
    half_res_stem: a stride-2 stem in place of the first convolution and
      residual block (see above).

  Call: `(images (B, R, R, 3) float in [0, 1], train) -> (B, R, R, 3)`
  position maps in pixels (output x 1.1 x R). R must be a multiple of 32.
  BatchNorm statistics live in the 'batch_stats' collection.
  """
  width: float = 1.0
  dtype: Any = None
  bn_momentum: float = 0.99
  head: str = 'prnet'
  coords: bool = False
  global_dim: int = 0
  skips: bool = False
  lite: bool = False
  standardize: bool = False
  flip_average: bool = False
  half_res_head: bool = False
  half_res_stem: bool = False

  def _channels(self, c: int) -> int:
    return c if c == 3 else max(2, int(round(c * self.width / 2)) * 2)

  def __call__(self, images, train: bool = False):
    if self.flip_average and not train:
      # One pass over both: BatchNorm uses its running statistics here.
      maps, mirrored = jnp.split(
          self._maps(jnp.concatenate([images, images[:, :, ::-1]]), train), 2)
      return 0.5 * (maps + uv_lib.mirror_position_maps(mirrored,
                                                       images.shape[2]))
    return self._maps(images, train)

  @nn.compact
  def _maps(self, images, train: bool):
    resolution = images.shape[1]
    if images.shape[1] != images.shape[2]:
      raise ValueError(f'PRNet needs square inputs, got {images.shape[1:3]}')
    check_resolution(resolution, 'the input side')
    x = images.astype(self.dtype or images.dtype)
    if self.standardize:
      mean = jnp.mean(x, axis=(1, 2), keepdims=True)
      std = jnp.std(x, axis=(1, 2), keepdims=True)
      x = (x - mean) / (std + 1e-2)  # 1e-2: a flat image stays finite
    if self.coords:
      x = _with_coordinate_channels(x)
    encoder = ENCODER
    if self.half_res_stem:
      # The first residual block's job (to half resolution, its channels)
      # done by one strided convolution.
      stem_features, stem_strides = ENCODER[0][0], 2
      encoder = ENCODER[1:]
    else:
      stem_features, stem_strides = 16, 1
    x = layers.Conv(self._channels(stem_features), (4, 4),
                    (stem_strides, stem_strides), use_bias=False,
                    dtype=self.dtype)(x)
    x = nn.relu(_bn(train, self.dtype, self.bn_momentum)(x))
    encoded = {x.shape[1]: x}  # side -> the encoder's last features there
    for features, strides in encoder:
      if self.lite and strides == 1:
        continue
      x = ResBlock(self._channels(features), strides, self.dtype,
                   self.bn_momentum)(x, train)
      encoded[x.shape[1]] = x
    if self.global_dim:
      # A dense path through the whole bottleneck: its weights differ per
      # position, so where a feature is in the image becomes a linear
      # function of the code (convolutions and pooling must infer it from
      # the padding).
      b, h, w, c = x.shape
      code = nn.relu(nn.Dense(self.global_dim, dtype=self.dtype)(
          x.reshape(b, h * w * c)))
      x = nn.relu(x + nn.Dense(h * w * c, dtype=self.dtype)(code).reshape(
          b, h, w, c))
    if self.head not in HEADS:
      raise ValueError(f'unknown PRNet head {self.head!r}; choose from '
                       f'{HEADS}')
    if self.half_res_head and self.head != 'conv':
      raise ValueError("PRNet half_res_head needs head 'conv', got "
                       f'{self.head!r} (set model.half_res_head=False)')
    decoder = DECODER if self.head == 'prnet' else DECODER[:-3]
    if self.lite:
      decoder = [layer for k, layer in enumerate(decoder)
                 if k == 0 or layer[1] == 2 or k >= len(DECODER) - 3]
    if self.half_res_head:
      # Up to the last upsampling: the layers at full resolution go.
      last_up = max(k for k, layer in enumerate(decoder) if layer[1] == 2)
      decoder = decoder[:last_up]
    for k, (features, strides) in enumerate(decoder):
      if self.coords:
        x = _with_coordinate_channels(x)
      x = layers.ConvTranspose(self._channels(features), (4, 4),
                               (strides, strides), dtype=self.dtype)(x)
      if self.skips and strides == 2 and x.shape[1] in encoded:
        x = x + nn.Conv(x.shape[-1], (1, 1), use_bias=False,
                        dtype=self.dtype)(encoded[x.shape[1]])
      x = _bn(train, self.dtype, self.bn_momentum)(x)
      x = (nn.sigmoid(x) if self.head == 'prnet' and k == len(decoder) - 1
           else nn.relu(x))
    if self.head == 'conv':
      if self.coords:
        x = _with_coordinate_channels(x)
      # Zero-initialised: the first maps are the crop's centre, not noise
      # of the scale of the crop. Linear: synthetic heads reach beyond the
      # crop (the forehead above it, z past 1.1 R), which a sigmoid cannot.
      texels = 4 if self.half_res_head else 1  # 2x2 texels a position
      x = layers.Conv(3 * texels, (3, 3), dtype=self.dtype,
                      kernel_init=nn.initializers.zeros)(x) + 0.5
      if self.half_res_head:
        x = layers.depth_to_space(x)
    # At least float32 out (bfloat16 compute), float64 stays float64.
    out_dtype = jnp.promote_types(x.dtype, jnp.float32)
    return (x * (frames.POSITION_SCALE * resolution)).astype(out_dtype)


def from_config(model_config, dtype=None, layout=None) -> PRNet:
  """The PRNet of a run's `config.model` (width, bn_momentum, head, coords,
  global_dim, skips, lite, standardize, flip_average, half_res_head,
  half_res_stem; a stored config gets
  the keys it lacks from `config_lib.with_added_keys`). `layout`: the
  `layout.UVLayout` of its maps, checked to be mirror-symmetric where
  flip_average is set (None: not checked)."""
  if (model_config.flip_average and layout is not None and
      not layout.is_mirror_symmetric()):
    raise ValueError(
        f'model.flip_average needs a mirror-symmetric UV layout; in layout '
        f'{layout.name!r} mirroring a map does not take each landmark to its '
        'left/right twin: set model.flip_average=False (jaxface eval and '
        'reconstruct: --no-flip-average)')
  return PRNet(width=model_config.width, dtype=dtype,
               bn_momentum=model_config.bn_momentum,
               head=model_config.head, coords=model_config.coords,
               global_dim=model_config.global_dim,
               skips=model_config.skips, lite=model_config.lite,
               standardize=model_config.standardize,
               flip_average=model_config.flip_average,
               half_res_head=model_config.half_res_head,
               half_res_stem=model_config.half_res_stem)


@functools.partial(jax.jit, static_argnums=0)
def predict(module: nn.Module, variables, images, landmark_uv):
  """Inference: (B, R, R, 3) images in [0, 1] -> (position maps
  (B, R, R, 3), landmarks (B, L, 3) read off them at `landmark_uv`
  (L, 2)), in crop pixels. Jitted once per network (a static, hashable
  argument) and input shape, however often it is called."""
  maps = module.apply(variables, images)
  return maps, uv_lib.sample_uv(maps, landmark_uv)
