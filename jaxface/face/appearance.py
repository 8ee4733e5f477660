"""Appearance beyond the face mesh: occlusion, hair volume, clothes, props.

The face model is a shell over the front and sides of the head that ends
at the top of the forehead, behind the ears and at the base of the neck.
Photographs show more: the top and back of the head (hair or a bald
scalp), long hair, shoulders in clothes, glasses and hats. This module
draws those as shaded 2D polygons projected from 3D points in model space
(through the same pose and crop as the mesh), behind the rendered face
(`draw_behind`) or over it (`draw_in_front`). None of it moves the mesh,
its landmarks or its UV layout: the labels stay exact.

It also holds `vertex_occlusion`, an ambient-occlusion proxy of the mean
head (concave places such as the eye sockets, the nostrils and the fold
under the chin are darker), computed once per face model.
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numba
import numpy as np

from jaxface.face import model as model_lib
from jaxface.face import render
from jaxface.face import texture as texture_lib


@functools.lru_cache(maxsize=4)
def vertex_occlusion(model: model_lib.FaceModel) -> np.ndarray:
  """(N,) float32 ambient occlusion in [0.35, 1] of the mean head's vertices.

  The concavity of the surface at two scales: how far a Gaussian-smoothed
  copy of the grid surface lies outside the surface, along the normal.
  """
  grid = model.mean.reshape(model.rows, model.cols, 3).astype(np.float32)
  normal = render.grid_normals(model.mean, model.rows, model.cols)
  normal = normal.reshape(model.rows, model.cols, 3)
  dark = np.zeros((model.rows, model.cols), np.float64)
  for sigma, gain in ((1.5, 0.12), (4.0, 0.05)):
    smooth = cv2.GaussianBlur(grid, (0, 0), sigma,
                              borderType=cv2.BORDER_REPLICATE)
    concave = np.sum((smooth - grid) * normal, -1)
    dark += gain * np.clip(concave, 0, None)
  return (1 - np.clip(dark, 0, 0.65)).reshape(-1).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Dressing:
  """What a photo shows beyond the face mesh (per record).

  Colours are sRGB-like in [0, 1].
  """
  hull: np.ndarray        # (3,) top/back of the head: hair, or bald scalp
  bald: bool              # the hull is skin (no hair streaks)
  skin: np.ndarray        # (3,) for the back of the neck
  hair_volume: float      # mm of hair above the scalp
  hair_length: float      # 0: short; 1: to the shoulders and beyond
  clothes: np.ndarray     # (3,)
  torso_turn: float       # fraction of the head's yaw the shoulders follow
  neckline: float = 8.0   # mm the shirt's neckline dips at the front
  glasses: np.ndarray | None = None  # (3,) frame colour, or None
  glasses_size: tuple[float, float, float] = (23.0, 17.0, 0.0)  # rx, ry, tint
  hat: np.ndarray | None = None      # (3,) colour, or None
  hat_brim: bool = False


def sample_dressing(rng: np.random.Generator,
                    albedo: texture_lib.Albedo) -> Dressing:
  """Random clothes and props around an identity's albedo."""
  clothes = rng.uniform(0.05, 0.9) * (1 + rng.uniform(-0.35, 0.35, 3))
  glasses = hat = None
  size = (23.0, 17.0, 0.0)
  if rng.random() < 0.18:
    glasses = rng.uniform(0.02, 0.5) * (1 + rng.uniform(-0.3, 0.3, 3))
    tint = float(rng.uniform(0.5, 0.9)) if rng.random() < 0.25 else 0.0
    size = (float(rng.uniform(19, 27)), float(rng.uniform(13, 21)), tint)
  if rng.random() < 0.08:
    hat = rng.uniform(0.05, 0.85) * (1 + rng.uniform(-0.4, 0.4, 3))
  volume = 2.0 if albedo.bald else rng.uniform(5, 22) + 20 * (
      rng.random() < 0.1)
  return Dressing(
      hull=albedo.hull_colour, bald=albedo.bald, skin=albedo.skin,
      hair_volume=float(volume), hair_length=albedo.hair_length,
      clothes=np.clip(clothes, 0.02, 0.95).astype(np.float32),
      torso_turn=float(rng.uniform(0.2, 0.7)),
      neckline=float(rng.uniform(0, 14)),
      glasses=None if glasses is None else np.clip(glasses, 0, 1),
      glasses_size=size,
      hat=None if hat is None else np.clip(hat, 0.02, 0.95),
      hat_brim=bool(rng.random() < 0.5))


# Azimuths of the rings of points the head's hull is made of.
_ANGLES = np.linspace(0, 2 * np.pi, 24, endpoint=False)


def _ring(y, half_width, front, back, angles=_ANGLES, z0=0.0):
  c = np.cos(angles)
  depth = np.where(c > 0, front, back)
  return np.stack([half_width * np.sin(angles), np.full_like(angles, y),
                   z0 + depth * c], 1)


def _hair_points(width_scale: float, volume: float) -> np.ndarray:
  """Points of the skull's hair cap (dome over the top, back to the nape)."""
  pts = []
  for t in np.linspace(0.25, 1.0, 4) * np.pi / 2:  # dome above the forehead
    k = np.cos(t)
    pts.append(_ring(95 + (45 + volume) * np.sin(t),
                     (66 * width_scale + volume) * k, (86 + volume) * k,
                     (92 + volume) * k))
  pts.append(_ring(95, 66 * width_scale + volume, 86, 92 + volume))
  pts.append(_ring(10, 75 * width_scale + volume * 0.7, 60, 100 + volume))
  back = np.linspace(np.pi * 0.6, np.pi * 1.4, 9)
  pts.append(_ring(-50, 62 * width_scale + volume * 0.5, 0, 80 + volume,
                   back))
  return np.concatenate(pts)


def _long_hair(width_scale: float, volume: float, length: float, side: int):
  """Points of one side's hanging hair (side -1: image left, +1: right)."""
  bottom = -90 - 200 * length
  x_out = side * (75 * width_scale + volume + 6)
  x_in = side * (60 * width_scale)
  pts = [(x_out - side * 8, 95, 10), (x_out - side * 8, 95, -80),
         (x_out, 60, 20), (x_out, 60, -80), (x_in, 60, -90),
         (x_out + side * 8, -20, 15), (x_out + side * 8, -20, -75),
         (x_out + side * 12, bottom, 10), (x_out + side * 12, bottom, -70),
         (x_in, bottom, -60), (x_in, bottom, 15)]
  return np.array(pts, np.float64)


def _turn(points: np.ndarray, yaw: float) -> np.ndarray:
  c, s = np.cos(yaw), np.sin(yaw)
  rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
  return render.times_rows(points, rot)


def _shirt_front(turn_yaw: float, dip: float) -> np.ndarray:
  """The outline of the front of a shirt, its neckline dipping by `dip` mm
  at the front (ordered: left shoulder, the neckline, right shoulder)."""
  phi = np.linspace(-np.pi / 2, np.pi / 2, 13)
  neck = np.stack([56 * np.sin(phi), -134 - dip * np.cos(phi)**2,
                   -18 + 58 * np.cos(phi)], 1)
  left = np.array([(-185.0, -520, 20), (-170, -215, 30), (-90, -160, 40)])
  right = left[::-1] * [-1, 1, 1]
  return _turn(np.concatenate([left, neck, right]), turn_yaw)


def _torso_points(turn_yaw: float) -> np.ndarray:
  pts = np.concatenate([
      _ring(-138, 50, 42, 42, z0=-15), _ring(-205, 165, 90, 90, z0=-25),
      _ring(-520, 180, 100, 100, z0=-25)])
  return _turn(pts, turn_yaw)


def _neck_points() -> np.ndarray:
  return np.concatenate([_ring(-45, 56, 48, 55, z0=-18),
                         _ring(-150, 54, 50, 52, z0=-18)])


@dataclasses.dataclass(frozen=True)
class Projector:
  """Model space -> crop pixels (x, y, depth towards the camera)."""
  pose: np.ndarray
  transform: np.ndarray
  image_height: int

  def __call__(self, points: np.ndarray) -> np.ndarray:
    cam = render.pose_to_camera(points, self.pose)
    return render.apply_crop(self.transform,
                             render.camera_to_image(cam, self.image_height))


def _fill(image: np.ndarray, pts: np.ndarray, colour: np.ndarray,
          light: render.SceneLight, detail: np.ndarray | None = None,
          alpha: float = 1.0, ragged: bool = False, convex: bool = True,
          allowed: np.ndarray | None = None) -> None:
  """In place: a shaded polygon of colour.

  The polygon is the convex hull of the projected points, or with
  `convex=False` the points in their order. The shading is the light's
  environment plus half its key light, graded across the polygon towards
  the key light's image-plane direction. `detail` (an image-sized
  multiplier) textures it; `ragged` frays its lower end along the detail's
  streaks (the tips of long hair); `allowed` ((R, R) bool) limits it.
  """
  height, width = image.shape[:2]
  hull = np.round(pts[:, :2] * 4).astype(np.int32)
  if convex:
    hull = cv2.convexHull(hull)
  x0, y0 = np.maximum(hull.reshape(-1, 2).min(0) // 4 - 1, 0)
  x1, y1 = hull.reshape(-1, 2).max(0) // 4 + 2
  x1, y1 = min(x1, width), min(y1, height)
  if x1 <= x0 or y1 <= y0:
    return
  mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
  if convex:
    cv2.fillConvexPoly(mask, hull - np.array([x0, y0]) * 4, 255,
                       cv2.LINE_AA, shift=2)
  else:
    cv2.fillPoly(mask, [hull.reshape(-1, 2) - np.array([x0, y0]) * 4], 255,
                 cv2.LINE_AA, shift=2)
  if allowed is not None:
    mask[~allowed[y0:y1, x0:x1]] = 0
  d = light.direction
  h, w = y1 - y0, x1 - x0
  span = np.float32(max(w, h))
  # The key light's gradient across the polygon: column and row terms
  # (float64, and so the shading until the blend).
  ramp_x = (np.arange(w, dtype=np.float32) - np.float64((w - 1) / 2)) * (
      np.float32(d[0])) / span
  ramp_y = (np.arange(h, dtype=np.float32) - np.float64((h - 1) / 2)) * (
      np.float32(d[1])) / span
  # Shading (linear light) of the environment's mean plus the key light
  # graded across the polygon; its square root scales the sRGB colour.
  key = np.maximum(d[2], 0.2) * np.asarray(light.key, np.float32)
  ambient = light.sh[0] * (1 + 0.3 * light.sh[1] / (light.sh[0] + 1e-6))
  grey = float(np.mean(ambient + 0.5 * key)) + 1e-6
  tint = np.sqrt((ambient + 0.5 * key) / grey).astype(np.float32)
  has_detail = detail is not None
  _fill_pixels(image[y0:y1, x0:x1], mask, np.float32(alpha / 255),
               ramp_x, ramp_y, np.float32(np.mean(key) / grey),
               np.float32(np.mean(ambient) / grey), np.float32(np.sqrt(grey)),
               np.asarray(colour, np.float32) * tint,
               detail[y0:y1, x0:x1] if has_detail else _NO_DETAIL,
               has_detail, bool(ragged and has_detail),
               np.linspace(0, 1, h, dtype=np.float32))


_NO_DETAIL = np.ones((1, 1, 1), np.float32)


@numba.njit(cache=True, nogil=True)
def _fill_pixels(part, mask, alpha, ramp_x, ramp_y, key_scale, ambient,
                 grey_root, colour, detail, has_detail, ragged, rows):
  """`_fill`'s per-pixel work, in place on `part` (h, w, 3) float32.

  Per pixel: weight = mask * alpha (float32; frayed by the detail towards
  the bottom if `ragged`); shade = sqrt(clip(ramp_x - ramp_y + 0.5, 0, 1)
  * key_scale + ambient) * grey_root, in the ramps' dtype (float64);
  lit = clip(shade * colour (* detail), 0, 1); part += (lit - part) *
  weight. Pixels outside the mask are left as they are (weight 0)."""
  zero, one, half = np.float32(0.0), np.float32(1.0), np.float32(0.5)
  five, fray, two = np.float32(5.0), np.float32(1.6), np.float32(2.0)
  for i in range(part.shape[0]):
    for j in range(part.shape[1]):
      if mask[i, j] == 0:
        continue
      weight = np.float32(mask[i, j]) * alpha
      if ragged:
        tip = (one - rows[i]) * five - fray + two * detail[i, j, 0]
        weight = np.float32(weight * min(max(tip, 0.0), 1.0))
      ramp = min(max(ramp_x[j] - ramp_y[i] + half, zero), one)
      ramp *= key_scale
      ramp += ambient
      shade = np.sqrt(ramp) * grey_root
      for c in range(3):
        lit = shade * colour[c]
        if has_detail:
          lit = lit * detail[i, j, 0]
        lit = min(max(lit, zero), one)
        part[i, j, c] += (lit - part[i, j, c]) * weight


def draw_behind(image: np.ndarray, dressing: Dressing, project: Projector,
                light: render.SceneLight, width_scale: float,
                hair_detail: np.ndarray) -> None:
  """In place, before the face is rendered: clothes, neck, hair volume.

  Args:
    image: (R, R, 3) float32 background of the crop.
    dressing: what to draw.
    project: model space -> crop pixels.
    light: the scene's light (for a matching shading gradient).
    width_scale: the head's width relative to the mean head's.
    hair_detail: (R, R, 1) multiplier with hair-like streaks.
  """
  yaw = float(project.pose[1])
  _fill(image, project(_torso_points(-yaw * (1 - dressing.torso_turn))),
        dressing.clothes, light)
  _fill(image, project(_neck_points()), dressing.skin * 0.9, light)
  volume = dressing.hair_volume
  if dressing.hair_length > 0:
    for side in (-1, 1):
      _fill(image, project(_long_hair(width_scale, volume,
                                      dressing.hair_length, side)),
            dressing.hull, light, hair_detail, ragged=True)
  _fill(image, project(_hair_points(width_scale, volume)), dressing.hull,
        light, None if dressing.bald else hair_detail)


def _depth_image(r) -> np.ndarray:
  depth = np.full(r.height * r.width, -np.inf, np.float32)
  depth[r.pixels] = r.depth
  return depth.reshape(r.height, r.width)


def _visible(pts: np.ndarray, depth: np.ndarray, tolerance: float):
  h, w = depth.shape
  col = np.clip(np.round(pts[:, 0]).astype(np.int64), 0, w - 1)
  row = np.clip(np.round(pts[:, 1]).astype(np.int64), 0, h - 1)
  return pts[:, 2] >= depth[row, col] - tolerance


def _polyline(image, pts, visible, colour, thickness, closed):
  """Draws the runs of consecutive visible points."""
  n = len(pts)
  xy = np.round(pts[:, :2] * 4).astype(np.int32)
  segments = [(i, (i + 1) % n) for i in range(n if closed else n - 1)]
  lines = [np.stack([xy[a], xy[b]]) for a, b in segments
           if visible[a] and visible[b]]
  if lines:
    cv2.polylines(image, lines, False, tuple(float(c) for c in colour),
                  thickness, cv2.LINE_AA, shift=2)


def draw_in_front(image: np.ndarray, dressing: Dressing, project: Projector,
                  light: render.SceneLight, r, model: model_lib.FaceModel,
                  vertices: np.ndarray, width_scale: float) -> None:
  """In place, after the face: a shirt front, glasses, a hat.

  The shirt's neckline covers the end of the neck mesh (never the face);
  the glasses are depth-tested against the face.

  Args:
    image: (R, R, 3) float32 rendered crop.
    dressing: what to draw.
    project: model space -> crop pixels.
    light: the scene's light.
    r: the face's `raster.Raster` (its depth hides the parts of the glasses
      behind the face).
    model, vertices: the face model and its model-space vertices (the
      glasses sit in front of the eye landmarks, the arms reach the ears).
    width_scale: the head's width relative to the mean head's.
  """
  scale = float(project.pose[6]) * abs(project.transform[0, 0])  # px per mm
  yaw = float(project.pose[1])
  if abs(yaw * dressing.torso_turn) < 0.45:  # else its outline folds over
    # The shirt may cover the background and the neck, not the face.
    allowed = np.ones(r.height * r.width, bool)
    on_face = model.face_weight[model.triangles[r.triangle, 0]] > 0.5
    allowed[r.pixels[on_face]] = False
    _fill(image, project(_shirt_front(-yaw * (1 - dressing.torso_turn),
                                      dressing.neckline)),
          dressing.clothes, light, convex=False,
          allowed=allowed.reshape(r.height, r.width))
  if dressing.glasses is not None:
    depth = _depth_image(r)
    lmk = model.landmarks(vertices)
    ears = model.extra_points(vertices)[1:3]
    rx, ry, tint = dressing.glasses_size
    t = np.linspace(0, 2 * np.pi, 28, endpoint=False)
    # A rounded rectangle: |cos|^0.6 squares the ellipse off.
    shape = np.stack([np.sign(np.cos(t)) * np.abs(np.cos(t))**0.6,
                      np.sign(np.sin(t)) * np.abs(np.sin(t))**0.6], 1)
    thickness = max(1, int(round(1.6 * scale)))
    colour = np.clip(dressing.glasses, 0, 1)
    rims = []
    for eye in (model_lib.LEFT_EYE, model_lib.RIGHT_EYE):
      centre = lmk[list(eye)].mean(0) + [0, -2, 16]
      rim = centre + np.concatenate([shape * [rx, ry], np.zeros((28, 1))], 1)
      rims.append(rim)
    for rim, ear in zip(rims, ears):
      pts = project(rim)
      vis = _visible(pts, depth, 2 * scale)
      if tint and vis.mean() > 0.7:
        _fill(image, pts, colour * 0.4, light, alpha=tint)
      _polyline(image, pts, vis, colour, thickness, True)
      outer = rim[np.argmax(np.abs(rim[:, 0]))]
      arm = outer + np.linspace(0, 1, 10)[:, None] * (ear + [0, 5, 0] - outer)
      arm_px = project(arm)
      _polyline(image, arm_px, _visible(arm_px, depth, 2 * scale), colour,
                thickness, False)
    inner = [rims[0][np.argmax(rims[0][:, 0])], rims[1][np.argmin(
        rims[1][:, 0])]]
    bridge = np.linspace(inner[0], inner[1], 8) + [0, 4, 3]
    bridge_px = project(bridge)
    _polyline(image, bridge_px, _visible(bridge_px, depth, 2 * scale), colour,
              thickness, False)
  if dressing.hat is not None:
    y0 = 62.0
    pts = [_ring(y0, (74 * width_scale + 6), 98, 104)]
    for t in np.linspace(0.3, 1.0, 4) * np.pi / 2:
      k = np.cos(t)
      pts.append(_ring(y0 + 80 * np.sin(t), (74 * width_scale + 6) * k,
                       98 * k, 104 * k))
    if dressing.hat_brim:
      pts.append(np.array([(-60, y0 - 3, 100), (60, y0 - 3, 100),
                           (-55, y0 - 6, 160), (55, y0 - 6, 160)]))
    _fill(image, project(np.concatenate(pts)), dressing.hat, light)
