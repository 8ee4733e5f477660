"""The face GAN trainer (task 'facegen'), and the EMA of generator weights."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface import losses
from jaxface.data import pipeline
from jaxface.data import synthetic
from jaxface.train import config_lib
from jaxface.train import facegen
from jaxface.train import loop
from jaxface.train import state as state_lib
from jaxface.train import trained
import shared

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACEGEN = os.path.join(REPO, 'experiments', 'configs', 'facegen.py')

SMALL = {'facegen.base_channels': 32, 'facegen.disc_base_channels': 16,
         'facegen.code_dim': 32, 'facegen.noise_dim': 16,
         'facegen.voxel_size': 8, 'data.global_batch_size': 8,
         'data.eval_batch_size': 8, 'train.num_steps': 2,
         'train.log_every': 1, 'train.eval_every': 2,
         'train.checkpoint_every': 2, 'train.eval_batches': 1,
         'train.progress': False, 'optimizer.warmup_steps': 0}


@pytest.fixture(scope='module')
def multiview(tmp_path_factory):
  return shared.synthetic_dataset(tmp_path_factory, synthetic.SynthConfig(
      resolution=32, identities=(('train', 8), ('test', 4))),
                                  {'multiview': {'train': 16, 'test': 8}})


def _config(data, **overrides):
  values = {**SMALL, 'data.dir': data, **overrides}
  return config_lib.apply_overrides(config_lib.load_config(FACEGEN),
                                    [f'{k}={v}' for k, v in values.items()])


@pytest.mark.slow  # a training run, as the two-step tests below
def test_quick_recipe_standardises_features_in_both_networks(multiview,
                                                             tmp_path):
  # facegen_quick.py: standardised features, the code in every block, a
  # spectrally normalised discriminator. Two steps move the running
  # statistics of both networks' feature standardisation.
  quick = os.path.join(REPO, 'experiments', 'configs', 'facegen_quick.py')
  config = config_lib.apply_overrides(config_lib.load_config(quick), [
      f'{k}={v}' for k, v in {**SMALL, 'data.dir': multiview}.items()])
  assert config.facegen.feature_norm and config.facegen.code_every_stage
  summary = loop.run(config, str(tmp_path))
  assert summary['steps'] == 2 and np.isfinite(
      summary['eval']['reconstruction_loss'])
  model = trained.load(str(tmp_path))
  for net in ('gen', 'disc'):
    stats = model.batch_stats[net]['FeatureEncoder_0']['BatchNorm_0']
    assert np.all(np.isfinite(stats['mean'])) and np.any(stats['mean'] != 0)
  module, variables = trained.facegen(model)
  assert module.feature_norm and module.code_every_stage
  feats = facegen.batch_features(_batch(multiview))[:2]
  out = module.apply(variables, feats, jnp.zeros((2, 16)))
  assert out.shape == (2, 32, 32, 3) and np.all(np.isfinite(out))


def _batch(data, kind='multiview'):
  it = pipeline.make_iterator(data, pipeline.PipelineConfig(
      kind=kind, split='train', global_batch_size=8, shuffle=False,
      training=False))
  try:
    return jax.tree.map(jnp.asarray, next(it))
  finally:
    it.close()


@pytest.mark.slow
@pytest.mark.parametrize('head,condition', [('uv', 'features'),
                                            ('voxel', 'features'),
                                            ('uv', 'landmarks')])
def test_two_steps_of_each_head(multiview, tmp_path, head, condition,
                                monkeypatch):
  shared.guard_retraces(monkeypatch)
  summary = loop.run(_config(multiview, **{'facegen.head': head,
                                           'facegen.condition': condition}),
                     str(tmp_path))
  assert summary['steps'] == 2
  ev = summary['eval']
  assert np.isfinite(ev['reconstruction_loss'])
  if head == 'uv':
    assert ev['geometric_error'] >= 0 and ev['position_error_px'] > 0
  else:
    assert 0 <= ev['iou'] <= 1
  assert os.path.exists(summary['figure'])
  with open(tmp_path / 'metrics.jsonl') as f:
    lines = [json.loads(line) for line in f if 'train/disc_loss' in line]
  assert len(lines) == 2
  assert all(np.isfinite(l['train/perceptual_loss']) for l in lines)
  # The workdir gives back a generator of the trained head and size.
  model = trained.load(str(tmp_path))
  module, variables = trained.facegen(model)
  feats, cond = facegen.batch_condition(_batch(multiview), condition)
  assert cond.shape == (len(feats), 31 if condition == 'features' else
                        31 + 3 * 136)
  out = module.apply(variables, cond[:2], jnp.zeros((2, 16)))
  want = (2, 32, 32, 3) if head == 'uv' else (2, 8, 8, 8, 1)
  assert out.shape == want


def test_the_landmarks_condition_is_the_features_then_each_views_points():
  rng = np.random.default_rng(0)
  feats = jnp.asarray(rng.normal(size=(2, 31)), jnp.float32)
  landmarks = jnp.asarray(rng.uniform(0, 64, (2, 3, 68, 3)), jnp.float32)
  np.testing.assert_array_equal(
      facegen.condition_of(feats, landmarks, 'features'), feats)
  cond = np.asarray(facegen.condition_of(feats, landmarks, 'landmarks'))
  assert cond.shape == (2, 31 + 3 * 136)
  np.testing.assert_array_equal(cond[:, :31], feats)
  second_view = np.asarray(landmarks[1, 1, :, :2])  # record 1, left view
  centred = second_view - second_view.mean(0)
  w, h = second_view.max(0) - second_view.min(0)
  np.testing.assert_allclose(cond[1, 31 + 136:31 + 272].reshape(68, 2),
                             centred / np.sqrt(w * h), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='condition'):
    facegen.condition_of(feats, landmarks, 'photos')
  config = _config('unused', **{'facegen.condition': 'photos'})
  with pytest.raises(ValueError, match='condition'):
    loop.make_task(config, 32)


def test_sgd_with_momentum_is_the_default_optimizer():
  config = config_lib.load_config(FACEGEN)
  assert config.optimizer.name == 'sgd' and config.optimizer.momentum > 0
  assert config.facegen.disc_optimizer.name == 'sgd'


@pytest.mark.slow
def test_generator_losses_go_down_on_a_fixed_batch(multiview):
  # Without the adversarial and perceptual terms (which depend on a moving
  # discriminator) the generator's loss must fall on a fixed batch.
  config = _config(multiview, **{
      'facegen.adversarial_weight': 0.0, 'facegen.perceptual_weight': 0.0,
      'optimizer.lr': 0.01, 'optimizer.grad_clip_norm': 1.0,
      'train.num_steps': 100})
  task = loop.make_task(config, 32)
  batch = _batch(multiview)
  state = state_lib.initialize(task.init_state, jax.random.key(0), batch)
  step = jax.jit(task.train_step)
  history = []
  for k in range(30):
    state, metrics = step(state, batch, jax.random.key(k))
    history.append(float(metrics['loss']))
  assert np.mean(history[-3:]) < 0.5 * np.mean(history[:3]), history


def test_features_of_the_true_face_fit_it_better_than_a_random_face(
    multiview):
  batch = _batch(multiview)
  feats = facegen.batch_features(batch)
  assert feats.shape == (8, 31) and bool(jnp.all(jnp.isfinite(feats)))
  true_map = batch['canonical_position_map']
  own = losses.geometric_consistency_loss(true_map, feats)
  other = losses.geometric_consistency_loss(jnp.roll(true_map, 1, axis=0),
                                            feats)
  assert float(own) < float(other)


@pytest.mark.slow
def test_ema_of_generator_weights(multiview):
  config = _config(multiview, **{'train.ema_decay': 0.5})
  task = loop.make_task(config, 32)
  batch = _batch(multiview)
  state = state_lib.initialize(task.init_state, jax.random.key(0), batch)
  init = state.params['gen']
  assert loop.tree_equal(state.ema_params, init)
  step = jax.jit(task.train_step)
  state, _ = step(state, batch, jax.random.key(1))
  first = state.params['gen']
  state, _ = step(state, batch, jax.random.key(2))
  second = state.params['gen']
  # ema_2 = 0.5 (0.5 init + 0.5 first) + 0.5 second
  want = jax.tree.map(lambda a, b, c: 0.25 * a + 0.25 * b + 0.5 * c,
                      init, first, second)
  for got, expect in zip(jax.tree.leaves(state.ema_params),
                         jax.tree.leaves(want)):
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)
  assert not loop.tree_equal(state.ema_params, second)
  # Generation uses the EMA weights.
  feats = facegen.batch_features(batch)
  ema_out = task.generate(state, feats, jax.random.key(0))
  raw_out = task.generate(state.replace(ema_params=second), feats,
                          jax.random.key(0))
  assert not np.allclose(ema_out, raw_out)
