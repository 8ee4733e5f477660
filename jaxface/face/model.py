"""A procedural, data-free, deterministic morphable head model.

Real morphable models (BFM) cannot ship with jaxface, so jaxface builds its
own: a mean head surface parameterised over the UV square, a linear identity
basis and a linear expression basis, the iBUG 68 landmarks and a few extra
points at fixed UV coordinates, and UV masks (PRNet's weight mask and a face
region mask).

Model space (millimetres): x to the subject's left, which is the image's
right in a frontal photo; y up; z towards the camera of a frontal photo. The
origin is on the head's vertical axis at the height of the eye centres.

Surface: the UV square is wrapped around the head like a cylinder. u maps to
the azimuth theta = (u - 1/2) * 2 * THETA_MAX (0 at the nose, negative on the
image-left side), v maps linearly to height Y from Y_TOP (v = 0, top of the
forehead) to Y_BOTTOM (v = 1, the neck). The base shape is a flattened
ellipse per height; below the jaw line it blends into the neck. Facial
features (nose, eye sockets and eyeballs, brow ridge, cheekbones, lips,
chin, ears) are smooth radial displacements placed by (s, Y), where
s = theta * S_SCALE is an arc-length-like horizontal coordinate in mm.

"Left" and "right" in jaxface follow the image of a frontal photo: the left
eye is iBUG 36-41, the left ear is next to jaw point 0 (u < 1/2).

Coefficient ranges (documented contract, also in `FaceModel`):
- identity coefficients are in units of one standard deviation: sample
  N(0, 1) truncated to [-3, 3];
- expression coefficients have per-component ranges in `EXPRESSION_RANGES`
  (0 is neutral; one-sided components are in [0, 1], two-sided in [-1, 1]).
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np

from jaxface.face import frames
from jaxface.face import raster
from jaxface.face import uv as uv_lib

THETA_MAX = np.deg2rad(100.0)
Y_TOP, Y_BOTTOM = 95.0, -150.0
S_SCALE = 80.0  # mm per radian of azimuth, for placing features by (s, Y).

SHAPE_STD_RANGE = (-3.0, 3.0)

# Face contour: (|theta| in degrees, height Y in mm) of the jaw line, from
# the chin to behind the ear. Below it the surface folds into the neck.
_JAW_LINE = np.array([
    (0, -119), (18, -115), (34, -107), (48, -95), (60, -80), (68, -64),
    (74, -46), (77, -27), (80, -8), (86, -8), (92, -30), (100, -55)],
                     np.float64)

# iBUG 68 landmarks. Jaw points by azimuth (degrees) on the jaw line;
# the others by (s, Y) in mm. Left half (image left) has negative s.
_JAW_THETA = [-80, -77, -74, -68, -60, -48, -34, -18, 0,
              18, 34, 48, 60, 68, 74, 77, 80]
_LANDMARK_SY = [
    # 17-21 left brow (outer to inner), 22-26 right brow (inner to outer).
    (-52, 12), (-43, 18), (-33, 20), (-23, 19), (-13, 16),
    (13, 16), (23, 19), (33, 20), (43, 18), (52, 12),
    # 27-30 nose bridge, nasion to tip.
    (0, 5), (0, -9), (0, -24), (0, -40),
    # 31-35 nostrils, left to right.
    (-13, -48), (-7, -50.5), (0, -51.5), (7, -50.5), (13, -48),
    # 36-41 left eye: outer corner, upper lid, inner corner, lower lid.
    (-45, 0), (-37, 4.5), (-27, 4.5), (-19, 0), (-27, -3.5), (-37, -3.5),
    # 42-47 right eye: inner corner, upper lid, outer corner, lower lid.
    (19, 0), (27, 4.5), (37, 4.5), (45, 0), (37, -3.5), (27, -3.5),
    # 48-59 outer lips: left corner, upper lip, right corner, lower lip.
    (-25, -68), (-16, -63.5), (-7, -61), (0, -62), (7, -61), (16, -63.5),
    (25, -68), (16, -75), (7, -78.5), (0, -79), (-7, -78.5), (-16, -75),
    # 60-67 inner lips.
    (-21, -68.3), (-8, -67.3), (0, -67.5), (8, -67.3), (21, -68.3),
    (8, -69.5), (0, -69.8), (-8, -69.5),
]
EXTRA_POINT_NAMES = ('glabella', 'ear_left', 'ear_right', 'head_left',
                     'head_right')
_EAR_THETA_DEG, _EAR_Y = 92.0, -12.0
_HEAD_Y = 45.0

SHAPE_NAMES_SEMANTIC = (
    'face_width', 'face_length', 'forehead_height', 'head_depth',
    'nose_length', 'nose_width', 'nose_bridge', 'nose_tip', 'eye_spacing',
    'eye_size', 'eye_depth', 'jaw_width', 'chin', 'lip_thickness',
    'cheek_fullness', 'brow_ridge', 'mouth_width', 'cheekbones')
NUM_RANDOM_SHAPE = 22
# The identity coefficients' mean in the synthetic `recon` data
# (`sample_shape_coeffs`' `mean`). The base head's eye centres are 55 mm
# apart, where adults' are about 63 mm (interpupillary distance), and its
# eyes and mouth are small (22 and 40 mm wide). Measured in eye distances
# from the eye centres' midpoint, its nose tip, mouth centre and chin lie
# 0.73, 1.24 and 2.11 below, its eyes are 0.39 wide and its mouth 0.72,
# where AFLW-21's photos within 10 degrees of frontal give (medians) 0.61,
# 1.06, 1.68, 0.41 and 0.77 (`experiments/diagnostics/face_proportions.py`;
# README, "Face proportions"). Moving the eyes apart (eye_spacing),
# enlarging the eyes and widening the mouth (so that their widths keep pace
# with the eye distance) and shortening the face below the eyes by 2.5 %
# gives 63 mm and 0.63, 1.07, 1.82, 0.39 and 0.74, and leaves the head's
# outline as it was (its width over the eye distance falls from 2.7 to
# 2.4).
ADULT_SHAPE_MEAN = (('eye_spacing', 1.6), ('eye_size', 1.6),
                    ('mouth_width', 1.9), ('face_length', -0.5))
EXPRESSION_NAMES = ('mouth_open', 'smile', 'frown', 'brow_raise',
                    'eye_close', 'pucker', 'cheek_puff', 'jaw_shift',
                    'lip_stretch', 'nose_wrinkle')
EXPRESSION_RANGES = np.array([
    (0, 1), (0, 1), (0, 1), (-1, 1), (0, 1), (0, 1), (0, 1), (-1, 1),
    (0, 1), (0, 1)], np.float32)

# Landmark index groups (iBUG, 0-based).
LEFT_EYE = tuple(range(36, 42))
RIGHT_EYE = tuple(range(42, 48))
NOSE = tuple(range(27, 36))
OUTER_LIPS = tuple(range(48, 60))
INNER_LIPS = tuple(range(60, 68))
LEFT_BROW = tuple(range(17, 22))
RIGHT_BROW = tuple(range(22, 27))


def theta_y_to_uv(theta, y):
  """Azimuth (radians) and height (mm) -> UV coordinates."""
  theta, y = np.asarray(theta, np.float64), np.asarray(y, np.float64)
  return np.stack([0.5 + theta / (2 * THETA_MAX),
                   (Y_TOP - y) / (Y_TOP - Y_BOTTOM)], -1)


def uv_to_theta_y(uv):
  """UV coordinates -> azimuth (radians) and height (mm)."""
  uv = np.asarray(uv, np.float64)
  return (uv[..., 0] - 0.5) * 2 * THETA_MAX, Y_TOP - uv[..., 1] * (
      Y_TOP - Y_BOTTOM)


def jaw_line(theta):
  """Height (mm) of the jaw line at azimuth `theta` (radians)."""
  return np.interp(np.rad2deg(np.abs(theta)), _JAW_LINE[:, 0], _JAW_LINE[:, 1])


def _smoothstep(x):
  x = np.clip(x, 0.0, 1.0)
  return x * x * (3 - 2 * x)


def _gauss(s, y, s0, y0, ss, sy, mirror=False):
  """Gaussian bump at (s0, y0) in the (s, Y) plane; `mirror` adds (-s0, y0)."""
  g = np.exp(-0.5 * (((s - s0) / ss)**2 + ((y - y0) / sy)**2))
  if mirror:
    g = g + np.exp(-0.5 * (((s + s0) / ss)**2 + ((y - y0) / sy)**2))
  return g


def landmark_uv() -> np.ndarray:
  """(68, 2) UV coordinates of the iBUG 68 landmarks."""
  jaw_t = np.deg2rad(np.array(_JAW_THETA, np.float64))
  jaw = theta_y_to_uv(jaw_t, jaw_line(jaw_t) + 2.0)
  s, y = np.array(_LANDMARK_SY, np.float64).T
  rest = theta_y_to_uv(s / S_SCALE, y)
  return np.concatenate([jaw, rest]).astype(np.float32)


def extra_point_uv() -> np.ndarray:
  """(5, 2) UV coordinates of EXTRA_POINT_NAMES."""
  ear, head = np.deg2rad(_EAR_THETA_DEG), np.deg2rad(90.0)
  theta = np.array([0.0, -ear, ear, -head, head])
  y = np.array([14.0, _EAR_Y, _EAR_Y, _HEAD_Y, _HEAD_Y])
  return theta_y_to_uv(theta, y).astype(np.float32)


def _head_surface(theta, y):
  """Mean head without facial features: (N, 3) points and (N, 3) normals.

  Returns the head shell, the outward radial direction used for feature
  displacements, and the neck blend weight (0 on the face, 1 on the neck).
  """
  knots_y = [-150, -125, -115, -100, -80, -55, -30, 0, 30, 60, 95]
  half_width = [55, 52, 40, 46, 58, 68, 73, 75, 73, 71, 66]
  half_depth = [40, 45, 78, 82, 88, 93, 95, 95, 96, 93, 86]
  a = np.interp(y, knots_y, half_width)
  b = np.interp(y, knots_y, half_depth)
  c = np.cos(theta)
  # A power below 1 flattens the front of the face relative to an ellipse.
  head = np.stack([a * np.sin(theta), y,
                   b * np.sign(c) * np.abs(c)**0.8], -1)
  neck = np.stack([58 * np.sin(theta), y, -20 + 52 * c], -1)
  radial = np.stack([np.sin(theta), np.zeros_like(theta), c], -1)
  # The jaw-to-neck fold is short under the chin and long behind the jaw.
  fold = np.interp(np.rad2deg(np.abs(theta)), [0, 60, 80, 100],
                   [14, 16, 30, 40])
  blend = _smoothstep((jaw_line(theta) - y) / fold)
  return head, neck, radial, blend


def _feature_relief(s, y, theta):
  """Radial displacement (mm) of the facial features at (s, Y)."""
  g = _gauss
  # Nose: a ridge whose height and width vary along Y, plus the alae.
  ridge_h = np.interp(y, [-54, -50, -46, -41, -36, -28, -18, -8, 2, 8, 14],
                      [0, 7, 17, 24, 23, 18, 13, 8.5, 6, 5, 0])
  ridge_w = np.interp(y, [-54, -41, -28, 2, 14], [7, 9, 6, 7, 9])
  relief = ridge_h * np.exp(-0.5 * (s / ridge_w)**2)
  relief += 8 * g(s, y, 14, -45, 6, 5, mirror=True)
  relief -= 2.5 * g(s, y, 7, -50, 3, 2, mirror=True)
  # Eyes: socket, eyeball; brow ridge; forehead; temples.
  relief -= 11 * g(s, y, 32, 1, 13, 9, mirror=True)
  relief += 7 * g(s, y, 32, 0, 9, 6, mirror=True)
  relief += 5 * g(s, y, 30, 16, 20, 6, mirror=True)
  relief += 3 * g(s, y, 0, 50, 45, 25)
  relief -= 3 * g(s, y, 68, 30, 10, 15, mirror=True)
  # Cheekbones and cheeks.
  relief += 6 * g(s, y, 50, -22, 14, 12, mirror=True)
  relief += 4 * g(s, y, 42, -55, 16, 14, mirror=True)
  # Lips, philtrum, lip line, mentolabial sulcus, chin.
  relief += 4 * g(s, y, 0, -56, 14, 5)
  relief += 6.5 * g(s, y, 0, -63.5, 19, 3.5)
  relief -= 3 * g(s, y, 0, -68.5, 20, 1.2)
  relief += 6 * g(s, y, 0, -74, 16, 3.5)
  relief -= 3 * g(s, y, 0, -86, 16, 4)
  relief += 8 * g(s, y, 0, -104, 17, 9)
  # Ears: a tall bump on each side of the head, placed by azimuth.
  ear = np.deg2rad(_EAR_THETA_DEG)
  relief += 15 * np.exp(-0.5 * (((np.abs(theta) - ear) / np.deg2rad(6))**2 +
                                ((y - _EAR_Y) / 17)**2))
  return relief


def _random_fields(uv, count, seed=1234):
  """`count` smooth random 3D displacement fields over UV, (count, N, 3) mm."""
  rng = np.random.default_rng(seed)
  fields = []
  for _ in range(count):
    field = np.zeros(uv.shape[:-1] + (3,))
    for _ in range(6):
      freq = rng.uniform(0.5, 2.5, size=2) * np.pi
      phase = rng.uniform(0, 2 * np.pi, size=2)
      wave = (np.cos(freq[0] * uv[..., 0] + phase[0]) *
              np.cos(freq[1] * uv[..., 1] + phase[1]))
      field += wave[..., None] * rng.normal(size=3) * [1.0, 1.0, 1.6]
    fields.append(field / np.sqrt(6))
  return np.stack(fields) * 1.8


def _vector_field(dx, dy, dz, count):
  """(count, 3) field from per-vertex or constant components."""
  zero = np.zeros(count)
  return np.stack([dx + zero, dy + zero, dz + zero], -1)


def _shape_fields(p, s, y, theta, radial, face):
  """The semantic identity fields: (18, N, 3) displacements (mm) per std."""
  g = _gauss
  x = p[:, 0]
  vec = functools.partial(_vector_field, count=len(x))
  eyes = g(s, y, 32, 0, 14, 10, mirror=True)
  eye_centre_x = np.sign(x) * 29.0
  lower = _smoothstep((-40 - y) / 50)
  fields = [
      vec(0.045 * x, 0, 0),                                  # face_width
      vec(0, 0.05 * np.minimum(y, 0), 0),                    # face_length
      vec(0, 0.06 * np.maximum(y, 0), 0),                    # forehead
      vec(0, 0, 0.04 * p[:, 2]),                             # head_depth
      vec(0, -3.5 * g(s, y, 0, -45, 14, 9), 0),              # nose_length
      vec(0.18 * x * g(s, y, 0, -45, 20, 8), 0, 0),          # nose_width
      radial * (3 * g(s, y, 0, -15, 6, 14))[:, None],        # nose_bridge
      radial * (3.5 * g(s, y, 0, -41, 8, 6))[:, None],       # nose_tip
      vec(np.sign(x) * 3 * eyes, 0, 0),                      # eye_spacing
      vec(0.12 * (x - eye_centre_x) * eyes, 0.12 * y * eyes, 0),  # eye_size
      radial * (-2.5 * eyes)[:, None],                       # eye_depth
      vec(0.08 * x * lower, 0, 0),                           # jaw_width
      (radial * (4 * g(s, y, 0, -106, 18, 10))[:, None] +
       vec(0, -2.5 * g(s, y, 0, -106, 18, 10), 0)),          # chin
      (radial * (2 * (g(s, y, 0, -63.5, 18, 3.5) +
                      g(s, y, 0, -74, 16, 3.5)))[:, None] +
       vec(0, 1.2 * g(s, y, 0, -63.5, 18, 3.5) -
           1.2 * g(s, y, 0, -74, 16, 3.5), 0)),              # lip_thickness
      radial * (4 * g(s, y, 45, -50, 18, 16, True))[:, None],  # cheeks
      radial * (3 * g(s, y, 30, 16, 22, 7, True))[:, None],  # brow_ridge
      vec(0.12 * x * g(s, y, 0, -69, 30, 9), 0, 0),          # mouth_width
      radial * (3 * g(s, y, 52, -20, 13, 10, True))[:, None],  # cheekbones
  ]
  return np.stack(fields) * face[None, :, None]


def _expression_fields(p, s, y, theta, radial, face):
  """(10, N, 3) expression displacements (mm) per unit coefficient."""
  g = _gauss
  x = p[:, 0]
  vec = functools.partial(_vector_field, count=len(x))
  side = np.sign(x)
  # The lower jaw: everything below the lip line, fading towards the ears.
  jaw = (_smoothstep((-67.8 - y) / 1.8) *
         np.clip(1 - (np.abs(theta) / np.deg2rad(85))**2, 0, 1))
  corners = g(s, y, 25, -68, 10, 8, mirror=True)
  upper_lip = g(s, y, 0, -63.5, 18, 4)
  lips = g(s, y, 0, -69, 18, 8)
  inner_brows = g(s, y, 15, 17, 9, 6, mirror=True)
  fields = [
      vec(0, -16 * jaw + 2 * upper_lip, -5 * jaw),            # mouth_open
      (vec(side * 4 * corners, 5 * corners, -2 * corners) +
       vec(0, 3 * g(s, y, 40, -45, 15, 12, True), 0)),        # smile
      vec(0, -4 * corners + 3 * inner_brows, 0),              # frown
      vec(0, 6 * g(s, y, 30, 18, 22, 8, True), 0),            # brow_raise
      vec(0, -7.5 * g(s, y, 32, 4, 9, 2.5, True),
          -g(s, y, 32, 4, 9, 2.5, True)),                     # eye_close
      vec(-0.25 * x * lips, 0, 6 * lips),                     # pucker
      radial * (6 * g(s, y, 45, -58, 15, 14, True))[:, None],  # cheek_puff
      vec(5 * jaw, 0, 0),                                     # jaw_shift
      vec(side * 5 * corners, -corners, -corners),            # lip_stretch
      (vec(0, 3 * g(s, y, 14, -44, 8, 6, True),
           g(s, y, 14, -44, 8, 6, True)) +
       vec(-side * 2 * inner_brows, -3 * inner_brows, 0)),    # nose_wrinkle
  ]
  return np.stack(fields) * face[None, :, None]


@dataclasses.dataclass(frozen=True, eq=False)
class FaceModel:
  """The procedural morphable head model (`morphable.MorphableModel`). Build
  with `build_face_model`.

  Vertices are the points of a (rows, cols) grid over the UV square, in
  row-major order (row = v, column = u); N = rows * cols.

  Attributes:
    rows, cols: grid size.
    uv: (N, 2) float32 UV coordinates of the vertices.
    triangles: (F, 3) int32 triangles (see `uv.grid_triangles`).
    mean: (N, 3) float32 mean head, model space, mm.
    shape_basis: (3N, S) float32 identity basis, mm per standard deviation.
    expression_basis: (3N, E) float32 expression basis, mm per unit.
    shape_names, expression_names: component names.
    expression_ranges: (E, 2) float32 allowed [low, high] per component.
    landmark_uv: (68, 2) float32; extra_uv: (5, 2) float32, see
      EXTRA_POINT_NAMES.
    face_weight: (N,) float32, 1 on the face, 0 on the neck (the jaw blend).
  """
  rows: int
  cols: int
  uv: np.ndarray
  triangles: np.ndarray
  mean: np.ndarray
  shape_basis: np.ndarray
  expression_basis: np.ndarray
  shape_names: tuple[str, ...]
  expression_names: tuple[str, ...]
  expression_ranges: np.ndarray
  landmark_uv: np.ndarray
  extra_uv: np.ndarray
  face_weight: np.ndarray

  @property
  def num_vertices(self) -> int:
    return self.rows * self.cols

  @property
  def num_shape(self) -> int:
    return self.shape_basis.shape[1]

  @property
  def num_expression(self) -> int:
    return self.expression_basis.shape[1]

  def vertices(self, shape_coeffs=None, expression_coeffs=None) -> np.ndarray:
    """(N, 3) float32 model-space vertices for the given coefficients."""
    # np.einsum, not @: BLAS rounds differently with different thread
    # counts, and records must be bitwise reproducible in any process.
    flat = self.mean.reshape(-1).astype(np.float32)
    if shape_coeffs is not None:
      flat = flat + np.einsum('ij,j->i', self.shape_basis,
                              np.asarray(shape_coeffs, np.float32))
    if expression_coeffs is not None:
      flat = flat + np.einsum('ij,j->i', self.expression_basis,
                              np.asarray(expression_coeffs, np.float32))
    return flat.reshape(-1, 3)

  def locate(self, uv_points) -> tuple[np.ndarray, np.ndarray]:
    """Mesh triangle corners and barycentric weights at UV points.

    Args:
      uv_points: (P, 2) UV coordinates.

    Returns:
      (P, 3) int vertex indices and (P, 3) float32 weights such that the
      surface point is sum_k weights[:, k] * vertices[ids[:, k]]; this is
      exactly the point of the triangle mesh (as rendered).
    """
    uv_points = np.asarray(uv_points, np.float64)
    gx = np.clip(uv_points[:, 0], 0, 1) * (self.cols - 1)
    gy = np.clip(uv_points[:, 1], 0, 1) * (self.rows - 1)
    j = np.minimum(np.floor(gx).astype(np.int64), self.cols - 2)
    i = np.minimum(np.floor(gy).astype(np.int64), self.rows - 2)
    a, b = gx - j, gy - i
    tl, tr = i * self.cols + j, i * self.cols + j + 1
    bl, br = tl + self.cols, tr + self.cols
    first = a + b <= 1  # triangle (tl, tr, bl), else (tr, br, bl)
    ids = np.where(first[:, None], np.stack([tl, tr, bl], 1),
                   np.stack([tr, br, bl], 1))
    weights = np.where(first[:, None], np.stack([1 - a - b, a, b], 1),
                       np.stack([1 - b, a + b - 1, 1 - a], 1))
    return ids, weights.astype(np.float32)

  def surface_points(self, vertices, uv_points) -> np.ndarray:
    """(P, 3) points of the mesh `vertices` (N, 3) at UV points (P, 2)."""
    ids, weights = self.locate(uv_points)
    return raster.barycentric_sum(vertices, ids, weights)

  @functools.cached_property
  def _landmark_locations(self):
    return self.locate(self.landmark_uv), self.locate(self.extra_uv)

  def landmarks(self, vertices) -> np.ndarray:
    """(68, 3) iBUG landmarks of the mesh `vertices` (N, 3)."""
    (ids, w), _ = self._landmark_locations
    return raster.barycentric_sum(vertices, ids, w)

  def extra_points(self, vertices) -> np.ndarray:
    """(5, 3) EXTRA_POINT_NAMES points of the mesh `vertices` (N, 3)."""
    _, (ids, w) = self._landmark_locations
    return raster.barycentric_sum(vertices, ids, w)

  def uv_raster(self, resolution: int) -> uv_lib.UVRaster:
    """The mesh rasterized into a (resolution, resolution) UV map."""
    return _uv_raster(self, resolution)

  def position_map(self, vertices, resolution: int) -> np.ndarray:
    """(R, R, 3) float32 UV map of per-vertex positions (N, 3)."""
    return self.uv_raster(resolution).apply(
        np.asarray(vertices, np.float32)).astype(np.float32)

  def canonical_position_map(self, vertices, resolution: int) -> np.ndarray:
    """The frontal position map of model-space `vertices` (N, 3) in the
    canonical frame (`frames`): (R - 1) / 255 pixels per mm, the head's
    axis at column (R - 1) / 2 and the eye line at row 0.39 (R - 1), z
    shifted so that its minimum is 0."""
    position_map = self.position_map(
        frames.canonical_points(vertices, resolution), resolution)
    position_map[..., 2] -= position_map[..., 2].min()
    return position_map


@functools.lru_cache(maxsize=8)
def _uv_raster(model: FaceModel, resolution: int) -> uv_lib.UVRaster:
  return uv_lib.UVRaster.build(model.uv, model.triangles, resolution,
                               resolution)


@functools.lru_cache(maxsize=4)
def build_face_model(rows: int = 96, cols: int = 113) -> FaceModel:
  """Builds the (deterministic) face model on a (rows, cols) vertex grid.

  Built once per process and grid size (about 0.1 s). An odd `cols` puts
  a vertex column on the midline (u = 1/2), so the grid is mirror symmetric.
  """
  grid_u, grid_v = np.meshgrid(np.linspace(0, 1, cols), np.linspace(0, 1, rows))
  uv = np.stack([grid_u, grid_v], -1).reshape(-1, 2)
  theta, y = uv_to_theta_y(uv)
  s = theta * S_SCALE
  head, neck, radial, blend = _head_surface(theta, y)
  relief = _feature_relief(s, y, theta)
  face = 1.0 - blend
  mean = (head + relief[:, None] * radial) * face[:, None] + neck * blend[:,
                                                                          None]
  fields = np.concatenate([
      _shape_fields(mean, s, y, theta, radial, face),
      _random_fields(uv, NUM_RANDOM_SHAPE) *
      (0.3 + 0.7 * face)[None, :, None],
  ])
  expressions = _expression_fields(mean, s, y, theta, radial, face)
  shape_names = SHAPE_NAMES_SEMANTIC + tuple(
      f'random_{k:02d}' for k in range(NUM_RANDOM_SHAPE))
  n = rows * cols
  return FaceModel(
      rows=rows, cols=cols, uv=uv.astype(np.float32),
      triangles=uv_lib.grid_triangles(rows, cols),
      mean=mean.astype(np.float32),
      shape_basis=fields.reshape(len(fields), 3 * n).T.astype(np.float32),
      expression_basis=expressions.reshape(len(expressions),
                                           3 * n).T.astype(np.float32),
      shape_names=shape_names, expression_names=EXPRESSION_NAMES,
      expression_ranges=EXPRESSION_RANGES.copy(),
      landmark_uv=landmark_uv(), extra_uv=extra_point_uv(),
      face_weight=face.astype(np.float32))


def check_shape_mean(mean) -> tuple[tuple[str, float], ...]:
  """`mean` as ((semantic shape name, finite coefficient), ...); ValueError
  naming what is wrong otherwise."""
  try:
    out = tuple((str(name), float(value)) for name, value in mean)
  except (TypeError, ValueError) as e:
    raise ValueError(f'shape mean: expected (name, value) pairs, got '
                     f'{mean!r}') from e
  names = [name for name, _ in out]
  if len(set(names)) < len(names):
    raise ValueError(f'shape mean: a component given twice in {names}')
  for name, value in out:
    if name not in SHAPE_NAMES_SEMANTIC:
      raise ValueError(f'shape mean: unknown shape component {name!r}; '
                       f'components: {", ".join(SHAPE_NAMES_SEMANTIC)}')
    if not np.isfinite(value) or abs(value) > 2 * SHAPE_STD_RANGE[1]:
      raise ValueError(f'shape mean: {name}={value} is not within '
                       f'+-{2 * SHAPE_STD_RANGE[1]:g} standard deviations')
  return out


def mean_shape_coeffs(model: FaceModel, mean=()) -> np.ndarray:
  """(S,) float32 identity coefficients of the mean face under `mean`
  ((semantic name, value) pairs, e.g. `ADULT_SHAPE_MEAN`)."""
  coeffs = np.zeros(model.num_shape, np.float32)
  for name, value in check_shape_mean(mean):
    coeffs[model.shape_names.index(name)] = value
  return coeffs


def sample_shape_coeffs(rng: np.random.Generator, model: FaceModel,
                        mean=()) -> np.ndarray:
  """Identity coefficients: N(0, 1) truncated to SHAPE_STD_RANGE, plus
  `mean_shape_coeffs(model, mean)` (the random stream is the same
  whatever the mean)."""
  coeffs = np.clip(rng.normal(size=model.num_shape), *SHAPE_STD_RANGE)
  return (coeffs + mean_shape_coeffs(model, mean)).astype(np.float32)


def sample_expression_coeffs(rng: np.random.Generator, model: FaceModel,
                             p_active: float = 0.3) -> np.ndarray:
  """Sparse random expression: each component active with `p_active`."""
  lo, hi = model.expression_ranges.T
  value = rng.uniform(lo, hi)
  active = rng.random(model.num_expression) < p_active
  return np.where(active, value, 0.0).astype(np.float32)


# ---------------------------------------------------------------- UV masks --


def _polygon_mask(points_uv, height, width, dilate_px=0):
  mask = np.zeros((height, width), np.uint8)
  pts = np.round(np.asarray(points_uv) * [width - 1, height - 1]).astype(
      np.int32)
  cv2.fillPoly(mask, [pts], 1)
  if dilate_px > 0:
    k = 2 * dilate_px + 1
    mask = cv2.dilate(mask, np.ones((k, k), np.uint8))
  return mask.astype(bool)


def face_region_mask(resolution: int) -> np.ndarray:
  """(R, R) bool UV mask of the face: inside the jaw contour, above the jaw
  line, ears and neck excluded (the texels PRNet evaluates)."""
  grid = np.linspace(0, 1, resolution)
  theta, y = uv_to_theta_y(np.stack(np.meshgrid(grid, grid), -1))
  contour = np.deg2rad(abs(_JAW_THETA[0]))
  return (np.abs(theta) <= contour) & (y >= jaw_line(theta))


def uv_weight_mask(resolution: int) -> np.ndarray:
  """(R, R) float32 PRNet-style loss weights over the UV map.

  68 landmark texels : eyes, nose, mouth : rest of the face : neck and
  outside = 16 : 4 : 3 : 0 (PRNet's ratios; the second seed's mask). The
  eye, nose and mouth regions are the landmark polygons, dilated by about
  3 mm so that the eyelids, the nostrils and the lip borders count.
  """
  lmk = landmark_uv()
  res = resolution
  dilate = max(1, int(round(3.0 / (Y_TOP - Y_BOTTOM) * res)))
  weight = np.where(face_region_mask(res), 3.0, 0.0)
  nose = np.concatenate([lmk[27:28], lmk[[31, 32, 33, 34, 35]],
                         theta_y_to_uv([-19 / S_SCALE, 19 / S_SCALE],
                                       [-44, -44])])
  nose = nose[np.argsort(np.arctan2(*(nose - nose.mean(0)).T[::-1]))]
  regions = [lmk[list(LEFT_EYE)], lmk[list(RIGHT_EYE)], lmk[list(OUTER_LIPS)],
             nose]
  for poly in regions:
    weight[_polygon_mask(poly, res, res, dilate)] = 4.0
  # float64: some landmarks sit exactly between two texels.
  texel = np.round(lmk.astype(np.float64) * (res - 1)).astype(np.int64)
  weight[texel[:, 1], texel[:, 0]] = 16.0
  return weight.astype(np.float32)
