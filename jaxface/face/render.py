"""Camera, PRNet crop and shaded rendering of a face mesh (numpy).

Pose follows 300W-LP / 3DDFA: Pose_Para = [pitch, yaw, roll, tx, ty, tz, s]
(angles in radians), camera-space vertices = s * R(pitch, yaw, roll) V + t,
orthographic projection, and image y = H - 1 - camera y (face3d's
`transform_3ddfa` and its image flip). With this R, a positive yaw turns
the face towards the image left, so its right side faces the camera.

Shading is per vertex (Gouraud): a Lambertian `Light`, or a `SceneLight`
(an order-2 spherical-harmonics environment, a key light whose cast
shadows come from a small shadow map (`key_visibility`), ambient
occlusion and a Blinn-Phong skin sheen), shaded in linear light.

Products of vertices with 3x3 matrices and 3-vectors (`times_rows`) are
compiled loops with a fixed order of summation, not @ (BLAS), whose
rounding depends on its thread count: rendered records are bitwise
reproducible.
"""

from __future__ import annotations

import dataclasses

import cv2
import numba
import numpy as np

from jaxface.face import raster as raster_lib

POSE_FIELDS = ('pitch', 'yaw', 'roll', 'tx', 'ty', 'tz', 'scale')
# PRNet's crop: a square of this many times the landmarks' mean extent.
PRNET_CROP_EXPAND = 1.5


def angle2matrix_3ddfa(pitch: float, yaw: float, roll: float) -> np.ndarray:
  """3DDFA's rotation R = Rx(pitch) Ry(yaw) Rz(roll), (3, 3)."""
  cx, sx = np.cos(pitch), np.sin(pitch)
  cy, sy = np.cos(yaw), np.sin(yaw)
  cz, sz = np.cos(roll), np.sin(roll)
  rx = np.array([[1, 0, 0], [0, cx, sx], [0, -sx, cx]])
  ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
  rz = np.array([[cz, sz, 0], [-sz, cz, 0], [0, 0, 1]])
  return rx @ ry @ rz


def pose_to_camera(vertices: np.ndarray, pose: np.ndarray) -> np.ndarray:
  """(N, 3) model-space vertices -> camera space (y up), by a Pose_Para."""
  pitch, yaw, roll, tx, ty, tz, scale = np.asarray(pose, np.float64)
  rot = angle2matrix_3ddfa(pitch, yaw, roll)
  return scale * times_rows(vertices, rot) + [tx, ty, tz]


def times_rows(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
  """`points @ matrix.T` for (N, 3) points and a (J, 3) matrix: (N, J)
  float64 (a (3,) vector: (N,)), each sum formed as (p0 + p2) + p1 in
  any memory layout: the order in which numpy 2's np.einsum('nk,jk->nj')
  sums three terms of C-contiguous float64 operands on this project's
  x86-64 machines (the rounding of the renders made with it). A compiled
  loop: einsum takes 2-10 times as long over a face mesh."""
  points = np.ascontiguousarray(points, np.float64)
  matrix = np.asarray(matrix, np.float64)
  if points.ndim != 2 or points.shape[1] != 3 or matrix.ndim not in (1, 2) or (
      matrix.shape[-1] != 3):
    raise ValueError(f'times_rows needs (N, 3) points and a (J, 3) or (3,) '
                     f'matrix, got {points.shape} and {matrix.shape}')
  out = _times_rows(points, np.ascontiguousarray(matrix.reshape(-1, 3)))
  return out[:, 0] if matrix.ndim == 1 else out


@numba.njit(cache=True, nogil=True)
def _times_rows(points, matrix):
  out = np.empty((points.shape[0], matrix.shape[0]))
  for n in range(points.shape[0]):
    for j in range(matrix.shape[0]):
      out[n, j] = (points[n, 0] * matrix[j, 0] + points[n, 2] * matrix[j, 2]
                   + points[n, 1] * matrix[j, 1])
  return out


def camera_to_image(points: np.ndarray, image_height: int) -> np.ndarray:
  """Camera space (y up) -> image pixels (y down); z is kept."""
  out = np.array(points, np.float64, copy=True)
  out[..., 1] = image_height - 1 - out[..., 1]
  return out


def prnet_crop(landmarks_xy: np.ndarray, resolution: int,
               rng: np.random.Generator | None = None,
               expand: float = PRNET_CROP_EXPAND, jitter: float = 0.1,
               scale_jitter: float = 0.1
               ) -> tuple[np.ndarray, np.ndarray]:
  """PRNet's crop around 68 landmarks, as its 300W-LP preparation does it.

  The box is centred on the landmarks' bounding box, its side is
  `expand` x the mean of the box's width and height; with `rng` the centre
  moves by up to `jitter` (10 %) of that mean and the side is scaled by
  U(1 - scale_jitter, 1 + scale_jitter), U(0.9, 1.1) by default (face3d's
  `generate_posmap_300WLP` perturbation).

  Args:
    landmarks_xy: (68, 2+) landmark pixels in the original image.
    resolution: side of the square crop in pixels.
    rng: optional random generator for the perturbation.
    expand: side of the box relative to the landmarks' extent.
    jitter: the largest centre shift, relative to the landmarks' extent.
    scale_jitter: the largest relative change of the side.

  Returns:
    (3, 3) similarity from original pixels to crop pixels (maps the box's
    corners to 0 and resolution - 1), and the box [x0, y0, x1, y1].
  """
  pts = np.asarray(landmarks_xy, np.float64)[:, :2]
  left, top = pts.min(0)
  right, bottom = pts.max(0)
  centre = np.array([(left + right) / 2, (top + bottom) / 2])
  old_size = (right - left + bottom - top) / 2
  size = old_size * expand
  if rng is not None:
    centre = centre + rng.uniform(-jitter, jitter, size=2) * old_size
    size = size * rng.uniform(1 - scale_jitter, 1 + scale_jitter)
  scale = (resolution - 1) / size
  x0, y0 = centre - size / 2
  transform = np.array([[scale, 0, -scale * x0], [0, scale, -scale * y0],
                        [0, 0, 1]])
  return transform, np.array([x0, y0, x0 + size, y0 + size])


def apply_crop(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Maps (N, 3) image points into the crop; z is scaled like x and y."""
  points = np.asarray(points, np.float64)
  out = times_rows(points, np.array([[transform[0, 0], transform[0, 1], 0],
                                     [transform[1, 0], transform[1, 1], 0],
                                     [0, 0, 1.0]]))
  out[:, :2] += transform[:2, 2]
  out[:, 2] = points[:, 2] * np.hypot(transform[0, 0], transform[1, 0])
  return out


def crop_image(image: np.ndarray, transform: np.ndarray,
               resolution: int) -> np.ndarray:
  """Warps an image into the R x R crop of `transform` (a 3 x 3 similarity,
  image -> crop, as `prnet_crop` makes): bilinear, black outside."""
  return cv2.warpAffine(image, np.asarray(transform, np.float64)[:2],
                        (resolution, resolution), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def grid_normals(points: np.ndarray, rows: int, cols: int) -> np.ndarray:
  """Unit normals of a row-major (rows, cols) grid surface, (N, 3).

  For a frontal face in camera space (y up, z to the camera) with u to the
  right and v down, these point towards the camera.
  """
  grid = np.ascontiguousarray(points, np.float64).reshape(rows, cols, 3)
  return _grid_normals(grid).reshape(-1, 3)


@numba.njit(cache=True, nogil=True)
def _grid_normals(grid):
  """(rows, cols, 3) float64 unit normals: the cross product of the
  surface's v and u differences (central inside, one-sided at the
  borders, as np.gradient), over its length plus 1e-12."""
  rows, cols = grid.shape[0], grid.shape[1]
  out = np.empty_like(grid)
  d_u, d_v = np.empty(3), np.empty(3)
  for i in range(rows):
    i0, i1 = max(i - 1, 0), min(i + 1, rows - 1)
    for j in range(cols):
      j0, j1 = max(j - 1, 0), min(j + 1, cols - 1)
      for k in range(3):
        d_u[k] = grid[i, j1, k] - grid[i, j0, k]
        if j1 - j0 == 2:
          d_u[k] /= 2.0
        d_v[k] = grid[i1, j, k] - grid[i0, j, k]
        if i1 - i0 == 2:
          d_v[k] /= 2.0
      x = d_v[1] * d_u[2] - d_v[2] * d_u[1]
      y = d_v[2] * d_u[0] - d_v[0] * d_u[2]
      z = d_v[0] * d_u[1] - d_v[1] * d_u[0]
      length = np.sqrt(x * x + y * y + z * z) + 1e-12
      out[i, j, 0] = x / length
      out[i, j, 1] = y / length
      out[i, j, 2] = z / length
  return out


@dataclasses.dataclass(frozen=True)
class Light:
  """Lambertian + ambient light; direction in camera space (towards light)."""
  direction: np.ndarray
  ambient: float
  diffuse: float
  colour: np.ndarray  # (3,) RGB multiplier


def random_light(rng: np.random.Generator) -> Light:
  azimuth = rng.uniform(-1.3, 1.3)
  elevation = rng.uniform(-0.6, 1.0)
  direction = np.array([np.sin(azimuth) * np.cos(elevation), np.sin(elevation),
                        np.cos(azimuth) * np.cos(elevation)])
  return Light(direction=direction, ambient=rng.uniform(0.25, 0.6),
               diffuse=rng.uniform(0.35, 0.85),
               colour=rng.uniform(0.85, 1.15, size=3))


def shade(normals: np.ndarray, light: Light) -> np.ndarray:
  """(N,) Lambertian + ambient intensity per vertex."""
  lambert = np.clip(times_rows(normals, light.direction), 0.0, None)
  return light.ambient + light.diffuse * lambert


@dataclasses.dataclass(frozen=True)
class SceneLight:
  """An environment (order-2 spherical harmonics) plus a key light.

  Values are linear RGB radiometry; camera space, y up, z to the camera.

  Attributes:
    sh: (9, 3) irradiance coefficients of the environment over the real
      order-2 basis (1, y, z, x, xy, yz, 3z^2 - 1, xz, x^2 - y^2) of the
      normal (x, y, z), unnormalised (already convolved with the cosine
      lobe), RGB.
    direction: (3,) unit direction towards the key light.
    key: (3,) RGB irradiance of the key light.
    specular: strength of the skin's Blinn-Phong sheen.
    shininess: its exponent.
    shadow: in [0, 1], how much of the key light a cast shadow removes.
  """
  sh: np.ndarray
  direction: np.ndarray
  key: np.ndarray
  specular: float
  shininess: float
  shadow: float

  @property
  def colour(self) -> np.ndarray:
    """RGB multiplier for `render_mesh` (the colour is in the shading)."""
    return np.ones(3, np.float32)


def random_scene_light(rng: np.random.Generator) -> SceneLight:
  """An indoor/outdoor-like light: tinted environment, key light, sheen."""
  warmth = rng.uniform(-1, 1)
  tint = 1 + warmth * np.array([0.14, 0.0, -0.18]) + rng.normal(0, 0.03, 3)
  env_tint = 1 + rng.uniform(-1, 1) * np.array([0.1, 0.0, -0.14])
  overcast = rng.random() < 0.2
  ambient = rng.uniform(0.45, 0.9) if overcast else rng.uniform(0.15, 0.5)
  sh = np.zeros((9, 3))
  sh[0] = ambient * env_tint
  # A brighter sky / ceiling above, a random side bias, some band 2.
  band1 = np.array([rng.uniform(0.0, 0.5), rng.uniform(-0.1, 0.3),
                    rng.uniform(-0.4, 0.4)])
  sh[[1, 2, 3]] = band1[:, None] * sh[0]
  sh[4:] = rng.normal(0, 0.06, (5, 1)) * sh[0]
  azimuth = rng.uniform(-1.25, 1.25)
  elevation = rng.uniform(-0.2, 1.0)
  direction = np.array([np.sin(azimuth) * np.cos(elevation), np.sin(elevation),
                        np.cos(azimuth) * np.cos(elevation)])
  key = (rng.uniform(0.0, 0.35) if overcast else rng.uniform(0.5, 1.3))
  return SceneLight(sh=sh.astype(np.float32), direction=direction,
                    key=(key * tint).astype(np.float32),
                    specular=float(rng.uniform(0.02, 0.2)),
                    shininess=float(rng.uniform(4, 30)),
                    shadow=float(rng.uniform(0.6, 1.0)))


def key_visibility(points: np.ndarray, direction: np.ndarray, bias: float,
                   normals: np.ndarray | None = None,
                   grid: tuple[int, int] | None = None,
                   cells: int = 56) -> np.ndarray:
  """(N,) in [0, 1]: 1 where the key light reaches a point (shadow map).

  The points (camera space, a dense surface such as the face mesh) are
  splatted into a `cells` x `cells` depth map seen from the light; a point
  is in shadow when its cell holds a point nearer the light by more than
  `bias`, plus a slope-scaled allowance when `normals` are given (a cell
  spans a range of depths on a surface the light grazes).

  Args:
    points: (N, 3) camera-space points.
    direction: (3,) towards the light.
    bias: depth tolerance in the points' units.
    normals: optional (N, 3) unit normals, for the slope-scaled bias.
    grid: optional (rows, cols) of a grid surface: the visibility is then
      smoothed over the grid (soft shadow edges).
    cells: side of the depth map.
  """
  d = np.asarray(direction, np.float64)
  d = d / np.linalg.norm(d)
  up = np.array([0.0, 1.0, 0.0]) if abs(d[1]) < 0.9 else np.array([1.0, 0, 0])
  e1 = np.cross(up, d)
  e1 /= np.linalg.norm(e1)
  e2 = np.cross(d, e1)
  proj = times_rows(points, np.stack([e1, e2, d]))
  # Column by column: numpy reduces an (N, 2) slice along axis 0 25 times
  # slower (0.4 ms a call at N = 10848).
  lo = np.array([proj[:, 0].min(), proj[:, 1].min()])
  hi = np.array([proj[:, 0].max(), proj[:, 1].max()])
  step = (hi - lo).max() / (cells - 1) + 1e-9
  cos = (np.clip(times_rows(normals, d), 0.05, 1.0)
         if normals is not None else np.ones(len(proj)))
  visibility = _shadow_map(proj, lo, step, cells, bias + step, cos,
                           normals is not None)
  if grid is not None:
    visibility = cv2.blur(visibility.reshape(grid).astype(np.float32),
                          (3, 3)).reshape(-1)
  return visibility


@numba.njit(cache=True, nogil=True)
def _shadow_map(proj, lo, step, cells, allowance, cos, slope_scaled):
  """`key_visibility`'s depth map and test, (N,) float64 in [0, 1].

  Each point goes to the cell (its light-plane coordinates - lo) / step;
  a cell keeps its points' largest depth towards the light; a point's
  gap is that depth less its own, less `allowance` (plus step x
  min(tan, 6) of its angle to the light if `slope_scaled`); visibility =
  clip(1 - gap / (3 step), 0, 1)."""
  count = proj.shape[0]
  flat = np.empty(count, np.int64)
  depth = np.full(cells * cells, -np.inf)
  for n in range(count):
    row = min(int((proj[n, 0] - lo[0]) / step), cells - 1)
    col = min(int((proj[n, 1] - lo[1]) / step), cells - 1)
    flat[n] = row * cells + col
    depth[flat[n]] = max(depth[flat[n]], proj[n, 2])
  visibility = np.empty(count)
  for n in range(count):
    margin = allowance
    if slope_scaled:
      margin = margin + step * min(
          np.sqrt(1 - cos[n] * cos[n]) / cos[n], 6.0)
    gap = depth[flat[n]] - proj[n, 2] - margin
    visibility[n] = min(max(1 - gap / (3 * step), 0.0), 1.0)
  return visibility


def shade_scene(normals: np.ndarray, light: SceneLight,
                visibility: np.ndarray | None = None,
                occlusion: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
  """Per-vertex diffuse RGB (N, 3) and specular (N,) intensity of skin.

  Args:
    normals: (N, 3) unit normals in camera space.
    light: the light.
    visibility: (N,) key-light visibility (1 lit, 0 in shadow) or None.
    occlusion: (N,) float32 ambient occlusion (1 open, 0 occluded) or None.
  """
  normals = np.ascontiguousarray(normals, np.float64)
  count = len(normals)
  ndl = times_rows(normals, light.direction)
  half = light.direction + np.array([0.0, 0.0, 1.0])
  half = half / np.linalg.norm(half)
  ndh = times_rows(normals, half)
  # The shadow's strength in the visibility's dtype (as numpy takes a
  # Python float), so a float32 or float64 visibility shades as before.
  has_visibility = visibility is not None
  visibility = (np.asarray(visibility) if has_visibility else
                np.ones(count, np.float32))
  shadow = visibility.dtype.type(light.shadow)
  diffuse, spec = np.empty((count, 3)), np.empty(count)
  _shade_scene(normals, np.asarray(light.sh, np.float32), ndl, ndh,
               visibility, shadow, has_visibility,
               np.ones(count, np.float32) if occlusion is None else
               np.asarray(occlusion, np.float32), occlusion is not None,
               float(light.specular), float(light.shininess),
               np.asarray(light.key, np.float32), diffuse, spec)
  return diffuse, spec


@numba.njit(cache=True, nogil=True)
def _shade_scene(normals, sh, ndl_all, ndh_all, visibility, shadow,
                 has_visibility, occlusion, has_occlusion, specular,
                 shininess, key, diffuse, spec):
  """`shade_scene` per vertex, into `diffuse` (N, 3) and `spec` (N,).

  The environment is float32 (`SceneLight.sh`'s basis rounded to float32,
  summed in its order, floored at a tenth of the constant term, times the
  occlusion); n.l and the sheen are float64: n.l clipped at 0, times the
  shadow's and the occlusion's factors (float32); sheen = specular x
  (n.h)^shininess where n.l > 0, x sqrt(n.l); diffuse = environment + n.l
  x key, its red channel raised to 0.85 (skin's subsurface scattering
  warms the shadows)."""
  one, floor = np.float32(1.0), np.float32(0.1)
  basis = np.empty(9, np.float32)
  for n in range(normals.shape[0]):
    x, y, z = normals[n, 0], normals[n, 1], normals[n, 2]
    basis[0], basis[1], basis[2], basis[3] = 1.0, y, z, x
    basis[4], basis[5], basis[6] = x * y, y * z, 3 * z * z - 1
    basis[7], basis[8] = x * z, x * x - y * y
    ndl = max(ndl_all[n], 0.0)
    if has_visibility:
      ndl = ndl * (one - shadow * (one - visibility[n]))
    if has_occlusion:
      ndl = ndl * (np.float32(0.6) + np.float32(0.4) * occlusion[n])
    ndh = max(ndh_all[n], 0.0)
    spec[n] = specular * ndh**shininess * (1.0 if ndl > 0 else 0.0) * (
        np.sqrt(ndl))
    for c in range(3):
      env = sh[0, c]
      for k in range(1, 9):
        env += sh[k, c] * basis[k]
      env = max(env, floor * sh[0, c])
      if has_occlusion:
        env *= occlusion[n]
      diffuse[n, c] = env + ndl * key[c]
    diffuse[n, 0] **= 0.85


def render_mesh(crop_vertices: np.ndarray, triangles: np.ndarray,
                vertex_uv: np.ndarray, intensity: np.ndarray,
                texture: np.ndarray, background: np.ndarray,
                light_colour: np.ndarray, specular: np.ndarray | None = None,
                linear: bool = False
                ) -> tuple[np.ndarray, raster_lib.Raster]:
  """Renders a textured, Gouraud-shaded mesh over a background.

  Args:
    crop_vertices: (N, 3) vertices in output pixels, z towards the camera.
    triangles: (F, 3) int.
    vertex_uv: (N, 2) texture coordinates in [0, 1].
    intensity: (N,) or (N, 3) RGB shading per vertex.
    texture: (T, T, 3) float32 albedo in [0, 1].
    background: (H, W, 3) float32 in [0, 1] (not modified).
    light_colour: (3,) RGB multiplier.
    specular: optional (N,) specular intensity added to the colour.
    linear: shade in linear light: the albedo is squared (a gamma of 2)
      before shading and the result square-rooted after.

  Returns:
    The (H, W, 3) float32 image in [0, 1], and the `Raster`.
  """
  height, width = background.shape[:2]
  r = raster_lib.rasterize(crop_vertices[:, :2], crop_vertices[:, 2],
                           triangles, height, width, cull_back=True)
  t = texture.shape[0]
  intensity = np.asarray(intensity, np.float32).reshape(len(crop_vertices), -1)
  parts = [intensity]
  if specular is not None:
    parts.append(np.asarray(specular, np.float32)[:, None])
  shading = raster_lib.barycentric_sum(np.concatenate(parts, 1), triangles,
                                       r.bary, r.triangle)
  # cv2.remap samples the texture at the covered pixels' UVs, laid out as
  # rows of 256 (remap limits both sides of its output to 32767).
  count = len(r.pixels)
  uv = np.zeros((count + -count % 256, 2), np.float32)
  raster_lib.barycentric_sum(np.asarray(vertex_uv * (t - 1), np.float32),
                             triangles, r.bary, r.triangle, out=uv[:count])
  albedo = cv2.remap(texture, uv.reshape(-1, 256, 2), None, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE).reshape(-1, 3)[:count]
  image = np.array(background, np.float32).reshape(-1, 3)
  _shade_pixels(image, r.pixels, albedo, shading,
                np.asarray(light_colour, np.float32), intensity.shape[1],
                specular is not None, bool(linear))
  return image.reshape(height, width, 3), r


@numba.njit(cache=True, nogil=True)
def _shade_pixels(image, pixels, albedo, attrs, light_colour, channels,
                  has_specular, linear):
  """In place: image[pixels] = the shaded colour, clipped to [0, 1].

  Per pixel and channel c (float32): shading = attrs[c or 0] *
  light_colour[c]; colour = albedo (squared if `linear`) * shading, plus
  attrs[channels] if `has_specular`; square-rooted if `linear`."""
  zero, one = np.float32(0.0), np.float32(1.0)
  for p in range(pixels.shape[0]):
    for c in range(3):
      shading = attrs[p, c if channels > 1 else 0] * light_colour[c]
      a = albedo[p, c]
      if linear:
        a = a * a
      colour = a * shading
      if has_specular:
        colour += attrs[p, channels]
      colour = min(max(colour, zero), one)
      if linear:
        colour = np.sqrt(colour)
      image[pixels[p], c] = colour
