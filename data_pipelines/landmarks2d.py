"""Real 2D-landmark datasets -> 2D `recon` records: `jaxface data
convert-landmarks2d`.

A 2D recon record (`jaxface.data.records`) holds a face crop and the
annotated 2D points of a landmark scheme (`jaxface.face.schemes.SCHEMES`)
with a visibility mask, and the yaw where the dataset gives one; the mixed
training of `config.mix` puts a visibility-masked 2D landmark loss on them.
Two input formats:

- `aflw21`: the AFLW-21 development folder (`data_pipelines.aflw21`:
  3DDFA's 120 x 120 AFLW crops, names.txt, pts21.npy with NaN where a point
  is not visible, yaw_deg.npy). Scheme `aflw21`. The faces that
  `aflw21.held_out` holds out (the faces the AFLW-21 benchmark,
  `experiments/benchmarks/aflw21_eval.py`, measures) go to split `test`, all
  others to `train`, so that training on `train` never sees the benchmark's
  faces. `yaw` is yaw_deg in radians, sign unchanged: 3DDFA's sign is
  jaxface's (positive turns the face to the image left; on the real folder
  the nose tip lies left of the eye corners in 99 % of the faces with yaw
  above 20 degrees, and right of them in 99 % below -20). The identity is the
  image number (image04378 -> 4378).
- `pts`: a folder, searched recursively, of photos (.jpg, .jpeg, .png) each
  with an iBUG `.pts` file of the same stem beside it (300-W, Menpo, ...):
  `version: 1`, `n_points: 68`, `{`, 68 lines `x y`, `}` (`read_pts`).
  Scheme `ibug68`; every point is visible (occlusion flags, as COFW-68 keeps
  in separate files, are not read). The coordinates are 1-based, as in
  300-W's MATLAB tools (the centre of the top-left pixel is (1, 1)); they
  are made 0-based by subtracting `PTS_ORIGIN` = 1, as menpo's importer
  does. Everything goes to `train` unless `test_fraction` > 0: then a
  salted hash of the .pts file's path relative to the root
  (`the300wlp.in_test_split`) picks the `test` faces, deterministically and
  independently of which other files are converted. The identity is a
  31-bit BLAKE2b hash of that relative path (each file its own face).

Crops (`crop`):

- `given` (default for `aflw21`): the image is already a face crop and is
  resized whole to R x R, as the AFLW-21 benchmark's `resize` mode does
  (`jaxface.eval.recon_eval.resize_transform` / `warp_image`): the scale is
  (R - 1) / (side - 1), pixel centres 0 and side - 1 going to 0 and R - 1,
  with a Gaussian blur of sigma (1 / scale - 1) / 2 first when shrinking. A
  non-square image is scaled by its longer side and centred (black
  bars), so that crop_transform stays a similarity.
- `box` (default for `pts`): PRNet's crop around the box of the visible
  points (`render.prnet_crop`, as the other converters crop around the 68
  landmarks; deterministic), blurred in the same way when it shrinks.

Common fields: `face_box` is the box of the visible points in original
pixels, `crop_transform` original -> crop pixels, `original_size` the
image's (h, w). `points2d` are the points in crop pixels, 0 where
`points_visible` is 0. A sample with fewer than `MIN_VISIBLE` visible
points, a missing or malformed annotation, the wrong point count or an
unreadable image is skipped, listed with the reason and counted in
dataset.json, as in the other converters.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re

import numpy as np

from data_pipelines import aflw21 as aflw21_lib
from data_pipelines import the300wlp
from jaxface.data import records
from jaxface.data import writing
from jaxface.eval import recon_eval
from jaxface.face import render
from jaxface.face import schemes

FORMATS = ('aflw21', 'pts')
CROPS = ('given', 'box')
DEFAULT_CROP = {'aflw21': 'given', 'pts': 'box'}
SCHEME = {'aflw21': schemes.AFLW21.name, 'pts': schemes.IBUG68.name}
SOURCE = {'aflw21': 'AFLW21'}  # pts: the root folder's name
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
PTS_ORIGIN = 1.0  # .pts coordinates are 1-based (see the module docstring).
MIN_VISIBLE = 3
# The PRNet model downsamples by 32: other resolutions convert, with a note.
MODEL_MULTIPLE = 32

SampleError = the300wlp.SampleError

_IMAGE_NAME = re.compile(r'^image(?P<number>\d+)$')
_HEADER_LINE = re.compile(r'^(?P<key>[A-Za-z_]+)\s*:\s*(?P<value>.*)$')


# ------------------------------------------------------------------ .pts


def read_pts(path: str | os.PathLike[str]) -> np.ndarray:
  """Reads an iBUG `.pts` landmark file.

  The format: a header of `key: value` lines with `version: 1` and
  `n_points: N`, a line `{`, N lines `x y`, a line `}`. Blank lines are
  ignored. The values are returned as written (300-W's are 1-based pixel
  coordinates; the converter subtracts `PTS_ORIGIN`).

  Args:
    path: the .pts file.

  Returns:
    (N, 2) float64 x, y.

  Raises:
    ValueError: naming the file and the line of a malformed file (no or a
      wrong header, n_points not matching the points present, a
      non-numeric or non-finite value, a missing brace, text after `}`).
    OSError: the file cannot be read.
  """
  path = os.fspath(path)
  with open(path, 'rb') as f:
    data = f.read()
  try:
    text = data.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    raise ValueError(f'{path}: not a text .pts file ({e})') from e
  lines = [(number, line.strip())
           for number, line in enumerate(text.splitlines(), 1)
           if line.strip()]
  if not lines:
    raise ValueError(f'{path}: empty .pts file; expected a header '
                     "('version: 1', 'n_points: N'), '{', N lines 'x y', '}'")
  header: dict[str, tuple[int, str]] = {}
  position = 0
  while position < len(lines) and lines[position][1] != '{':
    number, line = lines[position]
    match = _HEADER_LINE.match(line)
    if not match:
      what = ('a point before the opening \'{\''
              if _is_point_line(line) else 'not a header line')
      raise ValueError(f'{path}:{number}: {line!r} is {what}; expected '
                       "'version: 1' and 'n_points: N' lines, then '{'")
    header[match['key'].lower()] = (number, match['value'].strip())
    position += 1
  first = lines[0][0]
  for key in ('version', 'n_points'):
    if key not in header:
      raise ValueError(f'{path}:{first}: header without {key!r} (it has '
                       f'{sorted(header) or "no header lines"}); expected '
                       "'version: 1' and 'n_points: N' before '{'")
  number, version = header['version']
  if version not in ('1', '1.0'):
    raise ValueError(f'{path}:{number}: version {version!r}; only version 1 '
                     'of the .pts format is read')
  number, count_text = header['n_points']
  try:
    count = int(count_text)
  except ValueError:
    count = -1
  if count < 1:
    raise ValueError(f'{path}:{number}: n_points {count_text!r} is not a '
                     'positive integer')
  if position == len(lines):
    raise ValueError(f'{path}:{lines[-1][0]}: no opening \'{{\' after the '
                     'header')
  points = []
  position += 1
  while position < len(lines) and lines[position][1] != '}':
    number, line = lines[position]
    parts = line.split()
    if len(parts) != 2:
      raise ValueError(f'{path}:{number}: {line!r} has {len(parts)} values; '
                       'expected 2 (x y)')
    try:
      xy = [float(v) for v in parts]
    except ValueError:
      raise ValueError(f'{path}:{number}: {line!r} is not numeric; expected '
                       'x y') from None
    if not all(math.isfinite(v) for v in xy):
      raise ValueError(f'{path}:{number}: {line!r} is not finite')
    points.append(xy)
    position += 1
  if position == len(lines):
    raise ValueError(f'{path}:{lines[-1][0]}: no closing \'}}\' after the '
                     f'points ({len(points)} read)')
  if position + 1 < len(lines):
    number, line = lines[position + 1]
    raise ValueError(f'{path}:{number}: {line!r} after the closing \'}}\'')
  if len(points) != count:
    raise ValueError(f'{path}:{header["n_points"][0]}: n_points is {count} '
                     f'but {len(points)} points are between the braces')
  return np.array(points, np.float64).reshape(count, 2)


def _is_point_line(line: str) -> bool:
  try:
    return len([float(v) for v in line.split()]) == 2
  except ValueError:
    return False


# --------------------------------------------------------------- cropping


def given_transform(height: int, width: int, resolution: int) -> np.ndarray:
  """(3, 3) similarity resizing a whole h x w image into the R x R crop.

  The scale is (R - 1) / (max(h, w) - 1) (pixel centres to pixel centres,
  `jaxface.eval.recon_eval.resize_transform` for a square image); a
  non-square image is centred along its shorter side.
  """
  side = max(height, width)
  k = (resolution - 1) / (side - 1)
  offset = k * (side - np.array([width, height])) / 2
  return np.array([[k, 0, offset[0]], [0, k, offset[1]], [0, 0, 1.0]])


# ------------------------------------------------------------- conversion


@dataclasses.dataclass(frozen=True, eq=False)
class Sample:
  """One face with annotated 2D points, before cropping.

  Attributes:
    image: uint8 (h, w, 3) RGB image.
    points: (P, 2) float64 x, y in 0-based image pixels; NaN where the
      point is not visible.
    scheme: the points' scheme, a key of `schemes.SCHEMES`.
    source: the record's source, e.g. "AFLW21/image04378".
    identity: the subject id.
    yaw: the yaw in radians (jaxface's sign), or None.
  """
  image: np.ndarray
  points: np.ndarray
  scheme: str
  source: str
  identity: int
  yaw: float | None = None


def convert_sample(sample: Sample, resolution: int, crop: str) -> dict:
  """The fields of the 2D `recon` record of one sample.

  Args:
    sample: the sample.
    resolution: side R of the crop in pixels.
    crop: 'given' (resize the whole image) or 'box' (PRNet's crop around
      the visible points).

  Raises:
    SampleError: a bad image, the wrong point count for the scheme, fewer
      than `MIN_VISIBLE` visible points, points spanning no area.
  """
  if crop not in CROPS:
    raise ValueError(f'crop must be one of {CROPS}, got {crop!r}')
  where = sample.source
  image = np.asarray(sample.image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise SampleError(f'{where}: image must be uint8 (h, w, 3) RGB, got '
                      f'{image.dtype} {image.shape}')
  scheme = schemes.get(sample.scheme)
  points = np.asarray(sample.points, np.float64)
  if points.shape != (scheme.num_points, 2):
    raise SampleError(f'{where}: {points.shape[0] if points.ndim else 0} '
                      f'points; the {scheme.name} scheme has '
                      f'{scheme.num_points}')
  visible = np.isfinite(points).all(axis=1)
  if visible.sum() < MIN_VISIBLE:
    raise SampleError(f'{where}: {int(visible.sum())} visible point(s); at '
                      f'least {MIN_VISIBLE} are needed')
  seen = points[visible]
  if crop == 'given':
    transform = given_transform(image.shape[0], image.shape[1], resolution)
  else:
    transform, _ = render.prnet_crop(seen, resolution)
    the300wlp.check_crop(transform, where)
  points2d = np.zeros_like(points)
  points2d[visible] = seen @ transform[:2, :2].T + transform[:2, 2]
  fields = dict(
      image=records.encode_jpeg(
          recon_eval.warp_image(image, transform, resolution)),
      points2d=points2d.astype(np.float32),
      points_visible=visible.astype(np.uint8),
      scheme=scheme.name,
      face_box=np.concatenate([seen.min(0), seen.max(0)]).astype(np.float32),
      crop_transform=transform.astype(np.float32),
      original_size=np.array(image.shape[:2], np.int32),
      identity=int(sample.identity), source=sample.source)
  if sample.yaw is not None:
    if not math.isfinite(sample.yaw):
      raise SampleError(f'{where}: non-finite yaw {sample.yaw}')
    fields['yaw'] = np.array([sample.yaw], np.float32)
  return fields


def identity_of_name(name: str) -> int:
  """imageNNNNN -> NNNNN; any other name: a 31-bit hash of it."""
  match = _IMAGE_NAME.match(os.path.splitext(os.path.basename(name))[0])
  return int(match['number']) if match else _hash_identity(name)


def _hash_identity(key: str) -> int:
  digest = hashlib.blake2b(key.encode('utf-8'), digest_size=4).digest()
  return int.from_bytes(digest, 'big') & 0x7FFFFFFF


@dataclasses.dataclass(frozen=True)
class _MakeAFLW21:
  """Picklable `(name, points, yaw_deg) -> recon fields`."""
  root: str
  resolution: int
  crop: str

  def __call__(self, item: tuple[str, np.ndarray, float]) -> dict:
    name, points, yaw_deg = item
    image = the300wlp.read_image(os.path.join(self.root, 'images', name))
    stem = os.path.splitext(name)[0]
    return convert_sample(Sample(
        image=image, points=points, scheme=SCHEME['aflw21'],
        source=f'{SOURCE["aflw21"]}/{stem}', identity=identity_of_name(stem),
        yaw=math.radians(yaw_deg)), self.resolution, self.crop)


@dataclasses.dataclass(frozen=True)
class _MakePts:
  """Picklable `.pts path -> recon fields`."""
  root: str
  source: str
  resolution: int
  crop: str

  def __call__(self, pts_path: str) -> dict:
    stem = os.path.splitext(pts_path)[0]
    rel = relative_key(pts_path, self.root)
    images = [stem + ext for ext in _extensions()
              if os.path.isfile(stem + ext)]
    if not os.path.isfile(pts_path):
      raise SampleError(f'{rel}: no .pts annotation beside '
                        f'{os.path.basename(images[0]) if images else "it"}')
    if not images:
      raise SampleError(f'{rel}: no image beside it (looked for '
                        f'{", ".join(IMAGE_EXTENSIONS)})')
    try:
      points = read_pts(pts_path)
    except (ValueError, OSError) as e:
      raise SampleError(f'malformed annotation: {e}') from e
    scheme = schemes.get(SCHEME['pts'])
    if len(points) != scheme.num_points:
      raise SampleError(f'{rel}: {len(points)} points; the {scheme.name} '
                        f'scheme has {scheme.num_points}')
    image = the300wlp.read_image(images[0])
    rel_stem = os.path.splitext(rel)[0]
    return convert_sample(Sample(
        image=image, points=points - PTS_ORIGIN, scheme=scheme.name,
        source=f'{self.source}/{rel_stem}',
        identity=_hash_identity(rel_stem)), self.resolution, self.crop)


def _extensions() -> list[str]:
  return [e for ext in IMAGE_EXTENSIONS for e in (ext, ext.upper())]


def relative_key(path: str, root: str) -> str:
  """`path` relative to `root`, with '/' separators (the split's key)."""
  return os.path.relpath(path, root).replace(os.sep, '/')


def discover_pts(root: str | os.PathLike[str]) -> list[str]:
  """The absolute .pts paths of the faces under `root` (recursively),
  sorted by relative path.

  An image without a .pts (or a .pts without an image) is listed too, as
  the .pts path it would have, so that the conversion reports it as
  skipped instead of ignoring it. Hidden folders are not searched.

  Raises:
    ValueError: `root` is not a folder or holds no images or .pts files.
  """
  root = os.fspath(root)
  layout = ('expected a folder (searched recursively) of images '
            f'({", ".join(IMAGE_EXTENSIONS)}) each with an iBUG .pts file '
            'of the same name beside it')
  if not os.path.isdir(root):
    raise ValueError(f'--root {root} is not a folder; {layout}')
  stems = set()
  for directory, folders, files in os.walk(os.path.abspath(root)):
    folders[:] = [f for f in folders if not f.startswith('.')]
    for entry in files:
      stem, ext = os.path.splitext(entry)
      if ext.lower() in IMAGE_EXTENSIONS + ('.pts',) and not entry.startswith(
          '.'):
        stems.add(os.path.join(directory, stem))
  if not stems:
    raise ValueError(f'no images or .pts files under --root {root}; {layout}')
  return sorted((stem + '.pts' for stem in stems),
                key=lambda path: relative_key(path, root))


def _plan_aflw21(root: str, test_fraction: float | None,
                 limit: int | None, resolution: int, crop: str):
  if test_fraction is not None:
    raise ValueError(
        '--test-fraction does not apply to --format aflw21: its test split '
        f'is fixed, the {aflw21_lib.HELD_OUT_FRACTION:.0%} of faces that '
        'aflw21.held_out holds out for the AFLW-21 benchmark (so that '
        'training never sees them)')
  data = aflw21_lib.load(root)
  count = len(data) if limit is None else min(limit, len(data))
  items = {'train': [], 'test': []}
  for k in range(count):
    name = data.names[k]
    split = 'test' if aflw21_lib.held_out(name) else 'train'
    items[split].append((name, data.points[k], float(data.yaw_deg[k])))
  make = _MakeAFLW21(root, resolution, crop)
  # Visible points outside the 120 x 120 image (kept: the dataset's own).
  points = data.points[:count]
  outside = ((points < -0.5) | (points > aflw21_lib.CROP_SIZE - 0.5)).any(
      axis=2).any(axis=1)
  notes = [f'test: the {len(items["test"])} faces that aflw21.held_out '
           'holds out (the AFLW-21 benchmark\'s); train: the others']
  if outside.any():
    notes.append(f'{int(outside.sum())} face(s) have visible points outside '
                 'the 120 x 120 image (kept as annotated)')
  info = dict(held_out='aflw21.held_out (SHA-256 of the file name, last '
                       f'{aflw21_lib.HELD_OUT_FRACTION:.0%}) -> test',
              yaw='yaw_deg.npy in radians; 3DDFA\'s sign, which is '
                  'jaxface\'s (positive turns the face to the image left)',
              identity='the image number (imageNNNNN -> NNNNN)',
              points='pts21.npy (120 x 120 crop pixels), NaN -> not visible')
  return SOURCE['aflw21'], items, make, notes, info


def _plan_pts(root: str, test_fraction: float | None, limit: int | None,
              resolution: int, crop: str):
  fraction = 0.0 if test_fraction is None else test_fraction
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f'--test-fraction must be in [0, 1], got {fraction}')
  paths = discover_pts(root)
  if limit is not None:
    paths = paths[:limit]
  source = os.path.basename(os.path.abspath(root)) or 'pts'
  items = {'train': [], 'test': []}
  for path in paths:
    test = the300wlp.in_test_split(relative_key(path, root), fraction)
    items['test' if test else 'train'].append(path)
  make = _MakePts(os.path.abspath(root), source, resolution, crop)
  info = dict(test_fraction=fraction,
              held_out='salted BLAKE2b hash of the .pts path relative to '
                       'the root (the300wlp.in_test_split) -> test',
              identity='31-bit BLAKE2b hash of the relative path (each file '
                       'its own face)',
              points='.pts values minus 1 (1-based -> 0-based pixels); all '
                     'visible')
  return source, items, make, [], info


def convert_landmarks2d(input_format: str, root: str | os.PathLike[str],
                        out_dir: str | os.PathLike[str], *,
                        resolution: int = 256, crop: str | None = None,
                        test_fraction: float | None = None,
                        limit: int | None = None, workers: int = 1,
                        overwrite: bool = False, shard_size: int = 256,
                        progress: bool = True) -> writing.Conversion:
  """Converts a 2D-landmark dataset into 2D `recon` records.

  Args:
    input_format: 'aflw21' or 'pts' (see the module docstring); dataset.json
      records it as `input_format`.
    root: the dataset folder.
    out_dir: the output dataset folder (an existing dataset there is only
      replaced with `overwrite`).
    resolution: side of the crops in pixels (the PRNet model needs a
      multiple of 32; others convert, with a note).
    crop: 'given' or 'box'; None: `DEFAULT_CROP[input_format]`.
    test_fraction: `pts` only: the fraction of faces in split `test`
      (None or 0: all `train`). `aflw21`'s split is fixed (held_out -> test).
    limit: convert only the first `limit` faces (names.txt order for
      aflw21, sorted relative paths for pts), before splitting.
    workers: processes.
    overwrite: replace an existing dataset in `out_dir`.
    shard_size: records per shard.
    progress: show progress bars.

  Returns:
    A `writing.Conversion`; `ok` is False (and no dataset.json is
    written) when no record could be made.

  Raises:
    ValueError: an unknown format or crop, a bad option, a root with no
      faces.
    FileNotFoundError: an aflw21 root that is not one (the message lists
      the files expected).
    FileExistsError: `out_dir` holds a dataset and not `overwrite`.
    files.FolderInUseError: another writer is writing `out_dir`.
    writing.Interrupted: Ctrl-C; nothing of `out_dir` is left.
  """
  if input_format not in FORMATS:
    raise ValueError(f'--format must be one of {FORMATS}, got '
                     f'{input_format!r}')
  crop = DEFAULT_CROP[input_format] if crop is None else crop
  if crop not in CROPS:
    raise ValueError(f'--crop must be one of {CROPS}, got {crop!r}')
  writing.validate_options(resolution, workers, shard_size, limit)
  root, out_dir = os.fspath(root), os.fspath(out_dir)
  plan = _plan_aflw21 if input_format == 'aflw21' else _plan_pts
  source, items, make, notes, info = plan(root, test_fraction, limit,
                                          resolution, crop)
  if resolution % MODEL_MULTIPLE:
    notes.append(f'resolution {resolution} is not a multiple of '
                 f'{MODEL_MULTIPLE}: the PRNet model cannot train on it')
  with writing.dataset_output(out_dir, overwrite):
    results = writing.run_splits(
        out_dir, [('recon', split, items[split], make)
                  for split in ('train', 'test')],
        workers, shard_size, progress)
    conversion = writing.Conversion(source, out_dir, results, None, notes,
                                    root)
    return writing.finish(
        conversion, seed=None, resolution=resolution,
        root=os.path.abspath(root), limit=limit, input_format=input_format,
        crop=crop, scheme=SCHEME[input_format], position_maps=False, **info)
