"""Reconstructs every face in photos: 68 landmarks, pose, dense mesh, depth.

Finds the faces of each photo with OpenCV's Haar cascade (or takes boxes
from --boxes JSON), crops each as PRNet does, predicts the UV position maps
in batches with the PRNet of a training workdir (--workdir) or a shipped
model (--model NAME; the shipped `synthetic` model when neither is given),
maps them back to the photo's pixels, and writes per face: landmarks and
pose (JSON), the dense face mesh with colours from the photo (OBJ), a point
cloud (PLY) and a depth image, and per photo a picture of every face's
landmarks and outline.

Files in --out, for face k of photo STEM.ext (k from 0: the Haar
detections left to right, or the photo's boxes in --boxes in their order):

- `STEM_facek.json`: `landmarks_2d` (68, 2) and `landmarks_3d` (68, 3) in
  the photo's pixels, `pose` {yaw, pitch, roll} in degrees (3DDFA's
  convention: positive yaw turns the face to the image left; null, with the
  reason in `pose_skipped`, when there is no canonical mean face in the
  model's UV layout to fit it to, see `Reconstructor`), the face
  `box`, the `crop_transform` (photo -> crop pixels), the `source` photo,
  the `model` (`trained.describe`: workdir, step, resolution; or the
  shipped model's name, folder and weights' sha256) and the names of the
  other files;
- `STEM_facek.obj`: the face region of the position map as a triangle mesh,
  one vertex per UV texel, with vertex colours sampled from the photo;
- `STEM_facek.ply`: the same vertices and colours as a point cloud;
- `STEM_facek_depth.png`: 16-bit depth at the photo's size, z-buffered over
  the mesh: 0 off the face, v = 1 + round(65534 (z - z_min) / (z_max -
  z_min)) on it, so brighter is nearer; the JSON's `depth_png` holds z_min
  and z_max;
- `STEM_faces.png`: the photo with every face's box, mesh outline and
  landmarks drawn;
- `summary.json`: the photos read, their faces and files, the faces
  skipped (`skipped_faces` per photo, counted in `faces_skipped`) and the
  inputs skipped, each with the reason.

A face whose box is too small or lies mostly outside the photo
(`detect.box_problem`) is skipped: no files are written for it. Files are
written only inside --out: an output path that is a link is refused
(`files.output_path`).

Coordinates are the photo's pixels: x right, y down, z towards the viewer
in the same pixel units, with an arbitrary offset (the map's minimum z is
about 0). Meshes are written y up for viewers (`mesh_io`). The exit status
is 0 when at least one photo was read, 1 when none could be.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np

from jaxface import files as files_lib
from jaxface.data import padding
from jaxface.data import records


@dataclasses.dataclass
class FaceResult:
  """One reconstructed face, in the photo's pixels.

  Attributes:
    box: (4,) float64 face box [x0, y0, x1, y1].
    crop_transform: (3, 3) float64 similarity, photo -> crop pixels.
    position_map: (R, R, 3) float32 UV position map in photo pixels (x
      right, y down, z towards the viewer, scaled like x and y).
    landmarks: (68, 3) float32 iBUG landmarks, same frame.
    pose: {'yaw', 'pitch', 'roll'} in degrees (3DDFA), or None when not
      estimated (no canonical mean face in the model's UV layout).
  """
  box: np.ndarray
  crop_transform: np.ndarray
  position_map: np.ndarray
  landmarks: np.ndarray
  pose: dict[str, float] | None


def crop_to_photo(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Maps (..., 3) crop-pixel points back to the photo's pixels.

  x, y go through the inverse of the similarity `transform` (photo ->
  crop); z is divided by its scale, the inverse of `render.apply_crop`.
  """
  transform = np.asarray(transform, np.float64)
  points = np.asarray(points, np.float64)
  inverse = np.linalg.inv(transform)
  out = np.empty_like(points)
  out[..., :2] = points[..., :2] @ inverse[:2, :2].T + inverse[:2, 2]
  out[..., 2] = points[..., 2] / np.hypot(transform[0, 0], transform[1, 0])
  return out


class Reconstructor:
  """A PRNet predicting the faces of photos in batches.

  Batches are zero-padded to a power of two (at most `batch_size`), so a
  photo with one face costs one forward pass of one crop and the jitted
  network compiles at most log2(batch_size) + 1 times. Make one from a
  training workdir with `from_workdir`.

  The network's position maps are in a UV layout (`TrainedModel.layout`):
  the landmarks are read at its landmark UVs, the mesh is its face region,
  and the pose is the rotation fitted between the map and a canonical mean
  face in that layout: the procedural face model's mean face
  (`metrics.canonical_reference(R)`) for the procedural layout, the
  `canonical` map given for others (e.g. `metrics.canonical_reference(R,
  bfm_dir)` for the BFM's); without one the pose is not estimated (None).
  `from_trained` wraps a workdir's or a shipped model's `TrainedModel`.

  Attributes:
    resolution: side of the crops and position maps (pixels).
    batch_size: most crops per forward pass.
    layout: the UV layout of the network's position maps.
    face_mask: (R, R) bool UV texels of the face region (the mesh).
    estimates_pose: whether faces get a pose (a canonical face is known).
    trained: the `TrainedModel` (`from_trained`, `from_workdir`), else
      None.
  """

  def __init__(self, module, variables, resolution: int,
               batch_size: int = 8, layout=None, canonical=None):
    """Wraps `module.apply(variables, images (B, R, R, 3) in [0, 1])`.

    Args:
      module, variables: the network and its variables.
      resolution: side R of its crops and maps (pixels).
      batch_size: most crops per forward pass.
      layout: the `layout.UVLayout` of its maps; None: the procedural one.
      canonical: (R, R, 3) canonical frontal mean face in `layout` for the
        pose fit (texels off its mesh all 0); None: the procedural mean face
        for the procedural layout, no pose for other layouts.

    Raises:
      ValueError: a bad batch size or canonical map.
    """
    from jaxface.eval import metrics  # pylint: disable=g-import-not-at-top
    from jaxface.face import layout as layout_lib  # pylint: disable=g-import-not-at-top
    from jaxface.models import prnet  # pylint: disable=g-import-not-at-top
    if batch_size < 1:
      raise ValueError(f'batch size must be >= 1, got {batch_size}')
    self.resolution = int(resolution)
    self.batch_size = int(batch_size)
    self.trained = None
    self._variables = variables
    self.layout = layout_lib.PROCEDURAL if layout is None else layout
    self.face_mask = self.layout.face_region(self.resolution)
    if canonical is None and self.layout.is_procedural:
      canonical = metrics.canonical_reference(self.resolution)
    self._canonical = self._fit_mask = None
    if canonical is not None:
      canonical = np.asarray(canonical, np.float64)
      self._fit_mask = metrics.pose_fit_texels(self.face_mask, canonical)
      self._canonical = canonical[self._fit_mask]
    landmark_uv = np.asarray(self.layout.landmark_uv)
    self._forward = lambda variables, crops: prnet.predict(
        module, variables, records.to_unit_float(crops), landmark_uv)

  @property
  def estimates_pose(self) -> bool:
    """Whether faces get a pose (a canonical face in the layout is known)."""
    return self._canonical is not None

  @classmethod
  def from_workdir(cls, workdir: str, batch_size: int = 8,
                   step: int | None = None,
                   canonical=None) -> 'Reconstructor':
    """The PRNet of a `prnet` or `cycle` training workdir's checkpoint
    (the last, or `step`'s), in the UV layout it was trained in;
    `canonical` as in the constructor.

    Raises:
      FileNotFoundError: not a workdir, or no such checkpoint.
      ValueError: the workdir trained another task.
    """
    from jaxface.train import trained as trained_lib  # pylint: disable=g-import-not-at-top
    return cls.from_trained(trained_lib.load(workdir, step), batch_size,
                            canonical)

  @classmethod
  def from_trained(cls, trained, batch_size: int = 8,
                   canonical=None) -> 'Reconstructor':
    """The PRNet of a `TrainedModel` (a workdir's, or a shipped model's
    from `trained.load_pretrained`), in its UV layout; `canonical` as in
    the constructor.

    Raises:
      ValueError: not a reconstruction network (prnet or cycle).
    """
    from jaxface.train import trained as trained_lib  # pylint: disable=g-import-not-at-top
    module, variables = trained_lib.prnet(trained)
    out = cls(module, variables, trained.resolution, batch_size,
              trained.layout, canonical)
    out.trained = trained
    return out

  def _padded_size(self, count: int) -> int:
    return min(self.batch_size, 1 << max(0, count - 1).bit_length())

  def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position maps and landmarks of (N, R, R, 3) uint8 RGB crops.

    Returns:
      (N, R, R, 3) float32 position maps and (N, 68, 3) float32 landmarks,
      in crop pixels.
    """
    crops = np.asarray(crops, np.uint8)
    maps, landmarks = [], []
    for start in range(0, len(crops), self.batch_size):
      chunk = crops[start:start + self.batch_size]
      padded = padding.pad_batch(chunk, self._padded_size(len(chunk)))
      out_maps, out_landmarks = self._forward(self._variables, padded)
      maps.append(np.asarray(out_maps)[:len(chunk)])
      landmarks.append(np.asarray(out_landmarks)[:len(chunk)])
    r = self.resolution
    if not maps:
      return np.zeros((0, r, r, 3), np.float32), np.zeros((0, 68, 3),
                                                          np.float32)
    return np.concatenate(maps), np.concatenate(landmarks)

  def crop(self, image_rgb: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """The (R, R, 3) uint8 crop of a photo (bilinear, black outside)."""
    from jaxface.face import render  # pylint: disable=g-import-not-at-top
    return render.crop_image(image_rgb, transform, self.resolution)

  def reconstruct(self, image_rgb: np.ndarray, boxes) -> list[FaceResult]:
    """Reconstructs the faces in `boxes` (N, 4) of an (H, W, 3) uint8 photo."""
    from jaxface.eval import metrics  # pylint: disable=g-import-not-at-top
    from jaxface.infer import detect  # pylint: disable=g-import-not-at-top
    image_rgb = detect.check_image(image_rgb)
    boxes = detect.check_boxes(boxes, 'boxes')
    transforms = [detect.box_to_crop(b, self.resolution) for b in boxes]
    r = self.resolution
    crops = np.zeros((len(boxes), r, r, 3), np.uint8)
    for k, transform in enumerate(transforms):
      crops[k] = self.crop(image_rgb, transform)
    maps, landmarks = self.predict(crops)
    faces = []
    for box, transform, pmap, lmk in zip(boxes, transforms, maps, landmarks):
      pmap = crop_to_photo(transform, pmap).astype(np.float32)
      pose = None
      if self.estimates_pose:
        fit = metrics.estimate_pose(pmap[self._fit_mask], self._canonical)
        pose = {a: fit[a] for a in ('yaw', 'pitch', 'roll')}
      faces.append(FaceResult(
          box=box, crop_transform=transform, position_map=pmap,
          landmarks=crop_to_photo(transform, lmk).astype(np.float32),
          pose=pose))
    return faces


# ---------------------------------------------------------------- output ----


def _outline(mask: np.ndarray) -> np.ndarray:
  """(K, 2) texel (row, col) of the outer contour of a UV mask, in order."""
  import cv2  # pylint: disable=g-import-not-at-top
  contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                 cv2.CHAIN_APPROX_NONE)
  longest = max(contours, key=len).reshape(-1, 2)
  return longest[:, ::-1]


def depth_image(vertices: np.ndarray, triangles: np.ndarray, height: int,
                width: int) -> tuple[np.ndarray, float, float]:
  """Z-buffered 16-bit depth of a mesh in photo pixels (see the module doc).

  Returns:
    (H, W) uint16 image, z_min, z_max (photo pixels).
  """
  from jaxface.face import raster  # pylint: disable=g-import-not-at-top
  r = raster.rasterize(vertices[:, :2], vertices[:, 2], triangles, height,
                       width)
  out = np.zeros(height * width, np.uint16)
  z_min, z_max = float(vertices[:, 2].min()), float(vertices[:, 2].max())
  scaled = (r.depth - z_min) / max(z_max - z_min, 1e-6)
  out[r.pixels] = 1 + np.round(65534 * np.clip(scaled, 0, 1)).astype(np.uint16)
  return out.reshape(height, width), z_min, z_max


def write_face(out_dir: str, name: str, image_rgb: np.ndarray,
               face: FaceResult, face_mask: np.ndarray,
               info: dict) -> dict:
  """Writes one face's JSON, OBJ, PLY and depth PNG as `out_dir/name*`.

  Args:
    out_dir: output folder.
    name: file stem, `{photo stem}_face{k}`.
    image_rgb: (H, W, 3) uint8 photo (vertex colours).
    face: the face.
    face_mask: (R, R) bool UV texels of the mesh.
    info: extra JSON fields (source, model, detector).

  Returns:
    The JSON written, as a dict.

  Raises:
    ValueError: one of its paths in `out_dir` is a link.
  """
  from jaxface.data import inspect  # pylint: disable=g-import-not-at-top
  from jaxface.face import mesh_io  # pylint: disable=g-import-not-at-top
  vertices, triangles, colors = mesh_io.position_map_to_mesh(
      face.position_map, face_mask, image_rgb)
  files = {k: f'{name}{suffix}' for k, suffix in (
      ('json', '.json'), ('obj', '.obj'), ('ply', '.ply'),
      ('depth', '_depth.png'))}
  paths = {k: files_lib.output_path(out_dir, v) for k, v in files.items()}
  mesh_io.write_obj(paths['obj'], vertices, triangles, colors)
  mesh_io.write_ply(paths['ply'], vertices, np.zeros((0, 3), np.int32),
                    colors)
  depth, z_min, z_max = depth_image(vertices, triangles, *image_rgb.shape[:2])
  inspect.write_png(paths['depth'], depth)
  record = dict(info, **{
      'frame': 'photo pixels: x right, y down, z towards the viewer; the '
               'OBJ and PLY store (x, -y, z)',
      'landmarks_2d': face.landmarks[:, :2].tolist(),
      'landmarks_3d': face.landmarks.tolist(),
      'pose': face.pose,
      **({} if face.pose is not None else {'pose_skipped': (
          'no canonical mean face in the model\'s UV layout to fit the pose '
          'to (give Reconstructor a canonical map, e.g. '
          'metrics.canonical_reference(R, bfm_dir))')}),
      'box': face.box.tolist(),
      'crop_transform': face.crop_transform.tolist(),
      'vertices': int(len(vertices)),
      'depth_png': {'z_min': z_min, 'z_max': z_max,
                    'value': '0 off the face, else 1 + round(65534 (z - '
                             'z_min) / (z_max - z_min))'},
      'files': files,
  })
  files_lib.write_atomic(paths['json'], json.dumps(record, indent=1))
  return record


def draw_faces(image_rgb: np.ndarray, faces: list[FaceResult],
               face_mask: np.ndarray) -> np.ndarray:
  """The photo with each face's box (blue), mesh outline (yellow) and
  landmarks (green) drawn, (H, W, 3) uint8."""
  import cv2  # pylint: disable=g-import-not-at-top
  from jaxface.data import inspect  # pylint: disable=g-import-not-at-top
  out = np.ascontiguousarray(image_rgb).copy()
  thick = max(1, round(max(out.shape[:2]) / 500))
  outline = _outline(face_mask)
  for face in faces:
    x0, y0, x1, y1 = _drawable(face.box, out.shape)
    cv2.rectangle(out, (x0, y0), (x1, y1), (0, 128, 255), thick)
    ring = _drawable(face.position_map[outline[:, 0], outline[:, 1], :2],
                     out.shape)
    cv2.polylines(out, [ring], True, (255, 230, 0), thick, cv2.LINE_AA)
    out = inspect.draw_landmarks(
        out, _drawable(face.landmarks[:, :2], out.shape))
  return out


def _drawable(points, shape) -> np.ndarray:
  """Pixel coordinates as int32 for OpenCV, which fails beyond int32:
  rounded and clipped to [-4 S, 4 S] (S: the longer side of the (H, W, ...)
  image `shape`), NaN to -4 S."""
  limit = 4 * max(shape[:2])
  points = np.nan_to_num(np.asarray(points, np.float64), nan=-limit,
                         posinf=limit, neginf=-limit)
  return np.round(np.clip(points, -limit, limit)).astype(np.int32)


# ------------------------------------------------------------------- CLI ----


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('images', nargs='+',
                      help='photos, and folders of photos (not recursive)')
  parser.add_argument('--workdir', default=None,
                      help='workdir of a `jaxface train` run (prnet or cycle)')
  parser.add_argument('--model', default=None,
                      help='a shipped model\'s name (`jaxface models` lists '
                      'them; default without --workdir: synthetic)')
  parser.add_argument('--out', required=True, help='output folder')
  parser.add_argument('--boxes', default=None,
                      help='JSON {"photo.jpg": [[x0, y0, x1, y1], ...]} of '
                      'face boxes (by file name or path), instead of the '
                      'Haar detector')
  parser.add_argument('--batch-size', type=int, default=8,
                      help='faces per forward pass')
  parser.add_argument('--step', type=int, default=None,
                      help='checkpoint step of --workdir (default: the last)')
  parser.add_argument('--flip-average', default=None,
                      action=argparse.BooleanOptionalAction,
                      help='average each prediction with the mirror image\'s '
                      '(default: as the model was configured, '
                      'model.flip_average)')
  parser.add_argument('--canonical', default=None,
                      help='a BFM folder or an (R, R, 3) .npy canonical mean '
                      'face for the pose (needed by models trained on BFM-'
                      'layout data; the procedural layout has its own)')


def list_inputs(paths: list[str]) -> tuple[list[str], list[dict]]:
  """Files to read (a folder's files, sorted, hidden ones left out), and
  the paths skipped with a reason."""
  files, skipped = [], []
  for path in paths:
    if os.path.isdir(path):
      files += [os.path.join(path, n) for n in sorted(os.listdir(path))
                if not n.startswith('.') and
                os.path.isfile(os.path.join(path, n))]
    elif os.path.isfile(path):
      files.append(path)
    else:
      skipped.append({'path': path, 'reason': 'no such file or folder'})
  return files, skipped


def read_image(path: str) -> np.ndarray:
  """(H, W, 3) uint8 RGB; ValueError when it is not an image OpenCV reads."""
  import cv2  # pylint: disable=g-import-not-at-top
  data = np.fromfile(path, np.uint8)
  if not data.size:
    raise ValueError('an empty file')
  image = cv2.imdecode(data, cv2.IMREAD_COLOR)
  if image is None:
    raise ValueError('OpenCV cannot decode it')
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _unique(stem: str, used: set[str]) -> str:
  name, k = stem, 1
  while name in used:
    k += 1
    name = f'{stem}_{k}'
  used.add(name)
  return name


def run(args) -> int:
  """The `jaxface reconstruct` command; returns the exit status."""
  from jaxface.data import inspect  # pylint: disable=g-import-not-at-top
  from jaxface.infer import detect  # pylint: disable=g-import-not-at-top
  if args.batch_size < 1:
    raise ValueError(f'--batch-size must be >= 1, got {args.batch_size}')
  files_lib.check_output_folder(args.out, '--out')
  boxes = detect.load_boxes(args.boxes) if args.boxes else None
  files, skipped = list_inputs(args.images)
  for s in skipped:
    print(f'skipping {s["path"]}: {s["reason"]}')
  from jaxface import pretrained  # pylint: disable=g-import-not-at-top
  from jaxface.eval import metrics  # pylint: disable=g-import-not-at-top
  from jaxface.train import trained as trained_lib  # pylint: disable=g-import-not-at-top
  trained = trained_lib.load_model(args.workdir, args.model, args.step,
                                   default=pretrained.DEFAULT_MODEL,
                                   flip_average=args.flip_average)
  canonical = metrics.load_canonical(args.canonical, trained.resolution)
  model = Reconstructor.from_trained(trained, args.batch_size, canonical)
  print(f'using the shipped model {trained.pretrained!r} ({trained.workdir})'
        if trained.pretrained else
        f'using {trained.workdir} (step {trained.step})')
  os.makedirs(args.out, exist_ok=True)
  info = {'model': trained_lib.describe(trained),
          'detector': f'boxes from {args.boxes}' if boxes is not None
                      else 'haar'}
  photos, used = [], set()
  for index, path in enumerate(files):
    try:
      image = read_image(path)
    except (ValueError, OSError) as e:
      print(f'skipping {path}: not an image ({e})')
      skipped.append({'path': path, 'reason': f'not an image ({e})'})
      continue
    start = time.perf_counter()
    face_boxes = (detect.detect_faces(image) if boxes is None else
                  detect.boxes_for(boxes, path))
    listed = face_boxes is not None
    if not listed:
      face_boxes = np.zeros((0, 4))
    kept, skipped_faces = detect.usable_boxes(face_boxes, image.shape)
    for s in skipped_faces:
      print(f'{path}: skipping face {s["face"]}: {s["reason"]}')
    faces = model.reconstruct(image, face_boxes[kept])
    stem = _unique(os.path.splitext(os.path.basename(path))[0], used)
    entry = {'path': path, 'size': [image.shape[1], image.shape[0]],
             'faces': len(faces), 'skipped_faces': skipped_faces,
             'files': []}
    for k, face in zip(kept, faces):
      record = write_face(args.out, f'{stem}_face{k}', image, face,
                          model.face_mask, dict(info, source=path, face=k))
      entry['files'] += list(record['files'].values())
    picture = f'{stem}_faces.png'
    inspect.write_png(files_lib.output_path(args.out, picture),
                      draw_faces(image, faces, model.face_mask))
    entry['files'].append(picture)
    photos.append(entry)
    where = f'[{index + 1}/{len(files)}] {path}'
    if faces:
      print(f'{where}: {len(faces)} face(s) in '
            f'{time.perf_counter() - start:.2f} s')
    elif not skipped_faces:
      print(f'{where}: no face found' + (
          '' if listed else f' (no boxes for it in {args.boxes})'))
  summary = dict(info, photos=photos, skipped=skipped,
                 faces=sum(p['faces'] for p in photos),
                 faces_skipped=sum(len(p['skipped_faces']) for p in photos))
  files_lib.write_atomic(files_lib.output_path(args.out, 'summary.json'),
                         json.dumps(summary, indent=1))
  print(f'{len(photos)} photo(s), {summary["faces"]} face(s) '
        f'({summary["faces_skipped"]} skipped), {len(skipped)} input(s) '
        f'skipped; wrote {args.out}')
  if not photos:
    print('nothing could be read')
    return 1
  return 0
