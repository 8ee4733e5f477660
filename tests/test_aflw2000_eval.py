"""`jaxface eval` on converted AFLW2000-3D records (fabricated files).

A model in the BFM's UV layout at 32 x 32 is measured on records converted
at 65 x 65, with and without position maps. A stand-in network returns the
true maps and landmarks (converted at 32 x 32) so that the protocol's
figures are known: 0 for a perfect prediction, whatever the depth offset
of pt3d_68 and the records' resolution, and a known pose offset.
"""

import json
import os

import numpy as np
import pytest

import fabricate
import workdirs
from data_pipelines import aflw2000
from jaxface import cli
from jaxface.data import padding
from jaxface.data import shards
from jaxface.eval import metrics
from jaxface.eval import recon_eval
from jaxface.face import bfm as bfm_lib
from jaxface.face import render
from jaxface.models import prnet

MODEL_RES = 32
DATA_RES = 65
# The last image turns 103 degrees: left out of the head-pose benchmark.
IMAGES = (('image00002', 0.2), ('image00004', -0.9), ('image00013', 1.2),
          ('image00021', 1.8))
_FLIP_Y = np.diag([1.0, -1.0, 1.0])


def _convert(root, out, bfm_dir, resolution):
  conversion = aflw2000.convert_aflw2000(
      root, out, bfm_dir, resolution=resolution, workers=1,
      landmarks_only=bfm_dir is None, progress=False)
  assert conversion.ok
  return out


def _records(data_dir):
  with shards.RecordReader(data_dir, 'recon', 'test') as reader:
    return [reader[i] for i in range(len(reader))]


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  base = tmp_path_factory.mktemp('aflw_eval')
  bfm_dir, root = str(base / 'bfm'), str(base / 'AFLW2000')
  fabricate.write_bfm(bfm_dir)
  fabricate.write_aflw2000(root, bfm_dir, IMAGES, neutral=True)
  data = {
      # With maps: also the model's "training data", which names the BFM.
      'maps': _convert(root, str(base / 'maps'), bfm_dir, DATA_RES),
      'landmarks': _convert(root, str(base / 'landmarks'), None, DATA_RES),
      'truth': _convert(root, str(base / 'truth'), bfm_dir, MODEL_RES)}
  layout = bfm_lib.load_bfm(bfm_dir).uv_layout()
  workdir = workdirs.prnet_workdir(str(base / 'run'), MODEL_RES, 0.125,
                                   data['maps'], layout=layout)
  truth = _records(data['truth'])
  for name in ('maps', 'landmarks'):
    assert [r['source'] for r in _records(data[name])] == [
        r['source'] for r in truth]
  return {'base': base, 'bfm': bfm_dir, 'root': root, 'data': data,
          'workdir': workdir, 'layout': layout, 'truth': truth}


def _stand_in(monkeypatch, maps, landmarks):
  """Makes the evaluation's network return `maps` and `landmarks` (one
  batch, in record order)."""

  def predict(module, variables, images, landmark_uv):
    del module, variables, landmark_uv
    assert len(images) >= len(maps)
    return (padding.pad_batch(maps, len(images)),
            padding.pad_batch(landmarks, len(images)))

  monkeypatch.setattr(prnet, 'predict', predict)


def _true_outputs(setup):
  truth = setup['truth']
  return (np.stack([r['position_map'] for r in truth]).astype(np.float64),
          np.stack([r['landmarks'] for r in truth]).astype(np.float64))


def test_a_perfect_prediction_scores_zero_on_landmark_records(
    setup, monkeypatch):
  # Records at 65 (pt3d_68 z with its own zero), a model at 32 predicting
  # the true maps: NME 2D and 3D and the pose MAE are ~0.
  maps, landmarks = _true_outputs(setup)
  _stand_in(monkeypatch, maps, landmarks)
  report, per_image = recon_eval.evaluate_reconstruction(
      setup['workdir'], setup['data']['landmarks'], batch_size=8,
      progress=False)
  assert report['count'] == len(IMAGES)
  assert report['dataset']['resolution'] == DATA_RES
  assert report['model']['resolution'] == MODEL_RES
  np.testing.assert_allclose(per_image['nme_2d'], 0.0, atol=1e-5)
  np.testing.assert_allclose(per_image['nme_3d'], 0.0, atol=1e-5)
  assert report['nme_2d']['mean_of_bins'] == pytest.approx(0.0, abs=1e-5)
  for b in metrics.BIN_NAMES:
    assert report['nme_2d'][b]['count'] == report['nme_3d'][b]['count']
  # The records' z and the maps' differ by an offset: compared as they
  # are, depth would dominate the 3D error.
  records = _records(setup['data']['landmarks'])
  true_z = np.stack([r['landmarks'][:, 2] for r in records])
  dz = landmarks[:, :, 2] - true_z * (MODEL_RES - 1) / (DATA_RES - 1)
  assert np.ptp(dz, axis=1).max() < 1e-3  # One offset per image,
  assert np.abs(dz).min() > 0.5 and np.abs(dz).max() > 5.0  # not small.
  pose = report['pose_error']
  assert 'skipped' not in pose, pose
  assert pose['count'] == 3 and pose['excluded'] == 1
  assert pose['max_abs_angle_deg'] == 99.0
  for name in ('pitch', 'yaw', 'roll', 'mean', 'rotation'):
    assert pose[name] == pytest.approx(0.0, abs=1e-3), name
  assert setup['bfm'] in pose['canonical']
  assert 'training data' in pose['canonical']
  np.testing.assert_array_equal(per_image['pose_benchmark'],
                                [True, True, True, False])
  assert 'dense_nme' not in per_image
  text = recon_eval.markdown_table(report)
  assert f'resized to the model\'s {MODEL_RES}x{MODEL_RES}' in text
  assert '1 with an angle beyond 99 degrees left out' in text


def test_a_known_yaw_offset_comes_out_as_that_offset(setup, monkeypatch):
  # Every predicted face turned 5 degrees further in yaw than its record.
  maps, landmarks = _true_outputs(setup)
  turned_maps, turned_lmk = maps.copy(), landmarks.copy()
  for k, record in enumerate(setup['truth']):
    pitch, yaw, roll = record['pose'][:3].astype(np.float64)
    relative = (render.angle2matrix_3ddfa(pitch, yaw + np.deg2rad(5), roll)
                @ render.angle2matrix_3ddfa(pitch, yaw, roll).T)
    rot = _FLIP_Y @ relative @ _FLIP_Y
    face = np.any(maps[k] != 0, axis=-1)
    centre = maps[k][face].mean(0)
    turned_maps[k][face] = (maps[k][face] - centre) @ rot.T + centre
    turned_lmk[k] = (landmarks[k] - centre) @ rot.T + centre
  _stand_in(monkeypatch, turned_maps, turned_lmk)
  report, per_image = recon_eval.evaluate_reconstruction(
      setup['workdir'], setup['data']['landmarks'], batch_size=8,
      progress=False)
  pose = report['pose_error']
  assert pose['yaw'] == pytest.approx(5.0, abs=1e-3)
  assert pose['pitch'] == pytest.approx(0.0, abs=1e-3)
  assert pose['roll'] == pytest.approx(0.0, abs=1e-3)
  assert pose['mean'] == pytest.approx(5.0 / 3, abs=1e-3)
  assert pose['rotation'] == pytest.approx(5.0, abs=1e-3)
  kept = per_image['pose_benchmark']
  np.testing.assert_allclose(per_image['pose_error_deg'][kept],
                             [[0.0, 5.0, 0.0]] * 3, atol=1e-3)


def test_records_with_maps_at_another_resolution(setup, monkeypatch):
  # Maps at 65 resampled to the model's 32: the true maps at 32 are within
  # interpolation error of them (a few tenths of a pixel at most, relative
  # to narrow boxes in profile).
  maps, landmarks = _true_outputs(setup)
  _stand_in(monkeypatch, maps, landmarks)
  report, per_image = recon_eval.evaluate_reconstruction(
      setup['workdir'], setup['data']['maps'], batch_size=8, progress=False)
  np.testing.assert_allclose(per_image['nme_3d'], 0.0, atol=1e-5)
  assert 'skipped' not in report['dense_nme']
  assert report['dense_nme']['mean'] < 6e-3
  assert per_image['dense_nme'][0] < 1e-3  # The near-frontal face.
  assert report['pose_error']['mean'] == pytest.approx(0.0, abs=1e-3)


def test_pose_needs_a_canonical_face_in_the_models_layout(setup, tmp_path,
                                                          monkeypatch):
  # A BFM-layout model whose training data is unknown, on records without
  # a BFM: no canonical face, unless one is given.
  workdir = workdirs.prnet_workdir(str(tmp_path / 'run'), MODEL_RES, 0.125,
                                   '', layout=setup['layout'])
  maps, landmarks = _true_outputs(setup)
  _stand_in(monkeypatch, maps, landmarks)
  report, per_image = recon_eval.evaluate_reconstruction(
      workdir, setup['data']['landmarks'], batch_size=8, progress=False)
  pose = report['pose_error']
  assert pose['mean'] is None and 'pose_error_deg' not in per_image
  assert "'bfm'" in pose['skipped'] and '--canonical' in pose['skipped']
  report, _ = recon_eval.evaluate_reconstruction(
      workdir, setup['data']['landmarks'], batch_size=8, progress=False,
      canonical=metrics.load_canonical(setup['bfm'], MODEL_RES))
  assert report['pose_error']['mean'] == pytest.approx(0.0, abs=1e-3)
  assert report['pose_error']['canonical'] == 'the given canonical map'


def test_one_command_from_the_dataset_folder_to_a_report(setup, tmp_path,
                                                         capsys):
  # convert-aflw2000 --landmarks-only, then eval: NME 2D per yaw bin, the
  # mean of the bins and the pose MAE in report.json and report.md (the
  # model's own network, random weights).
  data, out = str(tmp_path / 'aflw'), str(tmp_path / 'report')
  assert cli.main(['data', 'convert-aflw2000', '--root', setup['root'],
                   '--landmarks-only', '--out', data, '--workers', '1']) == 0
  assert shards.read_dataset_info(data)['resolution'] == 256
  assert cli.main(['eval', '--workdir', setup['workdir'], '--data', data,
                   '--out', out, '--batch-size', '4', '--no-progress']) == 0
  printed = capsys.readouterr().out
  with open(os.path.join(out, 'report.json')) as f:
    report = json.load(f)
  assert report['dataset']['resolution'] == 256
  nme = report['nme_2d']
  assert nme['count'] == len(IMAGES)
  assert [nme[b]['count'] for b in metrics.BIN_NAMES] == [1, 1, 2]
  assert all(nme[b]['mean'] > 0 for b in metrics.BIN_NAMES)
  assert nme['mean_of_bins'] == pytest.approx(
      np.mean([nme[b]['mean'] for b in metrics.BIN_NAMES]))
  pose = report['pose_error']
  assert pose['count'] == 3 and pose['excluded'] == 1
  assert all(0 <= pose[k] <= 180 for k in ('yaw', 'pitch', 'roll', 'mean'))
  with open(os.path.join(out, 'report.md')) as f:
    text = f.read()
  assert '| NME 2D |' in text and 'mean of bins' in text
  assert 'Pose error (MAE, degrees): yaw' in text
  assert 'Pose error (MAE, degrees): yaw' in printed
