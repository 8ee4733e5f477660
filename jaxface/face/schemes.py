"""Landmark schemes of other datasets, read from jaxface's points.

A jaxface position map gives the 68 iBUG landmarks and the 5 extra points
of its UV layout (`layout.UVLayout`: glabella, ear_left, ear_right,
head_left, head_right). A `Scheme` says how each point of another
dataset's annotation is read from them: one iBUG point, the mean of
several, or an extra point. This module is the one home of such
correspondences.

`AFLW21`: AFLW's 21 points (Koestinger et al. 2011), in AFLW's order, as
3DDFA's AFLW benchmark reads them from 68 points (cleardusk/3DDFA,
`benchmark_aflw.py`, `ind_68to21`): brow corners, eye corners, nostrils
(31, 35), nose tip (30) and mouth corners (48, 54) are the iBUG points;
the brow centres are iBUG 19 and 24, the eye centres the means of the six
eye points (36-41, 42-47), the mouth centre the mean of the inner lips
(60-67), the chin iBUG 8. The ear lobes differ from 3DDFA's (which takes
the jaw-contour points 2 and 14): they are the layout's `ear_left` /
`ear_right` points where the layout has ears, and are not read otherwise
(`has_ears`: the BFM has no ears, and its layout stores the jaw-contour
ends 0 and 16 as stand-ins). The procedural face model's ear point is the
middle of the ear, 12 mm below the eye line, higher than the lobe AFLW
marks, so these two points carry a systematic error.

"Left" is the image left of a frontal face, in both AFLW's and jaxface's
conventions (iBUG 17, 36, 48 and AFLW 0, 6, 17 are on the image left; on
the AFLW-21 crops, point 6 has a smaller x than point 11 in 99.8 % of the
faces with |yaw| < 15 degrees that show both).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxface.face import layout as layout_lib
from jaxface.face import model as model_lib

EXTRA_POINT_NAMES = model_lib.EXTRA_POINT_NAMES
_EARS = ('ear_left', 'ear_right')


@dataclasses.dataclass(frozen=True)
class Scheme:
  """A landmark annotation read from iBUG-68 landmarks and extra points.

  Attributes:
    name: e.g. 'aflw21'.
    point_names: (P,) the annotation's point names, in its order.
    sources: (P,) per point, a tuple of 0-based iBUG indices (the point is
      their mean) or the name of an extra point (`EXTRA_POINT_NAMES`).
  """
  name: str
  point_names: tuple[str, ...]
  sources: tuple[tuple[int, ...] | str, ...]

  def __post_init__(self):
    if len(self.point_names) != len(self.sources):
      raise ValueError(f'scheme {self.name!r}: {len(self.point_names)} names '
                       f'but {len(self.sources)} sources')
    for name, source in zip(self.point_names, self.sources):
      if isinstance(source, str):
        if source not in EXTRA_POINT_NAMES:
          raise ValueError(f'scheme {self.name!r}: point {name!r} reads the '
                           f'unknown extra point {source!r}')
      elif not source or not all(0 <= i < 68 for i in source):
        raise ValueError(f'scheme {self.name!r}: point {name!r} needs iBUG '
                         f'indices in 0..67, got {source!r}')

  @property
  def num_points(self) -> int:
    return len(self.point_names)

  def uv(self, layout: layout_lib.UVLayout) -> np.ndarray:
    """(P, 2) float32: where each point lies in `layout`'s UV space.

    One iBUG point: its UV; the mean of several: the mean of their UVs (on
    the surface between them, e.g. the eye's centre on the eyeball); an
    extra point: its UV. A scheme is read off a position map by sampling
    it there (`uv.sample_uv`), which is differentiable, so the same table
    serves a loss on annotated 2D points and the evaluation.
    """
    table = np.empty((self.num_points, 2), np.float64)
    for p, source in enumerate(self.sources):
      if isinstance(source, str):
        table[p] = layout.extra_uv[EXTRA_POINT_NAMES.index(source)]
      else:
        table[p] = np.asarray(layout.landmark_uv)[list(source)].mean(axis=0)
    return table.astype(np.float32)

  @property
  def is_ear(self) -> np.ndarray:
    """(P,) bool: the points read at the layout's ear points (the face
    model's mid-ear, not the lobe that AFLW annotates)."""
    return np.array([source in _EARS for source in self.sources])

  def readable(self, layout: layout_lib.UVLayout) -> np.ndarray:
    """(P,) bool: the points that a map in `layout` gives (the ear points
    only when `has_ears(layout)`)."""
    ears = has_ears(layout)
    return np.array([ears if source in _EARS else True
                     for source in self.sources])

  def read(self, landmarks, extra=None, readable=None) -> np.ndarray:
    """The scheme's points from 68 landmarks and the extra points.

    Args:
      landmarks: (..., 68, D) iBUG landmarks (any D, e.g. 2 or 3).
      extra: (..., 5, D) extra points (`EXTRA_POINT_NAMES`), or None (the
        points that need them are NaN).
      readable: optional (P,) bool (`Scheme.readable`); points not readable
        are NaN.

    Returns:
      (..., P, D) float64 points; NaN where not readable.
    """
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.shape[-2] != 68:
      raise ValueError(f'landmarks must be (..., 68, D), got '
                       f'{landmarks.shape}')
    if extra is not None:
      extra = np.asarray(extra, np.float64)
      if extra.shape[-2] != len(EXTRA_POINT_NAMES) or (
          extra.shape[-1] != landmarks.shape[-1]):
        raise ValueError(f'extra points must be (..., 5, '
                         f'{landmarks.shape[-1]}), got {extra.shape}')
    readable = (np.ones(self.num_points, bool) if readable is None
                else np.asarray(readable, bool))
    out = np.full(landmarks.shape[:-2] + (self.num_points,
                                          landmarks.shape[-1]), np.nan)
    for p, source in enumerate(self.sources):
      if not readable[p]:
        continue
      if isinstance(source, str):
        if extra is not None:
          out[..., p, :] = extra[..., EXTRA_POINT_NAMES.index(source), :]
      else:
        out[..., p, :] = landmarks[..., list(source), :].mean(axis=-2)
    return out


def get(name: str) -> Scheme:
  """The scheme called `name` (`SCHEMES`); ValueError naming the known
  ones otherwise."""
  if name not in SCHEMES:
    raise ValueError(f'unknown landmark scheme {name!r}; jaxface knows '
                     f'{sorted(SCHEMES)}')
  return SCHEMES[name]


def has_ears(layout: layout_lib.UVLayout) -> bool:
  """Whether a layout's `ear_left` / `ear_right` points are ears.

  False when they are the jaw-contour ends (the UVs of iBUG 0 and 16), the
  stand-ins of face models without ears (the BFM's layout).
  """
  ears = layout.extra_uv[[EXTRA_POINT_NAMES.index(e) for e in _EARS]]
  jaw_ends = layout.landmark_uv[[0, 16]]
  return not np.allclose(ears, jaw_ends, atol=1e-6)


AFLW21 = Scheme(
    name='aflw21',
    point_names=(
        'left brow, outer corner', 'left brow, centre',
        'left brow, inner corner', 'right brow, inner corner',
        'right brow, centre', 'right brow, outer corner',
        'left eye, outer corner', 'left eye, centre',
        'left eye, inner corner', 'right eye, inner corner',
        'right eye, centre', 'right eye, outer corner', 'left ear lobe',
        'left nostril', 'nose tip', 'right nostril', 'right ear lobe',
        'mouth, left corner', 'mouth, centre', 'mouth, right corner',
        'chin, centre'),
    sources=(
        (17,), (19,), (21,), (22,), (24,), (26,),
        (36,), tuple(model_lib.LEFT_EYE), (39,),
        (42,), tuple(model_lib.RIGHT_EYE), (45,), 'ear_left',
        (31,), (30,), (35,), 'ear_right',
        (48,), tuple(model_lib.INNER_LIPS), (54,), (8,)))

# iBUG's 68 points (300-W, Menpo, COFW-68 `.pts` files), 0-based, in iBUG's
# order: the face model's own landmarks.
IBUG68 = Scheme(
    name='ibug68',
    point_names=tuple(f'ibug {i + 1}' for i in range(68)),
    sources=tuple((i,) for i in range(68)))

SCHEMES = {scheme.name: scheme for scheme in (AFLW21, IBUG68)}
