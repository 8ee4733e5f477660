"""Procedural albedo textures in UV space: skin, lips, brows, eyes, hair.

Region masks and detail fields (smooth blotches, pores, hair strands,
stubble, iris fibres) are drawn once per texture resolution from the
landmark UV coordinates of the face model; a texture is then a per-channel
mix of those fields and a few masked colour blends, cheap enough to make
per record. Albedo is in sRGB-like [0, 1] values; the renderer squares it
to shade in (approximately) linear light.
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
import numba
import numpy as np

from jaxface.face import model as model_lib


@dataclasses.dataclass(frozen=True)
class Region:
  """A soft mask in [0, 1], cropped to where it is non-zero."""
  rows: slice
  cols: slice
  weight: np.ndarray  # (h, w, 1) float32

  @classmethod
  def of(cls, mask: np.ndarray) -> 'Region':
    r, c = np.nonzero(mask > 1e-3)
    if r.size == 0:
      return cls(slice(0, 0), slice(0, 0), np.zeros((0, 0, 1), np.float32))
    rows, cols = slice(r.min(), r.max() + 1), slice(c.min(), c.max() + 1)
    return cls(rows, cols, mask[rows, cols, None].astype(np.float32))

  def crop(self, field: np.ndarray) -> np.ndarray:
    """The part of a full-size (T, T, ...) field under this region."""
    return field[self.rows, self.cols]

  def blend(self, texture: np.ndarray, colour, strength: float = 1.0):
    """In place: texture = texture (1 - w) + colour w inside the region.

    `colour` is an RGB triple or an (h, w, 3) array over the region.
    """
    w = self._weight(strength)
    if w is None:
      return
    part = texture[self.rows, self.cols]
    _blend(part, np.broadcast_to(np.asarray(colour, np.float32), part.shape),
           w)

  def blend_detail(self, texture: np.ndarray, colour, detail: np.ndarray,
                   offset: float, gain: float, strength: float = 1.0):
    """In place: `blend` with, per texel, colour x (offset + gain x detail)
    (`colour` a float32 RGB triple, `detail` a full-size (T, T, 1) float32
    field such as the hair strands), formed in float32 as numpy forms it
    from float32 operands, without the (h, w, 3) colour array."""
    w = self._weight(strength)
    if w is None:
      return
    _blend_detail(texture[self.rows, self.cols],
                  np.asarray(colour, np.float32), self.crop(detail),
                  np.float32(offset), np.float32(gain), w)

  def _weight(self, strength: float) -> np.ndarray | None:
    """The blend's (h, w, 1) float32 weight at `strength`; None at 0."""
    if strength <= 0:
      return None
    return self.weight * strength if strength != 1.0 else self.weight


@numba.njit(cache=True, nogil=True)
def _blend(part, colour, weight):
  """In place: part += (colour - part) x weight, (h, w, 3) and (h, w, 1)."""
  for i in range(part.shape[0]):
    for j in range(part.shape[1]):
      w = weight[i, j, 0]
      for c in range(part.shape[2]):
        part[i, j, c] += (colour[i, j, c] - part[i, j, c]) * w


@numba.njit(cache=True, nogil=True)
def _blend_detail(part, colour, detail, offset, gain, weight):
  """In place: part += (colour x (offset + gain x detail) - part) x weight;
  part (h, w, 3), colour (3,), detail and weight (h, w, 1), all float32."""
  for i in range(part.shape[0]):
    for j in range(part.shape[1]):
      w = weight[i, j, 0]
      scale = offset + gain * detail[i, j, 0]
      for c in range(part.shape[2]):
        part[i, j, c] += (colour[c] * scale - part[i, j, c]) * w


@dataclasses.dataclass(frozen=True)
class TextureMasks:
  """Soft masks in [0, 1] and detail fields of a (T, T) texture."""
  lips: Region
  mouth: Region
  teeth: Region
  sclera: Region
  caruncle: Region
  iris: Region
  limbus: Region
  pupil: Region
  catchlight: Region
  lash_line: Region
  lid_shadow: Region
  crease: Region
  lower_lid: Region
  brows: Region
  nostrils: Region
  cheeks: Region
  under_eye: Region
  eye_shadow: Region
  beard: Region
  moustache: Region
  shade: np.ndarray  # (T, T, 1) skin darkening towards the neck.
  v: np.ndarray  # (T,) v coordinate of each row, for the hairline.
  theta_deg: np.ndarray  # (T,) |azimuth| in degrees of each column.
  noise: np.ndarray  # (L * L, 5) smooth noise fields in [-1, 1], L = 64.
  pores: np.ndarray  # (T, T, 1) fine noise in [-1, 1].
  scalp_strands: np.ndarray  # (T, T, 1) hair strands along v, in [0, 1].
  brow_strands: np.ndarray  # (T, T, 1) strands along u, in [0, 1].
  stubble: np.ndarray  # (T, T, 1) sparse dots, in [0, 1].
  jag: np.ndarray  # (T, T) hairline raggedness in [-1, 1].
  iris_fibres: np.ndarray  # (T, T, 1) in [0, 1].


_LOW = 64  # side of the grid the smooth skin variation is mixed on


def _texel(points_uv, size):
  return np.round(np.asarray(points_uv) * (size - 1)).astype(np.int32)


def _blur(mask, sigma_px):
  mask = mask.astype(np.float32)
  if sigma_px > 0:
    mask = cv2.GaussianBlur(mask, (0, 0), sigma_px)
  return np.clip(mask, 0, 1)


def _unit(field):
  """Rescales a field to [0, 1] by its 1st and 99th percentiles."""
  lo, hi = np.percentile(field, [1, 99])
  return np.clip((field - lo) / (hi - lo + 1e-6), 0, 1).astype(np.float32)


def _strands(rng, size, sigma_u, sigma_v):
  """Anisotropic noise: hair-like streaks (blurred along one axis)."""
  white = rng.uniform(0, 1, (size, size)).astype(np.float32)
  return _unit(cv2.GaussianBlur(white, (0, 0), sigmaX=sigma_u,
                                sigmaY=sigma_v))[..., None]


@functools.lru_cache(maxsize=4)
def texture_masks(size: int) -> TextureMasks:
  """Region masks of a (size, size) UV texture; built once per size."""
  lmk = model_lib.landmark_uv()
  px_per_mm = size / (model_lib.Y_TOP - model_lib.Y_BOTTOM)
  soft = 0.6 * px_per_mm

  def poly(indices, thickness=0):
    m = np.zeros((size, size), np.uint8)
    pts = _texel(lmk[list(indices)], size)
    if thickness:
      cv2.polylines(m, [pts], False, 1, thickness)
    else:
      cv2.fillPoly(m, [pts], 1)
    return m

  def px(mm):
    return max(1, int(round(mm * px_per_mm)))

  lips = _blur(poly(model_lib.OUTER_LIPS), soft)
  mouth = _blur(cv2.dilate(poly(model_lib.INNER_LIPS),
                           np.ones((2, 2), np.uint8)), 0.5 * soft)
  eyes = np.maximum(poly(model_lib.LEFT_EYE), poly(model_lib.RIGHT_EYE))
  upper = np.maximum(poly((36, 37, 38, 39), px(1.6)),
                     poly((42, 43, 44, 45), px(1.6)))
  lower = np.maximum(poly((39, 40, 41, 36), 1), poly((45, 46, 47, 42), 1))
  lift = np.array([0, -4.5 * px_per_mm]) / (size - 1)
  crease = np.zeros((size, size), np.uint8)
  for ids in ((36, 37, 38, 39), (42, 43, 44, 45)):
    pts = _texel(lmk[list(ids)] + lift, size)
    cv2.polylines(crease, [pts], False, 1, 1)
  iris = np.zeros((size, size), np.float32)
  limbus = np.zeros((size, size), np.float32)
  pupil = np.zeros((size, size), np.float32)
  catch = np.zeros((size, size), np.float32)
  caruncle = np.zeros((size, size), np.float32)
  for eye, inner in ((model_lib.LEFT_EYE, 39), (model_lib.RIGHT_EYE, 42)):
    centre_uv = lmk[list(eye)].mean(0)
    centre = tuple(int(c) for c in _texel(centre_uv, size))
    cv2.circle(iris, centre, px(5.5), 1.0, -1)
    cv2.circle(limbus, centre, px(5.0), 1.0, max(1, px(1.0)))
    cv2.circle(pupil, centre, px(2.2), 1.0, -1)
    glint = (centre[0] - px(1.6), centre[1] - px(1.8))
    cv2.circle(catch, glint, max(1, px(0.8)), 1.0, -1)
    corner = tuple(int(c) for c in _texel(lmk[inner], size))
    cv2.circle(caruncle, corner, px(2.0), 1.0, -1)
  brows = np.maximum(poly(model_lib.LEFT_BROW, px(4.5)),
                     poly(model_lib.RIGHT_BROW, px(4.5)))
  nostrils = np.zeros((size, size), np.float32)
  for k in (32, 34):
    centre = tuple(int(c) for c in _texel(lmk[k], size))
    cv2.ellipse(nostrils, centre, (px(3), px(1.5)), 0, 0, 360, 1.0, -1)

  grid = np.linspace(0, 1, size)
  theta, y = model_lib.uv_to_theta_y(np.stack(np.meshgrid(grid, grid), -1))
  s = theta * model_lib.S_SCALE
  gauss = model_lib._gauss  # pylint: disable=protected-access
  cheeks = gauss(s, y, 42, -35, 12, 10, mirror=True)
  under_eye = gauss(s, y, 30, -8, 10, 3.5, mirror=True)
  lid_shadow = gauss(s, y, 32, 9, 12, 4.5, mirror=True)
  jaw = model_lib.jaw_line(theta)
  # The beard's upper edge rises from the mouth to the sideburns.
  beard_top = np.interp(np.rad2deg(np.abs(theta)), [0, 20, 45, 70, 84],
                        [-50, -53, -46, -28, -12])
  beard = ((y < beard_top) & (y > jaw - 25) &
           (np.abs(theta) < np.deg2rad(86))).astype(np.float32)
  moustache = ((y < -53) & (y > -62 - 5 * (np.abs(s) / 24)**2) &
               (np.abs(s) < 26)).astype(np.float32)
  beard *= 1 - lips
  beard_edge = _blur(beard, 3 * soft) > 0.02
  moustache *= 1 - lips
  teeth = mouth * (y > -68.6)
  neck = np.clip((jaw - y) / 20, 0, 1)

  rng = np.random.default_rng(99)
  noise = []
  for cells in (4, 8, 16, 32, 64):
    field = cv2.resize(rng.uniform(-1, 1, (cells, cells)).astype(np.float32),
                       (_LOW, _LOW), interpolation=cv2.INTER_CUBIC)
    noise.append(np.clip(field, -1, 1))
  pores = cv2.GaussianBlur(rng.uniform(-1, 1, (size, size)).astype(
      np.float32), (0, 0), 0.6)
  pores = np.clip(pores / (pores.std() * 2.5), -1, 1)
  fibres = _unit(cv2.GaussianBlur(
      rng.uniform(0, 1, (size, size)).astype(np.float32), (0, 0), 0.6))
  dots = cv2.GaussianBlur(rng.uniform(0, 1, (size, size)).astype(np.float32),
                          (0, 0), 0.5)
  jag = cv2.resize(rng.uniform(-1, 1, (size // 2, size // 2)).astype(
      np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
  eyes_f = _blur(eyes, 0.3 * soft)
  # The upper lid shades the top of the eye opening.
  upper_f = _blur(cv2.dilate(upper, np.ones((3, 3), np.uint8)), 1.5 * soft)
  return TextureMasks(
      lips=Region.of(lips), mouth=Region.of(mouth), teeth=Region.of(teeth),
      sclera=Region.of(eyes_f),
      caruncle=Region.of(_blur(caruncle, soft) * eyes_f),
      iris=Region.of(iris * eyes_f), limbus=Region.of(limbus * eyes_f),
      pupil=Region.of(pupil * eyes_f),
      catchlight=Region.of(catch * eyes_f),
      lash_line=Region.of(_blur(upper, 0.4 * soft) * (1 - 0.5 * eyes_f)),
      lid_shadow=Region.of(upper_f * eyes_f),
      lower_lid=Region.of(_blur(lower, 0.5 * soft) * (1 - eyes_f)),
      crease=Region.of(_blur(crease, soft)),
      brows=Region.of(_blur(brows, soft)),
      nostrils=Region.of(_blur(nostrils, soft)),
      cheeks=Region.of(np.where(cheeks > 0.01, cheeks, 0)),
      under_eye=Region.of(np.where(under_eye > 0.02, under_eye, 0) *
                          (1 - eyes_f)),
      eye_shadow=Region.of(np.where(lid_shadow > 0.02, lid_shadow, 0) *
                           (1 - eyes_f) * (1 - _blur(brows, soft))),
      beard=Region.of(np.clip(3 * (_blur(beard, 2 * soft) - 0.5) + 0.5 +
                              cv2.resize(np.asarray(rng.uniform(
                                  -1, 1, (48, 48)), np.float32),
                                         (size, size)), 0, 1) * (beard_edge)),
      moustache=Region.of(_blur(moustache, 2.5 * soft)),
      shade=(1 - 0.15 * neck)[..., None].astype(np.float32),
      v=grid.astype(np.float32),
      theta_deg=np.abs(np.rad2deg(theta[0])).astype(np.float32),
      noise=np.stack(noise, -1).reshape(_LOW * _LOW, len(noise)),
      pores=pores[..., None],
      scalp_strands=_strands(rng, size, 0.5, 3.0 * px_per_mm),
      brow_strands=_strands(rng, size, 1.8 * px_per_mm, 0.4),
      stubble=np.clip((dots - np.percentile(dots, 55)) * 12, 0, 1)[..., None],
      jag=np.clip(jag, -1, 1), iris_fibres=fibres[..., None])


SKIN_TONES = np.array([
    (0.97, 0.83, 0.74), (0.94, 0.76, 0.64), (0.88, 0.68, 0.55),
    (0.80, 0.60, 0.45), (0.70, 0.50, 0.36), (0.56, 0.38, 0.27),
    (0.42, 0.28, 0.20), (0.30, 0.20, 0.15)], np.float32)
HAIR_COLOURS = np.array([
    (0.06, 0.05, 0.045), (0.12, 0.085, 0.06), (0.25, 0.16, 0.10),
    (0.40, 0.27, 0.16), (0.62, 0.48, 0.30), (0.80, 0.68, 0.48),
    (0.50, 0.22, 0.10), (0.60, 0.60, 0.60), (0.85, 0.85, 0.83)], np.float32)
HAIR_WEIGHTS = np.array([0.22, 0.22, 0.18, 0.12, 0.07, 0.05, 0.05, 0.06, 0.03])
IRIS_COLOURS = np.array([
    (0.22, 0.12, 0.06), (0.35, 0.22, 0.12), (0.28, 0.42, 0.58),
    (0.34, 0.42, 0.28), (0.45, 0.36, 0.20), (0.45, 0.52, 0.58)], np.float32)
LIPSTICKS = np.array([
    (0.70, 0.10, 0.15), (0.80, 0.35, 0.45), (0.50, 0.12, 0.20),
    (0.75, 0.45, 0.40), (0.90, 0.25, 0.25)], np.float32)


@dataclasses.dataclass(frozen=True)
class Albedo:
  """An identity's albedo parameters (sampled once per identity)."""
  skin: np.ndarray       # (3,) RGB
  lips: np.ndarray       # (3,)
  hair: np.ndarray       # (3,)
  brow: np.ndarray       # (3,)
  iris: np.ndarray       # (3,)
  noise_colour: np.ndarray  # (5, 3) per-channel weights of the noise fields
  pores: float
  hairline: float        # v of the hairline at the midline
  hair_knots: np.ndarray  # (9,) height (mm) of the hairline per azimuth knot
  hair_length: float     # 0 short .. 1 long (for the hair volume overlay)
  bald: bool
  beard: float           # full-beard strength in [0, 1]
  stubble: float         # stubble strength in [0, 1]
  moustache: float
  blush: float
  makeup: float          # eye shadow / eyeliner strength in [0, 1]
  eye_shadow: np.ndarray  # (3,)
  freckles: float

  @property
  def hull_colour(self) -> np.ndarray:
    """Colour of the top and back of the head (hair, or skin when bald)."""
    return self.skin * 0.95 if self.bald else self.hair


# Azimuth knots (degrees) of the hairline; `Albedo.hair_knots` are heights.
HAIR_THETA = np.array([0, 25, 45, 62, 74, 82, 88, 94, 100], np.float32)


def _mix(table, rng):
  """A random point between two neighbouring rows of a colour table."""
  t = rng.uniform(0, len(table) - 1)
  lo = int(np.floor(t))
  hi = min(lo + 1, len(table) - 1)
  return table[lo] * (1 - (t - lo)) + table[hi] * (t - lo)


def sample_albedo(rng: np.random.Generator) -> Albedo:
  """Random skin, hair, eyes, facial hair and make-up of one identity."""
  skin = _mix(SKIN_TONES, rng) * rng.uniform(0.94, 1.06, size=3)
  skin = skin * (1 + rng.uniform(-0.04, 0.04) * np.array([1, 0, -1.5]))
  lips = skin * np.array([0.86, 0.58, 0.60]) * rng.uniform(0.82, 1.05)
  makeup = float(rng.uniform(0.3, 1.0)) if rng.random() < 0.25 else 0.0
  if makeup and rng.random() < 0.7:
    lipstick = LIPSTICKS[rng.integers(len(LIPSTICKS))]
    lips = lips + (lipstick * rng.uniform(0.6, 1.0) - lips) * makeup
  hair = HAIR_COLOURS[rng.choice(len(HAIR_COLOURS), p=HAIR_WEIGHTS)]
  hair = hair * rng.uniform(0.8, 1.15) * rng.uniform(0.95, 1.05, 3)
  noise_colour = np.zeros((5, 3), np.float32)
  noise_colour[:] = rng.uniform(0, 0.045, (5, 1))  # blotches, luminance
  redness = rng.uniform(0, 0.035, 3)
  noise_colour[1:4] += redness[:, None] * [1.0, -0.3, -0.2]
  bald = bool(rng.random() < 0.08)
  long = float(rng.random() < 0.35) * rng.uniform(0.4, 1.0)
  y0 = rng.uniform(48, 80)
  if rng.random() < 0.2:  # fringe
    y0 = rng.uniform(26, 45)
  recession = rng.uniform(0, 18) if rng.random() < 0.4 else 0.0
  side = rng.uniform(-25, 15)
  ear = -75.0 if long > 0.6 else rng.uniform(5, 14)
  back = -95.0 if long else rng.uniform(-60, -35)
  round_ = rng.uniform(0, 8)
  knots = np.array([y0, y0 + round_ * 0.4, y0 + round_ + recession,
                    y0 + recession * 0.5 - 10, max(side + 15, -5), side,
                    ear, ear, back], np.float32)
  if bald:
    knots = np.full(9, 200, np.float32)
    knots[5:] = [rng.uniform(-10, 20), 20, 20, rng.uniform(-40, 0)]
    if rng.random() < 0.5:
      knots[:] = 200  # shaved
  beard = float(rng.uniform(0.5, 1.0)) if rng.random() < 0.12 else 0.0
  stubble = float(rng.uniform(0.2, 0.9)) if rng.random() < 0.25 else 0.0
  return Albedo(
      skin=skin.astype(np.float32), lips=lips.astype(np.float32),
      hair=hair.astype(np.float32),
      brow=(hair * rng.uniform(0.6, 0.95)).astype(np.float32),
      iris=(IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))] *
            rng.uniform(0.8, 1.2)).astype(np.float32),
      noise_colour=noise_colour.astype(np.float32),
      pores=float(rng.uniform(0.015, 0.06)),
      hairline=float((model_lib.Y_TOP - y0) /
                     (model_lib.Y_TOP - model_lib.Y_BOTTOM)),
      hair_knots=knots, hair_length=long, bald=bald,
      beard=beard, stubble=stubble,
      moustache=float(rng.uniform(0.4, 0.9)) if (
          beard or rng.random() < 0.06) else 0.0,
      blush=float(rng.uniform(0, 0.15)) + 0.15 * makeup,
      makeup=makeup,
      eye_shadow=(rng.uniform(0.25, 0.6, 3) * rng.uniform(0.6, 1.0)).astype(
          np.float32),
      freckles=float(rng.uniform(0.2, 0.6)) if rng.random() < 0.08 else 0.0)


def _hair_mask(albedo: Albedo, m: TextureMasks, size: int) -> np.ndarray:
  """(rows, T, 1) soft hair cover of the top rows of the texture."""
  height = np.interp(m.theta_deg, HAIR_THETA, albedo.hair_knots)
  v_line = (model_lib.Y_TOP - height) / (model_lib.Y_TOP - model_lib.Y_BOTTOM)
  rows = int(np.clip(np.ceil((v_line.max() + 0.03) * (size - 1)), 0, size))
  if rows == 0:
    return np.zeros((0, size, 1), np.float32)
  edge = (v_line[None, :] - m.v[:rows, None]) / 0.012
  edge += 0.8 * m.jag[:rows]
  return np.clip(edge, 0, 1)[..., None].astype(np.float32)


def make_texture(albedo: Albedo, size: int) -> np.ndarray:
  """(size, size, 3) float32 RGB albedo in [0, 1] in UV space."""
  m = texture_masks(size)
  # einsum, not @: BLAS rounds differently with its thread count.
  variation = np.einsum('pk,kc->pc', m.noise, albedo.noise_colour)
  variation = cv2.resize(variation.reshape(_LOW, _LOW, 3), (size, size))
  tex = _skin(variation, m.pores, np.float32(albedo.pores),
              np.asarray(albedo.skin, np.float32), m.shade)
  if albedo.freckles:
    region = Region(slice(0, size), slice(0, size), m.stubble)
    region.blend(tex, albedo.skin * 0.7, albedo.freckles * 0.5)
  m.cheeks.blend(tex, albedo.skin * np.array([1.15, 0.8, 0.8]), albedo.blush)
  m.under_eye.blend(tex, albedo.skin * np.array([0.78, 0.72, 0.76]), 0.35)
  if albedo.makeup:
    m.eye_shadow.blend(tex, albedo.eye_shadow, 0.6 * albedo.makeup)
  if albedo.stubble:
    dots = m.beard.crop(m.stubble)
    m.beard.blend(tex, albedo.skin * (1 - 0.3 * dots) + albedo.hair * 0.3 *
                  dots, albedo.stubble)
  # Hair: its colour x (0.45 + 0.9 x the strand field).
  strands = (m.scalp_strands, 0.45, 0.9)
  if albedo.beard:
    m.beard.blend_detail(tex, albedo.hair, *strands, albedo.beard)
  if albedo.moustache:
    m.moustache.blend_detail(tex, albedo.hair, *strands, albedo.moustache)
  m.lips.blend_detail(tex, albedo.lips, m.brow_strands, 0.92, 0.16)
  m.brows.blend_detail(tex, albedo.brow, m.brow_strands, 0.5, 0.9, 0.75)
  m.nostrils.blend(tex, albedo.skin * 0.25, 0.85)
  m.sclera.blend(tex, (0.80, 0.76, 0.73))
  m.caruncle.blend(tex, (0.80, 0.50, 0.50), 0.8)
  m.iris.blend_detail(tex, albedo.iris, m.iris_fibres, 0.55, 0.7)
  m.limbus.blend(tex, albedo.iris * 0.35, 0.7)
  m.pupil.blend(tex, (0.02, 0.02, 0.02))
  m.lid_shadow.blend(tex, (0.25, 0.2, 0.18), 0.5)
  m.catchlight.blend(tex, (0.95, 0.95, 0.95), 0.8)
  m.lash_line.blend(tex, (0.05, 0.04, 0.04), 0.85 + 0.15 * albedo.makeup)
  m.lower_lid.blend(tex, albedo.skin * 0.55, 0.5)
  m.crease.blend(tex, albedo.skin * 0.6, 0.35)
  m.mouth.blend(tex, (0.22, 0.07, 0.07))
  m.teeth.blend(tex, (0.60, 0.56, 0.50), 0.5)
  cover = _hair_mask(albedo, m, size)
  rows = cover.shape[0]
  if rows:
    hair = Region(slice(0, rows), slice(0, size), cover)
    hair.blend_detail(tex, albedo.hair, *strands)
  return np.clip(tex, 0, 1, out=tex)


@numba.njit(cache=True, nogil=True)
def _skin(variation, pores, pores_amount, skin, shade):
  """(T, T, 3) float32: (variation + 1 + pores x pores_amount) x skin x
  shade, per texel in float32 (the skin before the masked blends)."""
  one = np.float32(1.0)
  tex = np.empty_like(variation)
  for i in range(variation.shape[0]):
    for j in range(variation.shape[1]):
      grain = pores[i, j, 0] * pores_amount
      for c in range(3):
        tex[i, j, c] = (variation[i, j, c] + one + grain) * skin[c] * shade[
            i, j, 0]
  return tex
