"""Training the first seed's conditional 3D face GAN on `multiview` records.

The condition of each example is its 31 geometric features
(`jaxface.face.features.geometric_features`), measured on the record's
front, left and right views (their 68 landmarks and extra points), and with
`facegen.condition = 'landmarks'` also the three views' landmarks
themselves (`condition_of`), which carry more of the face's shape. The
generator (`FaceGenerator`) maps the condition + z ~ N(0, I) to a 3D face;
the discriminator (`FaceDiscriminator`) judges a face given the condition
it should meet. Each step runs two pure phase functions:

- `generator_step` minimises
    adversarial_weight x the adversarial loss (`facegen.gan_loss`)
    + perceptual_weight x the perceptual (identity) loss: L2 between the
      discriminator's feature maps of the generated face and of the true
      face of the same record, each layer divided by its H x W (x D)
    + geometric_weight x the geometric-consistency loss: the features
      re-measured on front / left / right views of the generated face
      against the input features ('uv' head only: a voxel grid has no
      landmarks to read)
    + reconstruction_weight x the head's direct loss against the record's
      true face: the weighted position-map loss (`loss.position`, on the
      canonical position map) for 'uv', binary cross-entropy against the
      occupancy filled behind the surface for 'voxel'.
- `discriminator_step`: true faces against the generated ones, both
  conditioned on the record's features.

Targets: the 'uv' head outputs the record's canonical position map
(R x R x 3 pixels of the canonical frame, R = the dataset's resolution); the
'voxel' head a `facegen.voxel_size`^3 grid, whose targets are
`losses.voxelize_position_map` of the canonical map over the cube of side R.
The discriminator sees maps divided by 1.1 R, and occupancy probabilities
(sigmoid of the generator's logits) for voxels.

Layout of the state: params / opt_state {'gen', 'disc'}; batch_stats
{'gen': the generator's BatchNorm, 'disc': the discriminator's statistics
(spectral norm, if any)}; ema_params: EMA of the generator's params.
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
from jaxface.face import features as features_lib
from jaxface.face import frames
from jaxface.face import layout as layout_lib
from jaxface.models import FaceDiscriminator
from jaxface.models import FaceGenerator
from jaxface.train import optim
from jaxface.train import recon
from jaxface.train import state as state_lib
from jaxface.train import task as task_lib


def make_generator(config, resolution: int) -> FaceGenerator:
  """The run's generator; its size is R ('uv') or `voxel_size` ('voxel')."""
  c = config.facegen
  size = resolution if c.head == 'uv' else c.voxel_size
  return FaceGenerator(head=c.head, size=size, base_channels=c.base_channels,
                       code_dim=c.code_dim, noise_dim=c.noise_dim,
                       attention=c.attention, norm=c.gen_norm,
                       num_residual=c.num_residual,
                       feature_norm=c.feature_norm,
                       code_every_stage=c.code_every_stage,
                       dtype=recon.compute_dtype(config.model.dtype))


# What the networks are conditioned on (`config.facegen.condition`).
CONDITIONS = ('features', 'landmarks')


def batch_features(batch: dict) -> jax.Array:
  """(B, 31) geometric features of a multiview batch's three views."""
  lmk, extra = batch['landmarks'], batch['extra_points']  # (B, 3, 68|5, 3)
  return features_lib.geometric_features(
      lmk[:, 0], extra[:, 0], lmk[:, 1], extra[:, 1], lmk[:, 2], extra[:, 2])


def check_condition(kind: str) -> None:
  """Raises ValueError unless `kind` is one of `CONDITIONS`."""
  if kind not in CONDITIONS:
    raise ValueError(f'config.facegen.condition {kind!r} is not one of '
                     f'{CONDITIONS}')


def condition_of(features, landmarks, kind: str) -> jax.Array:
  """The networks' condition: the (B, 31) `features` ('features', the
  first seed's), or with them each view's landmarks (B, 3, 68, 2+),
  `features.normalised_landmarks` ('landmarks': (B, 31 + 3 x 136))."""
  check_condition(kind)
  if kind == 'features':
    return features
  views = features_lib.normalised_landmarks(landmarks)  # (B, 3, 136)
  return jnp.concatenate([features, views.reshape(views.shape[0], -1)],
                         axis=-1)


def batch_condition(batch: dict, kind: str) -> tuple[jax.Array, jax.Array]:
  """(features (B, 31), condition (B, C)) of a multiview batch."""
  features = batch_features(batch)
  return features, condition_of(features, batch['landmarks'], kind)


@dataclasses.dataclass
class FaceGenTask(task_lib.Task):
  """Conditional face GAN; built by `loop.make_task`.

  `layout` is the UV layout of the dataset's canonical position maps (None:
  the procedural face model's): the 'uv' head's reconstruction loss is
  weighted by its weight mask, the geometric-consistency loss reads the
  landmarks and extra points at its UVs, and the eval error and figures use
  its face region.
  """
  config: Any
  resolution: int
  tx: optax.GradientTransformation
  layout: layout_lib.UVLayout | None = None

  data_kind = 'multiview'
  best_metric = 'reconstruction_loss'
  best_mode = 'min'

  def __post_init__(self):
    c = self.config.facegen
    if c.head not in ('uv', 'voxel'):
      raise ValueError(f'config.facegen.head {c.head!r} is not uv or voxel')
    check_condition(c.condition)
    if self.resolution < 8 or self.resolution & (self.resolution - 1):
      raise ValueError(f'the face GAN needs a power-of-two resolution >= 8; '
                       f'the dataset has {self.resolution}')
    self.gen = make_generator(self.config, self.resolution)
    self.disc = FaceDiscriminator(
        head=c.head, base_channels=c.disc_base_channels, code_dim=c.code_dim,
        norm=c.disc_norm, attention=c.attention,
        feature_norm=c.feature_norm,
        dtype=recon.compute_dtype(self.config.model.dtype))
    self.disc_tx = optim.make_optimizer(c.disc_optimizer,
                                        self.config.train.num_steps)
    self.scale = frames.POSITION_SCALE * self.resolution
    if self.layout is None:
      self.layout = layout_lib.PROCEDURAL
    self.weight = jnp.asarray(self.layout.weight_mask(self.resolution))
    self.points_uv = jnp.asarray(self.layout.points_uv)

  # --- pieces --------------------------------------------------------------------

  def _target(self, batch):
    """The true face in the head's form: map (B, R, R, 3) or occupancy
    (B, V, V, V)."""
    if self.gen.head == 'uv':
      return batch['canonical_position_map']
    return losses.voxelize_position_map(batch['canonical_position_map'],
                                        self.gen.size)

  def _disc_input(self, face, real: bool):
    if self.gen.head == 'uv':
      return face / self.scale
    probs = face if real else jax.nn.sigmoid(face[..., 0])
    return probs[..., None]

  def _noise(self, key, batch_size):
    return jax.random.normal(key, (batch_size, self.gen.noise_dim))

  def _judge(self, params, stats, x, cond, train):
    mutable = ['batch_stats'] if train else False
    variables = {'params': params, **({'batch_stats': stats} if stats else {})}
    out = self.disc.apply(variables, x, cond, train=train, mutable=mutable)
    if not train:
      return out, stats
    (logits, maps), updates = out
    return (logits, maps), updates.get('batch_stats', stats)

  def _condition(self, batch):
    return batch_condition(batch, self.config.facegen.condition)

  def _reconstruction(self, fake, target):
    if self.gen.head == 'uv':
      return losses.position_map_loss(fake, target, self.weight,
                                      kind=self.config.loss.position)
    return losses.voxel_loss(fake, target)

  # --- state -----------------------------------------------------------------------

  def init_state(self, key, batch) -> state_lib.TrainState:
    k1, k2 = jax.random.split(key)
    cond = self._condition(batch)[1][:1]
    gvars = self.gen.init(k1, cond, self._noise(k1, 1), train=False)
    real = self._disc_input(self._target(batch)[:1], real=True)
    dvars = self.disc.init(k2, real, cond, train=False)
    params = {'gen': gvars['params'], 'disc': dvars['params']}
    ema = gvars['params'] if self.config.train.ema_decay > 0 else {}
    return state_lib.TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        batch_stats={'gen': gvars.get('batch_stats', {}),
                     'disc': dvars.get('batch_stats', {})},
        opt_state={'gen': self.tx.init(params['gen']),
                   'disc': self.disc_tx.init(params['disc'])},
        ema_params=ema)

  # --- phase functions ---------------------------------------------------------------

  def generator_step(self, state, batch, key):
    c = self.config.facegen
    feats, cond = self._condition(batch)
    target = self._target(batch)
    noise = self._noise(key, feats.shape[0])
    (_, real_maps), _ = self._judge(
        state.params['disc'], state.batch_stats['disc'],
        self._disc_input(target, real=True), cond, False)

    def loss_fn(gen_params):
      fake, updates = self.gen.apply(
          {'params': gen_params, 'batch_stats': state.batch_stats['gen']},
          cond, noise, train=True, mutable=['batch_stats'])
      (logits, fake_maps), _ = self._judge(
          state.params['disc'], state.batch_stats['disc'],
          self._disc_input(fake, real=False), cond, False)
      adversarial = losses.generator_loss(logits, c.gan_loss)
      perceptual = losses.perceptual_loss(real_maps, fake_maps)
      rec = self._reconstruction(fake, target)
      total = (c.adversarial_weight * adversarial +
               c.perceptual_weight * perceptual +
               c.reconstruction_weight * rec)
      metrics = {'adversarial_loss': adversarial,
                 'perceptual_loss': perceptual, 'reconstruction_loss': rec}
      if self.gen.head == 'uv':
        geometric = losses.geometric_consistency_loss(
            fake, feats, huber_delta=c.geometric_huber_delta or None,
            uv=self.points_uv)
        total = total + c.geometric_weight * geometric
        metrics['geometric_loss'] = geometric
      metrics['loss'] = total
      return total, (updates['batch_stats'], fake, metrics)

    grads, (stats, fake, metrics) = jax.grad(loss_fn, has_aux=True)(
        state.params['gen'])
    params, opt, metrics['grad_norm'] = optim.apply_gradients(
        self.tx, grads, state.opt_state['gen'], state.params['gen'])
    ema = state_lib.update_ema(state.ema_params, params,
                               self.config.train.ema_decay)
    return state.replace(
        params={**state.params, 'gen': params},
        opt_state={**state.opt_state, 'gen': opt},
        batch_stats={**state.batch_stats, 'gen': stats},
        ema_params=ema), (jax.lax.stop_gradient(fake), cond, target, metrics)

  def discriminator_step(self, state, fake, cond, target):
    """One update of the discriminator: the true faces against `fake`,
    both conditioned on `cond` (B, C)."""
    kind = self.config.facegen.gan_loss

    def loss_fn(disc_params):
      (real_logits, _), stats = self._judge(
          disc_params, state.batch_stats['disc'],
          self._disc_input(target, real=True), cond, True)
      (fake_logits, _), stats = self._judge(
          disc_params, stats, self._disc_input(fake, real=False), cond, True)
      loss = losses.discriminator_loss(real_logits, fake_logits, kind)
      return loss, (stats, loss)

    grads, (stats, loss) = jax.grad(loss_fn, has_aux=True)(
        state.params['disc'])
    params, opt, _ = optim.apply_gradients(
        self.disc_tx, grads, state.opt_state['disc'], state.params['disc'])
    return state.replace(
        params={**state.params, 'disc': params},
        opt_state={**state.opt_state, 'disc': opt},
        batch_stats={**state.batch_stats, 'disc': stats}), {'disc_loss': loss}

  def train_step(self, state, batch, key):
    state, (fake, cond, target, metrics) = self.generator_step(
        state, batch, key)
    state, disc_metrics = self.discriminator_step(state, fake, cond, target)
    metrics.update(disc_metrics)
    return state.replace(step=state.step + 1), metrics

  # --- inference and eval --------------------------------------------------------------

  def generate(self, state, condition, key):
    """Faces for a (B, C) condition (`condition_of`) with the (EMA)
    generator in eval mode."""
    params = state.ema_params if self.config.train.ema_decay > 0 else (
        state.params['gen'])
    return self.gen.apply({'params': params,
                           'batch_stats': state.batch_stats['gen']},
                          condition, self._noise(key, condition.shape[0]))

  def predict(self, state, batch, key=None):
    """Faces for the batch's condition (`batch_condition`); `key` draws the
    noise (None: the fixed noise of the eval steps)."""
    return self.generate(state, self._condition(batch)[1],
                         jax.random.key(0) if key is None else key)

  def eval_step(self, state, batch) -> dict:
    """Per-example metrics (B,): reconstruction_loss (the head's direct loss
    against the true face) and, for 'uv', geometric_error (mean squared
    feature error of the generated face) and position_error_px (mean
    distance to the true map over the face region, pixels); for 'voxel',
    iou (of the occupancy at probability 0.5). The noise is fixed."""
    feats = batch_features(batch)
    target = self._target(batch)
    fake = self.predict(state, batch)
    out = {'reconstruction_loss': jax.vmap(self._reconstruction)(
        fake[:, None], target[:, None])}
    if self.gen.head == 'uv':
      out['geometric_error'] = jax.vmap(
          lambda m, f: losses.geometric_consistency_loss(m, f,
                                                         uv=self.points_uv))(
              fake[:, None], feats[:, None])
      out['position_error_px'] = eval_metrics.mean_position_error(
          fake, target, self.layout.face_region(self.resolution))
    else:
      out['iou'] = eval_metrics.voxel_iou(fake[..., 0] > 0, target > 0.5)
    return out

  def figure(self, state, batch, path: str, count: int = 4) -> None:
    """A PNG: per record, the front, left and right inputs, then the
    generated and the true face (position maps, or depth of the voxels)."""
    small = jax.tree.map(lambda x: x[:count], batch)
    fake = np.asarray(jax.jit(self.predict)(state, small))
    target = np.asarray(self._target(small))
    face = self.layout.face_region(self.resolution)
    rows = []
    for k in range(len(fake)):
      tiles = [(np.clip(np.asarray(img), 0, 1) * 255).astype(np.uint8)
               for img in np.asarray(small['images'][k])]
      if self.gen.head == 'uv':
        tiles += [inspect_lib.position_map_picture(fake[k], face),
                  inspect_lib.position_map_picture(target[k], face)]
      else:
        tiles += [voxel_depth_picture(fake[k, ..., 0] > 0),
                  voxel_depth_picture(target[k] > 0.5)]
      rows.append(tiles)
    inspect_lib.write_png(path, inspect_lib.tile_grid(rows, 128))


def voxel_depth_picture(occupied: np.ndarray) -> np.ndarray:
  """(V, V, V) bool occupancy, axes (z, y, x) -> (V, V, 3) uint8 picture of
  the frontmost occupied depth per column (brighter = nearer)."""
  size = occupied.shape[0]
  any_ = occupied.any(axis=0)
  front = size - 1 - np.argmax(occupied[::-1], axis=0)
  grey = np.where(any_, 55 + 200 * front / max(size - 1, 1), 0)
  return np.repeat(grey[..., None], 3, axis=-1).astype(np.uint8)
