"""The frames position maps are in, and their scales.

Two frames, both image-like (x right, y down, z towards the viewer, in
pixels of an R x R map; `jaxface.face.uv`):

- the crop frame: a face's points in pixels of its PRNet crop (the
  `recon` records' position maps, PRNet's output);
- the canonical frame: a frontal orthographic view at a fixed metric scale
  (the `multiview` records' canonical position maps, the face GAN's output):
  CANONICAL_WIDTH_MM millimetres over the map's R - 1 texel spacings, the
  face's vertical axis at column (R - 1) / 2 and its eye line at row
  CANONICAL_EYE_ROW (R - 1), z shifted so that its minimum is 0. Unlike a
  crop, it keeps a face's absolute size, which a generator of 3D faces
  should reproduce. The face models' `canonical_position_map` methods
  (`model.FaceModel`, `bfm.BFM`) map their vertices into it with
  `canonical_points`.

In both frames a face's map lies in about [0, POSITION_SCALE R]: PRNet's
and the face GAN's sigmoid heads output POSITION_SCALE R times a value in
[0, 1], and the losses and discriminators take maps divided by
POSITION_SCALE R.
"""

from __future__ import annotations

import numpy as np

# Position maps in pixels of an R x R frame lie in [0, POSITION_SCALE R]
# (PRNet's generator's output range: 1.1 x 256).
POSITION_SCALE = 1.1

# Millimetres spanned by the canonical map's R - 1 texel spacings.
CANONICAL_WIDTH_MM = 255.0
# The canonical eye line's row, as a fraction of R - 1.
CANONICAL_EYE_ROW = 0.39


def canonical_px_per_mm(resolution: int) -> float:
  """Pixels per millimetre of the R x R canonical frame: (R - 1) / 255."""
  return (resolution - 1) / CANONICAL_WIDTH_MM


def canonical_mm_per_px(resolution: int) -> float:
  """Millimetres per pixel of the R x R canonical frame: 255 / (R - 1)."""
  return CANONICAL_WIDTH_MM / (resolution - 1)


def canonical_points(vertices: np.ndarray, resolution: int,
                     units_per_mm: float = 1.0,
                     centre: np.ndarray | None = None) -> np.ndarray:
  """Model-frame points (x to the subject's left, y up, z towards the
  camera of a frontal photo) in the R x R canonical frame, before the z
  shift.

  Args:
    vertices: (n, 3) points in model units.
    resolution: R.
    units_per_mm: model units per millimetre.
    centre: the model point that goes to the column (R - 1) / 2 and the eye
      row (its x and y are used); None: the model's origin.

  Returns:
    (n, 3) points: x = (R - 1) / 2 + k x, y = CANONICAL_EYE_ROW (R - 1) -
    k y, z = k z, with k = `canonical_px_per_mm(R)` / units_per_mm, x and y
    relative to `centre`.
  """
  k = canonical_px_per_mm(resolution) / units_per_mm
  x, y = vertices[:, 0], vertices[:, 1]
  if centre is not None:
    x, y = x - centre[0], y - centre[1]
  return np.stack([(resolution - 1) / 2 + k * x,
                   CANONICAL_EYE_ROW * (resolution - 1) - k * y,
                   k * vertices[:, 2]], 1)
