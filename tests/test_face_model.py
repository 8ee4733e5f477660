"""The procedural face model, UV maps, weight mask and renderer."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface.data import records
from jaxface.data import synthetic
from jaxface.face import model as model_lib
from jaxface.face import render
from jaxface.face import uv as uv_lib


@pytest.fixture(scope='module')
def model():
  return model_lib.build_face_model()


def _frontal_image_vertices(model, yaw_deg=0.0, shape=None, expr=None):
  pose = np.array([0, np.deg2rad(yaw_deg), 0, 225, 225, 0, 1.3])
  camera = render.pose_to_camera(model.vertices(shape, expr), pose)
  return render.camera_to_image(camera, 450)


def test_model_is_deterministic_and_has_documented_sizes(model):
  other = model_lib.build_face_model.__wrapped__()  # a fresh build
  np.testing.assert_array_equal(model.mean, other.mean)
  np.testing.assert_array_equal(model.shape_basis, other.shape_basis)
  assert model.num_shape == 40 and model.num_expression == 10
  assert len(model.shape_names) == 40
  assert model.landmark_uv.shape == (68, 2)
  assert model.extra_uv.shape == (5, 2)
  assert np.all((model.landmark_uv >= 0) & (model.landmark_uv <= 1))


def test_landmark_semantics_in_a_frontal_image(model):
  pts = model.landmarks(_frontal_image_vertices(model))
  left_eye, right_eye = pts[36:42].mean(0), pts[42:48].mean(0)
  assert left_eye[0] < right_eye[0]  # "left" is the image left
  assert pts[0, 0] < pts[8, 0] < pts[16, 0]  # jaw runs left to right
  assert np.argmax(pts[:, 1]) == 8 or pts[8, 1] >= pts[:, 1].max() - 1
  assert np.argmax(pts[:, 2]) == 30  # nose tip is nearest to the camera
  assert pts[27, 1] < pts[30, 1] < pts[51, 1] < pts[57, 1] < pts[8, 1]
  assert pts[48, 0] < pts[51, 0] < pts[54, 0]
  # Brows above the eyes (image y down).
  assert pts[17:22, 1].mean() < left_eye[1]
  # Left-right symmetry of the mean face about the nose (up to the grid's
  # diagonals, which all run one way: well under a pixel).
  mirror = [16 - k for k in range(17)]
  np.testing.assert_allclose(pts[:17, 0] + pts[mirror, 0], 2 * pts[30, 0],
                             atol=0.5)


def test_yaw_sign_shows_the_documented_side(model):
  # Negative yaw turns the face to the image right: the left ear faces the
  # camera (larger z) in the "left view".
  left_view = model.extra_points(_frontal_image_vertices(model, -70))
  assert left_view[1, 2] > left_view[2, 2]
  right_view = model.extra_points(_frontal_image_vertices(model, 70))
  assert right_view[2, 2] > right_view[1, 2]


def test_expressions_move_the_right_landmarks(model):
  neutral = model.landmarks(model.vertices())
  open_mouth = np.zeros(model.num_expression, np.float32)
  open_mouth[model.expression_names.index('mouth_open')] = 1
  lm = model.landmarks(model.vertices(None, open_mouth))
  gap = lambda p: p[62, 1] - p[66, 1]  # model y is up  # noqa: E731
  assert gap(lm) - gap(neutral) > 8  # mm
  closed = np.zeros(model.num_expression, np.float32)
  closed[model.expression_names.index('eye_close')] = 1
  lm = model.landmarks(model.vertices(None, closed))
  lid = lambda p: p[37, 1] - p[41, 1]  # noqa: E731
  assert lid(lm) < 0.5 * lid(neutral)


def test_vertices_position_map_vertices_round_trip(model):
  rng = np.random.default_rng(0)
  vertices = _frontal_image_vertices(
      model, 30, model_lib.sample_shape_coeffs(rng, model),
      model_lib.sample_expression_coeffs(rng, model))
  posmap = model.position_map(vertices, 256)
  assert posmap.shape == (256, 256, 3) and posmap.dtype == np.float32
  back = np.asarray(uv_lib.position_map_to_vertices(posmap, model.uv))
  err = np.abs(back - vertices).max(axis=1)
  # Bilinear sampling between texels is exact to a small fraction of a
  # pixel except at creases; the sharpest is the jaw fold at the face's
  # border, so the tight bound is for the face region away from it.
  face = cv2.erode(model_lib.face_region_mask(256).astype(np.uint8),
                   np.ones((7, 7), np.uint8)).astype(bool)
  texel = np.round(model.uv.astype(np.float64) * 255).astype(int)
  inside = face[texel[:, 1], texel[:, 0]]
  assert inside.sum() > 2000
  assert err[inside].max() < 1.0, err[inside].max()
  assert np.median(err) < 0.05 and np.percentile(err, 99) < 1.5


def test_sample_uv_is_bilinear_differentiable_and_batched():
  uv_map = jnp.arange(4 * 5 * 2, dtype=jnp.float32).reshape(4, 5, 2)
  # uv (0.375, 0.5) is texel (col 1.5, row 1.5): the mean of 4 texels.
  got = uv_lib.sample_uv(uv_map, jnp.array([[0.375, 0.5]]))
  want = (uv_map[1, 1] + uv_map[1, 2] + uv_map[2, 1] + uv_map[2, 2]) / 4
  np.testing.assert_allclose(got[0], want, rtol=1e-6)
  grad = jax.grad(lambda m: uv_lib.sample_uv(m, jnp.array([[0.375, 0.5]]))
                  .sum())(uv_map)
  np.testing.assert_allclose(grad[1:3, 1:3, 0], 0.25)
  assert float(jnp.abs(grad).sum()) == pytest.approx(2.0)
  batch = jnp.stack([uv_map, 2 * uv_map])
  sampled = jax.jit(uv_lib.sample_uv)(batch, jnp.array([[0.375, 0.5]]))
  np.testing.assert_allclose(sampled[1], 2 * sampled[0], rtol=1e-6)
  per_item = jax.vmap(uv_lib.sample_uv)(batch, jnp.stack(
      [jnp.array([[0.0, 0.0]]), jnp.array([[1.0, 1.0]])]))
  np.testing.assert_allclose(per_item[:, 0], [uv_map[0, 0], 2 * uv_map[3, 4]])


def test_weight_mask_has_prnet_ratios(model):
  res = 256
  mask = model_lib.uv_weight_mask(res)
  assert set(np.unique(mask)) == {0.0, 3.0, 4.0, 16.0}
  # float64: a landmark may sit exactly between two texels.
  texel = np.round(model.landmark_uv.astype(np.float64) * (res - 1)).astype(
      int)
  assert len({tuple(t) for t in texel}) == 68
  assert np.all(mask[texel[:, 1], texel[:, 0]] == 16)
  assert np.count_nonzero(mask == 16) == 68

  def weight_at(s, y):
    u, v = model_lib.theta_y_to_uv(s / model_lib.S_SCALE, y)
    return mask[int(round(v * (res - 1))), int(round(u * (res - 1)))]

  assert weight_at(-32, 1.5) == 4       # inside the left eye
  assert weight_at(0, -45) == 4         # nose
  assert weight_at(10, -66) == 4        # lips
  assert weight_at(45, -40) == 3        # cheek
  assert weight_at(0, 60) == 3          # forehead
  assert weight_at(0, -140) == 0        # neck
  ear = model_lib.theta_y_to_uv(np.deg2rad(92), -12)
  assert mask[int(ear[1] * (res - 1)), int(ear[0] * (res - 1))] == 0
  face = model_lib.face_region_mask(res)
  assert np.all(mask[~face] == 0) and np.all(mask[face] > 0)


def _silhouette_of_position_map(posmap):
  """Independent of jaxface's rasterizer: OpenCV fills every grid triangle."""
  res = posmap.shape[0]
  scale = 8  # sub-pixel precision of cv2.fillConvexPoly
  out = np.zeros((res, res), np.uint8)
  pts = np.round((posmap[..., :2]) * scale).astype(np.int32).reshape(-1, 2)
  for tri in uv_lib.grid_triangles(res, res):
    cv2.fillConvexPoly(out, pts[tri], 1, lineType=cv2.LINE_8, shift=3)
  return out.astype(bool)


@pytest.mark.parametrize('yaw', [0, -40, 75])
def test_rendered_silhouette_matches_projected_position_map(model, yaw):
  rng = np.random.default_rng(5)
  res = 64
  pose = np.array([np.deg2rad(10), np.deg2rad(yaw), 0.1, 225, 225, 0, 1.3])
  vertices = model.vertices(model_lib.sample_shape_coeffs(rng, model))
  view = synthetic.render_view(
      model, vertices, np.full((8, 8, 3), 0.5, np.float32), pose,
      render.random_light(rng), np.zeros((res, res, 3), np.float32), None)
  projected = _silhouette_of_position_map(view.position_map)
  iou = np.sum(projected & view.mask) / np.sum(projected | view.mask)
  assert iou > 0.97, iou


@pytest.mark.parametrize('resolution', [64, 256])
def test_landmarks_sampled_from_position_map_match_the_record(resolution):
  gen = synthetic.Generator(synthetic.SynthConfig(resolution=resolution))
  for index in range(3):
    record = records.deserialize(records.serialize(
        'recon', gen.recon('train', index)), kind='recon')
    sampled = np.asarray(uv_lib.sample_uv(record['position_map'],
                                          gen.model.landmark_uv))
    err = np.abs(sampled - record['landmarks']).max(axis=1)
    assert err.max() < 1.0, err.max()  # sub-pixel
    # A half-texel convention error would shift every landmark by ~0.3 px.
    assert np.median(err) < 0.1, np.median(err)
    # The 2D landmarks lie inside the crop for the standard PRNet crop.
    assert np.all(record['landmarks'][:, :2] > -0.1 * resolution)
    assert np.all(record['landmarks'][:, :2] < 1.1 * resolution)
    assert record['position_map'][..., 2].min() == 0.0


def _mean_face_proportions(model, shape_mean):
  """(eye distance in mm, eye midpoint to nose tip / mouth centre / chin
  over it) of the mean face with `shape_mean`'s coefficients."""
  coeffs = model_lib.mean_shape_coeffs(model, shape_mean)
  lmk = model.landmarks(model.vertices(coeffs))[:, :2]
  left, right = (lmk[list(eye)].mean(0) for eye in (model_lib.LEFT_EYE,
                                                   model_lib.RIGHT_EYE))
  iod = np.linalg.norm(left - right)
  mid = (left + right) / 2
  down = [np.linalg.norm(p - mid) / iod for p in
          (lmk[30], lmk[list(model_lib.INNER_LIPS)].mean(0), lmk[8])]
  widths = [np.linalg.norm(lmk[a] - lmk[b]) / iod for a, b in ((36, 39),
                                                               (48, 54))]
  return iod, down + widths


def test_adult_shape_mean_gives_adult_proportions():
  model = model_lib.build_face_model(48, 57)
  iod, down = _mean_face_proportions(model, ())
  assert iod < 58  # the face model's own: eyes too close for adults
  assert down[2] > 2.0
  iod, down = _mean_face_proportions(model, model_lib.ADULT_SHAPE_MEAN)
  assert 61 < iod < 65  # adults' interpupillary distance: about 63 mm
  # AFLW-21's frontal photos (medians): 0.61, 1.06, 1.68 below the eyes;
  # eyes 0.41 and mouth 0.77 wide.
  assert abs(down[0] - 0.61) < 0.03 and abs(down[1] - 1.06) < 0.03
  assert 1.68 < down[2] < 1.85  # the chin: still a little long
  assert 0.37 < down[3] < 0.43 and 0.70 < down[4] < 0.80


def test_shape_mean_shifts_only_its_components():
  model = model_lib.build_face_model(24, 29)
  plain = model_lib.sample_shape_coeffs(np.random.default_rng(5), model)
  shifted = model_lib.sample_shape_coeffs(
      np.random.default_rng(5), model, (('chin', 1.5), ('face_width', -2)))
  expected = plain.copy()
  expected[model.shape_names.index('chin')] += 1.5
  expected[model.shape_names.index('face_width')] -= 2
  np.testing.assert_allclose(shifted, expected, atol=1e-6)
  for bad, message in ((('ears', 1.0),), 'unknown shape component'), (
      (('chin', float('nan')),), 'standard deviations'), (
          (('chin', 7.0),), 'standard deviations'), ((('chin',),), 'pairs'), (
              (('chin', 1.0), ('chin', 1.0)), 'twice'):
    with pytest.raises(ValueError, match=message):
      model_lib.sample_shape_coeffs(np.random.default_rng(5), model, bad)


def test_times_rows_is_the_three_term_product_in_einsum_order():
  rng = np.random.default_rng(3)
  points = rng.normal(size=(500, 3)) * 10.0 ** rng.integers(-3, 4, (500, 1))
  matrix = rng.normal(size=(4, 3))
  got = render.times_rows(points, matrix)
  products = [points[:, k, None] * matrix[None, :, k] for k in range(3)]
  np.testing.assert_array_equal(got, (products[0] + products[2])
                                + products[1])
  np.testing.assert_allclose(got, np.einsum('nk,jk->nj', points, matrix),
                             rtol=1e-13, atol=0)
  np.testing.assert_array_equal(render.times_rows(points, matrix[1]),
                                got[:, 1])
  assert render.times_rows(np.zeros((0, 3)), matrix).shape == (0, 4)
  with pytest.raises(ValueError, match=r'\(N, 3\) points'):
    render.times_rows(points[:, :2], matrix)
  with pytest.raises(ValueError, match=r'\(J, 3\) or \(3,\) matrix'):
    render.times_rows(points, matrix[:, :2])
