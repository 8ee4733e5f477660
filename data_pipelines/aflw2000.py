"""AFLW2000-3D -> jaxface `recon` test records: `jaxface data convert-aflw2000`.

Input layout (Zhu et al., 3DDFA; AFLW2000-3D.zip): `AFLW2000/imageNNNNN.jpg`
(450 x 450) beside `imageNNNNN.mat` with pt3d_68 (3, 68), pt2d (2, 21: the
AFLW annotation), Pose_Para (1, 7), Shape_Para (199, 1), Exp_Para (29, 1),
roi, and texture / colour / illumination parameters.

Landmark convention. pt3d_68 holds the 68 landmarks of the fitted 3DMM in
original-image pixels: x right and y down (already flipped into image
coordinates), z the depth towards the camera at the same scale. This is how
3DDFA's AFLW2000-3D benchmark and PRNet-style evaluations use it (the x, y
rows are compared directly with predicted image points, and the crop is taken
around them). jaxface does the same: x, y map into the crop by the crop
similarity and z is scaled like them. 3DDFA's z is the fitted 3DMM
vertex's z after the similarity transform (s R v + t, only y flipped into
the image), so its sign (towards the camera) and scale (image pixels) are
the position maps', but its zero is arbitrary (tz). Records keep that
zero's arbitrariness: with a BFM the landmarks are shifted with the map
(the map's minimum over the face at 0), without one their own minimum is
0, which lies several to tens of pixels in front of the map's; the 3D NME
(`jaxface.eval.metrics.nme`) therefore compares depth up to an offset, as
3DDFA's authors and 2DASL's evaluation code do.

Records (split `test`):
- image: PRNet's crop around the ground-truth landmarks (pt3d_68's x, y),
  deterministic (no perturbation), `crop_transform` original -> crop, so
  that predictions map back to original pixels with its inverse;
  `original_size` the photo's (height, width);
- landmarks: pt3d_68 in crop pixels;
- pose: Pose_Para (yaw = pose[1], for the usual |yaw| bins 0-30, 30-60,
  60-90 degrees);
- position_map: with a BFM, made from the BFM parameters exactly as for
  300W-LP (`the300wlp.crop_view`), and the landmarks' z is shifted by the
  same amount as the map's (so they are in one frame). face3d flips y as
  h - 1 - y; 3DDFA's MATLAB code flips as h + 1 - y in 1-based pixels, i.e.
  h - y in 0-based ones, so the map and pt3d_68 may disagree by up to one
  pixel in y on the real data; the maps are in the BFM's UV layout, which
  dataset.json records (`uv_layout`, see `the300wlp`);
- without a BFM (`landmarks_only`): no position map (the field is optional),
  the landmarks' z is shifted to a minimum of 0 over the 68 landmarks, and
  dataset.json says `"position_maps": false`;
- original_image: the photo's own JPEG bytes, unchanged, for drawing
  predictions mapped back with the inverse crop transform;
- identity: the image number (image00002 -> 2): every AFLW2000 image is its
  own face.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from data_pipelines import the300wlp
from jaxface.data import records
from jaxface.data import writing
from jaxface.face import bfm as bfm_lib
from jaxface.face import render

SOURCE = 'AFLW2000'
SPLIT = 'test'
_IMAGE_NAME = re.compile(r'^image(?P<number>\d+)$')

SampleError = the300wlp.SampleError


@dataclasses.dataclass(frozen=True, eq=False)
class Sample:
  """One AFLW2000-3D photo and its ground truth.

  Attributes:
    name: file stem, e.g. "image00002".
    image: uint8 (h, w, 3) RGB photo.
    pose_para: (7,) float32 Pose_Para (pitch, yaw, roll, tx, ty, tz, s).
    shape_para: (199,) float32 Shape_Para.
    exp_para: (29,) float32 Exp_Para.
    landmarks: (68, 3) float32 pt3d_68 in image pixels (x, y down, z).
    source: the record's source, e.g. "AFLW2000/image00002".
    jpeg: the photo file's bytes (kept unchanged in the record), or None.
  """
  name: str
  image: np.ndarray
  pose_para: np.ndarray
  shape_para: np.ndarray
  exp_para: np.ndarray
  landmarks: np.ndarray
  source: str
  jpeg: bytes | None = None


def read_sample(mat_path: str | os.PathLike[str]) -> Sample:
  """Reads imageNNNNN.mat and the .jpg beside it.

  Raises:
    SampleError: naming the file and the problem.
  """
  mat_path = os.fspath(mat_path)
  stem = os.path.splitext(mat_path)[0]
  name = os.path.basename(stem)
  fields = the300wlp.load_mat(mat_path)
  pose = the300wlp.mat_vector(fields, 'Pose_Para', 7, mat_path,
                              'pitch, yaw, roll, tx, ty, tz, scale')
  shape = the300wlp.mat_vector(fields, 'Shape_Para', the300wlp.NUM_SHAPE,
                               mat_path, 'BFM identity parameters')
  exp = the300wlp.mat_vector(fields, 'Exp_Para', the300wlp.NUM_EXPRESSION,
                             mat_path, 'expression parameters')
  landmarks = the300wlp.mat_points(fields, 'pt3d_68', 68, 3, mat_path)
  image = the300wlp.read_image(stem + '.jpg')
  with open(stem + '.jpg', 'rb') as f:
    jpeg = f.read()
  if not jpeg.startswith(records.JPEG_SOI):
    jpeg = None  # another format OpenCV reads; re-encoded in the record
  return Sample(name=name, image=image, pose_para=pose, shape_para=shape,
                exp_para=exp, landmarks=landmarks, source=f'{SOURCE}/{name}',
                jpeg=jpeg)


def identity_of(name: str) -> int:
  """The image number of imageNNNNN; other names: `the300wlp.identity_of`."""
  match = _IMAGE_NAME.match(name)
  return int(match['number']) if match else the300wlp.identity_of(name)


def convert_sample(sample: Sample, bfm: bfm_lib.BFM | None,
                   resolution: int) -> dict:
  """The fields of the `recon` record of one AFLW2000-3D sample.

  Args:
    sample: the sample.
    bfm: the BFM for the position map, or None for a landmarks-only record
      (see the module docstring).
    resolution: side of the crop (and position map) in pixels.
  """
  image = np.asarray(sample.image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise SampleError(f'{sample.source}: image must be uint8 (h, w, 3) RGB, '
                      f'got {image.dtype} {image.shape}')
  landmarks = np.asarray(sample.landmarks, np.float64)
  if landmarks.shape != (68, 3) or not np.isfinite(landmarks).all():
    raise SampleError(f'{sample.source}: landmarks must be finite (68, 3), '
                      f'got {landmarks.shape}')
  transform, _ = render.prnet_crop(landmarks[:, :2], resolution)
  the300wlp.check_crop(transform, sample.source)
  crop_landmarks = render.apply_crop(transform, landmarks)
  if bfm is not None:
    the300wlp.check_sample(sample, bfm)
    points = bfm.image_vertices(sample.shape_para, sample.exp_para,
                                sample.pose_para, sample.image.shape[0])
    crop = render.apply_crop(transform, points)
    position_map = bfm.position_map(crop, resolution)
    z_min = bfm_lib.shift_z_to_zero(position_map,
                                    bfm.uv_raster(resolution).covered)
  else:
    position_map = None
    z_min = crop_landmarks[:, 2].min()
  crop_landmarks[:, 2] -= z_min
  image = render.crop_image(sample.image, transform, resolution)
  box = np.concatenate([landmarks[:, :2].min(0), landmarks[:, :2].max(0)])
  fields = dict(
      image=records.encode_jpeg(image),
      landmarks=crop_landmarks.astype(np.float32),
      pose=np.asarray(sample.pose_para, np.float32).reshape(-1),
      shape_coeffs=np.asarray(sample.shape_para, np.float32).reshape(-1),
      expression_coeffs=np.asarray(sample.exp_para, np.float32).reshape(-1),
      face_box=box.astype(np.float32),
      crop_transform=transform.astype(np.float32),
      original_size=np.array(sample.image.shape[:2], np.int32),
      identity=identity_of(sample.name), source=sample.source,
      original_image=sample.jpeg or records.encode_jpeg(
          sample.image))
  if position_map is not None:
    fields['position_map'] = position_map
  return fields


@dataclasses.dataclass(frozen=True)
class _Make:
  """Picklable `mat path -> recon fields`."""
  bfm_dir: str | None
  resolution: int

  def __call__(self, mat_path: str) -> dict:
    sample = read_sample(mat_path)
    bfm = bfm_lib.cached_bfm(self.bfm_dir) if self.bfm_dir else None
    return convert_sample(sample, bfm, self.resolution)


def discover(root: str | os.PathLike[str]) -> list[str]:
  """The .mat paths of the samples in an AFLW2000 folder, sorted.

  Raises:
    ValueError: if `root` is not a folder or holds no imageNNNNN files.
  """
  root = os.fspath(root)
  layout = ('expected the AFLW2000 folder, holding imageNNNNN.jpg beside '
            'imageNNNNN.mat')
  if not os.path.isdir(root):
    raise ValueError(f'--root {root} is not a folder; {layout}')
  stems = {os.path.splitext(entry)[0] for entry in os.listdir(root)
           if os.path.splitext(entry)[1].lower() in ('.jpg', '.mat')
           and _IMAGE_NAME.match(os.path.splitext(entry)[0])}
  if not stems:
    nested = os.path.join(root, SOURCE)
    hint = (f' (did you mean --root {nested}?)' if os.path.isdir(nested)
            else '')
    raise ValueError(f'no AFLW2000-3D samples in --root {root}{hint}; '
                     f'{layout}')
  return [os.path.join(root, stem + '.mat') for stem in sorted(stems)]


def convert_aflw2000(root: str | os.PathLike[str],
                     out_dir: str | os.PathLike[str],
                     bfm_dir: str | os.PathLike[str] | None = None, *,
                     resolution: int = 256, workers: int = 1,
                     limit: int | None = None, landmarks_only: bool = False,
                     overwrite: bool = False, shard_size: int = 256,
                     progress: bool = True) -> writing.Conversion:
  """Converts AFLW2000-3D into `recon` records of split `test`.

  Args:
    root: the AFLW2000 folder.
    out_dir: the output dataset folder.
    bfm_dir: the BFM folder (face3d's BFM.mat, BFM_UV.mat) for the position
      maps. Required unless `landmarks_only`.
    resolution: side of the crops and position maps in pixels.
    workers: processes.
    limit: convert only the first `limit` images (sorted by name).
    landmarks_only: without a BFM, write records without position maps
      (see the module docstring).
    overwrite: replace an existing dataset in `out_dir`.
    shard_size: records per shard.
    progress: show a progress bar.

  Returns:
    A `writing.Conversion` (`ok` False and no dataset.json if nothing
    could be converted).

  Raises:
    ValueError: no BFM and not `landmarks_only`, no samples, bad options.
    bfm.BFMError: if the BFM cannot be loaded.
    FileExistsError: `out_dir` holds a dataset and not `overwrite`.
    files.FolderInUseError: another writer is writing `out_dir`.
    writing.Interrupted: Ctrl-C; nothing of `out_dir` is left.
  """
  writing.validate_options(resolution, workers, shard_size, limit)
  if bfm_dir is None and not landmarks_only:
    raise ValueError(
        'AFLW2000 records need a position map, which is made from the BFM '
        'parameters: pass --bfm BFM_DIR (the folder with face3d\'s BFM.mat '
        'and BFM_UV.mat), or pass --landmarks-only for records without one '
        '(enough for landmark and pose evaluation, not for dense 3D '
        'errors)')
  if bfm_dir is not None:
    bfm_dir = os.path.abspath(os.fspath(bfm_dir))
    bfm = bfm_lib.cached_bfm(bfm_dir)
    if ((bfm.num_shape, bfm.num_expression)
        != (the300wlp.NUM_SHAPE, the300wlp.NUM_EXPRESSION)):
      raise bfm_lib.BFMError(
          f'the BFM in {bfm.path} has {bfm.num_shape} identity and '
          f'{bfm.num_expression} expression components; AFLW2000-3D\'s '
          f'parameters are for {the300wlp.NUM_SHAPE} and '
          f'{the300wlp.NUM_EXPRESSION}. {bfm_lib.HOW_TO_GET}')
  else:
    bfm = None
  root, out_dir = os.fspath(root), os.fspath(out_dir)
  paths = discover(root)
  if limit is not None:
    paths = paths[:limit]
  info = dict(
      seed=None, resolution=resolution, root=os.path.abspath(root),
      limit=limit, position_maps=bfm is not None,
      bfm=None if bfm is None else {
          'path': bfm.path, 'num_vertices': bfm.num_vertices,
          'num_shape': bfm.num_shape, 'num_expression': bfm.num_expression},
      **({} if bfm is None else {'uv_layout': bfm.uv_layout().to_json()}),
      landmarks='pt3d_68 (x, y in image pixels, z depth), mapped into the '
                'crop; z scaled like x, y and shifted with the position map',
      identity='the image number (imageNNNNN -> NNNNN)')
  notes = [] if bfm is not None else [
      'landmarks only: the records have no position maps']
  with writing.dataset_output(out_dir, overwrite):
    results = writing.run_splits(
        out_dir, [('recon', SPLIT, paths, _Make(bfm_dir, resolution))],
        workers, shard_size, progress)
    conversion = writing.Conversion(SOURCE, out_dir, results, None, notes,
                                    root)
    return writing.finish(conversion, **info)
