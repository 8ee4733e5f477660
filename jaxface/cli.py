"""The `jaxface` command line: thin wrappers around importable functions."""

from __future__ import annotations

import argparse
import importlib.metadata
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
  p.add_argument('--crop-jitter', type=float, default=0.1,
                 help='largest shift of a recon crop\'s centre, relative to '
                      'the landmarks\' extent (300W-LP: 0.1; 0: centred)')
  p.add_argument('--leave-out', default='',
                 help='comma-separated parts of the renderer that recon '
                      'records are made without (the realism ablation): '
                      'texture, light, background, occluders, dressing, '
                      'camera, pose')
  p.add_argument('--crop-scale-jitter', type=float, default=0.1,
                 help='largest relative change of a recon crop\'s side '
                      '(300W-LP: 0.1; 0: every face at one scale)')
  p.add_argument('--roll-deg', default='12,40',
                 help='STD,LIMIT: the photo pose\'s roll, normal with this '
                      'standard deviation within +-LIMIT degrees (renderer '
                      'version 1: 7,30)')
  p.add_argument('--shape-mean', default='adult',
                 help='the recon identities\' mean shape: adult (adult '
                      'proportions, model.ADULT_SHAPE_MEAN), none (the face '
                      'model\'s own: renderer version 2), or NAME=STD,... '
                      'over the semantic shape components')
  _add_writer_args(p)
  p.set_defaults(func=_synth)


def _synth_config(args):
  from jaxface.data import synthetic  # pylint: disable=g-import-not-at-top
  from jaxface.data import writing  # pylint: disable=g-import-not-at-top
  for name in ('num_train', 'num_test', 'identities_train', 'identities_test',
               'workers', 'shard_size'):
    if getattr(args, name) < (0 if name.startswith('num') else 1):
      raise ValueError(f'--{name.replace("_", "-")} must be '
                       f'{"non-negative" if name.startswith("num") else ">= 1"}'
                       f', got {getattr(args, name)}')
  if args.resolution < writing.MIN_RESOLUTION:
    raise ValueError(f'--resolution must be at least '
                     f'{writing.MIN_RESOLUTION}, got {args.resolution}')
  if args.clip_length < 3:
    raise ValueError(f'--clip-length must be at least 3, got '
                     f'{args.clip_length}')
  if not 0 <= args.crop_jitter <= 0.2:
    raise ValueError(f'--crop-jitter must be in [0, 0.2], got '
                     f'{args.crop_jitter}')
  if not 0 <= args.crop_scale_jitter <= 0.3:
    raise ValueError(f'--crop-scale-jitter must be in [0, 0.3], got '
                     f'{args.crop_scale_jitter}')
  try:
    roll_deg = tuple(float(v) for v in args.roll_deg.split(','))
  except ValueError:
    roll_deg = ()
  if len(roll_deg) != 2 or not 0 <= roll_deg[0] <= 45 or not (
      0 <= roll_deg[1] <= 90):
    raise ValueError(f'--roll-deg must be STD,LIMIT with STD in [0, 45] and '
                     f'LIMIT in [0, 90] degrees, got {args.roll_deg!r}')
  return synthetic.SynthConfig(
      resolution=args.resolution, seed=args.seed, roll_deg=roll_deg,
      shape_mean=parse_shape_mean(args.shape_mean),
      identities=(('train', args.identities_train),
                  ('test', args.identities_test)),
      clip_length=args.clip_length, crop_jitter=args.crop_jitter,
      crop_scale_jitter=args.crop_scale_jitter,
      leave_out=tuple(p.strip() for p in args.leave_out.split(',')
                      if p.strip()))


def parse_shape_mean(text: str) -> tuple[tuple[str, float], ...]:
  """--shape-mean's value as `SynthConfig.shape_mean`."""
  from jaxface.face import model as model_lib  # pylint: disable=g-import-not-at-top
  named = {'adult': model_lib.ADULT_SHAPE_MEAN, 'none': ()}
  if text in named:
    return named[text]
  try:
    pairs = [item.split('=') for item in text.split(',')]
    return model_lib.check_shape_mean(
        (name.strip(), float(value)) for name, value in pairs)
  except ValueError as e:
    raise ValueError(f'--shape-mean must be adult, none or NAME=STD,..., got '
                     f'{text!r}: {e}') from e


def _synth(args) -> int:
  from jaxface.data import synthetic  # pylint: disable=g-import-not-at-top
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
  if args.png:
    _check_png_path(args.png)
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


def _check_png_path(path: str) -> None:
  """Raises unless `path` names a PNG file that can be written."""
  from jaxface import files  # pylint: disable=g-import-not-at-top
  files.check_output_file(path, '--png', '.png')


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


def _converter(command: str):
  """The converter behind `jaxface data COMMAND`.

  Converters live in `data_pipelines`, which depends on jaxface; they are
  found through the `jaxface.converters` entry points that pyproject.toml
  declares, so that jaxface never imports them by name.
  """
  found = importlib.metadata.entry_points(group='jaxface.converters',
                                          name=command)
  if not found:
    raise ImportError(
        f'the converter of `jaxface data {command}` is not installed: '
        'install jaxface from its repository (`pip install -e .`), which '
        'installs data_pipelines and registers its converters')
  return next(iter(found)).load()


def _timed_conversion(command: str, *args, **kwargs) -> int:
  """Runs a converter, prints its summary and time; the exit status."""
  from jaxface.data import writing  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  conversion = _converter(command)(*args, **kwargs)
  print(writing.format_summary(conversion))
  print(f'took {time.perf_counter() - start:.1f} s')
  if not conversion.ok:
    print(f'jaxface: error: no usable {conversion.source} sample was '
          'converted (see the reasons above); nothing was written',
          file=sys.stderr)
    return 1
  return 0


def _convert_300wlp(args) -> int:
  return _timed_conversion(
      'convert-300wlp', args.root, args.bfm, args.out,
      resolution=args.resolution, workers=args.workers,
      test_fraction=args.test_fraction, limit=args.limit,
      multiview=args.multiview, perturb=args.perturb, seed=args.seed,
      overwrite=args.overwrite, shard_size=args.shard_size)


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
                 help='without --bfm: records without position maps '
                 '(landmark and pose evaluation only)')
  p.add_argument('--limit', type=int, default=None,
                 help='convert only the first N images')
  _add_writer_args(p)
  p.set_defaults(func=_convert_aflw2000)


def _convert_aflw2000(args) -> int:
  return _timed_conversion(
      'convert-aflw2000', args.root, args.out, args.bfm,
      resolution=args.resolution, workers=args.workers, limit=args.limit,
      landmarks_only=args.landmarks_only, overwrite=args.overwrite,
      shard_size=args.shard_size)


def _add_convert_landmarks2d(sub):
  p = sub.add_parser(
      'convert-landmarks2d',
      help='convert a real 2D-landmark dataset (AFLW-21, iBUG .pts) to 2D '
      'recon records',
      description='Convert real faces with annotated 2D landmarks into 2D '
      'recon records (a crop, the points of a landmark scheme in crop '
      'pixels with a visibility mask, and the yaw where known), for mixed '
      'training (config.mix). --format aflw21: the AFLW-21 folder (scheme '
      'aflw21; its held-out faces, those the AFLW-21 benchmark measures, '
      'go to the test split). --format pts: a folder of images each with an '
      'iBUG .pts file beside it (scheme ibug68, 1-based coordinates). '
      'Samples that cannot be read are skipped and listed; the exit status '
      'is non-zero only when nothing could be converted.')
  p.add_argument('--format', required=True, choices=['aflw21', 'pts'],
                 help='the input layout')
  p.add_argument('--root', required=True,
                 help='the dataset folder (aflw21: images/, names.txt, '
                 'pts21.npy, yaw_deg.npy; pts: searched recursively)')
  p.add_argument('--out', required=True, help='output directory')
  p.add_argument('--crop', choices=['given', 'box'], default=None,
                 help='given: the images are face crops, resized whole; '
                 "box: PRNet's crop around the visible points (default: "
                 'given for aflw21, box for pts)')
  p.add_argument('--test-fraction', type=float, default=None,
                 help='pts only: fraction of faces held out in a test split '
                 'by a hash of their relative path (default: all train)')
  p.add_argument('--limit', type=int, default=None,
                 help='convert only the first N faces')
  _add_writer_args(p)
  p.set_defaults(func=_convert_landmarks2d)


def _convert_landmarks2d(args) -> int:
  return _timed_conversion(
      'convert-landmarks2d', args.format, args.root, args.out,
      resolution=args.resolution, crop=args.crop,
      test_fraction=args.test_fraction, limit=args.limit,
      workers=args.workers, overwrite=args.overwrite,
      shard_size=args.shard_size)


def _add_train(sub):
  p = sub.add_parser(
      'train', help='train a config in a workdir (resumes if possible)',
      description='Train an experiment config. Override any config field '
      'with --config.a.b=value. Running the same command again in the same '
      'workdir resumes from its last checkpoint.')
  p.add_argument('--config', required=True, help='a config file, e.g. '
                 'experiments/configs/quickstart.py')
  p.add_argument('--workdir', required=True, help='checkpoints, metrics, '
                 'figures and the summary go here')
  p.add_argument('--allow-config-change', action='store_true',
                 help='resume even though optimizer/training values differ '
                 'from the workdir\'s stored config.json (the model, task '
                 'and data must still match)')
  p.add_argument('--profile', metavar='FIRST,LAST',
                 help='write a jax.profiler trace of steps FIRST..LAST '
                 '(1-based) into WORKDIR/profile (TensorBoard\'s profile '
                 'plugin, Perfetto); same as --config.train.profile_steps')
  p.set_defaults(func=_train, takes_overrides=True)


def _train(args) -> int:
  from jaxface import files  # pylint: disable=g-import-not-at-top
  from jaxface.train import config_lib  # pylint: disable=g-import-not-at-top
  from jaxface.train import loop  # pylint: disable=g-import-not-at-top
  files.check_output_folder(args.workdir, '--workdir')
  overrides = list(args.overrides)
  if args.profile:
    try:
      first, last = (int(v) for v in args.profile.split(','))
    except ValueError:
      raise ValueError(f'--profile takes FIRST,LAST (two step numbers), got '
                       f'{args.profile!r}') from None
    overrides.append(f'train.profile_steps=({first},{last})')
  config = config_lib.apply_overrides(config_lib.load_config(args.config),
                                      overrides)
  summary = loop.run(config, args.workdir,
                     allow_config_change=args.allow_config_change)
  _print_summary(summary)
  return _exit_status(summary)


def _exit_status(summary: dict) -> int:
  """0, or 130 (the shell's code for Ctrl-C) after a SIGINT stop; a SIGTERM
  stop (preemption) is a normal exit for schedulers."""
  return 130 if summary.get('stopped_by') == 'SIGINT' else 0


def _print_summary(summary: dict) -> None:
  if summary.get('stopped_by'):
    print(f'stopped by {summary["stopped_by"]} at step {summary["steps"]} '
          '(checkpoint saved; the same command resumes)')
  print(f'{"preempted at" if summary["preempted"] else "trained"} step '
        f'{summary["steps"]} in {summary["wall_seconds"]:.0f} s '
        f'({summary["images_per_second"]:.1f} images/s)')
  for key, value in sorted(summary.get('eval', {}).items()):
    print(f'  eval {key}: {value:.4f}')
  for key in ('figure', 'checkpoints', 'profile', 'mesh', 'workdir'):
    if key in summary:
      print(f'  {key}: {summary[key]}')


def _add_quickstart(sub):
  p = sub.add_parser(
      'quickstart', help='the first thing to run: train a small PRNet on '
      'the built-in synthetic data',
      description='Generate a small synthetic dataset (if absent), train the '
      'quickstart config on it, evaluate on a held-out split, and write a '
      'checkpoint, a figure and a mesh of one test face.')
  p.add_argument('--workdir', default='quickstart',
                 help='where to write (default: ./quickstart)')
  p.add_argument('--resolution', type=int, default=64,
                 help='crop side in pixels, a multiple of 32 (default: 64)')
  p.add_argument('--workers', type=int, default=os.cpu_count() or 1,
                 help='processes that render the data')
  p.set_defaults(func=_quickstart, takes_overrides=True)


def _quickstart(args) -> int:
  from jaxface.train import quickstart  # pylint: disable=g-import-not-at-top
  summary = quickstart.run(args.workdir, args.resolution, args.workers,
                           args.overrides)
  _print_summary(summary)
  if summary.get('stopped_by'):
    return _exit_status(summary)
  ev = summary['eval']
  print(f'68-landmark NME on the held-out synthetic faces: {ev["nme"]:.4f} '
        f'(the mean face fitted to the crop: {ev["nme_mean_face"]:.4f})')
  return 0


# Subcommands whose options and body live in a module with
# `add_arguments(parser)` and `run(args) -> exit status`: (name, module, help).
MODULE_COMMANDS = (
    ('eval', 'jaxface.eval.report', 'measure a trained workdir on a dataset'),
    ('reconstruct', 'jaxface.infer.reconstruct',
     'reconstruct every face in photos: landmarks, pose, meshes'),
    ('generate', 'jaxface.infer.generate',
     'generate 3D faces from front, left and right photos'),
    ('export', 'jaxface.pretrained',
     'ship a trained PRNet workdir as a named model of the package'),
    ('bench', 'jaxface.bench',
     'measure speed: train step, inference, input pipeline, synthetic '
     'rendering'),
)


def _add_module_command(sub, name: str, module: str, help_text: str,
                        load: bool = True):
  """Adds MODULE_COMMANDS' subcommand `name`. Without `load` (another
  command runs) only its name and help, so that its module is not imported:
  together they take a fifth of a second."""
  if not load:
    sub.add_parser(name, help=help_text)
    return
  import importlib  # pylint: disable=g-import-not-at-top
  mod = importlib.import_module(module)
  p = sub.add_parser(name, help=help_text, description=mod.__doc__.split(
      '\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  mod.add_arguments(p)
  p.set_defaults(func=mod.run)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
  """The command line's parser; with `command`, the parser for running that
  subcommand (other module commands' options are not loaded)."""
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
  _add_convert_landmarks2d(data_sub)
  _add_train(sub)
  _add_quickstart(sub)
  for name, module, help_text in MODULE_COMMANDS:
    _add_module_command(sub, name, module, help_text,
                        load=command is None or command == name)
  _add_models(sub)
  return parser


def _add_models(sub):
  p = sub.add_parser('models', help='list the shipped pretrained models',
                     description='List the pretrained models shipped in the '
                     'package (or in $JAXFACE_PRETRAINED_DIR) with the '
                     'summary of their model cards.')
  p.set_defaults(func=_models)


def _models(args) -> int:
  del args
  from jaxface import pretrained  # pylint: disable=g-import-not-at-top
  print(pretrained.format_models())
  return 0


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = build_parser(argv[0] if argv and not argv[0].startswith('-')
                        else None)
  args, extra = parser.parse_known_args(argv)
  if getattr(args, 'takes_overrides', False):
    args.overrides = _config_overrides(parser, extra)
  elif extra:
    parser.error(f'unrecognized arguments: {" ".join(extra)}')
  # Errors a user can mend (bad config, data, paths) end in one line, not a
  # traceback. records.RecordError, shards.DatasetError and
  # config_lib.ConfigError are ValueErrors; TrainingError is matched by
  # module so that commands that do not train never import JAX for it.
  errors = (ValueError, FileExistsError, OSError, ImportError)
  try:
    return args.func(args)
  except InterruptedError as e:  # Ctrl-C, cleaned up by the command
    print(f'jaxface: {e}', file=sys.stderr)
    return 130
  except Exception as e:  # pylint: disable=broad-except
    if not (isinstance(e, errors) or _is_training_error(e)):
      raise
    print(f'jaxface: error: {e}', file=sys.stderr)
    return 2


def _is_training_error(error: Exception) -> bool:
  periodic = sys.modules.get('jaxface.train.periodic')
  return periodic is not None and isinstance(error, periodic.TrainingError)


def _config_overrides(parser, extra: list[str]) -> list[str]:
  """--config.a.b=value (or --config.a.b value) -> ['a.b=value', ...]."""
  overrides, args = [], iter(extra)
  for arg in args:
    if not arg.startswith('--config.'):
      parser.error(f'unrecognized argument {arg!r} (config overrides look '
                   'like --config.optimizer.lr=1e-4)')
    key, equals, value = arg[len('--config.'):].partition('=')
    value = value if equals else next(args, None)
    if value is None:
      parser.error(f'{arg} needs a value')
    overrides.append(f'{key}={value}')
  return overrides


def run() -> None:
  """The `jaxface` command: `main` in a process set up by
  `host_setup.set_up` (huge pages, XLA's CPU convolutions)."""
  from jaxface import host_setup  # pylint: disable=g-import-not-at-top
  host_setup.set_up()
  sys.exit(main())


if __name__ == '__main__':
  run()
