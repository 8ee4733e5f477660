"""The vectorised rasterizer against a brute-force per-pixel z-buffer."""

import numpy as np

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
