"""Small fake files in the exact formats of the real face datasets.

Real BFM, 300W-LP and AFLW2000-3D files cannot ship with jaxface, so the
converter tests run on look-alikes written here with the real files' names,
variables, shapes, orientations and index bases:

- `write_bfm`: face3d's BFM.mat (struct `model`: shapeMU, shapePC, shapeEV,
  expMU, expPC, expEV, tri (3, F) 1-based, tri_mouth, kpt_ind (1, 68)
  1-based; micrometres) and BFM_UV.mat (`UV` (n, 2), v up as in 3DMMasSTN's
  file). The mesh is jaxface's procedural head on a coarse grid.
- `write_300wlp`: 300W_LP/<SET>/<SET>_<face>_<k>.{jpg,mat}, the *_Flip
  copies and landmarks/<SET>/<name>_pts.mat.
- `write_aflw2000`: AFLW2000/imageNNNNN.{jpg,mat}.

Images are 450 x 450 JPEGs of the mesh, drawn with OpenCV (painter's
algorithm, Lambert shading) at the pose in the .mat, projected as 3DDFA /
face3d do: s R(pitch, yaw, roll) v + t, then y -> h - 1 - y. This module
does not use the converters' code.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import scipy.io

from jaxface.face import model as model_lib

IMAGE_SIZE = 450
GRID = (33, 33)  # rows, cols of the fake BFM mesh (1089 vertices)
UM_PER_MM = 1000.0  # BFM units are micrometres.

# Original faces of the fake 300W-LP: (set, face, yaws of views 0, 1, ...).
# AFW_134212_1 has views on both sides; HELEN_232194_1 only turns right,
# but its mirrored copies turn left (they must not make a multiview record).
FACES_300WLP = (
    ('AFW', 'AFW_134212_1', (0.05, -0.6, 0.7, -1.1)),
    ('HELEN', 'HELEN_232194_1', (0.1, 0.5, 0.9)),
)
AFLW_IMAGES = (('image00002', 0.2), ('image00004', -0.9),
               ('image00013', 1.2))


def rotation_3ddfa(pitch: float, yaw: float, roll: float) -> np.ndarray:
  """3DDFA's R = Rx Ry Rz (face3d `angle2matrix_3ddfa`)."""
  cx, sx, cy, sy = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
  cz, sz = np.cos(roll), np.sin(roll)
  rx = np.array([[1, 0, 0], [0, cx, sx], [0, -sx, cx]])
  ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
  rz = np.array([[cz, sz, 0], [-sz, cz, 0], [0, 0, 1]])
  return rx @ ry @ rz


def write_bfm(directory: str, seed: int = 0) -> None:
  """Writes BFM.mat and BFM_UV.mat (face3d's format) into `directory`."""
  os.makedirs(directory, exist_ok=True)
  rows, cols = GRID
  head = model_lib.build_face_model(rows, cols)
  n = rows * cols
  rng = np.random.default_rng(seed)
  mean = head.mean.astype(np.float64).reshape(-1) * UM_PER_MM
  # A non-zero expression mean (3DDFA's mu_exp): part of the mean face.
  exp_mu = 0.3 * head.expression_basis[:, 1].astype(np.float64) * UM_PER_MM

  def basis(fields, count):
    pc = fields.astype(np.float64) @ rng.normal(size=(fields.shape[1], count))
    return (pc / np.linalg.norm(pc, axis=0)).astype(np.float32)

  # Landmarks on the nearest grid vertices of the head model's landmarks.
  lmk = head.landmark_uv.astype(np.float64)
  kpt = (np.round(lmk[:, 1] * (rows - 1)) * cols
         + np.round(lmk[:, 0] * (cols - 1))).astype(np.int64)
  tri = head.triangles.T.astype(np.float64) + 1  # (3, F), 1-based
  model = {
      'shapeMU': (mean - exp_mu)[:, None],
      'shapePC': basis(head.shape_basis, 199),
      'shapeEV': (1.5e5 / np.sqrt(np.arange(1, 200)))[:, None],
      'expMU': exp_mu[:, None],
      'expPC': basis(head.expression_basis, 29),
      'expEV': (1e5 / np.sqrt(np.arange(1, 30)))[:, None],
      'tri': tri[:, 4:],
      'tri_mouth': tri[:, :4],  # Split off, to be appended back.
      'kpt_ind': (kpt + 1).astype(np.float64)[None, :],
  }
  scipy.io.savemat(os.path.join(directory, 'BFM.mat'), {'model': model})
  uv = head.uv.astype(np.float64)
  # 3DMMasSTN's UV: v points up (PRNet flips it into rows).
  scipy.io.savemat(os.path.join(directory, 'BFM_UV.mat'),
                   {'UV': np.stack([uv[:, 0], 1.0 - uv[:, 1]], 1)})
  assert n == len(uv)


def load_bfm_arrays(directory: str) -> dict[str, np.ndarray]:
  """The fake BFM as plain arrays, read straight from the .mat files.

  Returns:
    {"vertices_mean": (3n,), "shapePC", "expPC", "tri": (F, 3) 0-based
    (with tri_mouth), "kpt": (68,) 0-based, "uv_bfm": (n, 2) as stored}.
  """
  m = scipy.io.loadmat(os.path.join(directory, 'BFM.mat'))['model'][0, 0]
  tri = np.concatenate([m['tri'].T, m['tri_mouth'].T]).astype(np.int64) - 1
  return {'mean': (m['shapeMU'] + m['expMU']).reshape(-1).astype(np.float64),
          'shapePC': m['shapePC'].astype(np.float64),
          'expPC': m['expPC'].astype(np.float64), 'tri': tri,
          'kpt': m['kpt_ind'].reshape(-1).astype(np.int64) - 1,
          'shapeEV': m['shapeEV'].reshape(-1),
          'expEV': m['expEV'].reshape(-1),
          'uv_bfm': scipy.io.loadmat(
              os.path.join(directory, 'BFM_UV.mat'))['UV']}


def project(bfm: dict, shape_para, exp_para, pose,
            height: int = IMAGE_SIZE) -> np.ndarray:
  """(n, 3) image points (x, y down, z towards the camera) of a face."""
  flat = (bfm['mean'] + bfm['shapePC'] @ np.reshape(shape_para, -1)
          + bfm['expPC'] @ np.reshape(exp_para, -1))
  v = flat.reshape(-1, 3)
  pose = np.reshape(pose, -1).astype(np.float64)
  cam = pose[6] * v @ rotation_3ddfa(*pose[:3]).T + pose[3:6]
  cam[:, 1] = height - 1 - cam[:, 1]
  return cam


def draw(points: np.ndarray, triangles: np.ndarray, seed: int,
         size: int = IMAGE_SIZE) -> np.ndarray:
  """uint8 (size, size, 3) RGB picture of the mesh over a noisy background."""
  rng = np.random.default_rng(seed)
  low = rng.uniform(30, 200, (6, 6, 3)).astype(np.float32)
  image = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
  p = points[triangles]  # (F, 3, 3)
  normal = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
  normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-9
  shade = 0.35 + 0.65 * np.abs(normal[:, 2])
  skin = np.array([225.0, 180.0, 150.0])
  for f in np.argsort(p[:, :, 2].mean(1), kind='stable'):  # far to near
    corners = np.round(p[f, :, :2] * 16).astype(np.int32)
    cv2.fillConvexPoly(image, corners, tuple(float(c) for c in
                                             skin * shade[f]), cv2.LINE_AA,
                       shift=4)
  return np.clip(image, 0, 255).astype(np.uint8)


def _write_jpeg(path: str, rgb: np.ndarray) -> None:
  ok = cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                   [cv2.IMWRITE_JPEG_QUALITY, 92])
  assert ok, path


def _face_params(bfm: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  shape = rng.normal(0, 0.5, 199) * bfm['shapeEV']
  exp = rng.normal(0, 0.5, 29) * bfm['expEV']
  return shape.astype(np.float32), exp.astype(np.float32)


def _pose(rng: np.random.Generator, yaw: float) -> np.ndarray:
  return np.array([rng.uniform(-0.15, 0.15), yaw, rng.uniform(-0.1, 0.1),
                   IMAGE_SIZE / 2 + rng.uniform(-12, 12),
                   IMAGE_SIZE / 2 + rng.uniform(-12, 12),
                   rng.uniform(-20, 20), rng.uniform(0.0011, 0.0013)],
                  np.float32)


def write_300wlp(root: str, bfm_dir: str, faces=FACES_300WLP) -> list[dict]:
  """Writes a fake 300W_LP folder; returns one dict per sample written.

  Each dict: folder, name, mat, jpg, pose (7,), shape (199,), exp (29,).
  """
  bfm = load_bfm_arrays(bfm_dir)
  written = []
  for index, (set_name, face, yaws) in enumerate(faces):
    shape, exp = _face_params(bfm, 100 + index)
    rng = np.random.default_rng(200 + index)
    for k, yaw in enumerate(yaws):
      name = f'{face}_{k}'
      pose = _pose(rng, yaw)
      flipped = pose.copy()
      flipped[1], flipped[2] = -pose[1], -pose[2]
      flipped[3] = IMAGE_SIZE - 1 - pose[3]
      for folder, p in ((set_name, pose), (set_name + '_Flip', flipped)):
        directory = os.path.join(root, folder)
        os.makedirs(directory, exist_ok=True)
        points = project(bfm, shape, exp, p)
        kpt = points[bfm['kpt']]
        jpg = os.path.join(directory, name + '.jpg')
        mat = os.path.join(directory, name + '.mat')
        _write_jpeg(jpg, draw(points, bfm['tri'], seed=k + 10 * index))
        scipy.io.savemat(mat, {
            'pt2d': kpt[:, :2].T.astype(np.float64),
            'roi': np.concatenate([kpt[:, :2].min(0),
                                   kpt[:, :2].max(0)])[None, :],
            'Pose_Para': p[None, :], 'Shape_Para': shape[:, None],
            'Exp_Para': exp[:, None], 'Tex_Para': np.zeros((199, 1)),
            'Color_Para': np.ones((1, 7)), 'Illum_Para': np.zeros((1, 10))})
        if folder == set_name:
          lmk_dir = os.path.join(root, 'landmarks', set_name)
          os.makedirs(lmk_dir, exist_ok=True)
          scipy.io.savemat(os.path.join(lmk_dir, name + '_pts.mat'),
                           {'pts_2d': kpt[:, :2], 'pts_3d': kpt[:, :2]})
        written.append({'folder': folder, 'name': name, 'mat': mat,
                        'jpg': jpg, 'pose': p, 'shape': shape, 'exp': exp})
  return written


def add_bad_300wlp(root: str) -> dict[str, str]:
  """Adds unusable samples; returns {relative .mat path: expected problem}.

  A garbage .jpg, a truncated .jpg, a .mat without Pose_Para, a .mat whose
  Shape_Para has the wrong shape, and an image without its .mat.
  """
  good = os.path.join(root, 'AFW', 'AFW_134212_1_0')
  fields = {k: v for k, v in scipy.io.loadmat(good + '.mat').items()
            if not k.startswith('__')}
  with open(good + '.jpg', 'rb') as f:
    jpeg = f.read()

  def put(folder, name, mat_fields, image_bytes):
    directory = os.path.join(root, folder)
    os.makedirs(directory, exist_ok=True)
    if mat_fields is not None:
      scipy.io.savemat(os.path.join(directory, name + '.mat'), mat_fields)
    if image_bytes is not None:
      with open(os.path.join(directory, name + '.jpg'), 'wb') as f:
        f.write(image_bytes)
    return os.path.join(folder, name + '.mat')

  no_pose = {k: v for k, v in fields.items() if k != 'Pose_Para'}
  bad_shape = dict(fields, Shape_Para=np.zeros((150, 1), np.float32))
  return {
      put('AFW', 'AFW_900001_1_0', fields, b'this is not a jpeg' * 20):
          'not a JPEG',
      put('AFW', 'AFW_900002_1_0', fields, jpeg[:len(jpeg) // 2]):
          'truncated JPEG',
      put('LFPW', 'LFPW_image_test_0001_0', no_pose, jpeg): 'Pose_Para',
      put('IBUG', 'IBUG_image_003_1_0', bad_shape, jpeg): 'Shape_Para',
      put('IBUG', 'IBUG_image_004_1_0', None, jpeg): 'missing .mat',
  }


def write_aflw2000(root: str, bfm_dir: str, images=AFLW_IMAGES,
                   neutral: bool = False) -> list[dict]:
  """Writes a fake AFLW2000 folder; returns one dict per image.

  `images`: (name, yaw in radians) pairs. `neutral`: every face is the
  BFM's mean face (Shape_Para and Exp_Para 0), e.g. for pose fits that
  should be exact against the mean face.

  Each dict: name, mat, jpg, pose (7,), shape, exp, pt3d (68, 3) image
  pixels.
  """
  bfm = load_bfm_arrays(bfm_dir)
  os.makedirs(root, exist_ok=True)
  written = []
  for index, (name, yaw) in enumerate(images):
    shape, exp = _face_params(bfm, 300 + index)
    if neutral:
      shape, exp = np.zeros_like(shape), np.zeros_like(exp)
    pose = _pose(np.random.default_rng(400 + index), yaw)
    points = project(bfm, shape, exp, pose)
    pt3d = points[bfm['kpt']]
    jpg, mat = (os.path.join(root, name + ext) for ext in ('.jpg', '.mat'))
    _write_jpeg(jpg, draw(points, bfm['tri'], seed=50 + index))
    scipy.io.savemat(mat, {
        'pt3d_68': pt3d.T.astype(np.float64),
        'pt2d': pt3d[::3, :2][:21].T.astype(np.float64),  # AFLW's 21 points
        'roi': np.concatenate([pt3d[:, :2].min(0), pt3d[:, :2].max(0)])[None],
        'Pose_Para': pose[None, :], 'Shape_Para': shape[:, None],
        'Exp_Para': exp[:, None], 'Tex_Para': np.zeros((199, 1)),
        'Color_Para': np.ones((1, 7)), 'Illum_Para': np.zeros((1, 10))})
    written.append({'name': name, 'mat': mat, 'jpg': jpg, 'pose': pose,
                    'shape': shape, 'exp': exp, 'pt3d': pt3d})
  return written


def points_record(record: dict, points: np.ndarray, visible: np.ndarray,
                  scheme: str, hidden_value: float = 0.0,
                  yaw: bool = True) -> dict:
  """A 2D recon record of `scheme` made from a 3D one: its image and crop,
  `points` (P, 2) where `visible` (P,) bool, `hidden_value` elsewhere, and
  its yaw unless `yaw` is False."""
  out = {'image': record['image'], 'scheme': scheme,
         'points2d': np.where(visible[:, None], points, hidden_value).astype(
             np.float32),
         'points_visible': np.asarray(visible).astype(np.uint8),
         'face_box': record['face_box'],
         'crop_transform': record['crop_transform'],
         'original_size': record['original_size'],
         'identity': record['identity'], 'source': 'test 2D'}
  if yaw:
    out['yaw'] = record['pose'][1:2]
  return out
