"""What a morphable face model offers jaxface: the interface that the
procedural `model.FaceModel` and the Basel Face Model (`bfm.BFM`) both
implement, so that code making position maps, landmarks or canonical maps
takes either.

Shapes: N vertices, S shape and E expression coefficients; points in the
model's units (mm for the procedural model, the BFM's units for the BFM,
`BFM.units_per_mm`) unless a method says pixels.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from jaxface.face import uv as uv_lib


@runtime_checkable
class MorphableModel(Protocol):
  """A linear face model: mean + shape basis x s + expression basis x e,
  on a mesh with UV coordinates.

  Attributes:
    num_vertices, num_shape, num_expression: N, S, E.
    landmark_uv: (68, 2) float32 UV of the iBUG-68 landmarks.
    extra_uv: (5, 2) float32 UV of `records.EXTRA_POINT_NAMES`.
  """

  @property
  def num_vertices(self) -> int: ...

  @property
  def num_shape(self) -> int: ...

  @property
  def num_expression(self) -> int: ...

  @property
  def landmark_uv(self) -> np.ndarray: ...

  @property
  def extra_uv(self) -> np.ndarray: ...

  def vertices(self, shape_coeffs, expression_coeffs) -> np.ndarray:
    """(N, 3) float32 vertices of (S,) and (E,) coefficients."""

  def landmarks(self, vertices) -> np.ndarray:
    """(68, 3) iBUG landmarks of per-vertex points (N, 3)."""

  def extra_points(self, vertices) -> np.ndarray:
    """(5, 3) `records.EXTRA_POINT_NAMES` points of per-vertex points."""

  def uv_raster(self, resolution: int) -> uv_lib.UVRaster:
    """The mesh rasterised into a (resolution, resolution) UV map."""

  def position_map(self, vertices, resolution: int) -> np.ndarray:
    """(R, R, 3) float32 UV map of per-vertex points (N, 3)."""

  def canonical_position_map(self, vertices, resolution: int) -> np.ndarray:
    """(R, R, 3) float32 frontal position map in the canonical frame of
    `frames`, pixels, z's minimum over the face at 0."""
