"""AFLW-21 development measurement: a trained PRNet on real face crops.

  python -m experiments.benchmarks.aflw21_eval --workdir runs/prnet
  python -m experiments.benchmarks.aflw21_eval --model synthetic --recrop
      [--data ../shared/data/aflw21] [--limit 300] [--recrop]
      [--batch-size 16]

Measures the PRNet of a training workdir on the held-out faces of AFLW-21
(`data_pipelines.aflw21`: real 120 x 120 crops with AFLW's 21 hand-marked
2D points; the folder is not part of jaxface and must not be copied into
it). Prints one JSON line.

- Split: the faces whose file name hashes into the last 20 %
  (`aflw21.held_out`: SHA-256 of the name), in names.txt order; `--limit N`
  takes the first N of them.
- Crops, reported side by side with `--recrop`:
  - `resize`: the 120 x 120 crop resized to the model's R x R
    (`recon_eval.resize_transform`, `recon_eval.warp_image`). 3DDFA's crops
    are tighter than jaxface's PRNet crop (1.5 x the landmarks' box), so the
    face fills more of the image than in training;
  - `recrop`: PRNet's crop (`render.prnet_crop`) around the box of the
    visible points, padded with black where it leaves the 120 x 120 crop.
    The 21 points' box is smaller than the 68 landmarks' box that training
    crops around (no jaw contour), so faces come out somewhat larger than
    in training.
- Points: the 68 landmarks and the extra points read off the predicted
  maps, turned into AFLW's 21 (`schemes.AFLW21`; the ear lobes only for
  layouts with ears), mapped back to the 120 x 120 crop.
- NME (3DDFA's AFLW protocol, `metrics.nme_visible`): mean error over the
  visible points that the model reads / sqrt(w h) of the visible true
  points' box (3DDFA divides by the box of its fitted 68 landmarks, which
  AFLW-21 does not have: that box is larger, so 3DDFA's figures are
  smaller); by |yaw| bin (0-30, 30-60, 60-90 degrees, beyond 90 in the
  last), the mean of the bins and the plain mean; the same without the ear
  lobes (`nme_no_ears`: the 19 points models of every UV layout read, for
  comparisons across layouts); and per point (the mean normalised error of
  each of the 21 points where visible).

JSON keys: model (workdir, step, resolution, uv_layout), data, split,
images, points_read (21 bools), resize / recrop ({nme, nme_no_ears: by
bin, per_point, unusable: images with no usable points}), seconds (load,
crops, predict, total) and images_per_second (crops + predict).

Time on 2 CPU cores, compilation included: the quickstart's quarter-width
64 x 64 PRNet measures about 300 crops a second (all 3,784 held-out faces,
both crops, in 26 s); a full-width 256 x 256 PRNet about 9 a second, so
`--limit 500 --recrop` takes about 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from data_pipelines import aflw21
from jaxface.eval import metrics
from jaxface.eval import recon_eval
from jaxface.face import render
from jaxface.face import schemes
from jaxface.face import uv as uv_lib
from jaxface.infer import reconstruct
from jaxface.train import trained as trained_lib

MODES = ('resize', 'recrop')
# The AFLW-21 indices of the ear lobes.
EAR_POINTS = tuple(p for p, source in enumerate(schemes.AFLW21.sources)
                   if isinstance(source, str) and source.startswith('ear_'))


def load_model(workdir: str | None, batch_size: int = 16,
               name: str | None = None
               ) -> tuple[reconstruct.Reconstructor, dict]:
  """The network to measure and its description: a training workdir's last
  checkpoint, or a shipped model by `name`.

  Returns:
    (a `reconstruct.Reconstructor`, `trained.describe`'s dict plus
    'uv_layout').
  """
  trained = trained_lib.load_model(workdir, name)
  module, variables = trained_lib.prnet(trained)
  model = reconstruct.Reconstructor(module, variables, trained.resolution,
                                    batch_size, trained.layout)
  return model, {**trained_lib.describe(trained),
                 'uv_layout': trained.layout.name}


def crop_transform(points: np.ndarray, mode: str, resolution: int,
                   source: int = aflw21.CROP_SIZE) -> np.ndarray | None:
  """(3, 3) similarity from the source crop's pixels to the model's R x R
  crop, for one face; None when `recrop` has no box (fewer than 2 visible
  points, or a box without area).

  Args:
    points: (21, 2) true points, NaN where not visible (`recrop` crops
      around the visible ones).
    mode: 'resize' (the whole source crop) or 'recrop' (PRNet's crop).
    resolution: the model's R.
    source: side of the source crop.
  """
  if mode == 'resize':
    return recon_eval.resize_transform(source, resolution)
  if mode != 'recrop':
    raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
  seen = points[np.all(np.isfinite(points), axis=-1)]
  if len(seen) < 2 or np.any(np.ptp(seen, axis=0) <= 0):
    return None
  transform, _ = render.prnet_crop(seen, resolution)
  return transform


def predict_points(model: reconstruct.Reconstructor, crops: np.ndarray,
                   readable: np.ndarray) -> np.ndarray:
  """(B, R, R, 3) uint8 crops -> (B, 21, 2) AFLW points in crop pixels
  (NaN where not `readable`)."""
  maps, landmarks = model.predict(crops)
  extra = np.asarray(uv_lib.sample_uv(maps, model.layout.extra_uv))
  points = schemes.AFLW21.read(landmarks, extra, readable)
  return points[..., :2]


def _to_source(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
  """(P, 2) crop points back to the source crop through the inverse of the
  similarity `transform` (NaN stays NaN)."""
  inverse = np.linalg.inv(transform)
  return points @ inverse[:2, :2].T + inverse[:2, 2]


def measure(data: aflw21.AFLW21, indices: np.ndarray,
            model: reconstruct.Reconstructor, modes=MODES,
            batch_size: int = 16) -> tuple[dict, dict]:
  """Predicted AFLW points of faces `indices`, in the source crops' pixels.

  Returns:
    ({mode: (N, 21, 2) points, NaN where not read or the face has no
    crop}, {'crops': seconds, 'predict': seconds}).
  """
  r = model.resolution
  readable = schemes.AFLW21.readable(model.layout)
  points = {mode: np.full((len(indices), schemes.AFLW21.num_points, 2),
                          np.nan) for mode in modes}
  seconds = {'crops': 0.0, 'predict': 0.0}
  for start in range(0, len(indices), batch_size):
    chunk = indices[start:start + batch_size]
    t0 = time.perf_counter()
    images = [data.image(int(i)) for i in chunk]
    jobs = {}
    for mode in modes:
      transforms = [crop_transform(p, mode, r) for p in data.points[chunk]]
      usable = [k for k, t in enumerate(transforms) if t is not None]
      crops = np.stack([recon_eval.warp_image(images[k], transforms[k], r)
                        for k in usable]) if usable else None
      jobs[mode] = (usable, transforms, crops)
    seconds['crops'] += time.perf_counter() - t0
    t0 = time.perf_counter()
    for mode, (usable, transforms, crops) in jobs.items():
      if not usable:
        continue
      pred = predict_points(model, crops, readable)
      for j, k in enumerate(usable):
        points[mode][start + k] = _to_source(transforms[k], pred[j])
    seconds['predict'] += time.perf_counter() - t0
  return points, seconds


def summarise(pred: np.ndarray, true: np.ndarray, yaw_deg: np.ndarray
              ) -> dict:
  """NMEs of predicted points against the truth, both (N, 21, 2).

  Returns:
    {'nme': `metrics.binned_summary` of the images with an NME by |yaw|
    bin; 'nme_no_ears': the same without the two ear lobes (the 19 points
    that models of every UV layout read); 'per_point': (21,) mean
    normalised error of each point where measured (None: never);
    'unusable': images without an NME}.
  """
  errors = metrics.visible_point_errors(pred, true)
  nme = metrics.nme_visible(pred, true)
  ok = np.isfinite(nme)
  no_ears = np.array(pred, copy=True)
  no_ears[:, list(EAR_POINTS)] = np.nan
  nme_no_ears = metrics.nme_visible(no_ears, true)
  ok_no_ears = np.isfinite(nme_no_ears)
  counted = np.isfinite(errors)
  per_point = [float(errors[counted[:, p], p].mean())
               if counted[:, p].any() else None
               for p in range(errors.shape[1])]
  return {'nme': metrics.binned_summary(nme[ok], yaw_deg[ok]),
          'nme_no_ears': metrics.binned_summary(nme_no_ears[ok_no_ears],
                                                yaw_deg[ok_no_ears]),
          'per_point': per_point, 'unusable': int((~ok).sum())}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir',
                      help='a `jaxface train` workdir of a prnet or cycle run')
  parser.add_argument('--model',
                      help='a shipped model\'s name (e.g. synthetic)')
  parser.add_argument('--data', default=aflw21.DEFAULT_DIR,
                      help='the AFLW-21 folder (default: %(default)s)')
  parser.add_argument('--limit', type=int, default=None,
                      help='measure the first N held-out faces only')
  parser.add_argument('--recrop', action='store_true',
                      help='also measure PRNet crops around the visible '
                      'points, next to the resized crops')
  parser.add_argument('--batch-size', type=int, default=16)
  args = parser.parse_args(argv)
  if args.limit is not None and args.limit < 1:
    parser.error(f'--limit must be >= 1, got {args.limit}')
  if args.batch_size < 1:
    parser.error(f'--batch-size must be >= 1, got {args.batch_size}')
  start = time.perf_counter()
  modes = MODES if args.recrop else MODES[:1]
  try:
    data = aflw21.load(args.data)
    model, description = load_model(args.workdir, args.batch_size,
                                    args.model)
    indices = aflw21.held_out_indices(data.names)
    if args.limit is not None:
      indices = indices[:args.limit]
    load_s = time.perf_counter() - start
    points, seconds = measure(data, indices, model, modes, args.batch_size)
  except (OSError, ValueError) as e:  # Missing files, bad arrays or images.
    print(f'aflw21_eval: error: {e}', file=sys.stderr)
    return 2
  yaw = data.yaw_deg[indices]
  work = seconds['crops'] + seconds['predict']
  out = {
      'benchmark': 'aflw21', 'model': description,
      'data': os.path.abspath(data.root),
      'split': f'held out: sha256(file name) in the last '
               f'{aflw21.HELD_OUT_FRACTION:.0%}, first {len(indices)} in '
               'names.txt order',
      'images': int(len(indices)),
      'points_read': schemes.AFLW21.readable(model.layout).tolist(),
      **{mode: summarise(points[mode], data.points[indices], yaw)
         for mode in modes},
      'seconds': {'load': round(load_s, 2),
                  'crops': round(seconds['crops'], 2),
                  'predict': round(seconds['predict'], 2),
                  'total': round(time.perf_counter() - start, 2)},
      'images_per_second': round(len(indices) * len(modes) / work, 1)
                           if work > 0 else None}
  print(json.dumps(recon_eval.json_safe(out)))
  return 0


if __name__ == '__main__':
  sys.exit(main())
