"""Tests of jaxface.face.mesh_io: position map -> mesh, OBJ / PLY files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from jaxface.face import mesh_io

H, W = 4, 5


def _position_map():
  """(4, 5, 3) map of a tilted plane: x = 10 col, y = 10 row, z = row + col."""
  row, col = np.mgrid[:H, :W].astype(np.float32)
  return np.stack([10 * col, 10 * row, row + col], -1)


def _mask():
  mask = np.ones((H, W), bool)
  mask[0, 0] = False  # A corner.
  mask[2, 3] = False  # An interior texel.
  return mask


def _mesh():
  rng = np.random.default_rng(0)
  v, t, _ = mesh_io.position_map_to_mesh(_position_map(), _mask())
  colors = rng.uniform(0, 1, v.shape).astype(np.float32)
  return v, t, colors


def _normals_z(vertices, triangles):
  a, b, c = (vertices[triangles[:, k]] for k in range(3))
  return np.cross(b - a, c - a)[:, 2]


def test_counts_by_hand():
  v, t, c = mesh_io.position_map_to_mesh(_position_map(), _mask())
  # 20 texels, 2 masked out.
  assert v.shape == (18, 3) and v.dtype == np.float32
  # 4 x 3 cells x 2 = 24 triangles. The corner (0, 0) is in 1 triangle; the
  # interior texel (2, 3) in 6 (T2 of cell (1, 2), both of (1, 3) and
  # (2, 2), T1 of (2, 3)); none shared -> 24 - 1 - 6 = 17.
  assert t.shape == (17, 3) and t.dtype == np.int32
  assert c is None
  # Vertices are the kept texels, row-major: texel (0, 1) first.
  np.testing.assert_array_equal(v[0], [10, 0, 1])
  np.testing.assert_array_equal(v[4], [0, 10, 1])  # Texel (1, 0).
  # Cell (0, 0)'s second triangle (0,1) (1,1) (1,0) -> vertices 0, 5, 4.
  assert [0, 5, 4] in t.tolist()
  assert t.min() == 0 and t.max() == 17
  # Every triangle joins texels that are grid neighbours (10 px apart).
  for tri in t:
    p = v[tri, :2]
    for i in range(3):
      step = np.abs(p[i] - p[(i + 1) % 3])
      assert step.max() == 10 and set(step.tolist()) <= {0.0, 10.0}


def test_no_mask_keeps_everything():
  v, t, _ = mesh_io.position_map_to_mesh(_position_map())
  assert v.shape == (20, 3) and t.shape == (24, 3)
  np.testing.assert_array_equal(v, _position_map().reshape(-1, 3))


def test_nan_outside_mask_is_fine_inside_is_not():
  pm = _position_map()
  pm[0, 0] = np.nan
  v, _, _ = mesh_io.position_map_to_mesh(pm, _mask())
  assert np.all(np.isfinite(v))
  with pytest.raises(ValueError, match="non-finite"):
    mesh_io.position_map_to_mesh(pm)


def test_colors_left_right_image():
  # 6 x 10 image: columns 0-4 red, 5-9 blue.
  image = np.zeros((6, 10, 3), np.uint8)
  image[:, :5] = [255, 0, 0]
  image[:, 5:] = [0, 0, 255]
  # One row of 7 texels at these x (y inside, then clamped above/below).
  xs = [1.0, 8.0, 4.5, 4.25, 4.75, -3.0, 100.0]
  ys = [2.0, 3.0, 1.0, 4.0, 0.0, -50.0, 1e3]
  pm = np.stack([xs, ys, np.zeros(7)], -1)[None].astype(np.float32)
  v, t, c = mesh_io.position_map_to_mesh(pm, image=image)
  assert t.shape == (0, 3)  # A single row has no cells.
  red, blue = np.array([1.0, 0, 0]), np.array([0, 0, 1.0])
  expected = np.stack([
      red,  # x = 1: inside the red half.
      blue,  # x = 8.
      0.5 * red + 0.5 * blue,  # x = 4.5: halfway between columns 4 and 5.
      0.75 * red + 0.25 * blue,  # x = 4.25.
      0.25 * red + 0.75 * blue,  # x = 4.75.
      red,  # Clamped to column 0.
      blue,  # Clamped to column 9.
  ])
  assert c.dtype == np.float32
  np.testing.assert_allclose(c, expected, atol=1e-6)


def test_colors_top_bottom_image():
  # Rows 0-2 green, rows 3-5 white; a y halfway between rows 2 and 3 mixes.
  image = np.zeros((6, 4, 3), np.uint8)
  image[:3] = [0, 255, 0]
  image[3:] = [255, 255, 255]
  pm = np.array([[[1, 0, 0], [1, 2.5, 0], [2, 5, 0], [3, 9, 0]]], np.float32)
  _, _, c = mesh_io.position_map_to_mesh(pm, image=image)
  np.testing.assert_allclose(
      c, [[0, 1, 0], [0.5, 1, 0.5], [1, 1, 1], [1, 1, 1]], atol=1e-6)


def test_position_map_bad_inputs():
  pm = _position_map()
  with pytest.raises(ValueError, match="position_map"):
    mesh_io.position_map_to_mesh(pm[..., :2])
  with pytest.raises(ValueError, match="mask"):
    mesh_io.position_map_to_mesh(pm, np.ones((H, W + 1), bool))
  with pytest.raises(ValueError, match="uint8"):
    mesh_io.position_map_to_mesh(pm, image=np.zeros((8, 8, 3), np.float32))
  with pytest.raises(ValueError, match="uint8"):
    mesh_io.position_map_to_mesh(pm, image=np.zeros((8, 8), np.uint8))


def _parse_obj_text(path):
  """Independent parse of the v / f lines, as numbers."""
  v, f = [], []
  for line in open(path):
    parts = line.split()
    if parts and parts[0] == "v":
      v.append([float(x) for x in parts[1:]])
    elif parts and parts[0] == "f":
      f.append([int(x) for x in parts[1:]])
  return np.array(v), np.array(f)


def test_obj_file_content(tmp_path):
  v, t, c = _mesh()
  path = tmp_path / "deep" / "dir" / "mesh.obj"  # Parents get created.
  mesh_io.write_obj(path, v, t, c, y_up=False)
  rows, faces = _parse_obj_text(path)
  assert rows.shape == (18, 6) and faces.shape == (17, 3)
  np.testing.assert_allclose(rows[:, :3], v)
  # Colours are stored as uint8 steps, written as floats in [0, 1].
  np.testing.assert_allclose(rows[:, 3:], np.round(c * 255) / 255, atol=1e-7)
  np.testing.assert_array_equal(faces, t + 1)  # 1-based, winding kept.
  mesh_io.write_obj(path, v, t, c)  # y_up=True by default.
  rows, faces = _parse_obj_text(path)
  np.testing.assert_allclose(rows[:, :3], v * [1, -1, 1])
  # Same triangles, opposite winding: (a, b, c) -> (a, c, b).
  np.testing.assert_array_equal(faces, t[:, [0, 2, 1]] + 1)


@pytest.mark.parametrize("fmt", ["obj", "ply_binary", "ply_ascii"])
@pytest.mark.parametrize("with_colors", [True, False])
def test_round_trip(tmp_path, fmt, with_colors):
  v, t, c = _mesh()
  c = c if with_colors else None
  path = tmp_path / ("m.obj" if fmt == "obj" else "m.ply")
  if fmt == "obj":
    mesh_io.write_obj(path, v, t, c)
    read = mesh_io.read_obj
  else:
    mesh_io.write_ply(path, v, t, c, binary=(fmt == "ply_binary"))
    read = mesh_io.read_ply
  assert os.listdir(tmp_path) == [path.name]  # No temporary file is left.
  v2, t2, c2 = read(path)
  assert v2.dtype == np.float32 and t2.dtype == np.int32
  np.testing.assert_array_equal(v2, v)
  np.testing.assert_array_equal(t2, t)
  if c is None:
    assert c2 is None
  else:
    # Files store uint8 colours: within half a step of 1/255.
    np.testing.assert_allclose(c2, c, atol=0.5 / 255 + 1e-6)
  # Read as stored (y up): y negated and winding reversed.
  v3, t3, _ = read(path, y_up=False)
  np.testing.assert_array_equal(v3, v * np.float32([1, -1, 1]))
  np.testing.assert_array_equal(t3, t[:, [0, 2, 1]])


@pytest.mark.parametrize("binary", [True, False])
def test_ply_header(tmp_path, binary):
  v, t, c = _mesh()
  path = tmp_path / "m.ply"
  mesh_io.write_ply(path, v, t, c, y_up=False, binary=binary)
  head = path.read_bytes().split(b"end_header\n", 1)[0].decode("ascii")
  lines = head.splitlines()
  encoding = "binary_little_endian" if binary else "ascii"
  assert lines[1] == f"format {encoding} 1.0"
  assert {"element vertex 18", "element face 17", "property uchar red",
          "property uchar green", "property uchar blue"} <= set(lines)
  mesh_io.write_ply(path, v, t, y_up=False, binary=binary)
  assert "uchar red" not in path.read_bytes().split(b"end_header")[0].decode()


def test_ascii_ply_body(tmp_path):
  v, t, _ = _mesh()
  path = tmp_path / "m.ply"
  mesh_io.write_ply(path, v, t, binary=False, y_up=False)
  text = path.read_text().splitlines()
  body = text[text.index("end_header") + 1:]
  assert len(body) == 18 + 17
  np.testing.assert_allclose([float(x) for x in body[0].split()], v[0])
  assert body[18].split() == ["3"] + [str(i) for i in t[0]]


@pytest.mark.parametrize("writer", ["obj", "ply"])
def test_y_up_normals_face_viewer(tmp_path, writer):
  v, t, _ = _mesh()
  # In the image frame (y down, z towards the camera) grid triangles have
  # normals with z > 0 (towards the camera).
  assert np.all(_normals_z(v, t) > 0)
  path = tmp_path / f"m.{writer}"
  if writer == "obj":
    mesh_io.write_obj(path, v, t)
    v2, t2, _ = mesh_io.read_obj(path, y_up=False)
  else:
    mesh_io.write_ply(path, v, t)
    v2, t2, _ = mesh_io.read_ply(path, y_up=False)
  # Stored y-up: the viewer looks down -z, so normals must still have z > 0.
  assert np.all(v2[:, 1] <= 0)  # y flipped (all image y are >= 0).
  assert np.all(_normals_z(v2, t2) > 0)


@pytest.mark.parametrize("write", [mesh_io.write_obj, mesh_io.write_ply])
def test_writers_reject_bad_meshes(tmp_path, write):
  v, t, c = _mesh()
  path = tmp_path / "bad"
  with pytest.raises(ValueError, match="vertices"):
    write(path, v[:, :2], t)
  nan_v = v.copy()
  nan_v[3, 1] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    write(path, nan_v, t)
  bad_t = t.copy()
  bad_t[0, 0] = len(v)
  with pytest.raises(ValueError, match="indices"):
    write(path, v, bad_t)
  bad_t[0, 0] = -1
  with pytest.raises(ValueError, match="indices"):
    write(path, v, bad_t)
  with pytest.raises(ValueError, match="triangles"):
    write(path, v, np.zeros((2, 4), np.int32))
  with pytest.raises(ValueError, match="triangles"):
    write(path, v, t.astype(np.float32))
  with pytest.raises(ValueError, match="colors"):
    write(path, v, t, c[:-1])
  with pytest.raises(ValueError, match="colors"):
    write(path, v, t, c * 300)
  assert not path.exists()


def test_uint8_colors_accepted(tmp_path):
  v, t, c = _mesh()
  c8 = np.round(c * 255).astype(np.uint8)
  path = tmp_path / "m.ply"
  mesh_io.write_ply(path, v, t, c8)
  _, _, c2 = mesh_io.read_ply(path)
  np.testing.assert_allclose(c2, c8 / 255.0, atol=1e-7)


@pytest.mark.parametrize("with_colors", [True, False])
def test_ply_point_cloud(tmp_path, with_colors):
  # `jaxface reconstruct` writes its PLY without faces.
  v, _, c = _mesh()
  c = c if with_colors else None
  path = tmp_path / "points.ply"
  mesh_io.write_ply(path, v, np.zeros((0, 3), np.int32), c)
  v2, t2, c2 = mesh_io.read_ply(path)
  np.testing.assert_array_equal(v2, v)
  assert t2.shape == (0, 3) and t2.dtype == np.int32
  if c is None:
    assert c2 is None
  else:
    np.testing.assert_allclose(c2, c, atol=0.5 / 255 + 1e-6)


_PLY_HEAD = ("ply\nformat {} 1.0\nelement vertex 3\nproperty float x\n"
             "property float y\nproperty float z\nelement face 1\n"
             "property list uchar int vertex_indices\nend_header\n")
_BAD_FILES = {
    "empty.obj": "",
    "bad_index.obj": "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n",
    "two_coordinates.obj": "v 0 0\nv 1 0\nv 0 1\n",
    "empty.ply": "",
    "not.ply": "solid cube\n",
    "truncated.ply": _PLY_HEAD.format("binary_little_endian") + "\0\0",
    "bad_index.ply": (_PLY_HEAD.format("ascii")
                      + "0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n"),
}


def test_readers_name_missing_files(tmp_path):
  for read in (mesh_io.read_obj, mesh_io.read_ply):
    with pytest.raises(FileNotFoundError, match="missing"):
      read(tmp_path / "missing")


@pytest.mark.parametrize("name", sorted(_BAD_FILES))
def test_readers_reject_malformed_files(tmp_path, name):
  path = tmp_path / name
  path.write_text(_BAD_FILES[name])
  read = mesh_io.read_obj if name.endswith(".obj") else mesh_io.read_ply
  with pytest.raises(ValueError, match=name):
    read(path)
