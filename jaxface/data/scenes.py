"""Photograph-like backgrounds, occluders and camera effects (numpy, cv2).

Backgrounds are procedural scenes, not colour noise: an indoor wall with
windows, doors and frames; foliage under a sky; a street of facades; a
studio backdrop; or a night scene with lights. They are drawn at a quarter
or half of the output size and upsampled (which also makes them out of
focus, as behind a portrait), with bokeh discs and a little fine grain.
Colours are those of photographs: mostly muted, channels correlated
(a luminance plus a small chroma along natural hues).

Sometimes there are wall patterns (bricks, tiles, planks) and blurred
bystanders (a head over shoulders).

Occluders are hands, microphones, cups/phones and generic blurred shapes.
Camera effects: defocus and motion blur, white balance and colour jitter
(now and then greyscale), contrast, vignetting, sensor noise and JPEG
compression.

Every function takes the record's random generator: the output is a pure
function of its draws.
"""

from __future__ import annotations

import functools

import cv2
import numba
import numpy as np

from jaxface.data import records

# Hues of photographs: warm neutrals (walls, wood, skin), greens, sky blues.
_HUES = np.deg2rad(np.array([30, 40, 20, 55, 100, 120, 210, 220, 0, 280]))
_HUE_P = np.array([0.2, 0.15, 0.1, 0.08, 0.1, 0.08, 0.12, 0.07, 0.05, 0.05])


def photo_colour(rng: np.random.Generator, luminance: float | None = None,
                 saturation: float | None = None) -> np.ndarray:
  """A muted RGB colour: luminance plus a small chroma of a natural hue."""
  lum = rng.beta(2.2, 2.2) if luminance is None else luminance
  sat = rng.gamma(1.6, 0.09) if saturation is None else saturation
  hue = rng.choice(_HUES, p=_HUE_P) + rng.normal(0, 0.25)
  # Opponent axes (red-green, yellow-blue) around grey.
  chroma = (np.cos(hue) * np.array([1.0, -0.45, -0.55]) +
            np.sin(hue) * np.array([-0.25, 0.55, -0.9]) * 0.8)
  return np.clip(lum * (1 + sat * chroma), 0, 1).astype(np.float32)


def _octaves(rng, size, cells, count=3):
  """Smooth fractal noise in about [-1, 1] of shape (size, size)."""
  out = np.zeros((size, size), np.float32)
  amp = 1.0
  for k in range(count):
    n = cells * 2**k
    field = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    out += amp * cv2.resize(field, (size, size),
                            interpolation=cv2.INTER_CUBIC)
    amp *= 0.5
  return out / 1.75


def _gradient(size, top, bottom, power=1.0):
  t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None] ** power
  return np.broadcast_to(top + (bottom - top) * t, (size, size, 3)).copy()


def _rects(rng, canvas, count, lum_range=(0.1, 0.9)):
  size = canvas.shape[0]
  for _ in range(count):
    w, h = rng.uniform(0.1, 0.6, 2) * size
    x, y = rng.uniform(-0.2, 1.0, 2) * size
    colour = photo_colour(rng, rng.uniform(*lum_range))
    p0 = (int(x), int(y))
    p1 = (int(x + w), int(y + h))
    cv2.rectangle(canvas, p0, p1, tuple(float(c) for c in colour), -1)
    if rng.random() < 0.5:  # a frame or mullion
      edge = photo_colour(rng, rng.uniform(0.1, 0.9))
      cv2.rectangle(canvas, p0, p1, tuple(float(c) for c in edge),
                    max(1, int(size / 60)))


def _indoor(rng, size):
  wall = photo_colour(rng, rng.uniform(0.35, 0.9), rng.uniform(0, 0.25))
  img = _gradient(size, wall * rng.uniform(0.8, 1.2),
                  wall * rng.uniform(0.5, 1.0))
  _rects(rng, img, int(rng.integers(1, 5)))
  if rng.random() < 0.5:  # a bright window
    x, w = rng.uniform(-0.2, 0.8) * size, rng.uniform(0.2, 0.5) * size
    sky = photo_colour(rng, rng.uniform(0.8, 1.0), rng.uniform(0, 0.15))
    cv2.rectangle(img, (int(x), int(0.05 * size)),
                  (int(x + w), int(rng.uniform(0.5, 0.9) * size)),
                  tuple(float(c) for c in sky), -1)
  if rng.random() < 0.6:  # floor or table line
    y = int(rng.uniform(0.6, 0.95) * size)
    floor = photo_colour(rng, rng.uniform(0.15, 0.6))
    img[y:] = floor
  return img


def _foliage(rng, size):
  sky = photo_colour(rng, rng.uniform(0.6, 1.0), rng.uniform(0, 0.25))
  img = _gradient(size, sky, sky * rng.uniform(0.7, 1.0), 0.7)
  leaves = _octaves(rng, size, int(rng.integers(3, 8)), 3)
  cover = np.clip((leaves - rng.uniform(-0.5, 0.3)) * 4, 0, 1)[..., None]
  green = photo_colour(rng, rng.uniform(0.15, 0.5), rng.uniform(0.15, 0.45))
  if rng.random() < 0.7:
    green = np.clip(np.array([0.7, 1.0, 0.55]) * green.mean() *
                    rng.uniform(0.8, 1.4, 3), 0, 1).astype(np.float32)
  tone = 0.6 + 0.6 * np.clip(_octaves(rng, size, 8, 2) * 0.5 + 0.5, 0, 1)
  img += (green * tone[..., None] - img) * cover
  return img


def _street(rng, size):
  img = _gradient(size, photo_colour(rng, rng.uniform(0.5, 0.95), 0.1),
                  photo_colour(rng, rng.uniform(0.2, 0.5)))
  x = rng.uniform(-0.3, 0.1) * size
  while x < size:
    w = rng.uniform(0.15, 0.5) * size
    top = rng.uniform(-0.1, 0.5) * size
    facade = photo_colour(rng, rng.uniform(0.2, 0.8), rng.uniform(0, 0.2))
    cv2.rectangle(img, (int(x), int(top)), (int(x + w), size),
                  tuple(float(c) for c in facade), -1)
    win = facade * rng.uniform(0.3, 0.7)
    step = max(4, int(rng.uniform(0.08, 0.14) * size))
    for wy in range(int(top) + step // 2, size - step, step):
      for wx in range(int(x) + step // 3, int(x + w) - step // 2, step):
        cv2.rectangle(img, (wx, wy), (wx + step // 2, wy + step // 2),
                      tuple(float(c) for c in win), -1)
    x += w
  return img


def _studio(rng, size):
  colour = photo_colour(rng, rng.uniform(0.15, 0.85), rng.uniform(0, 0.35))
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
  cx, cy = rng.uniform(0.2, 0.8, 2)
  glow = np.exp(-((xx - cx)**2 + (yy - cy)**2) / rng.uniform(0.1, 0.5))
  return colour * (rng.uniform(0.5, 0.8) + rng.uniform(0.2, 0.6) *
                   glow[..., None])


def _night(rng, size):
  base = photo_colour(rng, rng.uniform(0.03, 0.2), rng.uniform(0, 0.3))
  img = _gradient(size, base * 0.6, base * 1.4)
  _rects(rng, img, int(rng.integers(0, 3)), (0.03, 0.25))
  return img


def _people(rng, img, count):
  """Out-of-focus bystanders: a head (skin-toned ellipse) over shoulders."""
  size = img.shape[0]
  for _ in range(count):
    x, y = rng.uniform(0, 1) * size, rng.uniform(0.2, 0.8) * size
    r = rng.uniform(0.05, 0.14) * size
    shirt = photo_colour(rng)
    cv2.ellipse(img, (int(x), int(y + 2.6 * r)), (int(2.2 * r), int(1.6 * r)),
                0, 180, 360, tuple(float(c) for c in shirt), -1)
    cv2.rectangle(img, (int(x - 2.2 * r), int(y + 2.6 * r)),
                  (int(x + 2.2 * r), size), tuple(float(c) for c in shirt), -1)
    skin = photo_colour(rng, rng.uniform(0.25, 0.8), rng.uniform(0.15, 0.35))
    skin = np.clip(skin.mean() * np.array([1.15, 0.95, 0.8]), 0, 1)
    cv2.ellipse(img, (int(x), int(y)), (int(0.8 * r), int(r)), 0, 0, 360,
                tuple(float(c) for c in skin), -1)
    hair = photo_colour(rng, rng.uniform(0.03, 0.5), 0.1)
    cv2.ellipse(img, (int(x), int(y - 0.25 * r)), (int(0.85 * r),
                                                  int(0.8 * r)),
                0, 180, 360, tuple(float(c) for c in hair), -1)


def _pattern(rng, img):
  """A wall texture over part of the image: bricks, tiles or planks."""
  size = img.shape[0]
  step = max(3, int(rng.uniform(0.04, 0.12) * size))
  line = tuple(float(c) for c in photo_colour(rng, rng.uniform(0.1, 0.8)))
  kind = rng.integers(3)
  for k, y in enumerate(range(0, size, step)):
    if kind != 2:
      cv2.line(img, (0, y), (size, y), line, 1)
    if kind == 2:  # vertical planks
      cv2.line(img, (y, 0), (y, size), line, 1)
      continue
    offset = (step // 2) * (k % 2) if kind == 0 else 0
    width = 2 * step if kind == 0 else step
    for x in range(offset, size, width):
      cv2.line(img, (x, y), (x, y + step), line, 1)


_SCENES = (_indoor, _foliage, _street, _studio, _night)
_SCENE_P = np.array([0.35, 0.2, 0.15, 0.2, 0.1])


def _bokeh(rng, img, count, lights=False):
  size = img.shape[0]
  layer = np.zeros_like(img)
  for _ in range(count):
    centre = tuple(int(c) for c in rng.uniform(0, size, 2))
    radius = max(2, int(rng.uniform(0.015, 0.07) * size))
    colour = (photo_colour(rng, 1.0, rng.uniform(0.1, 0.6)) if lights else
              photo_colour(rng, rng.uniform(0.6, 1.0), 0.1))
    cv2.circle(layer, centre, radius,
               tuple(float(c) * rng.uniform(0.15, 0.6) for c in colour), -1,
               cv2.LINE_AA)
  img += cv2.GaussianBlur(layer, (0, 0), 0.7)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
  """(size, size, 3) float32 scene-like background in [0, 1]."""
  scene = _SCENES[rng.choice(len(_SCENES), p=_SCENE_P)]
  factor = 4 if rng.random() < 0.6 else 2  # more or less out of focus
  low = max(16, size // factor)
  img = scene(rng, low).astype(np.float32)
  if scene is _indoor and rng.random() < 0.3:
    _pattern(rng, img)
  if rng.random() < 0.2:
    _people(rng, img, int(rng.integers(1, 4)))
  if scene is _night:
    _bokeh(rng, img, int(rng.integers(5, 25)), lights=True)
  elif rng.random() < 0.35:
    _bokeh(rng, img, int(rng.integers(2, 12)))
  img *= 1 + 0.12 * _octaves(rng, low, 3, 2)[..., None]  # uneven light
  sigma = rng.uniform(0.3, 2.0)
  img = cv2.GaussianBlur(img, (0, 0), sigma)
  img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
  r, c = rng.integers(0, size, 2)
  return _add_grain(img, noise_bank(size)[r:r + size, c:c + size, :1],
                    np.float32(rng.uniform(0.0, 0.03)))


@numba.njit(cache=True, nogil=True)
def _add_grain(image, grain, scale):
  """(R, R, 3) float32: image + grain (R, R, 1) x scale, clipped to [0, 1]."""
  out = np.empty_like(image)
  zero, one = np.float32(0.0), np.float32(1.0)
  for i in range(image.shape[0]):
    for j in range(image.shape[1]):
      g = grain[i, j, 0] * scale
      for c in range(image.shape[2]):
        out[i, j, c] = min(max(image[i, j, c] + g, zero), one)
  return out


@functools.lru_cache(maxsize=2)
def noise_bank(size: int) -> np.ndarray:
  """A fixed (2 size, 2 size, 3) field of unit Gaussian pixel noise."""
  return np.random.default_rng(7).standard_normal((2 * size, 2 * size, 3),
                                                  dtype=np.float32)


def _shade_mask(image, mask, colour, rng, detail=0.0):
  """In place: fills mask (uint8 0..255) with colour graded along a line."""
  rows, cols = np.nonzero(mask)
  if rows.size == 0:
    return
  angle = rng.uniform(0, 2 * np.pi)
  t = cols * np.cos(angle) + rows * np.sin(angle)
  t = (t - t.min()) / (np.ptp(t) + 1e-6)
  shade = rng.uniform(0.5, 0.8) + rng.uniform(0.2, 0.5) * t
  fill = colour[None, :] * shade[:, None]
  if detail:
    fill *= 1 + detail * rng.standard_normal((rows.size, 1)).astype(
        np.float32)
  alpha = (mask[rows, cols] / 255.0)[:, None]
  image[rows, cols] += (np.clip(fill, 0, 1) - image[rows, cols]) * alpha


def _hand(rng, size, mask):
  centre = rng.uniform(0.15, 0.85, 2) * size
  palm = rng.uniform(0.09, 0.16) * size
  angle = rng.uniform(0, 2 * np.pi)
  cv2.ellipse(mask, tuple(int(c) for c in centre),
              (int(palm), int(palm * 0.8)), np.rad2deg(angle), 0, 360, 255,
              -1, cv2.LINE_AA)
  width = max(2, int(palm * 0.42))
  for k in range(int(rng.integers(2, 5))):
    a = angle + (k - 1.5) * 0.28 + rng.normal(0, 0.05)
    base = centre + palm * 0.7 * np.array([np.cos(a), np.sin(a)])
    tip = base + palm * rng.uniform(0.9, 1.5) * np.array([np.cos(a),
                                                          np.sin(a)])
    cv2.line(mask, tuple(int(c) for c in base), tuple(int(c) for c in tip),
             255, width, cv2.LINE_AA)
  thumb = angle + rng.choice([-1, 1]) * 1.3
  tip = centre + palm * 1.5 * np.array([np.cos(thumb), np.sin(thumb)])
  cv2.line(mask, tuple(int(c) for c in centre), tuple(int(c) for c in tip),
           255, int(width * 1.1), cv2.LINE_AA)


def _microphone(rng, size, image):
  head = rng.uniform(0.3, 0.8, 2) * size
  radius = rng.uniform(0.05, 0.1) * size
  angle = rng.uniform(0.3, np.pi - 0.3)
  end = head + size * np.array([np.cos(angle), np.sin(angle)])
  handle = np.zeros((size, size), np.uint8)
  cv2.line(handle, tuple(int(c) for c in head), tuple(int(c) for c in end),
           255, max(2, int(radius * 0.9)), cv2.LINE_AA)
  _shade_mask(image, handle, photo_colour(rng, rng.uniform(0.03, 0.3), 0.05),
              rng)
  ball = np.zeros((size, size), np.uint8)
  cv2.circle(ball, tuple(int(c) for c in head), int(radius), 255, -1,
             cv2.LINE_AA)
  _shade_mask(image, ball, photo_colour(rng, rng.uniform(0.2, 0.6), 0.02),
              rng, detail=0.25)


def add_occluder(image: np.ndarray, rng: np.random.Generator,
                 skin: np.ndarray | None = None) -> None:
  """In place: a hand, a microphone, an object or a blurred shape."""
  size = image.shape[0]
  kind = rng.choice(4, p=[0.4, 0.2, 0.25, 0.15])
  mask = np.zeros((size, size), np.uint8)
  if kind == 0:
    _hand(rng, size, mask)
    tone = skin if skin is not None and rng.random() < 0.5 else (
        photo_colour(rng, rng.uniform(0.3, 0.85), rng.uniform(0.15, 0.35)))
    tone = np.clip(np.asarray(tone) * [1.05, 0.95, 0.9] * rng.uniform(
        0.8, 1.1), 0, 1).astype(np.float32)
    _shade_mask(image, mask, tone, rng)
  elif kind == 1:
    _microphone(rng, size, image)
  elif kind == 2:  # a cup, a phone, a book
    centre = rng.uniform(0.1, 0.9, 2) * size
    half = rng.uniform(0.06, 0.2, 2) * size
    box = ((float(centre[0]), float(centre[1])),
           (float(2 * half[0]), float(2 * half[1])), float(rng.uniform(
               -40, 40)))
    cv2.fillConvexPoly(mask, cv2.boxPoints(box).astype(np.int32), 255,
                       cv2.LINE_AA)
    _shade_mask(image, mask, photo_colour(rng), rng, detail=0.03)
  else:
    centre = rng.uniform(0.15, 0.85, 2) * size
    radius = rng.uniform(0.08, 0.25) * size
    angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(4, 9))))
    radii = radius * rng.uniform(0.5, 1.0, len(angles))
    pts = centre + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:,
                                                                        None]
    cv2.fillPoly(mask, [pts.astype(np.int32)], 255, cv2.LINE_AA)
    mask = cv2.GaussianBlur(mask, (0, 0), rng.uniform(0.5, 3))
    _shade_mask(image, mask, photo_colour(rng), rng)


@functools.lru_cache(maxsize=2)
def _radius2(size: int) -> np.ndarray:
  t = np.linspace(-1, 1, size, dtype=np.float32)
  return (t[None, :]**2 + t[:, None]**2)[..., None] / 2


def _motion_kernel(rng, length):
  kernel = np.zeros((length, length), np.float32)
  angle = rng.uniform(0, 180)
  kernel[length // 2, :] = 1
  rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle, 1)
  kernel = cv2.warpAffine(kernel, rot, (length, length))
  return kernel / kernel.sum()


def finish_image(image: np.ndarray, rng: np.random.Generator) -> bytes:
  """Camera effects, then JPEG at a random quality (RGB in [0, 1] in).

  Defocus or motion blur; white balance, exposure, contrast and saturation
  jitter; vignetting; sensor noise (a random window of a fixed Gaussian
  field: fresh per-pixel noise would cost a tenth of a record's time).
  """
  size = image.shape[0]
  blur = rng.random()
  if blur < 0.12:
    length = int(rng.integers(3, max(4, size // 28)))
    image = cv2.filter2D(image, -1, _motion_kernel(rng, length))
  elif blur < 0.6:
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.0 +
                                                        size / 256))
  # White balance, exposure, saturation and contrast: one affine colour
  # map (cv2.transform, a single pass over the pixels).
  gains = rng.uniform(0.92, 1.08, 3) * rng.uniform(0.75, 1.2)
  saturation = rng.uniform(0.65, 1.2) if rng.random() > 0.04 else 0.0
  contrast = rng.uniform(0.8, 1.2)
  mix = (saturation * np.eye(3) + (1 - saturation) / 3) * gains[None, :]
  affine = np.concatenate([contrast * mix,
                           np.full((3, 1), 0.5 * (1 - contrast))], 1)
  image = cv2.transform(image, affine.astype(np.float32))
  vignette = (np.float32(rng.uniform(0.1, 0.5)) if rng.random() < 0.5 else
              np.float32(0.0))
  r, c = rng.integers(0, size, 2)
  rgb = _vignette_noise_to_bytes(
      image, vignette, _radius2(size), noise_bank(size)[r:r + size,
                                                        c:c + size],
      np.float32(rng.uniform(0, 0.03)))
  return records.encode_jpeg(rgb, int(rng.integers(30, 96)))


@numba.njit(cache=True, nogil=True)
def _vignette_noise_to_bytes(image, vignette, radius2, noise, noise_scale):
  """(R, R, 3) uint8: image x (1 - vignette x radius2) (when vignette >
  0) + noise x noise_scale, to 0..255 (x 255 + 0.5, clipped, truncated),
  per pixel in float32."""
  out = np.empty(image.shape, np.uint8)
  one, scale, half = np.float32(1.0), np.float32(255.0), np.float32(0.5)
  zero = np.float32(0.0)
  for i in range(image.shape[0]):
    for j in range(image.shape[1]):
      darken = one - vignette * radius2[i, j, 0]
      for c in range(3):
        value = image[i, j, c]
        if vignette > 0:
          value *= darken
        value = value + noise[i, j, c] * noise_scale
        out[i, j, c] = np.uint8(min(max(value * scale + half, zero), scale))
  return out
