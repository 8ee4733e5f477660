"""The compiled rasterizer against a brute-force per-pixel z-buffer, and
its documented edge cases."""

import numpy as np
import pytest

from jaxface.face import raster


def _brute_force(xy, z, triangles, height, width):
  """Per pixel, per triangle: inside test and nearest depth (slow, simple)."""
  best = np.full((height, width), -np.inf)
  owner = np.full((height, width), -1)
  for t, (i, j, k) in enumerate(triangles):
    a, b, c = xy[i], xy[j], xy[k]
    den = (b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1])
    if abs(den) < 1e-12:
      continue
    for y in range(height):
      for x in range(width):
        w1 = ((x - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (y - a[1])) / den
        w2 = ((b[0] - a[0]) * (y - a[1]) - (x - a[0]) * (b[1] - a[1])) / den
        w0 = 1 - w1 - w2
        if min(w0, w1, w2) < 0:
          continue
        depth = w0 * z[i] + w1 * z[j] + w2 * z[k]
        if depth > best[y, x]:
          best[y, x], owner[y, x] = depth, t
  return owner, best


def test_matches_brute_force_z_buffer():
  rng = np.random.default_rng(0)
  xy = rng.uniform(-4, 28, (30, 2))
  z = rng.uniform(0, 10, 30)
  tris = rng.integers(0, 30, (12, 3))
  owner, depth = _brute_force(xy, z, tris, 24, 24)
  r = raster.rasterize(xy, z, tris, 24, 24, eps=0.0)
  got = r.triangle_image()
  # Pixels exactly on an edge may go either way; there are very few.
  agree = np.mean(got == owner)
  assert agree > 0.99, agree
  covered = owner >= 0
  got_depth = np.full((24, 24), -np.inf)
  got_depth.reshape(-1)[r.pixels] = r.depth
  same = covered & (got == owner)
  np.testing.assert_allclose(got_depth[same], depth[same], atol=1e-3)


def test_barycentric_weights_reproduce_pixel_centres():
  rng = np.random.default_rng(1)
  xy = rng.uniform(0, 40, (3, 2))
  tris = np.array([[0, 1, 2]])
  r = raster.rasterize(xy, np.zeros(3), tris, 40, 40)
  assert r.pixels.size > 0
  centres = np.stack([r.pixels % 40, r.pixels // 40], 1)
  np.testing.assert_allclose(r.bary @ xy, centres, atol=1e-3)
  np.testing.assert_allclose(r.bary.sum(1), 1, atol=1e-5)


def test_back_faces_are_culled_only_when_asked():
  xy = np.array([[2.0, 2.0], [20.0, 2.0], [2.0, 20.0]])
  front = np.array([[0, 1, 2]])
  back = front[:, ::-1]
  assert raster.rasterize(xy, np.zeros(3), back, 24, 24).pixels.size > 100
  assert raster.rasterize(xy, np.zeros(3), back, 24, 24,
                          cull_back=True).pixels.size == 0
  assert raster.rasterize(xy, np.zeros(3), front, 24, 24,
                          cull_back=True).pixels.size > 100


def test_equal_depths_go_to_the_later_triangle():
  xy = np.array([[1.0, 1.0], [14.0, 1.0], [1.0, 14.0]])
  tris = np.array([[0, 1, 2], [0, 1, 2], [0, 1, 2]])
  r = raster.rasterize(xy, np.full(3, 5.0), tris, 16, 16)
  assert r.pixels.size > 50
  np.testing.assert_array_equal(r.triangle, 2)
  # A nearer triangle wins whatever its place.
  r = raster.rasterize(np.concatenate([xy, xy]),
                       np.array([5.0, 5.0, 5.0, 6.0, 6.0, 6.0]),
                       np.array([[3, 4, 5], [0, 1, 2]]), 16, 16)
  np.testing.assert_array_equal(r.triangle, 0)  # vertices 3-5, at z = 6
  np.testing.assert_allclose(r.depth, 6.0)


def test_triangles_off_the_image_and_huge_coordinates():
  xy = np.array([[-50.0, -50.0], [-40.0, -50.0], [-50.0, -40.0],
                 [-1e12, -1e12], [1e12, -1e12], [-1e12, 1e12]])
  r = raster.rasterize(xy, np.zeros(6), np.array([[0, 1, 2]]), 8, 8)
  assert r.pixels.size == 0 and r.bary.shape == (0, 3)
  r = raster.rasterize(xy, np.zeros(6), np.array([[3, 4, 5]]), 8, 8)
  assert r.pixels.size == 64  # covers the whole image, no overflow


def test_bad_inputs_are_refused():
  xy, z = np.zeros((3, 2)), np.zeros(3)
  with pytest.raises(IndexError, match='out of range'):
    raster.rasterize(xy, z, np.array([[0, 1, 3]]), 8, 8)
  with pytest.raises(ValueError, match='triangles'):
    raster.rasterize(xy, z, np.array([0, 1, 2]), 8, 8)
  with pytest.raises(IndexError, match='out of range'):
    raster.barycentric_sum(np.ones((3, 2)), np.array([[0, 1, 3]]),
                           np.ones((1, 3)))
  with pytest.raises(ValueError, match='corners'):
    raster.barycentric_sum(np.ones((3, 2)), np.array([0, 1, 2]),
                           np.ones(3))


def test_barycentric_sum_hand_made_in_the_values_dtype():
  values = np.array([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0]], np.float32)
  corners = np.array([[0, 1, 2], [2, 2, 0]])
  weights = np.array([[0.5, 0.25, 0.25], [0.5, 0.5, 0.0]])
  out = raster.barycentric_sum(values, corners, weights)
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, [[2.0, 20.0], [4.0, 40.0]])
  # Rows of a corner table (a mesh's triangles, per pixel), into `out`.
  target = np.full((3, 2), -1.0, np.float32)
  raster.barycentric_sum(values, corners, weights, rows=np.array([1, 0]),
                         out=target[:2])
  np.testing.assert_array_equal(target, [[3.25, 32.5], [1.5, 15.0],
                                         [-1.0, -1.0]])
  with pytest.raises(IndexError, match='row index'):
    raster.barycentric_sum(values, corners, weights, rows=np.array([0, 2]))
  with pytest.raises(ValueError, match='out must be'):
    raster.barycentric_sum(values, corners, weights,
                           out=np.zeros((2, 2), np.float64))
  # float64 weights: each product rounded to float32, summed in float32.
  rng = np.random.default_rng(0)
  values = rng.normal(size=(50, 3)).astype(np.float32)
  corners = rng.integers(0, 50, (200, 3))
  weights = rng.uniform(size=(200, 3))
  want = np.zeros((200, 3), np.float32)
  for k in range(3):
    want += (values[corners[:, k]] * weights[:, k, None]).astype(np.float32)
  np.testing.assert_array_equal(
      raster.barycentric_sum(values, corners, weights), want)
  assert not np.array_equal(want, np.einsum(
      'pkc,pk->pc', values[corners].astype(np.float64),
      weights).astype(np.float32))
