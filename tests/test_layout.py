"""UV layouts: masks, JSON, and the layout travelling from data to model."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from jaxface import losses
from jaxface.data import shards
from jaxface.data import synthetic
from jaxface.face import layout as layout_lib
from jaxface.face import model as model_lib
from jaxface.face import uv as uv_lib
from jaxface.train import config_lib
from jaxface.train import loop
from jaxface.train import trained
import workdirs

PROCEDURAL = layout_lib.PROCEDURAL
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACEGEN = os.path.join(REPO, 'experiments', 'configs', 'facegen.py')
CYCLE = os.path.join(REPO, 'experiments', 'configs', 'cycle_gan.py')


MADE_UP = workdirs.made_up_layout()


def _texels(uv, res):
  return np.round(np.asarray(uv, np.float64) * (res - 1)).astype(int)


@pytest.mark.parametrize('res', [32, 256])
def test_procedural_masks_are_the_face_model_s(res):
  assert PROCEDURAL.is_procedural and PROCEDURAL.name == 'procedural'
  np.testing.assert_array_equal(PROCEDURAL.landmark_uv,
                                model_lib.landmark_uv())
  np.testing.assert_array_equal(PROCEDURAL.extra_uv,
                                model_lib.extra_point_uv())
  weight = PROCEDURAL.weight_mask(res)
  assert weight.dtype == np.float32 and weight.shape == (res, res)
  np.testing.assert_array_equal(weight, model_lib.uv_weight_mask(res))
  region = PROCEDURAL.face_region(res)
  assert region.dtype == bool
  np.testing.assert_array_equal(region, model_lib.face_region_mask(res))


@pytest.mark.parametrize('res', [32, 64, 256])
def test_masks_of_another_layout_follow_its_landmarks(res):
  weight, region = MADE_UP.weight_mask(res), MADE_UP.face_region(res)
  assert weight.dtype == np.float32 and weight.shape == (res, res)
  assert region.dtype == bool and region.shape == (res, res)
  assert set(np.unique(weight)) == {0.0, 3.0, 4.0, 16.0}
  texel = _texels(MADE_UP.landmark_uv, res)
  on_landmarks = np.zeros((res, res), bool)
  on_landmarks[texel[:, 1], texel[:, 0]] = True
  # 16 exactly at its landmark texels, all inside its face region.
  np.testing.assert_array_equal(weight == 16, on_landmarks)
  assert region[on_landmarks].all()
  np.testing.assert_array_equal(weight > 0, region)
  # Eyes, nose (between the nostrils) and mouth weigh 4.
  lmk = MADE_UP.landmark_uv
  for centre in (lmk[36:42].mean(0), lmk[42:48].mean(0),
                 (lmk[31] + lmk[35]) / 2 + (lmk[27] - lmk[33]) * 0.2,
                 (lmk[48] + lmk[54]) / 2):
    j, i = _texels(centre[None], res)[0]
    assert weight[i, j] >= 4, (res, centre)
  # The forehead above the brows is in; the far corners are not.
  brows = lmk[17:27].mean(0)
  forehead = brows + 0.6 * layout_lib.FOREHEAD_FRACTION * (brows - lmk[8])
  j, i = _texels(forehead[None], res)[0]
  assert region[i, j] and weight[i, j] == 3
  assert not region[0, 0] and not region[-1, -1]
  # Not the procedural layout's masks, nor merely its mirror image.
  assert not np.array_equal(region, PROCEDURAL.face_region(res))
  assert not np.array_equal(region, PROCEDURAL.face_region(res)[:, ::-1])
  # Callers get their own copies of the cached masks.
  weight[:] = 0
  assert MADE_UP.weight_mask(res).max() == 16


def test_json_round_trip_and_equality():
  for layout in (PROCEDURAL, MADE_UP):
    again = layout_lib.UVLayout.from_json(json.loads(json.dumps(
        layout.to_json())))
    assert again == layout and hash(again) == hash(layout)
    np.testing.assert_array_equal(again.landmark_uv, layout.landmark_uv)
    np.testing.assert_array_equal(again.extra_uv, layout.extra_uv)
    assert again.is_procedural == (layout is PROCEDURAL)
  assert MADE_UP != PROCEDURAL
  assert layout_lib.UVLayout('other', MADE_UP.landmark_uv,
                             MADE_UP.extra_uv) != MADE_UP
  assert MADE_UP.points_uv.shape == (73, 2)
  with pytest.raises(ValueError):
    MADE_UP.landmark_uv[0, 0] = 0.5  # read-only


def test_mirror_symmetry_and_flip_average_needs_it():
  # The procedural layout puts each landmark's twin at 1 - u; moving one
  # eye corner by a texel at 128 (1 / 127 > 2e-3) breaks the symmetry, and
  # a PRNet that averages with the mirror image refuses that layout.
  assert PROCEDURAL.is_mirror_symmetric()
  moved = PROCEDURAL.landmark_uv.copy()
  moved[36, 0] += 1.0 / 127
  lopsided = layout_lib.UVLayout('lopsided', moved, PROCEDURAL.extra_uv)
  assert not lopsided.is_mirror_symmetric()
  config = config_lib.load_config(os.path.join(REPO, 'experiments', 'configs',
                                               'quickstart.py'))
  config.model.flip_average = True
  from jaxface.models import prnet  # pylint: disable=g-import-not-at-top
  assert prnet.from_config(config.model, layout=PROCEDURAL).flip_average
  with pytest.raises(ValueError, match='mirror-symmetric UV layout'):
    prnet.from_config(config.model, layout=lopsided)
  config.model.flip_average = False
  assert not prnet.from_config(config.model, layout=lopsided).flip_average


def _entry(**changes):
  entry = MADE_UP.to_json()
  entry.update(changes)
  return entry


@pytest.mark.parametrize('entry, message', [
    ([1, 2], 'JSON object'),
    ({'name': 'x', 'landmark_uv': []}, r"no \['extra_uv'\]"),
    (_entry(landmark_uv=_entry()['landmark_uv'][:67]), r'landmark_uv: shape '
     r'\(67, 2\), expected \(68, 2\)'),
    (_entry(extra_uv=[[0.5, 0.5, 0.5]] * 5), r'extra_uv: shape \(5, 3\)'),
    (_entry(extra_uv=[[0.5, float('nan')]] * 5), 'non-finite'),
    (_entry(landmark_uv=[[0.5, 1.5]] * 68), 'outside the UV square'),
    (_entry(extra_uv=[[-0.1, 0.5]] * 5), 'outside the UV square'),
    (_entry(extra_uv=[['a', 'b']] * 5), 'not an array of numbers'),
    (_entry(name=''), 'non-empty name'),
    (_entry(name='procedural'), 'not those of this version'),
])
def test_malformed_entries_are_clear_errors(entry, message):
  with pytest.raises(ValueError, match=message):
    layout_lib.UVLayout.from_json(entry)


def test_layout_of_dataset():
  assert layout_lib.layout_of_dataset({'format': 'x'}) is PROCEDURAL
  assert layout_lib.layout_of_dataset(
      {'uv_layout': MADE_UP.to_json()}) == MADE_UP
  with pytest.raises(ValueError, match='dataset.json: uv_layout: .*shape'):
    layout_lib.layout_of_dataset({'uv_layout': _entry(extra_uv=[[0, 0]])})


def test_geometric_loss_reads_the_layout_s_points():
  rng = np.random.default_rng(0)
  position_map = jnp.asarray(rng.uniform(0, 32, (1, 32, 32, 3)), jnp.float32)
  lmk, extra = losses.canonical_views(position_map, (0.0,),
                                      uv=MADE_UP.points_uv)
  np.testing.assert_allclose(
      lmk[0], uv_lib.sample_uv(position_map, MADE_UP.landmark_uv), atol=1e-5)
  np.testing.assert_allclose(
      extra[0], uv_lib.sample_uv(position_map, MADE_UP.extra_uv), atol=1e-5)
  default, _ = losses.canonical_views(position_map, (0.0,))
  np.testing.assert_allclose(
      default[0], uv_lib.sample_uv(position_map, PROCEDURAL.landmark_uv),
      atol=1e-5)
  feats = jnp.zeros((1, 31))
  assert float(losses.geometric_consistency_loss(
      position_map, feats, uv=MADE_UP.points_uv)) != float(
          losses.geometric_consistency_loss(position_map, feats))
  with pytest.raises(ValueError, match=r'\(73, 2\)'):
    losses.canonical_views(position_map, uv=MADE_UP.landmark_uv)


@pytest.fixture(scope='module')
def made_up_data(tmp_path_factory):
  """A small synthetic recon dataset whose dataset.json names MADE_UP."""
  out = str(tmp_path_factory.mktemp('layout') / 'data')
  synthetic.synthesize(out, synthetic.SynthConfig(
      resolution=32, identities=(('train', 4), ('test', 2))),
                       {'recon': {'train': 8, 'test': 4}}, progress=False)
  info = shards.read_dataset_info(out)
  assert layout_lib.layout_of_dataset(info) == PROCEDURAL  # written so
  info['uv_layout'] = MADE_UP.to_json()
  shards.write_dataset_info(out, info)
  return out


def _config(path, data, *overrides):
  return config_lib.apply_overrides(config_lib.load_config(path), [
      f'data.dir={data}', 'data.global_batch_size=8', 'train.progress=False',
      *overrides])


def test_tasks_use_the_layout_they_are_given(made_up_data):
  config = _config(workdirs.QUICK, made_up_data, 'model.width=0.125')
  task = loop.make_task(config, 32, MADE_UP)
  assert task.layout == MADE_UP
  np.testing.assert_array_equal(task.landmark_uv, MADE_UP.landmark_uv)
  np.testing.assert_array_equal(task.weight, MADE_UP.weight_mask(32))
  default = loop.make_task(config, 32)
  assert default.layout is PROCEDURAL
  np.testing.assert_array_equal(default.weight, model_lib.uv_weight_mask(32))
  cycle = loop.make_task(_config(CYCLE, made_up_data, 'model.width=0.125'),
                         32, MADE_UP)
  np.testing.assert_array_equal(cycle.recon.landmark_uv, MADE_UP.landmark_uv)
  np.testing.assert_array_equal(cycle.recon.weight, MADE_UP.weight_mask(32))
  # The uniform mask: 1 on the texels PRNet's mask weighs, 0 elsewhere.
  uniform = loop.make_task(_config(CYCLE, made_up_data, 'model.width=0.125',
                                   'loss.mask=uniform'), 32, MADE_UP)
  weights = MADE_UP.weight_mask(32)
  assert len(np.unique(weights)) > 2  # several weights: a real test
  np.testing.assert_array_equal(uniform.recon.weight,
                                (weights > 0).astype(np.float32))
  gan = loop.make_task(_config(FACEGEN, made_up_data,
                               *workdirs.SMALL_FACEGEN), 32, MADE_UP)
  np.testing.assert_array_equal(gan.weight, MADE_UP.weight_mask(32))
  np.testing.assert_array_equal(gan.points_uv, MADE_UP.points_uv)


class _Stop(Exception):
  pass


def test_loop_trains_in_the_dataset_s_layout_and_model_json_keeps_it(
    made_up_data, tmp_path, monkeypatch):
  # The run stops where the metric writer starts: by then the task is made
  # and model.json written; compiling a train step is not needed for
  # either.
  made = []
  make_task = loop.make_task

  def spy(config, resolution, layout=None, mix_scheme=None):
    made.append(make_task(config, resolution, layout, mix_scheme))
    return made[-1]

  def stop(*args, **kwargs):
    raise _Stop()

  monkeypatch.setattr(loop, 'make_task', spy)
  monkeypatch.setattr(loop.metrics_lib, 'MetricWriter', stop)
  config = _config(workdirs.QUICK, made_up_data, 'model.width=0.125')
  workdir = str(tmp_path / 'run')
  with pytest.raises(_Stop):
    loop.run(config, workdir)
  monkeypatch.undo()
  assert len(made) == 1 and made[0].layout == MADE_UP
  np.testing.assert_array_equal(made[0].landmark_uv, MADE_UP.landmark_uv)
  with open(os.path.join(workdir, trained.MODEL_INFO)) as f:
    info = json.load(f)
  assert info['uv_layout'] == json.loads(json.dumps(MADE_UP.to_json()))

  # A checkpoint beside that model.json: `load` gives the layout back.
  workdirs.write_workdir(workdir, config, 32, {
      'image': jnp.zeros((1, 32, 32, 3))}, model_info=False)
  assert trained.load(workdir).layout == MADE_UP
  # model.json of a run before layouts were recorded: procedural.
  del info['uv_layout']
  with open(os.path.join(workdir, trained.MODEL_INFO), 'w') as f:
    json.dump(info, f)
  assert trained.load(workdir).layout is PROCEDURAL
  info['uv_layout'] = _entry(landmark_uv=[[0.5, 2.0]] * 68)
  with open(os.path.join(workdir, trained.MODEL_INFO), 'w') as f:
    json.dump(info, f)
  with pytest.raises(ValueError, match='model.json: uv_layout: .*outside'):
    trained.load(workdir)
