"""Tests of jaxface.face.features against hand-computed configurations."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface.face import features

EXTRA = {name: i for i, name in enumerate(features.EXTRA_POINT_NAMES)}
# Offsets of the 6 eye landmarks around the eye centre; they sum to 0.
EYE_OFFSETS = np.array([[-1.0, 0.0], [-0.5, -0.5], [0.5, -0.5], [1.0, 0.0],
                        [0.5, 0.5], [-0.5, 0.5]])


def _view(points: dict[str, tuple[float, float]], seed: int):
  """(68, 2) landmarks and (5, 2) extras; unnamed points are far-away junk.

  Junk sits at x, y in [500, 900) so that reading a wrong landmark (e.g. the
  other side's eye in a side view) changes the result a lot.
  """
  rng = np.random.default_rng(seed)
  lm = rng.uniform(500, 900, (68, 2))
  ex = rng.uniform(500, 900, (5, 2))
  index = {"nasion": 27, "nose_tip": 30, "mouth_left": 48, "lip_upper": 51,
           "mouth_right": 54, "lip_lower": 57}
  for name, xy in points.items():
    if name == "eye_left":
      lm[36:42] = np.asarray(xy) + EYE_OFFSETS
    elif name == "eye_right":
      lm[42:48] = np.asarray(xy) + EYE_OFFSETS
    elif name in index:
      lm[index[name]] = xy
    else:
      ex[EXTRA[name]] = xy
  return lm.astype(np.float32), ex.astype(np.float32)


# Front view: inter-ocular distance 4 (eyes at x = 0 and x = 4 on y = 0).
FRONT = _view({
    "eye_left": (0, 0), "eye_right": (4, 0), "glabella": (2, -2),
    "nose_tip": (2, 3), "nasion": (2, 0), "mouth_left": (0, 6),
    "mouth_right": (4, 6), "lip_upper": (1, 5), "lip_lower": (2, 8),
    "ear_left": (-3, 0), "ear_right": (8, 0), "head_left": (-3, -5),
    "head_right": (8, -5)}, seed=0)
IOD = 4.0
FRONT_DISTANCES = {
    "eye_forehead_left": math.sqrt(2**2 + 2**2) / IOD,
    "eye_forehead_right": math.sqrt(2**2 + 2**2) / IOD,
    "eye_nose_left": math.sqrt(2**2 + 3**2) / IOD,
    "eye_nose_right": math.sqrt(2**2 + 3**2) / IOD,
    "nose_mouth": math.sqrt(1**2 + 2**2) / IOD,
    "eye_mouth_left": 6 / IOD,
    "eye_mouth_right": 6 / IOD,
    "eye_ear_left": 3 / IOD,
    "eye_ear_right": 4 / IOD,
}
FRONT_AREAS = {
    # Base on y = 0 from ear (-3) to eye (0): 3, glabella height 2.
    "FR1": 0.5 * 3 * 2 / IOD**2,
    # Base eye-eye 4, glabella height 2.
    "FR2": 0.5 * 4 * 2 / IOD**2,
    # Base eye (4) to ear (8): 4, glabella height 2.
    "FR3": 0.5 * 4 * 2 / IOD**2,
    # Base 3, nose height 3.
    "FR4": 0.5 * 3 * 3 / IOD**2,
    # Base 4, nose height 3.
    "FR5": 0.5 * 4 * 3 / IOD**2,
    # Base 4, nose height 3.
    "FR6": 0.5 * 4 * 3 / IOD**2,
    # From the ear (-3, 0): nose - ear = (5, 3), mouth - ear = (3, 6);
    # cross = 5 * 6 - 3 * 3 = 21.
    "FR7": 0.5 * 21 / IOD**2,
    # Dart = triangle (mouth corners, nose): base 4, height 6 - 3 = 3, minus
    # triangle (mouth corners, lip top (1, 5)): base 4, height 6 - 5 = 1.
    # (The order corner, nose, lip top, corner would give 2.5 instead.)
    "FR8": (0.5 * 4 * 3 - 0.5 * 4 * 1) / IOD**2,
    # From the nose (2, 3): mouth - nose = (2, 3), ear - nose = (6, -3);
    # cross = 2 * -3 - 3 * 6 = -24.
    "FR9": 0.5 * 24 / IOD**2,
    # Base mouth corners 4 on y = 6, lower-lip bottom 2 below.
    "FR10": 0.5 * 4 * 2 / IOD**2,
}

# Left view: ear-to-eye distance 10 (ear (0, 0), eye (10, 0)).
# IP1: on y = 0 at the nasion's x = 12 -> (12, 0).
# IP2: on the ear-mouth line y = x / 2 at x = 12 -> (12, 6).
LEFT = _view({
    "ear_left": (0, 0), "eye_left": (10, 0), "nasion": (12, -1),
    "mouth_left": (10, 5), "head_left": (-2, -8), "nose_tip": (11, 4),
    "lip_lower": (9, 8)},
             seed=1)
LEFT_IP = ((12, 0), (12, 6))
LEFT_AREAS = {
    # Eye (10, 0) to IP1 (12, 0): base 2; head 8 above.
    "LS1": 0.5 * 2 * 8 / 10**2,
    # Eye (10,0), nose (11,4), IP2 (12,6), IP1 (12,0), in angular order eye
    # IP1 IP2 nose: triangle eye IP1 IP2 (base 6 on x = 12, height 2) = 6,
    # plus triangle eye nose IP2 with nose - eye = (1, 4),
    # IP2 - eye = (2, 6): cross 1 * 6 - 4 * 2 = -2 -> 1.
    "LS2": (6 + 1) / 10**2,
    # From the mouth (10, 5): nose - mouth = (1, -1), IP2 - mouth = (2, 1);
    # cross = 1 * 1 - (-1) * 2 = 3.
    "LS3": 0.5 * 3 / 10**2,
    # Ear (0, 0) to IP1 (12, 0): base 12; head 8 above.
    "LS4": 0.5 * 12 * 8 / 10**2,
    # Base 12 on y = 0, IP2 6 below IP1.
    "LS5": 0.5 * 12 * 6 / 10**2,
    # Ear (0, 0), lower-lip bottom (9, 8), IP2 (12, 6):
    # cross = 9 * 6 - 8 * 12 = -42 -> 21.
    "LS6": 0.5 * 42 / 10**2,
}

# Right view (mirrored side): ear-to-eye distance 5 (ear (0, 0), eye (-5, 0)).
# IP1: on y = 0 at x = -6 -> (-6, 0). IP2: on the line y = -x at x = -6 ->
# (-6, 6).
RIGHT = _view({
    "ear_right": (0, 0), "eye_right": (-5, 0), "nasion": (-6, -1),
    "mouth_right": (-4, 4), "head_right": (2, -4), "nose_tip": (-5, 4),
    "lip_lower": (-3, 7)},
              seed=2)
RIGHT_IP = ((-6, 0), (-6, 6))
RIGHT_AREAS = {
    # Eye (-5, 0) to IP1 (-6, 0): base 1; head 4 above.
    "RS1": 0.5 * 1 * 4 / 5**2,
    # Trapezoid with vertical sides x = -5 (eye to nose, length 4) and
    # x = -6 (IP1 to IP2, length 6), width 1: (4 + 6) / 2 * 1.
    "RS2": (4 + 6) / 2 * 1 / 5**2,
    # Nose (-5, 4) to mouth (-4, 4): base 1; IP2 2 below.
    "RS3": 0.5 * 1 * 2 / 5**2,
    # Ear (0, 0) to IP1 (-6, 0): base 6; head 4 above.
    "RS4": 0.5 * 6 * 4 / 5**2,
    # Base 6 on y = 0, IP2 6 below IP1.
    "RS5": 0.5 * 6 * 6 / 5**2,
    # Ear (0, 0), lower-lip bottom (-3, 7), IP2 (-6, 6):
    # cross = -3 * 6 - 7 * -6 = 24 -> 12.
    "RS6": 0.5 * 24 / 5**2,
}

EXPECTED = {**FRONT_DISTANCES, **FRONT_AREAS, **LEFT_AREAS, **RIGHT_AREAS}
VIEWS = (*FRONT, *LEFT, *RIGHT)


def _rotate(points, angle, centre, scale=1.0, shift=(0.0, 0.0)):
  c, s = math.cos(angle), math.sin(angle)
  rot = np.array([[c, -s], [s, c]])
  out = (points[..., :2] - centre) @ rot.T * scale + centre + shift
  return out.astype(np.float32)


def _perturbed_views(seed=3):
  """The hand views with small noise on every point (a generic face)."""
  rng = np.random.default_rng(seed)
  return tuple((v + rng.normal(0, 0.3, v.shape)).astype(np.float32)
               for v in VIEWS)


def test_feature_names():
  names = features.FEATURE_NAMES
  assert len(names) == features.NUM_FEATURES == 31
  assert len(set(names)) == 31
  assert names[:9] == tuple(FRONT_DISTANCES)
  assert names[9:] == (tuple(FRONT_AREAS) + tuple(LEFT_AREAS)
                       + tuple(RIGHT_AREAS))
  assert not any("eye_eye" in n for n in names)


def test_polygon_area_by_hand():
  # Triangle with base 4 and height 3 -> 6; unit-free order independence.
  tri = jnp.array([[1.0, 1.0], [5.0, 1.0], [2.0, 4.0]])
  np.testing.assert_allclose(features.polygon_area(tri), 6.0)
  np.testing.assert_allclose(features.polygon_area(tri[::-1]), 6.0)
  # Rectangle 3 x 2 given clockwise in image coordinates -> 6.
  rect = jnp.array([[0.0, 0.0], [3.0, 0.0], [3.0, 2.0], [0.0, 2.0]])
  np.testing.assert_allclose(features.polygon_area(rect), 6.0)
  # Far from the origin float32 must keep the small area exact.
  np.testing.assert_allclose(features.polygon_area(rect + 1e4), 6.0)
  # Depth ignored.
  rect3 = jnp.concatenate([rect, jnp.array([[0.0], [9.0], [1.0], [5.0]])], 1)
  np.testing.assert_allclose(features.polygon_area(rect3), 6.0)


def test_front_features_by_hand():
  d = features.geometric_feature_dict(*VIEWS)
  for name in list(FRONT_DISTANCES) + list(FRONT_AREAS):
    np.testing.assert_allclose(d[name], EXPECTED[name], rtol=1e-6,
                               atol=1e-7, err_msg=name)
  np.testing.assert_allclose(d["eye_eye_px"], 4.0, rtol=1e-6)


@pytest.mark.parametrize("side, view, ips, areas", [
    ("left", LEFT, LEFT_IP, LEFT_AREAS),
    ("right", RIGHT, RIGHT_IP, RIGHT_AREAS),
])
def test_side_features_by_hand(side, view, ips, areas):
  ip1, ip2 = features.imaginary_points(*view, side=side)
  np.testing.assert_allclose(ip1, ips[0], atol=1e-5)
  np.testing.assert_allclose(ip2, ips[1], atol=1e-5)
  for vertical in ("image", "ear_eye"):  # Same for a horizontal ear-eye line.
    got = features.side_areas(*view, side=side, vertical=vertical)
    assert set(got) == set(areas)
    for name, value in areas.items():
      np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6,
                                 err_msg=f"{name} {vertical}")


def test_imaginary_points_ear_eye_projection():
  # Ear (0, 0), eye (3, 4): IP1 = projection of the nasion (4, 3) on the
  # ear-eye line: t = (4 * 3 + 3 * 4) / 25 = 24 / 25 -> (2.88, 3.84).
  # IP2 = s * mouth with mouth (7, 1) and the same coordinate along (3, 4)
  # as IP1 (24): s * (7 * 3 + 1 * 4) = 24 -> s = 24 / 25.
  lm, ex = _view({"ear_left": (0, 0), "eye_left": (3, 4),
                  "nasion": (4, 3), "mouth_left": (7, 1)}, seed=4)
  ip1, ip2 = features.imaginary_points(lm, ex, "left", vertical="ear_eye")
  np.testing.assert_allclose(ip1, [2.88, 3.84], atol=1e-5)
  np.testing.assert_allclose(ip2, [7 * 24 / 25, 1 * 24 / 25], atol=1e-5)
  # Image construction: IP1 at x = 4 on the line y = 4x/3 -> (4, 16/3);
  # IP2 at x = 4 on y = x/7 -> (4, 4/7).
  ip1, ip2 = features.imaginary_points(lm, ex, "left", vertical="image")
  np.testing.assert_allclose(ip1, [4, 16 / 3], atol=1e-5)
  np.testing.assert_allclose(ip2, [4, 4 / 7], atol=1e-5)


def test_vector_is_hand_values_in_feature_order():
  vec = features.geometric_features(*VIEWS)
  assert vec.shape == (31,) and vec.dtype == jnp.float32
  expected = np.array([EXPECTED[n] for n in features.FEATURE_NAMES])
  np.testing.assert_allclose(vec, expected, rtol=1e-5, atol=1e-6)


def test_depth_is_ignored():
  rng = np.random.default_rng(5)
  views3 = [np.concatenate([v, rng.uniform(-50, 50, v.shape[:-1] + (1,))],
                           -1).astype(np.float32) for v in VIEWS]
  np.testing.assert_allclose(features.geometric_features(*views3),
                             features.geometric_features(*VIEWS),
                             rtol=1e-6, atol=1e-7)


def test_scale_and_translation_invariance():
  views = _perturbed_views()
  base = features.geometric_features(*views)
  shifts = [(13.0, -7.0), (13.0, -7.0), (250.0, 40.0), (250.0, 40.0),
            (-90.0, 311.0), (-90.0, 311.0)]
  moved = [(v * 2.7 + np.array(s)).astype(np.float32)
           for v, s in zip(views, shifts)]
  np.testing.assert_allclose(features.geometric_features(*moved), base,
                             rtol=1e-4, atol=1e-5)
  # The raw inter-ocular distance, by contrast, scales.
  np.testing.assert_allclose(
      features.geometric_feature_dict(*moved)["eye_eye_px"],
      2.7 * features.geometric_feature_dict(*views)["eye_eye_px"], rtol=1e-5)


def _rotated_views(views):
  # Each view (landmarks, extras) rotated about its own centre and scaled.
  params = [(0.4, (3.0, 2.0)), (-0.7, (10.0, 0.0)), (1.1, (-5.0, 5.0))]
  out = []
  for k, (angle, centre) in enumerate(params):
    for v in views[2 * k:2 * k + 2]:
      out.append(_rotate(v, angle, np.array(centre), scale=1.3,
                         shift=(20.0, -4.0)))
  return out


def test_rotation_invariance_front_and_ear_eye_sides():
  views = _perturbed_views()
  rotated = _rotated_views(views)
  n_front = 19  # 9 distances + 10 areas.
  np.testing.assert_allclose(
      features.geometric_features(*rotated)[:n_front],
      features.geometric_features(*views)[:n_front], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(
      features.geometric_features(*rotated, vertical="ear_eye"),
      features.geometric_features(*views, vertical="ear_eye"),
      rtol=1e-4, atol=1e-5)


def test_image_vertical_sides_depend_on_image_vertical():
  # The image construction measures along image x by definition, so rotating
  # a side view moves IP1 and IP2 (documented in the module docstring).
  views = _perturbed_views()
  rotated = _rotated_views(views)
  side = slice(19, 31)
  diff = np.abs(features.geometric_features(*rotated)[side]
                - features.geometric_features(*views)[side])
  assert diff.max() > 1e-2


def _sum_grads(views, vertical="image"):
  grad = jax.grad(lambda *v: jnp.sum(features.geometric_features(
      *v, vertical=vertical)), argnums=tuple(range(6)))
  return grad(*[jnp.asarray(v) for v in views])


@pytest.mark.parametrize("vertical", ["image", "ear_eye"])
def test_gradients_finite(vertical):
  grads = _sum_grads(_perturbed_views(), vertical)
  for g in grads:
    assert np.all(np.isfinite(g))
  # Landmarks that matter get a gradient; e.g. the nose tip of the front view.
  assert np.abs(grads[0][30]).sum() > 0


@pytest.mark.parametrize("vertical", ["image", "ear_eye"])
def test_vertical_lines_finite(vertical):
  # Left view: eye straight above the ear (ear-eye line vertical) and the
  # mouth corner straight below it (ear-mouth line vertical too).
  left = _view({"ear_left": (10, 10), "eye_left": (10, 0),
                "nasion": (14, 2), "mouth_left": (10, 20),
                "head_left": (0, 0), "nose_tip": (15, 8),
                "lip_lower": (12, 23)}, seed=6)
  # Right view: only the ear-mouth line vertical.
  right = _view({"ear_right": (0, 0), "eye_right": (-5, 0),
                 "nasion": (-6, -1), "mouth_right": (0, 6),
                 "head_right": (2, -4), "nose_tip": (-5, 4),
                 "lip_lower": (-2, 8)}, seed=7)
  views = (*FRONT, *left, *right)
  vec = features.geometric_features(*views, vertical=vertical)
  assert np.all(np.isfinite(vec))
  for g in _sum_grads(views, vertical):
    assert np.all(np.isfinite(g))
    # Bounded, not merely finite: the guard's ramp has slope ~1e4 / (line
    # length in px), where a 1e-12 floor alone would give ~1e12.
    assert np.abs(g).max() < 1e5
  if vertical == "image":
    # Documented limit: with an exactly vertical line the point is the ear.
    ip1, _ = features.imaginary_points(*left, side="left")
    np.testing.assert_allclose(ip1, [10, 10], atol=1e-5)
    _, ip2 = features.imaginary_points(*right, side="right")
    np.testing.assert_allclose(ip2, [0, 0], atol=1e-5)


def test_jit_vmap_and_leading_dims():
  a = _perturbed_views(3)
  b = _perturbed_views(4)
  eager = np.stack([features.geometric_features(*a),
                    features.geometric_features(*b)])
  batch = [np.stack([x, y]) for x, y in zip(a, b)]
  jitted = jax.jit(features.geometric_features, static_argnames="vertical")
  np.testing.assert_allclose(jitted(*batch), eager, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jax.vmap(features.geometric_features)(*batch),
                             eager, rtol=1e-5, atol=1e-6)
  # Two leading dims, and a front view broadcast against batched side views.
  deep = [np.stack([x, x]) for x in batch]  # (2, 2, ...)
  out = features.geometric_features(*deep)
  assert out.shape == (2, 2, 31)
  np.testing.assert_allclose(out[1], eager, rtol=1e-5, atol=1e-6)
  mixed = features.geometric_features(a[0], a[1], *batch[2:])
  assert mixed.shape == (2, 31)
  np.testing.assert_allclose(mixed[0], eager[0], rtol=1e-5, atol=1e-6)
  d = jax.jit(features.geometric_feature_dict)(*batch)
  assert set(d) == set(features.FEATURE_NAMES) | {"eye_eye_px"}
  assert d["FR1"].shape == (2,)


def test_bad_inputs_raise():
  lm, ex = FRONT
  with pytest.raises(ValueError, match="landmarks"):
    features.feature_points(lm[:67], ex)
  with pytest.raises(ValueError, match="extra"):
    features.feature_points(lm, ex[:4])
  with pytest.raises(ValueError, match="landmarks"):
    features.feature_points(np.zeros((68, 4)), ex)
  with pytest.raises(ValueError, match="side"):
    features.side_areas(lm, ex, side="up")
  with pytest.raises(ValueError, match="vertical"):
    features.imaginary_points(lm, ex, side="left", vertical="diagonal")


def test_side_quadrilateral_that_would_cross_itself_is_taken_simple():
  # A real profile: the nose tip (14, 3) lies beyond IP1 (12, 0), so the
  # listed order eye, nose, IP2, IP1 crosses itself. In angular order it is
  # the convex quadrilateral eye (10, 0), IP1 (12, 0), nose (14, 3),
  # IP2 (12, 6): triangles eye IP1 IP2 (base 6 on x = 12, height 2) = 6 and
  # IP1 nose IP2 (base 6, height 2) = 6, so 12 in all.
  view = _view({
      "ear_left": (0, 0), "eye_left": (10, 0), "nasion": (12, -1),
      "mouth_left": (10, 5), "head_left": (-2, -8), "nose_tip": (14, 3),
      "lip_lower": (9, 8)}, seed=3)
  areas = features.side_areas(*view, side="left")
  np.testing.assert_allclose(float(areas["LS2"]), 12 / 10**2, rtol=1e-5)


def test_normalised_landmarks_by_hand():
  # 34 points at (10, 20) and 34 at (12, 28): mean (11, 24), box 2 x 8,
  # sqrt(w h) = 4.
  xy = np.array([[10.0, 20.0]] * 34 + [[12.0, 28.0]] * 34)
  depth = np.zeros((68, 1))  # ignored
  got = np.asarray(features.normalised_landmarks(
      np.concatenate([xy, depth], 1)[None]))
  assert got.shape == (1, 136)
  want = np.array([[-0.25, -1.0]] * 34 + [[0.25, 1.0]] * 34).reshape(-1)
  np.testing.assert_allclose(got[0], want, rtol=1e-6)
  # Free of the view's position and scale.
  moved = np.asarray(features.normalised_landmarks(xy * 3 + [5, -7]))
  np.testing.assert_allclose(moved, got[0], rtol=1e-5, atol=1e-6)

