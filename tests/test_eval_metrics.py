"""Evaluation metrics and the CED figure, against hand-computed values."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fabricate
from jaxface.eval import metrics
from jaxface.eval import plots
from jaxface.face import bfm as bfm_lib
from jaxface.face import model as model_lib
from jaxface.face import render
from jaxface.face import uv as uv_lib


def _box_landmarks(width, height, rng):
  """(68, 3) points in [10, 10 + width] x [20, 20 + height], corners in."""
  pts = rng.uniform(0, 1, (68, 3)) * [width, height, 30] + [10, 20, 0]
  pts[0, :2] = [10, 20]
  pts[1, :2] = [10 + width, 20 + height]
  return pts


# ------------------------------------------------------------ landmarks ----


def test_nme_is_zero_on_truth_and_hand_computed_for_a_shift():
  rng = np.random.default_rng(0)
  true = np.stack([_box_landmarks(40, 90, rng), _box_landmarks(25, 16, rng)])
  np.testing.assert_allclose(metrics.nme(true, true), 0.0, atol=1e-12)
  np.testing.assert_allclose(metrics.nme(true, true, dims=3), 0.0, atol=1e-12)
  # A (3, 4) pixel shift is 5 pixels; the boxes are 40 x 90 and 25 x 16.
  shifted = true + [3.0, 4.0, 12.0]
  np.testing.assert_allclose(metrics.nme(shifted, true), [5 / 60, 5 / 20])
  # In 3D, depth is compared up to an offset: the z shift of 12 is no error.
  np.testing.assert_allclose(metrics.nme(shifted, true, dims=3),
                             [5 / 60, 5 / 20])
  # Depth differences between points do count: every point 3 pixels to the
  # right, and the nearest one also 12 pixels nearer (the minimum, the
  # zero of z, stays). The box stays the 2D one.
  bent = true[:1].copy()
  bent[..., 0] += 3.0
  bent[0, np.argmax(true[0, :, 2]), 2] += 12.0
  np.testing.assert_allclose(metrics.nme(bent, true[:1], dims=3),
                             [(67 * 3 + np.hypot(3, 12)) / 68 / 60])


def test_nme_3d_compares_depth_up_to_an_offset():
  # Position-map-like predictions (min z of the face at 0, below the
  # landmarks) against pt3d_68-like truth (an arbitrary zero): the same
  # points up to a z offset have NME 3D 0, and the offset would otherwise
  # dominate it.
  rng = np.random.default_rng(5)
  true = _box_landmarks(80, 100, rng)[None]
  pred = true + [0.0, 0.0, -37.5]
  assert metrics.nme(pred, true, dims=3)[0] == pytest.approx(0.0, abs=1e-12)
  noisy = pred + rng.normal(0, 1.0, pred.shape) * [1, 1, 0]
  np.testing.assert_allclose(metrics.nme(noisy, true, dims=3),
                             metrics.nme(noisy, true, dims=2), rtol=1e-12)


def test_visible_point_errors_and_nme_hand_made():
  nan = np.nan
  true = np.array([[[0, 0], [40, 0], [40, 10], [nan, nan], [20, 5]]], float)
  pred = np.array([[[3, 4], [40, 0], [nan, nan], [0, 0], [20, 5]]], float)
  # Box of the visible truth: 40 x 10 -> 20. Point 2 has no prediction,
  # point 3 no truth.
  errors = metrics.visible_point_errors(pred, true)
  np.testing.assert_allclose(errors, [[5 / 20, 0.0, nan, nan, 0.0]])
  np.testing.assert_allclose(metrics.nme_visible(pred, true), [5 / 20 / 3])
  # One visible point, or none predicted: no NME.
  lone = np.full((1, 5, 2), nan)
  lone[0, 0] = [1.0, 1.0]
  assert np.isnan(metrics.nme_visible(lone, lone)[0])
  assert np.isnan(metrics.nme_visible(np.full_like(true, nan), true)[0])
  with pytest.raises(ValueError, match='matching'):
    metrics.nme_visible(pred[0], true[0])


def test_nme_of_jax_arrays_inside_jit_known_shift():
  # The training loop's eval step calls `nme` on traced float32 arrays.
  rng = np.random.default_rng(1)
  # True landmarks in the box x in [10, 20], y in [0, 40]: sqrt(w h) = 20.
  true = np.stack([rng.uniform(10, 20, 68), rng.uniform(0, 40, 68),
                   rng.uniform(0, 9, 68)], -1)
  true[0, :2], true[1, :2] = (10, 0), (20, 40)
  true = np.stack([true, 2 * true]).astype(np.float32)  # Second box: 40.
  # Shift (3, 4) in x, y -> 5 pixels; a depth shift is ignored.
  pred = true + np.array([3.0, 4.0, 100.0], np.float32)
  got = jax.jit(metrics.nme)(jnp.asarray(pred), jnp.asarray(true))
  assert isinstance(got, jax.Array) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, [5 / 20, 5 / 40], rtol=1e-5)
  got3 = jax.jit(metrics.nme, static_argnums=2)(pred, jnp.asarray(true), 3)
  np.testing.assert_allclose(got3, [5 / 20, 5 / 40], rtol=1e-5)
  # bfloat16 landmarks are measured in float32.
  assert metrics.nme(jnp.asarray(pred, jnp.bfloat16),
                     jnp.asarray(true)).dtype == jnp.float32
  # The numpy path (float64) gives the same values.
  np.testing.assert_allclose(metrics.nme(pred, true), got, rtol=1e-5)


def test_nme_rejects_too_few_coordinates():
  with pytest.raises(ValueError, match='3 coordinates'):
    metrics.nme(np.zeros((1, 68, 2)), np.zeros((1, 68, 2)), dims=3)


def test_yaw_bins():
  yaws = [0, 30, -30.5, 45, 60, -60.01, 89, -120]
  np.testing.assert_array_equal(metrics.yaw_bin_index(yaws),
                                [0, 0, 1, 1, 1, 2, 2, 2])
  assert metrics.yaw_bin_index(-12.0) == 0
  assert isinstance(metrics.yaw_bin_index(75.0), int)


def test_binned_summary_hand_made():
  errors = [1.0, 3.0, 10.0, 5.0]
  yaws = [10.0, -20.0, 45.0, -50.0]
  summary = metrics.binned_summary(errors, yaws)
  assert summary['0-30'] == {'mean': 2.0, 'count': 2}
  assert summary['30-60'] == {'mean': 7.5, 'count': 2}
  assert summary['60-90'] == {'mean': None, 'count': 0}
  # The mean of the two non-empty bins, not of the images (19 / 4).
  assert summary['mean_of_bins'] == pytest.approx(4.75)
  assert summary['mean'] == pytest.approx(4.75)
  summary = metrics.binned_summary([1.0, 1.0, 1.0, 7.0], [0, 5, 10, 70])
  assert summary['mean_of_bins'] == pytest.approx(4.0)
  assert summary['mean'] == pytest.approx(2.5)
  assert summary['count'] == 4


# ----------------------------------------------------------------- dense ----


def test_dense_nme_hand_made():
  res = 4
  rows, cols = np.meshgrid(np.arange(res), np.arange(res), indexing='ij')
  true = np.stack([10.0 * cols, 10.0 * rows, np.zeros((res, res))], -1)
  mask = np.zeros((res, res), bool)
  mask[1:3] = True  # x spans 0..30, y 10..20: the box is 30 x 10.
  pred = true + [0.0, 0.0, 5.0]
  pred[~mask] += 1000.0  # Outside the mask: must not count.
  pred, true = pred[None], true[None]
  np.testing.assert_allclose(metrics.dense_nme(pred, true, mask),
                             [5 / np.sqrt(300)])
  np.testing.assert_allclose(metrics.dense_nme(pred, true, mask, dims=2),
                             [0.0], atol=1e-12)
  with pytest.raises(ValueError, match='empty'):
    metrics.dense_nme(pred, true, np.zeros((res, res), bool))


# ------------------------------------------------------------------- CED ----


def test_ced_hand_made():
  thresholds, fraction = metrics.ced([0.015, 0.025, 0.055, 0.2], 0.1, 11)
  np.testing.assert_allclose(thresholds, np.arange(11) / 100)
  np.testing.assert_allclose(
      fraction, [0, 0, .25, .5, .5, .5, .75, .75, .75, .75, .75])
  assert metrics.ced_auc(np.zeros(4)) == pytest.approx(1.0)
  assert metrics.ced_auc([0.0, 0.2]) == pytest.approx(0.5)
  # A step at half the range: half the area.
  assert metrics.ced_auc([0.05], 0.1) == pytest.approx(0.5, abs=2e-3)


# ------------------------------------------------------------------ pose ----


def _posed_map(model, vertices, pitch, yaw, roll, resolution):
  """A record-like position map: 3DDFA pose, image flip, PRNet crop."""
  pose = np.array([*np.deg2rad([pitch, yaw, roll]), 220.0, 235.0, 0.0, 1.3])
  image = render.camera_to_image(render.pose_to_camera(vertices, pose), 450)
  transform, _ = render.prnet_crop(model.landmarks(image), resolution)
  position_map = model.position_map(render.apply_crop(transform, image),
                                    resolution)
  position_map[..., 2] -= position_map[..., 2].min()
  return position_map


@pytest.fixture(scope='module')
def face():
  model = model_lib.build_face_model()
  rng = np.random.default_rng(3)
  vertices = model.vertices(model_lib.sample_shape_coeffs(rng, model))
  return model, vertices


POSES = [(0, 0, 0), (60, -80, 30), (-60, 80, -30), (20, 45, -10),
         (-35, -20, 25), (10, 70, 0)]


@pytest.mark.parametrize('pitch,yaw,roll', POSES)
def test_estimate_pose_recovers_the_pose_of_the_same_face(face, pitch, yaw,
                                                          roll):
  model, vertices = face
  res = 32
  mask = model_lib.face_region_mask(res)
  canonical = model.canonical_position_map(vertices, res)
  posed = _posed_map(model, vertices, pitch, yaw, roll, res)
  fit = metrics.estimate_pose(posed[mask], canonical[mask])
  np.testing.assert_allclose([fit['pitch'], fit['yaw'], fit['roll']],
                             [pitch, yaw, roll], atol=0.5)
  assert np.linalg.det(fit['rotation']) == pytest.approx(1.0)
  # Mapping the canonical texels through the fit lands on the posed ones.
  mapped = (fit['scale'] * canonical[mask] @ fit['rotation'].T
            + fit['translation'])
  np.testing.assert_allclose(mapped, posed[mask], atol=1e-2)


@pytest.mark.parametrize('pitch,yaw,roll', [(0, 0, 0), (20, 45, -10),
                                            (-15, -50, 15), (10, 30, 5)])
def test_estimate_pose_against_the_mean_face(face, pitch, yaw, roll):
  model, vertices = face
  res = 32
  mask = model_lib.face_region_mask(res)
  posed = _posed_map(model, vertices, pitch, yaw, roll, res)
  fit = metrics.estimate_pose(posed[mask],
                              metrics.canonical_reference(res)[mask])
  np.testing.assert_allclose([fit['pitch'], fit['yaw'], fit['roll']],
                             [pitch, yaw, roll], atol=5.0)


def test_estimate_pose_scale_and_a_proper_rotation():
  rng = np.random.default_rng(4)
  canonical = rng.normal(size=(50, 3))
  fit = metrics.estimate_pose(2.5 * canonical + [1.0, 2.0, 3.0], canonical)
  assert fit['scale'] == pytest.approx(2.5)
  np.testing.assert_allclose(fit['rotation'], np.eye(3), atol=1e-9)
  np.testing.assert_allclose(fit['translation'], [1.0, 2.0, 3.0], atol=1e-9)
  # A mirror image is no rotation: the fit stays proper.
  fit = metrics.estimate_pose(canonical * [-1.0, 1.0, 1.0], canonical)
  assert np.linalg.det(fit['rotation']) == pytest.approx(1.0)
  # Zero weights leave points out.
  points = 2.0 * canonical
  points[:5] += 100.0
  weights = np.ones(50)
  weights[:5] = 0.0
  assert metrics.estimate_pose(points, canonical, weights)['scale'] == (
      pytest.approx(2.0))


def test_pose_fit_texels_leaves_out_texels_off_the_canonical_mesh():
  face = np.zeros((4, 4), bool)
  face[1:3, :] = True  # 8 face texels
  canonical = np.ones((4, 4, 3), np.float32)
  canonical[1, 0] = 0.0  # off the mesh
  canonical[0, 0] = 0.0  # off the mesh and outside the face
  fit = metrics.pose_fit_texels(face, canonical)
  expected = face.copy()
  expected[1, 0] = False
  np.testing.assert_array_equal(fit, expected)
  canonical[1:3] = 0.0
  canonical[1, 1] = 1.0  # one face texel left
  with pytest.raises(ValueError, match='fewer than 3 texels'):
    metrics.pose_fit_texels(face, canonical)
  with pytest.raises(ValueError, match=r'canonical must be a \(4, 4, 3\)'):
    metrics.pose_fit_texels(face, canonical[:, :3])


def test_pose_error_wraps_around():
  err = metrics.pose_error([[179.0, -170.0, 10.0], [0.0, 90.0, -45.0]],
                           [[-179.0, 170.0, 370.0], [180.0, -90.0, 45.0]])
  np.testing.assert_allclose(err, [[2.0, 20.0, 0.0], [180.0, 180.0, 90.0]],
                             atol=1e-9)


def test_rotation_error():
  err = metrics.rotation_error([[0, 0, 0], [0, 0, 0], [10, 20, 30]],
                               [[0, 30, 0], [-20, 0, 0], [10, 20, 30]])
  np.testing.assert_allclose(err, [30.0, 20.0, 0.0], atol=1e-6)
  # At yaw 90, (pitch + d, roll + d) is the same rotation: the per-angle
  # error is 30 degrees, the rotation error 0.
  pred, true = [[40.0, 90.0, 50.0]], [[10.0, 90.0, 20.0]]
  np.testing.assert_allclose(metrics.pose_error(pred, true)[0, [0, 2]], 30.0)
  np.testing.assert_allclose(metrics.rotation_error(pred, true), [0.0],
                             atol=1e-5)


_FLIP_Y = np.diag([1.0, -1.0, 1.0])


def _turned(points, pitch, yaw, roll, scale=0.7, shift=(9.0, -4.0, 2.0)):
  """Canonical (frontal) points turned to a 3DDFA pose, as a record holds
  them: model-space v becomes F s R v + t in the image (F: the y flip), and
  the canonical map is k F v + c, so the image-frame rotation is F R F."""
  rot = _FLIP_Y @ render.angle2matrix_3ddfa(
      *np.deg2rad([pitch, yaw, roll])) @ _FLIP_Y
  centre = points.mean(0)
  return scale * (points - centre) @ rot.T + centre + np.asarray(shift)


HAND_POSES = [(0, 0, 0), (15, 40, -10), (-25, -75, 20), (5, 88, 3),
              (-40, 10, 60)]


@pytest.mark.parametrize('layout', ['procedural', 'bfm'])
def test_pose_of_the_canonical_face_at_known_angles(layout, tmp_path):
  # The canonical face of each layout turned to known angles: the fit gives
  # them back (MAE ~0), and a known yaw offset comes out as that offset.
  res = 33
  if layout == 'procedural':
    canonical = metrics.canonical_reference(res)
    mask = model_lib.face_region_mask(res)
  else:
    fabricate.write_bfm(str(tmp_path))
    canonical = metrics.canonical_reference(res, str(tmp_path))
    mask = (bfm_lib.load_bfm(str(tmp_path)).uv_layout().face_region(res)
            & np.any(canonical != 0, axis=-1))
  points = canonical[mask].astype(np.float64)
  true, fitted, offset = [], [], []
  for pitch, yaw, roll in HAND_POSES:
    true.append([pitch, yaw, roll])
    for angles, out in (((pitch, yaw, roll), fitted),
                        ((pitch, yaw + 1.5, roll), offset)):
      fit = metrics.estimate_pose(_turned(points, *angles), points)
      out.append([fit['pitch'], fit['yaw'], fit['roll']])
  np.testing.assert_allclose(metrics.pose_error(fitted, true), 0.0,
                             atol=1e-6)
  np.testing.assert_allclose(metrics.pose_error(offset, true),
                             [[0.0, 1.5, 0.0]] * len(HAND_POSES), atol=1e-6)


def test_pose_fit_of_converted_aflw2000_maps_is_the_records_pose(tmp_path):
  # The AFLW2000 converter's map of the BFM mean face at a Pose_Para gives
  # that Pose_Para back against the BFM's canonical face: the fit, the
  # converter and 3DDFA's angles share their conventions (positive yaw
  # turns the face to the image left).
  from data_pipelines import aflw2000  # pylint: disable=g-import-not-at-top
  fabricate.write_bfm(str(tmp_path))
  bfm = bfm_lib.load_bfm(str(tmp_path))
  res = 65
  canonical = metrics.canonical_reference(res, str(tmp_path))
  mask = bfm.uv_layout().face_region(res) & np.any(canonical != 0, axis=-1)
  zeros = (np.zeros(bfm.num_shape, np.float32),
           np.zeros(bfm.num_expression, np.float32))
  for pitch, yaw, roll in HAND_POSES:
    pose = np.array([*np.deg2rad([pitch, yaw, roll]), 230.0, 220.0, 5.0,
                     0.0012], np.float32)
    image_points = bfm.image_vertices(*zeros, pose, 450)
    sample = aflw2000.Sample(
        name='image00001', image=np.zeros((450, 450, 3), np.uint8),
        pose_para=pose, shape_para=zeros[0], exp_para=zeros[1],
        landmarks=image_points[bfm.keypoints].astype(np.float32),
        source='AFLW2000/image00001')
    record = aflw2000.convert_sample(sample, bfm, res)
    fit = metrics.estimate_pose(record['position_map'][mask],
                                canonical[mask])
    np.testing.assert_allclose(
        metrics.pose_error([[fit['pitch'], fit['yaw'], fit['roll']]],
                           [np.rad2deg(record['pose'][:3])]), 0.0,
        atol=1e-3)
    # Positive yaw turns the nose to the image left, next to the image-left
    # end of the jaw contour (iBUG 0) and away from the other (iBUG 16).
    lmk = record['landmarks']
    if abs(yaw) >= 40 and abs(roll) < 30:
      left, right = abs(lmk[30, 0] - lmk[0, 0]), abs(lmk[16, 0] - lmk[30, 0])
      assert (left < right) == (yaw > 0)


def test_pose_benchmark_mask():
  true = [[10, 20, 30], [99, -99, 0], [0, 99.5, 0], [-120, 5, 5],
          [0, 0, -100]]
  np.testing.assert_array_equal(metrics.pose_benchmark_mask(true),
                                [True, True, False, False, False])
  assert metrics.POSE_MAX_ABS_DEG == 99.0


def test_canonical_reference_is_the_mean_face_map():
  model = model_lib.build_face_model()
  ref = metrics.canonical_reference(32)
  assert ref.shape == (32, 32, 3)
  zeros = model.vertices(np.zeros(model.num_shape),
                         np.zeros(model.num_expression))
  np.testing.assert_allclose(
      ref, model.canonical_position_map(zeros, 32), atol=1e-5)
  # The frontal frame: the nose tip (iBUG 30) on the middle column.
  nose = model.landmarks(model.vertices())[30]
  assert nose[0] == pytest.approx(0.0, abs=1e-3)


def test_canonical_reference_of_a_bfm(tmp_path):
  fabricate.write_bfm(str(tmp_path))
  ref = metrics.canonical_reference(33, str(tmp_path))
  assert ref.shape == (33, 33, 3)
  # The BFM frame puts the mean face's eye centre at column (R - 1) / 2 and
  # row 0.39 (R - 1).
  landmarks = np.asarray(uv_lib.sample_uv(
      ref, bfm_lib.load_bfm(str(tmp_path)).landmark_uv))
  eyes = (landmarks[36:42].mean(0) + landmarks[42:48].mean(0)) / 2
  np.testing.assert_allclose(eyes[:2], [16.0, 0.39 * 32], atol=0.1)


# ---------------------------------------------------------------- voxels ----


def test_chamfer_of_parallel_planes_and_a_hand_made_set():
  grid = np.stack(np.meshgrid(np.arange(10.0), np.arange(8.0)), -1).reshape(
      -1, 2)
  plane = np.concatenate([grid, np.zeros((len(grid), 1))], 1)
  assert metrics.chamfer_distance(plane, plane + [0, 0, 2.5]) == (
      pytest.approx(2.5))
  # a -> b: 1; b -> a: (1 + 3) / 2 = 2; mean 1.5.
  a = np.zeros((1, 3))
  b = np.array([[1.0, 0, 0], [3.0, 0, 0]])
  assert metrics.chamfer_distance(a, b) == pytest.approx(1.5)
  assert metrics.chamfer_distance(b, a) == pytest.approx(1.5)


def test_surface_of_a_voxel_box_lies_on_its_faces():
  occ = np.zeros((16, 16, 16))
  occ[3:9, 4:12, 2:14] = 1.0  # z, y, x
  verts, faces = metrics.occupancy_surface(occ, voxel_size=2.0)
  assert len(faces) > 0 and faces.max() < len(verts)
  lo = 2.0 * np.array([2, 4, 3])  # x, y, z of the box's faces
  hi = 2.0 * np.array([14, 12, 9])
  assert np.all(verts >= lo - 1e-9) and np.all(verts <= hi + 1e-9)
  on_face = np.min(np.abs(np.concatenate([verts - lo, verts - hi], 1)), 1)
  np.testing.assert_allclose(on_face, 0.0, atol=1e-9)
  # All six faces appear.
  for axis in range(3):
    assert np.any(np.isclose(verts[:, axis], lo[axis]))
    assert np.any(np.isclose(verts[:, axis], hi[axis]))


def test_a_full_grid_gives_a_closed_surface():
  verts, _ = metrics.occupancy_surface(np.ones((4, 4, 4)))
  np.testing.assert_allclose(verts.min(0), 0.0)
  np.testing.assert_allclose(verts.max(0), 4.0)


def test_surface_of_a_voxel_sphere_is_near_the_sphere_and_faces_out():
  size, radius = 24, 7.0
  centre = np.array([12.0, 11.0, 13.0])  # x, y, z
  k, i, j = np.meshgrid(*[np.arange(size)] * 3, indexing='ij')
  centres = np.stack([j, i, k], -1) + 0.5  # voxel centres, x, y, z
  occ = (np.linalg.norm(centres - centre, axis=-1) <= radius).astype(float)
  verts, faces = metrics.occupancy_surface(occ)
  dist = np.linalg.norm(verts - centre, axis=1)
  assert np.max(np.abs(dist - radius)) < 0.75
  tri = verts[faces]
  normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
  outward = np.einsum('fk,fk->f', normals, tri.mean(1) - centre)
  assert np.mean(outward > 0) > 0.99


def test_an_empty_grid_has_no_surface():
  with pytest.raises(ValueError, match='no voxel above'):
    metrics.occupancy_surface(np.zeros((8, 8, 8)))
  with pytest.raises(ValueError, match='no voxel above'):
    metrics.voxel_chamfer(np.zeros((8, 8, 8)), np.ones((8, 8, 8)))


def test_voxel_chamfer():
  a = np.zeros((12, 12, 12))
  a[2:8, 3:9, 4:10] = 1.0
  b = np.roll(a, 2, axis=2)
  assert metrics.voxel_chamfer(a, a) == 0.0
  d = metrics.voxel_chamfer(a, b)
  assert 0.0 < d < 2.0  # Faces normal to the shift move 2, the others slide.
  assert metrics.voxel_chamfer(b, a) == pytest.approx(d)
  assert metrics.voxel_chamfer(a, b, voxel_size=0.5) == pytest.approx(d / 2)


# ----------------------------------------------------------------- plots ----


def test_ced_plot_draws_curves(tmp_path):
  path = str(tmp_path / 'fig' / 'ced.png')
  # All errors 0: the first curve is flat at 100 % across the plot.
  out = plots.ced_plot({'perfect': np.zeros(10),
                        'spread': np.linspace(0, 0.15, 50)}, path,
                       title='test')
  assert out == path
  image = cv2.imread(path)
  assert image.shape == (plots.SIZE[1], plots.SIZE[0], 3)
  for k, count in ((0, 300), (1, 300)):
    hits = np.all(image == plots.COLOURS[k], axis=-1)
    assert hits.sum() > count, k
  rows = np.nonzero(np.all(image == plots.COLOURS[0], axis=-1))[0]
  # The flat line at the top holds most of the first colour's pixels.
  assert np.median(rows) < plots.SIZE[1] / 4
  assert not [n for n in (tmp_path / 'fig').iterdir() if n.name != 'ced.png']
  small = plots.ced_plot({'x': [0.01]}, str(tmp_path / 's.png'),
                         size=(320, 240))
  assert cv2.imread(small).shape == (240, 320, 3)


def test_ced_plot_legend_axes_and_errors(tmp_path, monkeypatch):
  drawn = []
  save = plots._save
  monkeypatch.setattr(plots, '_save',
                      lambda fig, path: drawn.append(fig) or save(fig, path))
  # a's AUC@5%: (1/3 x 0.02 + 2/3 x 0.03) / 0.05; NaN counts as a failure.
  plots.ced_plot({'a': [0.0, 0.02, np.nan], 'b': [], 'c': [np.inf]},
                 str(tmp_path / 'ced.png'), max_error=0.05, title='AFLW')
  (ax,) = drawn[0].axes
  assert [t.get_text() for t in ax.get_legend().get_texts()] == [
      'a: mean 1.00%, AUC@5% 0.533', 'b: no images',
      'c: mean n/a, AUC@5% 0.000']
  assert ax.get_xlim() == (0, 5) and ax.get_ylim() == (0, 100)
  assert [t.get_text() for t in ax.get_xticklabels()] == [
      '0', '1', '2', '3', '4', '5']
  assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == (
      'NME (%)', 'images (%)', 'AFLW')
  for bad in (0.0, -0.1, np.nan):
    with pytest.raises(ValueError, match='max_error must be positive'):
      plots.ced_plot({'a': [0.0]}, str(tmp_path / 'bad.png'), max_error=bad)
  assert not (tmp_path / 'bad.png').exists()


def test_learning_curve_plot(tmp_path):
  records = [{'step': 0, 'train/loss': 2.0}, {'step': 10, 'train/loss': 1.0},
             {'step': 10, 'eval/nme': 0.2, 'eval/nme_mean_face': 0.3}]
  path = plots.learning_curve_plot(records, str(tmp_path / 'lc.png'))
  image = cv2.imread(path)
  assert image.shape == (450, 720, 3)
  tab_blue, tab_red = (180, 119, 31), (40, 39, 214)  # BGR.
  for colour in (tab_blue, tab_red):
    assert np.all(image == colour, axis=-1).sum() > 50, colour
  with pytest.raises(ValueError, match="no 'train/loss' or 'eval/nme'"):
    plots.learning_curve_plot([{'step': 1, 'other': 1.0}],
                              str(tmp_path / 'none.png'))


def test_load_canonical_from_a_npy_file_and_its_errors(tmp_path):
  good = np.arange(4 * 4 * 3, dtype=np.float32).reshape(4, 4, 3)
  np.save(tmp_path / 'c.npy', good)
  np.testing.assert_array_equal(
      metrics.load_canonical(str(tmp_path / 'c.npy'), 4), good)
  assert metrics.load_canonical(None, 4) is None
  with pytest.raises(ValueError, match=r'shape \(4, 4, 3\).*\(8, 8, 3\)'):
    metrics.load_canonical(str(tmp_path / 'c.npy'), 8)
  with pytest.raises(FileNotFoundError, match='does not exist'):
    metrics.load_canonical(str(tmp_path / 'missing.npy'), 4)
  (tmp_path / 'bad.npy').write_bytes(b'not an array')
  with pytest.raises(ValueError, match='not a .npy array'):
    metrics.load_canonical(str(tmp_path / 'bad.npy'), 4)


@pytest.mark.parametrize('xp', [np, jnp])
def test_mean_position_error_over_the_mask_by_hand(xp):
  true = np.zeros((2, 2, 2, 3), np.float32)
  pred = true.copy()
  pred[0, 0, 0] = [3, 4, 0]    # 5 away, in the mask
  pred[0, 1, 1] = [100, 0, 0]  # outside the mask: ignored
  pred[1, 0, 1] = [0, 0, 2]    # 2 away, in the mask
  mask = np.array([[True, True], [False, False]])
  got = metrics.mean_position_error(xp.asarray(pred), xp.asarray(true), mask)
  np.testing.assert_allclose(np.asarray(got), [2.5, 1.0])


@pytest.mark.parametrize('xp', [np, jnp])
def test_voxel_iou_by_hand(xp):
  pred = np.zeros((3, 2, 2, 2), bool)
  true = np.zeros((3, 2, 2, 2), bool)
  pred[0, 0, 0, :] = True      # 2 voxels, 1 shared with the truth's 3
  true[0, 0, 0, 0] = true[0, 1, 1, 0] = true[0, 1, 1, 1] = True
  pred[1] = true[1] = True     # identical: 1
  # image 2: both empty, 0 rather than 0 / 0
  got = metrics.voxel_iou(xp.asarray(pred), xp.asarray(true))
  np.testing.assert_allclose(np.asarray(got), [1 / 4, 1.0, 0.0])
