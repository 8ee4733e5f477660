"""AFLW-21: the 21-point scheme, the reader and split, and the benchmark.

The benchmark is checked on synthetic faces written as an AFLW-21 folder
(their 21 points read from the true landmarks), where the truth is known.
Tests of the real folder skip when it is absent; nothing from it is
copied here.
"""

import json
import os

import numpy as np
import pytest

import fabricate
import workdirs
from data_pipelines import aflw21
from data_pipelines import bfm as bfm_lib
from data_pipelines import synthetic
from experiments.benchmarks import aflw21_eval
from jaxface.data import shards
from jaxface.eval import metrics
from jaxface.face import layout as layout_lib
from jaxface.face import render
from jaxface.face import schemes
from jaxface.face import uv as uv_lib

SCHEME = schemes.AFLW21
REAL = aflw21.DEFAULT_DIR
needs_real_data = pytest.mark.skipif(
    not os.path.isdir(REAL),
    reason=f'the AFLW-21 development folder {REAL} is absent (it is not '
    'part of jaxface)')


# ---------------------------------------------------------------- scheme ----


def test_aflw21_scheme_reads_the_ibug_points():
  landmarks = np.arange(68 * 3, dtype=np.float64).reshape(68, 3)
  extra = 1000.0 + np.arange(5 * 3, dtype=np.float64).reshape(5, 3)
  points = SCHEME.read(landmarks, extra)
  assert points.shape == (21, 3) and SCHEME.num_points == 21
  direct = {0: 17, 1: 19, 2: 21, 3: 22, 4: 24, 5: 26, 6: 36, 8: 39, 9: 42,
            11: 45, 13: 31, 14: 30, 15: 35, 17: 48, 19: 54, 20: 8}
  for p, k in direct.items():
    np.testing.assert_array_equal(points[p], landmarks[k])
  np.testing.assert_allclose(points[7], landmarks[36:42].mean(0))
  np.testing.assert_allclose(points[10], landmarks[42:48].mean(0))
  np.testing.assert_allclose(points[18], landmarks[60:68].mean(0))
  np.testing.assert_array_equal(points[12], extra[1])  # ear_left
  np.testing.assert_array_equal(points[16], extra[2])  # ear_right
  # Batched, without extra points (ears NaN), or with points not readable.
  batch = SCHEME.read(np.stack([landmarks, 2 * landmarks]))
  assert batch.shape == (2, 21, 3)
  assert np.isnan(batch[:, [12, 16]]).all()
  assert not np.isnan(np.delete(batch, [12, 16], axis=1)).any()
  readable = np.ones(21, bool)
  readable[5] = False
  assert np.isnan(SCHEME.read(landmarks, extra, readable)[5]).all()
  with pytest.raises(ValueError, match=r'\(\.\.\., 68, D\)'):
    SCHEME.read(landmarks[:60])
  with pytest.raises(ValueError, match='unknown extra point'):
    schemes.Scheme('bad', ('a',), ('nose',))


def test_ears_are_read_only_in_layouts_with_ears(tmp_path):
  assert schemes.has_ears(layout_lib.PROCEDURAL)
  assert SCHEME.readable(layout_lib.PROCEDURAL).all()
  # The BFM's "ears" are its jaw-contour ends: not ear lobes.
  fabricate.write_bfm(str(tmp_path))
  bfm_layout = bfm_lib.load_bfm(str(tmp_path)).uv_layout()
  assert not schemes.has_ears(bfm_layout)
  np.testing.assert_array_equal(np.flatnonzero(~SCHEME.readable(bfm_layout)),
                                [12, 16])


# ---------------------------------------------------------- the folder ----


def _write_folder(root, images, points_xy, yaw_deg, names):
  """An AFLW-21 folder: images/NAME, names.txt, pts21.npy, yaw_deg.npy."""
  os.makedirs(os.path.join(root, 'images'), exist_ok=True)
  for name, jpeg in zip(names, images):
    with open(os.path.join(root, 'images', name), 'wb') as f:
      f.write(jpeg)
  with open(os.path.join(root, 'names.txt'), 'w') as f:
    f.write('\n'.join(names) + '\n')
  np.save(os.path.join(root, 'pts21.npy'),
          np.transpose(points_xy, (0, 2, 1)).astype(np.float32))
  np.save(os.path.join(root, 'yaw_deg.npy'),
          np.asarray(yaw_deg, np.float32))


def _held_out_names(count, held=True):
  names = (f'image{k:05d}.jpg' for k in range(100000))
  return [n for n in names if aflw21.held_out(n) == held][:count]


@pytest.fixture(scope='module')
def faces(tmp_path_factory):
  """Synthetic 120 x 120 PRNet crops as an AFLW-21 folder, and their true
  maps (120 x 120) and landmarks."""
  base = tmp_path_factory.mktemp('aflw21')
  data = str(base / 'synth')
  synthetic.synthesize(data, synthetic.SynthConfig(
      resolution=aflw21.CROP_SIZE, identities=(('test', 4),),
      p_occluder=0.0), {'recon': {'test': 4}}, progress=False)
  with shards.RecordReader(data, 'recon', 'test') as reader:
    recs = [reader[i] for i in range(len(reader))]
  maps = np.stack([r['position_map'] for r in recs]).astype(np.float64)
  landmarks = np.stack([r['landmarks'] for r in recs]).astype(np.float64)
  extra = np.asarray(uv_lib.sample_uv(maps, layout_lib.PROCEDURAL.extra_uv),
                     np.float64)
  points = SCHEME.read(landmarks, extra)[..., :2]
  points[0, [12, 3]] = np.nan  # Not visible.
  names = _held_out_names(3) + _held_out_names(1, held=False)
  root = str(base / 'aflw21')
  _write_folder(root, [r['image'] for r in recs], points,
                np.rad2deg([r['pose'][1] for r in recs]), names)
  return {'root': root, 'maps': maps, 'landmarks': landmarks,
          'names': names, 'records': recs}


def test_reader_and_held_out_split(faces, tmp_path):
  data = aflw21.load(faces['root'])
  assert len(data) == 4 and data.names == tuple(faces['names'])
  assert data.points.shape == (4, 21, 2) and data.yaw_deg.shape == (4,)
  assert np.isnan(data.points[0, 12]).all()
  image = data.image(1)
  assert image.shape == (120, 120, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(aflw21.held_out_indices(data.names),
                                [0, 1, 2])
  # By name alone: the order and the folder do not matter.
  names = [f'image{k:05d}.jpg' for k in range(4000)]
  held = aflw21.held_out_indices(names)
  assert 0.18 < len(held) / len(names) < 0.22
  assert aflw21.held_out('/a/b/' + names[held[0]])
  assert set(aflw21.held_out_indices(names[::-1])) == {
      len(names) - 1 - i for i in held}
  # Bad folders.
  with pytest.raises(FileNotFoundError, match='is not a folder'):
    aflw21.load(str(tmp_path / 'nowhere'))
  (tmp_path / 'half').mkdir()
  (tmp_path / 'half' / 'names.txt').write_text('image00001.jpg\n')
  with pytest.raises(FileNotFoundError, match='pts21.npy, yaw_deg.npy'):
    aflw21.load(str(tmp_path / 'half'))
  np.save(str(tmp_path / 'half' / 'pts21.npy'), np.zeros((2, 2, 21)))
  np.save(str(tmp_path / 'half' / 'yaw_deg.npy'), np.zeros(1))
  (tmp_path / 'half' / 'images').mkdir()
  with pytest.raises(ValueError, match=r'expected \(1, 2, 21\)'):
    aflw21.load(str(tmp_path / 'half'))


class _Oracle:
  """A stand-in for `reconstruct.Reconstructor`: for a crop made from a
  face's 120 x 120 image, the face's true map and landmarks carried into
  that crop."""

  def __init__(self, faces, layout, resolution=64):
    self.resolution = resolution
    self.layout = layout
    self._truth = {}
    data = aflw21.load(faces['root'])
    for k in range(len(data)):
      for mode in aflw21_eval.MODES:
        transform = aflw21_eval.crop_transform(data.points[k], mode,
                                               resolution)
        crop = aflw21_eval.recon_eval.warp_image(data.image(k), transform,
                                                 resolution)
        self._truth[crop.tobytes()] = (
            render.apply_crop(transform, faces['maps'][k].reshape(-1, 3)
                              ).reshape(faces['maps'][k].shape),
            render.apply_crop(transform, faces['landmarks'][k]))

  def predict(self, crops):
    maps, landmarks = zip(*(self._truth[c.tobytes()] for c in crops))
    return np.stack(maps), np.stack(landmarks)


@pytest.mark.parametrize('ears', [True, False])
def test_true_points_score_zero_in_both_crops(faces, tmp_path, ears):
  layout = layout_lib.PROCEDURAL
  if not ears:  # A layout whose ears are its jaw-contour ends.
    extra = layout.extra_uv.copy()
    extra[1:3] = layout.landmark_uv[[0, 16]]
    layout = layout_lib.UVLayout('no_ears', layout.landmark_uv, extra)
  model = _Oracle(faces, layout)
  data = aflw21.load(faces['root'])
  indices = aflw21.held_out_indices(data.names)
  points, seconds = aflw21_eval.measure(data, indices, model,
                                        aflw21_eval.MODES, batch_size=2)
  assert set(seconds) == {'crops', 'predict'}
  for mode in aflw21_eval.MODES:
    out = aflw21_eval.summarise(points[mode], data.points[indices],
                                data.yaw_deg[indices])
    assert out['unusable'] == 0 and out['nme']['count'] == 3
    assert out['nme']['mean'] == pytest.approx(0.0, abs=1e-4), mode
    assert out['nme_no_ears']['mean'] == pytest.approx(0.0, abs=1e-4)
    assert np.isnan(points[mode][:, [12, 16]]).all() == (not ears)
    measured = [p is not None for p in out['per_point']]
    assert measured[12] == measured[16] == ears
  # The scheme's left is the image left on these frontal-ish faces.
  frontal = np.abs(data.yaw_deg) < 30
  true = data.points[frontal]
  assert np.all(true[:, 6, 0] < true[:, 11, 0])
  assert np.all(true[:, 17, 0] < true[:, 19, 0])


def test_a_known_shift_gives_its_nme(faces):
  data = aflw21.load(faces['root'])
  true = data.points[:2]
  shifted = true + [3.0, 4.0]
  nme = metrics.nme_visible(shifted, true)
  for k in range(2):
    seen = true[k][np.all(np.isfinite(true[k]), axis=-1)]
    size = np.ptp(seen, axis=0)
    assert nme[k] == pytest.approx(5.0 / np.sqrt(size[0] * size[1]))


def test_recrop_needs_a_box():
  points = np.full((21, 2), np.nan)
  assert aflw21_eval.crop_transform(points, 'recrop', 64) is None
  points[3] = [10.0, 20.0]
  points[4] = [10.0, 40.0]  # A box without width.
  assert aflw21_eval.crop_transform(points, 'recrop', 64) is None
  points[5] = [30.0, 30.0]
  transform = aflw21_eval.crop_transform(points, 'recrop', 64)
  # PRNet's crop: 1.5 x the mean side of the visible points' box.
  assert transform[0, 0] == pytest.approx(63 / (1.5 * 20))
  np.testing.assert_allclose(aflw21_eval.crop_transform(points, 'resize', 64),
                             np.diag([63 / 119, 63 / 119, 1.0]))
  with pytest.raises(ValueError, match='mode'):
    aflw21_eval.crop_transform(points, 'stretch', 64)


def test_benchmark_command_prints_one_json_line(faces, tmp_path, capsys):
  workdir = workdirs.prnet_workdir(str(tmp_path / 'run'), 32, 0.125)
  assert aflw21_eval.main(['--workdir', workdir, '--data', faces['root'],
                           '--recrop', '--limit', '2',
                           '--batch-size', '2']) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 1
  out = json.loads(lines[0])
  assert out['images'] == 2 and out['model']['resolution'] == 32
  assert out['model']['uv_layout'] == 'procedural'
  assert all(out['points_read'])
  for mode in ('resize', 'recrop'):
    assert out[mode]['nme']['count'] + out[mode]['unusable'] == 2
    assert len(out[mode]['per_point']) == 21
  assert out['seconds']['total'] > 0
  # Bad inputs: a clear message and status 2.
  assert aflw21_eval.main(['--workdir', workdir, '--data',
                           str(tmp_path / 'nowhere')]) == 2
  assert 'is not a folder' in capsys.readouterr().err
  assert aflw21_eval.main(['--workdir', str(tmp_path / 'nowhere'), '--data',
                           faces['root']]) == 2
  assert 'not a directory' in capsys.readouterr().err


# ------------------------------------------------------------- real data ----


@needs_real_data
def test_real_folder_conventions():
  data = aflw21.load(REAL)
  assert len(data) > 1000 and data.points.shape == (len(data), 21, 2)
  # Left is the image left: AFLW point 6 (left eye, outer) left of 11.
  frontal = np.abs(data.yaw_deg) < 15
  both = frontal & np.all(np.isfinite(data.points[:, [6, 11], 0]), axis=1)
  assert np.mean(data.points[both, 6, 0] < data.points[both, 11, 0]) > 0.99
  # Positive yaw turns the face to the image left (3DDFA's and jaxface's
  # sign): the nose tip lies left of the eye centres and the left eye's
  # outer corner is hidden.
  turned = data.yaw_deg > 40
  seen = turned & np.all(np.isfinite(data.points[:, [7, 10, 14], 0]), axis=1)
  eyes = data.points[seen][:, [7, 10], 0].mean(1)
  assert np.mean(data.points[seen, 14, 0] < eyes) > 0.9
  assert np.mean(np.isnan(data.points[turned, 6, 0])) > 0.8
  held = aflw21.held_out_indices(data.names)
  assert 0.19 < len(held) / len(data) < 0.21
  assert data.image(int(held[0])).shape == (120, 120, 3)
