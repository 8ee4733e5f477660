"""300W-LP -> `recon` and `multiview` records: `jaxface data convert-300wlp`.

Input layout (Zhu et al., 3DDFA; the 300W_LP.zip release):

  300W_LP/{AFW,HELEN,IBUG,LFPW}/NAME.jpg   450 x 450 RGB photos
  300W_LP/{AFW,HELEN,IBUG,LFPW}/NAME.mat   pt2d (2, 68), roi (1, 4),
                                           Pose_Para (1, 7), Shape_Para
                                           (199, 1), Exp_Para (29, 1),
                                           Tex_Para, Color_Para, Illum_Para
  300W_LP/*_Flip/NAME.{jpg,mat}            horizontally mirrored copies
  300W_LP/landmarks/<SET>/NAME_pts.mat     pts_2d, pts_3d (68, 2) (unused:
                                           the .mat beside the image has all
                                           the ground truth)

NAME is `<SET>_<original face>_<k>`, e.g. AFW_134212_1_0: view k of the
original face AFW_134212_1 (k = 0 is the original photo, k > 0 the views
synthesised by 3DDFA's face profiling at larger yaw).

Ground truth, as face3d's `examples/8_generate_posmap_300WLP.py` (PRNet's
training data) makes it: vertices = BFM mean + shape basis @ Shape_Para +
expression basis @ Exp_Para; `transform_3ddfa` with Pose_Para's s, angles
and t; image y flip (h - 1 - y); PRNet's crop around the 68 keypoint
vertices (`render.prnet_crop`; face3d's random shift and scale only with
`perturb`); z scaled like x and y by the crop, then shifted so that the
position map's minimum (over the texels the face covers) is 0; the image
warped into the crop with the same similarity (bilinear, black outside);
the transformed vertices rasterised in UV space with the BFM's triangles
and tri_mouth. One deviation: face3d truncates the keypoints and the box size
to integers before cropping; jaxface does not (sub-pixel difference).

Identity: `identity_of(name)`, a 31-bit BLAKE2b hash of the original face
(NAME without its view index, so with the set prefix). It is stable (it does
not depend on which files are converted), shared by all views of a face and
by their mirrored copies, and fits int32. Over 300W-LP's ~3.8k original
faces, the chance that two share an id is ~0.3 %; the converter reports any
such collision among the faces it converts.

Multiview records group the views of each original face from the non-flipped
folders (the *_Flip copies are mirror images, not other views of the same
face): front = the view with the smallest |yaw|, left = the most negative
yaw, right = the most positive yaw among the others. With 3DDFA's rotation a
positive yaw turns the face towards the image left, showing its right side
(jaxface's sides are those of a frontal photo), so the left view shows the
side of iBUG points 0 and 17-21. 3DDFA's profiling rotates a face further
towards the side it already faces, so many faces have views on one side
only: they are skipped and counted.

Extra points (`records.EXTRA_POINT_NAMES`) on real data: see
`bfm.BFM.extra_points` (glabella and temples are fixed BFM vertices, the
ears are the jaw-contour ends 0 and 16, as SPEC.md says).

The position maps are in the BFM's UV layout, not the procedural face
model's: dataset.json's `uv_layout` (`bfm.BFM.uv_layout`, name 'bfm') holds
the UVs of the BFM's 68 keypoint vertices and of its extra-point vertices,
which training, evaluation and inference read landmarks and masks with
(`jaxface.face.layout`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Sequence
import zlib

import cv2
import numpy as np
import scipy.io

from jaxface.data import records
from jaxface.data import writing
from jaxface.face import bfm as bfm_lib
from jaxface.face import render

SOURCE = '300W_LP'
SETS = ('AFW', 'HELEN', 'IBUG', 'LFPW')
FLIP_SUFFIX = '_Flip'
NUM_SHAPE, NUM_EXPRESSION = 199, 29

_VIEW_NAME = re.compile(r'^(?P<face>.+)_(?P<view>\d+)$')
_JPEG_SOI, _JPEG_EOI = b'\xff\xd8', b'\xff\xd9'


class SampleError(ValueError):
  """A sample cannot be read or converted (the converter skips it)."""


class OneSidedViews(SampleError):
  """An original face has no views on one side of the front view."""


@dataclasses.dataclass(frozen=True, eq=False)
class Sample:
  """One 300W-LP image with its fitted 3DMM parameters.

  The interface between readers (`read_sample`, the TFDS `the300w_lp`
  adapter) and `convert_sample`.

  Attributes:
    name: file stem, `<SET>_<original face>_<view>` (e.g. AFW_134212_1_0);
      the identity is derived from it (`identity_of`).
    image: uint8 (h, w, 3) RGB original image.
    pose_para: (7,) float32 Pose_Para: pitch, yaw, roll (radians), tx, ty,
      tz, scale.
    shape_para: (199,) float32 Shape_Para.
    exp_para: (29,) float32 Exp_Para.
    pt2d: (68, 2) float32 2D landmarks (x, y) in image pixels, or None.
    source: where the sample comes from, stored as the record's `source`
      (e.g. "300W_LP/AFW/AFW_134212_1_0").
  """
  name: str
  image: np.ndarray
  pose_para: np.ndarray
  shape_para: np.ndarray
  exp_para: np.ndarray
  pt2d: np.ndarray | None
  source: str


# ---------------------------------------------------------------- reading


def load_mat(path: str) -> dict[str, np.ndarray]:
  """The variables of a .mat file; SampleError if missing or unreadable."""
  if not os.path.isfile(path):
    raise SampleError(f'{path}: missing .mat file')
  try:
    contents = scipy.io.loadmat(path)
  except Exception as e:  # pylint: disable=broad-except
    raise SampleError(f'{path}: unreadable .mat file ({type(e).__name__}: '
                      f'{e})') from e
  return {k: v for k, v in contents.items() if not k.startswith('__')}


def mat_vector(fields: dict[str, np.ndarray], name: str, size: int,
               path: str, what: str) -> np.ndarray:
  """A (size,), (1, size) or (size, 1) numeric variable -> float32 (size,)."""
  if name not in fields:
    raise SampleError(f'{path}: no {name} ({what}); the file has '
                      f'{sorted(fields)}')
  value = np.asarray(fields[name])
  if (value.dtype.kind not in 'iuf' or value.ndim > 2 or value.size != size
      or (value.ndim == 2 and min(value.shape) != 1)):
    raise SampleError(f'{path}: {name} has shape {value.shape} '
                      f'({value.dtype}); expected {size} numbers ({what}), '
                      f'e.g. shape ({size}, 1)')
  value = value.reshape(-1).astype(np.float32)
  if not np.isfinite(value).all():
    raise SampleError(f'{path}: {name} has non-finite values')
  return value


def mat_points(fields: dict[str, np.ndarray], name: str, count: int,
               dims: int, path: str) -> np.ndarray:
  """A (dims, count) or (count, dims) point array -> float32 (count, dims)."""
  if name not in fields:
    raise SampleError(f'{path}: no {name}; the file has {sorted(fields)}')
  value = np.asarray(fields[name])
  if value.dtype.kind not in 'iuf' or value.ndim != 2:
    raise SampleError(f'{path}: {name} has shape {value.shape}; expected '
                      f'({dims}, {count})')
  if value.shape == (dims, count):
    value = value.T
  elif value.shape != (count, dims):
    raise SampleError(f'{path}: {name} has shape {value.shape}; expected '
                      f'({dims}, {count})')
  value = value.astype(np.float32)
  if not np.isfinite(value).all():
    raise SampleError(f'{path}: {name} has non-finite values')
  return value


def read_image(path: str) -> np.ndarray:
  """Reads a photo as uint8 (h, w, 3) RGB; SampleError if missing or corrupt.

  A JPEG must start with the SOI marker and end with EOI (a truncated file
  is refused rather than decoded half grey); EXIF orientation is ignored, as
  the annotations refer to the stored pixel grid.
  """
  if not os.path.isfile(path):
    raise SampleError(f'{path}: missing image')
  with open(path, 'rb') as f:
    data = f.read()
  if path.lower().endswith(('.jpg', '.jpeg')):
    if not data.startswith(_JPEG_SOI):
      start = data[:4].hex(' ') or 'with nothing'
      raise SampleError(f'{path}: corrupt image: not a JPEG ({len(data)} '
                        f'bytes starting {start})')
    if not data.rstrip(b'\x00\r\n ').endswith(_JPEG_EOI):
      raise SampleError(f'{path}: corrupt image: truncated JPEG (no end '
                        f'marker, {len(data)} bytes)')
  bgr = cv2.imdecode(np.frombuffer(data, np.uint8),
                     cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
  if bgr is None or bgr.ndim != 3 or min(bgr.shape[:2]) < 2:
    raise SampleError(f'{path}: corrupt image: cannot decode it')
  return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_sample(mat_path: str | os.PathLike[str]) -> Sample:
  """Reads NAME.mat and the NAME.jpg beside it.

  Args:
    mat_path: path of a 300W-LP annotation, `<root>/<folder>/NAME.mat`.

  Returns:
    The `Sample`; its source is "300W_LP/<folder>/NAME", its pt2d None if
    the .mat has no well-formed (2, 68) pt2d (the conversion does not use
    it).

  Raises:
    SampleError: naming the file and the problem (missing or corrupt image
      or .mat, a missing variable, a wrong shape, non-finite values).
  """
  mat_path = os.fspath(mat_path)
  stem = os.path.splitext(mat_path)[0]
  name = os.path.basename(stem)
  folder = os.path.basename(os.path.dirname(os.path.abspath(mat_path)))
  fields = load_mat(mat_path)
  pose = mat_vector(fields, 'Pose_Para', 7, mat_path,
                    'pitch, yaw, roll, tx, ty, tz, scale')
  shape = mat_vector(fields, 'Shape_Para', NUM_SHAPE, mat_path,
                     'BFM identity parameters')
  exp = mat_vector(fields, 'Exp_Para', NUM_EXPRESSION, mat_path,
                   'expression parameters')
  try:  # Informative only: the ground truth comes from the parameters.
    pt2d = mat_points(fields, 'pt2d', 68, 2, mat_path)
  except SampleError:
    pt2d = None
  image = read_image(stem + '.jpg')
  return Sample(name=name, image=image, pose_para=pose, shape_para=shape,
                exp_para=exp, pt2d=pt2d, source=f'{SOURCE}/{folder}/{name}')


# ------------------------------------------------------------- identities


def face_key(name: str) -> str:
  """The original face of a view: NAME without its trailing `_<k>`."""
  match = _VIEW_NAME.match(name)
  return match['face'] if match else name


def identity_of(name: str) -> int:
  """The identity id of a 300W-LP view: a 31-bit hash of its original face.

  Views of one face and their mirrored copies (same file names in the
  *_Flip folders) share it. See the module docstring.
  """
  digest = hashlib.blake2b(face_key(name).encode('utf-8'),
                           digest_size=4).digest()
  return int.from_bytes(digest, 'big') & 0x7FFFFFFF


def in_test_split(key: str, test_fraction: float) -> bool:
  """Deterministic hold-out of whole original faces (by a salted hash)."""
  if test_fraction <= 0:
    return False
  digest = hashlib.blake2b(b'jaxface-split:' + key.encode('utf-8'),
                           digest_size=8).digest()
  return int.from_bytes(digest, 'big') / 2.0**64 < test_fraction


# ------------------------------------------------------------- conversion


@dataclasses.dataclass(frozen=True)
class View:
  """One face cropped as PRNet crops it; z shifted so the map's min is 0."""
  image: np.ndarray           # (R, R, 3) uint8 RGB crop
  position_map: np.ndarray    # (R, R, 3) float32, 0 off the face
  vertices: np.ndarray        # (n, 3) float64 crop pixels, z shifted
  landmarks: np.ndarray       # (68, 3) float32 crop pixels
  extra_points: np.ndarray    # (5, 3) float32 crop pixels
  crop_transform: np.ndarray  # (3, 3) float32, original -> crop pixels
  face_box: np.ndarray        # (4,) float32 keypoints' box, original pixels


def check_crop(transform: np.ndarray, where: str) -> None:
  if not np.isfinite(transform).all() or transform[0, 0] <= 0:
    raise SampleError(f'{where}: the landmarks span no area; cannot crop')


def check_sample(sample: Sample, bfm: bfm_lib.BFM) -> None:
  """SampleError unless the sample's arrays fit `bfm` (any reader's sample)."""
  where = sample.source or sample.name
  image = np.asarray(sample.image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise SampleError(f'{where}: image must be uint8 (h, w, 3) RGB, got '
                      f'{image.dtype} {image.shape}')
  for label, value, size in (('pose_para', sample.pose_para, 7),
                             ('shape_para', sample.shape_para, bfm.num_shape),
                             ('exp_para', sample.exp_para,
                              bfm.num_expression)):
    value = np.asarray(value)
    if value.size != size or value.dtype.kind not in 'iuf':
      raise SampleError(f'{where}: {label} has shape {value.shape}, expected '
                        f'({size},)' + ('' if label == 'pose_para' else
                                        f' (the BFM in {bfm.path} has {size} '
                                        'components)'))
    if not np.isfinite(value).all():
      raise SampleError(f'{where}: {label} has non-finite values')


def crop_view(sample: Sample, bfm: bfm_lib.BFM, resolution: int,
              rng: np.random.Generator | None = None) -> View:
  """The ground truth of one sample in its PRNet crop (see module docstring).

  Args:
    sample: the sample.
    bfm: the morphable model the parameters refer to.
    resolution: side R of the crop and of the position map in pixels.
    rng: PRNet's random crop shift and scale if given, else the
      deterministic crop.
  """
  check_sample(sample, bfm)
  height = sample.image.shape[0]
  points = bfm.image_vertices(sample.shape_para, sample.exp_para,
                              sample.pose_para, height)
  keypoints = bfm.landmarks(points)
  transform, _ = render.prnet_crop(keypoints, resolution, rng)
  check_crop(transform, sample.source)
  crop = render.apply_crop(transform, points)
  position_map = bfm.position_map(crop, resolution)
  crop[:, 2] -= bfm_lib.shift_z_to_zero(
      position_map, bfm.uv_raster(resolution).covered)
  if not np.isfinite(position_map).all():
    raise SampleError(f'{sample.source}: non-finite position map')
  box = np.concatenate([keypoints[:, :2].min(0), keypoints[:, :2].max(0)])
  return View(image=render.crop_image(sample.image, transform, resolution),
              position_map=position_map, vertices=crop,
              landmarks=bfm.landmarks(crop).astype(np.float32),
              extra_points=bfm.extra_points(crop).astype(np.float32),
              crop_transform=transform.astype(np.float32),
              face_box=box.astype(np.float32))


def convert_sample(sample: Sample, bfm: bfm_lib.BFM, resolution: int,
                   rng: np.random.Generator | None = None) -> dict:
  """The fields of the `recon` record of one sample.

  Args:
    sample: a `Sample` (from `read_sample` or another reader).
    bfm: the BFM (`bfm.load_bfm`).
    resolution: side of the crop and position map in pixels.
    rng: optional generator of PRNet's crop perturbation.

  Returns:
    {image, position_map, landmarks, pose, shape_coeffs, expression_coeffs,
    face_box, crop_transform, original_size, identity, source}, as
    `records.serialize('recon', ...)` takes them. landmarks are the 68 BFM
    keypoint vertices in crop pixels (z as in the position map).

  Raises:
    SampleError: if the sample's fields have the wrong shapes or values.
  """
  view = crop_view(sample, bfm, resolution, rng)
  return dict(
      image=records.encode_jpeg(view.image),
      position_map=view.position_map, landmarks=view.landmarks,
      pose=np.asarray(sample.pose_para, np.float32).reshape(-1),
      shape_coeffs=np.asarray(sample.shape_para, np.float32).reshape(-1),
      expression_coeffs=np.asarray(sample.exp_para, np.float32).reshape(-1),
      face_box=view.face_box, crop_transform=view.crop_transform,
      original_size=np.array(sample.image.shape[:2], np.int32),
      identity=identity_of(sample.name), source=sample.source)


def choose_views(yaws: Sequence[float], where: str = 'face'
                 ) -> tuple[int, int, int]:
  """Indices of the front, left and right views among views with `yaws`.

  front = smallest |yaw|; left = most negative yaw among the others; right =
  most positive yaw among the others (ties: the first).

  Raises:
    OneSidedViews: if there is no other view with a negative or with a
      positive yaw.
    SampleError: if there are no views at all.
  """
  yaws = [float(y) for y in yaws]
  if not yaws:
    raise SampleError(f'{where}: no readable views')
  front = min(range(len(yaws)), key=lambda i: (abs(yaws[i]), i))
  others = [i for i in range(len(yaws)) if i != front]
  negative = [i for i in others if yaws[i] < 0]
  positive = [i for i in others if yaws[i] > 0]
  if not negative or not positive:
    side = 'left (negative' if not negative else 'right (positive'
    degrees = ', '.join(f'{np.rad2deg(y):.1f}' for y in yaws)
    raise OneSidedViews(f'{where}: no {side} yaw) view besides the front '
                        f'view; view yaws: [{degrees}] degrees')
  left = min(negative, key=lambda i: (yaws[i], i))
  right = min(positive, key=lambda i: (-yaws[i], i))
  return front, left, right


def multiview_record(samples: Sequence[Sample], bfm: bfm_lib.BFM,
                     resolution: int, source: str,
                     rngs: Sequence[np.random.Generator | None] | None = None
                     ) -> dict:
  """The `multiview` record of the views of one original face.

  Args:
    samples: the views (not mirrored copies) of one face.
    bfm: the BFM.
    resolution: side of the crops and of the canonical map.
    source: the record's source.
    rngs: optional crop perturbation generator per sample.

  Returns:
    The record's fields. The coefficients and the canonical position map
    (`bfm.BFM.canonical_position_map`) are the front view's.

  Raises:
    OneSidedViews: see `choose_views`.
  """
  chosen = choose_views([s.pose_para[1] for s in samples], source)
  rngs = rngs or [None] * len(samples)
  views = [crop_view(samples[i], bfm, resolution, rngs[i]) for i in chosen]
  front = samples[chosen[0]]
  return dict(
      images=[records.encode_jpeg(v.image) for v in views],
      landmarks=np.stack([v.landmarks for v in views]),
      extra_points=np.stack([v.extra_points for v in views]),
      poses=np.stack([np.asarray(samples[i].pose_para, np.float32)
                      for i in chosen]),
      crop_transforms=np.stack([v.crop_transform for v in views]),
      canonical_position_map=bfm.canonical_position_map(
          bfm.vertices(front.shape_para, front.exp_para), resolution),
      shape_coeffs=np.asarray(front.shape_para, np.float32),
      expression_coeffs=np.asarray(front.exp_para, np.float32),
      identity=identity_of(front.name), source=source)


def sample_rng(seed: int, source: str) -> np.random.Generator:
  """The crop perturbation generator of one sample: a function of its name."""
  return np.random.default_rng([int(seed), zlib.crc32(source.encode())])


@dataclasses.dataclass(frozen=True)
class _MakeRecon:
  """Picklable `mat path -> recon fields` (the BFM is loaded per process)."""
  bfm_dir: str
  resolution: int
  perturb: bool
  seed: int

  def __call__(self, mat_path: str) -> dict:
    sample = read_sample(mat_path)
    rng = sample_rng(self.seed, sample.source) if self.perturb else None
    return convert_sample(sample, bfm_lib.cached_bfm(self.bfm_dir),
                          self.resolution, rng)


@dataclasses.dataclass(frozen=True)
class _MakeMultiview:
  """Picklable `(source, mat paths) -> multiview fields`."""
  bfm_dir: str
  resolution: int
  perturb: bool
  seed: int

  def __call__(self, item: tuple[str, tuple[str, ...]]) -> dict:
    source, paths = item
    samples, problems = [], []
    for path in paths:
      try:
        samples.append(read_sample(path))
      except SampleError as e:  # An unreadable view is left out.
        problems.append(str(e))
    if not samples:
      raise SampleError(f'{source}: no readable views: {problems[0]}'
                        + (' ...' if len(problems) > 1 else ''))
    try:
      rngs = ([sample_rng(self.seed, s.source + ':multiview')
               for s in samples] if self.perturb else None)
      return multiview_record(samples, bfm_lib.cached_bfm(self.bfm_dir),
                              self.resolution, source, rngs)
    except OneSidedViews as e:
      if problems:
        raise OneSidedViews(f'{e} ({len(problems)} unreadable view(s) left '
                            f'out: {problems[0]}'
                            + (' ...' if len(problems) > 1 else '') + ')'
                            ) from e
      raise


# ------------------------------------------------------------- discovery


def discover(root: str | os.PathLike[str]) -> list[str]:
  """The .mat paths of the samples under a 300W_LP folder, sorted.

  A NAME with only a .jpg (or only a .mat) is listed too, so that the
  conversion reports it as skipped instead of ignoring it silently.

  Raises:
    ValueError: if `root` is not a 300W_LP folder or holds no samples.
  """
  root = os.fspath(root)
  layout = (f'expected the 300W_LP folder, with subfolders '
            f'{", ".join(SETS)} (and their {FLIP_SUFFIX} copies) holding '
            'NAME.jpg beside NAME.mat')
  if not os.path.isdir(root):
    raise ValueError(f'--root {root} is not a folder; {layout}')
  folders = [f for s in SETS for f in (s, s + FLIP_SUFFIX)
             if os.path.isdir(os.path.join(root, f))]
  if not folders:
    nested = os.path.join(root, SOURCE)
    hint = (f' (did you mean --root {nested}?)' if os.path.isdir(nested)
            else '')
    raise ValueError(f'--root {root} has none of the 300W-LP subfolders'
                     f'{hint}; {layout}')
  paths = []
  for folder in folders:
    directory = os.path.join(root, folder)
    stems = {os.path.splitext(entry)[0] for entry in os.listdir(directory)
             if os.path.splitext(entry)[1].lower() in ('.jpg', '.mat')}
    paths.extend(os.path.join(directory, stem + '.mat')
                 for stem in sorted(stems))
  if not paths:
    raise ValueError(f'no samples under --root {root} (subfolders '
                     f'{folders} hold no .jpg / .mat files); {layout}')
  return paths


def _is_flip(path: str) -> bool:
  return os.path.basename(os.path.dirname(path)).endswith(FLIP_SUFFIX)


def _face_of(path: str) -> str:
  return face_key(os.path.splitext(os.path.basename(path))[0])


def group_views(paths: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
  """Multiview items: (source, view .mat paths) per original face.

  Mirrored copies (*_Flip folders) are left out. Sorted by source.
  """
  groups: dict[str, list[str]] = {}
  for path in paths:
    if _is_flip(path):
      continue
    folder = os.path.basename(os.path.dirname(path))
    groups.setdefault(f'{SOURCE}/{folder}/{_face_of(path)}', []).append(path)
  return [(source, tuple(sorted(views)))
          for source, views in sorted(groups.items())]


def convert_300wlp(root: str | os.PathLike[str],
                   bfm_dir: str | os.PathLike[str],
                   out_dir: str | os.PathLike[str], *, resolution: int = 256,
                   workers: int = 1, test_fraction: float = 0.0,
                   limit: int | None = None, multiview: bool = True,
                   perturb: bool = False, seed: int = 0,
                   overwrite: bool = False, shard_size: int = 256,
                   progress: bool = True) -> writing.Conversion:
  """Converts 300W-LP into a jaxface dataset (see the module docstring).

  Args:
    root: the 300W_LP folder.
    bfm_dir: the folder with face3d's BFM.mat and BFM_UV.mat.
    out_dir: the output dataset folder (an existing dataset there is only
      replaced with `overwrite`).
    resolution: side of the crops and position maps in pixels.
    workers: processes.
    test_fraction: fraction of original faces (with all their views and
      mirrored copies) held out in a `test` split, chosen by a hash of the
      face's name (deterministic). 0: everything is `train`.
    limit: convert only the first `limit` samples (sorted by path).
    multiview: also write `multiview` records.
    perturb: PRNet's random crop shift and scale (a function of `seed` and
      the sample's name); off: deterministic crops.
    seed: seed of the perturbation.
    overwrite: replace an existing dataset in `out_dir`.
    shard_size: records per shard.
    progress: show progress bars.

  Returns:
    A `writing.Conversion`; `ok` is False (and no dataset.json is written)
    when no record could be made.

  Raises:
    bfm.BFMError: if the BFM cannot be loaded.
    ValueError: if `root` holds no 300W-LP samples or an option is invalid.
    FileExistsError: if `out_dir` holds a dataset and not `overwrite`.
    files.FolderInUseError: if another writer is writing `out_dir`.
    writing.Interrupted: on Ctrl-C; nothing of `out_dir` is left.
  """
  writing.validate_options(resolution, workers, shard_size, limit)
  if not 0.0 <= test_fraction <= 1.0:
    raise ValueError(f'--test-fraction must be in [0, 1], got {test_fraction}')
  root, out_dir = os.fspath(root), os.fspath(out_dir)
  bfm_dir = os.path.abspath(os.fspath(bfm_dir))
  bfm = bfm_lib.cached_bfm(bfm_dir)  # Fails early, with the files expected.
  if (bfm.num_shape, bfm.num_expression) != (NUM_SHAPE, NUM_EXPRESSION):
    raise bfm_lib.BFMError(
        f'the BFM in {bfm.path} has {bfm.num_shape} identity and '
        f'{bfm.num_expression} expression components; 300W-LP\'s parameters '
        f'are for {NUM_SHAPE} and {NUM_EXPRESSION}. {bfm_lib.HOW_TO_GET}')
  paths = discover(root)
  if limit is not None:
    paths = paths[:limit]

  def split_of(path):
    return 'test' if in_test_split(_face_of(path), test_fraction) else 'train'

  make_recon = _MakeRecon(bfm_dir, resolution, perturb, seed)
  make_multiview = _MakeMultiview(bfm_dir, resolution, perturb, seed)
  groups = group_views(paths) if multiview else []
  plan = []
  for split in ('train', 'test'):
    plan.append(('recon', split, [p for p in paths if split_of(p) == split],
                 make_recon))
  for split in ('train', 'test'):
    plan.append(('multiview', split,
                 [g for g in groups if split_of(g[1][0]) == split],
                 make_multiview))

  notes = []
  ids: dict[int, set[str]] = {}
  for path in paths:
    name = os.path.splitext(os.path.basename(path))[0]
    ids.setdefault(identity_of(name), set()).add(face_key(name))
  collisions = {i: sorted(k) for i, k in ids.items() if len(k) > 1}
  if collisions:
    notes.append(f'identity hash collisions (faces sharing an id): '
                 f'{sorted(collisions.values())[:5]}')

  info = dict(
      seed=seed if perturb else None, resolution=resolution,
      root=os.path.abspath(root), perturb=perturb,
      test_fraction=test_fraction, limit=limit,
      bfm={'path': bfm.path, 'num_vertices': bfm.num_vertices,
           'num_shape': bfm.num_shape,
           'num_expression': bfm.num_expression},
      uv_layout=bfm.uv_layout().to_json(),
      identity='31-bit BLAKE2b hash of the original face (file name without '
               'its view index); views and mirrored copies share it',
      extra_points='glabella and temples (head_left/right): fixed BFM '
                   'vertices; ears: jaw-contour ends (iBUG 0, 16)',
      multiview_faces=len(groups))
  with writing.dataset_output(out_dir, overwrite):
    results = writing.run_splits(out_dir, plan, workers, shard_size, progress)
    one_sided = sum(reason.startswith(OneSidedViews.__name__)
                    for r in results if r.kind == 'multiview'
                    for _, reason in r.skipped)
    if multiview:
      notes.append(f'multiview: {len(groups)} original faces, {one_sided} '
                   'skipped for lack of views on both sides of the front '
                   'view')
    conversion = writing.Conversion(SOURCE, out_dir, results, None, notes, root)
    return writing.finish(conversion, **info, multiview_one_sided=one_sided)
