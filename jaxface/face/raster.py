"""A vectorised numpy z-buffer triangle rasterizer.

Conventions: pixel (row i, column j) has its centre at image coordinates
(x=j, y=i), so x is in [-0.5, W-0.5) over the image, as in face3d / PRNet.
Depth `z` grows towards the camera (larger z wins), as in the position maps.

The loops over triangles and pixels are compiled with numba (a face mesh
has tens of thousands of triangles of a few pixels each, where vectorised
numpy spends its time creating candidate arrays): each triangle visits
the pixel centres of its bounding box, and a z-buffer keeps the nearest.
The arithmetic is the float32 / float64 arithmetic of the vectorised
numpy implementation it replaced, operation for operation, so that renders
are the same to the bit (numba compiles without fast-math, and LLVM does
not contract a * b + c into a fused multiply-add without it).
"""

from __future__ import annotations

import dataclasses

import numba
import numpy as np


def barycentric_sum(values: np.ndarray, corners: np.ndarray,
                    weights: np.ndarray, rows: np.ndarray | None = None,
                    out: np.ndarray | None = None) -> np.ndarray:
  """sum_k weights[:, k] * values[corners[p, k]]: (P, C) from (N, C).

  The result has `values`' dtype; each product is formed in the dtypes'
  common type and rounded to it, then summed in order k = 0, 1, 2.

  Args:
    values: (N, C) per-vertex values.
    corners: (P, 3) vertex indices; or with `rows`, a table (F, 3) of
      which output p reads row rows[p] (e.g. a mesh's triangles and a
      `Raster`'s triangle per pixel), without gathering it first.
    weights: (P, 3) barycentric weights.
    rows: optional (P,) indices into `corners`.
    out: optional (P, C) C-contiguous array of `values`' dtype to write.
  """
  values = np.asarray(values)
  corners = np.asarray(corners)
  weights = np.asarray(weights)
  rows = (np.arange(len(corners)) if rows is None else np.asarray(rows))
  if values.ndim != 2 or corners.ndim != 2 or corners.shape[1] != 3 or (
      rows.ndim != 1 or weights.shape != (len(rows), 3)):
    raise ValueError(f'barycentric_sum needs (N, C) values, (P, 3) corners '
                     f'(or (F, 3) and (P,) rows) and (P, 3) weights, got '
                     f'{values.shape}, {corners.shape}, {rows.shape} and '
                     f'{weights.shape}')
  shape = (len(rows), values.shape[1])
  if out is None:
    out = np.empty(shape, values.dtype)
  elif out.shape != shape or out.dtype != values.dtype or not (
      out.flags.c_contiguous):
    raise ValueError(f'out must be a C-contiguous {shape} {values.dtype} '
                     f'array, got {out.shape} {out.dtype}')
  if out.size:
    _barycentric_sum(np.ascontiguousarray(values),
                     np.ascontiguousarray(corners), np.ascontiguousarray(rows),
                     np.ascontiguousarray(weights), out)
  return out


@numba.njit(cache=True, nogil=True)
def _barycentric_sum(values, corners, rows, weights, out):
  rounded = out.dtype.type  # each product rounded to out's dtype
  n, f = values.shape[0], corners.shape[0]
  for p in range(rows.shape[0]):
    row = rows[p]
    if row < 0 or row >= f:
      raise IndexError('barycentric_sum: a row index is out of range')
    i0, i1, i2 = corners[row, 0], corners[row, 1], corners[row, 2]
    if min(i0, i1, i2) < 0 or max(i0, i1, i2) >= n:
      raise IndexError('barycentric_sum: a corner index is out of range')
    w0, w1, w2 = weights[p, 0], weights[p, 1], weights[p, 2]
    for c in range(values.shape[1]):
      total = rounded(values[i0, c] * w0)
      total += rounded(values[i1, c] * w1)
      total += rounded(values[i2, c] * w2)
      out[p, c] = total


@dataclasses.dataclass(frozen=True)
class Raster:
  """Which triangle covers each pixel of an (H, W) image.

  Only covered pixels are stored (P of them).

  Attributes:
    height, width: image size.
    pixels: (P,) int64 flat pixel indices (row * width + column).
    triangle: (P,) int32 index of the visible triangle at each pixel.
    bary: (P, 3) float32 barycentric weights of its three vertices.
    depth: (P,) float32 interpolated depth.
  """
  height: int
  width: int
  pixels: np.ndarray
  triangle: np.ndarray
  bary: np.ndarray
  depth: np.ndarray

  @property
  def mask(self) -> np.ndarray:
    """(H, W) bool: True where some triangle covers the pixel."""
    mask = np.zeros(self.height * self.width, bool)
    mask[self.pixels] = True
    return mask.reshape(self.height, self.width)

  def triangle_image(self) -> np.ndarray:
    """(H, W) int32 visible triangle per pixel, -1 for background."""
    out = np.full(self.height * self.width, -1, np.int32)
    out[self.pixels] = self.triangle
    return out.reshape(self.height, self.width)

  def interpolate(self, vertex_values: np.ndarray, triangles: np.ndarray,
                  background: float | np.ndarray = 0.0) -> np.ndarray:
    """Interpolates per-vertex values (N, C) to pixels: (H, W, C) float32."""
    values = np.asarray(vertex_values, np.float32)
    covered = barycentric_sum(values, triangles, self.bary, self.triangle)
    out = np.empty((self.height * self.width, values.shape[1]), np.float32)
    out[...] = background
    out[self.pixels] = covered
    return out.reshape(self.height, self.width, -1)


def rasterize(xy: np.ndarray, z: np.ndarray, triangles: np.ndarray,
              height: int, width: int, eps: float = 1e-5,
              cull_back: bool = False) -> Raster:
  """Rasterizes triangles with a z-buffer.

  Args:
    xy: (N, 2) vertex positions in pixels (x right, y down).
    z: (N,) vertex depth; larger is nearer to the camera.
    triangles: (F, 3) int vertex indices.
    height, width: output size in pixels.
    eps: tolerance of the inside test, in units of the barycentric weights,
      so that pixel centres on a shared edge are covered.
    cull_back: drop triangles whose screen winding is negative (for jaxface
      meshes, those facing away from the camera: with y down, a front face
      (a, b, c) has (b - a) x (c - a) > 0).

  Returns:
    A `Raster`. Where candidates tie in depth, the last one (in triangle
    order, then row by row within its bounding box) wins.
  """
  xy = np.ascontiguousarray(xy, np.float64)
  z = np.ascontiguousarray(z, np.float64)
  triangles = np.ascontiguousarray(triangles, np.int64)
  if xy.ndim != 2 or xy.shape[1] != 2 or z.shape != xy.shape[:1] or (
      triangles.ndim != 2 or triangles.shape[1] != 3):
    raise ValueError(f'rasterize needs (N, 2) xy, (N,) z and (F, 3) '
                     f'triangles, got {xy.shape}, {z.shape} and '
                     f'{triangles.shape}')
  if triangles.size and (triangles.min() < 0 or triangles.max() >= len(xy)):
    raise IndexError(f'triangle vertex indices out of range for {len(xy)} '
                     'vertices')
  # The inside test's bounds in float32, as numpy compares float32
  # weights with a Python float.
  return Raster(height, width, *_rasterize(
      xy, z, triangles, int(height), int(width), np.float32(-eps),
      np.float32(1 + eps), bool(cull_back)))


@numba.njit(cache=True, nogil=True)
def _pixel_bound(value, limit):
  """A bounding box's edge as an int, clipped to [-1, limit] in float
  first: vertices far outside the image must not overflow."""
  return int(min(max(value, -1.0), limit))


@numba.njit(cache=True, nogil=True)
def _rasterize(xy, z, triangles, height, width, lower, upper, cull_back):
  """The z-buffer, then its covered pixels in order: `Raster`'s pixels,
  triangle, bary and depth."""
  depth = np.full(height * width, -np.inf)
  owner = np.full(height * width, -1, np.int32)
  w0_out = np.zeros(height * width, np.float32)
  w1_out = np.zeros(height * width, np.float32)
  limit = float(max(height, width))
  for f in range(triangles.shape[0]):
    i0, i1, i2 = triangles[f, 0], triangles[f, 1], triangles[f, 2]
    x0, y0, x1, y1 = xy[i0, 0], xy[i0, 1], xy[i1, 0], xy[i1, 1]
    x2, y2 = xy[i2, 0], xy[i2, 1]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    if not (area > 1e-12 if cull_back else abs(area) > 1e-12):
      continue
    lo_x = max(_pixel_bound(np.ceil(min(x0, x1, x2) - 1e-9), limit), 0)
    lo_y = max(_pixel_bound(np.ceil(min(y0, y1, y2) - 1e-9), limit), 0)
    hi_x = min(_pixel_bound(np.floor(max(x0, x1, x2) + 1e-9), limit),
               width - 1)
    hi_y = min(_pixel_bound(np.floor(max(y0, y1, y2) + 1e-9), limit),
               height - 1)
    if hi_x < lo_x or hi_y < lo_y:
      continue
    # Barycentric weight k at bbox-local offsets (dx, dy) is
    # a_k dx + b_k dy + c_k: coefficients formed in float64, evaluated in
    # float32 (the offsets are small).
    inv = 1.0 / area
    a0 = (y1 - y2) * inv
    b0 = (x2 - x1) * inv
    c0 = (x1 * y2 - x2 * y1) * inv + a0 * lo_x + b0 * lo_y
    a1 = (y2 - y0) * inv
    b1 = (x0 - x2) * inv
    c1 = (x2 * y0 - x0 * y2) * inv + a1 * lo_x + b1 * lo_y
    a0, b0, c0 = np.float32(a0), np.float32(b0), np.float32(c0)
    a1, b1, c1 = np.float32(a1), np.float32(b1), np.float32(c1)
    # Depth is affine over a triangle: z = z2 + w0 (z0 - z2) + w1 (z1 - z2).
    d0, d1 = z[i0] - z[i2], z[i1] - z[i2]
    za = np.float64(a0) * d0 + np.float64(a1) * d1
    zb = np.float64(b0) * d0 + np.float64(b1) * d1
    zc = np.float64(c0) * d0 + np.float64(c1) * d1 + z[i2]
    for row in range(lo_y, hi_y + 1):
      dy = np.float32(row - lo_y)
      for col in range(lo_x, hi_x + 1):
        dx = np.float32(col - lo_x)
        w0 = a0 * dx
        w0 += b0 * dy
        w0 += c0
        w1 = a1 * dx
        w1 += b1 * dy
        w1 += c1
        if w0 >= lower and w1 >= lower and w0 + w1 <= upper:
          candidate = za * np.float64(dx) + zb * np.float64(dy) + zc
          pixel = row * width + col
          if candidate >= depth[pixel]:
            depth[pixel] = candidate
            owner[pixel] = f
            w0_out[pixel] = w0
            w1_out[pixel] = w1
  count = 0
  for pixel in range(height * width):
    count += owner[pixel] >= 0
  pixels = np.empty(count, np.int64)
  triangle = np.empty(count, np.int32)
  bary = np.empty((count, 3), np.float32)
  covered_depth = np.empty(count, np.float32)
  p = 0
  for pixel in range(height * width):
    if owner[pixel] >= 0:
      pixels[p], triangle[p] = pixel, owner[pixel]
      w0, w1 = w0_out[pixel], w1_out[pixel]
      bary[p, 0], bary[p, 1], bary[p, 2] = w0, w1, np.float32(1) - w0 - w1
      covered_depth[p] = depth[pixel]
      p += 1
  return pixels, triangle, bary, covered_depth
