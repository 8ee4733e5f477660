"""300W-LP conversion, checked against an independent numpy projection."""

import os
import shutil

import cv2
import numpy as np
import pytest
import scipy.io

import fabricate
from data_pipelines import the300wlp
from jaxface import cli
from jaxface import files
from jaxface.data import records
from jaxface.data import shards
from jaxface.data import writing
from jaxface.face import bfm as bfm_lib
from jaxface.face import layout as layout_lib

R = 65  # (R - 1) is a multiple of the fake mesh's grid: vertices on texels.


# ---------------------------------------------- independent ground truth


def _rotation(pitch, yaw, roll):
  """3DDFA: R = Rx(pitch) Ry(yaw) Rz(roll), written out."""
  a, b, c = pitch, yaw, roll
  rx = [[1, 0, 0], [0, np.cos(a), np.sin(a)], [0, -np.sin(a), np.cos(a)]]
  ry = [[np.cos(b), 0, -np.sin(b)], [0, 1, 0], [np.sin(b), 0, np.cos(b)]]
  rz = [[np.cos(c), np.sin(c), 0], [-np.sin(c), np.cos(c), 0], [0, 0, 1]]
  return np.array(rx) @ np.array(ry) @ np.array(rz)


def _image_points(bfm_dir, mat_path, height=450):
  """All vertices in original pixels, from the .mat files with numpy."""
  model = scipy.io.loadmat(os.path.join(bfm_dir, 'BFM.mat'))['model'][0, 0]
  info = scipy.io.loadmat(mat_path)
  flat = (model['shapeMU'] + model['expMU']
          + model['shapePC'].astype(np.float64) @ info['Shape_Para']
          + model['expPC'].astype(np.float64) @ info['Exp_Para'])
  vertices = flat.reshape(-1, 3)
  pitch, yaw, roll, tx, ty, tz, s = info['Pose_Para'].ravel().astype(float)
  points = s * vertices @ _rotation(pitch, yaw, roll).T + [tx, ty, tz]
  points[:, 1] = height - 1 - points[:, 1]
  return points


def _keypoints(bfm_dir):
  model = scipy.io.loadmat(os.path.join(bfm_dir, 'BFM.mat'))['model'][0, 0]
  return model['kpt_ind'].ravel().astype(int) - 1


def _keypoint_uv(bfm_dir):
  uv = scipy.io.loadmat(os.path.join(bfm_dir, 'BFM_UV.mat'))['UV']
  return np.stack([uv[:, 0], 1 - uv[:, 1]], 1)[_keypoints(bfm_dir)]


def _prnet_crop(xy, resolution):
  left, top = xy.min(0)
  right, bottom = xy.max(0)
  size = 1.5 * ((right - left) + (bottom - top)) / 2
  x0 = (left + right) / 2 - size / 2
  y0 = (top + bottom) / 2 - size / 2
  k = (resolution - 1) / size
  return np.array([[k, 0, -k * x0], [0, k, -k * y0], [0, 0, 1]])


def _to_crop(transform, points):
  """Original pixels -> crop pixels; z scaled like x and y."""
  return np.c_[points[:, :2] @ transform[:2, :2].T + transform[:2, 2],
               points[:, 2] * transform[0, 0]]


def _bilinear(image, uv):
  """Samples an (H, W, C) map at UV points, texel (i, j) at (j, i) / (R-1)."""
  h, w = image.shape[:2]
  x, y = uv[:, 0] * (w - 1), uv[:, 1] * (h - 1)
  x0 = np.clip(np.floor(x).astype(int), 0, w - 2)
  y0 = np.clip(np.floor(y).astype(int), 0, h - 2)
  fx, fy = (x - x0)[:, None], (y - y0)[:, None]
  return (image[y0, x0] * (1 - fx) * (1 - fy) + image[y0, x0 + 1] * fx *
          (1 - fy) + image[y0 + 1, x0] * (1 - fx) * fy +
          image[y0 + 1, x0 + 1] * fx * fy)


def _read_all(directory, kind, split):
  with shards.RecordReader(directory, kind, split) as reader:
    return list(reader)


def _no_partial_files(directory):
  return [f for f in os.listdir(directory) if f != files.LOCK_NAME and (
      f.startswith('.') or 'partial' in f or f.endswith('.tmp'))]


# --------------------------------------------------------------- fixtures


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  base = tmp_path_factory.mktemp('300wlp')
  bfm_dir, root = str(base / 'bfm'), str(base / '300W_LP')
  fabricate.write_bfm(bfm_dir)
  written = fabricate.write_300wlp(root, bfm_dir)
  out = str(base / 'out')
  assert cli.main(['data', 'convert-300wlp', '--root', root, '--bfm',
                   bfm_dir, '--out', out, '--resolution', str(R),
                   '--workers', '1', '--shard-size', '5']) == 0
  return {'bfm': bfm_dir, 'root': root, 'out': out, 'written': written,
          'base': base}


@pytest.fixture(scope='module')
def bad_root(data):
  root = str(data['base'] / 'bad' / '300W_LP')
  shutil.copytree(data['root'], root)
  return root, fabricate.add_bad_300wlp(root)


# ------------------------------------------------------------------ tests


def test_dataset_lists_every_view_and_flip(data):
  info = shards.read_dataset_info(data['out'])
  assert info['source'] == '300W_LP' and info['resolution'] == R
  assert info['kinds']['recon']['train']['count'] == len(data['written'])
  assert 'test' not in info['kinds']['recon']
  assert len(info['kinds']['recon']['train']['shards']) == 3  # 5 + 5 + 4
  assert info['kinds']['multiview']['train']['count'] == 1
  assert info['perturb'] is False and info['seed'] is None
  report = shards.check(data['out'])
  assert report['ok'], report['problems']
  assert not _no_partial_files(data['out'])


def test_dataset_json_records_the_bfm_uv_layout(data):
  layout = layout_lib.layout_of_dataset(shards.read_dataset_info(data['out']))
  bfm = bfm_lib.load_bfm(data['bfm'])
  assert layout == bfm.uv_layout() and layout.name == 'bfm'
  assert not layout.is_procedural
  # Read from the files: UV of the keypoint vertices, v flipped.
  model = scipy.io.loadmat(os.path.join(data['bfm'], 'BFM.mat'))['model'][
      0, 0]
  kpt = model['kpt_ind'].ravel().astype(int) - 1
  uv = scipy.io.loadmat(os.path.join(data['bfm'], 'BFM_UV.mat'))['UV']
  uv = np.stack([uv[:, 0], 1 - uv[:, 1]], 1)
  np.testing.assert_allclose(layout.landmark_uv, uv[kpt], atol=1e-6)
  # Extra points: glabella, the jaw ends as ears, the temples.
  glabella, left, right = bfm.extra_vertex_ids
  np.testing.assert_allclose(
      layout.extra_uv, uv[[glabella, kpt[0], kpt[16], left, right]],
      atol=1e-6)
  # The records' landmarks are their maps read at the layout's UVs.
  texel = np.round(layout.landmark_uv.astype(np.float64) * (R - 1)).astype(
      int)
  for record in _read_all(data['out'], 'recon', 'train')[:3]:
    np.testing.assert_allclose(
        record['position_map'][texel[:, 1], texel[:, 0]],
        record['landmarks'], atol=1e-3)


def test_position_maps_match_an_independent_projection(data):
  kpt, kpt_uv = _keypoints(data['bfm']), _keypoint_uv(data['bfm'])
  recs = _read_all(data['out'], 'recon', 'train')
  by_source = {r['source']: r for r in recs}
  for w in data['written']:
    rec = by_source[f'300W_LP/{w["folder"]}/{w["name"]}']
    points = _image_points(data['bfm'], w['mat'])
    transform = _prnet_crop(points[kpt, :2], R)
    np.testing.assert_allclose(rec['crop_transform'], transform, rtol=1e-5,
                               atol=1e-3)
    crop = _to_crop(transform, points)
    # Every vertex lies on a texel (R - 1 is a multiple of the grid), so
    # the map's minimum over the face is the vertices' minimum.
    expected = crop[kpt] - [0, 0, crop[:, 2].min()]
    sampled = _bilinear(rec['position_map'], kpt_uv)
    np.testing.assert_allclose(sampled, expected, atol=0.02)
    np.testing.assert_allclose(rec['landmarks'], expected, atol=0.02)
    assert rec['position_map'][..., 2].min() == 0
    # The crop transform maps the landmarks back onto the original pixels
    # (pt2d of the .mat, which fabricate projected the same way).
    inverse = np.linalg.inv(rec['crop_transform'].astype(np.float64))
    back = rec['landmarks'][:, :2] @ inverse[:2, :2].T + inverse[:2, 2]
    pt2d = scipy.io.loadmat(w['mat'])['pt2d'].T
    np.testing.assert_allclose(back, pt2d, atol=0.01)
    np.testing.assert_allclose(rec['face_box'], np.r_[pt2d.min(0),
                                                      pt2d.max(0)], atol=0.01)
    # Parameters as stored, the photo warped by the same transform.
    np.testing.assert_array_equal(rec['pose'], w['pose'])
    np.testing.assert_array_equal(rec['shape_coeffs'], w['shape'])
    np.testing.assert_array_equal(rec['expression_coeffs'], w['exp'])
    np.testing.assert_array_equal(rec['original_size'], [450, 450])
    original = cv2.cvtColor(cv2.imread(w['jpg']), cv2.COLOR_BGR2RGB)
    warped = cv2.warpAffine(original, transform[:2], (R, R))
    crop_image = records.decode_jpeg(rec['image'])
    assert np.abs(crop_image.astype(float) - warped).mean() < 4


def test_identity_per_original_face_shared_by_views_and_flips(data):
  recs = _read_all(data['out'], 'recon', 'train')
  ids = {}
  for r in recs:
    face = r['source'].rsplit('/', 1)[1].rsplit('_', 1)[0]
    ids.setdefault(face, set()).add(r['identity'])
  assert sorted(ids) == ['AFW_134212_1', 'HELEN_232194_1']
  assert all(len(v) == 1 for v in ids.values())
  afw, helen = ids['AFW_134212_1'].pop(), ids['HELEN_232194_1'].pop()
  assert afw != helen and 0 <= afw < 2**31 and 0 <= helen < 2**31
  assert afw == the300wlp.identity_of('AFW_134212_1_3')


def test_multiview_picks_front_left_right_by_yaw_without_flips(data):
  (mv,) = _read_all(data['out'], 'multiview', 'train')
  assert mv['source'] == '300W_LP/AFW/AFW_134212_1'
  # Views (non-flipped) have yaws 0.05, -0.6, 0.7, -1.1: front 0, left 3,
  # right 2. With the mirrored copies, right would be 1.1.
  mats = [os.path.join(data['root'], 'AFW', f'AFW_134212_1_{k}.mat')
          for k in (0, 3, 2)]
  for view, mat in enumerate(mats):
    pose = scipy.io.loadmat(mat)['Pose_Para'].ravel()
    np.testing.assert_array_equal(mv['poses'][view], pose)
    points = _image_points(data['bfm'], mat)
    kpt = _keypoints(data['bfm'])
    transform = _prnet_crop(points[kpt, :2], R)
    crop = _to_crop(transform, points)
    np.testing.assert_allclose(mv['landmarks'][view],
                               crop[kpt] - [0, 0, crop[:, 2].min()],
                               atol=0.02)
    np.testing.assert_allclose(mv['crop_transforms'][view], transform,
                               rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(np.rad2deg(mv['poses'][:, 1]),
                             np.rad2deg([0.05, -1.1, 0.7]), atol=1e-4)
  # Numerically: in the left view (negative yaw) the left side (jaw point
  # 0) is nearer the camera and the nose points to the image right.
  front, left, right = mv['landmarks']
  assert left[0, 2] > left[16, 2] and right[16, 2] > right[0, 2]
  eyes = lambda v: (v[36:42, 0].mean() + v[42:48, 0].mean()) / 2
  assert left[30, 0] > eyes(left) and right[30, 0] < eyes(right)
  assert abs(front[30, 0] - eyes(front)) < abs(left[30, 0] - eyes(left))
  # Ears are the jaw-contour ends; all extra points are in the crop frame.
  np.testing.assert_array_equal(mv['extra_points'][:, 1], mv['landmarks'][
      :, 0])
  np.testing.assert_array_equal(mv['extra_points'][:, 2], mv['landmarks'][
      :, 16])
  glabella = mv['extra_points'][0, 0]
  brows = mv['landmarks'][0, 17:27, 1].mean()
  assert front[21, 0] - 3 < glabella[0] < front[22, 0] + 3
  assert brows - 5 < glabella[1] < front[27, 1]
  # The canonical map: the front view's face, frontal, fixed scale.
  canonical = mv['canonical_position_map']
  assert canonical.shape == (R, R, 3) and canonical[..., 2].min() == 0
  model = scipy.io.loadmat(os.path.join(data['bfm'], 'BFM.mat'))['model'][
      0, 0]
  mean = (model['shapeMU'] + model['expMU']).reshape(-1, 3)[kpt]
  vertices = (model['shapeMU'] + model['expMU']
              + model['shapePC'].astype(float) @ mv['shape_coeffs'][:, None]
              + model['expPC'].astype(float) @ mv['expression_coeffs'][
                  :, None]).reshape(-1, 3)
  centre = (mean[36:42].mean(0) + mean[42:48].mean(0)) / 2
  k = (R - 1) / 255 / 1000
  expected_xy = np.c_[(R - 1) / 2 + k * (vertices[kpt, 0] - centre[0]),
                      0.39 * (R - 1) - k * (vertices[kpt, 1] - centre[1])]
  np.testing.assert_allclose(_bilinear(canonical, _keypoint_uv(
      data['bfm']))[:, :2], expected_xy, atol=0.01)
  info = shards.read_dataset_info(data['out'])
  assert info['multiview_faces'] == 2 and info['multiview_one_sided'] == 1
  assert any('HELEN_232194_1' in s['item'] and 'OneSidedViews' in s['reason']
             for s in info['skipped_samples'])


def test_bad_samples_are_skipped_and_listed(data, bad_root, tmp_path,
                                            capsys):
  root, bad = bad_root
  out = str(tmp_path / 'out')
  status = cli.main(['data', 'convert-300wlp', '--root', root, '--bfm',
                     data['bfm'], '--out', out, '--resolution', str(R),
                     '--workers', '1', '--no-multiview'])
  assert status == 0
  printed = capsys.readouterr().out
  info = shards.read_dataset_info(out)
  assert info['kinds']['recon']['train']['count'] == len(data['written'])
  assert 'multiview' not in info['kinds']
  skipped = {s['item']: s['reason'] for s in info['skipped_samples']}
  assert sorted(skipped) == sorted(bad)
  for item, problem in bad.items():
    assert problem in skipped[item], (item, skipped[item])
    assert item in printed
  assert 'Shape_Para has shape (150, 1)' in printed
  assert 'no Pose_Para' in printed
  assert f'{len(bad)} skipped' in printed
  assert not _no_partial_files(out)
  assert shards.check(out)['ok']


def test_nothing_usable_exits_non_zero(data, tmp_path, capsys):
  root = tmp_path / '300W_LP'
  (root / 'AFW').mkdir(parents=True)
  (root / 'AFW' / 'AFW_1_1_0.jpg').write_bytes(b'garbage')
  scipy.io.savemat(str(root / 'AFW' / 'AFW_2_1_0.mat'), {'pt2d': np.zeros(
      (2, 68))})
  out = tmp_path / 'out'
  status = cli.main(['data', 'convert-300wlp', '--root', str(root), '--bfm',
                     data['bfm'], '--out', str(out), '--workers', '1',
                     '--resolution', str(R)])
  captured = capsys.readouterr()
  assert status != 0
  assert 'no usable 300W_LP sample' in captured.err
  assert 'AFW_1_1_0' in captured.out and 'no Pose_Para' in captured.out
  # No dataset.json, no shards, no temporaries: only the writer's lock.
  assert os.listdir(out) == [files.LOCK_NAME]
  # A folder that is not 300W_LP at all: a clear message, nothing written.
  status = cli.main(['data', 'convert-300wlp', '--root', str(tmp_path),
                     '--bfm', data['bfm'], '--out', str(tmp_path / 'o2')])
  err = capsys.readouterr().err
  assert status != 0
  assert 'did you mean --root' in err and 'AFW, HELEN, IBUG, LFPW' in err
  assert not (tmp_path / 'o2').exists()


@pytest.mark.parametrize('where', ['recon', 'multiview'])
def test_an_interrupted_run_leaves_no_files(data, tmp_path, monkeypatch,
                                            where):
  calls = []

  def interrupt(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3 or where == 'multiview':
      raise KeyboardInterrupt
    return original(*args, **kwargs)

  name = 'convert_sample' if where == 'recon' else 'multiview_record'
  original = getattr(the300wlp, name)
  monkeypatch.setattr(the300wlp, name, interrupt)
  out = tmp_path / 'out'
  with pytest.raises(writing.Interrupted, match='nothing of .* is usable'):
    the300wlp.convert_300wlp(data['root'], data['bfm'], str(out),
                             resolution=R, shard_size=2, progress=False)
  assert os.listdir(out) == [files.LOCK_NAME]


def test_a_folder_another_writer_holds_is_refused(data, tmp_path, capsys):
  out = tmp_path / 'out'
  with files.FolderLock(str(out), 'dataset'):
    assert cli.main(['data', 'convert-300wlp', '--root', data['root'],
                     '--bfm', data['bfm'], '--out', str(out), '--workers',
                     '1', '--resolution', str(R)]) == 2
  assert f'in use by process {os.getpid()}' in capsys.readouterr().err
  assert os.listdir(out) == [files.LOCK_NAME]


def test_an_error_in_make_is_a_skip_not_a_crash(data, tmp_path,
                                                monkeypatch):
  original = the300wlp.convert_sample

  def flaky(sample, *args, **kwargs):
    if sample.name.endswith('_1'):
      raise RuntimeError('simulated failure')
    return original(sample, *args, **kwargs)

  monkeypatch.setattr(the300wlp, 'convert_sample', flaky)
  out = str(tmp_path / 'out')
  conversion = the300wlp.convert_300wlp(data['root'], data['bfm'], out,
                                        resolution=R, multiview=False,
                                        shard_size=3, progress=False)
  assert conversion.ok and conversion.total == len(data['written']) - 4
  assert {r for _, _, _, r in conversion.skipped()} == {
      'RuntimeError: simulated failure'}
  assert not _no_partial_files(out) and shards.check(out)['ok']


def test_test_fraction_holds_out_whole_faces(data, tmp_path):
  out = str(tmp_path / 'half')
  the300wlp.convert_300wlp(data['root'], data['bfm'], out, resolution=R,
                           test_fraction=0.5, progress=False)
  info = shards.read_dataset_info(out)
  split_of = {}
  total = 0
  for split in info['kinds']['recon']:
    for rec in _read_all(out, 'recon', split):
      split_of.setdefault(rec['identity'], set()).add(split)
      total += 1
  assert total == len(data['written'])
  assert all(len(s) == 1 for s in split_of.values())
  out = str(tmp_path / 'all')
  the300wlp.convert_300wlp(data['root'], data['bfm'], out, resolution=R,
                           test_fraction=1.0, progress=False)
  info = shards.read_dataset_info(out)
  assert set(info['kinds']['recon']) == {'test'}
  assert info['kinds']['multiview']['test']['count'] == 1


def test_workers_and_perturbation_are_deterministic(data, tmp_path):
  def all_bytes(directory):
    out = {}
    for kind, splits in shards.read_dataset_info(directory)['kinds'].items():
      for split in splits:
        with shards.RecordReader(directory, kind, split) as reader:
          out[kind, split] = [reader.read_bytes(i) for i in range(len(reader))]
    return out

  two = str(tmp_path / 'two')
  the300wlp.convert_300wlp(data['root'], data['bfm'], two, resolution=R,
                           workers=2, shard_size=5, progress=False)
  assert all_bytes(two) == all_bytes(data['out'])

  perturbed = str(tmp_path / 'perturbed')
  the300wlp.convert_300wlp(data['root'], data['bfm'], perturbed,
                           resolution=R, perturb=True, seed=3,
                           multiview=False, progress=False)
  again = str(tmp_path / 'again')
  the300wlp.convert_300wlp(data['root'], data['bfm'], again, resolution=R,
                           perturb=True, seed=3, multiview=False,
                           progress=False)
  assert all_bytes(perturbed) == all_bytes(again)
  recs = _read_all(perturbed, 'recon', 'train')
  plain = {r['source']: r for r in _read_all(data['out'], 'recon', 'train')}
  kpt, kpt_uv = _keypoints(data['bfm']), _keypoint_uv(data['bfm'])
  for rec in recs:
    assert not np.allclose(rec['crop_transform'],
                           plain[rec['source']]['crop_transform'])
    mat = os.path.join(data['root'], *rec['source'].split('/')[1:]) + '.mat'
    crop = _to_crop(rec['crop_transform'].astype(np.float64),
                    _image_points(data['bfm'], mat))
    np.testing.assert_allclose(_bilinear(rec['position_map'], kpt_uv)[:, :2],
                               crop[kpt, :2], atol=0.02)


def test_samples_from_another_reader_convert_the_same(data):
  """The TFDS adapter builds Samples from arrays and calls convert_sample."""
  w = data['written'][1]
  info = scipy.io.loadmat(w['mat'])
  image = cv2.cvtColor(cv2.imread(w['jpg']), cv2.COLOR_BGR2RGB)
  sample = the300wlp.Sample(
      name=w['name'], image=image, pose_para=info['Pose_Para'].ravel(),
      shape_para=info['Shape_Para'].ravel(),
      exp_para=info['Exp_Para'].ravel(), pt2d=info['pt2d'].T,
      source='tfds/the300w_lp/train/1')
  bfm = bfm_lib.load_bfm(data['bfm'])
  fields = the300wlp.convert_sample(sample, bfm, R)
  records.validate('recon', records.deserialize(records.serialize(
      'recon', fields)))
  assert fields['source'] == 'tfds/the300w_lp/train/1'
  from_file = the300wlp.convert_sample(the300wlp.read_sample(w['mat']), bfm,
                                       R)
  for key in ('position_map', 'landmarks', 'crop_transform', 'identity'):
    np.testing.assert_array_equal(fields[key], from_file[key])
  read = the300wlp.read_sample(w['mat'])
  np.testing.assert_array_equal(read.image, image)  # RGB
  assert read.pt2d.shape == (68, 2) and read.shape_para.shape == (199,)
  bad = the300wlp.Sample(name='x', image=image, pose_para=np.zeros(6),
                         shape_para=np.zeros(199), exp_para=np.zeros(29),
                         pt2d=None, source='x')
  with pytest.raises(the300wlp.SampleError, match='pose_para'):
    the300wlp.convert_sample(bad, bfm, R)


def test_choose_views():
  assert the300wlp.choose_views([0.3, -0.1, 0.9, -0.7]) == (1, 3, 2)
  assert the300wlp.choose_views([-0.5, 0.0, 0.5]) == (1, 0, 2)
  with pytest.raises(the300wlp.OneSidedViews, match='no left'):
    the300wlp.choose_views([-0.05, 0.4, 0.8])  # the front is the only left
  with pytest.raises(the300wlp.OneSidedViews, match='no right'):
    the300wlp.choose_views([0.1, -0.4])
  assert the300wlp.face_key('LFPW_image_test_0001_12') == 'LFPW_image_test_0001'
  assert the300wlp.face_key('noview') == 'noview'
