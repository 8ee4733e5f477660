"""Geometric face features of the first seed: distances and areas.

The first seed measures a face by Euclidean distances between named points of
a front view and by the areas of small regions of a front, a left and a right
view (SPEC.md, "First seed: geometric features"). Everything here is jnp,
differentiable, float32 and works under jit / vmap; all functions accept
arbitrary leading (batch) dims, written `...` below.

Conventions:
- Landmarks are the iBUG 68 points, 0-based, as an array (..., 68, D) with
  D = 2 or 3, in image pixels (x right, y down). A third coordinate (depth)
  is ignored: every distance and area is of the 2D projection in its view.
- Extra points come as (..., 5, D) in the order `EXTRA_POINT_NAMES`.
- "left" is the side that appears on the image left in a frontal photo (the
  iBUG side of points 0, 17-21, 36-41, 48); "right" is the other. The left
  view is the photo in which the left side faces the camera.

Feature vector (`FEATURE_NAMES`, F = 31 values, in this order):
- 9 front distances divided by the front inter-ocular distance (IOD, the
  distance between the two eye centres): eye_forehead_{left,right} (eye
  centre to glabella), eye_nose_{left,right} (eye centre to nose tip),
  nose_mouth (nose tip to upper-lip top), eye_mouth_{left,right} (eye centre
  to the same-side mouth corner), eye_ear_{left,right} (eye centre to the
  same-side ear). Eye-eye would be identically 1 after this normalisation, so
  it is not in the vector; `geometric_feature_dict` returns it raw, in
  pixels, as "eye_eye_px".
- FR1-FR10: front areas divided by IOD^2.
- LS1-LS6: left-view areas divided by the squared left ear to left eye
  distance in the left view; RS1-RS6 likewise for the right view (the two
  eyes are not both visible in a side view).
These normalisations make the vector invariant to scale and translation of
each view, and the front part to in-plane rotation too. The side areas are
rotation invariant only with `vertical="ear_eye"` (see `imaginary_points`):
the default construction refers to the image's vertical by definition.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EXTRA_POINT_NAMES = ("glabella", "ear_left", "ear_right", "head_left",
                     "head_right")

# iBUG 68, 0-based.
LEFT_EYE = tuple(range(36, 42))
RIGHT_EYE = tuple(range(42, 48))
NASION = 27  # Deepest point of the nose bridge.
NOSE_TIP = 30
MOUTH_LEFT = 48
LIP_UPPER = 51  # Top of the upper lip.
MOUTH_RIGHT = 54
LIP_LOWER = 57  # Bottom of the lower lip.

POINT_NAMES = ("eye_left", "eye_right", "glabella", "nose_tip", "nasion",
               "mouth_left", "mouth_right", "lip_upper", "lip_lower",
               "ear_left", "ear_right", "head_left", "head_right")

# (name, from point, to point); divided by the front IOD.
_FRONT_DISTANCES = (
    ("eye_forehead_left", "eye_left", "glabella"),
    ("eye_forehead_right", "eye_right", "glabella"),
    ("eye_nose_left", "eye_left", "nose_tip"),
    ("eye_nose_right", "eye_right", "nose_tip"),
    ("nose_mouth", "nose_tip", "lip_upper"),
    ("eye_mouth_left", "eye_left", "mouth_left"),
    ("eye_mouth_right", "eye_right", "mouth_right"),
    ("eye_ear_left", "eye_left", "ear_left"),
    ("eye_ear_right", "eye_right", "ear_right"),
)

# Polygons in boundary order. FR8 is a dart (concave) for a normal face, whose
# upper-lip top lies inside the triangle mouth corners + nose tip; it is the
# region between the nose and the upper lip. FR10 is SPEC.md's reading of the
# paper's repeated-point list: the lower-lip triangle.
_FRONT_POLYGONS = (
    ("FR1", ("eye_left", "glabella", "ear_left")),
    ("FR2", ("eye_left", "eye_right", "glabella")),
    ("FR3", ("eye_right", "glabella", "ear_right")),
    ("FR4", ("eye_left", "nose_tip", "ear_left")),
    ("FR5", ("eye_left", "eye_right", "nose_tip")),
    ("FR6", ("eye_right", "nose_tip", "ear_right")),
    ("FR7", ("ear_left", "nose_tip", "mouth_left")),
    ("FR8", ("mouth_left", "nose_tip", "mouth_right", "lip_upper")),
    ("FR9", ("mouth_right", "nose_tip", "ear_right")),
    ("FR10", ("mouth_left", "lip_lower", "mouth_right")),
)

# Side-view polygons; "eye", "ear", "head", "mouth" are the points of the
# view's side, "nose" the nose tip, "ip1"/"ip2" the imaginary points.
_SIDE_POLYGONS = (
    ("eye", "head", "ip1"),
    ("eye", "nose", "ip2", "ip1"),
    ("nose", "mouth", "ip2"),
    ("ear", "head", "ip1"),
    ("ear", "ip1", "ip2"),
    ("ear", "lip_lower", "ip2"),
)

DISTANCE_NAMES = tuple(name for name, _, _ in _FRONT_DISTANCES)
FRONT_AREA_NAMES = tuple(name for name, _ in _FRONT_POLYGONS)
LEFT_AREA_NAMES = tuple(f"LS{i}" for i in range(1, 7))
RIGHT_AREA_NAMES = tuple(f"RS{i}" for i in range(1, 7))
FEATURE_NAMES = (DISTANCE_NAMES + FRONT_AREA_NAMES + LEFT_AREA_NAMES
                 + RIGHT_AREA_NAMES)
NUM_FEATURES = len(FEATURE_NAMES)

VERTICALS = ("image", "ear_eye")

# Floor of squared lengths (pixels^2): only degenerate inputs reach it.
_TINY = 1e-12
# Relative guard of the imaginary-point divisions: a line closer to the
# vertical than about this many radians counts as vertical.
_VERTICAL_EPS = 1e-2


def _points(x, count: int, what: str) -> jax.Array:
  x = jnp.asarray(x, jnp.float32)
  if x.ndim < 2 or x.shape[-2] != count or x.shape[-1] not in (2, 3):
    raise ValueError(
        f"{what} must have shape (..., {count}, 2 or 3), got {x.shape}.")
  return x


def _safe_norm(v: jax.Array) -> jax.Array:
  """(..., D) -> (...) Euclidean norm with a finite gradient at 0."""
  sq = jnp.sum(v * v, axis=-1)
  safe = sq > _TINY
  return jnp.where(safe, jnp.sqrt(jnp.where(safe, sq, 1.0)), 0.0)


def _safe_ratio(num: jax.Array, den: jax.Array, den_bound_sq: jax.Array
                ) -> jax.Array:
  """num / den, with den replaced by +-eps where |den| < eps.

  Written as num * den / max(den^2, eps^2): exact for |den| >= eps, linear
  through 0 below (so the value and its gradient stay finite and continuous).
  `den_bound_sq` is an upper bound of den^2 (product of squared lengths), so
  eps scales with the input and the guard is scale invariant.
  """
  eps_sq = _VERTICAL_EPS**2 * den_bound_sq + _TINY
  return num * den / jnp.maximum(den * den, eps_sq)


def polygon_area(vertices) -> jax.Array:
  """Unsigned shoelace area of polygons given in boundary order.

  Args:
    vertices: (..., K, D) polygon corners in boundary order (K >= 3), D >= 2;
      only the first two coordinates are used.

  Returns:
    (...) area in squared input units. For a self-intersecting polygon this
    is |signed sum of its lobes|, as the shoelace formula gives.
  """
  xy = jnp.asarray(vertices, jnp.float32)[..., :2]
  # Relative to the first corner: exact for translated inputs in float32.
  xy = xy - xy[..., :1, :]
  x, y = xy[..., 0], xy[..., 1]
  x_next = jnp.roll(x, -1, axis=-1)
  y_next = jnp.roll(y, -1, axis=-1)
  return 0.5 * jnp.abs(jnp.sum(x * y_next - x_next * y, axis=-1))


def _angular_order(poly) -> jax.Array:
  """(..., K, 2) corners sorted by angle around their centroid: a simple
  (star-shaped) polygon through them. Gradients flow through the corners."""
  centred = poly - jnp.mean(poly, axis=-2, keepdims=True)
  angle = jnp.arctan2(centred[..., 1], centred[..., 0])
  order = jax.lax.stop_gradient(jnp.argsort(angle, axis=-1))
  return jnp.take_along_axis(poly, order[..., None], axis=-2)


def feature_points(landmarks, extra) -> dict[str, jax.Array]:
  """Named feature points of one view.

  Args:
    landmarks: (..., 68, D) iBUG landmarks in pixels, D = 2 or 3.
    extra: (..., 5, D) extra points in the order `EXTRA_POINT_NAMES`.

  Returns:
    dict name -> (..., D) float32 point for every name in `POINT_NAMES`:
    eye_{left,right} = mean of landmarks 36-41 / 42-47; nose_tip = 30;
    nasion = 27 (deepest point of the nose bridge); mouth_{left,right} =
    48 / 54; lip_upper = 51; lip_lower = 57; glabella, ear_*, head_* from
    `extra`. Leading dims of the two inputs must broadcast.
  """
  lm = _points(landmarks, 68, "landmarks")
  ex = _points(extra, 5, "extra")
  out = {
      "eye_left": jnp.mean(lm[..., LEFT_EYE, :], axis=-2),
      "eye_right": jnp.mean(lm[..., RIGHT_EYE, :], axis=-2),
      "nose_tip": lm[..., NOSE_TIP, :],
      "nasion": lm[..., NASION, :],
      "mouth_left": lm[..., MOUTH_LEFT, :],
      "mouth_right": lm[..., MOUTH_RIGHT, :],
      "lip_upper": lm[..., LIP_UPPER, :],
      "lip_lower": lm[..., LIP_LOWER, :],
  }
  for i, name in enumerate(EXTRA_POINT_NAMES):
    out[name] = ex[..., i, :]
  return {name: out[name] for name in POINT_NAMES}


def _check_side(side: str, vertical: str) -> None:
  if side not in ("left", "right"):
    raise ValueError(f"side must be 'left' or 'right', got {side!r}.")
  if vertical not in VERTICALS:
    raise ValueError(f"vertical must be one of {VERTICALS}, got {vertical!r}.")


def _imaginary_points(ear, eye, mouth, nasion, vertical: str):
  """IP1, IP2 from (..., 2) points; see `imaginary_points`."""
  to_eye = eye - ear
  to_mouth = mouth - ear
  if vertical == "image":
    axis = jnp.broadcast_to(jnp.asarray([1.0, 0.0], jnp.float32),
                            to_eye.shape)
  else:
    axis = to_eye
  axis_sq = jnp.sum(axis * axis, axis=-1)
  # Coordinates along `axis`, relative to the ear: IP1 = ear + t * to_eye and
  # IP2 = ear + s * to_mouth both have the nasion's coordinate a.
  a = jnp.sum((nasion - ear) * axis, axis=-1)
  b = jnp.sum(to_eye * axis, axis=-1)
  c = jnp.sum(to_mouth * axis, axis=-1)
  t = _safe_ratio(a, b, jnp.sum(to_eye * to_eye, axis=-1) * axis_sq)
  s = _safe_ratio(a, c, jnp.sum(to_mouth * to_mouth, axis=-1) * axis_sq)
  return ear + t[..., None] * to_eye, ear + s[..., None] * to_mouth


def imaginary_points(landmarks, extra, side: str, vertical: str = "image"
                     ) -> tuple[jax.Array, jax.Array]:
  """The two imaginary points of a side view.

  With `vertical="image"` (the default, SPEC.md's construction), in the 2D
  projection of the `side` view, with ear, eye and mouth corner of that side
  (left: ear_left, mean of 36-41, 48; right: ear_right, mean of 42-47, 54):
    IP1 = the point of the (infinite) ear-to-eye line whose x equals the x of
      the nasion (landmark 27): IP1 = ear + t (eye - ear),
      t = (x_27 - x_ear) / (x_eye - x_ear).
    IP2 = the point of the ear-to-mouth-corner line with the same x:
      IP2 = ear + s (mouth - ear), s = (x_27 - x_ear) / (x_mouth - x_ear);
      IP2 is vertically below (or above) IP1 in the image.
  With `vertical="ear_eye"`, "x" is replaced by the coordinate along the
  ear-to-eye direction: IP1 is the orthogonal projection of the nasion onto
  the ear-to-eye line, and IP2 the point of the ear-to-mouth line on the
  perpendicular to the ear-to-eye line through IP1. Both constructions agree
  when the ear-to-eye line is horizontal; "ear_eye" is rotation invariant.

  A line within about 0.01 rad of the vertical (denominator |x_eye - x_ear|
  below 1% of |eye - ear|) has no usable intersection; there the division is
  replaced by a guarded one that is continuous, finite and has finite
  gradients, and tends to the ear point when the line is exactly vertical.

  Args:
    landmarks: (..., 68, D) landmarks of the side view, pixels.
    extra: (..., 5, D) extra points of the side view.
    side: "left" or "right".
    vertical: "image" or "ear_eye", as above.

  Returns:
    (ip1, ip2), each (..., 2) in pixels.
  """
  _check_side(side, vertical)
  p = feature_points(landmarks, extra)
  two = lambda name: p[name][..., :2]
  return _imaginary_points(two(f"ear_{side}"), two(f"eye_{side}"),
                           two(f"mouth_{side}"), two("nasion"), vertical)


def front_distances(landmarks, extra) -> dict[str, jax.Array]:
  """Front-view distances divided by the inter-ocular distance.

  Args:
    landmarks: (..., 68, D) front-view landmarks, pixels.
    extra: (..., 5, D) front-view extra points.

  Returns:
    dict with the `DISTANCE_NAMES` (each (...), unitless) and "eye_eye_px",
    the inter-ocular distance itself in pixels.
  """
  p = feature_points(landmarks, extra)
  p = {k: v[..., :2] for k, v in p.items()}
  iod = _safe_norm(p["eye_left"] - p["eye_right"])
  inv = 1.0 / jnp.maximum(iod, _TINY)
  out = {name: _safe_norm(p[a] - p[b]) * inv
         for name, a, b in _FRONT_DISTANCES}
  out["eye_eye_px"] = iod
  return out


def front_areas(landmarks, extra) -> dict[str, jax.Array]:
  """FR1-FR10 (front view), each (...), divided by the squared IOD.

  Args:
    landmarks: (..., 68, D) front-view landmarks, pixels.
    extra: (..., 5, D) front-view extra points.

  Returns:
    dict FRi -> (...) unitless area. Vertex orders (boundary order):
    FR1 eye_left glabella ear_left; FR2 eye_left eye_right glabella;
    FR3 eye_right glabella ear_right; FR4 eye_left nose_tip ear_left;
    FR5 eye_left eye_right nose_tip; FR6 eye_right nose_tip ear_right;
    FR7 ear_left nose_tip mouth_left; FR8 mouth_left nose_tip mouth_right
    lip_upper (a simple dart when lip_upper is inside the triangle of the
    other three); FR9 mouth_right nose_tip ear_right; FR10 mouth_left
    lip_lower mouth_right.
  """
  p = feature_points(landmarks, extra)
  p = {k: v[..., :2] for k, v in p.items()}
  diff = p["eye_left"] - p["eye_right"]
  inv = 1.0 / jnp.maximum(jnp.sum(diff * diff, axis=-1), _TINY)
  out = {}
  for name, corners in _FRONT_POLYGONS:
    poly = jnp.stack(jnp.broadcast_arrays(*[p[c] for c in corners]), axis=-2)
    out[name] = polygon_area(poly) * inv
  return out


def side_areas(landmarks, extra, side: str, vertical: str = "image"
               ) -> dict[str, jax.Array]:
  """LS1-LS6 (side="left") or RS1-RS6 (side="right") of one side view.

  With eye, ear, head, mouth = the view side's eye centre, ear, lateral head
  point and mouth corner (48 left, 54 right), nose = nose tip (30), and IP1,
  IP2 from `imaginary_points`, the polygons (boundary order) are:
    1: eye, head, IP1.          2: eye, nose, IP2, IP1 (quadrilateral).
    3: nose, mouth, IP2.        4: ear, head, IP1.
    5: ear, IP1, IP2.           6: ear, lower-lip bottom (57), IP2.
  Each area is divided by the squared ear-to-eye distance of this view.

  Two readings where SPEC.md's text cannot be taken literally:
  - Area 6 is "ear, mouth, IP2" there, but IP2 lies on the ear-to-mouth
    line by construction, so that triangle is always empty. jaxface reads
    its "mouth" as the mouth's lowest point, the lower-lip bottom (57): the
    region just below the ear-mouth line.
  - In a real profile the nasion lies in front of the eye centre, so the
    listed order of quadrilateral 2 can cross itself. jaxface takes the
    simple polygon through the four points in angular order around their
    centroid (the convex quadrilateral when they are in convex position).

  Args:
    landmarks: (..., 68, D) landmarks of the side view, pixels.
    extra: (..., 5, D) extra points of the side view.
    side: "left" or "right".
    vertical: "image" or "ear_eye", see `imaginary_points`.

  Returns:
    dict LSi / RSi -> (...) unitless area.
  """
  _check_side(side, vertical)
  p = feature_points(landmarks, extra)
  p = {k: v[..., :2] for k, v in p.items()}
  ear, eye = p[f"ear_{side}"], p[f"eye_{side}"]
  mouth = p[f"mouth_{side}"]
  ip1, ip2 = _imaginary_points(ear, eye, mouth, p["nasion"], vertical)
  named = {"eye": eye, "ear": ear, "head": p[f"head_{side}"],
           "mouth": mouth, "nose": p["nose_tip"], "ip1": ip1, "ip2": ip2,
           "lip_lower": p["lip_lower"]}
  diff = eye - ear
  inv = 1.0 / jnp.maximum(jnp.sum(diff * diff, axis=-1), _TINY)
  prefix = "LS" if side == "left" else "RS"
  out = {}
  for i, corners in enumerate(_SIDE_POLYGONS, start=1):
    poly = jnp.stack(jnp.broadcast_arrays(*[named[c] for c in corners]),
                     axis=-2)
    if len(corners) == 4:
      poly = _angular_order(poly)
    out[f"{prefix}{i}"] = polygon_area(poly) * inv
  return out


def geometric_feature_dict(front_landmarks, front_extra, left_landmarks,
                           left_extra, right_landmarks, right_extra,
                           vertical: str = "image") -> dict[str, jax.Array]:
  """All geometric features of a face seen from the front, left and right.

  Args:
    front_landmarks, left_landmarks, right_landmarks: (..., 68, D) iBUG
      landmarks of each view, pixels (D = 2 or 3; depth ignored).
    front_extra, left_extra, right_extra: (..., 5, D) extra points of each
      view, in the order `EXTRA_POINT_NAMES`.
    vertical: construction of the side views' imaginary points, "image"
      (SPEC.md) or "ear_eye" (rotation invariant); see `imaginary_points`.

  Returns:
    dict with every name of `FEATURE_NAMES` -> (...) float32 unitless value,
    plus "eye_eye_px": the front inter-ocular distance in pixels (not in the
    feature vector, since eye-eye / IOD is identically 1).
  """
  out = front_distances(front_landmarks, front_extra)
  out.update(front_areas(front_landmarks, front_extra))
  out.update(side_areas(left_landmarks, left_extra, "left", vertical))
  out.update(side_areas(right_landmarks, right_extra, "right", vertical))
  return out


def geometric_features(front_landmarks, front_extra, left_landmarks,
                       left_extra, right_landmarks, right_extra,
                       vertical: str = "image") -> jax.Array:
  """The geometric feature vector, (..., NUM_FEATURES) float32.

  Args: as `geometric_feature_dict`; leading dims of all six inputs must
  broadcast together.

  Returns:
    (..., 31) unitless features in the order of `FEATURE_NAMES`: 9 front
    distances / IOD, FR1-FR10 / IOD^2, LS1-LS6 / (left ear-eye)^2,
    RS1-RS6 / (right ear-eye)^2.
  """
  d = geometric_feature_dict(front_landmarks, front_extra, left_landmarks,
                             left_extra, right_landmarks, right_extra,
                             vertical)
  return jnp.stack(jnp.broadcast_arrays(*[d[n] for n in FEATURE_NAMES]),
                   axis=-1)


def normalised_landmarks(landmarks) -> jax.Array:
  """(..., 68, D) landmarks of a view -> (..., 136): their (x, y), centred
  on their mean and divided by sqrt(w h) of their bounding box, flattened.

  Unitless and free of the view's position and scale: what the landmarks
  say of the face's shape, beyond the first seed's 31 features (which
  carry less of it: see the README's "Why the face GAN ignored identity").
  """
  xy = _points(landmarks, 68, "landmarks")[..., :2]
  centred = xy - jnp.mean(xy, axis=-2, keepdims=True)
  size = jnp.max(xy, axis=-2) - jnp.min(xy, axis=-2)
  scale = jnp.sqrt(jnp.maximum(size[..., 0] * size[..., 1], _TINY))
  return (centred / scale[..., None, None]).reshape(
      centred.shape[:-2] + (-1,))
