"""The cycle system's second phase: PRNet with two discriminators.

Starts from a pretrained PRNet (`config.cycle.init_from`, a workdir of the
pretraining phase) or from scratch. Each step runs two pure phase functions:

- `discriminator_step`: the ResNet-18 discriminator learns to tell true
  position maps (scaled by 1 / (1.1 R)) from generated ones, and the
  landmark discriminator true 68 3D landmarks from those read off the
  generated maps. Generated samples come through a CycleGAN image pool:
  once the pool is full, half of each batch is replaced by older fakes.
- `generator_step`: PRNet minimises the weighted position-map loss plus
  `cycle.adversarial_weight` x the adversarial losses of both
  discriminators, weighted `cycle.resnet_weight` and
  `cycle.landmark_weight` (`cycle.gan_loss`: the second seed's
  'percentage' is "1 minus the discriminator's percentage").

Layout of the state: params / opt_state {'gen', 'disc'} where 'disc' holds
both discriminators; batch_stats {'gen': PRNet's BatchNorm, 'disc':
spectral-norm vectors (if any)}; extra: {'pool': {'maps', 'landmarks',
'count'}}.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxface import losses
from jaxface.face import frames
from jaxface.face import layout as layout_lib
from jaxface.face import uv as uv_lib
from jaxface.models import LandmarkDiscriminator
from jaxface.models import ResNetDiscriminator
from jaxface.train import optim
from jaxface.train import recon
from jaxface.train import state as state_lib
from jaxface.train import task as task_lib


@dataclasses.dataclass
class CycleTask(task_lib.Task):
  """PRNet + ResNet-18 discriminator + landmark discriminator.

  `layout`: the UV layout of the dataset's position maps (None: the
  procedural face model's), see `recon.ReconTask`.
  """
  config: Any
  resolution: int
  tx: optax.GradientTransformation
  layout: layout_lib.UVLayout | None = None

  data_kind = 'recon'
  best_metric = 'nme'
  best_mode = 'min'
  has_baseline = True

  def __post_init__(self):
    c = self.config.cycle
    self.recon = recon.ReconTask(self.config, self.resolution, self.tx,
                                 self.layout)
    self.layout = self.recon.layout
    self.disc = ResNetDiscriminator(width=c.disc_width, norm=c.disc_norm)
    self.lmk_disc = LandmarkDiscriminator(norm=c.disc_norm)
    self.disc_tx = optim.make_optimizer(c.disc_optimizer,
                                        self.config.train.num_steps)
    self.scale = frames.POSITION_SCALE * self.resolution

  # --- state -----------------------------------------------------------------

  def init_state(self, key, batch) -> state_lib.TrainState:
    gen = self.recon.init_state(key, batch)
    k1, k2 = jax.random.split(jax.random.fold_in(key, 1))
    maps = batch['position_map'][:1] / self.scale
    dvars = self.disc.init(k1, maps)
    lvars = self.lmk_disc.init(k2, batch['landmarks'][:1])
    disc_params = {'resnet': dvars['params'], 'landmarks': lvars['params']}
    disc_stats = {'resnet': dvars.get('batch_stats', {}),
                  'landmarks': lvars.get('batch_stats', {})}
    size = self.config.cycle.pool_size
    pool = {'maps': jnp.zeros((size,) + batch['position_map'].shape[1:]),
            'landmarks': jnp.zeros((size,) + batch['landmarks'].shape[1:]),
            'count': jnp.zeros((), jnp.int32)}
    return state_lib.TrainState(
        step=gen.step, params={'gen': gen.params, 'disc': disc_params},
        batch_stats={'gen': gen.batch_stats, 'disc': disc_stats},
        opt_state={'gen': gen.opt_state,
                   'disc': self.disc_tx.init(disc_params)},
        ema_params=gen.ema_params, extra={'pool': pool})

  @functools.cached_property
  def pretrained(self):
    """The PRNet of `cycle.init_from` (a `trained.TrainedModel`, read once),
    or None when it is not set.

    Raises:
      ValueError: its model config differs from this run's.
    """
    path = self.config.cycle.init_from
    if not path:
      return None
    from jaxface.train import trained as trained_lib  # pylint: disable=g-import-not-at-top
    pretrained = trained_lib.load(path)
    keys = ('width', 'head', 'coords', 'global_dim', 'lite', 'skips',
            'standardize', 'half_res_head', 'half_res_stem')
    theirs = {k: pretrained.config.model.get(k) for k in keys}
    ours = {k: self.config.model.get(k) for k in keys}
    # The keys too: standardize changes what the weights mean, not their
    # shapes.
    if theirs != ours:
      raise ValueError(_mismatch(path, theirs, ours))
    return pretrained

  def check_pretrained(self) -> None:
    """Reads `cycle.init_from` and checks its model config, before the
    run builds its state."""
    _ = self.pretrained

  def load_pretrained(self, state) -> state_lib.TrainState:
    """PRNet's parameters and statistics from `cycle.init_from`, if set.

    A network pretrained in another UV layout is a starting point (e.g.
    synthetic pretraining before 300W-LP); the message says so.
    """
    pretrained = self.pretrained
    if pretrained is None:
      return state
    path = self.config.cycle.init_from
    params, stats = pretrained.params, pretrained.batch_stats
    shapes = lambda tree: jax.tree.map(np.shape, tree)  # noqa: E731
    if shapes(params) != shapes(state.params['gen']):
      raise ValueError(_mismatch(path, pretrained.config.model.to_dict(),
                                 self.config.model.to_dict()))
    print(f'generator initialised from the last checkpoint in {path}')
    if pretrained.layout != self.layout:
      print(f'  it was trained in the {pretrained.layout.name!r} UV layout; '
            f'this run trains in the {self.layout.name!r} one')
    return state.replace(
        params={**state.params, 'gen': params},
        batch_stats={**state.batch_stats, 'gen': stats})

  def _gen_view(self, state) -> state_lib.TrainState:
    """The generator's part of the state, as the recon task sees it."""
    return state_lib.TrainState(
        step=state.step, params=state.params['gen'],
        batch_stats=state.batch_stats['gen'], opt_state=state.opt_state['gen'],
        ema_params=state.ema_params)

  # --- pieces ------------------------------------------------------------------

  def _judge(self, disc_params, disc_stats, maps, landmarks, train):
    """Logits of both discriminators, and their updated statistics."""
    mutable = ['batch_stats'] if train else False
    out_r = self.disc.apply(
        {'params': disc_params['resnet'], **_stats(disc_stats['resnet'])},
        maps / self.scale, train=train, mutable=mutable)
    out_l = self.lmk_disc.apply(
        {'params': disc_params['landmarks'],
         **_stats(disc_stats['landmarks'])},
        landmarks, train=train, mutable=mutable)
    (r, sr), (l, sl) = (_split(out_r, train), _split(out_l, train))
    stats = {'resnet': sr or disc_stats['resnet'],
             'landmarks': sl or disc_stats['landmarks']}
    return r, l, stats

  def _pool(self, pool, maps, landmarks, key):
    """CycleGAN's image pool: returns (fakes to judge, new pool)."""
    size = pool['maps'].shape[0]
    if size == 0:
      return maps, landmarks, pool
    batch = maps.shape[0]
    k1, k2 = jax.random.split(key)
    slot = jax.random.randint(k1, (batch,), 0, size)
    full = pool['count'] >= size
    # While filling: store and use the new fake. When full: with prob. 1/2
    # use an old fake from a random slot and store the new one there.
    filling_slot = (pool['count'] + jnp.arange(batch)) % size
    slot = jnp.where(full, slot, filling_slot)
    swap = full & (jax.random.uniform(k2, (batch,)) < 0.5)
    old_maps, old_lmk = pool['maps'][slot], pool['landmarks'][slot]
    use_maps = jnp.where(swap[:, None, None, None], old_maps, maps)
    use_lmk = jnp.where(swap[:, None, None], old_lmk, landmarks)
    store = ~full | swap
    new_maps = pool['maps'].at[slot].set(
        jnp.where(store[:, None, None, None], maps, old_maps))
    new_lmk = pool['landmarks'].at[slot].set(
        jnp.where(store[:, None, None], landmarks, old_lmk))
    new_pool = {'maps': new_maps, 'landmarks': new_lmk,
                'count': jnp.minimum(pool['count'] + batch, size)}
    return use_maps, use_lmk, new_pool

  # --- phase functions -----------------------------------------------------------

  def discriminator_step(self, state, batch, fake_maps, fake_lmk, key):
    kind = self.config.cycle.gan_loss
    maps, lmk, pool = self._pool(state.extra['pool'], fake_maps, fake_lmk,
                                 key)

    def loss_fn(disc_params):
      real_r, real_l, stats = self._judge(
          disc_params, state.batch_stats['disc'], batch['position_map'],
          batch['landmarks'], True)
      fake_r, fake_l, stats = self._judge(disc_params, stats, maps, lmk, True)
      loss_r = losses.discriminator_loss(real_r, fake_r, kind)
      loss_l = losses.discriminator_loss(real_l, fake_l, kind)
      return loss_r + loss_l, (stats, {'disc_loss': loss_r,
                                       'landmark_disc_loss': loss_l})

    grads, (stats, metrics) = jax.grad(loss_fn, has_aux=True)(
        state.params['disc'])
    params, opt, _ = optim.apply_gradients(
        self.disc_tx, grads, state.opt_state['disc'], state.params['disc'])
    return state.replace(
        params={**state.params, 'disc': params},
        opt_state={**state.opt_state, 'disc': opt},
        batch_stats={**state.batch_stats, 'disc': stats},
        extra={**state.extra, 'pool': pool}), metrics

  def generator_step(self, state, batch):
    cfg, c = self.config, self.config.cycle

    def loss_fn(gen_params):
      out, updates = self.recon.model.apply(
          {'params': gen_params, 'batch_stats': state.batch_stats['gen']},
          batch['image'], train=True, mutable=['batch_stats'])
      position = losses.position_map_loss(out, batch['position_map'],
                                          self.recon.weight,
                                          kind=cfg.loss.position)
      fake_lmk = uv_lib.sample_uv(out, self.recon.landmark_uv)
      logit_r, logit_l, _ = self._judge(
          state.params['disc'], state.batch_stats['disc'], out, fake_lmk,
          False)
      adv = (c.resnet_weight *
             losses.generator_loss(logit_r, c.gan_loss) +
             c.landmark_weight *
             losses.generator_loss(logit_l, c.gan_loss))
      total = position + c.adversarial_weight * adv
      return total, (updates['batch_stats'], out, fake_lmk,
                     {'loss': total, 'position_loss': position,
                      'adversarial_loss': adv})

    grads, (stats, out, fake_lmk, metrics) = jax.grad(loss_fn, has_aux=True)(
        state.params['gen'])
    params, opt, metrics['grad_norm'] = optim.apply_gradients(
        self.tx, grads, state.opt_state['gen'], state.params['gen'])
    return state.replace(
        params={**state.params, 'gen': params},
        opt_state={**state.opt_state, 'gen': opt},
        batch_stats={**state.batch_stats, 'gen': stats}), (
            jax.lax.stop_gradient(out), jax.lax.stop_gradient(fake_lmk),
            metrics)

  def train_step(self, state, batch, key):
    state, (fake_maps, fake_lmk, metrics) = self.generator_step(state, batch)
    state, disc_metrics = self.discriminator_step(state, batch, fake_maps,
                                                  fake_lmk, key)
    metrics.update(disc_metrics)
    return state.replace(step=state.step + 1), metrics

  # --- eval, shared with the pretraining phase -----------------------------------

  def predict(self, state, batch, key=None):
    return self.recon.predict(self._gen_view(state), batch, key)

  def eval_step(self, state, batch):
    return self.recon.eval_step(self._gen_view(state), batch)

  def baseline(self, train_batches, eval_landmarks):
    return self.recon.baseline(train_batches, eval_landmarks)

  def figure(self, state, batch, path):
    self.recon.figure(self._gen_view(state), batch, path)


def _stats(stats):
  return {'batch_stats': stats} if stats else {}


def _split(out, train):
  if not train:
    return out, None
  logits, updates = out
  return logits, updates.get('batch_stats')


def _mismatch(path: str, theirs: dict, ours: dict) -> str:
  return (f'cycle.init_from={path} is a PRNet with model {theirs}, this run '
          f'builds {ours}: pass the same --config.model.* values')
