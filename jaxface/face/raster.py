"""A vectorised numpy z-buffer triangle rasterizer.

Conventions: pixel (row i, column j) has its centre at image coordinates
(x=j, y=i), so x is in [-0.5, W-0.5) over the image, as in face3d / PRNet.
Depth `z` grows towards the camera (larger z wins), as in the position maps.

The rasterizer has no Python loop over triangles: every triangle is
expanded into the pixel centres of its bounding box with `np.repeat`, the
barycentric weights of all candidates are evaluated at once, and a max-reduction
z-buffer keeps the nearest candidate of each pixel. Face meshes have many
small triangles (a few pixels each), which is where this is fast.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def barycentric_sum(values: np.ndarray, corners: np.ndarray,
                    weights: np.ndarray) -> np.ndarray:
  """sum_k weights[:, k] * values[corners[:, k]]: (P, C) from (N, C).

  `np.take` with in-place sums: about twice as fast as `np.einsum` on a
  gathered (P, 3, C) array, and this is on every renderer's hot path.
  """
  values = np.asarray(values)
  out = np.take(values, corners[:, 0], axis=0)
  out *= weights[:, 0:1]
  for k in (1, 2):
    term = np.take(values, corners[:, k], axis=0)
    term *= weights[:, k:k + 1]
    out += term
  return out


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
    covered = barycentric_sum(values, np.asarray(triangles)[self.triangle],
                              self.bary)
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
    A `Raster`.
  """
  xy = np.asarray(xy, np.float64)
  z = np.asarray(z, np.float64)
  triangles = np.asarray(triangles, np.int64)
  p0, p1, p2 = (xy.take(triangles[:, k], axis=0) for k in range(3))
  area = ((p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) -
          (p2[:, 0] - p0[:, 0]) * (p1[:, 1] - p0[:, 1]))
  lo = np.ceil(np.minimum(np.minimum(p0, p1), p2) - 1e-9)
  hi = np.floor(np.maximum(np.maximum(p0, p1), p2) + 1e-9)
  # Clip in float first: vertices far outside must not overflow int32.
  lo = np.clip(lo, -1, max(height, width)).astype(np.int32)
  hi = np.clip(hi, -1, max(height, width)).astype(np.int32)
  lo = np.maximum(lo, 0)
  hi[:, 0] = np.minimum(hi[:, 0], width - 1)
  hi[:, 1] = np.minimum(hi[:, 1], height - 1)
  size = hi - lo + 1
  keep = (size[:, 0] > 0) & (size[:, 1] > 0)
  keep &= area > 1e-12 if cull_back else np.abs(area) > 1e-12
  face = np.nonzero(keep)[0]

  empty = Raster(height, width, np.zeros(0, np.int64), np.zeros(0, np.int32),
                 np.zeros((0, 3), np.float32), np.zeros(0, np.float32))
  if face.size == 0:
    return empty

  p0, p1, p2, area = p0[face], p1[face], p2[face], area[face]
  lo, size = lo[face], size[face]
  # Barycentric weight k at bbox-local offsets (dx, dy) is
  # a_k dx + b_k dy + c_k. The offsets are small, so float32 is exact
  # enough per candidate; the coefficients are formed in float64.
  inv = 1.0 / area
  coef = []
  for pa, pb in ((p1, p2), (p2, p0)):
    a = (pa[:, 1] - pb[:, 1]) * inv
    b = (pb[:, 0] - pa[:, 0]) * inv
    c = (pa[:, 0] * pb[:, 1] - pb[:, 0] * pa[:, 1]) * inv
    c = c + a * lo[:, 0] + b * lo[:, 1]
    coef.append((a.astype(np.float32), b.astype(np.float32),
                 c.astype(np.float32)))
  # Depth is affine over a triangle: z = z2 + w0 (z0 - z2) + w1 (z1 - z2).
  zt = z[triangles[face]]
  (a0, b0, c0), (a1, b1, c1) = coef
  d0, d1 = zt[:, 0] - zt[:, 2], zt[:, 1] - zt[:, 2]
  za, zb, zc = a0 * d0 + a1 * d1, b0 * d0 + b1 * d1, c0 * d0 + c1 * d1 + zt[:,
                                                                            2]

  # Candidates are grouped by triangle, so per-triangle values are spread
  # to them with np.repeat (sequential) rather than gathered with cand.
  count = size[:, 0] * size[:, 1]
  cand = np.repeat(np.arange(face.size, dtype=np.int32), count)
  local = np.arange(cand.size, dtype=np.int32) - np.repeat(
      (np.cumsum(count) - count).astype(np.int32), count)
  bw = np.repeat(size[:, 0].astype(np.int32), count)
  dy = local // bw
  dx = (local - dy * bw).astype(np.float32)
  dy = dy.astype(np.float32)

  # Inside test: w2 = 1 - w0 - w1 needs no gathers; one integer-index
  # filter is cheaper than boolean-filtering every array twice.
  w0 = np.repeat(a0, count) * dx
  w0 += np.repeat(b0, count) * dy
  w0 += np.repeat(c0, count)
  w1 = np.repeat(a1, count) * dx
  w1 += np.repeat(b1, count) * dy
  w1 += np.repeat(c1, count)
  inside = np.flatnonzero((w0 >= -eps) & (w1 >= -eps) & (w0 + w1 <= 1 + eps))
  cand, dx, dy = cand[inside], dx[inside], dy[inside]
  w0, w1 = w0[inside], w1[inside]
  zcand = za[cand] * dx + zb[cand] * dy + zc[cand]
  pix = ((lo[cand, 1] + dy.astype(np.int32)) * np.int32(width) +
         lo[cand, 0] + dx.astype(np.int32))

  # Z-test: a max-reduction into the depth buffer, then each pixel takes a
  # candidate whose depth equals the maximum (one of them, on exact ties).
  flat_depth = np.full(height * width, -np.inf)
  np.maximum.at(flat_depth, pix, zcand)
  win = np.flatnonzero(zcand >= flat_depth[pix])
  owner = np.full(height * width, -1, np.int32)
  owner[pix[win]] = win
  pixels = np.flatnonzero(owner >= 0)
  win = owner[pixels]
  cand, w0, w1 = cand[win], w0[win], w1[win]
  bary = np.stack([w0, w1, 1 - w0 - w1], 1).astype(np.float32)
  return Raster(height, width, pixels, face[cand].astype(np.int32), bary,
                flat_depth[pixels].astype(np.float32))
