"""AFLW-21: real face crops with AFLW's 21 2D landmarks (development data).

The folder is not part of jaxface and nothing from it may be copied into
the repository (AFLW's terms: non-commercial research only; see the
folder's README.md). Layout:

- `images/imageNNNNN.jpg`: 120 x 120 RGB crops, as 3DDFA cut them for its
  AFLW evaluation;
- `names.txt`: the image file names, one a line, in the arrays' order;
- `pts21.npy`: float32 (N, 2, 21), x and y of AFLW's 21 points in crop
  pixels (x right, y down), NaN where the point is not visible;
- `yaw_deg.npy`: float32 (N,), the yaw from 3DDFA's fit, degrees (3DDFA's
  sign, as jaxface's: positive turns the face to the image left; on these
  crops the nose tip then lies left of the eyes and the left eye's outer
  corner is hidden).

The point order is `jaxface.face.schemes.AFLW21`'s. `held_out` splits the
faces by a hash of their file name, so that training can leave out the
faces that `experiments/benchmarks/aflw21_eval.py` measures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from data_pipelines import the300wlp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where the development machines keep it: ../shared/data/aflw21 from the
# project root.
DEFAULT_DIR = os.path.join(os.path.dirname(REPO), 'shared', 'data', 'aflw21')
NUM_POINTS = 21
CROP_SIZE = 120
# The held-out share of the faces (`held_out`).
HELD_OUT_FRACTION = 0.2

_FILES = ('names.txt', 'pts21.npy', 'yaw_deg.npy', 'images/')


@dataclasses.dataclass(frozen=True, eq=False)
class AFLW21:
  """The annotations of an AFLW-21 folder (images are read on demand).

  Attributes:
    root: the folder.
    names: (N,) image file names, e.g. 'image04378.jpg'.
    points: (N, 21, 2) float64 x, y in crop pixels; NaN where not visible.
    yaw_deg: (N,) float64 yaws, degrees.
  """
  root: str
  names: tuple[str, ...]
  points: np.ndarray
  yaw_deg: np.ndarray

  def __len__(self) -> int:
    return len(self.names)

  def image(self, index: int) -> np.ndarray:
    """(120, 120, 3) uint8 RGB crop of face `index`.

    Raises:
      the300wlp.SampleError: a missing or corrupt image, naming it.
    """
    return the300wlp.read_image(os.path.join(self.root, 'images',
                                             self.names[index]))


def load(root: str | os.PathLike[str] = DEFAULT_DIR) -> AFLW21:
  """Reads the annotations of an AFLW-21 folder.

  Raises:
    FileNotFoundError: no such folder, or a file missing (the message lists
      the files expected).
    ValueError: arrays of the wrong shape or length.
  """
  root = os.fspath(root)
  expected = (f'expected the AFLW-21 folder ({", ".join(_FILES)}; see its '
              'README.md)')
  if not os.path.isdir(root):
    raise FileNotFoundError(f'AFLW-21: {root} is not a folder; {expected}')
  missing = [f for f in _FILES
             if not os.path.exists(os.path.join(root, f.rstrip('/')))]
  if missing:
    raise FileNotFoundError(f'AFLW-21: {root} has no {", ".join(missing)}; '
                            f'{expected}')
  with open(os.path.join(root, 'names.txt')) as f:
    names = tuple(line.strip() for line in f if line.strip())
  try:
    points = np.load(os.path.join(root, 'pts21.npy'))
    yaw = np.load(os.path.join(root, 'yaw_deg.npy'))
  except (OSError, ValueError) as e:
    raise ValueError(f'AFLW-21: {root}: unreadable array: {e}') from e
  n = len(names)
  if points.shape != (n, 2, NUM_POINTS):
    raise ValueError(f'AFLW-21: {root}/pts21.npy has shape {points.shape}; '
                     f'expected ({n}, 2, {NUM_POINTS}) for the {n} names of '
                     'names.txt')
  if yaw.shape != (n,):
    raise ValueError(f'AFLW-21: {root}/yaw_deg.npy has shape {yaw.shape}; '
                     f'expected ({n},)')
  return AFLW21(root=root, names=names,
                points=np.transpose(points, (0, 2, 1)).astype(np.float64),
                yaw_deg=yaw.astype(np.float64))


def held_out(name: str, fraction: float = HELD_OUT_FRACTION) -> bool:
  """Whether a face is in the held-out split, from its file name alone.

  The first 8 bytes of the SHA-256 of the file's base name, read as a
  big-endian integer over 2^64, give u in [0, 1); the face is held out when
  u >= 1 - fraction (the last 20 % by default). The split does not depend
  on the folder, the order of names.txt or the number of faces.
  """
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f'fraction must be in [0, 1], got {fraction}')
  digest = hashlib.sha256(os.path.basename(name).encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') / 2.0**64 >= 1.0 - fraction


def held_out_indices(names, fraction: float = HELD_OUT_FRACTION
                     ) -> np.ndarray:
  """(M,) int64 indices of the held-out names (`held_out`), in order."""
  return np.array([i for i, name in enumerate(names)
                   if held_out(name, fraction)], np.int64)
