"""Speed of jaxface on this machine: `jaxface bench`.

  jaxface bench [--what train,infer,pipeline,synth,synth_start] [--width 1.0]
      [--resolution 256] [--batch 4[,64,...]] [--steps 1] [--infer-batch 1,32]
      [--pretrained synthetic (with --what infer)]
      [--dtype float32|bfloat16] [--repeats 5] [--warmup 1] [--json OUT.json]
      [--config experiments/configs/quickstart.py --override model.coords=false]

The network and train step are those of an experiment config
(`experiments/configs/prnet_pretrain.py` unless `--config`), with
`--width` (default: the config's), `--dtype`, the batch and then each
`--override KEY=VALUE` applied.

Each measurement runs `warmup` untimed times, then `repeats` timed times on
the default device (one device, the first), and reports the median and the
spread (min-max) of the repeats' wall times (per step for the train step:
see --steps), images/s (images per repeat, or step, / median), the FLOPs
per image that XLA counts in the program as lowered for the device
(`xla_flops`: convolutions in the form they run, elementwise ops too) and
the fraction of the device's peak FLOP/s that this reaches, where the peak
is known (`PEAKS`; on CPUs an estimate from /proc/cpuinfo,
`cpu_peak_flops`; or --peak-flops); '-' where not. Each stage's end goes to
stderr as it happens (an accelerator's first compilation can take minutes).

- train: one step of `jaxface train`'s PRNet pretraining task
  (`loop.make_task` with experiments/configs/prnet_pretrain.py: forward in
  training mode, weighted position-map loss, backward, Adam), jitted as the
  loop does with the state donated, on a fixed random batch of `batch`
  images, once per `--batch` (a list finds the batch that fills an
  accelerator). A repeat is `--steps` steps dispatched back to back with
  one wait at the end, as the training loop runs them (on an H200 a wait
  after each step cost 6 ms, 13 % of a 47 ms step); its time over
  `--steps` is the step's. Compilation is timed once, apart. With
  `--override data.augmentation.on_device=True` the batch is uint8 images
  with drawn augmentations and the step augments them first
  (`device_augment`), as training then runs it; the pipeline row then
  leaves that work to the step.
- infer: per infer batch B, the jitted network in eval mode on B crops
  (`forward`), and `Reconstructor.reconstruct` on a 1024 x 768 photo with B
  face boxes (`reconstruct`: crop, network, landmarks, mapping back, pose;
  no detection, no files). Batch 1 is latency, larger batches throughput.
  With `--pretrained NAME`, the shipped model as `jaxface reconstruct`
  runs it: its weights, resolution and dtype, and its forward averaged with
  the mirror image when the model is (2 B images a call).
- pipeline: records/s of the training input pipeline
  (`pipeline.make_iterator`, the prnet_pretrain config's augmentation,
  --workers processes, batches of the first --batch) after `warmup`
  batches (worker start-up excluded), `records` records per repeat, on
  --data or on a temporary synthetic dataset at the resolution; and its
  ratio to the train step's images/s at that batch (the input pipeline
  should deliver >= 5x).
- synth: records/s of making and serialising synthetic `recon` records at
  the resolution in this process, pinned to one core (the face model is
  built first; no process start, no shard writing); and, untimed, the
  sha256 of train records 0-15 (default generator at the resolution): two
  versions of the renderer that print the same render the same records.
- synth_start: records/s of `jaxface data synth` (`recon`, `records` train
  records at the resolution, one worker) run as a new Python process pinned
  to one core, by the wall clock: the interpreter's start, the imports,
  numba's first call (its compiled loops come from its cache: a warm-up
  run fills it), rendering and shard writing.

The PRNet's parameters stay float32; --dtype is its compute dtype. The
header's `host` line says how the process was set up (`host_setup`, as
the `jaxface` command does: glibc's huge pages, XLA's CPU flags); measure
without them with `JAXFACE_HUGE_PAGES=0` and an XLA_FLAGS of your own, e.g.
`XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterator, NamedTuple

from jaxface import files
from jaxface import host_setup

WHAT = ('train', 'infer', 'pipeline', 'synth', 'synth_start')
MODELS = ('prnet',)
DTYPES = ('float32', 'bfloat16')
_SYNTH_DIGEST_RECORDS = 16  # records fingerprinted by the synth row
PHOTO_SIZE = (768, 1024)  # (height, width) of the reconstruct photo

# Peak dense FLOP/s by device kind (`jax.devices()[0].device_kind` contains
# the key; the first match wins) and compute dtype. Vendor figures, without
# structured sparsity:
# - NVIDIA H100 SXM and H200 (same chip and clocks): BF16 989.4 TFLOP/s,
#   TF32 494.7 TFLOP/s (NVIDIA H100 and H200 Tensor Core GPU datasheets list
#   1,979 and 989 "with sparsity", twice the dense rate); H100 PCIe: 756.5,
#   378. A100: BF16 312, TF32 156 (A100 datasheet). float32 uses the TF32
#   figure: at JAX's default precision XLA runs float32 convolutions and
#   matmuls on the TF32 tensor cores (the FP32 non-tensor rate, 67 TFLOP/s
#   on H100 SXM, applies only at precision 'highest').
# - Google Cloud TPU system architecture pages, bfloat16 per chip: v4 275,
#   v5e 197, v5p 459, v6e (Trillium) 918 TFLOP/s. float32 depends on the
#   matmul precision: unknown here.
# CPUs vary too much to list: `cpu_peak_flops` estimates theirs from
# /proc/cpuinfo; --peak-flops overrides it.
PEAKS = (
    ('H100 PCIe', {'bfloat16': 756.5e12, 'float32': 378e12},
     'NVIDIA H100 PCIe datasheet, dense'),
    ('H100', {'bfloat16': 989.4e12, 'float32': 494.7e12},
     'NVIDIA H100 SXM datasheet, dense (float32: TF32)'),
    ('H200', {'bfloat16': 989.4e12, 'float32': 494.7e12},
     'NVIDIA H200 datasheet, dense (float32: TF32)'),
    ('A100', {'bfloat16': 312e12, 'float32': 156e12},
     'NVIDIA A100 datasheet, dense (float32: TF32)'),
    ('TPU v4', {'bfloat16': 275e12}, 'Cloud TPU v4, bfloat16'),
    ('TPU v5 lite', {'bfloat16': 197e12}, 'Cloud TPU v5e, bfloat16'),
    ('TPU v5e', {'bfloat16': 197e12}, 'Cloud TPU v5e, bfloat16'),
    ('TPU v5', {'bfloat16': 459e12}, 'Cloud TPU v5p, bfloat16'),
    ('TPU v6', {'bfloat16': 918e12}, 'Cloud TPU v6e, bfloat16'),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--what', default=','.join(WHAT),
                      help='comma-separated measurements (default: '
                      '%(default)s)')
  parser.add_argument('--model', default='prnet', choices=MODELS)
  parser.add_argument('--config', default=None,
                      help='experiment config of the network and train step '
                      '(default: experiments/configs/prnet_pretrain.py)')
  parser.add_argument('--override', action='append', default=[],
                      metavar='KEY=VALUE',
                      help='a config override, applied last (repeatable)')
  parser.add_argument('--width', type=float, default=None,
                      help='channel multiplier (default: the config\'s)')
  parser.add_argument('--pretrained', default=None, metavar='NAME',
                      help="infer only: a shipped model's network, weights, "
                      'resolution and flip averaging (e.g. synthetic), as '
                      '`jaxface reconstruct --model NAME` runs it')
  parser.add_argument('--resolution', type=int, default=None,
                      help='crop side in pixels, a multiple of 32 '
                      '(default: 256, or the --pretrained model\'s)')
  parser.add_argument('--batch', default='4',
                      help='images per train step (comma-separated: one '
                      'row each) and per pipeline batch (the first)')
  parser.add_argument('--steps', type=int, default=1,
                      help='train steps per timed repeat, dispatched back to '
                      'back (default: 1)')
  parser.add_argument('--infer-batch', default='1,32',
                      help='comma-separated inference batches (default: '
                      '%(default)s)')
  parser.add_argument('--dtype', default='float32', choices=DTYPES,
                      help='compute dtype (parameters stay float32)')
  parser.add_argument('--repeats', type=int, default=5,
                      help='timed runs of each measurement (default: 5)')
  parser.add_argument('--warmup', type=int, default=1,
                      help='untimed runs before them (default: 1)')
  parser.add_argument('--records', type=int, default=64,
                      help='records per repeat of pipeline and synth')
  parser.add_argument('--workers', type=int, default=0,
                      help='pipeline worker processes (default: 0)')
  parser.add_argument('--data', default=None,
                      help='a dataset with recon train records for the '
                      'pipeline (default: a temporary synthetic one)')
  parser.add_argument('--peak-flops', type=float, default=None,
                      help="the device's peak FLOP/s, for devices not in "
                      'the table (e.g. a CPU)')
  parser.add_argument('--json', default=None, help='also write the results '
                      'to this JSON file')


def _ints(text: str, flag: str) -> list[int]:
  """The distinct whole numbers of a comma-separated `flag` value."""
  try:
    values = [int(v) for v in text.split(',')]
  except ValueError:
    raise ValueError(f'{flag} must be comma-separated whole numbers, got '
                     f'{text!r}') from None
  if len(set(values)) < len(values):
    raise ValueError(f'{flag} lists a value twice: {text!r}')
  return values


def check_args(args) -> None:
  """Raises ValueError naming the first bad option; sets `args.what_list`,
  `args.batches`, `args.infer_batches` and `args.train_config` (the
  experiment config at the first batch)."""
  what = [w.strip() for w in args.what.split(',') if w.strip()]
  unknown = [w for w in what if w not in WHAT]
  if unknown or not what:
    raise ValueError(f'--what: unknown measurement(s) {unknown or [""]}; '
                     f'choose from {",".join(WHAT)}')
  args.what_list = [w for w in WHAT if w in what]
  args.batches = _ints(str(args.batch), '--batch')
  args.infer_batches = _ints(args.infer_batch, '--infer-batch')
  for flag, value, low in (
      *(('--batch', b, 1) for b in args.batches),
      ('--repeats', args.repeats, 1), ('--steps', args.steps, 1),
      ('--warmup', args.warmup, 0), ('--records', args.records, 1),
      ('--workers', args.workers, 0),
      *(('--infer-batch', b, 1) for b in args.infer_batches)):
    if value < low:
      raise ValueError(f'{flag} must be >= {low}, got {value}')
  args.trained = None
  if args.pretrained is not None:
    if args.what_list != ['infer']:
      raise ValueError('--pretrained measures inference: use it with '
                       '--what infer')
    from jaxface.train import trained as trained_lib  # pylint: disable=g-import-not-at-top
    args.trained = trained_lib.load_pretrained(args.pretrained)
    if args.resolution not in (None, args.trained.resolution):
      raise ValueError(f'--resolution {args.resolution}: the shipped model '
                       f'{args.pretrained!r} runs at '
                       f'{args.trained.resolution}')
    args.resolution = args.trained.resolution
  elif args.resolution is None:
    args.resolution = 256
  from jaxface.models import prnet  # pylint: disable=g-import-not-at-top
  prnet.check_resolution(args.resolution, '--resolution')
  if args.width is not None and not args.width > 0:
    raise ValueError(f'--width must be > 0, got {args.width}')
  if any(o.split('=')[0].strip() == 'data.global_batch_size'
         for o in args.override):
    raise ValueError('--override data.global_batch_size: give the batch '
                     'with --batch')
  # Loaded once here (its errors before any work) and used by every
  # measurement.
  args.train_config = train_config(args.width, args.dtype, args.batches[0],
                                   args.config, args.override)
  args.width = args.train_config.model.width
  if args.trained is not None:  # the shipped network's own
    args.width = args.trained.config.model.width
    args.dtype = args.trained.config.model.dtype
  if args.peak_flops is not None and not args.peak_flops > 0:
    raise ValueError(f'--peak-flops must be > 0, got {args.peak_flops}')
  if args.json is not None:
    files.check_output_file(args.json, '--json')


# --- measuring ---------------------------------------------------------------


def time_repeats(fn, repeats: int, warmup: int) -> list[float]:
  """Seconds of each of `repeats` calls of `fn()` (which must wait for its
  results) after `warmup` untimed calls."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def xla_flops(stage) -> float | None:
  """FLOPs of one call of a `jax.stages.Lowered` (or `Compiled`), as XLA
  counts them in its program (None if it gives none).

  Pass the Lowered program: on GPUs the compiled one holds convolutions as
  cuDNN calls that XLA's count leaves out (PRNet's train step at 256x256 on
  an H200: 0.474 GFLOP an image compiled, 23.4 as lowered); before
  optimisation they are convolutions on every device, and on the CPU the
  two counts agree to 1 %.
  """
  cost = stage.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older JAX: one dict per program.
    cost = cost[0] if cost else None
  flops = (cost or {}).get('flops')
  return float(flops) if flops and flops > 0 else None


def cpu_peak_flops(cpuinfo: str, cores: int) -> tuple[float | None, str]:
  """(estimated float32 FLOP/s or None, how) of `cores` cores of the CPU
  that `cpuinfo` (the text of /proc/cpuinfo) describes.

  cores x FLOP per cycle x the clock of its first 'cpu MHz' line (in a
  virtual machine, the nominal clock). FLOP per cycle are those of two
  fused multiply-add units at the widest vector the flags name, which the
  server CPUs jaxface meets have: 64 with AVX-512 (16 lanes x 2 x 2), 32
  with AVX2 and FMA (8 x 2 x 2); older CPUs: unknown. AMD's Zen 4 (family
  25) runs AVX-512 as two 256-bit halves: 32. CPUs with one AVX-512 unit,
  or that lower their clock under AVX-512, reach less.
  """
  flags = re.search(r'^flags\s*:(.*)$', cpuinfo, re.M)
  mhz = re.search(r'^cpu MHz\s*:\s*([0-9.]+)', cpuinfo, re.M)
  if not flags or not mhz or cores < 1:
    return None, 'unknown: no flags or cpu MHz in /proc/cpuinfo'
  names = set(flags.group(1).split())
  family = re.search(r'^cpu family\s*:\s*([0-9]+)', cpuinfo, re.M)
  zen4 = ('AuthenticAMD' in cpuinfo and family is not None
          and int(family.group(1)) == 25)
  if 'avx512f' in names and zen4:
    per_cycle, unit = 32, 'AVX-512 in 256-bit halves'
  elif 'avx512f' in names:
    per_cycle, unit = 64, 'AVX-512'
  elif {'avx2', 'fma'} <= names:
    per_cycle, unit = 32, 'AVX2'
  else:
    return None, 'unknown: neither AVX-512 nor AVX2 with FMA'
  ghz = float(mhz.group(1)) / 1e3
  return cores * per_cycle * ghz * 1e9, (
      f'estimated: {cores} cores x {per_cycle} FLOP/cycle ({unit}, 2 FMA '
      f'units) x {ghz:.2f} GHz')


def _cpuinfo() -> str:
  """The text of /proc/cpuinfo ('' where there is none)."""
  try:
    with open('/proc/cpuinfo') as f:
      return f.read()
  except OSError:
    return ''


def _this_cpu_peak() -> tuple[float | None, str]:
  cores = (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
           else os.cpu_count() or 0)
  return cpu_peak_flops(_cpuinfo(), cores)


def peak_flops(device_kind: str, dtype: str,
               override: float | None = None) -> tuple[float | None, str]:
  """(peak FLOP/s or None, where the figure comes from) of a device."""
  if override:
    return override, '--peak-flops'
  if device_kind == 'cpu':
    if dtype == 'float32':
      return _this_cpu_peak()
    return None, f'unknown for the CPU in {dtype}'
  for key, peaks, source in PEAKS:
    if key in device_kind and dtype in peaks:
      return peaks[dtype], source
    if key in device_kind:
      break
  return None, f'unknown for {device_kind!r} in {dtype}'


def measurement(name: str, what: str, images: int, seconds: list[float],
                flops: float | None = None, peak: float | None = None,
                **extra) -> dict:
  """One row: `images` per repeat, the repeats' `seconds`, and `flops` per
  repeat (XLA's, or None); `peak` FLOP/s or None. (The train rows pass a
  step's images, seconds and FLOPs.)"""
  median = statistics.median(seconds)
  return {'name': name, 'what': what, 'images': images,
          'seconds': seconds, 'median_s': median, 'min_s': min(seconds),
          'max_s': max(seconds), 'images_per_s': images / median,
          'flops_per_image': flops / images if flops else None,
          'peak_fraction': flops / median / peak if flops and peak else None,
          **extra}


def train_config(width: float | None, dtype: str, batch: int,
                 path: str | None = None, overrides=()):
  """The experiment config at `path` (default: prnet_pretrain's) at this
  width (None: the config's), compute dtype and batch, then `overrides`."""
  from jaxface.train import config_lib  # pylint: disable=g-import-not-at-top
  if path is None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, 'experiments', 'configs', 'prnet_pretrain.py')
  config = config_lib.load_config(path)
  if config.task != 'prnet':
    raise ValueError(f'--config {path}: task {config.task!r}; the bench '
                     'measures PRNet (task prnet) configs')
  return config_lib.apply_overrides(config, [
      *([f'model.width={width}'] if width is not None else []),
      f'model.dtype={dtype}', f'data.global_batch_size={batch}',
      *overrides])


def random_batch(batch: int, resolution: int, on_device=None) -> dict:
  """A recon batch as the pipeline gives it: image (B, R, R, 3) in [0, 1],
  position_map (B, R, R, 3) and landmarks (B, 68, 3) in pixels, float32.
  With `on_device` (an `augment.AugmentConfig`), as the pipeline gives it
  for on-device augmentation: the image uint8, and augmentations drawn by
  that config (`augment.DEVICE_FIELDS`)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxface.data import augment  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  shape = (batch, resolution, resolution, 3)
  out = {'image': rng.uniform(size=shape).astype(np.float32),
         'position_map': rng.uniform(0, resolution, shape).astype(np.float32),
         'landmarks': rng.uniform(0, resolution, (batch, 68, 3)).astype(
             np.float32)}
  if on_device is not None:
    out['image'] = np.round(out['image'] * 255).astype(np.uint8)
    fields = [augment.device_fields(augment.sample_params(
        rng, on_device, resolution, resolution), resolution, resolution)
              for _ in range(batch)]
    out.update({name: np.stack([f[name] for f in fields])
                for name in augment.DEVICE_FIELDS})
  return out


class TrainStep(NamedTuple):
  """A compiled train step and what it runs on (`compiled_train_step`)."""
  compiled: Any  # compiled(state, batch) -> (state, metrics); donates state
  state: Any
  batch: dict
  compile_s: float  # lowering + compilation
  init_s: float  # the initial state, its compilation included
  flops: float | None  # `xla_flops` of one step


def _progress(message: str) -> None:
  print(f'bench: {message}', file=sys.stderr, flush=True)


def compiled_train_step(config, resolution: int) -> TrainStep:
  """The config's train step as the training loop jits it, compiled for a
  random batch on the first device (with the augmentation in the step when
  the config puts it on the device)."""
  import jax  # pylint: disable=g-import-not-at-top
  from jaxface.data import device_augment  # pylint: disable=g-import-not-at-top
  from jaxface.train import loop  # pylint: disable=g-import-not-at-top
  from jaxface.train import state as state_lib  # pylint: disable=g-import-not-at-top
  task = loop.make_task(config, resolution)
  repl = state_lib.replicated(state_lib.make_mesh(jax.devices()[:1]))
  augment = loop.augment_config(config)
  on_device = augment if augment.runs_on_device else None
  batch = jax.device_put(random_batch(config.data.global_batch_size,
                                      resolution, on_device), repl)
  key = jax.random.key(config.seed)
  size = config.data.global_batch_size
  start = time.perf_counter()
  state = jax.block_until_ready(state_lib.initialize(
      task.init_state, key, device_augment.apply(batch), sharding=repl))
  init_s = time.perf_counter() - start
  _progress(f'train step, batch {size}: initial state in {init_s:.1f} s')
  start = time.perf_counter()
  lowered = loop.jit_train_step(task, key, repl).lower(state, batch)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  _progress(f'train step, batch {size}: compiled in {compile_s:.1f} s')
  return TrainStep(compiled, state, batch, compile_s, init_s,
                   xla_flops(lowered))


def bench_train(args, peak: float | None, batch_size: int) -> dict:
  """The train step's row at `batch_size` images (`compile_s`: lowering +
  compilation; `init_s`: the initial state, compilation included)."""
  import jax  # pylint: disable=g-import-not-at-top
  from jaxface.train import config_lib  # pylint: disable=g-import-not-at-top
  from jaxface.train import loop  # pylint: disable=g-import-not-at-top
  config = config_lib.apply_overrides(
      args.train_config, [f'data.global_batch_size={batch_size}'])
  step = compiled_train_step(config, args.resolution)
  holder = [step.state]

  def run_steps():
    for _ in range(args.steps):
      holder[0], metrics = step.compiled(holder[0], step.batch)
    jax.block_until_ready((holder[0], metrics))

  for _ in range(args.warmup):
    run_steps()
  before = resource.getrusage(resource.RUSAGE_SELF)
  # Seconds per step: each repeat's time over its steps.
  seconds = [t / args.steps for t in time_repeats(run_steps, args.repeats, 0)]
  host = _host_use_per_step(before, resource.getrusage(resource.RUSAGE_SELF),
                            args.repeats * args.steps)
  chained = (f' ({args.steps} back to back a repeat)' if args.steps > 1
             else '')
  if loop.augment_config(config).runs_on_device:
    chained += ', augmented in the step'
  return measurement(f'train_b{batch_size}',
                     f'train step, batch {batch_size}{chained}', batch_size,
                     seconds, step.flops, peak, compile_s=step.compile_s,
                     init_s=step.init_s, steps=args.steps, **host)


def _host_use_per_step(before, after, steps: int) -> dict:
  """This process's CPU seconds (user, system) and minor page faults per
  step between two `resource.getrusage` readings. On a CPU backend, system
  time and faults are mostly the kernel handing out fresh pages for the
  step's buffers."""
  return {'host_user_s': (after.ru_utime - before.ru_utime) / steps,
          'host_system_s': (after.ru_stime - before.ru_stime) / steps,
          'minor_faults': (after.ru_minflt - before.ru_minflt) / steps}


def fresh_network(config, dtype: str, resolution: int):
  """(model, variables): the config's PRNet in compute `dtype` with fresh
  weights, without flip averaging (which would run 2 B images)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxface.models import prnet  # pylint: disable=g-import-not-at-top
  from jaxface.train import recon  # pylint: disable=g-import-not-at-top
  from jaxface.train import state as state_lib  # pylint: disable=g-import-not-at-top
  model = prnet.from_config(config.model, recon.compute_dtype(dtype)).clone(
      flip_average=False)
  variables = state_lib.initialize(
      model.init, jax.random.key(0),
      np.zeros((1, resolution, resolution, 3), np.float32))
  return model, variables


def bench_infer(args, peak: float | None) -> list[dict]:
  """Rows of the jitted forward and of `Reconstructor.reconstruct`, per
  infer batch: of the config's network with fresh weights, or of the
  --pretrained model (its forward averaged with the mirror image when the
  model is, as `jaxface reconstruct` runs it)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxface.infer import reconstruct  # pylint: disable=g-import-not-at-top
  from jaxface.train import trained as trained_lib  # pylint: disable=g-import-not-at-top
  r = args.resolution
  if args.trained is not None:
    model, variables = trained_lib.prnet(args.trained)
  else:
    model, variables = fresh_network(args.train_config, args.dtype, r)
  flipped = ' (and its mirror image)' if model.flip_average else ''
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
  rng = np.random.default_rng(0)
  photo = rng.integers(0, 256, PHOTO_SIZE + (3,), np.uint8)
  rows = []
  for b in args.infer_batches:
    images = jax.device_put(random_batch(b, r)['image'])
    start = time.perf_counter()
    lowered = forward.lower(variables, images)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    _progress(f'forward, batch {b}: compiled in {compile_s:.1f} s')
    seconds = time_repeats(
        lambda c=compiled, x=images: jax.block_until_ready(c(variables, x)),
        args.repeats, args.warmup)
    rows.append(measurement(f'forward_b{b}', f'forward, batch {b}{flipped}', b,
                            seconds, xla_flops(lowered), peak,
                            compile_s=compile_s))
    reconstructor = (
        reconstruct.Reconstructor.from_trained(args.trained, b)
        if args.trained is not None else
        reconstruct.Reconstructor(model, variables, r, b))
    boxes = _face_boxes(rng, b)
    seconds = time_repeats(lambda m=reconstructor, x=boxes: m.reconstruct(
        photo, x), args.repeats, max(args.warmup, 1))  # >= 1: compiles
    rows.append(measurement(f'reconstruct_b{b}',
                            f'reconstruct, {b} face(s)', b, seconds))
  return rows


def _face_boxes(rng, count: int):
  """(count, 4) random 160-pixel face boxes inside the photo."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  height, width = PHOTO_SIZE
  x0 = rng.uniform(0, width - 160, count)
  y0 = rng.uniform(0, height - 160, count)
  return np.stack([x0, y0, x0 + 160, y0 + 160], axis=1)


def bench_pipeline(args, train_rate: float | None) -> dict:
  """The input pipeline's row; `vs_train`: its images/s / the train
  step's (None without a train measurement)."""
  from jaxface.data import shards  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory(prefix='jaxface_bench_') as temp:
    data = args.data
    if data is None:
      from jaxface.data import synthetic  # pylint: disable=g-import-not-at-top
      data = os.path.join(temp, 'data')
      synthetic.synthesize(
          data, synthetic.SynthConfig(resolution=args.resolution),
          {'recon': {'train': max(args.records, args.batches[0])}},
          workers=min(2, os.cpu_count() or 1), progress=False)
    seconds, images = _pipeline_seconds(data, args)
    resolution = shards.read_dataset_info(data)['resolution']
  from jaxface.train import loop  # pylint: disable=g-import-not-at-top
  where = (', augmentation left to the step'
           if loop.augment_config(args.train_config).runs_on_device else '')
  row = measurement('pipeline', f'pipeline, {args.workers} worker(s), '
                    f'batch {args.batches[0]}{where}', images, seconds,
                    data=args.data or 'temporary synthetic dataset',
                    resolution=resolution)
  row['vs_train'] = row['images_per_s'] / train_rate if train_rate else None
  return row


def _pipeline_seconds(data: str, args) -> tuple[list[float], int]:
  """(seconds of each repeat, images per repeat) of the training pipeline
  on `data`, after `warmup` batches (at least 1: worker start-up)."""
  from jaxface.data import pipeline  # pylint: disable=g-import-not-at-top
  from jaxface.train import loop  # pylint: disable=g-import-not-at-top
  config = args.train_config
  it = pipeline.make_iterator(data, pipeline.PipelineConfig(
      kind='recon', split='train', global_batch_size=args.batches[0],
      worker_count=args.workers, augment=loop.augment_config(config),
      training=True, seed=0), process_index=0, process_count=1)
  batches = math.ceil(args.records / args.batches[0])
  try:
    for _ in range(max(args.warmup, 1)):
      next(it)
    seconds = time_repeats(lambda: [next(it) for _ in range(batches)],
                           args.repeats, 0)
  finally:
    it.close()
  return seconds, batches * args.batches[0]


@contextlib.contextmanager
def on_cores(count: int = 1) -> Iterator[None]:
  """Pins the calling thread, and the processes it starts, to the first
  `count` of its cores (where the OS allows; Linux), and restores its
  affinity after."""
  pin = hasattr(os, 'sched_setaffinity')
  cores = os.sched_getaffinity(0) if pin else None
  try:
    if pin:
      os.sched_setaffinity(0, sorted(cores)[:count])
    yield
  finally:
    if pin:
      os.sched_setaffinity(0, cores)


def bench_synth(args) -> dict:
  """The synthetic renderer's row: records made and serialised on one
  core (this process pinned to it, cv2 on one thread)."""
  import cv2  # pylint: disable=g-import-not-at-top
  from jaxface.data import synthetic  # pylint: disable=g-import-not-at-top
  from jaxface.data import records  # pylint: disable=g-import-not-at-top
  gen = synthetic.Generator(synthetic.SynthConfig(resolution=args.resolution))
  counter = iter(range(1 << 62))

  def make():
    for _ in range(args.records):
      records.serialize('recon', gen.make('recon', 'train', next(counter)))

  threads = cv2.getNumThreads()
  try:
    cv2.setNumThreads(1)
    with on_cores(1):
      seconds = time_repeats(make, args.repeats, args.warmup)
  finally:
    cv2.setNumThreads(threads)
  # A fingerprint of the renders, outside the timing: equal between two
  # versions of the code, they render the same records.
  digest = hashlib.sha256()
  for index in range(_SYNTH_DIGEST_RECORDS):
    digest.update(records.serialize('recon', gen.make('recon', 'train',
                                                      index)))
  return measurement('synth', f'synth, {args.records} records, one core',
                     args.records, seconds,
                     records_sha256=digest.hexdigest())


def bench_synth_start(args) -> dict:
  """The row of `jaxface data synth` as a new process (see the module
  docstring): what making a dataset costs a core, start-up included."""
  with tempfile.TemporaryDirectory(prefix='jaxface_bench_') as temp:
    out = os.path.join(temp, 'data')

    def make():
      shutil.rmtree(out, ignore_errors=True)
      done = subprocess.run(
          [sys.executable, '-m', 'jaxface.cli', 'data', 'synth', '--out', out,
           '--kinds', 'recon', '--resolution', str(args.resolution),
           '--num-train', str(args.records), '--num-test', '0',
           '--workers', '1'],
          capture_output=True, text=True, check=False)
      if done.returncode:
        raise RuntimeError('jaxface data synth failed in the synth_start '
                           f'benchmark:\n{done.stderr[-2000:]}')

    with on_cores(1):  # the child inherits it
      seconds = time_repeats(make, args.repeats, max(args.warmup, 1))
  return measurement('synth_start',
                     f'data synth, {args.records} records, new process, '
                     'one core', args.records, seconds)


# --- reporting ---------------------------------------------------------------


def machine() -> dict:
  """The device, the host and the versions behind the figures."""
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  name = re.search(r'^model name\s*:\s*(.*)$', _cpuinfo(), re.M)
  cpu = name.group(1).strip() if name else platform.processor() or 'unknown'
  return {'platform': device.platform, 'device_kind': device.device_kind,
          'device_count': jax.device_count(), 'cpu': cpu,
          'cpu_count': os.cpu_count(),
          'jax': jax.__version__, 'jaxlib': jaxlib.__version__,
          'flax': flax.__version__, 'python': platform.python_version(),
          'xla_flags': os.environ.get('XLA_FLAGS', ''),
          'host': host_setup.describe(),
          'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}


def command(args) -> str:
  """The command line with every option spelt out."""
  parts = ['jaxface', 'bench', '--what', ','.join(args.what_list),
           '--model', args.model,
           *(['--pretrained', args.pretrained] if args.pretrained else []),
           '--width', str(args.width),
           '--resolution', str(args.resolution),
           '--batch', ','.join(map(str, args.batches)),
           '--steps', str(args.steps),
           '--infer-batch', ','.join(map(str, args.infer_batches)),
           '--dtype', args.dtype, '--repeats', str(args.repeats),
           '--warmup', str(args.warmup), '--records', str(args.records),
           '--workers', str(args.workers)]
  if args.config is not None:
    parts += ['--config', args.config]
  for override in args.override:
    parts += ['--override', override]
  for flag, value in (('--data', args.data), ('--json', args.json),
                      ('--peak-flops', args.peak_flops)):
    if value is not None:
      parts += [flag, f'{value:g}' if isinstance(value, float) else value]
  return ' '.join(shlex.quote(p) for p in parts)


def _num(value: float | None, scale: float = 1.0) -> str:
  """`value * scale` to 3 significant digits (whole numbers from 100 on),
  '-' for None."""
  if value is None:
    return '-'
  value *= scale
  return f'{value:.0f}' if abs(value) >= 100 else f'{value:.3g}'


def format_table(result: dict) -> str:
  """The results as text: machine, command, a Markdown table, notes."""
  m = result['machine']
  lines = [f'machine: {m["device_count"]} x {m["device_kind"]} '
           f'({m["platform"]}), {m["cpu_count"]} CPUs ({m["cpu"]}), jax '
           f'{m["jax"]}, {m["date"]}',
           f'peak: {result["peak_source"]}',
           f'host: {m.get("host", "not recorded")}',
           f'command: {result["command"]}', '',
           '| measurement | median ms | spread (min-max) ms | images/s | '
           'GFLOP/image | % of peak |', '|---|---:|---:|---:|---:|---:|']
  notes = []
  for row in result['measurements']:
    lines.append(
        f'| {row["what"]} | {_num(row["median_s"], 1e3)} | '
        f'{_num(row["min_s"], 1e3)}-{_num(row["max_s"], 1e3)} | '
        f'{_num(row["images_per_s"])} | '
        f'{_num(row["flops_per_image"], 1e-9)} | '
        f'{_num(row["peak_fraction"], 100)} |')
    if 'compile_s' in row:
      notes.append(f'{row["what"]}: compiled in {row["compile_s"]:.1f} s')
    if 'minor_faults' in row:
      notes.append(f'{row["what"]}: per step, this process used '
                   f'{row["host_user_s"]:.2f} s of CPU in user space and '
                   f'{row["host_system_s"]:.2f} s in the kernel, '
                   f'{row["minor_faults"]:.0f} minor page faults')
    if 'init_s' in row:
      notes.append(f'{row["what"]}: initial state in {row["init_s"]:.1f} s '
                   '(compilation included)')
    if 'records_sha256' in row:
      notes.append(f'synth: sha256 of train records 0-'
                   f'{_SYNTH_DIGEST_RECORDS - 1}: {row["records_sha256"]} '
                   '(the same for code that renders the same records)')
    if row.get('vs_train') is not None:
      notes.append(f'pipeline: {row["vs_train"]:.1f}x the train step\'s '
                   'images/s (goal: >= 5x)')
  return '\n'.join(lines + [''] + notes)


def benchmark(args) -> dict:
  """Runs the measurements of checked `args` (`check_args`); the result
  that `--json` writes."""
  import jax  # pylint: disable=g-import-not-at-top
  info = machine()
  peak, source = peak_flops(jax.devices()[0].device_kind, args.dtype,
                            args.peak_flops)
  rows = []
  if 'train' in args.what_list:
    rows += [bench_train(args, peak, b) for b in args.batches]
  if 'infer' in args.what_list:
    rows += bench_infer(args, peak)
  if 'pipeline' in args.what_list:
    train_rate = next((row['images_per_s'] for row in rows
                       if row['name'] == f'train_b{args.batches[0]}'), None)
    rows.append(bench_pipeline(args, train_rate))
  if 'synth' in args.what_list:
    rows.append(bench_synth(args))
  if 'synth_start' in args.what_list:
    rows.append(bench_synth_start(args))
  return {'command': command(args), 'machine': info,
          'model': {'name': args.pretrained or args.model,
                    'width': args.width,
                    'resolution': args.resolution, 'dtype': args.dtype},
          'peak_flops': peak, 'peak_source': source,
          'spread': 'min-max over the repeats', 'measurements': rows}


def run(args) -> int:
  check_args(args)
  result = benchmark(args)
  print(format_table(result))
  if args.json:
    files.write_json(args.json, result)
    print(f'wrote {args.json}')
  return 0
