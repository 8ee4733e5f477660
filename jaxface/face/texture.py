"""Procedural albedo textures in UV space: skin, lips, brows, eyes, hair.

Region masks are drawn once per texture resolution from the landmark UV
coordinates of the face model; a texture is then a few masked colour
blends, cheap enough to make per record.
"""

from __future__ import annotations

import dataclasses
import functools

import cv2
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

  def blend(self, texture: np.ndarray, colour, strength: float = 1.0):
    """In place: texture = texture (1 - w) + colour w inside the region."""
    if strength <= 0:
      return
    w = self.weight * strength if strength != 1.0 else self.weight
    part = texture[self.rows, self.cols]
    part += (np.asarray(colour, np.float32) - part) * w


@dataclasses.dataclass(frozen=True)
class TextureMasks:
  """Soft masks in [0, 1] of the albedo's regions of a (T, T) texture."""
  lips: Region
  mouth: Region
  sclera: Region
  iris: Region
  pupil: Region
  lid_line: Region
  brows: Region
  nostrils: Region
  cheeks: Region
  beard: Region
  shade: np.ndarray  # (T, T, 1) skin darkening towards the neck.
  v: np.ndarray  # (T,) v coordinate of each row, for the hairline.
  noise: np.ndarray  # (T * T, 4) smooth noise fields in [-1, 1].


def _texel(points_uv, size):
  return np.round(np.asarray(points_uv) * (size - 1)).astype(np.int32)


def _blur(mask, sigma_px):
  mask = mask.astype(np.float32)
  if sigma_px > 0:
    mask = cv2.GaussianBlur(mask, (0, 0), sigma_px)
  return np.clip(mask, 0, 1)


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

  lips = _blur(poly(model_lib.OUTER_LIPS), soft)
  mouth = _blur(cv2.dilate(poly(model_lib.INNER_LIPS),
                           np.ones((2, 2), np.uint8)), 0.5 * soft)
  eyes = np.maximum(poly(model_lib.LEFT_EYE), poly(model_lib.RIGHT_EYE))
  lid = np.maximum(poly(model_lib.LEFT_EYE + (36,), 1),
                   poly(model_lib.RIGHT_EYE + (42,), 1))
  iris = np.zeros((size, size), np.float32)
  pupil = np.zeros((size, size), np.float32)
  for eye in (model_lib.LEFT_EYE, model_lib.RIGHT_EYE):
    centre = tuple(int(c) for c in _texel(lmk[list(eye)].mean(0), size))
    cv2.circle(iris, centre, max(1, int(round(5.5 * px_per_mm))), 1.0, -1)
    cv2.circle(pupil, centre, max(1, int(round(2.2 * px_per_mm))), 1.0, -1)
  brow_px = max(1, int(round(4.5 * px_per_mm)))
  brows = np.maximum(poly(model_lib.LEFT_BROW, brow_px),
                     poly(model_lib.RIGHT_BROW, brow_px))
  nostrils = np.zeros((size, size), np.float32)
  for k in (32, 34):
    centre = tuple(int(c) for c in _texel(lmk[k], size))
    axes = (max(1, int(3 * px_per_mm)), max(1, int(1.5 * px_per_mm)))
    cv2.ellipse(nostrils, centre, axes, 0, 0, 360, 1.0, -1)

  grid = np.linspace(0, 1, size)
  theta, y = model_lib.uv_to_theta_y(np.stack(np.meshgrid(grid, grid), -1))
  s = theta * model_lib.S_SCALE
  cheeks = model_lib._gauss(s, y, 42, -35, 12, 10, mirror=True)  # pylint: disable=protected-access
  jaw = model_lib.jaw_line(theta)
  beard = ((y < -60) & (np.abs(theta) < np.deg2rad(82))).astype(np.float32)
  beard *= 1 - lips
  neck = np.clip((jaw - y) / 20, 0, 1)

  rng = np.random.default_rng(99)
  noise = []
  for cells in (4, 8, 16, 32):
    field = cv2.resize(rng.uniform(-1, 1, (cells, cells)).astype(np.float32),
                       (size, size), interpolation=cv2.INTER_CUBIC)
    noise.append(np.clip(field, -1, 1))
  eyes_f = _blur(eyes, 0.3 * soft)
  return TextureMasks(
      lips=Region.of(lips), mouth=Region.of(mouth), sclera=Region.of(eyes_f),
      iris=Region.of(iris * eyes_f), pupil=Region.of(pupil * eyes_f),
      lid_line=Region.of(_blur(lid, 0.5 * soft) * (1 - eyes_f)),
      brows=Region.of(_blur(brows, soft)),
      nostrils=Region.of(_blur(nostrils, soft)),
      cheeks=Region.of(np.where(cheeks > 0.01, cheeks, 0)),
      beard=Region.of(_blur(beard, 2 * soft)),
      shade=(1 - 0.15 * neck)[..., None].astype(np.float32),
      v=grid.astype(np.float32),
      noise=np.stack(noise, -1).reshape(size * size, 4))


SKIN_TONES = np.array([
    (0.96, 0.80, 0.69), (0.92, 0.72, 0.58), (0.85, 0.64, 0.50),
    (0.76, 0.55, 0.40), (0.62, 0.42, 0.30), (0.45, 0.30, 0.21),
    (0.33, 0.22, 0.16)], np.float32)
HAIR_COLOURS = np.array([
    (0.08, 0.06, 0.05), (0.22, 0.14, 0.08), (0.42, 0.28, 0.15),
    (0.70, 0.55, 0.30), (0.55, 0.25, 0.12), (0.65, 0.65, 0.65)], np.float32)
IRIS_COLOURS = np.array([
    (0.30, 0.18, 0.10), (0.20, 0.35, 0.55), (0.30, 0.40, 0.25),
    (0.45, 0.35, 0.20)], np.float32)


@dataclasses.dataclass(frozen=True)
class Albedo:
  """An identity's albedo parameters (sampled once per identity)."""
  skin: np.ndarray       # (3,) RGB
  lips: np.ndarray       # (3,)
  hair: np.ndarray       # (3,)
  iris: np.ndarray       # (3,)
  noise_weights: np.ndarray  # (4,)
  hairline: float        # v of the hairline at the midline
  beard: float           # beard / stubble strength in [0, 1]
  blush: float


def sample_albedo(rng: np.random.Generator) -> Albedo:
  tone = rng.uniform(0, len(SKIN_TONES) - 1)
  lo = int(np.floor(tone))
  hi = min(lo + 1, len(SKIN_TONES) - 1)
  skin = SKIN_TONES[lo] * (1 - (tone - lo)) + SKIN_TONES[hi] * (tone - lo)
  skin = skin * rng.uniform(0.92, 1.08, size=3)
  lips = skin * np.array([0.85, 0.55, 0.58]) * rng.uniform(0.85, 1.1)
  return Albedo(
      skin=skin.astype(np.float32), lips=lips.astype(np.float32),
      hair=(HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] *
            rng.uniform(0.8, 1.2)).astype(np.float32),
      iris=IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))],
      noise_weights=rng.uniform(0, 0.06, size=4).astype(np.float32),
      hairline=float(rng.uniform(0.02, 0.16)),
      beard=float(rng.uniform(0, 0.6) if rng.random() < 0.3 else 0.0),
      blush=float(rng.uniform(0, 0.15)))


def make_texture(albedo: Albedo, size: int) -> np.ndarray:
  """(size, size, 3) float32 RGB albedo in [0, 1] in UV space."""
  m = texture_masks(size)
  # einsum, not @: see jaxface.face.render on bitwise reproducibility.
  variation = 1 + np.einsum('pk,k->p', m.noise, albedo.noise_weights)
  variation = variation.reshape(size, size, 1)
  tex = albedo.skin * variation * m.shade
  m.cheeks.blend(tex, albedo.skin * np.array([1.2, 0.85, 0.85]), albedo.blush)
  m.beard.blend(tex, albedo.skin * 0.55, albedo.beard)
  m.lips.blend(tex, albedo.lips)
  m.brows.blend(tex, albedo.hair * 0.9, 0.85)
  m.nostrils.blend(tex, albedo.skin * 0.3, 0.8)
  m.sclera.blend(tex, (0.93, 0.90, 0.88))
  m.iris.blend(tex, albedo.iris)
  m.pupil.blend(tex, (0.03, 0.03, 0.03))
  m.lid_line.blend(tex, albedo.skin * 0.35, 0.7)
  m.mouth.blend(tex, (0.25, 0.08, 0.08))
  hair = np.clip((albedo.hairline - m.v) / 0.02 + 0.5, 0, 1)
  rows = int(np.count_nonzero(hair > 0))
  if rows:
    Region(slice(0, rows), slice(0, size),
           np.broadcast_to(hair[:rows, None, None], (rows, size, 1))).blend(
               tex, albedo.hair)
  return np.clip(tex, 0, 1, out=tex)
