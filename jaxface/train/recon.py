"""The cycle system's first phase: PRNet pretraining on `recon` records.

One pure train step (weighted position-map loss, optional landmark loss,
optimizer update, optional EMA) and one pure eval step (per-example NME of
the 68 landmarks read off the predicted map, and the position-map loss).
The loop (`jaxface.train.loop`) jits them once over the device mesh.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxface import losses
from jaxface.data import inspect as inspect_lib
from jaxface.eval import metrics as eval_metrics
from jaxface.face import frames
from jaxface.face import layout as layout_lib
from jaxface.face import schemes
from jaxface.face import uv as uv_lib
from jaxface.models import PRNet
from jaxface.models import prnet as prnet_lib
from jaxface.train import optim
from jaxface.train import state as state_lib
from jaxface.train import task as task_lib


def compute_dtype(name: str):
  """Compute dtype: 'float32' computes in the inputs' dtype (float32 from
  the pipeline), 'bfloat16' casts activations to bfloat16."""
  dtypes = {'float32': None, 'bfloat16': jnp.bfloat16}
  if name not in dtypes:
    raise ValueError(f'config.model.dtype {name!r} is not one of '
                     f'{sorted(dtypes)}')
  return dtypes[name]


@dataclasses.dataclass
class ReconTask(task_lib.Task):
  """PRNet pretraining. Built by `loop.make_task` from the config and the
  dataset.

  `layout` is the UV layout of the dataset's position maps (None: the
  procedural face model's): the landmarks are read at its landmark UVs
  (`landmark_uv`, (68, 2)), the position-map loss is weighted by its weight
  mask (`weight`, (R, R)) and the figures show its face region.

  With `mix_scheme` (config.mix: the landmark scheme of the 2D records that
  the loop adds to each batch as `mix_image`, `mix_points2d`,
  `mix_points_visible`), one forward pass takes both sets of images, and the
  2D records' points, read off their predicted maps at the scheme's UVs
  (`mix_uv`, (P, 2)), get a visibility-masked 2D landmark loss weighted
  config.mix.weight. `mix_point_weight` (P,) leaves out the points the
  layout cannot give, and the ear points unless config.mix.ears.
  """
  config: Any
  resolution: int
  tx: optax.GradientTransformation
  layout: layout_lib.UVLayout | None = None
  mix_scheme: schemes.Scheme | None = None
  model: PRNet = dataclasses.field(init=False)
  weight: jax.Array = dataclasses.field(init=False)
  landmark_uv: jax.Array = dataclasses.field(init=False)

  data_kind = 'recon'
  best_metric = 'nme'
  best_mode = 'min'
  has_baseline = True

  @classmethod
  def build(cls, config, resolution, tx, layout=None, mix_scheme=None):
    return cls(config, resolution, tx, layout, mix_scheme)

  def __post_init__(self):
    prnet_lib.check_resolution(self.resolution, "the dataset's resolution")
    if self.layout is None:
      self.layout = layout_lib.PROCEDURAL
    self.model = prnet_lib.from_config(
        self.config.model, compute_dtype(self.config.model.dtype), self.layout)
    mask = self.layout.weight_mask(self.resolution)
    if self.config.loss.mask == 'uniform':
      mask = (mask > 0).astype(np.float32)
    self.weight = jnp.asarray(mask)
    self.landmark_uv = jnp.asarray(self.layout.landmark_uv)
    if self.mix_scheme is not None:
      self.mix_uv = jnp.asarray(self.mix_scheme.uv(self.layout))
      used = self.mix_scheme.readable(self.layout)
      if not self.config.mix.ears:
        used = used & ~self.mix_scheme.is_ear
      self.mix_point_weight = jnp.asarray(used, jnp.float32)

  # --- state -----------------------------------------------------------------

  def init_state(self, key: jax.Array, batch: dict) -> state_lib.TrainState:
    variables = self.model.init(key, batch['image'][:1], train=False)
    params = variables['params']
    ema = params if self.config.train.ema_decay > 0 else {}
    return state_lib.TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        batch_stats=variables['batch_stats'], opt_state=self.tx.init(params),
        ema_params=ema)

  # --- pure steps --------------------------------------------------------------

  def train_step(self, state: state_lib.TrainState, batch: dict,
                 key: jax.Array) -> tuple[state_lib.TrainState, dict]:
    del key  # PRNet has no randomness in its forward pass.
    cfg = self.config

    mixed = self.mix_scheme is not None
    images = batch['image']
    count = images.shape[0]
    if mixed:
      images = jnp.concatenate([images, batch['mix_image']])

    def loss_fn(params):
      out, updates = self.model.apply(
          {'params': params, 'batch_stats': state.batch_stats},
          images, train=True, mutable=['batch_stats'])
      out, mix_out = out[:count], out[count:]
      position = losses.position_map_loss(
          out, batch['position_map'], self.weight, kind=cfg.loss.position,
          z_weight=cfg.loss.z_weight)
      total = position
      metrics = {'position_loss': position}
      if cfg.loss.landmark_weight > 0:
        landmark = losses.landmark_loss(out, batch['landmarks'],
                                        self.landmark_uv)
        total = total + cfg.loss.landmark_weight * landmark
        metrics['landmark_loss'] = landmark
      if mixed:
        points = losses.landmark_loss(
            mix_out, batch['mix_points2d'], self.mix_uv,
            visible=batch['mix_points_visible'] * self.mix_point_weight)
        total = total + cfg.mix.weight * points
        metrics['mix_points_loss'] = points
      metrics['loss'] = total
      return total, (updates['batch_stats'], metrics)

    grads, (batch_stats, metrics) = jax.grad(loss_fn, has_aux=True)(
        state.params)
    params, opt_state, grad_norm = optim.apply_gradients(
        self.tx, grads, state.opt_state, state.params)
    ema = state_lib.update_ema(state.ema_params, params,
                               cfg.train.ema_decay)
    metrics['grad_norm'] = grad_norm
    return state.replace(step=state.step + 1, params=params,
                         batch_stats=batch_stats, opt_state=opt_state,
                         ema_params=ema), metrics

  def predict(self, state: state_lib.TrainState, batch: dict, key=None
              ) -> jax.Array:
    """(B, R, R, 3) position maps (crop pixels) of batch['image'], with the
    EMA weights when the run keeps them."""
    del key
    params = state.ema_params if self.config.train.ema_decay > 0 else (
        state.params)
    return self.model.apply({'params': params,
                             'batch_stats': state.batch_stats}, batch['image'])

  def eval_step(self, state: state_lib.TrainState, batch: dict) -> dict:
    """Per-example metrics (B,): nme, position_loss."""
    pred = self.predict(state, batch)
    landmarks = uv_lib.sample_uv(pred, self.landmark_uv)
    out = {'nme': eval_metrics.nme(landmarks, batch['landmarks'])}
    if 'position_map' in batch:
      err = ((pred - batch['position_map']) / (
          frames.POSITION_SCALE * self.resolution))**2
      weight = self.weight[None, :, :, None]
      out['position_loss'] = jnp.sum(err * weight, axis=(1, 2, 3)) / (
          jnp.sum(self.weight) * 3)
    return out

  # --- host side ---------------------------------------------------------------

  def baseline(self, train_batches, eval_landmarks: np.ndarray) -> dict:
    """NME of the best constant prediction: the mean face fitted to the crop.

    The crops are PRNet's (centred on the landmarks' box, 1.5 x its size),
    so the mean of the training landmarks in crop pixels is the constant
    prediction that fits every crop best on average.
    """
    train = np.concatenate([b['landmarks'] for b in train_batches])
    mean_face = train.mean(axis=0)
    pred = np.broadcast_to(mean_face, eval_landmarks.shape)
    nme = eval_metrics.nme(pred, eval_landmarks)
    return {'nme_mean_face': float(nme.mean())}

  def figure(self, state: state_lib.TrainState, batch: dict, path: str,
             count: int = 6) -> None:
    """A PNG: inputs with predicted (red) and true (green) landmarks, and
    the predicted and true position maps."""
    images = np.asarray(batch['image'][:count])
    pred = np.asarray(jax.jit(self.predict)(state, {'image': images}))
    pred_lmk = np.asarray(uv_lib.sample_uv(pred, self.landmark_uv))
    # Texels outside the face have no loss weight, so their values are
    # arbitrary: the pictures show (and are scaled over) the face region.
    face = self.layout.face_region(self.resolution)
    rows = []
    for k in range(len(images)):
      rgb = (np.clip(images[k], 0, 1) * 255).astype(np.uint8)
      drawn = inspect_lib.draw_landmarks(rgb, batch['landmarks'][k],
                                         (0, 255, 0))
      drawn = inspect_lib.draw_landmarks(drawn, pred_lmk[k], (255, 0, 0))
      tiles = [drawn, inspect_lib.position_map_picture(pred[k], face)]
      if 'position_map' in batch:
        tiles.append(inspect_lib.position_map_picture(
            np.asarray(batch['position_map'][k]), face))
      rows.append(tiles)
    inspect_lib.write_png(path, inspect_lib.tile_grid(rows, 128))
