"""AFLW-21: the 21-point scheme, the reader and split, and the benchmark.

The benchmark (`experiments/benchmarks/aflw21_eval.py`: `convert-landmarks2d`
of the held-out faces, then `jaxface eval`'s 2D-record path) is checked on
synthetic faces written as an AFLW-21 folder, their 21 points read off the
true position maps at the scheme's UVs (where a model reads them), with a
stand-in network that predicts the truth, or the truth shifted by a known
amount. Tests of the real folder skip when it is absent; nothing from it is
copied here.
"""

import json
import os

import numpy as np
import pytest

import fabricate
import workdirs
from data_pipelines import aflw21
from data_pipelines import landmarks2d
from experiments.ablations import recon_metrics
from experiments.benchmarks import aflw21_eval
from experiments.diagnostics import adabn
from experiments.diagnostics import aflw21_errors
from experiments.diagnostics import face_proportions
from experiments.diagnostics import image_probes
from jaxface.data import shards
from jaxface.data import synthetic
from jaxface.eval import recon_eval
from jaxface.face import bfm as bfm_lib
from jaxface.face import layout as layout_lib
from jaxface.face import render
from jaxface.face import schemes
from jaxface.face import uv as uv_lib
from jaxface.models import prnet
from jaxface.train import trained as trained_lib

SCHEME = schemes.AFLW21
R = 32  # The stand-in models' resolution.
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
  """Synthetic 120 x 120 PRNet crops as an AFLW-21 folder (three held-out
  faces, then one training face), and their true maps (120 x 120) and
  landmarks; the 21 points are read off the maps at the scheme's UVs."""
  base = tmp_path_factory.mktemp('aflw21')
  data = str(base / 'synth')
  synthetic.synthesize(data, synthetic.SynthConfig(
      resolution=aflw21.CROP_SIZE, identities=(('test', 4),),
      p_occluder=0.0), {'recon': {'test': 4}}, progress=False)
  with shards.RecordReader(data, 'recon', 'test') as reader:
    recs = [reader[i] for i in range(len(reader))]
  maps = np.stack([r['position_map'] for r in recs]).astype(np.float64)
  landmarks = np.stack([r['landmarks'] for r in recs]).astype(np.float64)
  points = np.asarray(uv_lib.sample_uv(
      maps, SCHEME.uv(layout_lib.PROCEDURAL)), np.float64)[..., :2]
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


class _StandIn:
  """Makes `recon_eval`'s network predict, for a crop the converter made
  from a held-out face, that face's true points (read off its 120 x 120
  true map at the model's point UVs) carried into the crop, `shift` 120 x
  120 pixels away. A crop is recognised as the nearest of the crops the
  converter makes (`recon_eval.warp_image` with its transforms; the records
  hold them as JPEG)."""

  def __init__(self, faces, resolution, shift=(0.0, 0.0)):
    data = aflw21.load(faces['root'])
    self.shift = np.asarray(shift, np.float64)
    self.maps = faces['maps']
    self.crops, self.keys = [], []
    for k in aflw21.held_out_indices(data.names):
      seen = data.points[k][np.all(np.isfinite(data.points[k]), axis=-1)]
      for transform in (landmarks2d.given_transform(120, 120, resolution),
                        render.prnet_crop(seen, resolution)[0]):
        self.crops.append(recon_eval.warp_image(data.image(int(k)), transform,
                                           resolution) / 255.0)
        self.keys.append((int(k), transform))
    self.crops = np.stack(self.crops)
    self.seen = []

  def __call__(self, module, variables, images, point_uv):
    del module, variables
    points = []
    for image in np.asarray(images, np.float64):
      distance = np.abs(self.crops - image).mean(axis=(1, 2, 3))
      k, transform = self.keys[int(np.argmin(distance))]
      if image.any():  # Not padding.
        self.seen.append((k, float(np.min(distance))))
      true = np.asarray(uv_lib.sample_uv(self.maps[k], point_uv), np.float64)
      true[:, :2] += self.shift
      points.append(render.apply_crop(transform, true))
    return np.zeros(np.shape(images)), np.stack(points)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Workdirs of PRNets at 32 x 32: in the procedural layout (with ears)
  and in one whose ears are its jaw-contour ends."""
  base = tmp_path_factory.mktemp('aflw21_runs')
  extra = layout_lib.PROCEDURAL.extra_uv.copy()
  extra[1:3] = layout_lib.PROCEDURAL.landmark_uv[[0, 16]]
  no_ears = layout_lib.UVLayout('no_ears', layout_lib.PROCEDURAL.landmark_uv,
                                extra)
  return {True: workdirs.prnet_workdir(str(base / 'ears'), R, 0.125),
          False: workdirs.prnet_workdir(str(base / 'no_ears'), R, 0.125,
                                        layout=no_ears)}


def _measure(faces, workdir, monkeypatch, tmp_path, shift=(0.0, 0.0),
             **kwargs):
  stand_in = _StandIn(faces, R, shift)
  monkeypatch.setattr(prnet, 'predict', stand_in)
  data = aflw21.load(faces['root'])
  indices, results = aflw21_eval.measure(
      trained_lib.load(workdir), data, batch_size=2,
      work_dir=str(tmp_path / 'work'), **kwargs)
  # Every crop was recognised (the JPEG of the records is close to it).
  assert stand_in.seen and max(d for _, d in stand_in.seen) < 0.02
  return data, indices, results


def _hand_nme(true, shift):
  """The NME of points `shift` from every visible point, by hand in the
  120 x 120 crop: |shift| / sqrt(w h) of the visible points' box."""
  out = []
  for points in true:
    seen = points[np.all(np.isfinite(points), axis=1)]
    size = seen.max(axis=0) - seen.min(axis=0)
    out.append(np.hypot(*shift) / np.sqrt(size[0] * size[1]))
  return np.array(out)


def test_held_out_folder_keeps_the_first_held_out_faces(faces, tmp_path):
  data = aflw21.load(faces['root'])
  indices = aflw21_eval.held_out_folder(data, str(tmp_path / 'two'), 2)
  np.testing.assert_array_equal(indices, [0, 1])
  view = aflw21.load(str(tmp_path / 'two'))
  assert view.names == tuple(faces['names'][:2])
  np.testing.assert_array_equal(view.points, data.points[:2])
  np.testing.assert_allclose(view.yaw_deg, data.yaw_deg[:2], rtol=1e-6)
  np.testing.assert_array_equal(view.image(1), data.image(1))
  indices = aflw21_eval.held_out_folder(data, str(tmp_path / 'all'))
  np.testing.assert_array_equal(indices, [0, 1, 2])
  assert aflw21.load(str(tmp_path / 'all')).names == tuple(faces['names'][:3])
  # A folder without a held-out face.
  names = _held_out_names(2, held=False)
  _write_folder(str(tmp_path / 'train_only'),
                [faces['records'][0]['image']] * 2, np.zeros((2, 21, 2)),
                [0.0, 0.0], names)
  with pytest.raises(ValueError, match='no held-out face'):
    aflw21_eval.held_out_folder(aflw21.load(str(tmp_path / 'train_only')),
                                str(tmp_path / 'none'))


@pytest.mark.parametrize('ears', [True, False])
def test_true_points_score_zero_in_both_crops(faces, runs, monkeypatch,
                                              tmp_path, ears):
  data, indices, results = _measure(faces, runs[ears], monkeypatch, tmp_path)
  np.testing.assert_array_equal(indices, [0, 1, 2])
  assert set(results) == set(aflw21_eval.MODES)
  for mode, result in results.items():
    conversion = result['conversion']
    assert conversion.info['crop'] == aflw21_eval.MODES[mode]
    assert conversion.info['resolution'] == R
    # The held-out faces only, all in `test`.
    assert [(r.split, r.count) for r in conversion.results] == [('test', 3)]
    out = aflw21_eval.summarise(result['report'], conversion)
    assert out['unusable'] == 0 and out['skipped'] == []
    assert out['nme']['count'] == 3
    assert out['nme']['mean'] == pytest.approx(0.0, abs=1e-4), mode
    assert out['nme_no_ears']['mean'] == pytest.approx(0.0, abs=1e-4), mode
    pred = result['per_image']['pred_points']
    assert np.isnan(pred[:, [12, 16]]).all() == (not ears)
    measured = [p is not None for p in out['per_point']]
    assert measured[12] == measured[16] == ears
    assert result['report']['points']['read'][12] == ears
    assert set(result['seconds']) == {'convert', 'evaluate'}
    # Pred and true are in the same frame, the records' crop: mapped back
    # through the record's crop transform, both are the 120 x 120 points.
    with shards.RecordReader(os.path.join(tmp_path, 'work', mode), 'recon',
                             'test') as reader:
      recs = [reader[i] for i in range(len(reader))]
    assert [r['source'] for r in recs] == [
        'AFLW21/' + faces['names'][k][:-4] for k in indices]
    for k, rec, p in zip(indices, recs, pred):
      visible = np.all(np.isfinite(data.points[k]), axis=1)
      crop = (recon_eval.resize_transform(120, R) if mode == 'resize' else
              render.prnet_crop(data.points[k][visible], R)[0])
      np.testing.assert_allclose(rec['crop_transform'], crop, rtol=1e-5,
                                 atol=1e-4)
      inverse = np.linalg.inv(rec['crop_transform'].astype(np.float64))
      back = p @ inverse[:2, :2].T + inverse[:2, 2]
      seen = np.all(np.isfinite(back) & np.isfinite(data.points[k]), axis=1)
      assert seen.sum() >= 17
      np.testing.assert_allclose(back[seen], data.points[k][seen], atol=1e-3)
  # The scheme's left is the image left on these frontal-ish faces.
  frontal = np.abs(data.yaw_deg) < 30
  true = data.points[frontal]
  assert np.all(true[:, 6, 0] < true[:, 11, 0])
  assert np.all(true[:, 17, 0] < true[:, 19, 0])


def test_a_known_shift_gives_its_nme(faces, runs, monkeypatch, tmp_path):
  shift = (3.0, 4.0)  # 5 pixels of the 120 x 120 crop.
  data, indices, results = _measure(faces, runs[True], monkeypatch, tmp_path,
                                    shift)
  expected = _hand_nme(data.points[indices], shift)
  assert len(set(np.round(expected, 6))) == 3  # The order matters.
  for mode, result in results.items():
    np.testing.assert_allclose(result['per_image']['nme'], expected,
                               rtol=1e-4, err_msg=mode)
    out = aflw21_eval.summarise(result['report'], result['conversion'])
    assert out['nme']['mean'] == pytest.approx(expected.mean(), rel=1e-4)
    # Without the ears: the same 5 pixels over the same box.
    assert out['nme_no_ears']['mean'] == pytest.approx(expected.mean(),
                                                       rel=1e-4)
  # --limit: the first held-out faces.
  _, indices, results = _measure(faces, runs[True], monkeypatch,
                                 tmp_path / 'limit', shift, limit=2,
                                 modes=('recrop',))
  np.testing.assert_array_equal(indices, [0, 1])
  assert list(results) == ['recrop']
  np.testing.assert_allclose(results['recrop']['per_image']['nme'],
                             expected[:2], rtol=1e-4)


def test_faces_the_converter_skips_are_unusable(faces, runs, monkeypatch,
                                                tmp_path):
  data = aflw21.load(faces['root'])
  points = data.points.copy()
  points[1, 2:] = np.nan  # 2 visible points: the converter skips it.
  root = str(tmp_path / 'few')
  _write_folder(root, [r['image'] for r in faces['records']], points,
                data.yaw_deg, faces['names'])
  few = {**faces, 'root': root}
  _, indices, results = _measure(few, runs[True], monkeypatch, tmp_path)
  assert len(indices) == 3
  for result in results.values():
    out = aflw21_eval.summarise(result['report'], result['conversion'])
    assert out['nme']['count'] == 2 and out['unusable'] == 1
    assert [s['item'] for s in out['skipped']] == [faces['names'][1]]
    assert 'at least 3' in out['skipped'][0]['reason']
  # No face converts: a clear error.
  points[:, 2:] = np.nan
  root = str(tmp_path / 'none')
  _write_folder(root, [r['image'] for r in faces['records']], points,
                data.yaw_deg, faces['names'])
  with pytest.raises(ValueError, match=r'resize: none of the 3 held-out '
                     r'faces could be converted \(image'):
    _measure({**faces, 'root': root}, runs[True], monkeypatch,
             tmp_path / 'again')
  with pytest.raises(ValueError, match='modes must be among'):
    aflw21_eval.measure(trained_lib.load(runs[True]), data, ('stretch',))


def test_benchmark_command_prints_one_json_line(faces, runs, tmp_path,
                                                capsys):
  workdir = runs[True]
  assert aflw21_eval.main(['--workdir', workdir, '--data', faces['root'],
                           '--recrop', '--limit', '2',
                           '--batch-size', '2']) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 1
  out = json.loads(lines[0])
  assert set(out) == {'benchmark', 'model', 'data', 'split', 'images',
                      'points_read', 'resize', 'recrop', 'seconds',
                      'images_per_second'}
  assert out['images'] == 2 and out['model']['resolution'] == R
  assert out['model']['uv_layout'] == 'procedural'
  assert out['data'] == os.path.abspath(faces['root'])
  assert 'first 2 in names.txt order' in out['split']
  assert out['points_read'] == [True] * 21
  for mode in ('resize', 'recrop'):
    assert set(out[mode]) == {'nme', 'nme_no_ears', 'per_point', 'unusable',
                              'skipped'}
    assert out[mode]['nme']['count'] + out[mode]['unusable'] == 2
    assert len(out[mode]['per_point']) == 21
  assert set(out['seconds']) == {'load', 'convert', 'evaluate', 'total'}
  assert out['seconds']['total'] > 0 and out['images_per_second'] > 0
  # Without --recrop: the resized crops only.
  assert aflw21_eval.main(['--workdir', workdir, '--data', faces['root'],
                           '--limit', '1']) == 0
  out = json.loads(capsys.readouterr().out)
  assert 'resize' in out and 'recrop' not in out and out['images'] == 1
  # Bad inputs: a clear message and status 2.
  assert aflw21_eval.main(['--workdir', workdir, '--data',
                           str(tmp_path / 'nowhere')]) == 2
  assert 'is not a folder' in capsys.readouterr().err
  assert aflw21_eval.main(['--workdir', str(tmp_path / 'nowhere'), '--data',
                           faces['root']]) == 2
  assert 'not a directory' in capsys.readouterr().err
  # The folder is also spelt --aflw21, as in the diagnostics.
  assert aflw21_eval.main(['--workdir', workdir, '--aflw21',
                           str(tmp_path / 'nowhere')]) == 2
  assert 'is not a folder' in capsys.readouterr().err
  for bad, message in (
      (['--limit', '0'], 'must be >= 1'),
      (['--batch-size', '0'], 'must be >= 1'),
      (['--model', 'synthetic'], 'not allowed with argument --workdir')):
    with pytest.raises(SystemExit) as exit_info:
      aflw21_eval.main(['--workdir', workdir, '--data', faces['root'], *bad])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
  with pytest.raises(SystemExit) as exit_info:  # neither model nor workdir
    aflw21_eval.main(['--data', faces['root']])
  assert exit_info.value.code == 2
  assert 'one of the arguments --model --workdir is required' in (
      capsys.readouterr().err)


def test_ablation_metrics_measure_real_faces_where_the_folder_is(
    faces, runs, monkeypatch, tmp_path):
  shift = (3.0, 4.0)
  monkeypatch.setattr(prnet, 'predict', _StandIn(faces, R, shift))
  synth = os.path.join(os.path.dirname(faces['root']), 'synth')
  monkeypatch.setenv('JAXFACE_AFLW21', faces['root'])
  report = recon_metrics.evaluate(runs[True], synth)
  data = aflw21.load(faces['root'])
  expected = _hand_nme(data.points[:3], shift)
  assert report['aflw21']['images'] == 3
  assert report['aflw21']['nme']['mean'] == pytest.approx(expected.mean(),
                                                          rel=1e-4)
  assert 'nme_2d' in report  # and the synthetic held-out faces
  monkeypatch.setenv('JAXFACE_AFLW21', str(tmp_path / 'absent'))
  assert recon_metrics.evaluate(runs[True], synth)['aflw21'] is None


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


def test_error_decomposition_of_known_framing_errors():
  # 40 faces: the truth is a fixed 21-point shape turned by each face's
  # roll; the predictions are the truth moved, scaled or turned by known
  # amounts, so each stage of `analyse` must remove exactly its part.
  rng = np.random.default_rng(0)
  shape = rng.uniform(20, 100, (21, 2))
  roll = np.radians(np.linspace(-20, 20, 40))
  turn = lambda pts, a: ((pts - 60) @ np.array(  # noqa: E731
      [[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]) + 60)
  true = np.stack([turn(shape, a) for a in roll])
  true[:, 12] = np.nan  # an invisible point
  yaw = np.linspace(-50, 50, 40)
  exact = aflw21_errors.analyse(true.copy(), true, yaw)
  assert exact['raw'] == 0 and exact['roll_follow'] == pytest.approx(1)
  shifted = aflw21_errors.analyse(true + [3.0, -2.0], true, yaw)
  assert shifted['raw'] > 1 and shifted['-shift'] == pytest.approx(0)
  scaled = aflw21_errors.analyse(60 + 1.2 * (true - 60), true, yaw)
  assert scaled['-shift'] > 1 and scaled['-scale'] == pytest.approx(0)
  assert scaled['log_scale'] == pytest.approx(np.log(1 / 1.2), abs=1e-3)
  # Upright predictions whatever the photo's roll: roll not followed, and
  # only the rotation stage removes the error.
  upright = np.broadcast_to(turn(shape, 0.0), true.shape).copy()
  still = aflw21_errors.analyse(upright, true, yaw)
  assert still['roll_follow'] == pytest.approx(0, abs=1e-6)
  assert still['-scale'] > 1 and still['-rotation'] == pytest.approx(0)
  # The mean shape per 10-degree yaw bin of faces that only differ by roll.
  assert 0 < still['yaw_mean_shape'] < still['raw']
  # A point read 5 px too low on every face (of a box of known size) is
  # a bias framing does not remove; the others are unbiased (up to the
  # similarity fit spreading a little of it).
  low = true.copy()
  low[:, 20, 1] += 5.0
  bias = np.array(aflw21_errors.analyse(low, true, yaw)['point_bias'])
  seen = np.delete(true, 12, axis=1)
  box = np.sqrt(np.prod(seen.max(1) - seen.min(1), axis=-1))
  frontal = np.abs(yaw) < 30
  assert bias[20, 1] > 0.6 * np.mean(100 * 5.0 / box[frontal])
  assert np.all(np.isnan(bias[12]))
  others = np.delete(bias, [12, 20], axis=0)
  assert np.abs(others).max() < 0.3 * bias[20, 1]


def test_face_proportions_of_known_points():
  # Eye centres 10 px apart, the nose tip 6 px below their midpoint, the
  # mouth centre 8 px below and 6 px aside, the chin 17 px below; eye
  # corners 4 px apart, mouth corners 7 px apart; one face misses its chin.
  points = np.full((2, 21, 2), np.nan)
  points[:, 7], points[:, 10] = (0, 0), (10, 0)
  points[:, 14], points[:, 18], points[:, 20] = (5, 6), (11, 8), (5, 17)
  points[:, 6], points[:, 8] = (-2, 0), (2, 0)
  points[:, 17], points[:, 19] = (1.5, 8), (8.5, 8)
  points[1, 20] = np.nan
  got = face_proportions.ratios(points)
  np.testing.assert_allclose(got[0], [0.6, 1.0, 1.7, 0.4, 0.7])
  assert np.isnan(got[1, 2])
  assert face_proportions.summary(got)[2] == '1.700 (0.000)'
  # Synthetic faces, read as the AFLW21 scheme reads a model's points: the
  # adult mean face's nose tip is 0.62 eye distances below the eyes (the
  # photos': 0.61), and its eyes are about 63 mm apart.
  mean, faces, iods = face_proportions.synthetic_ratios(
      synthetic.SynthConfig().shape_mean, 3)
  assert faces.shape == (3, 5) and iods.shape == (3,)
  assert 0.6 < mean[0, 0] < 0.65
  assert 50 < np.median(iods) < 76
  assert face_proportions.main(['--faces', '2', '--shape-mean', 'x=1',
                                '--data', 'nowhere']) == 2


def test_adabn_pools_batch_statistics_into_those_of_all_the_values():
  rng = np.random.default_rng(0)
  batches = [rng.normal(loc, 1 + loc, size=(64, 5)) for loc in (0.0, 2.0, 5.0)]
  per_batch = [{'Conv_0': {'BatchNorm_0': {'mean': b.mean(0),
                                           'var': b.var(0)}}}
               for b in batches]
  pooled = adabn.pooled_stats(per_batch)['Conv_0']['BatchNorm_0']
  everything = np.concatenate(batches)
  np.testing.assert_allclose(pooled['mean'], everything.mean(0), rtol=1e-12)
  np.testing.assert_allclose(pooled['var'], everything.var(0), rtol=1e-12)
  with pytest.raises(ValueError, match='no batch'):
    adabn.pooled_stats([])


class _Identity:
  """A stand-in network whose 'position maps' are its input images."""

  def apply(self, variables, images):
    del variables
    return images


def test_image_probes_change_only_what_they_name():
  images = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype(
      np.float32)
  for name, probe in image_probes.PROBES.items():
    if isinstance(probe, (image_probes.ZoomAverage, image_probes.Derotate)):
      continue  # not a change of the images: see the tests below
    out = probe(images)
    assert out.shape == images.shape and out.dtype == np.float32, name
    assert out.min() >= 0 and out.max() <= 1, name
    if name != 'none':
      assert not np.allclose(out, images), name
  np.testing.assert_array_equal(image_probes.PROBES['none'](images), images)
  grey = image_probes.PROBES['grey'](images)
  np.testing.assert_allclose(grey[..., 0], grey[..., 2])
  blurred = image_probes.PROBES['blur1.5'](images)
  assert blurred.std() < 0.6 * images.std()  # flattened towards the mean
  # Inside `probed`, the evaluator's prnet.predict sees the probed images.
  from jaxface.eval import recon_eval  # pylint: disable=g-import-not-at-top
  with image_probes.probed(image_probes.PROBES['grey']):
    seen = recon_eval.prnet.predict(_Identity(), None, images,
                                    np.zeros((1, 2), np.float32))
  np.testing.assert_allclose(np.asarray(seen[0]), grey, atol=1e-6)


class _Constant:
  """A stand-in network whose position maps are fixed: one point
  everywhere, or one (R, R, 3) map for every image."""

  def __init__(self, point):
    self.point = np.asarray(point, np.float32)

  def apply(self, variables, images):
    del variables
    return np.broadcast_to(self.point, np.shape(images)).copy()


def _check_probed_constant_prediction(probe, image, expected):
  """Inside `probed(probe)`, the evaluator's prnet.predict of a network
  that predicts (10, 20, 3) everywhere gives `expected` (x, y, z) at a
  texel and at both landmarks."""
  from jaxface.eval import recon_eval  # pylint: disable=g-import-not-at-top
  with image_probes.probed(probe):
    maps, points = recon_eval.prnet.predict(
        _Constant([10.0, 20.0, 3.0]), None, image,
        np.full((2, 2), 0.5, np.float32))
  np.testing.assert_allclose(np.asarray(maps)[0, 5, 7], expected)
  np.testing.assert_allclose(np.asarray(points)[0], [expected] * 2,
                             atol=1e-5)


def test_zoom_probe_scales_the_crop_and_maps_predictions_back():
  side, c = 33, 16.0
  image = np.zeros((1, side, side, 3), np.float32)
  image[0, 16 + 8, 16 - 12] = 1.0  # x = 4, y = 24
  zoom = image_probes.Zoom(0.5)
  out = zoom(image)
  row, col = np.unravel_index(np.argmax(out[0, ..., 0]), (side, side))
  # The dot moved halfway to the centre: x 4 -> 10, y 24 -> 20.
  assert (col, row) == (c - 6, c + 4)
  np.testing.assert_allclose(zoom.unmap(np.array([[10.0, 20.0, 3.0]]), side),
                             [[4.0, 24.0, 6.0]])
  # Inside `probed`, what the network predicts on the zoomed crop comes
  # back in the crop's frame.
  _check_probed_constant_prediction(zoom, image, [4.0, 24.0, 6.0])


def test_zoom_average_probe_averages_the_predictions_mapped_back():
  side = 33  # centre 16
  image = np.random.default_rng(0).uniform(0, 1, (1, side, side, 3)).astype(
      np.float32)
  # Mapped back from zoom 0.5: (4, 24, 6); from zoom 1: (10, 20, 3).
  _check_probed_constant_prediction(image_probes.ZoomAverage((0.5, 1.0)),
                                    image, [7.0, 22.0, 4.5])
  assert all(isinstance(p, image_probes.ZoomAverage)
             for n, p in image_probes.PROBES.items() if n.startswith('zooms'))


def _tilted_canonical(side: int, degrees: float) -> np.ndarray:
  """The canonical face's (side, side, 3) map turned in the image plane
  by `degrees` about the crop's centre, from +x towards +y (clockwise on
  the screen, y down)."""
  from jaxface.eval import metrics  # pylint: disable=g-import-not-at-top
  t = np.deg2rad(degrees)
  turn = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
  out = metrics.canonical_reference(side).astype(np.float64)
  c = (side - 1) / 2
  out[..., :2] = (out[..., :2] - c) @ turn.T + c
  return out


def test_derotate_probe_turns_the_crop_upright_and_the_prediction_back():
  side = 32
  derotate = image_probes.Derotate(2)
  # A face turned by 20 degrees is turned upright by -20 degrees.
  q = derotate.tilts(_tilted_canonical(side, 20.0)[None])[0]
  t = np.deg2rad(-20.0)
  np.testing.assert_allclose(
      q, [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]], atol=1e-6)
  # A network that always predicts the face turned by 20 degrees: the
  # second pass sees the crop turned by -20 degrees, so its prediction
  # mapped back is the face turned by 40.
  tilted = _Constant(_tilted_canonical(side, 20.0))
  from jaxface.eval import recon_eval  # pylint: disable=g-import-not-at-top
  image = np.zeros((1, side, side, 3), np.float32)
  with image_probes.probed(derotate):
    maps, _ = recon_eval.prnet.predict(tilted, None, image,
                                       np.full((2, 2), 0.5, np.float32))
  np.testing.assert_allclose(np.asarray(maps)[0], _tilted_canonical(side, 40.0),
                             atol=1e-3)


@pytest.mark.parametrize(
    'main', [image_probes.main, adabn.main, aflw21_errors.main])
def test_diagnostics_refuse_a_limit_below_one(main, capsys):
  with pytest.raises(SystemExit) as exit_info:
    main(['--model', 'synthetic', '--limit', '0'])
  assert exit_info.value.code == 2
  assert 'argument --limit: must be >= 1, got 0' in capsys.readouterr().err
