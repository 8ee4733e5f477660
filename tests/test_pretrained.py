"""Shipped pretrained models: `jaxface export`, `trained.load_pretrained`,
and the commands that use a shipped model (`reconstruct`, `eval`,
`generate`, `models`).

Every test exports into a temporary models folder (JAXFACE_PRETRAINED_DIR
or the `out` / `directory` arguments), never into the package; the last
test checks the real shipped `synthetic` model, when there is one.
"""

import json
import os
import re

import cv2
import numpy as np
import pytest
from flax import traverse_util

import workdirs
from jaxface import cli
from jaxface import files
from jaxface import pretrained
from jaxface.data import records
from jaxface.data import shards
from jaxface.data import synthetic
from jaxface.eval import recon_eval
from jaxface.infer import detect
from jaxface.infer import generate
from jaxface.train import config_lib
from jaxface.train import loop
from jaxface.train import trained
import shared

RESOLUTION = 32
# float16 keeps 11 significant bits: the maps (up to 1.1 R = 35 pixels) of
# the exported weights stay within this many pixels of the float32 ones
# (4e-4 measured on the 2-step run).
MAP_TOLERANCE = 0.005


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  """A small synthetic recon dataset at RESOLUTION (seed 0)."""
  return shared.synthetic_dataset(tmp_path_factory, synthetic.SynthConfig(
      resolution=RESOLUTION, identities=(('train', 10), ('test', 5))),
                                  {'recon': {'train': 16, 'test': 8}})


@pytest.fixture(scope='module')
def run_dir(data, tmp_path_factory):
  """A 2-step prnet run with EMA weights: summary.json, batch statistics."""
  config = config_lib.apply_overrides(
      config_lib.load_config(workdirs.QUICK),
      [f'data.dir={data}', 'model.width=0.125', 'data.global_batch_size=8',
       'data.eval_batch_size=8', 'train.num_steps=2', 'train.log_every=1',
       'train.eval_every=2', 'train.checkpoint_every=2',
       'train.eval_batches=1', 'train.progress=False',
       'optimizer.warmup_steps=0', 'train.ema_decay=0.5'])
  out = str(tmp_path_factory.mktemp('pretrained') / 'run')
  loop.run(config, out)
  return out


@pytest.fixture(scope='module')
def ema_workdir(tmp_path_factory):
  """A fabricated prnet workdir whose EMA weights are unlike its params."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  config = config_lib.apply_overrides(config_lib.load_config(workdirs.QUICK), [
      'model.width=0.125', 'train.ema_decay=0.9',
      # PRNet's sigmoid head: random weights still give maps in [0, 1.1 R],
      # the range MAP_TOLERANCE is set for.
      'model.head=prnet', 'model.half_res_head=False'])
  out = str(tmp_path_factory.mktemp('pretrained') / 'ema')
  workdirs.write_workdir(out, config, RESOLUTION, {
      'image': jnp.zeros((1, RESOLUTION, RESOLUTION, 3), jnp.float32)})
  return out


@pytest.fixture(scope='module')
def shipped(run_dir, tmp_path_factory):
  """A models folder with `run_dir` exported as `synthetic` (measured on 8
  synthetic faces)."""
  root = str(tmp_path_factory.mktemp('models'))
  pretrained.export(run_dir, 'synthetic', root, eval_count=8)
  return root


def _predict(model: trained.TrainedModel, images: np.ndarray) -> np.ndarray:
  module, variables = trained.prnet(model)
  return np.asarray(module.apply(variables, images))


def _images(n: int = 4) -> np.ndarray:
  rng = np.random.default_rng(0)
  return rng.random((n, RESOLUTION, RESOLUTION, 3)).astype(np.float32)


def check_synthetic_nme(folder: str, tolerance: float,
                        scratch: str) -> tuple[float, float]:
  """Renders the eval set of a model folder's metrics.synthetic_eval into
  `scratch`, measures the model on it, and checks the NME against
  metrics.synthetic_nme; returns (documented, measured)."""
  with open(os.path.join(folder, pretrained.INFO_FILE)) as f:
    info = json.load(f)
  metrics = info.get('metrics', {})
  assert metrics.get('synthetic_nme') is not None, (
      f'{folder}/model.json has no metrics.synthetic_nme: export it with '
      '--eval-count > 0')
  spec = metrics['synthetic_eval']
  assert spec['synth_config']['resolution'] == info['resolution']
  data = pretrained.render_synthetic_eval(
      spec, os.path.join(scratch, 'synthetic_eval'))
  model = trained.load_pretrained(os.path.basename(folder),
                                  os.path.dirname(folder))
  report, _ = recon_eval.evaluate_reconstruction(
      model, data, spec['split'], spec['batch_size'], progress=False)
  assert report['count'] == spec['count']
  measured = report['nme_2d']['mean']
  assert measured == pytest.approx(metrics['synthetic_nme'], abs=tolerance)
  return metrics['synthetic_nme'], measured


# ----------------------------------------------------------------- export --


def test_export_writes_float16_weights_a_model_json_and_a_card(
    run_dir, data, shipped):
  folder = os.path.join(shipped, 'synthetic')
  assert sorted(os.listdir(folder)) == sorted(
      [pretrained.WEIGHTS_FILE, pretrained.INFO_FILE, pretrained.CARD_FILE])
  assert sum(os.path.getsize(os.path.join(folder, n))
             for n in os.listdir(folder)) < pretrained.MAX_BYTES
  with np.load(os.path.join(folder, pretrained.WEIGHTS_FILE)) as arrays:
    assert {arrays[k].dtype for k in arrays.files} == {np.dtype(np.float16)}
    assert 'params/Conv_0/kernel' in arrays.files
    assert any(k.startswith('batch_stats/') for k in arrays.files)
  info = pretrained.read_info(folder)
  run = trained.load(run_dir)
  _, variables = trained.prnet(run)
  assert info['parameters'] == pretrained.count_parameters(
      variables['params'])
  assert info['architecture']['width'] == 0.125
  assert info['resolution'] == RESOLUTION and info['step'] == run.step
  assert info['weights']['ema'] is True
  assert info['weights']['sha256'] == files.sha256_of(
      os.path.join(folder, pretrained.WEIGHTS_FILE))
  assert info['metrics']['synthetic_eval']['count'] == 8
  assert 0 < info['metrics']['synthetic_nme'] < 10
  with open(os.path.join(folder, pretrained.CARD_FILE)) as f:
    card = f.read()
  with open(os.path.join(run_dir, 'summary.json')) as f:
    summary = json.load(f)
  # Filled from the workdir: config, steps, wall time, data; placeholders.
  assert '"width": 0.125' in card and 'training steps: 2' in card
  assert f'{summary["wall_seconds"] / 3600:.2f} h' in card
  assert "jaxface's synthetic faces" in card and '"train": 16' in card
  assert f'{info["metrics"]["synthetic_nme"]:.4f}' in card
  assert '**TODO(trainer)**' in card
  assert not [n for n in os.listdir(shipped) if n.startswith('.')]


def test_loaded_model_predicts_as_the_workdir(run_dir, shipped):
  model = trained.load_pretrained('synthetic', shipped)
  run = trained.load(run_dir)
  assert isinstance(model, trained.TrainedModel)
  assert model.pretrained == 'synthetic' and model.task == 'prnet'
  assert model.workdir == os.path.join(shipped, 'synthetic')
  assert model.layout == run.layout and model.resolution == run.resolution
  images = _images()
  want, got = _predict(run, images), _predict(model, images)
  assert np.abs(got - want).max() < MAP_TOLERANCE
  # The workdir's predictions are the EMA weights': the raw params differ.
  raw = trained.TrainedModel(**{**vars(run), 'ema_params': {}})
  assert np.abs(_predict(raw, images) - want).max() > MAP_TOLERANCE


def test_export_ships_the_ema_weights(ema_workdir, tmp_path):
  pretrained.export(ema_workdir, 'ema', str(tmp_path), eval_count=0)
  model = trained.load_pretrained('ema', str(tmp_path))
  run = trained.load(ema_workdir)
  kernel = lambda params: np.asarray(params['Conv_0']['kernel'])  # noqa: E731
  np.testing.assert_allclose(kernel(model.params), kernel(run.ema_params),
                             rtol=1e-3, atol=1e-4)
  assert np.abs(kernel(run.params) - kernel(run.ema_params)).max() > 0.01
  images = _images()
  assert np.abs(_predict(model, images) - _predict(run, images)).max() < (
      MAP_TOLERANCE)
  assert pretrained.read_info(str(tmp_path / 'ema'))['metrics'] == {}


def test_the_documented_synthetic_nme_is_reproduced(shipped, tmp_path):
  documented, measured = check_synthetic_nme(
      os.path.join(shipped, 'synthetic'), 1e-4, str(tmp_path))
  assert documented > 0 and measured > 0


def test_a_corrupted_weights_file_is_caught(run_dir, tmp_path):
  pretrained.export(run_dir, 'm', str(tmp_path), eval_count=0)
  path = tmp_path / 'm' / pretrained.WEIGHTS_FILE
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF
  path.write_bytes(bytes(data))
  with pytest.raises(pretrained.PretrainedError, match='corrupted.*sha256'):
    trained.load_pretrained('m', str(tmp_path))
  path.unlink()
  with pytest.raises(pretrained.PretrainedError,
                     match='no weights.npz.*jaxface export'):
    trained.load_pretrained('m', str(tmp_path))


def test_unknown_names_list_the_available_ones(shipped, tmp_path):
  with pytest.raises(pretrained.PretrainedError,
                     match="no shipped model 'nope'.*synthetic"):
    trained.load_pretrained('nope', shipped)
  with pytest.raises(pretrained.PretrainedError, match='bad model name'):
    trained.load_pretrained('../synthetic', shipped)
  # The documented default, not exported yet: how to make it.
  with pytest.raises(pretrained.PretrainedError,
                     match='not been exported yet.*jaxface export --workdir '
                     'RUN --name synthetic'):
    trained.load_pretrained('synthetic', str(tmp_path))


def test_export_refuses_bad_requests(run_dir, ema_workdir, shipped, tmp_path):
  with pytest.raises(pretrained.PretrainedError, match='over the 0.001 MB'):
    pretrained.export(run_dir, 'big', str(tmp_path), eval_count=0,
                      max_bytes=1000)
  assert os.listdir(tmp_path) == []  # nothing left behind
  with pytest.raises(pretrained.PretrainedError, match='--overwrite'):
    pretrained.export(run_dir, 'synthetic', shipped, eval_count=0)
  with pytest.raises(pretrained.PretrainedError, match='bad model name'):
    pretrained.export(run_dir, 'Bad Name', str(tmp_path))
  with pytest.raises(pretrained.PretrainedError, match='--eval-seed'):
    pretrained.export(run_dir, 'm', str(tmp_path), eval_seed=0)
  with pytest.raises(FileNotFoundError, match='not a directory'):
    pretrained.export(str(tmp_path / 'none'), 'm', str(tmp_path))
  # --overwrite replaces a model.
  pretrained.export(ema_workdir, 'm', str(tmp_path), eval_count=0)
  pretrained.export(run_dir, 'm', str(tmp_path), eval_count=0,
                    overwrite=True)
  assert trained.load_pretrained('m', str(tmp_path)).step == 2
  assert os.listdir(tmp_path) == ['m']


# -------------------------------------------------------------------- CLI --


@pytest.fixture
def env_models(shipped, monkeypatch):
  monkeypatch.setenv(pretrained.ENV_DIR, shipped)
  return shipped


def _photo(data, tmp_path):
  """A test record's crop as a photo, and a --boxes file for it."""
  record = shards.RecordReader(data, 'recon', 'test')[0]
  path = str(tmp_path / 'face.png')
  assert cv2.imwrite(path, cv2.cvtColor(records.decode_jpeg(record['image']),
                                        cv2.COLOR_RGB2BGR))
  boxes = str(tmp_path / 'boxes.json')
  with open(boxes, 'w') as f:
    json.dump({'face.png': [detect.box_from_landmarks(
        record['landmarks'][:, :2]).tolist()]}, f)
  return path, boxes


def test_cli_export_and_models(run_dir, tmp_path, monkeypatch, capsys):
  monkeypatch.setenv(pretrained.ENV_DIR, str(tmp_path / 'models'))
  assert cli.main(['models']) == 0
  assert 'no shipped models' in capsys.readouterr().out
  assert cli.main(['export', '--workdir', run_dir, '--name', 'synthetic',
                   '--eval-count', '0']) == 0
  assert os.path.isfile(tmp_path / 'models' / 'synthetic' /
                        pretrained.WEIGHTS_FILE)
  assert cli.main(['models']) == 0
  out = capsys.readouterr().out
  assert 'synthetic  A PRNet (width 0.125, 32x32' in out and '[default]' in out
  assert cli.main(['export', '--workdir', run_dir, '--name', 'synthetic',
                   '--eval-count', '0']) == 2
  assert '--overwrite' in capsys.readouterr().err


def test_reconstruct_uses_the_shipped_model_by_default(
    data, env_models, run_dir, tmp_path, capsys):
  photo, boxes = _photo(data, tmp_path)
  assert cli.main(['reconstruct', photo, '--boxes', boxes, '--out',
                   str(tmp_path / 'a')]) == 0
  with open(tmp_path / 'a' / 'summary.json') as f:
    model = json.load(f)['model']
  assert model['pretrained'] == 'synthetic'
  assert model['path'] == os.path.join(env_models, 'synthetic')
  with open(tmp_path / 'a' / 'face_face0.json') as f:
    by_default = np.asarray(json.load(f)['landmarks_3d'])
  # --workdir still works, and gives the same faces within float16.
  assert cli.main(['reconstruct', photo, '--boxes', boxes, '--workdir',
                   run_dir, '--out', str(tmp_path / 'b')]) == 0
  with open(tmp_path / 'b' / 'face_face0.json') as f:
    from_run = json.load(f)
  assert from_run['model']['workdir'] == os.path.abspath(run_dir)
  assert np.abs(np.asarray(from_run['landmarks_3d']) - by_default).max() < (
      MAP_TOLERANCE)
  capsys.readouterr()
  assert cli.main(['reconstruct', photo, '--boxes', boxes, '--workdir',
                   run_dir, '--model', 'synthetic', '--out',
                   str(tmp_path / 'c')]) == 2
  assert 'not both' in capsys.readouterr().err
  assert cli.main(['reconstruct', photo, '--model', 'nope', '--out',
                   str(tmp_path / 'c')]) == 2
  err = capsys.readouterr().err
  assert "no shipped model 'nope'" in err and 'synthetic' in err
  assert cli.main(['reconstruct', photo, '--model', 'synthetic', '--step',
                   '2', '--out', str(tmp_path / 'c')]) == 2
  assert 'single set of weights' in capsys.readouterr().err


def test_eval_measures_a_shipped_model(data, env_models, tmp_path, capsys):
  out = str(tmp_path / 'eval')
  assert cli.main(['eval', '--model', 'synthetic', '--data', data, '--out',
                   out, '--no-progress']) == 0
  with open(os.path.join(out, 'report.json')) as f:
    report = json.load(f)
  assert report['count'] == 8 and report['model']['task'] == 'prnet'
  assert report['model']['workdir'] == os.path.join(env_models, 'synthetic')
  # --flip-average / --no-flip-average in place of the model's own setting:
  # recorded in the report, and the NMEs differ.
  reports = {}
  for flag in ('--flip-average', '--no-flip-average'):
    path = str(tmp_path / f'eval{flag}.json')
    assert cli.main(['eval', '--model', 'synthetic', '--data', data, '--out',
                     path, '--no-progress', flag]) == 0
    with open(path) as f:
      reports[flag] = json.load(f)
  assert reports['--flip-average']['model']['flip_average'] is True
  assert reports['--no-flip-average']['model']['flip_average'] is False
  assert (reports['--flip-average']['nme_2d']['mean'] !=
          reports['--no-flip-average']['nme_2d']['mean'])
  capsys.readouterr()
  assert cli.main(['eval', '--data', data, '--out', out]) == 2
  assert 'give --workdir' in capsys.readouterr().err


def test_generate_uses_the_shipped_reconstruction_model(
    env_models, tmp_path_factory, monkeypatch):
  data = str(tmp_path_factory.mktemp('mv') / 'data')
  synthetic.synthesize(data, synthetic.SynthConfig(
      resolution=RESOLUTION, identities=(('train', 2), ('test', 2))),
                       {'multiview': {'train': 2, 'test': 1}}, progress=False)
  gan = workdirs.facegen_workdir(str(tmp_path_factory.mktemp('gan')), data)
  record = shards.RecordReader(data, 'multiview', 'test')[0]
  used = []

  def true_points(reconstructor, path, boxes):
    del path, boxes
    used.append(reconstructor.trained)
    k = len(used) - 1
    return {'landmarks': record['landmarks'][k],
            'extra': record['extra_points'][k], 'box': np.zeros(4),
            'crop': np.zeros((RESOLUTION, RESOLUTION, 3), np.uint8)}

  monkeypatch.setattr(generate, '_view_points', true_points)
  photo = str(tmp_path_factory.mktemp('photo') / 'p.png')
  assert cv2.imwrite(photo, np.zeros((8, 8, 3), np.uint8))
  out = tmp_path_factory.mktemp('gen')
  assert cli.main(['generate', '--front', photo, '--left', photo, '--right',
                   photo, '--workdir', gan, '--out', str(out), '--num',
                   '1']) == 0
  assert [m.pretrained for m in used] == ['synthetic'] * 3
  with open(out / 'features.json') as f:
    assert json.load(f)['reconstruction']['pretrained'] == 'synthetic'


# ------------------------------------------------------ the shipped model --

SHIPPED = os.path.join(pretrained.PACKAGE_DIR, pretrained.DEFAULT_MODEL)


@pytest.mark.skipif(
    not os.path.isdir(SHIPPED),
    reason=f'{SHIPPED} does not exist yet: the synthetic model has not been '
    'trained and exported (`jaxface export --workdir RUN --name synthetic`)')
@pytest.mark.parametrize('name', pretrained.available(pretrained.PACKAGE_DIR))
def test_the_shipped_models(name, tmp_path):
  folder = os.path.join(pretrained.PACKAGE_DIR, name)
  model = trained.load_pretrained(name, pretrained.PACKAGE_DIR)  # sha256
  info = pretrained.read_info(folder)
  assert pretrained.count_parameters(model.params) == info['parameters']
  assert sum(os.path.getsize(os.path.join(folder, n))
             for n in os.listdir(folder)) < pretrained.MAX_BYTES
  assert pretrained.summary_line(folder)
  # Same weights, data and code: the documented NME, up to the numerics of
  # another machine.
  check_synthetic_nme(folder, 1e-3, str(tmp_path))


# What decides the trained weights; the data folders, evaluators, logging
# and progress bars do not.
_RECIPE = ('task', 'seed', 'model', 'loss', 'optimizer', 'mix.batch_size',
           'mix.weight', 'mix.ears', 'data.global_batch_size', 'data.augment',
           'train.num_steps', 'train.ema_decay')


def _flat(tree):
  """{'a.b': leaf}, tuples as the lists a stored JSON config holds."""
  return {key: list(value) if isinstance(value, tuple) else value
          for key, value in traverse_util.flatten_dict(tree, sep='.').items()}


@pytest.mark.parametrize('name', pretrained.available(pretrained.PACKAGE_DIR))
def test_the_model_card_command_trains_the_shipped_recipe(name):
  """The config a model card's `jaxface train --config` names gives the
  shipped run's recipe. A key the stored config lacks (added to jaxface
  after the run) must hold the default's value, as loading fills it."""
  folder = os.path.join(pretrained.PACKAGE_DIR, name)
  with open(os.path.join(folder, 'MODEL_CARD.md')) as f:
    found = re.search(r'jaxface train --config (\S+\.py)', f.read())
  assert found, f'{name}: its model card names no training config'
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  now = _flat(config_lib.load_config(os.path.join(root, found[1])).to_dict())
  default = _flat(config_lib.load_config(
      os.path.join(root, 'experiments', 'configs', 'default.py')).to_dict())
  stored = _flat(pretrained.read_info(folder)['config'])
  differ = {key: (stored.get(key, f'(absent: default {default.get(key)!r})'),
                  now[key])
            for key in now if key.startswith(_RECIPE) and
            (stored[key] if key in stored else default.get(key)) != now[key]}
  assert not differ, f'{name}: {found[1]} differs from the shipped run ' \
      f'(key: (shipped, config)): {differ}'
