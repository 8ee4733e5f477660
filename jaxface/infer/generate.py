"""Generates 3D faces from a front, a left and a right photo of a face.

The first seed's pipeline end to end: the reconstruction network
(--recon-workdir, a `prnet` or `cycle` run; or --recon-model, a shipped
model; the shipped `synthetic` model when neither is given) finds the face
in each photo (the largest Haar detection, or a box from --boxes) and
reads its 68 landmarks and 5 extra points (glabella, ears, lateral head
points) off the predicted position map; the 31 geometric features
(distances and FR/LS/RS areas, `jaxface.face.features`) of the three views,
and for a run with `facegen.condition = 'landmarks'` the views' landmarks,
condition the face GAN's generator (--workdir, a `facegen` run), which
makes --num faces from noise seeds --seed, --seed + 1, ...

Files in --out:
- `features.json`: the features by name, the landmarks of each view (photo
  pixels) and the boxes;
- `face_{s}.obj`: the generated face with noise seed s: the face region of
  the canonical position map as a mesh ('uv' head), or the marching-cubes
  surface of the occupancy at probability 0.5 ('voxel' head); coordinates
  are pixels of the canonical frame ((R - 1) / 255 pixels per mm);
- `faces.png`: the three crops, then a picture of each generated face.

Files are written only inside --out: an output path that is a link is
refused (`files.output_path`) before any work.

"Left" is the view showing the face's left side (iBUG points 0-8, 36-41):
the person turned to the image right.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from jaxface import files as files_lib

VIEWS = ('front', 'left', 'right')


def add_arguments(parser: argparse.ArgumentParser) -> None:
  for view in VIEWS:
    parser.add_argument(f'--{view}', required=True, help=f'the {view} photo')
  parser.add_argument('--workdir', required=True,
                      help='workdir of a facegen training run')
  parser.add_argument('--recon-workdir', default=None,
                      help='workdir of a prnet or cycle run, for the '
                      'landmarks of the photos')
  parser.add_argument('--recon-model', default=None,
                      help='a shipped reconstruction model instead (`jaxface '
                      'models`; default without --recon-workdir: synthetic)')
  parser.add_argument('--out', required=True, help='output folder')
  parser.add_argument('--num', type=int, default=4,
                      help='faces to generate (noise seeds)')
  parser.add_argument('--seed', type=int, default=0, help='first noise seed')
  parser.add_argument('--boxes', default=None,
                      help='JSON {"photo.jpg": [[x0, y0, x1, y1]]} of face '
                      'boxes, instead of the Haar detector')


def _view_points(reconstructor, path: str, boxes) -> dict:
  """Landmarks (68, 3), extra points (5, 3), box and crop of one photo.

  The extra points are read at the extra-point UVs of the reconstruction
  network's UV layout (`reconstructor.layout`).
  """
  from jaxface.face import uv as uv_lib  # pylint: disable=g-import-not-at-top
  from jaxface.infer import detect  # pylint: disable=g-import-not-at-top
  from jaxface.infer import reconstruct  # pylint: disable=g-import-not-at-top
  image = reconstruct.read_image(path)
  if boxes is not None:
    found = detect.boxes_for(boxes, path)
    if found is None or not len(found):
      raise ValueError(f'--boxes has no box for {path}')
    kept, skipped = detect.usable_boxes(found, image.shape)
    if not kept:
      raise ValueError(f'--boxes has no usable box for {path}: '
                       + '; '.join(s['reason'] for s in skipped))
    found = found[kept]
  else:
    found = detect.detect_faces(image)
    if not len(found):
      raise ValueError(f'no face found in {path}; give its box with --boxes')
  # The largest face is the subject.
  box = max(found, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
  face = reconstructor.reconstruct(image, box[None])[0]
  extra = np.asarray(uv_lib.sample_uv(face.position_map,
                                      reconstructor.layout.extra_uv))
  crop = reconstructor.crop(image, face.crop_transform)
  return {'landmarks': face.landmarks, 'extra': extra, 'box': box,
          'crop': crop}


def _face_mesh(face: np.ndarray, head: str, size: int, resolution: int,
               face_mask: np.ndarray):
  """(vertices, triangles) of one generated face (canonical pixels);
  `face_mask` (R, R) bool: the face region of the generator's UV layout."""
  from jaxface.eval import metrics  # pylint: disable=g-import-not-at-top
  from jaxface.face import mesh_io  # pylint: disable=g-import-not-at-top
  import scipy.special  # pylint: disable=g-import-not-at-top
  if head == 'uv':
    vertices, triangles, _ = mesh_io.position_map_to_mesh(face, face_mask)
    return vertices, triangles
  probs = scipy.special.expit(face[..., 0].astype(np.float64))  # no overflow
  return metrics.occupancy_surface(probs, 0.5, resolution / size)


def run(args) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jaxface import pretrained  # pylint: disable=g-import-not-at-top
  from jaxface.data import inspect as inspect_lib  # pylint: disable=g-import-not-at-top
  from jaxface.face import features as features_lib  # pylint: disable=g-import-not-at-top
  from jaxface.face import mesh_io  # pylint: disable=g-import-not-at-top
  from jaxface.infer import detect  # pylint: disable=g-import-not-at-top
  from jaxface.infer import reconstruct  # pylint: disable=g-import-not-at-top
  from jaxface.train import facegen as facegen_lib  # pylint: disable=g-import-not-at-top
  from jaxface.train import trained as trained_lib  # pylint: disable=g-import-not-at-top
  if args.num < 1:
    raise ValueError(f'--num must be >= 1, got {args.num}')
  for view in VIEWS:
    if not os.path.isfile(getattr(args, view)):
      raise FileNotFoundError(f'--{view} {getattr(args, view)} is not a file')
  files_lib.check_output_folder(args.out, '--out')
  seeds = list(range(args.seed, args.seed + args.num))
  paths = {name: files_lib.output_path(args.out, name) for name in (
      [f'face_{s}.obj' for s in seeds] + ['faces.png', 'features.json'])}
  gan = trained_lib.load(args.workdir)
  generator, variables = trained_lib.facegen(gan)
  reconstructor = reconstruct.Reconstructor.from_trained(
      trained_lib.load_model(args.recon_workdir, args.recon_model,
                             default=pretrained.DEFAULT_MODEL,
                             flags=('--recon-workdir', '--recon-model')))
  boxes = detect.load_boxes(args.boxes) if args.boxes else None
  views = {v: _view_points(reconstructor, getattr(args, v), boxes)
           for v in VIEWS}
  lmk = [jnp.asarray(views[v]['landmarks']) for v in VIEWS]
  extra = [jnp.asarray(views[v]['extra']) for v in VIEWS]
  named = features_lib.geometric_feature_dict(lmk[0], extra[0], lmk[1],
                                              extra[1], lmk[2], extra[2])
  feats = jnp.stack([named[n] for n in features_lib.FEATURE_NAMES])[None]
  cond = facegen_lib.condition_of(feats, jnp.stack(lmk)[None],
                                  gan.config.facegen.condition)
  if not bool(jnp.all(jnp.isfinite(cond))):
    raise ValueError('the features of these photos are not finite (a face '
                     'was not found well enough); check the boxes')
  noise = jnp.stack([jax.random.normal(jax.random.key(s),
                                       (generator.noise_dim,)) for s in seeds])
  faces = np.asarray(jax.jit(generator.apply)(
      variables, jnp.repeat(cond, len(seeds), 0), noise))

  os.makedirs(args.out, exist_ok=True)
  res = gan.resolution
  face_mask = gan.layout.face_region(res)
  tiles = [views[v]['crop'] for v in VIEWS]
  written = []
  for s, face in zip(seeds, faces):
    vertices, triangles = _face_mesh(face, generator.head, generator.size,
                                     res, face_mask)
    path = paths[f'face_{s}.obj']
    mesh_io.write_obj(path, vertices, triangles)
    written.append(path)
    picture = (inspect_lib.position_map_picture(face, face_mask)
               if generator.head == 'uv'
               else facegen_lib.voxel_depth_picture(face[..., 0] > 0))
    tiles.append(picture)
  inspect_lib.write_png(paths['faces.png'],
                        inspect_lib.tile_grid([tiles], 128))
  features = {
      'features': {n: float(named[n]) for n in features_lib.FEATURE_NAMES},
      'views': {v: {'photo': getattr(args, v),
                    'box': [float(x) for x in views[v]['box']],
                    'landmarks': np.asarray(views[v]['landmarks']).tolist(),
                    'extra_points': np.asarray(views[v]['extra']).tolist()}
                for v in VIEWS},
      'seeds': seeds, 'head': generator.head,
      'generator': {'workdir': os.path.abspath(args.workdir),
                    'step': gan.step},
      'reconstruction': trained_lib.describe(reconstructor.trained)}
  files_lib.write_atomic(paths['features.json'],
                         json.dumps(features, indent=1))
  print(f'{len(written)} face(s) from {", ".join(getattr(args, v) for v in VIEWS)}:')
  for path in written:
    print(f'  {path}')
  print(f'  {paths["faces.png"]}, {paths["features.json"]}')
  return 0
