"""Are the synthetic faces proportioned like the faces in photos?

  python -m experiments.diagnostics.face_proportions \
      [--shape-mean adult|none|NAME=STD,...] [--faces 400]

Measures, in units of the distance between the two eye centres (so that
scale and crop do not enter), how far below the eye centres' midpoint the
nose tip, the mouth centre and the chin lie, and how wide the eyes (outer
to inner corner, the left eye) and the mouth are:

- on real photos: the AFLW-21 faces within 10 degrees of frontal yaw, of
  the training split only (`data_pipelines.aflw21.held_out` is false), in
  AFLW's 21 points (eye centres 7 and 10, nose tip 14, mouth centre 18,
  chin 20, eye corners 6 and 8, mouth corners 17 and 19); skipped where
  the folder is absent;
- on synthetic faces: the same points read from the face model's landmarks
  as `schemes.AFLW21` reads them, frontal and without pose, of the mean
  face and of `--faces` identities of seed 0 with random expressions,
  their coefficients drawn around `--shape-mean`.

Prints a markdown table of the medians (and the spread, the interquartile
range / 1.35, a robust standard deviation) and the eye distance in mm of
the synthetic faces. `jaxface.face.model.ADULT_SHAPE_MEAN` was chosen with
it (README, "Face proportions").
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from data_pipelines import aflw21
from jaxface import cli
from jaxface.face import identities as identities_lib
from jaxface.face import model as model_lib
from jaxface.face import schemes

RATIOS = ('nose', 'mouth', 'chin', 'eye_width', 'mouth_width')
# AFLW-21 indices (schemes.AFLW21's order).
_EYES, _NOSE, _MOUTH, _CHIN = (7, 10), 14, 18, 20
_EYE_CORNERS, _MOUTH_CORNERS = (6, 8), (17, 19)


def ratios(points: np.ndarray) -> np.ndarray:
  """(N, 21, 2) AFLW-21 points -> (N, 5) `RATIOS` over the eye distance
  (NaN where a point is missing)."""
  left, right = points[:, _EYES[0]], points[:, _EYES[1]]
  iod = np.linalg.norm(left - right, axis=-1)
  mid = (left + right) / 2
  dist = lambda a, b: np.linalg.norm(a - b, axis=-1) / iod  # noqa: E731
  return np.stack([
      dist(points[:, _NOSE], mid), dist(points[:, _MOUTH], mid),
      dist(points[:, _CHIN], mid),
      dist(points[:, _EYE_CORNERS[0]], points[:, _EYE_CORNERS[1]]),
      dist(points[:, _MOUTH_CORNERS[0]], points[:, _MOUTH_CORNERS[1]])], 1)


def median_and_spread(values: np.ndarray) -> tuple[float, float]:
  """The median and the interquartile range / 1.35 of the finite values."""
  q1, q2, q3 = np.percentile(values[np.isfinite(values)], [25, 50, 75])
  return q2, (q3 - q1) / 1.35


def summary(values: np.ndarray) -> list[str]:
  """Per column: 'median (robust sd)' over the finite values."""
  return ['{:.3f} ({:.3f})'.format(*median_and_spread(column))
          for column in values.T]


def real_ratios(data: aflw21.AFLW21, max_yaw: float = 10.0) -> np.ndarray:
  train = np.array([not aflw21.held_out(n) for n in data.names])
  frontal = train & (np.abs(data.yaw_deg) < max_yaw)
  return ratios(data.points[frontal])


def synthetic_ratios(shape_mean, faces: int, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(mean face's (1, 5) ratios, (faces, 5) ratios, (faces,) eye
  distances in mm)."""
  model = model_lib.build_face_model()
  read = lambda v: schemes.AFLW21.read(  # noqa: E731
      model.landmarks(v)[None, :, :2])
  mean = model_lib.mean_shape_coeffs(model, shape_mean)
  rows, iods = [], []
  rng = np.random.default_rng(seed)
  for index in range(faces):
    shape = identities_lib.sample_identity(model, seed, index,
                                           shape_mean).shape
    points = read(model.vertices(
        shape, model_lib.sample_expression_coeffs(rng, model)))
    rows.append(ratios(points)[0])
    iods.append(np.linalg.norm(points[0, _EYES[0]] - points[0, _EYES[1]]))
  return (ratios(read(model.vertices(mean))), np.array(rows),
          np.array(iods))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--shape-mean', default='adult')
  parser.add_argument('--faces', type=int, default=400)
  parser.add_argument('--data', default=aflw21.DEFAULT_DIR)
  args = parser.parse_args(argv)
  try:
    shape_mean = cli.parse_shape_mean(args.shape_mean)
  except ValueError as e:
    print(f'face_proportions: error: {e}', file=sys.stderr)
    return 2
  print('| faces | ' + ' | '.join(RATIOS) + ' |')
  print('|---' * (len(RATIOS) + 1) + '|')
  if os.path.isdir(args.data):
    real = real_ratios(aflw21.load(args.data))
    print(f'| AFLW-21 train split, yaw within +-10 degrees ({len(real)}) | '
          + ' | '.join(summary(real)) + ' |')
  else:
    print(f'(no AFLW-21 folder at {args.data}: real faces skipped)')
  mean, faces, iods = synthetic_ratios(shape_mean, args.faces)
  print(f'| synthetic mean face, --shape-mean {args.shape_mean} | '
        + ' | '.join(f'{v:.3f}' for v in mean[0]) + ' |')
  print(f'| synthetic, {args.faces} identities with expressions | '
        + ' | '.join(summary(faces)) + ' |')
  print('eye distance of the synthetic identities: median {:.1f} mm, robust '
        'sd {:.1f} mm'.format(*median_and_spread(iods)))
  return 0


if __name__ == '__main__':
  sys.exit(main())
