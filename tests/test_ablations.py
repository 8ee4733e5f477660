"""The ablation runner: statistics, tables and a tiny study end to end."""

import dataclasses
import importlib
import json
import os
import pkgutil

import numpy as np
import pytest

from experiments.ablations import recon_metrics
from experiments.ablations import runner
from jaxface.data import synthetic
from jaxface.train import config_lib
from jaxface.train import loop
import shared

R = 32


def test_difference_interval_against_a_hand_computed_example():
  # a = 1, 2, 3 and b = 4, 5, 6: difference -3; each variance of the mean
  # 1/3, so the standard error is sqrt(2/3) = 0.816497 with Welch's
  # (2/3)^2 / (2 (1/3)^2 / 2) = 4 degrees of freedom; t(0.975, 4) =
  # 2.776445 (tables), half-width 2.266966.
  got = runner.difference_interval([1, 2, 3], [4, 5, 6])
  assert got['diff'] == pytest.approx(-3.0)
  assert got['low'] == pytest.approx(-5.266966, abs=1e-5)
  assert got['high'] == pytest.approx(-0.733034, abs=1e-5)
  # One run on a side: a difference but no interval.
  assert runner.difference_interval([1.0], [2.0, 3.0]) == {
      'diff': -1.5, 'low': None, 'high': None}
  assert runner.difference_interval([], [2.0])['diff'] is None
  stats = runner.mean_std([1.0, 2.0, 6.0, float('nan')])
  assert stats == {'mean': 3.0, 'std': pytest.approx(np.sqrt(7.0)), 'n': 3}


def test_lookup_reads_dotted_paths():
  report = {'nme_2d': {'mean_of_bins': 0.5}, 'pose_error': {'mean': None}}
  assert runner.lookup(report, 'nme_2d.mean_of_bins') == 0.5
  assert runner.lookup(report, 'pose_error.mean') is None
  assert runner.lookup(report, 'dense_nme.mean') is None


@pytest.fixture(scope='module')
def study_run(tmp_path_factory):
  # Trained once per session: a second xdist worker reuses the runs (the
  # runner's own reuse of finished runs) and writes its tables to its own
  # folder.
  out = str(tmp_path_factory.mktemp('ablation') / 'results')
  with shared.shared_folder(tmp_path_factory, 'ablation_study') as root:
    data = str(root / 'data')
    if not os.path.isfile(os.path.join(data, 'dataset.json')):
      synthetic.synthesize(data, synthetic.SynthConfig(
          resolution=R, identities=(('train', 4), ('test', 2))),
                           {'recon': {'train': 16, 'test': 8}},
                           progress=False)
    study = runner.Study(
        name='tiny', title='tiny study',
        config='experiments/configs/quickstart.py',
        variants=(runner.Variant('base', ()),
                  runner.Variant('l1', ('loss.position=l1',)),
                  runner.Variant('broken', ('optimizer.lr=-1.0',))),
        metrics=recon_metrics.METRICS, evaluate=recon_metrics.evaluate,
        scales={'tiny': runner.Scale(
            overrides=('model.width=0.125', 'data.global_batch_size=8',
                       'data.eval_batch_size=8', 'train.num_steps=2',
                       'optimizer.warmup_steps=0',
                       'train.log_every=1', 'train.eval_every=2',
                       'train.checkpoint_every=2'),
            data=recon_metrics.CPU_DATA)},
        seeds=(0, 1))
    argv = ['--scale', 'tiny', '--runs', str(root / 'runs'), '--data', data,
            '--out', out]
    # Real faces are measured where the AFLW-21 folder is present; these
    # tests check the runner, the same with or without it.
    with pytest.MonkeyPatch.context() as patch:
      patch.setenv('JAXFACE_AFLW21', str(root / 'no-aflw21'))
      results = runner.main(study, argv)
  return study, results, out, argv


@pytest.mark.slow
def test_study_writes_a_table_that_matches_its_json(study_run):
  study, results, out, _ = study_run
  for name in runner.RESULTS:
    assert os.path.getsize(os.path.join(out, name)) > 0
  with open(os.path.join(out, 'results.json')) as f:
    stored = json.load(f)
  assert stored['table'] == json.loads(json.dumps(results['table']))
  table = open(os.path.join(out, 'results.md')).read()
  assert 'python -m experiments.ablations.tiny --scale tiny' in table
  for name in ('base', 'l1'):
    runs = stored['runs'][name]
    assert [r['status'] for r in runs] == ['ok', 'ok']
    for metric in study.metrics:
      values = [r['metrics'][metric.path] for r in runs]
      stats = stored['table'][name]['metrics'][metric.path]
      if None in values:  # not measured on these records
        continue
      assert stats['mean'] == pytest.approx(np.mean(values))
      assert stats['std'] == pytest.approx(np.std(values, ddof=1))
      # The table prints the mean (times the metric's scale) of each row.
      row = next(line for line in table.splitlines()
                 if line.startswith(f'| {name} |'))
      assert f'{np.mean(values) * metric.scale:.4g}' in row
  diff = stored['table']['l1']['metrics']['nme_2d.mean_of_bins']
  assert diff['vs_baseline']['diff'] == pytest.approx(
      stored['table']['l1']['metrics']['nme_2d.mean_of_bins']['mean'] -
      stored['table']['base']['metrics']['nme_2d.mean_of_bins']['mean'])


@pytest.mark.slow
def test_a_failing_variant_is_reported_not_fatal(study_run):
  _, results, out, _ = study_run
  broken = results['runs']['broken']
  assert [r['status'] for r in broken] == ['failed', 'failed']
  assert all('lr must be > 0' in r['error'] for r in broken)
  row = next(line for line in open(os.path.join(out, 'results.md'))
             if line.startswith('| broken |'))
  assert '0/2 (failed: training: ValueError' in row


@pytest.mark.slow
def test_a_finished_study_is_not_retrained(study_run):
  study, _, out, argv = study_run
  again = runner.main(dataclasses.replace(
      study, variants=study.variants[:2]), argv)
  for runs in again['runs'].values():
    assert all(r['reused'] and r['train_seconds'] > 0 for r in runs)
    assert all(r['status'] == 'ok' for r in runs)


def test_a_run_stopped_by_a_signal_stops_the_study(tmp_path, monkeypatch):
  # loop.run returns normally after SIGTERM / SIGINT (its checkpoint
  # saved); the study must stop there, not go on to the next run.
  from jaxface.train import loop  # pylint: disable=g-import-not-at-top
  calls = []

  def stopped_run(config, workdir, **kwargs):
    calls.append(workdir)
    return {'steps': 1, 'stopped_by': 'SIGTERM'}

  monkeypatch.setattr(loop, 'run', stopped_run)
  data = str(tmp_path / 'data')
  os.makedirs(data)
  with open(os.path.join(data, 'dataset.json'), 'w') as f:
    f.write('{}')
  study = runner.Study(
      name='stopped', title='stopped',
      config='experiments/configs/quickstart.py',
      # 'a' runs at another scale only: 'b' is the first run here.
      variants=(runner.Variant('a', (), ('other',)), runner.Variant('b'),
                runner.Variant('c')),
      metrics=recon_metrics.METRICS, evaluate=recon_metrics.evaluate,
      scales={'s': runner.Scale(overrides=(), data=recon_metrics.CPU_DATA)},
      seeds=(0, 1))
  with pytest.raises(SystemExit) as stop:
    runner.main(study, ['--scale', 's', '--runs', str(tmp_path / 'runs'),
                        '--data', data, '--out', str(tmp_path / 'out')])
  assert stop.value.code == 130
  assert len(calls) == 1  # not variant c, not seed 1
  assert os.path.join('b', 'seed0') in calls[0]


def test_a_variant_without_parts_of_the_renderer_trains_on_its_own_data(
    tmp_path, monkeypatch):
  trained = {}

  def fake_run_one(study, config_path, overrides, workdir, data_dir):
    trained[os.path.basename(os.path.dirname(workdir))] = (
        list(overrides), data_dir)
    return {'workdir': workdir, 'status': 'ok', 'error': None,
            'metrics': {m.path: 0.1 for m in study.metrics},
            'train_seconds': 1.0, 'reused': False, 'eval_seconds': 1.0}

  monkeypatch.setattr(runner, 'run_one', fake_run_one)
  data = runner.Data(resolution=32, num_train=2, num_test=1,
                     identities=(('train', 2), ('test', 1)))
  study = runner.Study(
      name='own', title='own data', config='experiments/configs/quickstart.py',
      variants=(runner.Variant('base'),
                runner.Variant('plain', leave_out=('camera',))),
      metrics=recon_metrics.METRICS, evaluate=recon_metrics.evaluate,
      scales={'tiny': runner.Scale(overrides=(), data=data)}, seeds=(0,))
  results = runner.main(study, ['--scale', 'tiny', '--runs',
                                str(tmp_path / 'runs'), '--out',
                                str(tmp_path / 'out')])
  base_overrides, base_eval = trained['base']
  plain_overrides, plain_eval = trained['plain']
  assert plain_eval == base_eval  # measured on the scale's data
  own = [o for o in plain_overrides if o.startswith('data.dir=')][-1]
  own_dir = own[len('data.dir='):]
  assert own_dir != base_eval and own_dir.endswith('-nocamera')
  with open(os.path.join(own_dir, 'dataset.json')) as f:
    assert json.load(f)['leave_out'] == ['camera']
  assert [o for o in base_overrides if o.startswith('data.dir=')] == [
      f'data.dir={base_eval}']
  assert results['runs']['plain'][0]['leave_out'] == ['camera']
  row = next(line for line in runner.markdown(study, results).splitlines()
             if line.startswith('| plain |'))
  assert 'data without camera' in row


def _studies():
  import experiments.ablations as package  # pylint: disable=g-import-not-at-top
  for info in pkgutil.iter_modules(package.__path__):
    module = importlib.import_module(f'experiments.ablations.{info.name}')
    if isinstance(getattr(module, 'STUDY', None), runner.Study):
      yield info.name, module.STUDY


@pytest.mark.parametrize('name,study', list(_studies()),
                         ids=[name for name, _ in _studies()])
def test_every_run_of_every_study_has_a_valid_config(name, study):
  # A typo in a study's overrides must fail here, not an hour into it.
  assert study.name and study.variants and study.scales, name
  base = config_lib.load_config(
      os.path.join(runner.repo_root(), study.config))
  for scale_name, scale in study.scales.items():
    seeded = [*scale.overrides, 'seed=0']
    if scale.pretrain is not None:
      loop._check_config(config_lib.apply_overrides(
          base.copy_and_resolve_references(), [*seeded, *scale.pretrain]))
      seeded.append(f'{study.pretrain_key}=/pretrained/run')
    for v in study.variants:
      if v.scales and scale_name not in v.scales:
        continue
      config = config_lib.apply_overrides(
          base.copy_and_resolve_references(), [*seeded, *v.overrides])
      loop._check_config(config)
      assert set(v.leave_out) <= set(synthetic.REALISM_PARTS), v.name
