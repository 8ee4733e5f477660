"""The training loop: steps, resume after SIGKILL, SIGTERM, NaN, sharding."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh

from jaxface import cli
from jaxface import files
from jaxface.data import pipeline
from jaxface.data import shards
from jaxface.data import synthetic
from jaxface.eval import evaluators
from jaxface.eval import recon_eval
from jaxface.train import checkpoint as checkpoint_lib
from jaxface.train import config_lib
from jaxface.train import loop
from jaxface.train import quickstart
from jaxface.train import recon
from jaxface.train import state as state_lib
import shared

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = os.path.join(REPO, 'experiments', 'configs', 'quickstart.py')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  return shared.synthetic_dataset(tmp_path_factory, synthetic.SynthConfig(
      resolution=32, identities=(('train', 20), ('test', 5))),
                                  {'recon': {'train': 64, 'test': 16}})


def _tiny(path, data, **overrides):
  """Config `path` shrunk to a 2-step run on `data`, with `overrides`."""
  base = {'data.dir': data, 'data.global_batch_size': 8,
          'data.eval_batch_size': 8, 'train.num_steps': 2,
          'train.log_every': 1, 'train.eval_every': 2,
          'train.checkpoint_every': 2, 'train.eval_batches': 1,
          'train.progress': False, 'optimizer.warmup_steps': 0}
  base.update(overrides)
  return config_lib.apply_overrides(config_lib.load_config(path),
                                    [f'{k}={v}' for k, v in base.items()])


def _config(data, **overrides):
  return _tiny(QUICK, data, **{'model.width': 0.125, **overrides})


def test_two_steps_write_everything(data, tmp_path, monkeypatch):
  shared.guard_retraces(monkeypatch)
  summary = loop.run(_config(data), str(tmp_path))
  assert summary['steps'] == 2 and not summary['preempted']
  assert summary['eval']['nme'] > 0 and summary['nme_mean_face'] > 0
  assert os.path.exists(summary['figure'])
  with open(tmp_path / 'metrics.jsonl') as f:
    lines = [json.loads(line) for line in f]
  assert [l['step'] for l in lines if 'train/loss' in l] == [1, 2]
  # The logged learning rate is the schedule's at each step's update:
  # Adam at 2e-3, cosine over 2 steps without warm-up (quickstart config).
  rates = [l['train/learning_rate'] for l in lines if 'train/loss' in l]
  np.testing.assert_allclose(rates, [2e-3, 2e-3 * (0.05 + 0.95 * 0.5)],
                             rtol=1e-6)
  assert any(name.startswith('events.out.tfevents')
             for name in os.listdir(tmp_path))
  assert os.path.exists(tmp_path / 'summary.json')
  assert loop.final_variables(str(tmp_path))[0]  # a checkpoint with params


def test_configured_evaluators_log_what_jaxface_eval_reports(data, tmp_path):
  config = _config(data)
  with config.unlocked():
    config.evals.report = evaluators.config('reconstruction', every=1,
                                            limit=12)
  workdir = str(tmp_path / 'run')
  summary = loop.run(config, workdir)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    lines = [json.loads(line) for line in f]
  logged = {l['step']: l for l in lines
            if 'evals/report/nme_2d.mean_of_bins' in l}
  assert sorted(logged) == [1, 2]
  assert summary['evals']['report']['count'] == 12
  # `jaxface eval` of the last checkpoint: the same report.
  report, _ = recon_eval.evaluate_reconstruction(workdir, data, 'test',
                                                 limit=12, progress=False)
  for path in ('nme_2d.mean_of_bins', 'nme_3d.mean_of_bins',
               'pose_error.mean', 'dense_nme.mean'):
    np.testing.assert_allclose(logged[2][f'evals/report/{path}'],
                               _lookup(report, path), rtol=1e-5)
  assert logged[1]['evals/report/nme_2d.mean_of_bins'] != logged[2][
      'evals/report/nme_2d.mean_of_bins']  # measured on each step's weights


def test_a_failing_evaluator_loses_no_checkpoint(data, tmp_path,
                                                 monkeypatch):
  config = _config(data)
  with config.unlocked():
    config.evals.report = evaluators.config('reconstruction', every=2)

  def broken(*args, **kwargs):
    raise RuntimeError('the evaluator broke')

  monkeypatch.setattr(evaluators, 'run_configured', broken)
  workdir = str(tmp_path / 'run')
  with pytest.raises(RuntimeError, match='the evaluator broke'):
    loop.run(config, workdir)
  # The last step's checkpoint was saved before the evaluator ran.
  assert '2' in os.listdir(os.path.join(workdir, 'checkpoints'))


def _lookup(report, path):
  for key in path.split('.'):
    report = report[key]
  return report


@pytest.mark.parametrize('entry, message', [
    ({'type': 'inception'}, r'config.evals.bad.type must be one of'),
    ({'type': 'facegen'}, r"measures models of \('facegen',\), not of task "
                          "'prnet'"),
    ({'type': 'reconstruction', 'every': -1}, r'evals.bad.every must be a '
                                              'whole number >= 0'),
    ({'type': 'reconstruction', 'data_dir': '/nonexistent'},
     r"data_dir '/nonexistent' is not a jaxface dataset"),
])
def test_a_bad_evaluator_entry_is_refused_before_training(data, tmp_path,
                                                           entry, message):
  config = _config(data)
  with config.unlocked():
    config.evals.bad = evaluators.config(**{'kind': entry.pop('type'),
                                            **entry})
  with pytest.raises(ValueError, match=message):
    loop.run(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


def test_loss_goes_down_on_a_fixed_batch(data):
  # num_steps sets the schedule's length: the cosine reaches 0 at the end.
  config = _config(data, **{'optimizer.lr': 3e-3, 'train.num_steps': 100})
  task = loop.make_task(config, 32)
  it = pipeline.make_iterator(data, pipeline.PipelineConfig(
      split='train', global_batch_size=8, shuffle=False, training=False))
  batch = jax.tree.map(jnp.asarray, next(it))
  it.close()
  state = state_lib.initialize(task.init_state, jax.random.key(0), batch)
  step = jax.jit(task.train_step)
  losses = []
  for _ in range(40):
    state, metrics = step(state, batch, jax.random.key(0))
    losses.append(float(metrics['loss']))
  assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3]), losses


def _train_process(config_args, workdir):
  return subprocess.Popen(
      [sys.executable, '-m', 'jaxface.cli', 'train', '--config', QUICK,
       '--workdir', workdir, *config_args],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _args(data, steps, every):
  return [f'--config.data.dir={data}', '--config.model.width=0.125',
          '--config.data.global_batch_size=8', '--config.data.eval_batch_size=8',
          f'--config.train.num_steps={steps}', '--config.train.log_every=1',
          f'--config.train.eval_every={steps}', '--config.train.eval_batches=1',
          f'--config.train.checkpoint_every={every}',
          '--config.optimizer.warmup_steps=0', '--config.train.progress=False']


def _wait_for_checkpoint(workdir, step, process, timeout=300):
  """Until `workdir` holds a complete checkpoint of `step` or later (orbax
  renames a checkpoint's folder to its step when it is complete)."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if (checkpoint_lib.latest_step(workdir) or 0) >= step:
      return
    if process.poll() is not None:
      raise AssertionError(f'training ended early:\n{process.stdout.read()}')
    time.sleep(0.2)
  raise AssertionError('no checkpoint in time')


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_uninterrupted_parameters(
    data, tmp_path):
  steps, every = 24, 4
  straight = str(tmp_path / 'straight')
  p = _train_process(_args(data, steps, every), straight)
  assert p.wait(timeout=600) == 0, p.stdout.read()

  killed = str(tmp_path / 'killed')
  p = _train_process(_args(data, steps, every), killed)
  _wait_for_checkpoint(killed, every, p)
  p.send_signal(signal.SIGKILL)
  p.wait()
  assert loop.final_variables(killed) is not None  # something to resume
  assert every <= checkpoint_lib.latest_step(killed) < steps  # killed mid-run
  p = _train_process(_args(data, steps, every), killed)
  out = p.communicate(timeout=600)[0]
  assert p.returncode == 0, out
  assert 'resumed from the checkpoint of step' in out
  a, b = loop.final_variables(straight), loop.final_variables(killed)
  assert loop.tree_equal(a, b)
  # The replayed steps are logged once, as in the uninterrupted run.
  for workdir in (straight, killed):
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      logged = [json.loads(line)['step'] for line in f
                if 'train/loss' in line]
    assert logged == list(range(1, steps + 1)), workdir


@pytest.mark.slow
@pytest.mark.parametrize('signum, status', [(signal.SIGTERM, 0),
                                            (signal.SIGINT, 130)])
def test_sigterm_and_sigint_save_and_stop(data, tmp_path, signum, status):
  # SIGTERM: preemption, a normal exit; SIGINT: Ctrl-C, the shell's 130.
  workdir = str(tmp_path / 'stopped')
  p = _train_process(_args(data, 400, 2), workdir)
  _wait_for_checkpoint(workdir, 2, p)
  p.send_signal(signum)
  out = p.communicate(timeout=300)[0]
  assert p.returncode == status, out
  assert f'{signum.name}: saved the checkpoint of step' in out
  assert 'Traceback' not in out
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['preempted'] and summary['stopped_by'] == signum.name
  assert summary['steps'] < 400
  assert checkpoint_lib.latest_step(workdir) == summary['steps']


@pytest.mark.slow
def test_a_second_train_on_a_workdir_in_use_is_refused(data, tmp_path):
  # The first run is long enough to hold the workdir's lock while the
  # second starts, and is then stopped with SIGTERM.
  workdir = str(tmp_path / 'shared')
  first = _train_process(_args(data, 10_000, 2), workdir)
  _wait_for_checkpoint(workdir, 2, first)
  second = _train_process(
      _args(data, 10_000, 2) + ['--config.optimizer.lr=0.1'], workdir)
  out = second.communicate(timeout=300)[0]
  assert second.returncode == 2, out
  assert f'is in use by process {first.pid}' in out
  first.send_signal(signal.SIGTERM)
  first_out = first.communicate(timeout=300)[0]
  assert first.returncode == 0, first_out
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['optimizer']['lr'] == 2e-3  # the first run's
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert checkpoint_lib.latest_step(workdir) == json.load(f)['steps']


def _poison_the_loss(monkeypatch, from_step: int) -> None:
  """Makes the loss the loop sees NaN from the step `from_step` (counted
  from 0) on; the parameters update as before."""
  make_task = loop.make_task

  def poisoned(config, resolution, *args):
    task = make_task(config, resolution, *args)
    train_step = task.train_step

    def step(state, batch, key):
      new, metrics = train_step(state, batch, key)
      bad = jnp.where(state.step >= from_step, jnp.nan, metrics['loss'])
      return new, {**metrics, 'loss': bad}

    task.train_step = step
    return task

  monkeypatch.setattr(loop, 'make_task', poisoned)


def test_nan_stops_the_run_and_keeps_the_last_checkpoint(data, tmp_path,
                                                         monkeypatch):
  _poison_the_loss(monkeypatch, 3)
  config = _config(data, **{'train.num_steps': 10,
                            'train.checkpoint_every': 2,
                            'train.eval_every': 100})
  with pytest.raises(loop.TrainingError, match='step 4: the loss is nan'):
    loop.run(config, str(tmp_path))
  monkeypatch.undo()
  steps = sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints')
                 if s.isdigit())
  assert steps == [2]  # the good checkpoint, nothing after the NaN
  params, _ = loop.final_variables(str(tmp_path))
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))


def _to_float64(tree):
  return jax.tree.map(
      lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating)
      else x, tree)


@pytest.mark.slow
@pytest.mark.multidevice
def test_sharded_step_equals_single_device_step(data):
  # In float64, so that equality is exact up to 1e-7: in float32 the
  # reduction order of the sharded batch changes the last bits, which a
  # tiny 2-channel PRNet with BatchNorm over 8 values amplifies (in float64
  # to relative differences of about 1e-8 on smooth, photo-like synthetic
  # images; a sharding error would be orders of magnitude larger).
  config = _config(data)
  task = loop.make_task(config, 32)
  it = pipeline.make_iterator(data, pipeline.PipelineConfig(
      split='train', global_batch_size=8, shuffle=False, training=False))
  host_batch = next(it)
  it.close()
  results = []
  with jax.enable_x64(True):
    for devices in (jax.devices()[:1], jax.devices()[:8]):
      mesh = state_lib.make_mesh(devices)
      repl = state_lib.replicated(mesh)
      batch = _to_float64(pipeline.to_global_arrays(host_batch, mesh))
      state = state_lib.initialize(task.init_state, jax.random.key(0), batch)
      state = jax.device_put(_to_float64(state), repl)
      step = jax.jit(task.train_step, in_shardings=(repl, None, repl),
                     out_shardings=(repl, repl))
      for k in range(2):
        state, metrics = step(state, batch, jax.random.key(k))
      assert jax.tree.leaves(state.params)[0].dtype == jnp.float64
      results.append(jax.tree.map(np.asarray,
                                  (state.params, state.batch_stats)))
  assert len(jax.devices()) >= 8
  for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-12)


def test_clear_errors_before_compiling(data, tmp_path):
  with pytest.raises(shards.DatasetError, match='does not exist'):
    loop.run(_config(str(tmp_path / 'missing')), str(tmp_path / 'w1'))
  with pytest.raises(config_lib.ConfigError, match='optimiser'):
    _config(data, **{'optimiser.lr': 1})
  for override, message in (('optimizer.lr', 'optimizer.lr must be > 0'),
                            ('train.eval_every', 'eval_every must be'),
                            ('train.log_every', 'log_every must be'),
                            ('train.keep_checkpoints', 'keep_checkpoints'),
                            ('loss.mask', r"loss.mask must be one of "
                             r"\('prnet', 'uniform'\), got 'none'")):
    value = {'optimizer.lr': -1.0, 'loss.mask': 'none'}.get(override, 0)
    with pytest.raises(ValueError, match=message):
      loop.run(_config(data, **{override: value}), str(tmp_path / 'w4'))
  assert not os.path.exists(tmp_path / 'w4')  # refused before any write
  with pytest.raises(ValueError, match='p_flip'):
    loop.run(_config(data, **{'data.augmentation.p_flip': 2.0}),
             str(tmp_path / 'w0'))
  with pytest.raises(ValueError, match='unknown task'):
    loop.run(_config(data, task='nope'), str(tmp_path / 'w2'))
  other = str(tmp_path / 'clips')
  synthetic.synthesize(other, synthetic.SynthConfig(
      resolution=32, identities=(('train', 3), ('test', 2)), clip_length=3),
                       {'clips': {'train': 2}}, progress=False)
  with pytest.raises(shards.DatasetError, match="no 'recon' records"):
    loop.run(_config(other), str(tmp_path / 'w3'))


def test_the_augmentation_config_reaches_the_pipeline(data):
  config = _config(data, **{'data.augmentation.max_rotation_degrees': 10.0,
                            'data.augmentation.scale_range': (0.8, 1.0),
                            'data.augment': False})
  augment = loop.augment_config(config)
  assert augment.max_rotation_degrees == 10.0
  assert augment.scale_range == (0.8, 1.0) and not augment.enabled
  assert augment.p_flip == 0.5  # the default, from the default config
  del config.data['augmentation']  # a stored config from before the field
  assert loop.augment_config(config_lib.with_added_keys(config)) == (
      pipeline.augment_lib.AugmentConfig(enabled=False))


def test_a_config_from_before_an_added_key_resumes(tmp_path):
  # A stored config.json without data.augmentation and model.flip_average
  # (written before they existed) resumes: the values the code used then
  # are filled in. A changed augmentation value is still listed.
  config = config_lib.load_config(QUICK)
  stored = json.loads(config.to_json_best_effort())
  del stored['data']['augmentation'], stored['model']['flip_average']
  stored['model']['flip_average'] = False  # free: inference only
  (tmp_path / 'config.json').write_text(json.dumps(stored))
  loop._check_resume(config, str(tmp_path), {}, allow_config_change=False)
  del stored['model']['flip_average']
  stored['data']['augmentation'] = {'p_flip': 0.25}
  (tmp_path / 'config.json').write_text(json.dumps(stored))
  with pytest.raises(ValueError, match=r'data\.augmentation\.p_flip'):
    loop._check_resume(config, str(tmp_path), {}, allow_config_change=False)


def test_recon_task_rejects_resolution_prnet_cannot_take():
  config = config_lib.load_config(QUICK)
  with pytest.raises(ValueError, match='must be a positive multiple of 32'):
    recon.ReconTask(config, 48, None)


PROGRESSION = os.path.join(REPO, 'experiments', 'configs', 'progression.py')


@pytest.fixture(scope='module')
def clips(tmp_path_factory):
  return shared.synthetic_dataset(tmp_path_factory, synthetic.SynthConfig(
      resolution=32, identities=(('train', 10), ('test', 4)), clip_length=4),
                                  {'clips': {'train': 16, 'test': 8}})


def _progression_config(data, **overrides):
  return _tiny(PROGRESSION, data, **{'model.hidden': 16, **overrides})


@pytest.mark.slow
def test_progression_trainer_two_steps_and_learning(clips, tmp_path,
                                                    monkeypatch):
  shared.guard_retraces(monkeypatch)
  summary = loop.run(_progression_config(clips), str(tmp_path))
  assert summary['steps'] == 2
  assert 0 <= summary['eval']['accuracy'] <= 1 and summary['eval']['loss'] > 0
  assert os.path.exists(summary['figure'])
  # The loss goes down on a fixed batch.
  config = _progression_config(clips, **{'optimizer.lr': 3e-3,
                                         'train.num_steps': 100})
  task = loop.make_task(config, 32)
  it = pipeline.make_iterator(clips, pipeline.PipelineConfig(
      kind='clips', split='train', global_batch_size=8, shuffle=False,
      training=False))
  batch = jax.tree.map(jnp.asarray, next(it))
  it.close()
  state = state_lib.initialize(task.init_state, jax.random.key(0), batch)
  step = jax.jit(task.train_step)
  losses = []
  for _ in range(30):
    state, metrics = step(state, batch, jax.random.key(0))
    losses.append(float(metrics['loss']))
  assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses


CYCLE = os.path.join(REPO, 'experiments', 'configs', 'cycle_gan.py')


@pytest.mark.slow
def test_cycle_trainer_two_steps_from_a_pretrained_generator(data, trained,
                                                            tmp_path,
                                                            monkeypatch):
  shared.guard_retraces(monkeypatch)
  pretrained = trained  # the quickstart's PRNet, 2 steps
  mismatched = _tiny(CYCLE, data, **{
      'model.width': 0.125, 'cycle.disc_width': 0.125, 'cycle.pool_size': 4,
      'cycle.init_from': pretrained, 'model.bn_momentum': 0.9})
  built, real_initialize = [], state_lib.initialize

  def counted_initialize(*args, **kwargs):
    built.append(1)
    return real_initialize(*args, **kwargs)

  monkeypatch.setattr(state_lib, 'initialize', counted_initialize)
  with pytest.raises(ValueError, match="'lite': True.*'lite': False.*pass "
                     'the same --config.model'):
    loop.run(mismatched, str(tmp_path / 'mismatched'))
  # The quickstart's PRNet (conv head at half resolution, coordinate
  # channels, lite, skips, standardize); standardize changes no shape, and
  # is compared too.
  same = {'model.width': 0.125, 'cycle.disc_width': 0.125,
          'cycle.pool_size': 4, 'cycle.init_from': pretrained,
          'model.bn_momentum': 0.9, 'model.head': 'conv',
          'model.half_res_head': True,
          'model.coords': True, 'model.lite': True, 'model.skips': True}
  unstandardized = _tiny(CYCLE, data, **same)
  with pytest.raises(ValueError, match="'standardize': True.*'standardize': "
                     'False'):
    loop.run(unstandardized, str(tmp_path / 'unstandardized'))
  assert not built  # refused before any state was built (or compiled)
  config = _tiny(CYCLE, data, **same, **{'model.standardize': True})
  summary = loop.run(config, str(tmp_path / 'cycle'))
  assert summary['steps'] == 2 and summary['eval']['nme'] > 0
  with open(tmp_path / 'cycle' / 'metrics.jsonl') as f:
    lines = [json.loads(line) for line in f if 'train/disc_loss' in line]
  assert len(lines) == 2
  assert all(np.isfinite(l['train/adversarial_loss']) for l in lines)
  # Started from the pretrained generator, not from a fresh init.
  task = loop.make_task(config, 32)
  fresh = state_lib.initialize(task.init_state, jax.random.key(0),
                               jax.tree.map(jnp.asarray, _first_batch(data)))
  loaded = task.load_pretrained(fresh)
  pre_params, _ = loop.final_variables(pretrained)
  assert loop.tree_equal(loaded.params['gen'], pre_params)
  assert not loop.tree_equal(fresh.params['gen'], pre_params)


def _first_batch(data):
  it = pipeline.make_iterator(data, pipeline.PipelineConfig(
      split='train', global_batch_size=8, shuffle=False, training=False))
  try:
    return next(it)
  finally:
    it.close()


def test_image_pool_mixes_old_fakes_once_full(data):
  config = config_lib.apply_overrides(config_lib.load_config(CYCLE), [
      f'data.dir={data}', 'model.width=0.125', 'cycle.disc_width=0.125',
      'cycle.pool_size=4'])
  task = loop.make_task(config, 32)
  pool = {'maps': jnp.zeros((4, 2, 2, 3)), 'landmarks': jnp.zeros((4, 68, 3)),
          'count': jnp.zeros((), jnp.int32)}
  first = jnp.ones((4, 2, 2, 3))
  used, _, pool = task._pool(pool, first, jnp.ones((4, 68, 3)),
                             jax.random.key(0))
  assert int(pool['count']) == 4 and float(pool['maps'].min()) == 1.0
  np.testing.assert_array_equal(used, first)  # filling: the new fakes
  swapped = []
  for k in range(20):
    new = jnp.full((4, 2, 2, 3), 2.0 + k)
    used, _, pool = task._pool(pool, new, jnp.zeros((4, 68, 3)),
                               jax.random.key(k + 1))
    swapped.append(float(jnp.mean(used != new)))
  # About half of each batch comes from the pool once it is full.
  assert 0.3 < np.mean(swapped) < 0.7, swapped


@pytest.mark.parametrize('resnet, landmark', [(0.0, 0.0), (0.0, 1.0)])
def test_cycle_discriminator_weights_reach_the_generator_loss(
    data, resnet, landmark):
  # Each discriminator's judgement enters the generator's loss only with
  # its weight: with both weights 0 the loss is the position loss.
  config = config_lib.apply_overrides(config_lib.load_config(CYCLE), [
      f'data.dir={data}', 'model.width=0.125', 'cycle.disc_width=0.125',
      'cycle.pool_size=4', 'data.global_batch_size=8',
      'model.lite=True',  # the generator's depth does not matter here
      f'cycle.resnet_weight={resnet}', f'cycle.landmark_weight={landmark}'])
  task = loop.make_task(config, 32)
  batch = jax.tree.map(jnp.asarray, _first_batch(data))
  state = state_lib.initialize(task.init_state, jax.random.key(0), batch)
  _, (_, _, metrics) = jax.jit(task.generator_step)(state, batch)
  gap = float(metrics['loss'] - metrics['position_loss'])
  adversarial = float(metrics['adversarial_loss'])
  np.testing.assert_allclose(
      gap, config.cycle.adversarial_weight * adversarial, rtol=1e-4,
      atol=1e-9)
  if resnet == landmark == 0:
    assert gap == 0.0 and adversarial == 0.0
  else:
    assert adversarial > 0


# One writer, checks before writes, retention, failed saves (issue 13).


@pytest.fixture(scope='module')
def trained(data, tmp_path_factory):
  """A 2-step run's workdir (copy it before changing it)."""
  workdir = str(tmp_path_factory.mktemp('trained') / 'run')
  loop.run(_config(data), workdir)
  return workdir


def _contents(folder) -> dict:
  """{relative path: bytes} of every file under `folder` but the lock."""
  out = {}
  for root, _, names in os.walk(folder):
    for name in names:
      if name != files.LOCK_NAME:
        path = os.path.join(root, name)
        with open(path, 'rb') as f:
          out[os.path.relpath(path, folder)] = f.read()
  return out


def test_quickstart_mesh_of_a_test_face(data, trained, tmp_path):
  run = str(tmp_path / 'run')
  shutil.copytree(trained, run)
  path = quickstart.write_test_mesh(run, data, 32)
  assert path == os.path.join(run, 'test_face.obj')
  mesh = trimesh.load(path, process=False)
  # The face region of a 32x32 map: hundreds of vertices, coloured by the
  # test image's pixels (not all one colour).
  assert len(mesh.vertices) > 100 and len(mesh.faces) > 100
  assert np.all(np.isfinite(mesh.vertices))
  colours = np.asarray(mesh.visual.vertex_colors)[:, :3]
  assert len(np.unique(colours, axis=0)) > 10


def test_a_workdir_in_use_is_refused_and_left_alone(data, trained, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained, workdir)
  before = _contents(workdir)
  with files.FolderLock(workdir, 'workdir'):
    with pytest.raises(files.FolderInUseError,
                       match=rf'workdir .* in use by process {os.getpid()}'):
      loop.run(_config(data, **{'train.num_steps': 4}), workdir)
  assert _contents(workdir) == before


def test_a_refused_resume_leaves_the_workdir_byte_identical(
    trained, tmp_path):
  other = str(tmp_path / 'data64')
  synthetic.synthesize(other, synthetic.SynthConfig(
      resolution=64, identities=(('train', 4), ('test', 2))),
                       {'recon': {'train': 8, 'test': 8}}, progress=False)
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained, workdir)
  before = _contents(workdir)
  with pytest.raises(ValueError, match='resolution 32 there, 64 now'):
    loop.run(_config(other, **{'train.num_steps': 4}), workdir)
  assert _contents(workdir) == before


def test_a_changed_config_is_listed_and_needs_allow_config_change(
    data, trained, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained, workdir)
  before = _contents(workdir)
  with pytest.raises(ValueError, match=r'optimizer.lr: 0.002 -> 1e\+30.*'
                     '--allow-config-change'):
    loop.run(_config(data, **{'optimizer.lr': 1e30}), workdir)
  with pytest.raises(ValueError, match='another model.*model.width'):
    loop.run(_config(data, **{'model.width': 0.25}), workdir,
             allow_config_change=True)
  assert _contents(workdir) == before
  # Logging and checkpoint intervals may change; the steps need the flag.
  config = _config(data, **{'train.num_steps': 4, 'train.log_every': 2})
  with pytest.raises(ValueError, match=r'train.num_steps: 2 -> 4'):
    loop.run(config, workdir)
  summary = loop.run(config, workdir, allow_config_change=True)
  assert summary['start_step'] == 2 and summary['steps'] == 4
  with open(os.path.join(workdir, 'config.json')) as f:
    stored = json.load(f)
  assert stored['train']['num_steps'] == 4
  # A key added after the run was written reads as the value the code gave
  # it then ('prnet'): resuming with that value is no change.
  del stored['loss']['mask']
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(stored, f)
  assert loop.run(config, workdir)['steps'] == 4
  # What is measured (config.evals) may change freely.
  with config.unlocked():
    config.evals.report = evaluators.config('reconstruction')
  assert loop.run(config, workdir)['steps'] == 4
  with pytest.raises(ValueError, match="loss.mask: 'prnet' -> 'uniform'"):
    loop.run(_config(data, **{'train.num_steps': 4, 'loss.mask': 'uniform'}),
             workdir)


def test_retention_keeps_the_last_n_of_every_kind_and_the_best(tmp_path):
  checkpointer = checkpoint_lib.Checkpointer(
      str(tmp_path), keep=2, best_metric='nme', asynchronous=False)
  state = {'w': np.zeros(3, np.float32)}
  # Periodic checkpoints with eval metrics, others (SIGTERM, between
  # evals) without: step 1 is the best.
  for step, metrics in ((1, {'nme': 0.1}), (2, None), (3, {'nme': 0.5}),
                        (4, None), (5, {'nme': 0.4}), (6, None), (7, None)):
    checkpointer.save(step, state, {}, {'step': step}, metrics)
  checkpointer.close()
  assert checkpoint_lib.latest_step(str(tmp_path)) == 7
  assert sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints')
                if s.isdigit()) == [1, 6, 7]


def test_a_checkpoints_path_that_is_a_file_is_refused_before_compiling(
    data, tmp_path):
  os.makedirs(tmp_path / 'run')
  (tmp_path / 'run' / 'checkpoints').write_text('not a folder')
  with pytest.raises(NotADirectoryError, match='checkpoints is a file'):
    loop.run(_config(data), str(tmp_path / 'run'))
  assert sorted(os.listdir(tmp_path / 'run')) == ['.jaxface.lock',
                                                  'checkpoints']


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes read-only folders')
def test_a_read_only_workdir_is_refused_before_compiling(data, tmp_path):
  os.makedirs(tmp_path / 'run' / 'checkpoints')
  os.chmod(tmp_path / 'run' / 'checkpoints', 0o555)
  try:
    with pytest.raises(OSError, match='cannot write to .*checkpoints'):
      loop.run(_config(data), str(tmp_path / 'run'))
  finally:
    os.chmod(tmp_path / 'run' / 'checkpoints', 0o755)


def test_a_failed_save_stops_the_run_and_keeps_the_last_checkpoint(
    data, tmp_path, monkeypatch):
  save = checkpoint_lib.Checkpointer.save

  def failing(self, step, *args, **kwargs):
    if step == 4:
      raise OSError(28, 'No space left on device')
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(checkpoint_lib.Checkpointer, 'save', failing)
  config = _config(data, **{'train.num_steps': 6, 'train.eval_every': 100})
  with pytest.raises(loop.TrainingError,
                     match=r'checkpoint of step 4 failed .*No space left.*'
                     r'last complete checkpoint \(step 2\)'):
    loop.run(config, str(tmp_path))
  monkeypatch.undo()
  assert checkpoint_lib.latest_step(str(tmp_path)) == 2
  assert loop.final_variables(str(tmp_path))[0]


def test_a_nan_before_any_checkpoint_says_so(data, tmp_path, monkeypatch):
  _poison_the_loss(monkeypatch, 0)
  with pytest.raises(loop.TrainingError,
                     match='step 1: the loss is nan; stopping. No checkpoint '
                     'was saved'):
    loop.run(_config(data), str(tmp_path))


@pytest.mark.slow  # two short runs, 25 s
def test_each_step_is_traced_once_per_run_and_resume(data, tmp_path,
                                                     monkeypatch):
  # The eval split's 16 records in batches of 10 end with a partial batch.
  shared.guard_retraces(monkeypatch)
  overrides = {'train.eval_every': 2, 'train.eval_batches': 0,
               'data.eval_batch_size': 10, 'train.checkpoint_every': 2}
  loop.run(_config(data, **{'train.num_steps': 3, **overrides}),
           str(tmp_path))
  summary = loop.run(_config(data, **{'train.num_steps': 5, **overrides}),
                     str(tmp_path), allow_config_change=True)
  assert summary['start_step'] == 3 and summary['steps'] == 5


@pytest.mark.parametrize('with_pool', [False, True])
def test_checkpoints_from_before_the_extra_slot_resume(tmp_path, with_pool):
  # Before TrainState.extra, the cycle task kept its image pool in
  # batch_stats['pool'] and other tasks had no such field.
  pool = {'maps': np.full((2, 4), 7, np.float32),
          'count': np.asarray(2, np.int32)}
  old = {'step': np.asarray(5, np.int32), 'params': {'w': np.ones(3,
                                                                   np.float32)},
         'batch_stats': {'gen': {'mean': np.zeros(3, np.float32)}},
         'opt_state': {'mu': np.zeros(3, np.float32)}, 'ema_params': {}}
  if with_pool:
    old['batch_stats']['pool'] = pool
  checkpointer = checkpoint_lib.Checkpointer(str(tmp_path),
                                             asynchronous=False)
  checkpointer.save(5, old, {'batches': 5}, {'step': 5})
  new = state_lib.TrainState(
      step=old['step'], params=old['params'],
      batch_stats={'gen': old['batch_stats']['gen']},
      opt_state=old['opt_state'], ema_params={},
      extra={'pool': jax.tree.map(np.zeros_like, pool)} if with_pool else {})
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  state, data_state, meta = checkpointer.restore(
      5, checkpoint_lib.abstract(new, device))
  checkpointer.close()
  assert isinstance(state, state_lib.TrainState)
  assert int(state.step) == 5 and data_state == {'batches': 5}
  assert set(state.batch_stats) == {'gen'}
  if with_pool:
    np.testing.assert_array_equal(state.extra['pool']['maps'], pool['maps'])
    assert int(state.extra['pool']['count']) == 2
  else:
    assert state.extra == {}


def test_profile_writes_a_trace_of_the_window(data, tmp_path):
  workdir = str(tmp_path / 'run')
  assert cli.main(['train', '--config', QUICK, '--workdir', workdir,
                   '--profile', '2,3', *_args(data, 4, 4)]) == 0
  traces = glob.glob(os.path.join(workdir, 'profile', 'plugins', 'profile',
                                  '*', '*.xplane.pb'))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert json.load(f)['profile'] == os.path.join(workdir, 'profile')
  with pytest.raises(ValueError, match='profile_steps must be'):
    loop.run(_config(data, **{'train.profile_steps': (3, 2)}),
             str(tmp_path / 'bad'))
  assert cli.main(['train', '--config', QUICK, '--workdir', workdir,
                   '--profile', 'x', *_args(data, 4, 4)]) == 2
