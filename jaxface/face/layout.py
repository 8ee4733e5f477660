"""UV layouts: where a position map keeps its landmarks, and its UV masks.

A position map's texels are the points of one morphable model's UV
parameterisation. The synthetic data uses the procedural face model's
(`jaxface.face.model`); the real-data converters use the Basel Face Model's
(`jaxface.face.bfm`). Everything that reads landmarks off a position map,
or weighs or masks its texels, has to use the layout the map was made in: a
`UVLayout` holds the UV coordinates of the 68 iBUG landmarks and of the 5
extra points (`records.EXTRA_POINT_NAMES`) and derives PRNet's loss weight
mask and the face region from them.

The layout travels with the data: a converter writes it into dataset.json
(`uv_layout`, `UVLayout.to_json`), `loop.run` reads it (`layout_of_dataset`),
trains with it and records it in the workdir's model.json, from which eval
and inference take it (`trained.load(...).layout`). A dataset.json without
`uv_layout` is in the procedural layout (`PROCEDURAL`).

Masks of `PROCEDURAL` are the face model's own (`model.uv_weight_mask`,
`model.face_region_mask`). Masks of any other layout are built from its 68
landmark UVs alone (R = the map's side, texel (i, j) at uv = (j, i) / (R - 1)):

- face region: the polygon along the jaw contour (iBUG 0 to 16) and back
  along the brows (26 to 17), with the brow points moved up by
  `FOREHEAD_FRACTION` of the brow-to-chin height (the vector from the chin,
  iBUG 8, to the brows' mean) so that the forehead is in, filled with
  cv2.fillPoly; the 68 landmark texels are added, so that every landmark
  is in the region even where a layout puts one outside that outline;
- weight mask (PRNet's 16 : 4 : 3 : 0): 3 in the face region; 4 in the
  eyes (36-41, 42-47), the nose (27, 31-35) and the outer lips (48-59), each
  landmark polygon dilated by `FEATURE_DILATION` of R (at least one texel)
  and kept inside the face region; 16 at the 68 landmark texels; 0 outside.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from jaxface.face import model as model_lib

NUM_LANDMARKS = 68
NUM_EXTRA = 5

# The forehead above the brows, as a fraction of the brow-to-chin height.
# By the facial thirds the hairline is about half that height above the
# brows; a quarter takes the lower half of the forehead, skin that face
# models cover, and stays clear of the hair and of the map's border.
FOREHEAD_FRACTION = 0.25
# Dilation of the eye, nose and lip polygons, as a fraction of R (PRNet's
# mask widens the features by a few texels at R = 256).
FEATURE_DILATION = 0.015

PROCEDURAL_NAME = 'procedural'

_JAW = tuple(range(0, 17))
_BROWS = tuple(range(17, 27))
_NOSE = (27, 31, 32, 33, 34, 35)
_CHIN = 8


def _frozen_uv(value, count: int, what: str) -> np.ndarray:
  """(count, 2) read-only float32 copy of `value`; ValueError if malformed."""
  try:
    arr = np.array(value, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f'{what}: not an array of numbers ({e})') from e
  if arr.shape != (count, 2):
    raise ValueError(f'{what}: shape {arr.shape}, expected ({count}, 2) UV '
                     'coordinates')
  if not np.all(np.isfinite(arr)):
    raise ValueError(f'{what}: non-finite values')
  if arr.min() < 0.0 or arr.max() > 1.0:
    raise ValueError(f'{what}: values span [{arr.min():.4g}, '
                     f'{arr.max():.4g}], outside the UV square [0, 1]')
  out = arr.astype(np.float32)
  out.flags.writeable = False
  return out


# IBUG_FLIP_PERMUTATION[k] is the landmark that is k's left/right mirror: the
# jaw 0..16 reversed, brows 17..21 <-> 26..22, the nose bridge 27..30 on the
# midline, the nostrils 31..35 reversed, the eyes (36..41 <-> 45, 44, 43, 42,
# 47, 46), the outer lips (48..54 reversed, 55..59 reversed) and the inner
# lips (60..64 reversed, 65..67 reversed).
IBUG_FLIP_PERMUTATION = np.array([
    16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,  # jaw
    26, 25, 24, 23, 22, 21, 20, 19, 18, 17,  # brows
    27, 28, 29, 30,  # nose bridge
    35, 34, 33, 32, 31,  # nostrils
    45, 44, 43, 42, 47, 46,  # left eye -> right eye
    39, 38, 37, 36, 41, 40,  # right eye -> left eye
    54, 53, 52, 51, 50, 49, 48,  # outer lips, top
    59, 58, 57, 56, 55,  # outer lips, bottom
    64, 63, 62, 61, 60,  # inner lips, top
    67, 66, 65,  # inner lips, bottom
], np.int32)
IBUG_FLIP_PERMUTATION.flags.writeable = False


@dataclasses.dataclass(frozen=True, eq=False)
class UVLayout:
  """The UV layout of position maps.

  Equal (and hashing alike) when the name and both arrays are equal.

  Attributes:
    name: 'procedural' (the face model's, reserved for `PROCEDURAL`),
      'bfm', or another name.
    landmark_uv: (68, 2) float32 UV in [0, 1] of the iBUG-68 landmarks
      (u right, v down).
    extra_uv: (5, 2) float32 UV of `records.EXTRA_POINT_NAMES` (glabella,
      ears, lateral head points).
  """
  name: str
  landmark_uv: np.ndarray
  extra_uv: np.ndarray

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name:
      raise ValueError(f'a UV layout needs a non-empty name, got '
                       f'{self.name!r}')
    lmk = _frozen_uv(self.landmark_uv, NUM_LANDMARKS,
                     f'UV layout {self.name!r}: landmark_uv')
    extra = _frozen_uv(self.extra_uv, NUM_EXTRA,
                       f'UV layout {self.name!r}: extra_uv')
    object.__setattr__(self, 'landmark_uv', lmk)
    object.__setattr__(self, 'extra_uv', extra)
    if self.name == PROCEDURAL_NAME and not (
        np.array_equal(lmk, model_lib.landmark_uv()) and
        np.array_equal(extra, model_lib.extra_point_uv())):
      raise ValueError(
          f'UV layout {PROCEDURAL_NAME!r}: its UVs are not those of this '
          'version\'s procedural face model; the maps were made with another '
          'face model (remake the dataset, or give the layout another name)')

  def is_mirror_symmetric(self, tolerance: float = 2e-3) -> bool:
    """Whether mirroring a map (u -> 1 - u, `uv.mirror_position_maps`) takes
    each landmark to its left/right twin (`IBUG_FLIP_PERMUTATION`), within
    `tolerance` in UV units (2e-3: half a texel at 256): what flip
    augmentation and flip-averaged prediction assume."""
    twins = self.landmark_uv[IBUG_FLIP_PERMUTATION]
    mirrored = np.stack([1.0 - self.landmark_uv[:, 0], self.landmark_uv[:, 1]],
                        axis=-1)
    return bool(np.abs(twins - mirrored).max() <= tolerance)

  def __eq__(self, other) -> bool:
    if not isinstance(other, UVLayout):
      return NotImplemented
    return (self.name == other.name and
            np.array_equal(self.landmark_uv, other.landmark_uv) and
            np.array_equal(self.extra_uv, other.extra_uv))

  def __hash__(self) -> int:
    return hash((self.name, self.landmark_uv.tobytes(),
                 self.extra_uv.tobytes()))

  def __repr__(self) -> str:
    return f'UVLayout(name={self.name!r})'

  @property
  def is_procedural(self) -> bool:
    """True for the procedural face model's layout (`PROCEDURAL`)."""
    return self.name == PROCEDURAL_NAME

  @property
  def points_uv(self) -> np.ndarray:
    """(73, 2) float32: the 68 landmarks' UVs, then the 5 extra points'."""
    return np.concatenate([self.landmark_uv, self.extra_uv])

  def weight_mask(self, resolution: int) -> np.ndarray:
    """(R, R) float32 PRNet loss weights, 16 : 4 : 3 : 0 (module docstring).

    A new array per call (the computed masks are cached).
    """
    resolution = _check_resolution(resolution)
    if self.is_procedural:
      return model_lib.uv_weight_mask(resolution)
    return _derived_masks(self, resolution)[1].copy()

  def face_region(self, resolution: int) -> np.ndarray:
    """(R, R) bool texels of the face (the region of the dense NME, of the
    pose fit and of exported meshes); see the module docstring."""
    resolution = _check_resolution(resolution)
    if self.is_procedural:
      return model_lib.face_region_mask(resolution)
    return _derived_masks(self, resolution)[0].copy()

  def to_json(self) -> dict[str, Any]:
    """{'name', 'landmark_uv': 68 [u, v], 'extra_uv': 5 [u, v]}, exact:
    `from_json(to_json())` gives an equal layout."""
    return {'name': self.name,
            'landmark_uv': [[float(u), float(v)] for u, v in self.landmark_uv],
            'extra_uv': [[float(u), float(v)] for u, v in self.extra_uv]}

  @classmethod
  def from_json(cls, d) -> 'UVLayout':
    """The layout of a `to_json` dict.

    Raises:
      ValueError: naming the malformed entry (not a dict, a missing key, a
        wrong shape, non-finite values or values outside [0, 1]).
    """
    if not isinstance(d, dict):
      raise ValueError(f'a UV layout is a JSON object with name, landmark_uv '
                       f'and extra_uv; got {type(d).__name__}')
    missing = [k for k in ('name', 'landmark_uv', 'extra_uv') if k not in d]
    if missing:
      raise ValueError(f'UV layout {d.get("name")!r} has no {missing}; '
                       'expected name, landmark_uv (68 [u, v]) and extra_uv '
                       '(5 [u, v])')
    return cls(name=d['name'], landmark_uv=d['landmark_uv'],
               extra_uv=d['extra_uv'])


PROCEDURAL = UVLayout(PROCEDURAL_NAME, model_lib.landmark_uv(),
                      model_lib.extra_point_uv())


def _check_resolution(resolution) -> int:
  if int(resolution) != resolution or resolution < 2:
    raise ValueError(f'resolution must be an integer >= 2, got {resolution}')
  return int(resolution)


def _texels(uv: np.ndarray, resolution: int) -> np.ndarray:
  """(P, 2) int32 texel (column, row) nearest to each UV point."""
  # float64: some landmarks sit exactly between two texels.
  return np.round(uv.astype(np.float64) * (resolution - 1)).astype(np.int32)


def _fill(points_uv: np.ndarray, resolution: int,
          dilate_px: int = 0) -> np.ndarray:
  """(R, R) bool: the polygon of UV points filled (cv2.fillPoly), dilated
  by `dilate_px` texels."""
  return model_lib._polygon_mask(  # pylint: disable=protected-access
      points_uv, resolution, resolution, dilate_px)


@functools.lru_cache(maxsize=16)
def _derived_masks(layout: UVLayout, resolution: int
                   ) -> tuple[np.ndarray, np.ndarray]:
  """(face region (R, R) bool, weight mask (R, R) float32) of a layout
  other than the procedural one (see the module docstring)."""
  lmk = layout.landmark_uv.astype(np.float64)
  up = lmk[list(_BROWS)].mean(0) - lmk[_CHIN]
  brows = np.clip(lmk[list(_BROWS)[::-1]] + FOREHEAD_FRACTION * up, 0.0, 1.0)
  outline = np.concatenate([lmk[list(_JAW)], brows])
  texel = _texels(lmk, resolution)
  region = _fill(outline, resolution)
  region[texel[:, 1], texel[:, 0]] = True

  weight = np.where(region, 3.0, 0.0).astype(np.float32)
  dilate = max(1, round(FEATURE_DILATION * resolution))
  for ids in (model_lib.LEFT_EYE, model_lib.RIGHT_EYE, _NOSE,
              model_lib.OUTER_LIPS):
    weight[_fill(lmk[list(ids)], resolution, dilate) & region] = 4.0
  weight[texel[:, 1], texel[:, 0]] = 16.0
  region.flags.writeable = False
  weight.flags.writeable = False
  return region, weight


def layout_of_dataset(info: dict) -> UVLayout:
  """The UV layout of a dataset's position maps, from its dataset.json.

  Args:
    info: the parsed dataset.json (`shards.read_dataset_info`).

  Returns:
    `UVLayout.from_json(info['uv_layout'])`, or `PROCEDURAL` when there is
    no 'uv_layout' (the synthetic datasets made before layouts were
    recorded).

  Raises:
    ValueError: a malformed 'uv_layout'.
  """
  entry = info.get('uv_layout')
  if entry is None:
    return PROCEDURAL
  try:
    return UVLayout.from_json(entry)
  except ValueError as e:
    raise ValueError(f'dataset.json: uv_layout: {e}') from e
