"""UV position maps: conventions, vertices <-> maps, bilinear sampling.

Conventions used everywhere in jaxface:
- UV coordinates (u, v) are in [0, 1]^2; u grows to the right and v grows
  downwards, so a frontal face's UV map looks like the face's image (the
  subject's right side, which appears on the image left, is at small u).
- A UV map of resolution (H, W) has texel (row i, column j) at
  uv = (j / (W - 1), i / (H - 1)): the corner texels sit exactly on the
  border of the UV square, as in face3d's `uv_coords * (resolution - 1)`.
- A position map holds, at every texel, the 3D point of the face with those
  UV coordinates: (x, y) in pixels of the image crop (x right, y down) and z
  the depth towards the camera, shifted so that its minimum is 0.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from jaxface.face import raster


def grid_triangles(rows: int, cols: int, mask: np.ndarray | None = None
                   ) -> np.ndarray:
  """Triangulates a (rows, cols) grid of points indexed row-major.

  Each cell (i, j) gives two triangles, (i,j) (i,j+1) (i+1,j) and
  (i,j+1) (i+1,j+1) (i+1,j), counter-clockwise in the (u, v-down) plane's
  screen orientation.

  Args:
    rows, cols: grid size.
    mask: optional (rows, cols) bool; only triangles whose three corners are
      all True are kept.

  Returns:
    (F, 3) int32 vertex indices.
  """
  idx = np.arange(rows * cols, dtype=np.int32).reshape(rows, cols)
  a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
  c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
  tri = np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])
  if mask is not None:
    keep = np.asarray(mask).reshape(-1)
    tri = tri[keep[tri].all(axis=1)]
  return tri


def _is_jax_array(value) -> bool:
  # Data making (numpy only) runs in worker processes that never import JAX:
  # where it is not imported, nothing can be a JAX array (or tracer).
  jax = sys.modules.get('jax')
  return jax is not None and isinstance(value, jax.Array)


def uv_to_texel(uv, height: int, width: int):
  """(..., 2) UV coordinates -> (..., 2) continuous texel coords (col, row)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  scale = jnp.asarray([width - 1, height - 1], jnp.float32)
  return jnp.asarray(uv, jnp.float32) * scale


def mirror_position_maps(position_maps, width: int):
  """The position maps of the mirror image: (..., H, W', 3) maps in pixels
  of an image `width` pixels wide -> the maps of that image flipped left to
  right. The UV layout is mirror-symmetric about u = 1/2 (a layout's
  landmarks: `layout.UVLayout.is_mirror_symmetric`), so the texel at u moves
  to 1 - u (columns reversed), and x -> width - 1 - x. numpy in, numpy out;
  jax in, jax out (works under jit); applying it twice gives the input."""
  if isinstance(position_maps, np.ndarray):
    xp = np
    if position_maps.ndim == 3 and position_maps.dtype in (np.float32,
                                                           np.float64):
      # One map (the input pipeline's flip): cv2's flip copies it in a
      # quarter of numpy's time; the same values.
      import cv2  # pylint: disable=g-import-not-at-top
      out = cv2.flip(np.ascontiguousarray(position_maps), 1)
      np.subtract(out.dtype.type(width - 1), out[..., 0], out=out[..., 0])
      return out
  else:
    import jax.numpy as xp  # pylint: disable=g-import-not-at-top
  mirrored = position_maps[..., ::-1, :]
  return xp.concatenate([(width - 1) - mirrored[..., :1], mirrored[..., 1:]],
                        axis=-1)


def sample_uv(uv_map, uv):
  """Bilinearly samples a UV map at UV coordinates.

  Differentiable in `uv_map` (and in `uv`), works under jit and vmap.

  Args:
    uv_map: (..., H, W, C) map, e.g. a position map; leading dims are batch.
    uv: (P, 2) or (..., P, 2) UV coordinates in [0, 1]. With leading dims
      they must match `uv_map`'s batch dims.

  Returns:
    (..., P, C) sampled values.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  uv_map = jnp.asarray(uv_map)
  height, width = uv_map.shape[-3], uv_map.shape[-2]
  texel = uv_to_texel(uv, height, width)
  x = jnp.clip(texel[..., 0], 0.0, width - 1.0)
  y = jnp.clip(texel[..., 1], 0.0, height - 1.0)
  x0 = jnp.clip(jnp.floor(x), 0, width - 2).astype(jnp.int32)
  y0 = jnp.clip(jnp.floor(y), 0, height - 2).astype(jnp.int32)
  fx = (x - x0)[..., None]
  fy = (y - y0)[..., None]
  flat = uv_map.reshape(uv_map.shape[:-3] + (height * width, -1))

  def gather(yy, xx):
    index = yy * width + xx
    if index.ndim == 1:
      return jnp.take(flat, index, axis=-2)
    index = jnp.broadcast_to(index, flat.shape[:-2] + index.shape[-1:])
    return jnp.take_along_axis(flat, index[..., None], axis=-2)

  top = gather(y0, x0) * (1 - fx) + gather(y0, x0 + 1) * fx
  bottom = gather(y0 + 1, x0) * (1 - fx) + gather(y0 + 1, x0 + 1) * fx
  return top * (1 - fy) + bottom * fy


@dataclasses.dataclass(frozen=True)
class UVRaster:
  """A mesh rasterized in UV space: which vertices make up each texel.

  Built once per (mesh, resolution); turning any vertex positions of that
  mesh into a UV map is then a gather and a weighted sum.

  Attributes:
    vertex_ids: (H, W, 3) int32 vertex indices of the triangle over a texel.
    weights: (H, W, 3) float32 barycentric weights (zero off the mesh).
    covered: (H, W) bool, True where a triangle covers the texel.
  """
  vertex_ids: np.ndarray
  weights: np.ndarray
  covered: np.ndarray

  @classmethod
  def build(cls, uv_coords: np.ndarray, triangles: np.ndarray,
            height: int, width: int) -> 'UVRaster':
    """Rasterizes `triangles` at `uv_coords` (N, 2) into an (H, W) grid."""
    texel = np.asarray(uv_coords, np.float64) * [width - 1, height - 1]
    # Slight eps so texel centres on the UV square's border are covered.
    r = raster.rasterize(texel, np.zeros(len(texel)), triangles, height,
                         width, eps=1e-5)
    ids = np.zeros((height * width, 3), np.int32)
    weights = np.zeros((height * width, 3), np.float32)
    ids[r.pixels] = np.asarray(triangles, np.int32)[r.triangle]
    weights[r.pixels] = r.bary
    return cls(ids.reshape(height, width, 3),
               weights.reshape(height, width, 3), r.mask)

  def apply(self, vertex_values):
    """(..., N, C) per-vertex values -> (..., H, W, C) UV map.

    numpy in, numpy out (float32, the fast path for data making); jnp in,
    jnp out (differentiable, for use inside models).
    """
    height, width = self.covered.shape
    if _is_jax_array(vertex_values):
      import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
      vals = vertex_values[..., self.vertex_ids, :]  # (..., H, W, 3, C)
      return jnp.einsum('...hwkc,hwk->...hwc', vals, self.weights)
    values = np.asarray(vertex_values, np.float32)
    if values.ndim != 2:
      return np.stack([self.apply(v) for v in values])
    out = raster.barycentric_sum(values, self.vertex_ids.reshape(-1, 3),
                                 self.weights.reshape(-1, 3))
    return out.reshape(height, width, -1)


def position_map_to_vertices(position_map, uv_coords):
  """Reads vertex positions (N, 3) off a position map at their UV coords."""
  return sample_uv(position_map, uv_coords)
