"""AFLW2000-3D conversion: test records that map back to original pixels."""

import os

import numpy as np
import pytest
import scipy.io

import fabricate
from data_pipelines import aflw2000
from jaxface import cli
from jaxface import files
from jaxface.data import records
from jaxface.data import shards
from jaxface.face import bfm as bfm_lib
from jaxface.face import layout as layout_lib

R = 65  # (R - 1) is a multiple of the fake mesh's grid: vertices on texels.


def _prnet_crop(xy, resolution):
  left, top = xy.min(0)
  right, bottom = xy.max(0)
  size = 1.5 * ((right - left) + (bottom - top)) / 2
  k = (resolution - 1) / size
  x0, y0 = (left + right - size) / 2, (top + bottom - size) / 2
  return np.array([[k, 0, -k * x0], [0, k, -k * y0], [0, 0, 1]])


def _texels(uv, resolution):
  """Integer texels of UV points that lie on texel centres (rows, cols)."""
  texel = uv * (resolution - 1)
  assert np.allclose(texel, np.round(texel), atol=1e-6)
  texel = np.round(texel).astype(int)
  return texel[:, 1], texel[:, 0]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  base = tmp_path_factory.mktemp('aflw')
  bfm_dir, root = str(base / 'bfm'), str(base / 'AFLW2000')
  fabricate.write_bfm(bfm_dir)
  written = fabricate.write_aflw2000(root, bfm_dir)
  # A corrupt image among them.
  (base / 'AFLW2000' / 'image00099.jpg').write_bytes(b'\xff\xd8 broken')
  scipy.io.savemat(str(base / 'AFLW2000' / 'image00099.mat'), {
      k: v for k, v in scipy.io.loadmat(written[0]['mat']).items()
      if not k.startswith('__')})
  out = str(base / 'out')
  return {'bfm': bfm_dir, 'root': root, 'out': out, 'written': written,
          'base': base}


def test_records_keep_pose_and_map_back_to_original_pixels(data, capsys):
  status = cli.main(['data', 'convert-aflw2000', '--root', data['root'],
                     '--bfm', data['bfm'], '--out', data['out'],
                     '--resolution', str(R), '--workers', '1'])
  assert status == 0
  printed = capsys.readouterr().out
  assert 'image00099' in printed and 'truncated JPEG' in printed
  info = shards.read_dataset_info(data['out'])
  assert info['source'] == 'AFLW2000' and info['position_maps'] is True
  assert set(info['kinds']) == {'recon'}
  assert set(info['kinds']['recon']) == {'test'}
  assert shards.check(data['out'])['ok']
  assert not [f for f in os.listdir(data['out'])
              if f.startswith('.') and f != files.LOCK_NAME]

  model = scipy.io.loadmat(os.path.join(data['bfm'], 'BFM.mat'))['model'][
      0, 0]
  kpt = model['kpt_ind'].ravel().astype(int) - 1
  uv = scipy.io.loadmat(os.path.join(data['bfm'], 'BFM_UV.mat'))['UV']
  kpt_uv = np.stack([uv[:, 0], 1 - uv[:, 1]], 1)[kpt]
  with shards.RecordReader(data['out'], 'recon', 'test') as reader:
    recs = {r['source']: r for r in reader}
  assert sorted(recs) == [f'AFLW2000/{w["name"]}' for w in data['written']]
  for w in data['written']:
    rec = recs[f'AFLW2000/{w["name"]}']
    mat = scipy.io.loadmat(w['mat'])
    pt3d = mat['pt3d_68'].T  # (68, 3): x, y in image pixels, z depth
    np.testing.assert_array_equal(rec['pose'], mat['Pose_Para'].ravel())
    assert rec['pose'][1] == np.float32(w['pose'][1])  # the yaw
    assert rec['identity'] == int(w['name'][len('image'):])
    np.testing.assert_array_equal(rec['original_size'], [450, 450])
    transform = _prnet_crop(pt3d[:, :2], R)
    np.testing.assert_allclose(rec['crop_transform'], transform, rtol=1e-5,
                               atol=1e-3)
    # Predictions in the crop map back to original pixels.
    inverse = np.linalg.inv(rec['crop_transform'].astype(np.float64))
    back = rec['landmarks'][:, :2] @ inverse[:2, :2].T + inverse[:2, 2]
    np.testing.assert_allclose(back, pt3d[:, :2], atol=0.01)
    # z scaled like x and y, and in the position map's frame: the map
    # sampled at the landmark vertices gives the landmarks.
    scale = transform[0, 0]
    dz = rec['landmarks'][:, 2] - pt3d[:, 2] * scale
    assert np.ptp(dz) < 0.01
    rows, cols = _texels(kpt_uv, R)
    np.testing.assert_allclose(rec['position_map'][rows, cols],
                               rec['landmarks'], atol=0.02)
    assert rec['position_map'][..., 2].min() == 0
    assert records.decode_jpeg(rec['image']).shape == (R, R, 3)
  # The maps' UV layout is the BFM's: its landmarks at the keypoints' UVs.
  layout = layout_lib.layout_of_dataset(info)
  assert layout == bfm_lib.load_bfm(data['bfm']).uv_layout()
  assert layout.name == 'bfm'
  np.testing.assert_allclose(layout.landmark_uv, kpt_uv, atol=1e-6)


def test_without_bfm_refuses_unless_landmarks_only(data, tmp_path, capsys):
  out = tmp_path / 'out'
  status = cli.main(['data', 'convert-aflw2000', '--root', data['root'],
                     '--out', str(out)])
  err = capsys.readouterr().err
  assert status != 0
  assert '--bfm' in err and '--landmarks-only' in err
  assert not out.exists()

  status = cli.main(['data', 'convert-aflw2000', '--root', data['root'],
                     '--out', str(out), '--landmarks-only', '--resolution',
                     str(R), '--workers', '1'])
  assert status == 0
  info = shards.read_dataset_info(str(out))
  assert info['position_maps'] is False and info['bfm'] is None
  assert 'uv_layout' not in info  # no maps, no layout
  with shards.RecordReader(str(out), 'recon', 'test') as reader:
    recs = list(reader)
  assert len(recs) == len(data['written'])
  for rec, w in zip(recs, data['written']):
    assert 'position_map' not in rec
    with open(w['jpg'], 'rb') as f:
      assert rec['original_image'] == f.read()  # the photo, byte for byte
    assert rec['landmarks'][:, 2].min() == 0
    inverse = np.linalg.inv(rec['crop_transform'].astype(np.float64))
    back = rec['landmarks'][:, :2] @ inverse[:2, :2].T + inverse[:2, 2]
    np.testing.assert_allclose(back, w['pt3d'][:, :2], atol=0.01)


def test_nothing_usable_and_wrong_root(data, tmp_path, capsys):
  root = tmp_path / 'AFLW2000'
  root.mkdir()
  (root / 'image00001.jpg').write_bytes(b'not a jpeg')
  out = tmp_path / 'out'
  status = cli.main(['data', 'convert-aflw2000', '--root', str(root),
                     '--out', str(out), '--bfm', data['bfm'], '--workers',
                     '1'])
  captured = capsys.readouterr()
  assert status != 0 and 'no usable AFLW2000 sample' in captured.err
  assert 'image00001' in captured.out and 'missing .mat' in captured.out
  assert os.listdir(out) == [files.LOCK_NAME]
  status = cli.main(['data', 'convert-aflw2000', '--root', str(tmp_path),
                     '--out', str(tmp_path / 'o2'), '--landmarks-only'])
  err = capsys.readouterr().err
  assert status != 0 and 'did you mean --root' in err


def test_a_folder_another_writer_holds_is_refused(data, tmp_path, capsys):
  out = tmp_path / 'out'
  with files.FolderLock(str(out), 'dataset'):
    assert cli.main(['data', 'convert-aflw2000', '--root', data['root'],
                     '--out', str(out), '--landmarks-only', '--workers',
                     '1']) == 2
  assert f'in use by process {os.getpid()}' in capsys.readouterr().err
  assert os.listdir(out) == [files.LOCK_NAME]


def test_read_sample_checks_shapes(data, tmp_path):
  fields = {k: v for k, v in scipy.io.loadmat(
      data['written'][0]['mat']).items() if not k.startswith('__')}
  fields['pt3d_68'] = fields['pt3d_68'][:2]
  scipy.io.savemat(str(tmp_path / 'image00005.mat'), fields)
  os.link(data['written'][0]['jpg'], str(tmp_path / 'image00005.jpg'))
  with pytest.raises(aflw2000.SampleError, match=r'pt3d_68 has shape \(2, '
                     r'68\); expected \(3, 68\)'):
    aflw2000.read_sample(str(tmp_path / 'image00005.mat'))
  sample = aflw2000.read_sample(data['written'][1]['mat'])
  assert sample.landmarks.shape == (68, 3) and sample.image.shape == (450,
                                                                        450,
                                                                        3)
