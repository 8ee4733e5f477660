"""The Basel Face Model (BFM) as face3d stores it: loader and morphable model.

jaxface reads the BFM in face3d's format (YadiraF/face3d,
`examples/Data/BFM/generate.m` or `generate.py`), the one that PRNet's and
face3d's 300W-LP ground truth is made with:

  BFM.mat     struct `model`:
                shapeMU  (3n, 1)    mean shape (BFM 2009, trimmed to 3DDFA's
                                    n = 53215 face vertices), micrometres
                shapePC  (3n, 199)  identity basis
                shapeEV  (199, 1)   its standard deviations (optional here)
                expMU    (3n, 1)    3DDFA's expression mean (optional)
                expPC    (3n, 29)   3DDFA's expression basis
                expEV    (29, 1)    its standard deviations (optional here)
                tri      (3, F)     triangles, 1-based
                tri_mouth (3, 114)  mouth-closing triangles, 1-based (optional)
                kpt_ind  (1, 68)    iBUG-68 landmark vertices, 1-based
  BFM_UV.mat  UV (n, 2)             per-vertex UV in [0, 1] (3DMMasSTN's)

Flat (3n,) vectors interleave x, y, z per vertex: vertex i is entries 3i,
3i + 1, 3i + 2 (face3d reshapes them [3, n] in Fortran order). As face3d's
`load_BFM` does, the mean shape is shapeMU + expMU, and a face is
mean + shapePC @ Shape_Para + expPC @ Exp_Para, with the parameters as
300W-LP and AFLW2000-3D store them (already scaled: no EV factor).

Model frame: x to the subject's left (the image right of a frontal photo),
y up, z towards the camera of a frontal photo; units are those of the file
(micrometres for BFM 2009, see `BFM.units_per_mm`).

UV convention. face3d / PRNet (`process_uv` in face3d's
`generate_posmap_300WLP.py`) rasterise vertex i at column u_i (W - 1) and row
(H - 1) - v_i (H - 1) of the position map: BFM_UV's v points up (the forehead
has v near 1) and the map's rows are flipped so that the map is upright.
jaxface puts texel (row r, col c) at uv = (c / (W - 1), r / (H - 1)) with v
pointing down (`jaxface.face.uv`), so the jaxface UV of a BFM vertex is
(u, 1 - v). The resulting maps are PRNet's maps: e.g. PRNet's uv_kpt_ind puts
jaw point 0 at column 15 of 256, the chin (8) at row 193 and the brows near
row 40, i.e. upright and not mirrored, as a frontal photo.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np
import scipy.io

from jaxface.face import frames
from jaxface.face import layout as layout_lib
from jaxface.face import render
from jaxface.face import uv as uv_lib

MODEL_FILE = 'BFM.mat'
UV_FILE = 'BFM_UV.mat'
INFO_FILE = 'BFM_info.mat'  # face3d's model_info; its uv_coords = BFM_UV.

# Where the files come from: printed when they are missing or wrong.
HOW_TO_GET = (
    'jaxface reads the Basel Face Model in face3d\'s format: a folder with '
    f'{MODEL_FILE} (a struct `model` with shapeMU, shapePC, expMU, expPC, '
    f'tri, kpt_ind and optionally tri_mouth) and {UV_FILE} (the per-vertex '
    'UV coordinates `UV`). Make them with face3d '
    '(https://github.com/YadiraF/face3d, examples/Data/BFM/readme.md): '
    'download 01_MorphableModel.mat (BFM 2009, '
    'https://faces.dmi.unibas.ch/bfm/, registration required), 3DDFA\'s '
    'model_info.mat, Model_Expression.mat and Model_tri_mouth.mat '
    '(http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/main.htm), '
    'and BFM_UV.mat from 3DMMasSTN '
    '(https://github.com/anilbas/3DMMasSTN/blob/master/util/BFM_UV.mat), '
    'run generate.m (MATLAB) or generate.py, and pass --bfm the Out/ folder '
    f'that holds {MODEL_FILE} and {UV_FILE}.')

# Files of other face-model releases, recognised to say what they are.
_OTHER_RELEASES = {
    '01_MorphableModel.mat': 'the raw BFM 2009 release (no expression basis, '
                             'not trimmed to the 3DDFA face)',
    'Model_Shape.mat': '3DDFA\'s model files (inputs of face3d\'s generate.m)',
    'Model_Expression.mat': '3DDFA\'s model files (inputs of face3d\'s '
                            'generate.m)',
    'model_info.mat': '3DDFA\'s model files (inputs of face3d\'s generate.m)',
    'BFM_model_front.mat': 'the Deep3DFaceReconstruction BFM (80 identity, '
                           '64 expression components: not 300W-LP\'s 199 / '
                           '29)',
    'uv_kpt_ind.txt': 'PRNet\'s uv-data (UV indices, not a morphable model)',
    'face_ind.txt': 'PRNet\'s uv-data (UV indices, not a morphable model)',
}

NUM_LANDMARKS = 68
# iBUG landmark groups used for the model's reference points.
_LEFT_EYE, _RIGHT_EYE = tuple(range(36, 42)), tuple(range(42, 48))
_BROWS = tuple(range(17, 27))
# Fraction of the vertices (the ones nearest the brow line in height) among
# which the temples are looked for.
_TEMPLE_BAND = 0.02


class BFMError(ValueError):
  """The BFM files are missing or not in face3d's format."""


def _first_existing(*paths: str) -> str | None:
  for path in paths:
    if os.path.isfile(path):
      return path
  return None


def _missing_message(directory: str, missing: str) -> str:
  try:
    present = sorted(os.listdir(directory))
  except OSError:
    present = []
  others = sorted({what for name, what in _OTHER_RELEASES.items()
                   if name in present})
  found = (f'; it holds {present[:12]}' + (' ...' if len(present) > 12
                                             else '')) if present else (
                                                 '; it is empty')
  hint = (' The folder holds ' + '; '.join(others) + ', which jaxface does '
          'not read directly.') if others else ''
  return (f'no {missing} in the --bfm folder {directory}{found}.{hint} '
          f'{HOW_TO_GET}')


def _loadmat(path: str) -> dict:
  try:
    return scipy.io.loadmat(path)
  except NotImplementedError as e:  # MATLAB v7.3 files are HDF5.
    raise BFMError(f'{path} is a MATLAB v7.3 (HDF5) file, which scipy cannot '
                   'read; re-save it in MATLAB with `save(..., \'-v7\')`'
                   ) from e
  except Exception as e:  # pylint: disable=broad-except
    raise BFMError(f'{path} is not a readable .mat file ({type(e).__name__}: '
                   f'{e}). {HOW_TO_GET}') from e


def _struct_fields(struct) -> dict[str, np.ndarray]:
  """A MATLAB struct as scipy loads it -> {field: ndarray}."""
  while (isinstance(struct, np.ndarray) and struct.dtype.names is None
         and struct.dtype == object and struct.size == 1):
    struct = struct.reshape(-1)[0]
  if isinstance(struct, np.ndarray) and struct.dtype.names is not None:
    struct = struct.reshape(-1)[0]
  if isinstance(struct, np.void) and struct.dtype.names is not None:
    return {name: np.asarray(struct[name]) for name in struct.dtype.names}
  raise TypeError(type(struct).__name__)


def _model_fields(path: str) -> dict[str, np.ndarray]:
  contents = _loadmat(path)
  if 'model' in contents:
    try:
      return _struct_fields(contents['model'])
    except TypeError as e:
      raise BFMError(f'{path}: variable `model` is not a MATLAB struct '
                     f'(got {e}). {HOW_TO_GET}') from e
  if 'shapeMU' in contents:  # Fields saved as top-level variables.
    return {k: np.asarray(v) for k, v in contents.items()
            if not k.startswith('__')}
  variables = sorted(k for k in contents if not k.startswith('__'))
  raise BFMError(f'{path} holds no struct `model` (its variables: '
                 f'{variables}); it is not face3d\'s {MODEL_FILE}. '
                 f'{HOW_TO_GET}')


def _field(fields: dict[str, np.ndarray], name: str, path: str,
           what: str) -> np.ndarray:
  if name not in fields:
    raise BFMError(f'{path}: struct `model` has no field {name!r} ({what}); '
                   f'its fields are {sorted(fields)}. {HOW_TO_GET}')
  value = np.asarray(fields[name])
  if value.dtype.kind not in 'iuf':
    raise BFMError(f'{path}: field {name!r} ({what}) is not numeric (dtype '
                   f'{value.dtype})')
  if not np.isfinite(value).all():
    raise BFMError(f'{path}: field {name!r} ({what}) has non-finite values')
  return value


def _column(value: np.ndarray, name: str, path: str, length: int | None,
            what: str) -> np.ndarray:
  """A (k, 1), (1, k) or (k,) array -> (k,); checks k if given."""
  if value.ndim > 2 or (value.ndim == 2 and min(value.shape) != 1):
    raise BFMError(f'{path}: field {name!r} ({what}) has shape {value.shape}'
                   ', expected a vector' + (f' of {length}' if length else ''))
  flat = value.reshape(-1)
  if length is not None and flat.size != length:
    raise BFMError(f'{path}: field {name!r} ({what}) has {flat.size} values, '
                   f'expected {length}')
  return flat


def _index_rows(value: np.ndarray, name: str, path: str) -> np.ndarray:
  """A (3, F) (face3d) or (F, 3) index array -> (F, 3)."""
  if value.ndim != 2 or 3 not in value.shape:
    raise BFMError(f'{path}: field {name!r} has shape {value.shape}, '
                   'expected (3, F) vertex indices of triangles')
  rows = value.T if value.shape[0] == 3 and value.shape[1] != 3 else value
  if not np.array_equal(rows, np.round(rows)):
    raise BFMError(f'{path}: field {name!r} holds non-integer indices')
  return rows.astype(np.int64)


@dataclasses.dataclass(frozen=True, eq=False)
class BFM:
  """A morphable model (`morphable.MorphableModel`) in face3d's layout, with
  jaxface's UV convention.

  Build with `load_bfm`. n vertices, S identity and E expression components
  (199 and 29 for the BFM of 300W-LP).

  Attributes:
    mean: (n, 3) float32 mean face (shapeMU + expMU), model frame and units.
    shape_basis: (3n, S) float32 identity basis (x, y, z interleaved).
    expression_basis: (3n, E) float32 expression basis.
    triangles: (F, 3) int32 0-based vertex indices (tri, then tri_mouth).
    keypoints: (68,) int64 0-based vertices of the iBUG-68 landmarks.
    uv: (n, 2) float32 jaxface UV (u right, v down, in [0, 1]).
    shape_ev: (S,) float32 identity standard deviations, or None.
    expression_ev: (E,) float32 expression standard deviations, or None.
    path: the folder the model was loaded from.
  """
  mean: np.ndarray
  shape_basis: np.ndarray
  expression_basis: np.ndarray
  triangles: np.ndarray
  keypoints: np.ndarray
  uv: np.ndarray
  shape_ev: np.ndarray | None = None
  expression_ev: np.ndarray | None = None
  path: str = ''
  # UVRaster per resolution, built on first use (per object, not global).
  _rasters: dict = dataclasses.field(default_factory=dict, init=False,
                                     repr=False)

  @property
  def num_vertices(self) -> int:
    return self.mean.shape[0]

  @property
  def num_shape(self) -> int:
    return self.shape_basis.shape[1]

  @property
  def num_expression(self) -> int:
    return self.expression_basis.shape[1]

  @functools.cached_property
  def units_per_mm(self) -> float:
    """Model units per millimetre: 1000 for BFM's micrometres, else 1.

    Decided by the mean face's extent (a face spans ~150-250 mm): more than
    1000 units means micrometres.
    """
    return 1000.0 if np.ptp(self.mean, axis=0).max() > 1000 else 1.0

  @property
  def landmark_uv(self) -> np.ndarray:
    """(68, 2) float32 jaxface UV of the iBUG-68 landmark vertices."""
    return self.uv[self.keypoints]

  def vertices(self, shape_para, exp_para) -> np.ndarray:
    """Model-frame vertices of one face.

    Args:
      shape_para: (S,) or (S, 1) identity parameters as 300W-LP stores them
        (Shape_Para).
      exp_para: (E,) or (E, 1) expression parameters (Exp_Para).

    Returns:
      (n, 3) float32 mean + shape_basis @ shape_para + expression_basis @
      exp_para, in model units.
    """
    shape_para = np.asarray(shape_para, np.float32).reshape(-1)
    exp_para = np.asarray(exp_para, np.float32).reshape(-1)
    if (shape_para.size, exp_para.size) != (self.num_shape,
                                            self.num_expression):
      raise ValueError(
          f'the BFM has {self.num_shape} identity and {self.num_expression} '
          f'expression components, got {shape_para.size} shape and '
          f'{exp_para.size} expression parameters')
    # np.einsum, not @: BLAS rounds differently with its thread count, and
    # converted records must not depend on the number of workers.
    flat = (self.mean.reshape(-1)
            + np.einsum('ij,j->i', self.shape_basis, shape_para)
            + np.einsum('ij,j->i', self.expression_basis, exp_para))
    return flat.reshape(-1, 3)

  def image_vertices(self, shape_para, exp_para, pose_para,
                     image_height: int) -> np.ndarray:
    """Vertices in original-image pixels, as face3d makes 300W-LP's truth.

    face3d's `transform_3ddfa` (s R(pitch, yaw, roll) v + t) and the image
    flip y -> h - 1 - y (`generate_posmap_300WLP.py`).

    Args:
      shape_para, exp_para: see `vertices`.
      pose_para: (7,) Pose_Para: pitch, yaw, roll (radians), tx, ty, tz, s.
      image_height: height h of the original image in pixels.

    Returns:
      (n, 3) float64: x right, y down in pixels; z towards the camera, in
      pixels of the same scale.
    """
    camera = render.pose_to_camera(self.vertices(shape_para, exp_para),
                                   np.asarray(pose_para).reshape(-1))
    return render.camera_to_image(camera, image_height)

  def uv_raster(self, resolution: int) -> uv_lib.UVRaster:
    """The mesh rasterised in an R x R UV map (built once per resolution)."""
    raster = self._rasters.get(resolution)
    if raster is None:
      raster = uv_lib.UVRaster.build(self.uv, self.triangles, resolution,
                                     resolution)
      self._rasters[resolution] = raster
    return raster

  def position_map(self, points: np.ndarray, resolution: int) -> np.ndarray:
    """(R, R, 3) float32 UV map of per-vertex points (n, 3); 0 off the mesh."""
    return self.uv_raster(resolution).apply(
        np.asarray(points, np.float32)).astype(np.float32)

  @functools.cached_property
  def reference_points(self) -> dict[str, np.ndarray]:
    """Mean-face reference points (model units): eye centre and brow line.

    Returns:
      {"eye_centre": (3,) midpoint of the two eye centres (means of iBUG
      36-41 and 42-47), "brow_y": () mean height of the brows (17-26)}.
    """
    kpt = self.mean[self.keypoints].astype(np.float64)
    eyes = (kpt[list(_LEFT_EYE)].mean(0) + kpt[list(_RIGHT_EYE)].mean(0)) / 2
    return {'eye_centre': eyes, 'brow_y': kpt[list(_BROWS), 1].mean()}

  @functools.cached_property
  def extra_vertex_ids(self) -> np.ndarray:
    """(3,) vertices of the glabella and the left and right temples.

    Chosen once on the mean face, so that they move with identity,
    expression and pose:
    - glabella: the vertex nearest the midpoint of the inner brow ends
      (iBUG 21 and 22), i.e. the surface point between the brows;
    - temples (the "lateral points of the head", above the ears): among the
      2 % of vertices nearest the brow line in height, the one furthest to
      the image left (smallest x) and to the image right (largest x) of a
      frontal view. The trimmed BFM has no ears or skull; its side at brow
      height is the temple.
    """
    mean = self.mean.astype(np.float64)
    kpt = mean[self.keypoints]
    glabella = int(np.argmin(np.linalg.norm(mean - (kpt[21] + kpt[22]) / 2,
                                            axis=1)))
    dy = np.abs(mean[:, 1] - self.reference_points['brow_y'])
    count = max(10, int(np.ceil(_TEMPLE_BAND * len(mean))))
    band = np.argsort(dy, kind='stable')[:count]
    left = int(band[np.argmin(mean[band, 0])])
    right = int(band[np.argmax(mean[band, 0])])
    return np.array([glabella, left, right], np.int64)

  def landmarks(self, points: np.ndarray) -> np.ndarray:
    """(68, 3) iBUG landmarks (the keypoint vertices) of per-vertex points
    (n, 3)."""
    return np.asarray(points)[self.keypoints]

  def extra_points(self, points: np.ndarray) -> np.ndarray:
    """(5, 3) `records.EXTRA_POINT_NAMES` points of per-vertex points (n, 3).

    glabella and the temples (head_left, head_right) are the vertices of
    `extra_vertex_ids`; the BFM has no ears, so, as SPEC.md says for real
    data, ear_left and ear_right are the jaw-contour ends, iBUG 0 and 16.
    """
    return np.asarray(points)[self._extra_ids]

  @property
  def _extra_ids(self) -> list[int]:
    glabella, left, right = self.extra_vertex_ids
    return [glabella, self.keypoints[0], self.keypoints[16], left, right]

  @property
  def extra_uv(self) -> np.ndarray:
    """(5, 2) float32 jaxface UV of the `extra_points` vertices."""
    return self.uv[self._extra_ids]

  def uv_layout(self) -> layout_lib.UVLayout:
    """The UV layout of this BFM's position maps (name 'bfm'): the UVs of
    its landmark and extra-point vertices, for dataset.json."""
    return layout_lib.UVLayout('bfm', self.landmark_uv, self.extra_uv)

  def canonical_position_map(self, vertices: np.ndarray,
                             resolution: int) -> np.ndarray:
    """Frontal position map of model-frame `vertices` (n, 3) at a fixed scale.

    As `model.FaceModel.canonical_position_map`: the canonical frame of
    `frames` ((R - 1) / 255 pixels per millimetre, model units converted
    with `units_per_mm`), the mean face's eye centre at column (R - 1) / 2
    and row 0.39 (R - 1), z towards the camera shifted so that the map's
    minimum over the face is 0. The BFM face (about 150 mm wide,
    70 mm above and 125 mm below the eyes) then fills a similar part of the
    map as the synthetic head.
    """
    pts = frames.canonical_points(np.asarray(vertices, np.float64),
                                  resolution, self.units_per_mm,
                                  self.reference_points['eye_centre'])
    position_map = self.position_map(pts, resolution)
    shift_z_to_zero(position_map, self.uv_raster(resolution).covered)
    return position_map


def shift_z_to_zero(position_map: np.ndarray, covered: np.ndarray) -> float:
  """Shifts z of the covered texels so that their minimum is 0, in place.

  Texels off the mesh stay 0. Returns the z that was subtracted.
  """
  z = position_map[..., 2]
  z_min = float(z[covered].min()) if covered.any() else 0.0
  z[covered] -= z_min
  return z_min


def find_files(directory: str | os.PathLike[str]) -> tuple[str, str]:
  """Paths of BFM.mat and of the UV file in a --bfm folder.

  Accepts the folder holding BFM.mat, face3d's Data/BFM folder (whose Out/
  holds the generated files), or the path of BFM.mat itself. The UV
  coordinates come from BFM_UV.mat, else from BFM_info.mat's uv_coords.

  Raises:
    BFMError: naming what is missing, the files expected and where to get
      them.
  """
  directory = os.fspath(directory)
  if os.path.isfile(directory):
    directory = os.path.dirname(os.path.abspath(directory))
  if not os.path.isdir(directory):
    raise BFMError(f'--bfm folder {directory} does not exist. {HOW_TO_GET}')
  model = _first_existing(os.path.join(directory, MODEL_FILE),
                          os.path.join(directory, 'Out', MODEL_FILE))
  if model is None:
    raise BFMError(_missing_message(directory, MODEL_FILE))
  folder = os.path.dirname(model)
  uv = _first_existing(os.path.join(folder, UV_FILE),
                       os.path.join(folder, INFO_FILE))
  if uv is None:
    raise BFMError(_missing_message(folder, UV_FILE) + f' (found {model}, but '
                   f'the UV coordinates are in {UV_FILE})')
  return model, uv


def _load_uv(path: str, num_vertices: int) -> np.ndarray:
  """BFM UV (n, 2), v up, from BFM_UV.mat (`UV`) or BFM_info.mat."""
  contents = _loadmat(path)
  if 'UV' in contents:
    uv = np.asarray(contents['UV'])
  elif 'model_info' in contents:
    try:
      info = _struct_fields(contents['model_info'])
    except TypeError as e:
      raise BFMError(f'{path}: `model_info` is not a struct') from e
    if 'uv_coords' not in info:
      raise BFMError(f'{path}: `model_info` has no field \'uv_coords\'; its '
                     f'fields are {sorted(info)}. {HOW_TO_GET}')
    uv = np.asarray(info['uv_coords'])
  else:
    variables = sorted(k for k in contents if not k.startswith('__'))
    raise BFMError(f'{path} holds no variable `UV` (its variables: '
                   f'{variables}). {HOW_TO_GET}')
  if uv.ndim == 2 and uv.shape[0] == 2 and uv.shape[1] != 2:
    uv = uv.T
  if uv.dtype.kind not in 'iuf' or uv.shape != (num_vertices, 2):
    raise BFMError(f'{path}: UV has shape {uv.shape} ({uv.dtype}), expected '
                   f'({num_vertices}, 2): one (u, v) per vertex of '
                   f'{MODEL_FILE}, which has {num_vertices} vertices. Are the '
                   'two files from the same model?')
  if not np.isfinite(uv).all():
    raise BFMError(f'{path}: UV has non-finite values')
  if uv.min() < -1e-3 or uv.max() > 1 + 1e-3:
    raise BFMError(f'{path}: UV coordinates span [{uv.min():.4g}, '
                   f'{uv.max():.4g}], expected [0, 1]')
  return np.clip(uv.astype(np.float64), 0.0, 1.0)


def load_bfm(directory: str | os.PathLike[str]) -> BFM:
  """Loads the BFM of a --bfm folder (see the module docstring).

  Args:
    directory: the folder with BFM.mat and BFM_UV.mat (see `find_files`).

  Returns:
    A `BFM`: tri and kpt_ind made 0-based (as face3d's `load_BFM`), tri_mouth
    appended to the triangles (face3d's `full_triangles`, which PRNet's maps
    are rasterised with), the UV converted to jaxface's convention
    (u, 1 - v).

  Raises:
    BFMError: naming the file and the missing or malformed field, and the
      files jaxface expects with where to get them.
  """
  model_path, uv_path = find_files(directory)
  fields = _model_fields(model_path)
  shape_mu = _field(fields, 'shapeMU', model_path, 'mean shape, (3n, 1)')
  shape_pc = _field(fields, 'shapePC', model_path, 'identity basis, (3n, S)')
  exp_pc = _field(fields, 'expPC', model_path, 'expression basis, (3n, E)')
  tri = _field(fields, 'tri', model_path, 'triangles, (3, F), 1-based')
  kpt = _field(fields, 'kpt_ind', model_path, '68 landmark vertices, 1-based')

  flat_mean = _column(shape_mu, 'shapeMU', model_path, None, 'mean shape')
  size = flat_mean.size
  if size % 3 or size == 0:
    raise BFMError(f'{model_path}: shapeMU has {size} values, expected 3 per '
                   'vertex (x, y, z interleaved)')
  n = size // 3
  if 'expMU' in fields:
    flat_mean = flat_mean + _column(
        _field(fields, 'expMU', model_path, 'expression mean'), 'expMU',
        model_path, size, 'expression mean')
  for name, basis in (('shapePC', shape_pc), ('expPC', exp_pc)):
    if basis.ndim != 2 or basis.shape[0] != size:
      raise BFMError(f'{model_path}: field {name!r} has shape {basis.shape}, '
                     f'expected ({size}, components) to match shapeMU '
                     f'({size} values)')

  triangles = _index_rows(tri, 'tri', model_path)
  if 'tri_mouth' in fields:
    mouth = _field(fields, 'tri_mouth', model_path, 'mouth triangles')
    if mouth.size:
      triangles = np.concatenate(
          [triangles, _index_rows(mouth, 'tri_mouth', model_path)])
  # face3d's indices are 1-based; a file whose triangles use vertex 0 was
  # saved 0-based (by a Python tool), and so were its keypoints.
  base = 1 if triangles.min() >= 1 else 0
  triangles = triangles - base
  if triangles.min() < 0 or triangles.max() >= n:
    raise BFMError(f'{model_path}: tri / tri_mouth index vertices '
                   f'{triangles.min() + base}..{triangles.max() + base}, '
                   f'outside 1..{n}')
  kpt = _column(kpt, 'kpt_ind', model_path, NUM_LANDMARKS,
                'iBUG-68 landmark vertices')
  if not np.array_equal(kpt, np.round(kpt)):
    raise BFMError(f'{model_path}: kpt_ind holds non-integer indices')
  keypoints = kpt.astype(np.int64) - base
  if keypoints.min() < 0 or keypoints.max() >= n:
    raise BFMError(f'{model_path}: kpt_ind indexes vertices '
                   f'{keypoints.min() + base}..{keypoints.max() + base}, '
                   f'outside 1..{n}')

  def ev(name, count):
    if name not in fields:
      return None
    values = np.asarray(fields[name]).reshape(-1)
    return values.astype(np.float32) if values.size == count else None

  bfm_uv = _load_uv(uv_path, n)
  uv = np.stack([bfm_uv[:, 0], 1.0 - bfm_uv[:, 1]], 1)
  return BFM(
      mean=flat_mean.reshape(n, 3).astype(np.float32),
      shape_basis=np.ascontiguousarray(shape_pc, np.float32),
      expression_basis=np.ascontiguousarray(exp_pc, np.float32),
      triangles=triangles.astype(np.int32), keypoints=keypoints,
      uv=uv.astype(np.float32),
      shape_ev=ev('shapeEV', shape_pc.shape[1]),
      expression_ev=ev('expEV', exp_pc.shape[1]),
      path=os.path.dirname(os.path.abspath(model_path)))


@functools.lru_cache(maxsize=1)
def _cached(path: str) -> BFM:
  return load_bfm(path)


def cached_bfm(directory: str | os.PathLike[str]) -> BFM:
  """`load_bfm`, once per process and folder (converters, evaluation).

  The real BFM is ~150 MB: converter workers load it once each from its
  path instead of receiving it with every task.
  """
  return _cached(os.path.abspath(os.fspath(directory)))
