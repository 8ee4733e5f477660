"""The first seed's RNN that "classifies the image to be progressed or not".

jaxface reads it (SPEC.md) as a clip classifier: a small CNN embeds each
frame, optionally with the frame's normalised 68 landmarks, a GRU or LSTM
(`flax.linen.RNN`) runs over the frames, and a dense layer on the last
valid step's hidden state gives the logit of "these frames are a true,
temporally coherent progression of one face".
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxface.models import discriminators
from jaxface.models import layers

CELLS = ('gru', 'lstm')


class FrameEncoder(nn.Module):
  """(N, H, W, 3) frames -> (N, features) embeddings."""
  channels: tuple[int, ...] = (16, 32, 64, 64)
  features: int = 128
  dtype: Any = None

  @nn.compact
  def __call__(self, frames):
    x = frames.astype(self.dtype or frames.dtype)
    for c in self.channels:
      x = layers.Conv(c, (3, 3), (2, 2), dtype=self.dtype)(x)
      x = nn.GroupNorm(num_groups=None, group_size=1, dtype=self.dtype)(x)
      x = nn.leaky_relu(x, 0.2)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.features, dtype=self.dtype)(x)


class ProgressionRNN(nn.Module):
  """Clip -> logit of "true progression".

  Attributes:
    cell: 'gru' or 'lstm'.
    hidden: recurrent state size.
    frame_channels, frame_features: the per-frame CNN.
    use_landmarks: also feed each frame's normalised landmarks.
    dtype: compute dtype of the CNN (the recurrence runs in float32).

  Call: `(frames (B, T, H, W, 3) in [0, 1], lengths (B,) int or None,
  landmarks (B, T, 68, 3) or None)` -> (B,) float32 logits. Frames at or
  after a clip's length do not affect its logit.
  """
  cell: str = 'gru'
  hidden: int = 128
  frame_channels: tuple[int, ...] = (16, 32, 64, 64)
  frame_features: int = 128
  use_landmarks: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, frames, lengths=None, landmarks=None):
    if self.cell not in CELLS:
      raise ValueError(f'unknown cell {self.cell!r}; choose from {CELLS}')
    batch, time = frames.shape[:2]
    emb = FrameEncoder(self.frame_channels, self.frame_features, self.dtype)(
        frames.reshape((batch * time,) + frames.shape[2:]))
    emb = emb.reshape(batch, time, -1).astype(jnp.float32)
    if self.use_landmarks:
      if landmarks is None:
        raise ValueError('use_landmarks=True needs landmarks')
      norm = discriminators.normalize_landmarks(landmarks.astype(jnp.float32))
      emb = jnp.concatenate([emb, norm.reshape(batch, time, -1)], axis=-1)
    if lengths is None:
      lengths = jnp.full((batch,), time, jnp.int32)
    cell = (nn.GRUCell(self.hidden) if self.cell == 'gru' else
            nn.OptimizedLSTMCell(self.hidden))
    carry, _ = nn.RNN(cell, return_carry=True)(emb, seq_lengths=lengths)
    state = carry if self.cell == 'gru' else carry[1]  # LSTM carry is (c, h)
    return nn.Dense(1)(state)[:, 0]
