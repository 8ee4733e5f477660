"""The cycle system's discriminators: ResNet-18 over position maps, and an
MLP over 68 3D landmarks.

Both return one logit per example; sigmoid(logit) is the second seed's
"percentage" that the input is real. Normalisation is a choice ('none',
'layer', 'instance', 'spectral', or 'batch'); the default, instance norm,
keeps a discriminator's output for one example independent of the rest of
the batch, as GAN discriminators should be by default.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxface.models import layers


class BasicBlock(nn.Module):
  """ResNet basic block: two 3x3 convolutions and a (projected) shortcut."""
  features: int
  strides: int = 1
  norm: str = 'instance'
  dtype: Any = None

  @nn.compact
  def __call__(self, x, train: bool):
    def conv(c, k, s):
      return layers.conv_layer(self.norm, train, c, (k, k), (s, s),
                               use_bias=False, dtype=self.dtype)

    def norm(y):
      layer = layers.make_norm(self.norm, train, self.dtype)
      return y if layer is None else layer(y)

    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = norm(conv(self.features, 1, self.strides)(x))
    y = nn.relu(norm(conv(self.features, 3, self.strides)(x)))
    y = norm(conv(self.features, 3, 1)(y))
    return nn.relu(y + shortcut)


class ResNetDiscriminator(nn.Module):
  """ResNet-18 over a position map (optionally with the image).

  Stem 7x7/2 conv (64) + max-pool 3x3/2; four stages of two basic blocks
  with 64, 128, 256, 512 channels (stride 2 at the start of stages 2-4);
  global average pooling; a dense layer to one logit.

  Call: `(x (B, R, R, C), train) -> (B,)` logits. Feed position maps scaled
  to about [0, 1] (divide by 1.1 x R), with the image concatenated on the
  channel axis if wanted (C = 3 or 6).
  """
  width: float = 1.0
  norm: str = 'instance'
  dtype: Any = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    c = lambda n: max(1, int(round(n * self.width)))  # noqa: E731
    x = x.astype(self.dtype or x.dtype)
    x = layers.conv_layer(self.norm, train, c(64), (7, 7), (2, 2),
                          use_bias=False, dtype=self.dtype)(x)
    norm = layers.make_norm(self.norm, train, self.dtype)
    x = nn.relu(x if norm is None else norm(x))
    x = nn.max_pool(x, (3, 3), (2, 2), padding='SAME')
    for stage, features in enumerate((64, 128, 256, 512)):
      for block in range(2):
        strides = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(c(features), strides, self.norm, self.dtype)(x, train)
    x = jnp.mean(x, axis=(1, 2))
    logit = layers.dense_layer(self.norm, train, 1, self.dtype)(x)
    return logit[:, 0].astype(jnp.float32)


def normalize_landmarks(landmarks: jnp.ndarray) -> jnp.ndarray:
  """(..., 68, 3) -> centred at the mean, divided by the RMS distance to it.

  Removes position and scale, which a crop changes, so the discriminator
  judges the shape of the landmark set.
  """
  centred = landmarks - jnp.mean(landmarks, axis=-2, keepdims=True)
  rms = jnp.sqrt(jnp.mean(jnp.sum(centred**2, axis=-1), axis=-1))
  return centred / jnp.maximum(rms, 1e-6)[..., None, None]


class LandmarkDiscriminator(nn.Module):
  """An MLP judging a set of 68 3D landmarks (normalised inside).

  Call: `(landmarks (B, 68, 3) pixels, train) -> (B,)` logits.
  """
  hidden: tuple[int, ...] = (256, 256, 128)
  norm: str = 'none'
  dtype: Any = None

  @nn.compact
  def __call__(self, landmarks, train: bool = False):
    x = normalize_landmarks(landmarks.astype(jnp.float32))
    x = x.reshape(x.shape[0], -1).astype(self.dtype or jnp.float32)
    for features in self.hidden:
      x = layers.dense_layer(self.norm, train, features, self.dtype)(x)
      if self.norm in ('layer',):
        x = nn.LayerNorm(dtype=self.dtype)(x)
      x = nn.leaky_relu(x, 0.2)
    logit = layers.dense_layer(self.norm, train, 1, self.dtype)(x)
    return logit[:, 0].astype(jnp.float32)
