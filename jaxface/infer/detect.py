"""Face boxes in photos, and PRNet's inference crop from a face box.

A face box is [x0, y0, x1, y1] in the photo's pixels (x right, y down), as
OpenCV's Haar face detector draws it: roughly square, from the eyebrows to
just below the mouth. Boxes given in a JSON file (`load_boxes`) are taken
in the same sense; `box_from_landmarks` turns 68 landmarks into such a box.
`box_problem` says why a box is too small or too far outside its photo to
reconstruct (MIN_BOX_SIDE, MIN_BOX_INSIDE).

PRNet trains on crops centred on the 68 landmarks' bounding box with a side
of 1.5 x the mean of its width and height (`render.prnet_crop`). A face
box is neither of these, so `box_to_crop` moves its centre down and scales
it by constants measured where the landmarks are known (see CROP_SHIFT).
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np

from jaxface.face import render

HAAR_CASCADE = 'haarcascade_frontalface_default.xml'

# The training crop in units of the face box side s = mean(w, h): the
# landmarks' box centre is the face box centre + CROP_SHIFT * s, and the
# crop side is CROP_SIDE * s. Measured with the Haar detector of
# `detect_faces`:
# - on 300 synthetic photos (400 x 400, one face of the procedural model,
#   yaw within 25, pitch 10 and roll 8 degrees, random identity,
#   expression, albedo, scale and background; 245 faces detected), where
#   the landmarks are known: median shift (-0.014, 0.236) s, interquartile
#   ranges x -0.08..0.06 and y 0.20..0.29; median side 1.35 s (1.25..1.46);
# - on scikit-image's astronaut photo, a real face, with landmarks placed
#   by eye (jaw 182..272 px, eyebrows to chin 87..166 px; Haar box 177..270 x
#   67..160): shift (0.04, 0.14) s, side 1.36 s.
# The synthetic faces have taller foreheads and chins than real ones, so the
# vertical shift is the midpoint of the two, 0.19 s: both are within the
# training crops' random shift (up to 0.1 x the landmarks' size, 0.09 s).
CROP_SHIFT = (0.0, 0.19)
CROP_SIDE = 1.35

# Haar detection runs on a copy whose longer side is at most this: speed on
# large photos, and faces smaller than DETECT_MIN_FRACTION of it are noise.
DETECT_MAX_SIDE = 1280
DETECT_MIN_FRACTION = 0.04

# A face box is reconstructed only when at least MIN_BOX_INSIDE of its area
# lies in the photo and its shorter side is at least MIN_BOX_SIDE pixels
# (`box_problem`): otherwise its crop is mostly padding, or a few pixels
# blown up, and the network would still "find" a face in it.
MIN_BOX_INSIDE = 0.5
MIN_BOX_SIDE = 8.0


@functools.lru_cache(maxsize=1)
def haar_detector():
  """OpenCV's bundled frontal face Haar cascade (loaded once).

  Raises:
    OSError: this OpenCV does not ship the cascade (OpenCV 5 moved the
      Haar cascades out of the main package), or it cannot be loaded.
  """
  import cv2  # pylint: disable=g-import-not-at-top
  folder = getattr(getattr(cv2, 'data', None), 'haarcascades', None)
  path = os.path.join(folder, HAAR_CASCADE) if folder else None
  if not path or not os.path.exists(path):
    raise OSError(
        f'OpenCV {cv2.__version__} has no bundled {HAAR_CASCADE} (OpenCV 5 '
        'no longer ships Haar cascades); install opencv-python 4.x, or give '
        'face boxes with --boxes')
  detector = cv2.CascadeClassifier(path)
  if detector.empty():
    raise OSError(f'OpenCV could not load the Haar cascade {path}')
  return detector


def detect_faces(image_rgb: np.ndarray) -> np.ndarray:
  """Finds frontal and near-frontal faces with the Haar cascade.

  Args:
    image_rgb: (H, W, 3) uint8 RGB photo.

  Returns:
    (N, 4) float64 face boxes [x0, y0, x1, y1] in the photo's pixels,
    sorted left to right; (0, 4) when there is no face.
  """
  import cv2  # pylint: disable=g-import-not-at-top
  image = check_image(image_rgb)
  gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
  factor = min(1.0, DETECT_MAX_SIDE / max(gray.shape))
  if factor < 1.0:
    gray = cv2.resize(gray, None, fx=factor, fy=factor,
                      interpolation=cv2.INTER_AREA)
  # Equalising makes the cascade less sensitive to exposure.
  gray = cv2.equalizeHist(gray)
  min_side = max(24, int(DETECT_MIN_FRACTION * min(gray.shape)))
  found = haar_detector().detectMultiScale(
      gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
  boxes = np.asarray(found, np.float64).reshape(-1, 4)
  boxes[:, 2:] += boxes[:, :2]
  boxes /= factor
  return boxes[np.argsort(boxes[:, 0], kind='stable')]


def check_image(image_rgb: np.ndarray) -> np.ndarray:
  """The photo as an array; ValueError unless (H, W, 3) uint8."""
  image = np.asarray(image_rgb)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise ValueError('image must be (H, W, 3) uint8 RGB, got '
                     f'{image.shape} {image.dtype}')
  return image


def check_boxes(boxes, where: str) -> np.ndarray:
  """Validates face boxes and returns them as (N, 4) float64.

  Raises:
    ValueError: not a list of [x0, y0, x1, y1] with finite numbers,
      x1 > x0 and y1 > y0; `where` names the source in the message.
  """
  try:
    arr = np.asarray(boxes, np.float64)
  except (TypeError, ValueError):
    raise ValueError(f'{where}: boxes must be a list of [x0, y0, x1, y1] '
                     f'numbers, got {boxes!r}') from None
  if arr.size == 0:
    return arr.reshape(0, 4)
  if arr.ndim != 2 or arr.shape[1] != 4:
    raise ValueError(f'{where}: boxes must be a list of [x0, y0, x1, y1], got '
                     f'shape {arr.shape}')
  if not np.isfinite(arr).all():
    raise ValueError(f'{where}: boxes must be finite numbers')
  bad = (arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1])
  if bad.any():
    raise ValueError(f'{where}: box {arr[bad][0].tolist()} is empty; want '
                     'x1 > x0 and y1 > y0')
  return arr


def box_problem(box, width: int, height: int) -> str | None:
  """Why a face box cannot be reconstructed in a `width` x `height` photo
  (too small, or too little of it inside; see MIN_BOX_INSIDE), or None.

  Args:
    box: [x0, y0, x1, y1] in the photo's pixels; any floats, non-finite
      and huge ones included.
  """
  # Python floats: a huge box's area overflows to inf without a warning.
  x0, y0, x1, y1 = (float(v) for v in np.asarray(box, np.float64))
  if not np.isfinite([x0, y0, x1, y1]).all():
    return 'the box has non-finite coordinates'
  side = min(x1 - x0, y1 - y0)
  if side < MIN_BOX_SIDE:
    return (f'the box is {side:.3g} px on its shorter side; it must be at '
            f'least {MIN_BOX_SIDE:g} px')
  inside = (max(0.0, min(x1, width) - max(x0, 0.0)) *
            max(0.0, min(y1, height) - max(y0, 0.0)))
  fraction = inside / ((x1 - x0) * (y1 - y0))
  if fraction < MIN_BOX_INSIDE:
    return (f'{100 * fraction:.3g} % of the box is inside the {width} x '
            f'{height} photo; at least {100 * MIN_BOX_INSIDE:.0f} % must be')
  return None


def usable_boxes(boxes: np.ndarray, shape) -> tuple[list[int], list[dict]]:
  """The indices of the (N, 4) `boxes` that can be reconstructed in a photo
  of `shape` (H, W, ...), and the others as {'face': index, 'box',
  'reason'} (`box_problem`)."""
  kept, skipped = [], []
  for k, box in enumerate(boxes):
    reason = box_problem(box, shape[1], shape[0])
    if reason is None:
      kept.append(k)
    else:
      skipped.append({'face': k, 'box': np.asarray(box).tolist(),
                      'reason': reason})
  return kept, skipped


def load_boxes(path: str) -> dict[str, np.ndarray]:
  """Reads face boxes per photo from a JSON file.

  The file maps a photo's file name or path to a list of face boxes in its
  pixels, `{"photo.jpg": [[x0, y0, x1, y1], ...]}`, in the sense of the
  Haar detector's boxes (see the module docstring). Look boxes up with
  `boxes_for`.

  Returns:
    {key: (N, 4) float64 boxes}, keys as written in the file.

  Raises:
    OSError: the file cannot be read.
    ValueError: not JSON, or not in this format.
  """
  with open(path, encoding='utf-8') as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path} is not valid JSON: {e}') from None
  if not isinstance(data, dict):
    raise ValueError(f'{path} must hold an object {{"photo.jpg": [[x0, y0, '
                     f'x1, y1], ...]}}, got a {type(data).__name__}')
  return {str(k): check_boxes(v, f'{path}[{k!r}]') for k, v in data.items()}


def boxes_for(boxes: dict[str, np.ndarray], path: str) -> np.ndarray | None:
  """A photo's boxes from `load_boxes`'s dict, or None when it has none.

  Tried in order: the path as given, then normalised, then absolute, then
  the file name alone.
  """
  by_norm = {os.path.normpath(k): v for k, v in boxes.items()}
  by_abs = {os.path.abspath(k): v for k, v in boxes.items()}
  for table, key in ((boxes, path), (by_norm, os.path.normpath(path)),
                     (by_abs, os.path.abspath(path)),
                     (boxes, os.path.basename(path))):
    if key in table:
      return table[key]
  return None


def box_to_crop(box, resolution: int) -> np.ndarray:
  """PRNet's inference crop from a face box.

  Args:
    box: [x0, y0, x1, y1] face box in the photo's pixels.
    resolution: side of the square crop in pixels.

  Returns:
    (3, 3) similarity from photo pixels to crop pixels: the crop square's
    corners map to 0 and resolution - 1, as in `render.prnet_crop`.
  """
  x0, y0, x1, y1 = np.asarray(box, np.float64)
  size = (x1 - x0 + y1 - y0) / 2
  centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2]) + np.multiply(
      CROP_SHIFT, size)
  side = CROP_SIDE * size
  scale = (resolution - 1) / side
  left, top = centre - side / 2
  return np.array([[scale, 0, -scale * left], [0, scale, -scale * top],
                   [0, 0, 1]])


def box_from_landmarks(landmarks_xy: np.ndarray) -> np.ndarray:
  """The face box whose `box_to_crop` is PRNet's training crop.

  Args:
    landmarks_xy: (68, 2+) landmark pixels in the photo.

  Returns:
    (4,) float64 square box [x0, y0, x1, y1]: `box_to_crop` of it equals
    `render.prnet_crop(landmarks_xy, resolution)` (unperturbed).
  """
  pts = np.asarray(landmarks_xy, np.float64)[:, :2]
  low, high = pts.min(0), pts.max(0)
  size = render.PRNET_CROP_EXPAND * (high - low).sum() / 2 / CROP_SIDE
  centre = (low + high) / 2 - np.multiply(CROP_SHIFT, size)
  return np.concatenate([centre - size / 2, centre + size / 2])
