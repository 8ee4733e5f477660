"""Position map -> triangle mesh, and OBJ / PLY files through trimesh.

Meshes are numpy arrays: vertices (N, 3) float32, triangles (F, 3) int32
0-based vertex indices, colors (N, 3) float32 RGB in [0, 1] or None. Files
store colours as uint8 RGB (PLY adds an opaque alpha), so they come back
within half a step of 1/255; OBJ stores coordinates with 8 decimals (exact
for pixel-sized float32 values, within 1e-8 near 0).

In memory, vertices are in jaxface's image frame: x right, y down (pixels),
z depth towards the camera. Viewers (MeshLab, Blender, trimesh) use y up, so
the writers store (x, -y, z) by default (`y_up=True`). Negating one axis
mirrors the mesh, which turns counter-clockwise triangles clockwise, so the
writers then also reverse every triangle's winding: normals that pointed
towards the camera still do. The readers undo exactly this with the same
`y_up` flag, so `read_*(write_*(mesh))` gives back `mesh`.
"""

from __future__ import annotations

import os

import numpy as np
import trimesh

from jaxface import files
from jaxface.face import uv

PathLike = str | os.PathLike


def _bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
  """Samples (h, w, C) `image` at (N, 2) pixel positions (x, y), clamped.

  Pixel (row i, column j) has its centre at (x=j, y=i), as in `raster`.
  """
  h, w = image.shape[:2]
  img = image.astype(np.float32)
  x = np.clip(xy[:, 0].astype(np.float64), 0.0, w - 1.0)
  y = np.clip(xy[:, 1].astype(np.float64), 0.0, h - 1.0)
  x0 = np.floor(x).astype(np.int64)
  y0 = np.floor(y).astype(np.int64)
  x1 = np.minimum(x0 + 1, w - 1)
  y1 = np.minimum(y0 + 1, h - 1)
  fx = (x - x0)[:, None]
  fy = (y - y0)[:, None]
  top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
  bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
  return (top * (1 - fy) + bottom * fy).astype(np.float32)


def position_map_to_mesh(position_map: np.ndarray,
                         mask: np.ndarray | None = None,
                         image: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """Turns a UV position map into a triangle mesh.

  Args:
    position_map: (H, W, 3) positions (x, y in image pixels, y down; z depth).
    mask: optional (H, W) bool; texels where it is True become vertices (all
      texels when None). Positions outside the mask may be NaN.
    image: optional (h, w, 3) uint8 RGB image the positions refer to; vertex
      colours are sampled from it bilinearly at the vertices' (x, y), with
      pixel centres at integer coordinates and positions clamped to the image.

  Returns:
    vertices: (N, 3) float32, the kept texels in row-major order.
    triangles: (F, 3) int32 indices into `vertices`: the grid triangles of
      `uv.grid_triangles` whose three corners are kept.
    colors: (N, 3) float32 RGB in [0, 1], or None without `image`.

  Raises:
    ValueError: on wrong shapes or dtypes, or non-finite kept positions.
  """
  pm = np.asarray(position_map)
  if pm.ndim != 3 or pm.shape[-1] != 3:
    raise ValueError(f"position_map must be (H, W, 3), got {pm.shape}.")
  height, width = pm.shape[:2]
  if mask is None:
    keep = np.ones(height * width, bool)
  else:
    mask = np.asarray(mask)
    if mask.shape != (height, width):
      raise ValueError(
          f"mask must be {(height, width)} like the map, got {mask.shape}.")
    keep = mask.astype(bool).reshape(-1)
  vertices = pm.reshape(-1, 3)[keep].astype(np.float32)
  if not np.all(np.isfinite(vertices)):
    raise ValueError("position_map has non-finite positions inside the mask.")

  triangles = uv.grid_triangles(height, width, keep.reshape(height, width))
  new_index = np.full(height * width, -1, np.int32)
  new_index[keep] = np.arange(len(vertices), dtype=np.int32)
  triangles = new_index[triangles].astype(np.int32)

  colors = None
  if image is not None:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError("image must be (h, w, 3) uint8 RGB, got "
                       f"{image.shape} {image.dtype}.")
    colors = _bilinear(image, vertices[:, :2]) / np.float32(255.0)
  return vertices, triangles, colors


def _validate(vertices, triangles, colors):
  """Checks a mesh and returns it as (float32, int64, float32 | None)."""
  v = np.asarray(vertices)
  if v.ndim != 2 or v.shape[1] != 3:
    raise ValueError(f"vertices must be (N, 3), got {v.shape}.")
  if not np.issubdtype(v.dtype, np.number):
    raise ValueError(f"vertices must be numeric, got {v.dtype}.")
  v = v.astype(np.float32)
  if not np.all(np.isfinite(v)):
    raise ValueError("vertices contain NaN or inf.")
  t = np.asarray(triangles)
  if t.size == 0:
    t = t.reshape(0, 3)
  if t.ndim != 2 or t.shape[1] != 3:
    raise ValueError(f"triangles must be (F, 3), got {t.shape}.")
  if t.size and not np.issubdtype(t.dtype, np.integer):
    raise ValueError(f"triangles must be integers, got {t.dtype}.")
  t = t.astype(np.int64)
  if t.size and (t.min() < 0 or t.max() >= len(v)):
    raise ValueError(f"triangle indices must be in [0, {len(v)}), got "
                     f"[{t.min()}, {t.max()}].")
  c = None
  if colors is not None:
    c = np.asarray(colors)
    if c.shape != v.shape:
      raise ValueError(f"colors must be {v.shape} like vertices, got "
                       f"{c.shape}.")
    if c.dtype == np.uint8:
      c = c.astype(np.float32) / 255.0
    c = c.astype(np.float32)
    if not np.all(np.isfinite(c)):
      raise ValueError("colors contain NaN or inf.")
    # Bilinear sampling may overshoot 1 by a rounding error.
    if c.min() < -1e-4 or c.max() > 1 + 1e-4:
      raise ValueError(f"colors must be in [0, 1], got [{c.min()}, "
                       f"{c.max()}].")
    c = np.clip(c, 0.0, 1.0)
  return v, t, c


def _flip(vertices, triangles, y_up: bool):
  """Image frame <-> y-up frame; an involution."""
  if not y_up:
    return vertices, triangles
  # + 0 turns -0.0 into 0.0 in text files.
  flipped = vertices * np.asarray([1, -1, 1], vertices.dtype) + 0
  return flipped, triangles[:, [0, 2, 1]]


def _export(path: PathLike, vertices, triangles, colors, y_up: bool,
            file_type: str, **options) -> None:
  """Validates, flips and writes a mesh atomically with trimesh."""
  v, t, c = _validate(vertices, triangles, colors)
  v, t = _flip(v, t, y_up)
  c8 = None if c is None else np.round(c * 255.0).astype(np.uint8)
  mesh = trimesh.Trimesh(v, t, vertex_colors=c8, process=False)
  data = mesh.export(file_type=file_type, **options)
  files.write_atomic(os.fspath(path), data)


def write_obj(path: PathLike, vertices: np.ndarray, triangles: np.ndarray,
              colors: np.ndarray | None = None, y_up: bool = True) -> None:
  """Writes a Wavefront OBJ, with per-vertex colours as `v x y z r g b`.

  Coordinates have 8 decimals; colours are uint8 steps written as floats.

  Args:
    path: output file; missing parent directories are created, and readers
      see the old file or the new one, never a part.
    vertices: (N, 3) positions in the image frame (x right, y down, z depth).
    triangles: (F, 3) 0-based vertex indices (written 1-based).
    colors: optional (N, 3) RGB, float in [0, 1] (rounded to 0..255) or uint8.
    y_up: write (x, -y, z) with reversed winding (see the module docstring).

  Raises:
    ValueError: on wrong shapes, non-finite values, out-of-range indices.
  """
  _export(path, vertices, triangles, colors, y_up, "obj",
          header="written by jaxface")


def write_ply(path: PathLike, vertices: np.ndarray, triangles: np.ndarray,
              colors: np.ndarray | None = None, y_up: bool = True,
              binary: bool = True) -> None:
  """Writes a PLY: float x y z [uchar red green blue alpha], int triangles.

  Args:
    path: output file; missing parent directories are created, and readers
      see the old file or the new one, never a part.
    vertices: (N, 3) positions in the image frame (x right, y down, z depth).
    triangles: (F, 3) 0-based vertex indices; (0, 3) writes a point cloud.
    colors: optional (N, 3) RGB, float in [0, 1] (rounded to 0..255) or uint8.
    y_up: write (x, -y, z) with reversed winding (see the module docstring).
    binary: binary little endian (default) or ascii.

  Raises:
    ValueError: on wrong shapes, non-finite values, out-of-range indices.
  """
  _export(path, vertices, triangles, colors, y_up, "ply",
          encoding="binary" if binary else "ascii")


def _load(path: PathLike, file_type: str, y_up: bool, **options
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """Reads a mesh or point cloud with trimesh; see `read_obj`."""
  name = file_type.upper()
  with open(path, "rb") as f:  # FileNotFoundError names the path.
    try:
      loaded = trimesh.load(f, file_type=file_type, process=False, **options)
      if isinstance(loaded, trimesh.Scene) and loaded.geometry:
        # An OBJ with several materials: one part per material.
        loaded = trimesh.util.concatenate(tuple(loaded.geometry.values()))
    except Exception as e:  # trimesh raises many kinds on malformed files.
      raise ValueError(f"{path} is not a readable {name} file: {e!r}") from e
  if not isinstance(loaded, (trimesh.Trimesh, trimesh.PointCloud)):
    raise ValueError(f"{path} holds no {name} vertices.")
  v = np.asarray(loaded.vertices)
  if v.ndim != 2 or v.shape[1] != 3:
    raise ValueError(f"{path}: {name} vertices must have 3 coordinates.")
  if isinstance(loaded, trimesh.PointCloud):  # A file without faces.
    t = np.zeros((0, 3), np.int64)
    c = loaded.colors if len(loaded.colors) else None
  else:
    t = np.asarray(loaded.faces, np.int64).reshape(-1, 3)
    c = loaded.visual.vertex_colors if loaded.visual.kind == "vertex" else None
  if t.size and (t.min() < 0 or t.max() >= len(v)):
    raise ValueError(f"{path}: {name} face indices out of range.")
  v, t = _flip(v.astype(np.float32), t.astype(np.int32), y_up)
  if c is not None:
    c = np.asarray(c)[:, :3].astype(np.float32) / np.float32(255.0)
  return v, t, c


def read_obj(path: PathLike, y_up: bool = True
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """Reads an OBJ's vertices (with optional r g b) and faces.

  Every vertex is kept, in file order, used by a face or not; polygons are
  triangulated.

  Args:
    path: the file.
    y_up: the file is y-up (as `write_obj` writes by default): return
      (x, -y, z) with reversed winding, i.e. the image frame.

  Returns:
    vertices (N, 3) float32, triangles (F, 3) int32 0-based, colors (N, 3)
    float32 in [0, 1] (uint8 steps) or None when no vertex has a colour.

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: the file is malformed or holds no vertices.
  """
  return _load(path, "obj", y_up, maintain_order=True)


def read_ply(path: PathLike, y_up: bool = True
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """Reads vertices, faces and vertex colours of an ascii or binary PLY.

  Args:
    path: the file.
    y_up: the file is y-up (as `write_ply` writes by default): return
      (x, -y, z) with reversed winding, i.e. the image frame.

  Returns:
    vertices (N, 3) float32, triangles (F, 3) int32 0-based ((0, 3) for a
    point cloud), colors (N, 3) float32 in [0, 1] (uint8 steps) or None.

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: the file is malformed or holds no vertices.
  """
  return _load(path, "ply", y_up)
