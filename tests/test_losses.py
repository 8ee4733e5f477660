"""Tests of jaxface.losses against values worked out by hand."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface import losses
from jaxface.face import features
from jaxface.face import model as model_lib
from jaxface.face import render
from jaxface.face import uv as uv_lib

LOG2 = math.log(2.0)


def _linear_map(res: int, batch: int = 1) -> np.ndarray:
  """Position map x = u (R - 1), y = v (R - 1), z = 0: texel (i, j) = (j, i)."""
  j, i = np.meshgrid(np.arange(res), np.arange(res))
  pm = np.stack([j, i, np.zeros_like(i)], -1).astype(np.float32)
  return np.repeat(pm[None], batch, 0)


@pytest.fixture(scope='module')
def face_map():
  """(1, 64, 64, 3) canonical position map of the mean face, pixels."""
  face_model = model_lib.build_face_model()
  pm = face_model.canonical_position_map(face_model.vertices(), 64)
  return pm[None].astype(np.float32)


# ------------------------------------------------------ position map -------

# 2 x 2 map, weights 16 : 4 : 3 : 0, sum 23. Differences pred - target:
# (0,0): (1, 0, 0), (0,1): (0, 2, 0), (1,0): (0, 0, -1), (1,1): (5, 5, 5).
WEIGHT_2X2 = np.array([[16.0, 4.0], [3.0, 0.0]], np.float32)
DIFF_2X2 = np.array([[[1, 0, 0], [0, 2, 0]], [[0, 0, -1], [5, 5, 5]]],
                    np.float32)


def _pair_2x2():
  target = np.arange(12, dtype=np.float32).reshape(1, 2, 2, 3)
  return target + DIFF_2X2[None], target


def test_position_map_loss_mse_hand_value():
  pred, target = _pair_2x2()
  # sum W err^2 = 16 * 1 + 4 * 4 + 3 * 1 + 0 * 75 = 35; / (23 * 3 * 1) = 69.
  got = losses.position_map_loss(pred, target, WEIGHT_2X2, 'mse', scale=1.0)
  np.testing.assert_allclose(got, 35 / 69, rtol=1e-6)
  # Default scale 1.1 * H = 2.2 divides squared errors by 2.2^2 = 4.84.
  got = losses.position_map_loss(pred, target, WEIGHT_2X2)
  np.testing.assert_allclose(got, 35 / 69 / 4.84, rtol=1e-6)


def test_position_map_loss_l1_hand_value():
  pred, target = _pair_2x2()
  # sum W |err| = 16 * 1 + 4 * 2 + 3 * 1 = 27; / 69.
  got = losses.position_map_loss(pred, target, WEIGHT_2X2, 'l1', scale=1.0)
  np.testing.assert_allclose(got, 27 / 69, rtol=1e-6)
  np.testing.assert_allclose(
      losses.position_map_loss(pred, target, WEIGHT_2X2, 'l1'),
      27 / 69 / 2.2, rtol=1e-6)


def test_position_map_loss_zero_weight_texels_do_not_count():
  pred, target = _pair_2x2()
  base = losses.position_map_loss(pred, target, WEIGHT_2X2, 'mse')
  wild = pred.copy()
  wild[0, 1, 1] = [1e4, -3e3, 7e2]  # The texel of weight 0.
  np.testing.assert_allclose(
      losses.position_map_loss(wild, target, WEIGHT_2X2, 'mse'), base,
      rtol=1e-6)
  # The same texel with a nonzero weight changes the value.
  assert losses.position_map_loss(wild, target, np.ones((2, 2)), 'mse') > 10


def test_position_map_loss_batch_and_weight_mask():
  pred, target = _pair_2x2()
  # Second example exact: the mean over the batch halves the loss.
  pred2 = np.concatenate([pred, target])
  target2 = np.concatenate([target, target])
  got = losses.position_map_loss(pred2, target2, WEIGHT_2X2, 'l1', scale=1.0)
  np.testing.assert_allclose(got, 27 / 138, rtol=1e-6)
  # The model's weight mask has zeros (neck, outside) and 16s (landmarks).
  mask = model_lib.uv_weight_mask(16)
  assert set(np.unique(mask)) <= {0.0, 3.0, 4.0, 16.0} and mask.min() == 0


def test_position_map_loss_kinds_differ_as_squares_vs_abs():
  target = np.zeros((1, 2, 2, 3), np.float32)
  weight = np.ones((2, 2), np.float32)
  # Error 0.5 everywhere: mse = 0.25, l1 = 0.5; error 2: mse 4, l1 2.
  for e, mse, l1 in ((0.5, 0.25, 0.5), (2.0, 4.0, 2.0)):
    pred = target + e
    np.testing.assert_allclose(
        losses.position_map_loss(pred, target, weight, 'mse', 1.0), mse,
        rtol=1e-6)
    np.testing.assert_allclose(
        losses.position_map_loss(pred, target, weight, 'l1', 1.0), l1,
        rtol=1e-6)
  with pytest.raises(ValueError, match='mse'):
    losses.position_map_loss(target, target, weight, 'huber')


def test_position_map_loss_is_resolution_invariant():
  rng = np.random.default_rng(0)
  res = 4
  target = rng.uniform(0, res, (2, res, res, 3)).astype(np.float32)
  pred = target + rng.normal(0, 0.3, target.shape).astype(np.float32)
  weight = rng.choice([0.0, 3.0, 4.0, 16.0], (res, res)).astype(np.float32)
  up = lambda a, axes: np.repeat(np.repeat(a, 2, axes[0]), 2, axes[1])
  # The same faces at twice the resolution: texels repeated, pixel
  # coordinates doubled.
  target2, pred2 = 2 * up(target, (1, 2)), 2 * up(pred, (1, 2))
  weight2 = up(weight, (0, 1))
  for kind in losses.POSITION_KINDS:
    small = losses.position_map_loss(pred, target, weight, kind)
    large = losses.position_map_loss(pred2, target2, weight2, kind)
    assert small > 0
    np.testing.assert_allclose(small, large, rtol=1e-5)


# ---------------------------------------------------------- landmarks ------


def test_landmark_loss_zero_for_true_map_and_hand_value_for_shift():
  res = 16
  pm = _linear_map(res, batch=2)
  lmk_uv = model_lib.landmark_uv()
  true = np.concatenate([lmk_uv * (res - 1), np.zeros((68, 1))], -1)
  true = np.repeat(true[None], 2, 0).astype(np.float32)
  loss = jax.jit(losses.landmark_loss, static_argnames=('kind', 'scale'))
  np.testing.assert_allclose(loss(pm, true, lmk_uv), 0.0, atol=1e-6)
  # Shift every landmark by (3, 4, 0): distance 5 pixels; scale 1.1 * 16.
  shifted = true + np.array([3.0, 4.0, 0.0], np.float32)
  np.testing.assert_allclose(loss(pm, shifted, lmk_uv), 5 / 17.6, rtol=1e-5)
  np.testing.assert_allclose(loss(pm, shifted, lmk_uv, kind='squared'),
                             25 / 17.6**2, rtol=1e-5)
  np.testing.assert_allclose(loss(pm, shifted, lmk_uv, scale=1.0), 5.0,
                             rtol=1e-5)
  # The default UVs are the face model's 68 landmarks.
  np.testing.assert_allclose(losses.landmark_loss(pm, shifted), 5 / 17.6,
                             rtol=1e-5)
  # Finite (zero) gradient at the exact map.
  grad = jax.grad(losses.landmark_loss)(jnp.asarray(pm), true, lmk_uv)
  assert np.all(np.isfinite(grad))
  with pytest.raises(ValueError, match='squared'):
    losses.landmark_loss(pm, true, lmk_uv, kind='l3')


def test_masked_landmark_loss_ignores_invisible_points():
  res = 16
  pm = jnp.asarray(_linear_map(res, batch=2))
  # Two points at texel centres (so each reads one texel), in 2D.
  uv = np.array([[4 / 15, 5 / 15], [10 / 15, 6 / 15]], np.float32)
  true = np.repeat((uv * 15)[None], 2, 0).astype(np.float32)
  target = true + np.array([[3.0, 4.0], [30.0, 40.0]], np.float32)
  target[1, 1] = np.nan  # a hidden point's coordinates can be anything
  visible = np.array([[1, 0], [1, 0]], np.float32)
  loss = losses.landmark_loss(pm, target, uv, visible=visible)
  np.testing.assert_allclose(loss, 5 / 17.6, rtol=1e-5)  # point 0 only
  grad = jax.grad(losses.landmark_loss)(pm, target, uv, visible=visible)
  assert np.all(np.isfinite(grad))
  # No gradient reaches the texel of the hidden point; some reaches the
  # visible one's.
  np.testing.assert_array_equal(grad[:, 6, 10], 0.0)
  assert np.abs(grad[:, 5, 4, :2]).min() > 0
  # Nothing visible: loss 0, no gradient.
  none = losses.landmark_loss(pm, target, uv, visible=np.zeros((2, 2)))
  assert float(none) == 0.0


# -------------------------------------------------------- adversarial ------


def test_adversarial_values_at_known_logits():
  zeros = np.zeros(4, np.float32)
  # BCE at logit 0 is log 2 for either label.
  for kind in ('nonsaturating', 'percentage'):
    np.testing.assert_allclose(
        losses.discriminator_loss(zeros, zeros, kind), 2 * LOG2, rtol=1e-6)
  np.testing.assert_allclose(losses.generator_loss(zeros, 'nonsaturating'),
                             LOG2, rtol=1e-6)
  # Percentage: 1 - sigmoid(0) = 0.5; 1 - sigmoid(log 3) = 1 - 3/4.
  np.testing.assert_allclose(losses.generator_loss(zeros, 'percentage'), 0.5,
                             rtol=1e-6)
  np.testing.assert_allclose(
      losses.generator_loss(np.full(3, math.log(3.0)), 'percentage'), 0.25,
      rtol=1e-6)
  # BCE at logit log 3 with label 1: log(1 + 1/3); label 0: log(1 + 3).
  l3 = np.full(2, math.log(3.0), np.float32)
  np.testing.assert_allclose(
      losses.discriminator_loss(l3, l3, 'nonsaturating'),
      math.log(4 / 3) + math.log(4), rtol=1e-6)
  # LSGAN: real [0, 2] -> ((0-1)^2 + (2-1)^2)/2 = 1; fake [0.5, -1] ->
  # (0.25 + 1)/2 = 0.625. G on fake: ((0.5-1)^2 + (-1-1)^2)/2 = 2.125.
  real, fake = np.array([0.0, 2.0]), np.array([0.5, -1.0])
  np.testing.assert_allclose(losses.discriminator_loss(real, fake, 'lsgan'),
                             1.625, rtol=1e-6)
  np.testing.assert_allclose(losses.generator_loss(fake, 'lsgan'), 2.125,
                             rtol=1e-6)
  # Hinge: real [0.5, 2] -> (0.5 + 0)/2; fake [-2, 0] -> (0 + 1)/2.
  np.testing.assert_allclose(
      losses.discriminator_loss([0.5, 2.0], [-2.0, 0.0], 'hinge'), 0.75,
      rtol=1e-6)
  np.testing.assert_allclose(losses.generator_loss([-2.0, 0.0], 'hinge'), 1.0,
                             rtol=1e-6)


@pytest.mark.parametrize('kind', losses.ADVERSARIAL_KINDS)
def test_generator_loss_decreases_as_fake_logits_grow(kind):
  values = [float(losses.generator_loss(np.full(2, x), kind))
            for x in np.linspace(-3.0, 0.9, 9)]
  assert all(a > b for a, b in zip(values, values[1:])), values
  # The discriminator's loss falls as real logits grow and fake ones fall.
  d = lambda r, f: float(losses.discriminator_loss(np.full(2, r),
                                                   np.full(2, f), kind))
  assert d(0.5, -0.5) < d(0.0, 0.0) < d(-0.5, 0.5)


def test_adversarial_unknown_kind_raises_with_choices():
  with pytest.raises(ValueError, match='lsgan.*nonsaturating.*hinge.*perc'):
    losses.generator_loss(np.zeros(2), 'wasserstein')
  with pytest.raises(ValueError, match='percentage'):
    losses.discriminator_loss(np.zeros(2), np.zeros(2), 'vanilla')


# ------------------------------------------------------------ perceptual ---


def test_perceptual_loss_hand_value_and_zero_for_identical():
  # Layer 1, (1, 2, 2, 1): one texel differs by 2 -> 4 / (2 x 2) = 1.
  # Layer 2, (1, 1, 1, 2): channel differences 1 and 3 -> (1 + 9) / 2 = 5.
  # Layer 3, (2, 2, 2, 2, 1) voxels: every element differs by 1 -> 8 / 8 = 1
  #   per example and channel.
  real = [np.zeros((1, 2, 2, 1)), np.zeros((1, 1, 1, 2)),
          np.zeros((2, 2, 2, 2, 1))]
  fake = [np.zeros((1, 2, 2, 1)), np.array([[[[1.0, 3.0]]]]),
          np.ones((2, 2, 2, 2, 1))]
  fake[0][0, 1, 0, 0] = 2.0
  real = [jnp.asarray(x, jnp.float32) for x in real]
  fake = [jnp.asarray(x, jnp.float32) for x in fake]
  np.testing.assert_allclose(losses.perceptual_loss(real, fake), 7.0,
                             rtol=1e-6)
  assert float(losses.perceptual_loss(fake, fake)) == 0.0
  # bfloat16 maps (the models' compute dtype) give a float32 scalar.
  bf = [x.astype(jnp.bfloat16) for x in fake]
  assert losses.perceptual_loss(real, bf).dtype == jnp.float32
  with pytest.raises(ValueError):
    losses.perceptual_loss(real, fake[:2])


def test_perceptual_loss_gives_no_gradient_to_real_maps():
  real = [jnp.zeros((1, 2, 2, 1)), jnp.zeros((1, 1, 1, 2))]
  fake = [jnp.ones((1, 2, 2, 1)), jnp.asarray([[[[1.0, 3.0]]]])]
  g_real = jax.grad(losses.perceptual_loss, argnums=0)(real, fake)
  g_fake = jax.grad(losses.perceptual_loss, argnums=1)(real, fake)
  for g in g_real:
    np.testing.assert_array_equal(g, 0.0)
  # d/dfake mean((real - fake)^2) = 2 (fake - real) / n: 2 / 4 and
  # (2 / 2, 6 / 2).
  np.testing.assert_allclose(g_fake[0], np.full((1, 2, 2, 1), 0.5))
  np.testing.assert_allclose(g_fake[1], [[[[1.0, 3.0]]]])


# ------------------------------------------------------------- geometry ----

_FLIP = np.diag([1.0, -1.0, 1.0])  # y up <-> y down.


def _reference_views(points: np.ndarray, yaws_deg) -> list[np.ndarray]:
  """Rotates (..., P, 3) y-down points with render.angle2matrix_3ddfa."""
  out = []
  for yaw in yaws_deg:
    rot = _FLIP @ render.angle2matrix_3ddfa(0.0, np.deg2rad(yaw), 0.0) @ _FLIP
    out.append(np.einsum('ij,...pj->...pi', rot, points))
  return out


def _sampled_points(pm: np.ndarray) -> np.ndarray:
  uv = np.concatenate([model_lib.landmark_uv(), model_lib.extra_point_uv()])
  return np.asarray(uv_lib.sample_uv(pm, uv), np.float64)  # (B, 73, 3)


def test_yaw_matrix_matches_3ddfa():
  for yaw in (-1.2, 0.0, 0.3):
    np.testing.assert_allclose(losses.yaw_matrix(yaw),
                               render.angle2matrix_3ddfa(0.0, yaw, 0.0),
                               atol=1e-6)


def test_canonical_views_front_unchanged_sides_rotated(face_map):
  lmk, extra = losses.canonical_views(face_map)
  assert lmk.shape == (3, 1, 68, 3) and extra.shape == (3, 1, 5, 3)
  points = _sampled_points(face_map)
  views = np.concatenate([np.asarray(lmk), np.asarray(extra)], -2)
  # Front view (yaw 0): the points as read off the map.
  np.testing.assert_allclose(views[0], points, atol=1e-4)
  # Left view (yaw -70): the left ear (extra 1) comes towards the camera,
  # in front of the right ear; the right view the other way round.
  ear_left, ear_right = extra[:, 0, 1], extra[:, 0, 2]
  assert ear_left[1, 2] > ear_right[1, 2] + 10
  assert ear_right[2, 2] > ear_left[2, 2] + 10
  # In the left view the nose tip moves to the image right of the left ear
  # and in the right view to the left of the right ear (profiles).
  assert lmk[1, 0, 30, 0] > ear_left[1, 0]
  assert lmk[2, 0, 30, 0] < ear_right[2, 0]
  # A rotation: pairwise distances are kept, y is unchanged, and relative
  # positions match render.angle2matrix_3ddfa (a pivot only translates).
  dist = lambda p: np.linalg.norm(p[:, :, None] - p[:, None], axis=-1)
  for k, ref in enumerate(_reference_views(points, losses.VIEW_YAWS_DEG)):
    np.testing.assert_allclose(dist(views[k]), dist(points), atol=2e-3)
    np.testing.assert_allclose(views[k][..., 1], points[..., 1], atol=1e-4)
    np.testing.assert_allclose(views[k] - views[k][:, :1],
                               ref - ref[:, :1], atol=2e-3)


def test_geometric_consistency_loss(face_map):
  # Target features from the same views, built independently: sample the
  # points, rotate them with 3DDFA's matrix about the origin.
  points = _sampled_points(face_map)
  views = _reference_views(points, losses.VIEW_YAWS_DEG)
  target = features.geometric_features(
      *[a for v in views for a in (v[:, :68], v[:, 68:])])
  assert target.shape == (1, features.NUM_FEATURES)
  loss_fn = jax.jit(losses.geometric_consistency_loss)
  assert float(loss_fn(face_map, target)) < 1e-8
  # Stretching the face sideways changes its proportions.
  centre = np.array([31.5, 0.0, 0.0], np.float32)
  wide = (face_map - centre) * np.array([1.2, 1.0, 1.0], np.float32) + centre
  assert float(loss_fn(wide, target)) > 1e-4
  grad = jax.jit(jax.grad(losses.geometric_consistency_loss))(
      jnp.asarray(wide), target)
  assert np.all(np.isfinite(grad)) and np.any(grad != 0)
  # Views at other yaws (as the input photos have) change the side areas
  # only a little: the loss stays small but is no longer 0.
  near = losses.geometric_consistency_loss(face_map, target, (4, -64, 75))
  assert 0 < float(near) < float(loss_fn(wide, target))


# --------------------------------------------------------------- voxels ----


def test_voxelize_flat_plane_fills_behind_it():
  # R = 8 map, V = 4: voxels of 2 pixels. Plane z = 5 at x = col + 4,
  # y = row: x in [4, 11], only x in [4, 8) is in the cube: voxel columns
  # j = 2, 3; all rows i = 0..3; surface voxel floor(5 / 2) = 2, so depths
  # k = 0, 1, 2 are filled: 2 x 4 x 3 = 24 voxels.
  pm = _linear_map(8) + np.array([4.0, 0.0, 5.0], np.float32)
  voxelize = jax.jit(losses.voxelize_position_map, static_argnums=1)
  occ = np.asarray(voxelize(pm, 4))
  assert occ.shape == (1, 4, 4, 4) and occ.dtype == np.float32
  assert set(np.unique(occ)) == {0.0, 1.0}
  assert occ.sum() == 24
  expected = np.zeros((4, 4, 4))
  expected[0:3, :, 2:4] = 1.0  # Axes (z, y, x).
  np.testing.assert_array_equal(occ[0], expected)


def test_voxelize_tilted_plane_uses_column_max():
  # z = x on a full 8 x 8 map, V = 4: column j holds x = 2j, 2j + 1, so its
  # deepest texel z = 2j + 1 lies in voxel j: k <= j filled, 1 + 2 + 3 + 4
  # = 10 voxels per row, 4 rows: 40.
  pm = _linear_map(8)
  pm[..., 2] = pm[..., 0]
  occ = np.asarray(losses.voxelize_position_map(pm, 4))
  assert occ.sum() == 40
  for j in range(4):
    np.testing.assert_array_equal(occ[0, :, 1, j], [1.0] * (j + 1)
                                  + [0.0] * (3 - j))
  # A mask keeps only the texels it selects: rows 0-1 (voxel row 0).
  mask = np.zeros((8, 8), bool)
  mask[:2] = True
  assert losses.voxelize_position_map(pm, 4, mask=mask).sum() == 10


def test_voxel_loss_hand_value():
  # BCE: logit 0, label 1 -> log 2; logit 2, label 0 -> log(1 + e^2);
  # logit -1, label 0 -> log(1 + e^-1); logit 3, label 1 -> log(1 + e^-3).
  logits = np.array([0.0, 2.0, -1.0, 3.0], np.float32).reshape(1, 1, 2, 2, 1)
  occ = np.array([1.0, 0.0, 0.0, 1.0], np.float32).reshape(1, 1, 2, 2)
  want = (LOG2 + math.log1p(math.e**2) + math.log1p(math.e**-1)
          + math.log1p(math.e**-3)) / 4
  np.testing.assert_allclose(losses.voxel_loss(logits, occ), want, rtol=1e-6)
  np.testing.assert_allclose(losses.voxel_loss(logits[..., 0], occ), want,
                             rtol=1e-6)
  with pytest.raises(ValueError):
    losses.voxel_loss(logits, occ[:, :, :1])


def test_voxel_targets_of_a_face_fit_the_generator_head(face_map):
  occ = losses.voxelize_position_map(face_map, 16)
  assert occ.shape == (1, 16, 16, 16)
  # The face's front fills part of the cube; the back slice (z = 0) is
  # filled wherever a column is covered, and the filling is monotone in z.
  frac = float(occ.mean())
  assert 0.05 < frac < 0.9
  assert np.all(np.diff(np.asarray(occ), axis=1) <= 0)

