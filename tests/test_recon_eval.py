"""End-to-end evaluation of a reconstruction workdir on synthetic records."""

import json
import math
import os
import shutil

import cv2
import numpy as np
import pytest

from jaxface.data import shards
from jaxface.data import synthetic
from jaxface.eval import metrics
from jaxface.eval import plots
from jaxface.eval import recon_eval
from jaxface.face import model as model_lib
import workdirs
import shared

NUM_TEST = 12


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp('recon_eval')
  data = shared.synthetic_dataset(tmp_path_factory, synthetic.SynthConfig(
      resolution=32, identities=(('train', 4), ('test', 4))),
                                  {'recon': {'train': 8, 'test': NUM_TEST}})
  workdir = workdirs.prnet_workdir(str(root / 'run'), 32, 0.125, data)
  report, per_image = recon_eval.evaluate_reconstruction(
      workdir, data, batch_size=8, progress=False)
  return data, workdir, report, per_image


def _finite(value):
  return value is not None and math.isfinite(value)


def test_report_structure_and_counts(setup):
  data, workdir, report, per_image = setup
  assert report['count'] == NUM_TEST
  assert report['skipped_records'] == 0
  assert report['model']['workdir'] == os.path.abspath(workdir)
  assert report['model']['step'] == 1
  assert report['model']['task'] == 'prnet'
  assert report['model']['uv_layout'] == 'procedural'
  assert report['dataset'] == {'path': os.path.abspath(data), 'split': 'test',
                               'source': 'synthetic', 'resolution': 32,
                               'uv_layout': 'procedural'}
  assert report['pose_error']['excluded'] == 0
  for key in ('nme_2d', 'nme_3d'):
    summary = report[key]
    assert summary['count'] == NUM_TEST
    assert sum(summary[b]['count'] for b in metrics.BIN_NAMES) == NUM_TEST
    assert _finite(summary['mean']) and _finite(summary['mean_of_bins'])
    for name in metrics.BIN_NAMES:
      assert summary[name]['mean'] is None or _finite(summary[name]['mean'])
  assert report['nme_3d']['mean'] >= report['nme_2d']['mean']
  assert report['dense_nme']['count'] == NUM_TEST
  assert _finite(report['dense_nme']['mean'])
  assert 'skipped' not in report['dense_nme']
  pose = report['pose_error']
  assert pose['count'] == NUM_TEST and 'skipped' not in pose
  for name in ('pitch', 'yaw', 'roll', 'mean', 'rotation'):
    assert 0.0 <= pose[name] <= 180.0
  json.dumps(report, allow_nan=False)  # JSON-able as it is.


def test_per_image_arrays_follow_the_records(setup):
  data, _, report, per_image = setup
  np.testing.assert_array_equal(per_image['index'], np.arange(NUM_TEST))
  for key in ('nme_2d', 'nme_3d', 'yaw_deg', 'dense_nme'):
    assert per_image[key].shape == (NUM_TEST,)
    assert np.all(np.isfinite(per_image[key])), key
  for key in ('true_pose_deg', 'pred_pose_deg', 'pose_error_deg'):
    assert per_image[key].shape == (NUM_TEST, 3)
  assert per_image['rotation_error_deg'].shape == (NUM_TEST,)
  with shards.RecordReader(data, 'recon', 'test') as reader:
    poses = np.array([reader[i]['pose'] for i in range(NUM_TEST)])
  np.testing.assert_allclose(per_image['yaw_deg'], np.rad2deg(poses[:, 1]),
                             rtol=1e-5)
  np.testing.assert_allclose(per_image['true_pose_deg'],
                             np.rad2deg(poses[:, :3]), rtol=1e-5)
  assert report['nme_2d']['mean'] == pytest.approx(
      float(np.mean(per_image['nme_2d'])))


def test_pose_fit_of_the_true_maps_matches_the_records(setup):
  # The evaluation's pose fit on ground-truth maps recovers the records'
  # poses exactly against the face's own canonical map, and roughly
  # against the mean face (identities differ in shape).
  data = setup[0]
  model = model_lib.build_face_model()
  mean_face = metrics.canonical_reference(32)
  mask = model_lib.face_region_mask(32)
  own_errors, mean_errors = [], []
  with shards.RecordReader(data, 'recon', 'test') as reader:
    for index in range(NUM_TEST):
      record = reader[index]
      true = [np.rad2deg(record['pose'][:3])]
      own = model.canonical_position_map(
          model.vertices(record['shape_coeffs'],
                         record['expression_coeffs']), 32)
      for canonical, errors in ((own, own_errors), (mean_face, mean_errors)):
        fit = metrics.estimate_pose(record['position_map'][mask],
                                    canonical[mask])
        errors.append(metrics.rotation_error(
            [[fit['pitch'], fit['yaw'], fit['roll']]], true)[0])
  assert max(own_errors) < 0.5, own_errors
  assert np.median(mean_errors) < 10.0, mean_errors


class _Ramp:
  """A stand-in network whose position map is (col, row, row + col)."""

  def apply(self, variables, images):
    del variables
    r = images.shape[1]
    cols, rows = np.meshgrid(np.arange(r), np.arange(r))
    grid = np.stack([cols, rows, rows + cols], -1).astype(np.float32)
    return np.broadcast_to(grid, (images.shape[0],) + grid.shape)


def test_a_model_in_another_uv_layout(setup, tmp_path, monkeypatch):
  data = setup[0]
  layout = workdirs.made_up_layout()
  workdir = workdirs.prnet_workdir(str(tmp_path / 'run'), 32, 0.125, data,
                                   layout=layout)
  monkeypatch.setattr(recon_eval.trained_lib, 'prnet',
                      lambda trained: (_Ramp(), {}))
  with shards.RecordReader(data, 'recon', 'test') as reader:
    records = [reader[i] for i in range(NUM_TEST)]
  true_lmk = np.stack([r['landmarks'] for r in records])
  true_maps = np.stack([r['position_map'] for r in records])
  ramp = _Ramp().apply(None, np.zeros((NUM_TEST, 32, 32, 3)))

  report, per_image = recon_eval.evaluate_reconstruction(
      workdir, data, batch_size=8, progress=False)
  assert report['model']['uv_layout'] == 'made_up'
  assert report['dataset']['uv_layout'] == 'procedural'
  # The landmarks are read at the model's layout's UVs.
  uv = layout.landmark_uv.astype(np.float64) * 31
  lmk = np.broadcast_to(np.c_[uv, uv.sum(1)], true_lmk.shape)
  np.testing.assert_allclose(per_image['nme_2d'],
                             metrics.nme(lmk, true_lmk, 2), rtol=1e-5)
  # Maps of two layouts are not compared texel by texel, and the default
  # canonical face is in the procedural layout only.
  assert 'dense_nme' not in per_image
  assert "'made_up'" in report['dense_nme']['skipped']
  assert 'made_up' in report['pose_error']['skipped']
  assert 'pose_error_deg' not in per_image

  # Records in the model's layout: the dense NME over its face region, and
  # the pose against a canonical map given for it.
  matched = str(tmp_path / 'data')
  shutil.copytree(data, matched)
  info = shards.read_dataset_info(matched)
  info['uv_layout'] = layout.to_json()
  shards.write_dataset_info(matched, info)
  report, per_image = recon_eval.evaluate_reconstruction(
      workdir, matched, batch_size=8, progress=False,
      canonical=metrics.canonical_reference(32))
  assert report['dataset']['uv_layout'] == 'made_up'
  assert 'skipped' not in report['dense_nme']
  np.testing.assert_allclose(
      per_image['dense_nme'],
      metrics.dense_nme(ramp, true_maps, layout.face_region(32)), rtol=1e-5)
  assert report['pose_error']['count'] == NUM_TEST


def test_limit_and_padding_do_not_change_the_values(setup):
  data, workdir, _, per_image = setup
  report, part = recon_eval.evaluate_reconstruction(
      workdir, data, batch_size=8, limit=5, progress=False)
  assert report['count'] == 5
  np.testing.assert_array_equal(part['index'], np.arange(5))
  for key in ('nme_2d', 'nme_3d', 'dense_nme'):
    np.testing.assert_allclose(part[key], per_image[key][:5], rtol=1e-5)


def test_write_outputs(setup, tmp_path):
  _, _, report, per_image = setup
  paths = recon_eval.write_outputs(report, per_image, str(tmp_path / 'out'))
  with open(paths['json']) as f:
    assert json.load(f) == report
  with open(paths['markdown']) as f:
    text = f.read()
  assert '| NME 2D |' in text and '| NME 3D |' in text
  assert 'yaw 0-30' in text and 'mean of bins' in text
  assert f'{100 * report["nme_2d"]["mean"]:.2f}' in text
  assert 'Dense NME (3D, face region)' in text and 'Pose error' in text
  image = cv2.imread(paths['ced'])
  assert image.shape == (plots.SIZE[1], plots.SIZE[0], 3)
  assert np.any(np.all(image == plots.COLOURS[0], axis=-1))
  arrays = np.load(paths['per_image'])
  np.testing.assert_array_equal(arrays['nme_2d'], per_image['nme_2d'])
  assert sorted(os.listdir(tmp_path / 'out')) == [
      'ced.png', 'per_image.npz', 'report.json', 'report.md']
  # A report path: the other files go next to it.
  paths = recon_eval.write_outputs(report, per_image,
                                   str(tmp_path / 'x' / 'eval.json'))
  assert paths['ced'] == str(tmp_path / 'x' / 'eval_ced.png')
  assert all(os.path.isfile(p) for p in paths.values())


def test_markdown_says_what_was_skipped(setup):
  _, _, report, _ = setup
  report = dict(report)
  report['dense_nme'] = {'mean': None, 'count': 0, 'dims': 3,
                         'region': 'face',
                         'skipped': 'the records have no position maps'}
  report['pose_error'] = {'pitch': None, 'yaw': None, 'roll': None,
                          'mean': None, 'count': 0, 'skipped': 'no canonical'}
  text = recon_eval.markdown_table(report)
  assert 'Dense NME: not measured (the records have no position maps)' in text
  assert 'Pose error: not measured (no canonical)' in text


def test_markdown_counts_the_skipped_records(setup, tmp_path):
  _, _, report, per_image = setup
  report = dict(report, skipped_records=3)
  out = tmp_path / 'out'
  out.mkdir()
  # A link planted in the output folder is replaced, not written through.
  outside = tmp_path / 'outside.md'
  outside.write_text('precious')
  os.symlink(outside, out / 'report.md')
  paths = recon_eval.write_outputs(report, per_image, str(out))
  with open(paths['markdown']) as f:
    assert f'{NUM_TEST} images. 3 unreadable record(s) skipped.' in f.read()
  assert outside.read_text() == 'precious'
  assert not os.path.islink(paths['markdown'])


def test_pose_of_a_procedural_model_on_other_sources(setup, tmp_path):
  # The procedural layout's canonical face serves real data too; the
  # report says that its frame is the procedural model's.
  data, workdir, report, per_image = setup
  other = str(tmp_path / 'other')
  shutil.copytree(data, other)
  info = shards.read_dataset_info(other)
  info['source'] = 'aflw2000'
  shards.write_dataset_info(other, info)
  measured, part = recon_eval.evaluate_reconstruction(
      workdir, other, batch_size=8, limit=4, progress=False)
  assert 'skipped' not in measured['pose_error']
  assert 'frontal frame' in measured['pose_error']['canonical']
  np.testing.assert_allclose(part['pose_error_deg'],
                             per_image['pose_error_deg'][:4], rtol=1e-5,
                             atol=1e-6)
  assert report['pose_error']['canonical'] == (
      'the procedural face model\'s mean face')
  given, _ = recon_eval.evaluate_reconstruction(
      workdir, other, batch_size=8, limit=4, progress=False,
      canonical=metrics.canonical_reference(32))
  assert given['pose_error']['canonical'] == 'the given canonical map'


def test_records_of_another_resolution_are_resized(setup, tmp_path,
                                                   monkeypatch):
  # The same faces rendered at 64: the 32 model measures them resized, and
  # the truth comes out as at 32 (a stand-in network that ignores its
  # input makes the errors depend on the truth alone).
  data, workdir, _, _ = setup
  big = str(tmp_path / 'big')
  synthetic.synthesize(big, synthetic.SynthConfig(
      resolution=64, identities=(('train', 4), ('test', 4))),
                       {'recon': {'train': 8, 'test': NUM_TEST}},
                       progress=False)
  monkeypatch.setattr(recon_eval.trained_lib, 'prnet',
                      lambda trained: (_Ramp(), {}))
  small, at_32 = recon_eval.evaluate_reconstruction(
      workdir, data, batch_size=8, limit=6, progress=False)
  resized, at_64 = recon_eval.evaluate_reconstruction(
      workdir, big, batch_size=8, limit=6, progress=False)
  assert resized['dataset']['resolution'] == 64
  assert resized['model']['resolution'] == 32
  for key in ('nme_2d', 'nme_3d'):
    np.testing.assert_allclose(at_64[key], at_32[key], rtol=1e-4)
  np.testing.assert_allclose(at_64['dense_nme'], at_32['dense_nme'],
                             rtol=0.02)
  assert 'resized to the model\'s 32x32' in recon_eval.markdown_table(
      resized)


def test_to_model_resolution_scales_by_the_pixel_centres():
  # A crop's pixel centres 0 and R - 1 span the box: resizing 65 -> 33
  # halves coordinates exactly; a linear ramp stays that ramp.
  r, r2 = 65, 33
  cols, rows = np.meshgrid(np.arange(r, dtype=np.float32),
                           np.arange(r, dtype=np.float32))
  ramp = np.stack([cols, rows, cols + rows], -1)
  batch = {'image': (ramp / (2 * r))[None], 'position_map': ramp[None],
           'landmarks': np.array([[[64.0, 0.0, 10.0], [32.0, 16.0, 3.0]]]),
           'index': np.array([7, 8])}
  out = recon_eval.to_model_resolution(batch, 1, r2)
  cols2, rows2 = np.meshgrid(np.arange(r2), np.arange(r2))
  ramp2 = np.stack([cols2, rows2, cols2 + rows2], -1)
  # Texel (i, j) of the new map is texel (2i, 2j) of the old, its values
  # halved: the ramp over the new grid.
  np.testing.assert_allclose(out['position_map'][0], ramp2, atol=1e-4)
  np.testing.assert_allclose(out['landmarks'][0],
                             [[32.0, 0.0, 5.0], [16.0, 8.0, 1.5]])
  # The image, blurred against aliasing, keeps the ramp inside.
  np.testing.assert_allclose(out['image'][0, 4:-4, 4:-4] * 2 * r,
                             2 * ramp2[4:-4, 4:-4], atol=1e-3)
  np.testing.assert_array_equal(out['index'], [7])
  # At the model's resolution, nothing changes.
  same = recon_eval.to_model_resolution(batch, 1, r)
  np.testing.assert_array_equal(same['position_map'], batch['position_map'])
  # Off-mesh texels (all 0) do not pull the face's border towards 0: at
  # 65 -> 32, new column 10 lies at old column 20.65, between an off-mesh
  # texel (20) and the mesh (21), and takes the mesh's value alone.
  holed = ramp + 1.0
  holed[:, :21] = 0.0
  out = recon_eval.to_model_resolution(
      dict(batch, position_map=holed[None]), 1, 32)['position_map'][0]
  k = 31 / 64
  np.testing.assert_allclose(out[:, 10, 0], 22 * k, rtol=1e-5)
  # (OpenCV's bilinear weights come in 1/32 of a texel.)
  np.testing.assert_allclose(out[:, 11, 0], (11 / k + 1) * k, atol=0.01)
  np.testing.assert_array_equal(out[:, :10], 0.0)


def test_bad_arguments(setup):
  data, workdir, _, _ = setup
  with pytest.raises(shards.DatasetError, match='no recon/validation'):
    recon_eval.evaluate_reconstruction(workdir, data, split='validation',
                                       progress=False)
  with pytest.raises(ValueError, match='limit'):
    recon_eval.evaluate_reconstruction(workdir, data, limit=0, progress=False)
  with pytest.raises(ValueError, match=r'canonical must be a \(32, 32, 3\)'):
    recon_eval.evaluate_reconstruction(workdir, data, progress=False,
                                       canonical=np.zeros((16, 16, 3)))


def test_ced_range_widens_for_large_errors():
  assert recon_eval.ced_range(np.full(100, 0.03)) == 0.1
  # 95th percentile 0.163 -> the next 5 % step above it.
  assert recon_eval.ced_range(np.linspace(0.0, 0.1716, 100)) == 0.2
  assert recon_eval.ced_range(np.array([np.nan])) == 0.1
