"""The BFM loader: face3d's format, the UV convention, clear errors."""

import os
import shutil

import numpy as np
import pytest
import scipy.io

import fabricate
from jaxface import cli
from jaxface.face import bfm as bfm_lib

R = 65  # (R - 1) is a multiple of the fake mesh's grid: vertices on texels.


@pytest.fixture(scope='module')
def bfm_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('bfm'))
  fabricate.write_bfm(directory)
  return directory


@pytest.fixture(scope='module')
def bfm(bfm_dir):
  return bfm_lib.load_bfm(bfm_dir)


def _frontal():
  return np.array([0, 0, 0, 225, 225, 0, 0.0012], np.float32)


def test_load_keeps_face3d_fields_and_makes_indices_0_based(bfm, bfm_dir):
  raw = scipy.io.loadmat(os.path.join(bfm_dir, 'BFM.mat'))['model'][0, 0]
  n = raw['shapeMU'].size // 3
  mean = (raw['shapeMU'] + raw['expMU']).reshape(-1)
  # Flat vectors interleave x, y, z per vertex (face3d's Fortran reshape).
  np.testing.assert_allclose(bfm.mean[:, 0], mean[0::3], rtol=1e-6)
  np.testing.assert_allclose(bfm.mean[:, 2], mean[2::3], rtol=1e-6)
  assert bfm.shape_basis.shape == (3 * n, 199)
  assert bfm.expression_basis.shape == (3 * n, 29)
  tri = np.concatenate([raw['tri'].T, raw['tri_mouth'].T]) - 1
  np.testing.assert_array_equal(bfm.triangles, tri)
  np.testing.assert_array_equal(bfm.keypoints, raw['kpt_ind'].ravel() - 1)
  uv = scipy.io.loadmat(os.path.join(bfm_dir, 'BFM_UV.mat'))['UV']
  np.testing.assert_allclose(bfm.uv[:, 0], uv[:, 0], atol=1e-7)
  np.testing.assert_allclose(bfm.uv[:, 1], 1 - uv[:, 1], atol=1e-7)
  np.testing.assert_array_equal(bfm.landmark_uv, bfm.uv[bfm.keypoints])
  assert bfm.units_per_mm == 1000.0


def test_vertices_are_mean_plus_bases_times_300wlp_params(bfm, bfm_dir):
  raw = scipy.io.loadmat(os.path.join(bfm_dir, 'BFM.mat'))['model'][0, 0]
  rng = np.random.default_rng(0)
  sp = rng.normal(0, 1e5, (199, 1))
  ep = rng.normal(0, 1e4, (29, 1))
  flat = (raw['shapeMU'] + raw['expMU'] + raw['shapePC'].astype(np.float64)
          @ sp + raw['expPC'].astype(np.float64) @ ep)
  expected = flat.reshape(-1, 3)  # [x0 y0 z0 x1 ...] -> rows of vertices
  got = bfm.vertices(sp, ep)
  assert got.shape == (bfm.num_vertices, 3)
  np.testing.assert_allclose(got, expected, atol=2.0)  # micrometres
  with pytest.raises(ValueError, match='199 identity'):
    bfm.vertices(sp[:150], ep)


def test_frontal_position_map_looks_like_the_face(bfm):
  """The BFM's UV (v up) becomes jaxface's (v down): upright, not mirrored."""
  points = bfm.image_vertices(np.zeros(199), np.zeros(29), _frontal(), 450)
  position_map = bfm.position_map(points, R)
  covered = bfm.uv_raster(R).covered
  rows, cols = np.nonzero(covered)
  x = position_map[rows, cols, 0]
  y = position_map[rows, cols, 1]
  # Image x grows with the map's columns, image y with its rows.
  assert np.corrcoef(x, cols)[0, 1] > 0.9
  assert np.corrcoef(y, rows)[0, 1] > 0.9
  # The nose tip (nearest the camera) is near the centre of the map.
  face = covered & (np.abs(np.arange(R) - R / 2)[None, :] < R / 4)
  z = np.where(face, position_map[..., 2], -np.inf)
  tip_row, tip_col = np.unravel_index(np.argmax(z), z.shape)
  assert abs(tip_row - (R - 1) / 2) < 0.15 * R
  assert abs(tip_col - (R - 1) / 2) < 0.05 * R
  # Landmark texels: chin below the mouth below the nose below the eyes;
  # jaw point 0 (image left of a frontal photo) at small u.
  rows_of = bfm.landmark_uv[:, 1] * (R - 1)
  assert rows_of[8] > rows_of[57] > rows_of[30] > rows_of[36:48].mean()
  assert bfm.landmark_uv[0, 0] < 0.5 < bfm.landmark_uv[16, 0]
  # ... and the map's values there are where the face is in the image.
  def at(k):
    u, v = np.round(bfm.landmark_uv[k] * (R - 1)).astype(int)
    return position_map[v, u]
  assert at(8)[1] > at(57)[1] > at(30)[1]
  assert at(0)[0] < at(30)[0] < at(16)[0]


def test_uv_raster_is_cached_per_object(bfm, bfm_dir):
  assert bfm.uv_raster(R) is bfm.uv_raster(R)
  assert bfm.uv_raster(33) is not bfm.uv_raster(R)
  other = bfm_lib.load_bfm(bfm_dir)
  assert other.uv_raster(R) is not bfm.uv_raster(R)
  np.testing.assert_array_equal(other.uv_raster(R).vertex_ids,
                                bfm.uv_raster(R).vertex_ids)


def test_extra_points_and_canonical_map(bfm):
  kpt = bfm.mean[bfm.keypoints]
  glabella, left, right = bfm.mean[bfm.extra_vertex_ids]
  brows = kpt[17:27, 1].mean()
  eyes = kpt[36:48, 1].mean()
  assert abs(glabella[0] - (kpt[21, 0] + kpt[22, 0]) / 2) < 10e3  # 1 cm
  assert eyes < glabella[1] < brows + 15e3
  assert left[0] < glabella[0] < right[0]
  assert abs(left[1] - brows) < 10e3 and abs(right[1] - brows) < 10e3
  extra = bfm.extra_points(bfm.mean)
  np.testing.assert_array_equal(extra[1], kpt[0])  # ears: jaw ends
  np.testing.assert_array_equal(extra[2], kpt[16])

  canonical = bfm.canonical_position_map(bfm.mean, R)
  assert canonical.shape == (R, R, 3) and canonical.dtype == np.float32
  assert canonical[..., 2][bfm.uv_raster(R).covered].min() == 0
  texel = np.round(bfm.landmark_uv * (R - 1)).astype(int)
  at = canonical[texel[:, 1], texel[:, 0]]  # vertices lie on texels
  left_eye, right_eye = at[36:42].mean(0), at[42:48].mean(0)
  centre = (left_eye + right_eye) / 2
  np.testing.assert_allclose(centre[:2], [(R - 1) / 2, 0.39 * (R - 1)],
                             atol=1e-3)
  iod_mm = np.linalg.norm(kpt[36:42, :2].mean(0) - kpt[42:48, :2].mean(0)
                          ) / 1000
  np.testing.assert_allclose(np.linalg.norm(left_eye[:2] - right_eye[:2]),
                             iod_mm * (R - 1) / 255, rtol=1e-4)


@pytest.mark.parametrize('case', ['empty', 'missing', 'no_uv', '3ddfa',
                                  'no_field', 'uv_rows', 'not_struct'])
def test_wrong_bfm_folder_says_what_is_expected(bfm_dir, tmp_path, case):
  directory = str(tmp_path / 'bfm')
  raw = scipy.io.loadmat(os.path.join(bfm_dir, 'BFM.mat'))['model'][0, 0]
  fields = {k: raw[k] for k in raw.dtype.names}
  uv = scipy.io.loadmat(os.path.join(bfm_dir, 'BFM_UV.mat'))['UV']
  if case == 'missing':
    directory = str(tmp_path / 'nowhere')
    expected = ['does not exist', 'BFM.mat', 'BFM_UV.mat']
  else:
    os.makedirs(directory)
  if case == 'empty':
    expected = ['no BFM.mat', 'it is empty', 'BFM_UV.mat',
                'faces.dmi.unibas.ch', 'face3d', '3DMMasSTN']
  elif case == '3ddfa':
    for name in ('Model_Shape.mat', 'Model_Expression.mat'):
      scipy.io.savemat(os.path.join(directory, name), {'w': np.zeros(3)})
    expected = ['no BFM.mat', "3DDFA's model files", 'generate.m']
  elif case == 'no_uv':
    shutil.copy(os.path.join(bfm_dir, 'BFM.mat'), directory)
    expected = ['no BFM_UV.mat', '3DMMasSTN']
  elif case == 'no_field':
    del fields['shapePC']
    scipy.io.savemat(os.path.join(directory, 'BFM.mat'), {'model': fields})
    scipy.io.savemat(os.path.join(directory, 'BFM_UV.mat'), {'UV': uv})
    expected = [os.path.join(directory, 'BFM.mat'), "'shapePC'",
                'identity basis']
  elif case == 'uv_rows':
    shutil.copy(os.path.join(bfm_dir, 'BFM.mat'), directory)
    scipy.io.savemat(os.path.join(directory, 'BFM_UV.mat'), {'UV': uv[:-5]})
    expected = ['BFM_UV.mat', f'({len(uv)}, 2)', 'same model']
  elif case == 'not_struct':
    scipy.io.savemat(os.path.join(directory, 'BFM.mat'),
                     {'meanshape': np.zeros((3, 1))})
    shutil.copy(os.path.join(bfm_dir, 'BFM_UV.mat'), directory)
    expected = ['no struct `model`', 'meanshape']
  with pytest.raises(bfm_lib.BFMError) as error:
    bfm_lib.load_bfm(directory)
  for text in expected:
    assert text in str(error.value)


def test_cli_with_wrong_bfm_folder_names_the_expected_files(tmp_path,
                                                            capsys):
  (tmp_path / 'bfm').mkdir()
  (tmp_path / 'bfm' / 'README.txt').write_text('not a model')
  status = cli.main(['data', 'convert-300wlp', '--root', str(tmp_path),
                     '--bfm', str(tmp_path / 'bfm'), '--out',
                     str(tmp_path / 'out'), '--workers', '1'])
  assert status != 0
  err = capsys.readouterr().err
  assert 'BFM.mat' in err and 'BFM_UV.mat' in err and 'README.txt' in err
  assert not (tmp_path / 'out').exists()


def test_accepts_face3d_out_folder_and_file_path(bfm_dir, tmp_path):
  out = tmp_path / 'Data' / 'BFM' / 'Out'
  out.mkdir(parents=True)
  for name in ('BFM.mat', 'BFM_UV.mat'):
    shutil.copy(os.path.join(bfm_dir, name), out)
  a = bfm_lib.load_bfm(str(tmp_path / 'Data' / 'BFM'))
  b = bfm_lib.load_bfm(str(out / 'BFM.mat'))
  assert a.path == b.path == str(out)
  np.testing.assert_array_equal(a.mean, b.mean)
