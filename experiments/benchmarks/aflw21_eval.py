"""AFLW-21 development measurement: a trained PRNet on real face crops.

  python -m experiments.benchmarks.aflw21_eval --workdir runs/prnet
  python -m experiments.benchmarks.aflw21_eval --model synthetic --recrop
      [--data ../shared/data/aflw21] [--limit 300] [--recrop]
      [--batch-size 16] [--flip-average | --no-flip-average]

Measures the PRNet of a training workdir (or a shipped model) on the
held-out faces of AFLW-21 (`data_pipelines.aflw21`: real 120 x 120 crops
with AFLW's 21 hand-marked 2D points; the folder is not part of jaxface and
must not be copied into it). Prints one JSON line.

This is a thin wrapper around the one implementation, the two commands

  jaxface data convert-landmarks2d --format aflw21 --root DATA --out D \
      --resolution R [--crop given|box]
  jaxface eval --model NAME|--workdir W --data D --split test

run on the held-out faces only, at the model's resolution R, into a
temporary folder that is removed afterwards:

- Split: the faces whose file name hashes into the last 20 %
  (`aflw21.held_out`: SHA-256 of the name), in names.txt order; `--limit N`
  takes the first N of them. (The converter's own `--limit N` counts the
  first N faces of names.txt before the split, about 0.2 N of them held
  out; this script hands the converter a folder of the held-out faces
  only, `held_out_folder`, so its `--limit` keeps its meaning.)
- Crops (`MODES`: this script's name -> the converter's `--crop`),
  reported side by side with `--recrop`:
  - `resize` (`given`): the 120 x 120 crop resized to the model's R x R
    (scale (R - 1) / 119, antialiased). 3DDFA's crops are tighter than
    jaxface's PRNet crop (1.5 x the landmarks' box), so the face fills more
    of the image than in training;
  - `recrop` (`box`): PRNet's crop (`render.prnet_crop`) around the box of
    the visible points, padded with black where it leaves the 120 x 120
    crop. The 21 points' box is smaller than the 68 landmarks' box that
    training crops around (no jaw contour), so faces come out somewhat
    larger than in training.
  The converter stores the crops as JPEG (quality 95), as any 2D record.
- Points: read off the predicted position map at the scheme's UVs in the
  model's layout (`schemes.AFLW21.uv`: an eye centre is the map's point at
  the mean UV of the six eye points; the ear lobes only for layouts with
  ears), in the records' crop pixels, against the records' points in the
  same pixels (`recon_eval.evaluate_reconstruction` on 2D records).
- NME (3DDFA's AFLW protocol, `metrics.points_summary`): mean error over
  the visible points that the model reads / sqrt(w h) of the visible true
  points' box (3DDFA divides by the box of its fitted 68 landmarks, which
  AFLW-21 does not have: that box is larger, so 3DDFA's figures are
  smaller); by |yaw| bin (0-30, 30-60, 60-90 degrees, beyond 90 in the
  last), the mean of the bins and the plain mean; the same without the ear
  lobes (`nme_no_ears`: the 19 points models of every UV layout read, for
  comparisons across layouts); and per point (the mean normalised error of
  each of the 21 points where visible). Both crops are similarities
  without rotation of the 120 x 120 crop, so the NME is the one measured
  in its pixels.

JSON keys: model (workdir or pretrained, step, resolution, uv_layout),
data, split, images (held-out faces measured), points_read (21 bools),
resize / recrop ({nme, nme_no_ears: by bin, per_point, unusable: images
with no NME, i.e. records without a usable point plus the faces the
converter skipped: fewer than 3 visible points or an unreadable image;
skipped: those faces, {'item', 'reason'}}), seconds (load, convert,
evaluate, total) and images_per_second (faces x crops / (convert +
evaluate)).

Time on 2 CPU cores, compilation included: the shipped 96 x 96 `synthetic`
model measures all 3,784 held-out faces in both crops in 36 s of wall time
(3.5 s converting, 30 s evaluating; with a training run sharing the
cores), as the former implementation of this script did (37 s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

import numpy as np

from data_pipelines import aflw21
from data_pipelines import landmarks2d
from jaxface.eval import recon_eval
from jaxface.train import trained as trained_lib

# The benchmark's crops -> `convert-landmarks2d --crop`.
MODES = {'resize': 'given', 'recrop': 'box'}


def held_out_folder(data: aflw21.AFLW21, out: str,
                    limit: int | None = None) -> np.ndarray:
  """Writes at `out` an AFLW-21 folder of the first `limit` (None: all)
  held-out faces of `data`, in names.txt order: names.txt, pts21.npy and
  yaw_deg.npy of those faces, and `images` a link to `data`'s images.

  Every face of it is held out (`aflw21.held_out` reads the name), so that
  `convert-landmarks2d` puts them all in split `test` and converts no
  training face.

  Returns:
    (M,) indices of the faces in `data`.

  Raises:
    ValueError: `data` holds no held-out face.
  """
  indices = aflw21.held_out_indices(data.names)
  if not len(indices):
    raise ValueError(f'AFLW-21: {data.root} has no held-out face among its '
                     f'{len(data)} names')
  if limit is not None:
    indices = indices[:limit]
  os.makedirs(out)
  with open(os.path.join(out, 'names.txt'), 'w') as f:
    f.write(''.join(data.names[i] + '\n' for i in indices))
  np.save(os.path.join(out, 'pts21.npy'),
          np.transpose(data.points[indices], (0, 2, 1)).astype(np.float32))
  np.save(os.path.join(out, 'yaw_deg.npy'),
          data.yaw_deg[indices].astype(np.float32))
  os.symlink(os.path.abspath(os.path.join(data.root, 'images')),
             os.path.join(out, 'images'), target_is_directory=True)
  return indices


def measure(trained: trained_lib.TrainedModel, data: aflw21.AFLW21,
            modes=tuple(MODES), limit: int | None = None,
            batch_size: int = 16, work_dir: str | None = None
            ) -> tuple[np.ndarray, dict[str, dict]]:
  """Converts the held-out faces at the model's resolution, once per crop,
  and evaluates the model on them.

  Args:
    trained: the model.
    data: the AFLW-21 folder.
    modes: keys of `MODES`.
    limit: the first `limit` held-out faces only (None: all).
    batch_size: images per forward pass.
    work_dir: where the held-out folder and the records go (a temporary
      folder, removed afterwards, when None; else a folder that must not
      exist yet, kept).

  Returns:
    (indices of the faces in `data`, {mode: {'report', 'per_image' (of
    `recon_eval.evaluate_reconstruction`), 'conversion' (the converter's
    `writing.Conversion`), 'seconds': {'convert', 'evaluate'}}}).

  Raises:
    ValueError: an unknown mode, no held-out face, or no face of a crop
      converted (the reasons given).
  """
  unknown = [m for m in modes if m not in MODES]
  if unknown:
    raise ValueError(f'modes must be among {tuple(MODES)}, got {unknown}')
  with contextlib.ExitStack() as stack:
    if work_dir is None:
      work_dir = stack.enter_context(tempfile.TemporaryDirectory(
          prefix='aflw21_eval_'))
    else:
      os.makedirs(work_dir)
    faces = os.path.join(work_dir, 'held_out')
    indices = held_out_folder(data, faces, limit)
    out = {}
    for mode in modes:
      records = os.path.join(work_dir, mode)
      t0 = time.perf_counter()
      conversion = landmarks2d.convert_landmarks2d(
          'aflw21', faces, records, resolution=trained.resolution,
          crop=MODES[mode], progress=False)
      t1 = time.perf_counter()
      if not conversion.ok:
        reasons = '; '.join(f'{item}: {why}' for _, _, item, why
                            in conversion.skipped()[:3])
        raise ValueError(f'{mode}: none of the {len(indices)} held-out '
                         f'faces could be converted ({reasons})')
      report, per_image = recon_eval.evaluate_reconstruction(
          trained, records, 'test', batch_size=batch_size, progress=False)
      out[mode] = {'report': report, 'per_image': per_image,
                   'conversion': conversion,
                   'seconds': {'convert': t1 - t0,
                               'evaluate': time.perf_counter() - t1}}
  return indices, out


def summarise(report: dict, conversion) -> dict:
  """One crop's figures for the JSON line.

  Returns:
    {'nme', 'nme_no_ears', 'per_point': as the 2D report of
    `recon_eval.evaluate_reconstruction`; 'unusable': images without an
    NME, the report's plus the faces the converter skipped; 'skipped':
    those faces, [{'item', 'reason'}]}.
  """
  skipped = [{'item': item, 'reason': why}
             for _, _, item, why in conversion.skipped()]
  return {'nme': report['nme'], 'nme_no_ears': report['nme_no_ears'],
          'per_point': report['per_point'],
          'unusable': int(report['unusable']) + len(skipped),
          'skipped': skipped}


def face_count(text: str) -> int:
  """An argparse type: a number of faces, at least 1."""
  count = int(text)
  if count < 1:
    raise argparse.ArgumentTypeError(f'must be >= 1, got {count}')
  return count


def add_model_source(parser: argparse.ArgumentParser) -> None:
  """--model NAME | --workdir RUN (one required), --data FOLDER (also
  spelt --aflw21) and --limit N: the arguments of the scripts that
  measure one model on the held-out faces."""
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--model',
                      help='a shipped model\'s name (e.g. synthetic)')
  source.add_argument('--workdir',
                      help='a `jaxface train` workdir of a prnet or cycle run')
  parser.add_argument('--data', '--aflw21', dest='data',
                      default=aflw21.DEFAULT_DIR,
                      help='the AFLW-21 folder (default: %(default)s)')
  parser.add_argument('--limit', type=face_count, default=None,
                      help='measure the first N held-out faces only '
                      '(default: all)')


def held_out_nme(trained: trained_lib.TrainedModel, data: aflw21.AFLW21,
                 limit: int | None = None) -> dict[str, float]:
  """{'all', 'no_ears'}: NME % (mean of the yaw bins, 2 decimals) on the
  held-out faces ('resize' crops), with and without the ear lobes."""
  _, results = measure(trained, data, modes=('resize',), limit=limit,
                       batch_size=32)
  report = results['resize']['report']
  return {'all': round(100 * report['nme']['mean_of_bins'], 2),
          'no_ears': round(100 * report['nme_no_ears']['mean_of_bins'], 2)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  add_model_source(parser)
  parser.add_argument('--recrop', action='store_true',
                      help='also measure PRNet crops around the visible '
                      'points, next to the resized crops')
  parser.add_argument('--batch-size', type=int, default=16)
  parser.add_argument('--flip-average', default=None,
                      action=argparse.BooleanOptionalAction,
                      help='average with the mirror image\'s prediction '
                      '(default: the model\'s model.flip_average)')
  args = parser.parse_args(argv)
  if args.batch_size < 1:
    parser.error(f'--batch-size must be >= 1, got {args.batch_size}')
  start = time.perf_counter()
  modes = tuple(MODES) if args.recrop else ('resize',)
  try:
    data = aflw21.load(args.data)
    trained = trained_lib.load_model(args.workdir, args.model,
                                     flip_average=args.flip_average)
    trained_lib.prnet(trained)  # Refuses a model that is not a PRNet.
    load_s = time.perf_counter() - start
    indices, results = measure(trained, data, modes, args.limit,
                               args.batch_size)
  except (OSError, ValueError) as e:  # Missing files, bad arrays or models.
    print(f'aflw21_eval: error: {e}', file=sys.stderr)
    return 2
  convert = sum(r['seconds']['convert'] for r in results.values())
  evaluate = sum(r['seconds']['evaluate'] for r in results.values())
  work = convert + evaluate
  first = results[modes[0]]['report']
  out = {
      'benchmark': 'aflw21',
      'model': {**trained_lib.describe(trained),
                'uv_layout': trained.layout.name},
      'data': os.path.abspath(data.root),
      'split': f'held out: sha256(file name) in the last '
               f'{aflw21.HELD_OUT_FRACTION:.0%}, first {len(indices)} in '
               'names.txt order',
      'images': int(len(indices)),
      'points_read': first['points']['read'],
      **{mode: summarise(r['report'], r['conversion'])
         for mode, r in results.items()},
      'seconds': {'load': round(load_s, 2), 'convert': round(convert, 2),
                  'evaluate': round(evaluate, 2),
                  'total': round(time.perf_counter() - start, 2)},
      'images_per_second': round(len(indices) * len(modes) / work, 1)
                           if work > 0 else None}
  print(json.dumps(recon_eval.json_safe(out)))
  return 0


if __name__ == '__main__':
  sys.exit(main())
