"""Measure a trained workdir on a dataset: `jaxface eval`.

  jaxface eval --workdir runs/prnet --data data/aflw2000 [--out report.json]
  jaxface eval --model synthetic --data data/aflw2000   # a shipped model

What is measured follows the workdir's task (`evaluators.EVALUATORS`, the
measurements a training run's `config.evals` can also run while training):
- `prnet`, `cycle`: AFLW2000-3D's protocol on `recon` records of any
  resolution (resized to the model's): 68-landmark NME (2D and 3D) per yaw
  bin and as the mean of the bin means, dense NME, head-pose MAE (yaw,
  pitch, roll; images with an angle beyond 99 degrees left out), and a
  cumulative error distribution plot. On 2D records (annotated points of a
  landmark scheme): the visible-point NME of the AFLW-21 benchmark per yaw
  bin, with and without the ear points, and per point.
- `facegen`: on `multiview` records: Inception Score and Frechet distance
  with a jaxface identity classifier (named in the report), the
  geometric-consistency error, the error against the true faces, and for
  the voxel head the Chamfer distance between the surfaces.
- `progression`: accuracy and loss of the RNN on held-out `clips`.

The report is written as JSON with a Markdown table next to it (and the
plots), by default into WORKDIR/eval/ (./eval-NAME/ for --model NAME).
Where it goes is checked before measuring.
"""

from __future__ import annotations

import argparse
import os

from jaxface import files


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--workdir', default=None,
                      help='the workdir of a `jaxface train` run')
  parser.add_argument('--model', default=None,
                      help='a shipped model\'s name instead (`jaxface '
                      'models` lists them)')
  parser.add_argument('--data', required=True, help='a jaxface dataset')
  parser.add_argument('--split', default='test', help='(default: test)')
  parser.add_argument('--out', default=None,
                      help='a report path ending in .json, or a folder '
                      '(default: WORKDIR/eval/, or ./eval-NAME/ for --model)')
  parser.add_argument('--step', type=int, default=None,
                      help='the checkpoint to measure (default: the last)')
  parser.add_argument('--flip-average', default=None,
                      action=argparse.BooleanOptionalAction,
                      help='reconstruction: average each prediction with the '
                      'mirror image\'s (default: as the model was configured, '
                      'model.flip_average)')
  parser.add_argument('--batch-size', type=int, default=32)
  parser.add_argument('--limit', type=int, default=None,
                      help='measure only the first N records')
  parser.add_argument('--canonical', default=None,
                      help='reconstruction: a .npy (R, R, 3) canonical mean '
                      'face in the model\'s UV layout, or a BFM folder, for '
                      'the pose fit (default: the procedural mean face for a '
                      'model in the procedural layout, else the BFM that the '
                      'dataset\'s or the training data\'s dataset.json '
                      'names; the pose error is skipped without one)')
  parser.add_argument('--classifier', default=None,
                      help='facegen: a saved identity classifier folder '
                      '(default: trained now on the dataset\'s train split, '
                      'and saved in WORKDIR/eval/classifier)')
  parser.add_argument('--samples', type=int, default=1,
                      help='facegen: generated faces per test record (noise '
                      'seeds)')
  parser.add_argument('--no-progress', action='store_true')


def check_out(out: str, flag: str = '--out') -> None:
  """Raises unless the report can be written to `out`, a folder or a path
  ending in .json (`recon_eval.write_outputs`); `flag` names it in the
  message."""
  if out.endswith('.json'):
    files.check_output_file(out, flag, '.json')
  else:
    files.check_output_folder(out, flag)


def run(args) -> int:
  from jaxface.train import trained as trained_lib  # pylint: disable=g-import-not-at-top
  if args.batch_size < 1:
    raise ValueError(f'--batch-size must be >= 1, got {args.batch_size}')
  model = trained_lib.load_model(args.workdir, args.model, args.step,
                                 flip_average=args.flip_average)
  out = args.out or (os.path.join(args.workdir, 'eval') if args.workdir
                     else f'eval-{args.model}')
  check_out(out, '--out' if args.out else 'the report folder')
  progress = not args.no_progress
  print(f'measuring {args.workdir or args.model} (task {model.task}, step '
        f'{model.step}) on {args.data} [{args.split}]')
  from jaxface.eval import evaluators  # pylint: disable=g-import-not-at-top
  evaluator = evaluators.for_task(model.task)
  # Every evaluator takes the options it knows and ignores the others.
  options = {'classifier': args.classifier, 'samples': args.samples,
             'canonical': args.canonical}
  if args.workdir:
    options['classifier_dir'] = os.path.join(args.workdir, 'eval',
                                             'classifier')
  report, extra = evaluator.measure(model, args.data, args.split,
                                    args.batch_size, args.limit, progress,
                                    **options)
  paths = evaluator.write(report, extra, out)
  table = evaluator.table(report)
  print(table)
  for name, path in paths.items():
    print(f'  {name}: {path}')
  return 0
