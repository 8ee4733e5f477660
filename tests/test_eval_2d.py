"""`jaxface eval` on 2D records (annotated points of a landmark scheme).

The 2D records are made from synthetic 3D records: each face's AFLW-21
points are read off its true position map at the scheme's UVs
(`Scheme.uv`), where a model reads them, so that a model predicting the
true maps scores exactly 0; some points are hidden. Stand-in networks make
the predictions known.
"""

import json
import os

import numpy as np
import pytest

import fabricate
import workdirs
from jaxface.data import padding
from jaxface.data import records
from jaxface.data import shards
from jaxface.data import synthetic
from jaxface.data import writing
from jaxface.eval import metrics
from jaxface.eval import recon_eval
from jaxface.face import layout as layout_lib
from jaxface.face import schemes
from jaxface.face import uv as uv_lib
from jaxface.models import prnet
import shared
from test_recon_eval import _Ramp

R = 32
BIG = 64  # The same 2D records at another resolution.
NUM = 12
SCHEME = schemes.AFLW21
SHIFT = np.array([3.0, 4.0])  # A known error of 5 pixels per point.


def _true_maps(source_dir):
  with shards.RecordReader(source_dir, 'recon', 'test') as reader:
    return np.stack([reader[i]['position_map'] for i in range(NUM)]).astype(
        np.float64)


class _To2D:
  """A 3D synthetic record -> a 2D AFLW-21 record at `resolution`: the
  points of its true map at the scheme's UVs, about a quarter hidden
  (stored as `hidden_value`), with the record's yaw when `yaw`."""

  def __init__(self, source_dir, resolution=R, hidden_value=0.0, yaw=True):
    self.source_dir = source_dir
    self.resolution = resolution
    self.hidden_value = hidden_value
    self.yaw = yaw

  def __call__(self, index):
    with shards.RecordReader(self.source_dir, 'recon', 'test') as reader:
      record = reader[index]
    points = np.asarray(uv_lib.sample_uv(
        record['position_map'], SCHEME.uv(layout_lib.PROCEDURAL)))[:, :2]
    visible = np.random.default_rng(index).random(len(points)) >= 0.25
    image = record['image']
    if self.resolution != R:
      transform = recon_eval.resize_transform(R, self.resolution)
      image = records.encode_jpeg(recon_eval.warp_image(
          records.decode_jpeg(image), transform, self.resolution), 95)
      points = points * transform[0, 0]
    return fabricate.points_record(
        dict(record, image=image), points, visible, SCHEME.name,
        self.hidden_value, self.yaw)


def _write_2d(out, make, resolution):
  os.makedirs(out)
  result = writing.write_split(out, 'recon', 'test', list(range(NUM)), make,
                               progress=False)
  shards.write_dataset_info(out, writing.dataset_info(
      [result], resolution=resolution, source='test 2D',
      scheme=SCHEME.name, position_maps=False))
  return out


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp('eval_2d')
  data = shared.synthetic_dataset(tmp_path_factory, synthetic.SynthConfig(
      resolution=R, identities=(('train', 2), ('test', 4))),
                                  {'recon': {'test': NUM}})
  sets = {
      'points': _write_2d(str(root / 'points'), _To2D(data), R),
      # The hidden points' stored coordinates moved far away.
      'moved': _write_2d(str(root / 'moved'), _To2D(data, hidden_value=900.0),
                         R),
      'big': _write_2d(str(root / 'big'), _To2D(data, BIG), BIG),
      'no_yaw': _write_2d(str(root / 'no_yaw'), _To2D(data, yaw=False), R)}
  workdir = workdirs.prnet_workdir(str(root / 'run'), R, 0.125, data)
  with shards.RecordReader(sets['points'], 'recon', 'test') as reader:
    written = [reader[i] for i in range(NUM)]
  return {'synthetic': data, 'workdir': workdir, 'maps': _true_maps(data),
          'records': written, **sets}


def _stand_in(monkeypatch, maps):
  """Makes the network predict `maps` (all NUM records in one batch)."""

  def predict(module, variables, images, point_uv):
    del module, variables
    assert len(images) >= len(maps)
    padded = padding.pad_batch(maps, len(images))
    return padded, np.asarray(uv_lib.sample_uv(padded, point_uv))

  monkeypatch.setattr(prnet, 'predict', predict)


def _evaluate(setup, name, **kwargs):
  kwargs.setdefault('batch_size', 16)
  return recon_eval.evaluate_reconstruction(setup['workdir'], setup[name],
                                            progress=False, **kwargs)


def _true_points(written):
  """(N, P, 2) the records' points, NaN where not visible."""
  return np.stack([np.where(r['points_visible'][:, None] > 0, r['points2d'],
                            np.nan) for r in written]).astype(np.float64)


def _shifted_nme(true):
  """The NME of predictions SHIFT away from every visible point, by hand:
  5 pixels / sqrt(w h) of the visible points' box."""
  out = []
  for points in true:
    seen = points[np.all(np.isfinite(points), axis=1)]
    size = seen.max(axis=0) - seen.min(axis=0)
    out.append(5.0 / np.sqrt(size[0] * size[1]))
  return np.array(out)


def test_the_scheme_is_read_from_the_records(setup):
  info = shards.read_dataset_info(setup['points'])
  assert recon_eval.record_scheme(setup['points'], info, 'test') is SCHEME
  # 3D records have none, a missing split is left to the pipeline.
  info = shards.read_dataset_info(setup['synthetic'])
  assert recon_eval.record_scheme(setup['synthetic'], info, 'test') is None
  assert recon_eval.record_scheme(setup['points'], info, 'nowhere') is None


def test_true_maps_score_zero(setup, monkeypatch):
  _stand_in(monkeypatch, setup['maps'])
  report, per_image = _evaluate(setup, 'points')
  assert report['count'] == NUM and report['skipped_records'] == 0
  assert report['dataset']['scheme'] == 'aflw21'
  assert report['dataset']['uv_layout'] is None
  assert report['points']['read'] == [True] * SCHEME.num_points
  assert report['points']['ears'] == [12, 16]
  assert report['points']['yaw_bins'] is True
  assert report['unusable'] == 0
  for key in ('nme', 'nme_no_ears'):
    summary = report[key]
    assert summary['count'] == NUM
    assert sum(summary[b]['count'] for b in metrics.BIN_NAMES) == NUM
    assert summary['mean'] == pytest.approx(0.0, abs=1e-6)
    assert summary['mean_of_bins'] == pytest.approx(0.0, abs=1e-6)
  np.testing.assert_allclose(per_image['nme'], 0.0, atol=1e-6)
  # Predicted points where the records have them; ears are visible here.
  true = _true_points(setup['records'])
  seen = np.isfinite(true)
  np.testing.assert_allclose(per_image['pred_points'][seen], true[seen],
                             atol=1e-4)
  assert seen[:, SCHEME.is_ear].any()
  np.testing.assert_array_equal(per_image['index'], np.arange(NUM))
  np.testing.assert_allclose(
      per_image['yaw_deg'],
      np.rad2deg([r['yaw'][0] for r in setup['records']]), rtol=1e-5)
  # Nothing 3D is made up: absent, with the reason.
  for key in ('nme_2d', 'nme_3d', 'dense_nme', 'pose_error'):
    assert key not in report
  assert set(report['not_measured']) == {'nme_3d', 'dense_nme',
                                         'pose_error'}
  text = recon_eval.markdown_table(report)
  assert 'Not measured: NME 3D, dense NME, pose error (2D records' in text
  json.dumps(report, allow_nan=False)


def test_a_known_shift_and_hidden_points(setup, monkeypatch):
  _stand_in(monkeypatch, setup['maps'] + np.r_[SHIFT, 0.0])
  report, per_image = _evaluate(setup, 'points')
  true = _true_points(setup['records'])
  expected = _shifted_nme(true)
  np.testing.assert_allclose(per_image['nme'], expected, rtol=1e-4)
  assert report['nme']['mean'] == pytest.approx(expected.mean(), rel=1e-4)
  bins = metrics.yaw_bin_index(per_image['yaw_deg'])
  means = [expected[bins == k].mean() for k in range(3) if np.any(bins == k)]
  assert report['nme']['mean_of_bins'] == pytest.approx(np.mean(means),
                                                        rel=1e-4)
  # Without the ear points: the same 5 pixels over the same box.
  np.testing.assert_allclose(per_image['nme_no_ears'], expected, rtol=1e-4)
  # Per point: 5 pixels over each image's box, where the point is visible.
  seen = np.all(np.isfinite(true), axis=-1)
  for p in (0, 12, 20):
    assert report['per_point'][p] == pytest.approx(
        expected[seen[:, p]].mean(), rel=1e-4)
  # Where the hidden points are stored changes nothing.
  _, moved = _evaluate(setup, 'moved')
  np.testing.assert_array_equal(moved['nme'], per_image['nme'])
  # (The moved coordinates are far off: counted, they would show.)
  with shards.RecordReader(setup['moved'], 'recon', 'test') as reader:
    stored = np.stack([reader[i]['points2d'] for i in range(NUM)])
  assert (stored[~seen] == 900.0).all() and (~seen).any(axis=1).all()
  counted = metrics.nme_visible(moved['pred_points'], stored)
  assert np.all(np.abs(counted - expected) > 1e-3 * expected)


def test_records_at_another_resolution(setup, monkeypatch):
  # The same points at 64 x 64, measured by the 32 x 32 model: its points
  # mapped back to 64, the NME as at 32.
  _stand_in(monkeypatch, setup['maps'] + np.r_[SHIFT, 0.0])
  small_report, small = _evaluate(setup, 'points')
  report, big = _evaluate(setup, 'big')
  assert report['dataset']['resolution'] == BIG
  assert report['model']['resolution'] == R
  k = (BIG - 1) / (R - 1)
  np.testing.assert_allclose(big['pred_points'], small['pred_points'] * k,
                             rtol=1e-5)
  np.testing.assert_allclose(big['true_points'], small['true_points'] * k,
                             rtol=1e-5)
  np.testing.assert_allclose(big['nme'], small['nme'], rtol=1e-5)
  assert report['nme']['mean'] == pytest.approx(small_report['nme']['mean'],
                                                rel=1e-5)
  assert f'resized to the model\'s {R}x{R}' in recon_eval.markdown_table(
      report)


def test_to_model_resolution_scales_points2d():
  batch = {'image': np.zeros((1, 65, 65, 3), np.float32),
           'points2d': np.array([[[64.0, 0.0], [32.0, 16.0], [0.0, 0.0]]],
                                np.float32),
           'points_visible': np.array([[1.0, 1.0, 0.0]], np.float32)}
  out = recon_eval.to_model_resolution(batch, 1, 33)
  np.testing.assert_allclose(out['points2d'][0],
                             [[32.0, 0.0], [16.0, 8.0], [0.0, 0.0]])
  np.testing.assert_array_equal(out['points_visible'],
                                batch['points_visible'])
  assert out['image'].shape == (1, 33, 33, 3)


@pytest.mark.parametrize('ears', [True, False])
def test_points_are_read_at_the_models_layout(setup, tmp_path, monkeypatch,
                                              ears):
  # A network whose maps are (col, row, row + col) gives each point at its
  # UV * (R - 1): read at the model's layout's scheme UVs, through the
  # jitted reading. A layout without ears does not read the ear points.
  layout = workdirs.made_up_layout()
  if not ears:
    extra = layout.extra_uv.copy()
    extra[1:3] = layout.landmark_uv[[0, 16]]
    layout = layout_lib.UVLayout('no_ears', layout.landmark_uv, extra)
  workdir = workdirs.prnet_workdir(str(tmp_path / 'run'), R, 0.125,
                                   setup['synthetic'], layout=layout)
  monkeypatch.setattr(recon_eval.trained_lib, 'prnet',
                      lambda trained: (_Ramp(), {}))
  report, per_image = recon_eval.evaluate_reconstruction(
      workdir, setup['points'], batch_size=8, progress=False)
  assert report['model']['uv_layout'] == layout.name
  pred = np.broadcast_to(SCHEME.uv(layout).astype(np.float64) * (R - 1),
                         (NUM, SCHEME.num_points, 2)).copy()
  if not ears:
    pred[:, SCHEME.is_ear] = np.nan
  np.testing.assert_allclose(per_image['pred_points'], pred, rtol=1e-5)
  true = _true_points(setup['records'])
  np.testing.assert_allclose(per_image['nme'], metrics.nme_visible(pred, true),
                             rtol=1e-5)
  assert report['points']['read'] == SCHEME.readable(layout).tolist()
  assert report['points']['read'][12] == ears
  no_ears = np.allclose(per_image['nme'], per_image['nme_no_ears'])
  assert no_ears == (not ears)
  text = recon_eval.markdown_table(report)
  assert ('the ear points are not read' in text) == (not ears)


def test_without_yaw_only_the_overall_mean(setup, monkeypatch, tmp_path):
  _stand_in(monkeypatch, setup['maps'] + np.r_[SHIFT, 0.0])
  report, per_image = _evaluate(setup, 'no_yaw')
  expected = _shifted_nme(_true_points(setup['records']))
  assert report['nme'] == {'mean': pytest.approx(expected.mean(), rel=1e-4),
                           'count': NUM}
  assert set(report['nme_no_ears']) == {'mean', 'count'}
  assert report['points']['yaw_bins'] is False
  assert 'yaw_deg' not in per_image
  text = recon_eval.markdown_table(report)
  assert '| NME (%) | all |' in text and 'no yaw bins' in text
  assert f'{100 * expected.mean():.2f}' in text
  paths = recon_eval.write_outputs(report, per_image, str(tmp_path / 'out'))
  with open(paths['json']) as f:
    assert json.load(f) == report
  arrays = np.load(paths['per_image'])
  np.testing.assert_array_equal(arrays['nme'], per_image['nme'])
  assert os.path.getsize(paths['ced']) > 0
