"""The `jaxface` command line: thin wrappers around importable functions."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _add_writer_args(p):
  """Options of every command that writes a dataset."""
  p.add_argument('--resolution', type=int, default=256,
                 help='crop / position map side in pixels')
  p.add_argument('--workers', type=int, default=os.cpu_count() or 1,
                 help='processes (default: all cores)')
  p.add_argument('--shard-size', type=int, default=256,
                 help='records per shard')
  p.add_argument('--overwrite', action='store_true',
                 help='replace a dataset already in --out')


def _add_synth(sub):
  p = sub.add_parser(
      'synth', help='render the built-in synthetic dataset',
      description='Render faces of the procedural face model into a '
      '300W-LP-style dataset of ArrayRecord shards and a dataset.json.')
  p.add_argument('--out', required=True, help='output directory')
  p.add_argument('--kinds', nargs='+', default=['recon'],
                 choices=['recon', 'multiview', 'clips'],
                 help='record kinds to make (default: recon)')
  p.add_argument('--num-train', type=int, default=1000,
                 help='records per kind in the train split')
  p.add_argument('--num-test', type=int, default=200,
                 help='records per kind in the test split')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--identities-train', type=int, default=1000,
                 help='identities in the train pool')
  p.add_argument('--identities-test', type=int, default=200,
                 help='identities in the test pool (disjoint from train)')
  p.add_argument('--clip-length', type=int, default=8,
                 help='frames per clips record')
  _add_writer_args(p)
  p.set_defaults(func=_synth)


def _synth_config(args):
  from data_pipelines import synthetic  # pylint: disable=g-import-not-at-top
  for name in ('num_train', 'num_test', 'identities_train', 'identities_test',
               'workers', 'shard_size'):
    if getattr(args, name) < (0 if name.startswith('num') else 1):
      raise ValueError(f'--{name.replace("_", "-")} must be '
                       f'{"non-negative" if name.startswith("num") else ">= 1"}'
                       f', got {getattr(args, name)}')
  if args.resolution < 16:
    raise ValueError(f'--resolution must be at least 16, got {args.resolution}')
  if args.clip_length < 3:
    raise ValueError(f'--clip-length must be at least 3, got '
                     f'{args.clip_length}')
  return synthetic.SynthConfig(
      resolution=args.resolution, seed=args.seed,
      identities=(('train', args.identities_train),
                  ('test', args.identities_test)),
      clip_length=args.clip_length)


def _synth(args) -> int:
  from data_pipelines import synthetic  # pylint: disable=g-import-not-at-top
  config = _synth_config(args)
  counts = {kind: {'train': args.num_train, 'test': args.num_test}
            for kind in args.kinds}
  start = time.perf_counter()
  info = synthetic.synthesize(args.out, config, counts, workers=args.workers,
                              shard_size=args.shard_size,
                              overwrite=args.overwrite)
  total = sum(e['count'] for s in info['kinds'].values() for e in s.values())
  seconds = time.perf_counter() - start
  print(f'wrote {total} records to {args.out} in {seconds:.1f} s '
        f'({total / max(seconds, 1e-9):.1f} records/s with {args.workers} '
        'worker(s))')
  return 0


def _add_inspect(sub):
  p = sub.add_parser(
      'inspect', help='counts, schema and a picture of a dataset',
      description='Print what a dataset holds, check every record, and '
      'optionally draw a grid of samples with landmarks and position maps.')
  p.add_argument('directory')
  p.add_argument('--png', help='write a grid of samples to this PNG file')
  p.add_argument('--kind', help='kind to draw (default: the first)')
  p.add_argument('--split', default=None,
                 help='split to draw (default: the first)')
  p.add_argument('--samples', type=int, default=6, help='rows in the picture')
  p.add_argument('--limit', type=int, default=None,
                 help='check at most this many records per kind and split')
  p.add_argument('--json', action='store_true',
                 help='print the check as JSON instead of text')
  p.set_defaults(func=_inspect)


def _inspect(args) -> int:
  from jaxface.data import inspect as inspect_lib  # pylint: disable=g-import-not-at-top
  from jaxface.data import shards  # pylint: disable=g-import-not-at-top
  check = shards.check(args.directory, limit=args.limit)
  if args.json:
    print(json.dumps(check, indent=2, default=str))
  else:
    print(inspect_lib.summary(args.directory, check))
  if args.png:
    info = shards.read_dataset_info(args.directory)
    kind = args.kind or next(iter(info['kinds']), None)
    if kind not in info['kinds']:
      raise shards.DatasetError(f'{args.directory} has no {kind!r} records; '
                                f'it has {sorted(info["kinds"])}')
    split = args.split or next(iter(info['kinds'][kind]))
    grid = inspect_lib.sample_grid(args.directory, kind, split, args.samples)
    inspect_lib.write_png(args.png, grid)
    print(f'wrote {args.png}')
  return 0 if check['ok'] else 1


def _add_convert_300wlp(sub):
  p = sub.add_parser(
      'convert-300wlp', help='convert 300W-LP (with the BFM) to records',
      description='Convert 300W-LP into recon (and multiview) records: PRNet '
      'crops and UV position maps made from the 3DMM parameters with the '
      'Basel Face Model, as face3d does for PRNet. Samples that cannot be '
      'read are skipped and listed; the exit status is non-zero only when '
      'nothing could be converted.')
  p.add_argument('--root', required=True,
                 help='the 300W_LP folder (AFW, HELEN, IBUG, LFPW, *_Flip)')
  p.add_argument('--bfm', required=True,
                 help="folder with face3d's BFM.mat and BFM_UV.mat")
  p.add_argument('--out', required=True, help='output directory')
  p.add_argument('--test-fraction', type=float, default=0.0,
                 help='fraction of original faces (all their views and '
                 'flips) held out in a test split (default 0: all train)')
  p.add_argument('--limit', type=int, default=None,
                 help='convert only the first N samples (sorted by path)')
  p.add_argument('--multiview', action=argparse.BooleanOptionalAction,
                 default=True,
                 help='also write multiview records (default: yes)')
  p.add_argument('--perturb', action='store_true',
                 help="PRNet's random crop shift and scale (default: "
                 'deterministic crops)')
  p.add_argument('--seed', type=int, default=0,
                 help='seed of --perturb')
  _add_writer_args(p)
  p.set_defaults(func=_convert_300wlp)


def _report_conversion(conversion) -> int:
  from data_pipelines import the300wlp  # pylint: disable=g-import-not-at-top
  print(the300wlp.format_summary(conversion))
  if not conversion.ok:
    print(f'jaxface: error: no usable {conversion.source} sample was '
          'converted (see the reasons above); nothing was written',
          file=sys.stderr)
    return 1
  return 0


def _convert_300wlp(args) -> int:
  from data_pipelines import the300wlp  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  conversion = the300wlp.convert_300wlp(
      args.root, args.bfm, args.out, resolution=args.resolution,
      workers=args.workers, test_fraction=args.test_fraction,
      limit=args.limit, multiview=args.multiview, perturb=args.perturb,
      seed=args.seed, overwrite=args.overwrite, shard_size=args.shard_size)
  status = _report_conversion(conversion)
  print(f'took {time.perf_counter() - start:.1f} s')
  return status


def _add_convert_aflw2000(sub):
  p = sub.add_parser(
      'convert-aflw2000', help='convert AFLW2000-3D to test records',
      description='Convert AFLW2000-3D into recon records of the test split: '
      'PRNet crops around the ground-truth 68 landmarks, with the crop '
      'transform, the original size, the pose and (with --bfm) the UV '
      'position map.')
  p.add_argument('--root', required=True,
                 help='the AFLW2000 folder (imageNNNNN.jpg + .mat)')
  p.add_argument('--out', required=True, help='output directory')
  p.add_argument('--bfm', default=None,
                 help="folder with face3d's BFM.mat and BFM_UV.mat (for the "
                 'position maps; required unless --landmarks-only)')
  p.add_argument('--landmarks-only', action='store_true',
                 help='without --bfm: records with a 1x1 placeholder '
                 'position map (landmark and pose evaluation only)')
  p.add_argument('--limit', type=int, default=None,
                 help='convert only the first N images')
  _add_writer_args(p)
  p.set_defaults(func=_convert_aflw2000)


def _convert_aflw2000(args) -> int:
  from data_pipelines import aflw2000  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  conversion = aflw2000.convert_aflw2000(
      args.root, args.out, args.bfm, resolution=args.resolution,
      workers=args.workers, limit=args.limit,
      landmarks_only=args.landmarks_only, overwrite=args.overwrite,
      shard_size=args.shard_size)
  status = _report_conversion(conversion)
  print(f'took {time.perf_counter() - start:.1f} s')
  return status


def _add_quickstart(sub):
  p = sub.add_parser(
      'quickstart', help='the first thing to run: a small synthetic dataset',
      description='Render a small synthetic dataset of every record kind at '
      'low resolution, check it, and draw samples.')
  p.add_argument('--workdir', default='quickstart',
                 help='where to write (default: ./quickstart)')
  p.add_argument('--resolution', type=int, default=64)
  p.add_argument('--workers', type=int, default=os.cpu_count() or 1)
  p.set_defaults(func=_quickstart)


def _quickstart(args) -> int:
  from data_pipelines import synthetic  # pylint: disable=g-import-not-at-top
  from jaxface.data import inspect as inspect_lib  # pylint: disable=g-import-not-at-top
  from jaxface.data import shards  # pylint: disable=g-import-not-at-top
  data = os.path.join(args.workdir, 'data')
  if os.path.exists(os.path.join(data, shards.DATASET_INFO)):
    try:
      made_by = shards.read_dataset_info(data).get('made_by')
    except shards.DatasetError:
      made_by = None
    if made_by != 'quickstart':
      raise FileExistsError(
          f'{data} holds a dataset that quickstart did not make; choose '
          'another --workdir')
  config = synthetic.SynthConfig(resolution=args.resolution,
                                 identities=(('train', 100), ('test', 20)))
  counts = {'recon': {'train': 256, 'test': 64},
            'multiview': {'train': 32, 'test': 8},
            'clips': {'train': 32, 'test': 8}}
  start = time.perf_counter()
  synthetic.synthesize(data, config, counts, workers=args.workers,
                       overwrite=True, extra_info={'made_by': 'quickstart'})
  print(f'rendered the synthetic dataset in {time.perf_counter() - start:.1f}'
        f' s: {data}')
  check = shards.check(data)
  print(inspect_lib.summary(data, check))
  for kind in counts:
    png = os.path.join(args.workdir, f'{kind}.png')
    inspect_lib.write_png(png, inspect_lib.sample_grid(data, kind, 'train', 4))
    print(f'wrote {png}')
  return 0 if check['ok'] else 1


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='jaxface', description='3D face reconstruction and generation in '
      'JAX/Flax.')
  sub = parser.add_subparsers(dest='command', required=True)
  data = sub.add_parser('data', help='make, convert and inspect datasets')
  data_sub = data.add_subparsers(dest='data_command', required=True)
  _add_synth(data_sub)
  _add_inspect(data_sub)
  _add_convert_300wlp(data_sub)
  _add_convert_aflw2000(data_sub)
  _add_quickstart(sub)
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  from jaxface.data import records  # pylint: disable=g-import-not-at-top
  from jaxface.data import shards  # pylint: disable=g-import-not-at-top
  try:
    return args.func(args)
  except (ValueError, FileExistsError, shards.DatasetError,
          records.RecordError, OSError) as e:
    print(f'jaxface: error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
