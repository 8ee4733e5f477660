"""Camera, PRNet crop and shaded rendering of a face mesh (numpy).

Pose follows 300W-LP / 3DDFA: Pose_Para = [pitch, yaw, roll, tx, ty, tz, s]
(angles in radians), camera-space vertices = s * R(pitch, yaw, roll) V + t,
orthographic projection, and image y = H - 1 - camera y (face3d's
`transform_3ddfa` and its image flip). With this R, a positive yaw turns
the face towards the image left, so its right side faces the camera.

Products over vertices use np.einsum rather than @ (BLAS), whose rounding
depends on its thread count: rendered records are bitwise reproducible.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from jaxface.face import raster as raster_lib

POSE_FIELDS = ('pitch', 'yaw', 'roll', 'tx', 'ty', 'tz', 'scale')


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
  return scale * np.einsum('nk,jk->nj', np.asarray(vertices, np.float64),
                           rot) + [tx, ty, tz]


def camera_to_image(points: np.ndarray, image_height: int) -> np.ndarray:
  """Camera space (y up) -> image pixels (y down); z is kept."""
  out = np.array(points, np.float64, copy=True)
  out[..., 1] = image_height - 1 - out[..., 1]
  return out


def prnet_crop(landmarks_xy: np.ndarray, resolution: int,
               rng: np.random.Generator | None = None,
               expand: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
  """PRNet's crop around 68 landmarks, as its 300W-LP preparation does it.

  The box is centred on the landmarks' bounding box, its side is
  `expand` x the mean of the box's width and height; with `rng` the centre
  moves by up to 10 % of that mean and the side is scaled by U(0.9, 1.1)
  (face3d's `generate_posmap_300WLP` perturbation).

  Args:
    landmarks_xy: (68, 2+) landmark pixels in the original image.
    resolution: side of the square crop in pixels.
    rng: optional random generator for the perturbation.
    expand: side of the box relative to the landmarks' extent.

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
    centre = centre + rng.uniform(-0.1, 0.1, size=2) * old_size
    size = size * rng.uniform(0.9, 1.1)
  scale = (resolution - 1) / size
  x0, y0 = centre - size / 2
  transform = np.array([[scale, 0, -scale * x0], [0, scale, -scale * y0],
                        [0, 0, 1]])
  return transform, np.array([x0, y0, x0 + size, y0 + size])


def apply_crop(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Maps (N, 3) image points into the crop; z is scaled like x and y."""
  points = np.asarray(points, np.float64)
  out = np.einsum('nk,kj->nj', points,
                  np.array([[transform[0, 0], transform[1, 0], 0],
                            [transform[0, 1], transform[1, 1], 0],
                            [0, 0, 1.0]]))
  out[:, :2] += transform[:2, 2]
  out[:, 2] = points[:, 2] * np.hypot(transform[0, 0], transform[1, 0])
  return out


def grid_normals(points: np.ndarray, rows: int, cols: int) -> np.ndarray:
  """Unit normals of a row-major (rows, cols) grid surface, (N, 3).

  For a frontal face in camera space (y up, z to the camera) with u to the
  right and v down, these point towards the camera.
  """
  grid = np.asarray(points, np.float64).reshape(rows, cols, 3)
  d_u = np.gradient(grid, axis=1)
  d_v = np.gradient(grid, axis=0)
  normal = np.cross(d_v, d_u)
  normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-12
  return normal.reshape(-1, 3)


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
  lambert = np.clip(np.einsum('nk,k->n', normals, light.direction), 0.0, None)
  return light.ambient + light.diffuse * lambert


def render_mesh(crop_vertices: np.ndarray, triangles: np.ndarray,
                vertex_uv: np.ndarray, intensity: np.ndarray,
                texture: np.ndarray, background: np.ndarray,
                light_colour: np.ndarray
                ) -> tuple[np.ndarray, raster_lib.Raster]:
  """Renders a textured, Gouraud-shaded mesh over a background.

  Args:
    crop_vertices: (N, 3) vertices in output pixels, z towards the camera.
    triangles: (F, 3) int.
    vertex_uv: (N, 2) texture coordinates in [0, 1].
    intensity: (N,) shading per vertex.
    texture: (T, T, 3) float32 albedo in [0, 1].
    background: (H, W, 3) float32 in [0, 1] (not modified).
    light_colour: (3,) RGB multiplier.

  Returns:
    The (H, W, 3) float32 image in [0, 1], and the `Raster`.
  """
  height, width = background.shape[:2]
  r = raster_lib.rasterize(crop_vertices[:, :2], crop_vertices[:, 2],
                           triangles, height, width, cull_back=True)
  t = texture.shape[0]
  values = np.concatenate([vertex_uv * (t - 1), intensity[:, None]],
                          1).astype(np.float32)
  attrs = raster_lib.barycentric_sum(values, triangles[r.triangle], r.bary)
  # cv2.remap samples the texture at the covered pixels, laid out as rows
  # of 256 (remap limits both sides of its output to 32767).
  count = len(attrs)
  pad = np.zeros((-count % 256, 3), np.float32)
  block = np.concatenate([attrs, pad]).reshape(-1, 256, 3)
  albedo = cv2.remap(texture, block[..., 0], block[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE).reshape(-1, 3)[:count]
  colour = albedo * (attrs[:, 2:3] * np.asarray(light_colour, np.float32))
  image = np.array(background, np.float32).reshape(-1, 3)
  image[r.pixels] = np.clip(colour, 0.0, 1.0, out=colour)
  return image.reshape(height, width, 3), r
