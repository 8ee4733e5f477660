"""The procedural identities: who identity `index` of a dataset seed is.

Identity `index` of seed `seed` is a shape (identity coefficients of the
face model, `model.sample_shape_coeffs`) and an albedo
(`texture.sample_albedo`), drawn in that order from a random stream of
(seed, index) only; the shape is drawn around a mean (the dataset's
`SynthConfig.shape_mean`). The synthetic dataset (`jaxface.data.synthetic`,
whose pools are ranges of indices) and the identity classifier's training
maps (`jaxface.eval.inception`) draw their identities here, so the same
seed, index and shape mean give the same face in both.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxface.face import model as model_lib
from jaxface.face import texture as texture_lib

# Separates the identities' random streams from the dataset's others.
_STREAM = 0xFACE


@dataclasses.dataclass(frozen=True)
class Identity:
  index: int
  shape: np.ndarray  # (S,)
  albedo: texture_lib.Albedo


def sample_identity(model: model_lib.FaceModel, seed: int, index: int,
                    shape_mean=()) -> Identity:
  """The identity with id `index` of dataset seed `seed` (deterministic);
  `shape_mean` shifts the shape coefficients (`model.sample_shape_coeffs`;
  a synthetic dataset's `SynthConfig.shape_mean`)."""
  rng = np.random.default_rng([int(seed), _STREAM, int(index)])
  return Identity(index,
                  model_lib.sample_shape_coeffs(rng, model, shape_mean),
                  texture_lib.sample_albedo(rng))
