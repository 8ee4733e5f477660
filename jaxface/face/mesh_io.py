"""Position map -> triangle mesh, and minimal OBJ / PLY writers and readers.

Meshes are numpy arrays: vertices (N, 3) float32, triangles (F, 3) int32
0-based vertex indices, colors (N, 3) float32 RGB in [0, 1] or None.

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
import re

import numpy as np

from jaxface.face import uv

PathLike = str | os.PathLike

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


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


def _prepare_path(path: PathLike) -> str:
  path = os.fspath(path)
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  return path


def write_obj(path: PathLike, vertices: np.ndarray, triangles: np.ndarray,
              colors: np.ndarray | None = None, y_up: bool = True) -> None:
  """Writes a Wavefront OBJ, with per-vertex colours as `v x y z r g b`.

  Args:
    path: output file; missing parent directories are created.
    vertices: (N, 3) positions in the image frame (x right, y down, z depth).
    triangles: (F, 3) 0-based vertex indices (written 1-based).
    colors: optional (N, 3) RGB, float in [0, 1] or uint8.
    y_up: write (x, -y, z) with reversed winding (see the module docstring).

  Raises:
    ValueError: on wrong shapes, non-finite values, out-of-range indices.
  """
  v, t, c = _validate(vertices, triangles, colors)
  v, t = _flip(v, t, y_up)
  path = _prepare_path(path)
  with open(path, "w") as f:
    f.write("# written by jaxface\n")
    if c is None:
      np.savetxt(f, v, fmt="v %.9g %.9g %.9g")
    else:
      np.savetxt(f, np.concatenate([v, c], 1),
                 fmt="v %.9g %.9g %.9g %.6g %.6g %.6g")
    np.savetxt(f, t + 1, fmt="f %d %d %d")


def write_ply(path: PathLike, vertices: np.ndarray, triangles: np.ndarray,
              colors: np.ndarray | None = None, y_up: bool = True,
              binary: bool = True) -> None:
  """Writes a PLY: float x y z [uchar red green blue], int triangle lists.

  Args:
    path: output file; missing parent directories are created.
    vertices: (N, 3) positions in the image frame (x right, y down, z depth).
    triangles: (F, 3) 0-based vertex indices.
    colors: optional (N, 3) RGB, float in [0, 1] (rounded to 0..255) or uint8.
    y_up: write (x, -y, z) with reversed winding (see the module docstring).
    binary: binary little endian (default) or ascii.

  Raises:
    ValueError: on wrong shapes, non-finite values, out-of-range indices.
  """
  v, t, c = _validate(vertices, triangles, colors)
  v, t = _flip(v, t, y_up)
  path = _prepare_path(path)
  header = ["ply",
            f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
            "comment written by jaxface",
            f"element vertex {len(v)}",
            "property float x", "property float y", "property float z"]
  fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
  if c is not None:
    header += ["property uchar red", "property uchar green",
               "property uchar blue"]
    fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
  header += [f"element face {len(t)}",
             "property list uchar int vertex_indices", "end_header"]
  vert = np.empty(len(v), np.dtype(fields))
  vert["x"], vert["y"], vert["z"] = v[:, 0], v[:, 1], v[:, 2]
  if c is not None:
    c8 = np.round(c * 255.0).astype(np.uint8)
    vert["red"], vert["green"], vert["blue"] = c8[:, 0], c8[:, 1], c8[:, 2]
  with open(path, "wb") as f:
    f.write(("\n".join(header) + "\n").encode("ascii"))
    if binary:
      face = np.empty(len(t), np.dtype([("n", "u1"), ("i", "<i4", (3,))]))
      face["n"] = 3
      face["i"] = t
      f.write(vert.tobytes())
      f.write(face.tobytes())
    else:
      if c is None:
        np.savetxt(f, v, fmt="%.9g %.9g %.9g")
      else:
        np.savetxt(f, np.concatenate([v.astype(np.float64), c8], 1),
                   fmt="%.9g %.9g %.9g %d %d %d")
      np.savetxt(f, t, fmt="3 %d %d %d")


def _fan(polygon: list[int]) -> list[list[int]]:
  """Triangulates one convex polygon face (a, b, c, d, ...) as a fan."""
  return [[polygon[0], polygon[k], polygon[k + 1]]
          for k in range(1, len(polygon) - 1)]


def _finish(vertices, triangles, colors, y_up: bool):
  v = np.asarray(vertices, np.float32).reshape(-1, 3)
  t = np.asarray(triangles, np.int64).reshape(-1, 3)
  if t.size and (t.min() < 0 or t.max() >= len(v)):
    raise ValueError("face indices out of range in the file.")
  v, t = _flip(v, t.astype(np.int32), y_up)
  c = None if colors is None else np.asarray(colors, np.float32).reshape(-1, 3)
  return v, t, c


def read_obj(path: PathLike, y_up: bool = True
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """Reads `v` (with optional r g b) and `f` lines of an OBJ file.

  Faces may be `f a b c`, `f a/ta/na ...` or negative (relative) indices;
  polygons are fan-triangulated. Other lines are ignored.

  Args:
    path: the file.
    y_up: the file is y-up (as `write_obj` writes by default): return
      (x, -y, z) with reversed winding, i.e. the image frame.

  Returns:
    vertices (N, 3) float32, triangles (F, 3) int32 0-based, colors (N, 3)
    float32 or None when no vertex has a colour.
  """
  verts, cols, tris = [], [], []
  with open(path) as f:
    for line in f:
      parts = line.split()
      if not parts:
        continue
      if parts[0] == "v":
        values = [float(p) for p in parts[1:]]
        if len(values) not in (3, 4, 6, 7):
          raise ValueError(f"unsupported OBJ vertex line: {line!r}")
        verts.append(values[:3])
        if len(values) >= 6:
          cols.append(values[-3:])
      elif parts[0] == "f":
        idx = [int(p.split("/")[0]) for p in parts[1:]]
        idx = [i - 1 if i > 0 else len(verts) + i for i in idx]
        tris += _fan(idx)
  if cols and len(cols) != len(verts):
    raise ValueError("OBJ has colours on some vertices only.")
  return _finish(verts, tris, cols if cols else None, y_up)


def read_ply(path: PathLike, y_up: bool = True
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """Reads vertices, faces and vertex colours of an ascii or binary PLY.

  Supports scalar vertex properties (x, y, z, red, green, blue; others are
  skipped), one list property of `face` (polygons are fan-triangulated), and
  other elements with scalar properties (skipped).

  Args:
    path: the file.
    y_up: the file is y-up (as `write_ply` writes by default): return
      (x, -y, z) with reversed winding, i.e. the image frame.

  Returns:
    vertices (N, 3) float32, triangles (F, 3) int32 0-based, colors (N, 3)
    float32 in [0, 1] (uchar colours / 255) or None.
  """
  with open(path, "rb") as f:
    data = f.read()
  end = re.search(rb"end_header\r?\n", data)
  if not data.startswith(b"ply") or end is None:
    raise ValueError(f"{path} is not a PLY file.")
  fmt = None
  elements = []  # [name, count, [(prop name, dtype str | (count, item))]]
  for line in data[:end.start()].decode("ascii").splitlines():
    parts = line.split()
    if not parts or parts[0] in ("ply", "comment", "obj_info"):
      continue
    if parts[0] == "format":
      fmt = parts[1]
    elif parts[0] == "element":
      elements.append([parts[1], int(parts[2]), []])
    elif parts[0] == "property":
      if parts[1] == "list":
        elements[-1][2].append(
            (parts[4], (_PLY_TYPES[parts[2]], _PLY_TYPES[parts[3]])))
      else:
        elements[-1][2].append((parts[2], _PLY_TYPES[parts[1]]))
  if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
    raise ValueError(f"unsupported PLY format {fmt!r}.")
  order = ">" if fmt == "binary_big_endian" else "<"
  body = data[end.end():]

  # Scalar properties -> {element: {property: (count,) array}}; the list
  # property of an element -> {element: list of index lists}.
  columns, lists = {}, {}
  if fmt == "ascii":
    tokens = body.split()
    pos = 0
    for name, count, props in elements:
      values = {p: [] for p, k in props if not isinstance(k, tuple)}
      rows = []
      for _ in range(count):
        for p, kind in props:
          if isinstance(kind, tuple):
            n = int(tokens[pos])
            rows.append([int(x) for x in tokens[pos + 1:pos + 1 + n]])
            pos += 1 + n
          else:
            values[p].append(float(tokens[pos]))
            pos += 1
      columns[name] = {p: np.asarray(x, np.float64) for p, x in values.items()}
      lists[name] = rows
  else:
    pos = 0
    for name, count, props in elements:
      kinds = [k for _, k in props]
      if not any(isinstance(k, tuple) for k in kinds):
        dtype = np.dtype([(p, order + k) for p, k in props])
        arr = np.frombuffer(body, dtype, count, pos)
        pos += dtype.itemsize * count
        columns[name] = {p: arr[p].astype(np.float64) for p, _ in props}
        continue
      if len(props) != 1:
        raise ValueError(f"PLY element {name!r}: a list property must be the "
                         "element's only property here.")
      count_t, item_t = (np.dtype(order + k) for k in kinds[0])
      # Fast path: all triangles. Records before the first non-triangle are
      # aligned, so that one's count is read correctly and fails the check.
      fixed = np.dtype([("n", count_t), ("i", item_t, (3,))])
      if len(body) - pos >= fixed.itemsize * count:
        arr = np.frombuffer(body, fixed, count, pos)
        if np.all(arr["n"] == 3):
          lists[name] = arr["i"].tolist()
          pos += fixed.itemsize * count
          continue
      rows = []
      for _ in range(count):
        n = int(np.frombuffer(body, count_t, 1, pos)[0])
        pos += count_t.itemsize
        rows.append(np.frombuffer(body, item_t, n, pos).tolist())
        pos += item_t.itemsize * n
      lists[name] = rows

  vertex = columns.get("vertex")
  if vertex is None or not all(p in vertex for p in "xyz"):
    raise ValueError("PLY has no vertex element with x, y, z.")
  vertices = np.stack([vertex[p] for p in "xyz"], 1)
  colors = None
  if all(p in vertex for p in ("red", "green", "blue")):
    kind = dict(elements[[e[0] for e in elements].index("vertex")][2])["red"]
    scale = 255.0 if kind == "u1" else 1.0
    colors = np.stack([vertex[p] for p in ("red", "green", "blue")], 1) / scale
  triangles = []
  for polygon in lists.get("face", []):
    triangles += _fan(list(polygon))
  return _finish(vertices, triangles, colors, y_up)
