"""Training the first seed's progression RNN on `clips` records.

The RNN (`jaxface.models.ProgressionRNN`) reads a clip (frames, and the
frames' landmarks when `model.use_landmarks`) and outputs the logit of "this
clip is a true progression of one face"; the loss is sigmoid cross-entropy
against the record's label. Eval reports accuracy and loss per example.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxface.data import inspect as inspect_lib
from jaxface.models import ProgressionRNN
from jaxface.train import optim
from jaxface.train import state as state_lib
from jaxface.train import task as task_lib


@dataclasses.dataclass
class ProgressionTask(task_lib.Task):
  """Clip classification; built by `loop.make_task`."""
  config: Any
  resolution: int
  tx: optax.GradientTransformation
  model: ProgressionRNN = dataclasses.field(init=False)

  data_kind = 'clips'
  best_metric = 'loss'
  best_mode = 'min'

  @classmethod
  def build(cls, config, resolution, tx, layout=None, mix_scheme=None):
    del layout  # clips have no position maps
    if mix_scheme is not None:
      raise ValueError("task 'progression' does not take config.mix")
    return cls(config, resolution, tx)

  def __post_init__(self):
    m = self.config.model
    self.model = ProgressionRNN(cell=m.cell, hidden=m.hidden,
                                use_landmarks=m.use_landmarks)

  def _logits(self, params, batch):
    return self.model.apply({'params': params}, batch['frames'], None,
                            batch['landmarks'] if self.model.use_landmarks
                            else None)

  def init_state(self, key: jax.Array, batch: dict) -> state_lib.TrainState:
    lmk = batch['landmarks'][:1] if self.model.use_landmarks else None
    params = self.model.init(key, batch['frames'][:1], None, lmk)['params']
    return state_lib.TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats={},
        opt_state=self.tx.init(params), ema_params={})

  def train_step(self, state, batch, key):
    del key  # deterministic forward pass

    def loss_fn(params):
      logits = self._logits(params, batch)
      labels = batch['label'].astype(logits.dtype)
      loss = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))
      return loss, logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    params, opt_state, grad_norm = optim.apply_gradients(
        self.tx, grads, state.opt_state, state.params)
    accuracy = jnp.mean((logits > 0) == (batch['label'] == 1))
    return state.replace(step=state.step + 1, params=params,
                         opt_state=opt_state), {
                             'loss': loss, 'accuracy': accuracy,
                             'grad_norm': grad_norm}

  def predict(self, state, batch, key=None):
    """(B,) logits: is each clip a true progression."""
    del key
    return self._logits(state.params, batch)

  def eval_step(self, state, batch) -> dict:
    logits = self.predict(state, batch)
    labels = batch['label'].astype(logits.dtype)
    return {'loss': optax.sigmoid_binary_cross_entropy(logits, labels),
            'accuracy': ((logits > 0) == (batch['label'] == 1)).astype(
                jnp.float32)}

  def figure(self, state, batch, path: str, count: int = 4) -> None:
    """A PNG: one row of frames per clip, the first frame outlined green
    when the prediction is right and red when wrong."""
    logits = np.asarray(jax.jit(self.predict)(state, jax.tree.map(
        lambda x: x[:count], batch)))
    rows = []
    for k in range(min(count, len(logits))):
      frames = (np.clip(np.asarray(batch['frames'][k]), 0, 1) * 255).astype(
          np.uint8)
      right = (logits[k] > 0) == (batch['label'][k] == 1)
      frames[0, :2], frames[0, -2:] = 0, 0
      frames[0, :, :2], frames[0, :, -2:] = 0, 0
      colour = (0, 255, 0) if right else (255, 0, 0)
      frames[0, :2] = colour
      frames[0, -2:] = colour
      rows.append(np.concatenate(list(frames), axis=1))
    inspect_lib.write_png(path, np.concatenate(rows, axis=0))
