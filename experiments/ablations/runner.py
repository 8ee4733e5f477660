"""The ablation runner: train and measure each variant of a study, per seed.

A study (one small script beside this one) is a base config file, named
variants (config overrides, the first one the baseline), seeds, the
metrics to report, and scales (overrides applied to every run, and the
synthetic data they need):

    python -m experiments.ablations.cycle --scale cpu

For each variant and seed the runner trains `RUNS/<study>/<scale>/<variant>/
seed<k>` with `loop.run` (a finished run is kept, an interrupted one
resumes from its last checkpoint), measures it with the study's evaluator
(kept in the run's `ablation_eval.json`), and writes into
`experiments/results/<study>/`:

- `results.json`: every run's status, metrics and wall time, and per
  variant the mean, standard deviation and the difference to the baseline
  with its 95 % interval (`difference_interval`);
- `results.md`: that table, its caption the command and the wall time;
- `results.png`: each metric per variant with error bars, and the mean
  learning curve of each variant.

A run that fails (a bad override, a NaN, a crash of its evaluation) is
reported as failed in the table and the study goes on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
import traceback
from typing import Any, Callable, Sequence

import numpy as np
import scipy.stats

from jaxface import files
from jaxface.data import shards
from jaxface.eval import plots
from jaxface.train import config_lib
from jaxface.train import metrics as metrics_lib

EVAL_NAME = 'ablation_eval.json'


class StudyStopped(KeyboardInterrupt):
  """A run stopped by SIGTERM or SIGINT (its checkpoint saved): the study
  stops too, and a rerun resumes it."""
RESULTS = ('results.json', 'results.md', 'results.png')


@dataclasses.dataclass(frozen=True)
class Variant:
  """A named set of `KEY=VALUE` config overrides (config_lib syntax), run
  at the named `scales` only (empty: at every scale). With `leave_out`
  (parts of `synthetic.REALISM_PARTS`) it trains on the scale's data
  rendered without those parts (its own dataset, rendered once); every
  variant is measured on the scale's data."""
  name: str
  overrides: tuple[str, ...] = ()
  scales: tuple[str, ...] = ()
  leave_out: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Metric:
  """A number of the evaluator's report: `path` is its dotted key (e.g.
  'nme_2d.mean_of_bins'); `scale` multiplies it for the table (100: %)."""
  path: str
  label: str
  lower_is_better: bool = True
  scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class Data:
  """Synthetic data a scale trains on (`jaxface.data.synthetic`)."""
  resolution: int
  kinds: tuple[str, ...] = ('recon',)
  num_train: int = 3000
  num_test: int = 256
  identities: tuple[tuple[str, int], ...] = (('train', 500), ('test', 100))
  crop_jitter: float = 0.0
  leave_out: tuple[str, ...] = ()

  def folder(self) -> str:
    return (f'synth{self.resolution}-{"-".join(self.kinds)}-{self.num_train}'
            f'-{self.num_test}' + ''.join(f'-no{p}' for p in self.leave_out))


@dataclasses.dataclass(frozen=True)
class Scale:
  """Overrides applied to every run of a study (steps, width, ...), the
  data it trains on, and the overrides of a run trained once per seed
  before the variants (e.g. PRNet's pretraining; None: none), whose workdir
  every variant receives as the study's `pretrain_key`."""
  overrides: tuple[str, ...]
  data: Data
  pretrain: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Study:
  """An ablation study.

  Attributes:
    name: the folder of its results (experiments/results/<name>).
    title: one line for the table's heading.
    config: the base config file, relative to the repository root.
    variants: the first is the baseline the others are compared with.
    metrics: what the table reports.
    evaluate: (workdir, data_dir) -> the evaluator's report (a dict).
    scales: by name; `--scale NAME` picks one.
    seeds: default seeds (`--seeds` overrides).
    pretrain_key: the config key that receives the workdir of the scale's
      pretraining run.
  """
  name: str
  title: str
  config: str
  variants: tuple[Variant, ...]
  metrics: tuple[Metric, ...]
  evaluate: Callable[[str, str], dict]
  scales: dict[str, Scale]
  seeds: tuple[int, ...] = (0, 1, 2)
  pretrain_key: str = ''


def repo_root() -> str:
  return os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))


# ------------------------------------------------------------- statistics --


def mean_std(values: Sequence[float]) -> dict:
  """{'mean', 'std' (ddof 1; None below 2 values), 'n'} of finite values."""
  v = np.asarray([x for x in values if x is not None and np.isfinite(x)],
                 np.float64)
  if not v.size:
    return {'mean': None, 'std': None, 'n': 0}
  return {'mean': float(v.mean()),
          'std': float(v.std(ddof=1)) if v.size > 1 else None,
          'n': int(v.size)}


def difference_interval(values: Sequence[float], baseline: Sequence[float],
                        confidence: float = 0.95) -> dict:
  """mean(values) - mean(baseline) with Welch's t interval.

  The runs of two variants are independent samples with possibly
  different variances: the standard error is sqrt(s1^2/n1 + s2^2/n2), the
  degrees of freedom Welch-Satterthwaite's. Returns {'diff', 'low',
  'high'}; the bounds are None with fewer than 2 runs on either side (and
  equal to diff when both spreads are 0).
  """
  a = np.asarray(values, np.float64)
  b = np.asarray(baseline, np.float64)
  a, b = a[np.isfinite(a)], b[np.isfinite(b)]
  if not a.size or not b.size:
    return {'diff': None, 'low': None, 'high': None}
  diff = float(a.mean() - b.mean())
  if a.size < 2 or b.size < 2:
    return {'diff': diff, 'low': None, 'high': None}
  va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
  se = np.sqrt(va + vb)
  if se == 0:
    return {'diff': diff, 'low': diff, 'high': diff}
  dof = (va + vb)**2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
  half = float(scipy.stats.t.ppf(0.5 + confidence / 2, dof) * se)
  return {'diff': diff, 'low': diff - half, 'high': diff + half}


def lookup(report: dict, path: str) -> float | None:
  """The number at dotted `path` of `report`, or None where it is absent."""
  value: Any = report
  for key in path.split('.'):
    if not isinstance(value, dict) or key not in value:
      return None
    value = value[key]
  return None if value is None else float(value)


# ------------------------------------------------------------------ runs --


def _one_line(e: BaseException) -> str:
  text = ' '.join(str(e).split()) or type(e).__name__
  return f'{type(e).__name__}: {text}'[:300]


def _finished(workdir: str, num_steps: int) -> dict | None:
  """The summary of a finished run in `workdir`, else None."""
  path = os.path.join(workdir, 'summary.json')
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    summary = json.load(f)
  done = summary.get('steps', 0) >= num_steps and not summary.get('preempted')
  return summary if done else None


def _train(config_path: str, overrides: Sequence[str], workdir: str
           ) -> tuple[float, bool]:
  """Trains unless finished: (seconds of its training, whether the run was
  already finished)."""
  from jaxface.train import loop  # pylint: disable=g-import-not-at-top
  config = config_lib.apply_overrides(config_lib.load_config(config_path),
                                      list(overrides))
  summary = _finished(workdir, config.train.num_steps)
  if summary is not None:
    return float(summary.get('wall_seconds', 0.0)), True
  start = time.perf_counter()
  summary = loop.run(config, workdir)
  if summary.get('stopped_by'):
    raise StudyStopped(f'{workdir}: {summary["stopped_by"]} at step '
                       f'{summary["steps"]}; rerun the study to resume')
  return time.perf_counter() - start, False


def _curve(workdir: str) -> list[tuple[int, float]]:
  """(step, train loss) of a run's metrics log."""
  path = os.path.join(workdir, metrics_lib.JSONL_NAME)
  if not os.path.isfile(path):
    return []
  return [(int(r['step']), float(r['train/loss']))
          for r in metrics_lib.read_jsonl(path) if 'train/loss' in r]


def run_one(study: Study, config_path: str, overrides: Sequence[str],
            workdir: str, data_dir: str) -> dict:
  """Trains and measures one run; never raises for the run's own failure.

  Returns {'status': 'ok' | 'failed', 'error', 'metrics' {path: value},
  'train_seconds' (of the run's training, also when it was already
  finished), 'reused' (it was), 'eval_seconds', 'workdir'}.
  """
  out = {'workdir': workdir, 'status': 'ok', 'error': None, 'metrics': {},
         'train_seconds': None, 'reused': False, 'eval_seconds': None}
  stage = 'training'
  try:
    out['train_seconds'], out['reused'] = _train(config_path, overrides,
                                                 workdir)
    stage = 'evaluation'
    cached = os.path.join(workdir, EVAL_NAME)
    start = time.perf_counter()
    if os.path.isfile(cached) and out['reused']:
      with open(cached) as f:
        report = json.load(f)
    else:
      report = study.evaluate(workdir, data_dir)
      report.setdefault('seconds', time.perf_counter() - start)
      files.write_json(cached, report, default=float)
    out['eval_seconds'] = float(report.get('seconds',
                                           time.perf_counter() - start))
    out['metrics'] = {m.path: lookup(report, m.path) for m in study.metrics}
  except KeyboardInterrupt:
    raise
  except Exception as e:  # pylint: disable=broad-except
    out['status'] = 'failed'
    out['error'] = f'{stage}: {_one_line(e)}'
    print(f'  FAILED ({out["error"]})', file=sys.stderr)
    traceback.print_exc(limit=3)
  return out


def ensure_data(data: Data, folder: str) -> str:
  """The study's synthetic dataset in `folder`, rendered if absent."""
  if os.path.isfile(os.path.join(folder, shards.DATASET_INFO)):
    return folder
  from jaxface.data import synthetic  # pylint: disable=g-import-not-at-top
  config = synthetic.SynthConfig(resolution=data.resolution,
                                 identities=data.identities,
                                 crop_jitter=data.crop_jitter,
                                 leave_out=data.leave_out)
  counts = {kind: {'train': data.num_train, 'test': data.num_test}
            for kind in data.kinds}
  print(f'rendering the study\'s synthetic data into {folder} ...')
  synthetic.synthesize(folder, config, counts, workers=2)
  return folder


# --------------------------------------------------------------- results --


def summarize(study: Study, runs: dict[str, list[dict]]) -> dict:
  """Per variant and metric: mean +- std over the finished runs and the
  difference to the baseline (the first variant) with its 95 % interval."""
  baseline = study.variants[0].name
  table = {}
  for variant in study.variants:
    done = [r for r in runs[variant.name] if r['status'] == 'ok']
    row = {'runs': len(runs[variant.name]), 'ok': len(done),
           'errors': sorted({r['error'] for r in runs[variant.name]
                             if r['error']}), 'metrics': {}}
    for m in study.metrics:
      values = [r['metrics'].get(m.path) for r in done]
      base = [r['metrics'].get(m.path) for r in runs[baseline]
              if r['status'] == 'ok']
      clean = lambda xs: [x for x in xs if x is not None]  # noqa: E731
      row['metrics'][m.path] = {
          **mean_std(clean(values)),
          'vs_baseline': (None if variant.name == baseline else
                          difference_interval(clean(values), clean(base)))}
    table[variant.name] = row
  return table


def _cell(stats: dict, scale: float) -> str:
  if stats['mean'] is None:
    return '-'
  std = '' if stats['std'] is None else f' +- {stats["std"] * scale:.3g}'
  return f'{stats["mean"] * scale:.4g}{std}'


def _diff_cell(diff: dict | None, scale: float) -> str:
  if not diff or diff['diff'] is None:
    return ''
  text = f'{diff["diff"] * scale:+.3g}'
  if diff['low'] is not None:
    text += f' [{diff["low"] * scale:+.3g}, {diff["high"] * scale:+.3g}]'
  return text


def markdown(study: Study, results: dict) -> str:
  """The table: one row per variant; per metric the mean +- std over seeds
  and the difference to the baseline [95 % interval]."""
  head = ['variant', 'overrides', 'runs ok']
  for m in study.metrics:
    head += [m.label, f'{m.label}: vs baseline [95 %]']
  lines = [f'# {study.title}', '',
           f'`{results["command"]}` ({results["scale"]} scale, seeds '
           f'{", ".join(map(str, results["seeds"]))}; '
           f'{results["run_seconds"] / 60:.1f} min of training and '
           f'evaluation on '
           f'{results["machine"]}, {results["date"]}'
           f'{"" if results.get("complete", True) else "; in progress"}). '
           'Lower is better for every metric marked "(lower)". The first '
           'row is the baseline; intervals: Welch\'s t over seeds.', '',
           '| ' + ' | '.join(head) + ' |',
           '|' + '---|' * len(head)]
  variants = {v.name: v for v in study.variants}
  for name, row in results['table'].items():
    ok = f'{row["ok"]}/{row["runs"]}'
    if row['errors']:
      ok += ' (failed: ' + '; '.join(row['errors']) + ')'
    changes = [f'`{o}`' for o in variants[name].overrides] + [
        f'data without {",".join(variants[name].leave_out)}'
    ] * bool(variants[name].leave_out)
    cells = [name, ' '.join(changes) or '(base config)', ok]
    for m in study.metrics:
      stats = row['metrics'][m.path]
      cells += [_cell(stats, m.scale), _diff_cell(stats['vs_baseline'],
                                                  m.scale)]
    lines.append('| ' + ' | '.join(c.replace('|', '/') for c in cells) + ' |')
  return '\n'.join(lines) + '\n'


def _mean_curve(curves: list[list[tuple[int, float]]]
                ) -> tuple[np.ndarray, np.ndarray]:
  """The mean over runs of train loss at the steps all runs logged."""
  curves = [dict(c) for c in curves if c]
  if not curves:
    return np.zeros(0), np.zeros(0)
  steps = sorted(set.intersection(*(set(c) for c in curves)))
  return (np.asarray(steps, np.float64),
          np.asarray([np.mean([c[s] for c in curves]) for s in steps]))


def write_results(study: Study, results: dict, curves: dict, out: str
                  ) -> dict[str, str]:
  os.makedirs(out, exist_ok=True)
  paths = dict(zip(('json', 'md', 'png'),
                   (os.path.join(out, name) for name in RESULTS)))
  files.write_json(paths['json'], results, default=float)
  files.write_atomic(paths['md'], markdown(study, results).encode())
  bars = {}
  for m in study.metrics:
    bars[m.label] = [(name, row['metrics'][m.path]['mean'],
                      row['metrics'][m.path]['std'], m.scale)
                     for name, row in results['table'].items()]
  plots.ablation_plot(bars, {name: _mean_curve(c)
                             for name, c in curves.items()},
                      paths['png'], title=study.title)
  return paths


# ------------------------------------------------------------------ main --


def _parser(study: Study) -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=study.title)
  parser.add_argument('--scale', default='cpu', choices=sorted(study.scales))
  parser.add_argument('--seeds', default=','.join(map(str, study.seeds)),
                      help='comma-separated seeds')
  parser.add_argument('--variants', default='',
                      help='comma-separated variant names (default: all)')
  parser.add_argument('--runs', default='runs/ablations',
                      help='where the runs and their data live')
  parser.add_argument('--data', default='',
                      help='a dataset to use instead of rendering the '
                           "scale's synthetic data")
  parser.add_argument('--out', default='',
                      help='results folder (default: experiments/results/'
                           '<study>)')
  parser.add_argument('--override', action='append', default=[],
                      help='KEY=VALUE applied to every run (repeatable)')
  return parser


def _run_all(study: Study, scale: Scale, seeds: Sequence[int],
             common: Sequence[str], root: str, config_path: str,
             data_dir: str, runs: dict, curves: dict,
             write_partial: Callable[[], Any], data_root: str) -> None:
  """Every seed's pretraining (if any) and variants, in order, filling
  `runs` and `curves`; the tables are rewritten after every run. Variants
  with `leave_out` train on data rendered into `data_root`."""
  own_data = {}
  for v in study.variants:
    if v.leave_out:
      data = dataclasses.replace(scale.data, leave_out=v.leave_out)
      folder = ensure_data(data, os.path.join(data_root, data.folder()))
      own_data[v.name] = [f'data.dir={folder}']
  for seed in seeds:
    seeded = [*common, f'seed={seed}']
    if scale.pretrain is not None:
      pre_dir = os.path.join(root, 'pretrain', f'seed{seed}')
      print(f'[{study.name}] pretraining, seed {seed}: {pre_dir}')
      pre = run_one(study, config_path, [*seeded, *scale.pretrain], pre_dir,
                    data_dir)
      seeded.append(f'{study.pretrain_key}={pre_dir}')
      if pre['status'] != 'ok':
        for v in study.variants:
          runs[v.name].append({**pre, 'seed': seed, 'error':
                               f'pretraining {pre["error"]}'})
        continue
    for v in study.variants:
      workdir = os.path.join(root, v.name, f'seed{seed}')
      print(f'[{study.name}] {v.name}, seed {seed}: {workdir}')
      result = run_one(study, config_path,
                       [*seeded, *own_data.get(v.name, []), *v.overrides],
                       workdir, data_dir)
      runs[v.name].append({**result, 'seed': seed,
                           'overrides': list(v.overrides),
                           'leave_out': list(v.leave_out)})
      curves[v.name].append(_curve(workdir))
      # The tables so far: a long study shows its results as they come.
      write_partial()


def main(study: Study, argv: Sequence[str] | None = None) -> dict:
  """Runs `study` from the command line; returns results.json's content."""
  argv = list(sys.argv[1:] if argv is None else argv)
  args = _parser(study).parse_args(argv)
  try:
    seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
  except ValueError:
    raise SystemExit(f'--seeds: comma-separated integers, got {args.seeds!r}')
  names = [n for n in args.variants.split(',') if n]
  unknown = set(names) - {v.name for v in study.variants}
  if unknown:
    raise SystemExit(f'--variants: no variant {sorted(unknown)} in '
                     f'{study.name}; choose from '
                     f'{[v.name for v in study.variants]}')
  if names:  # the baseline always runs: the table compares with it
    study = dataclasses.replace(study, variants=tuple(
        v for i, v in enumerate(study.variants) if i == 0 or v.name in names))
  study = dataclasses.replace(study, variants=tuple(
      v for v in study.variants if not v.scales or args.scale in v.scales))
  scale = study.scales[args.scale]
  root = os.path.join(args.runs, study.name, args.scale)
  data_root = os.path.join(args.runs, 'data')
  data_dir = args.data or ensure_data(
      scale.data, os.path.join(data_root, scale.data.folder()))
  config_path = os.path.join(repo_root(), study.config)
  common = [f'data.dir={data_dir}', *scale.overrides, *args.override,
            'train.progress=false']
  start = time.perf_counter()
  runs = {v.name: [] for v in study.variants}
  curves = {v.name: [] for v in study.variants}
  out = args.out or os.path.join(repo_root(), 'experiments', 'results',
                                 study.name)

  def results(complete: bool) -> dict:
    return {
        'study': study.name, 'title': study.title, 'scale': args.scale,
        'command': 'python -m experiments.ablations.' + study.name + (
            ' ' + shlex.join(argv) if argv else ''),
        'complete': complete, 'seeds': seeds,
        'date': time.strftime('%Y-%m-%d'),
        'machine': f'{os.cpu_count()} CPU cores',
        'wall_seconds': time.perf_counter() - start,
        # training and evaluation of every run, also of runs reused here
        'run_seconds': sum((r['train_seconds'] or 0) + (r['eval_seconds'] or 0)
                           for rs in runs.values() for r in rs),
        'base_config': study.config,
        'scale_overrides': list(scale.overrides), 'data': data_dir,
        'metrics': [dataclasses.asdict(m) for m in study.metrics],
        'table': summarize(study, runs), 'runs': runs}

  try:
    _run_all(study, scale, seeds, common, root, config_path, data_dir, runs,
             curves, lambda: write_results(study, results(False), curves,
                                           out), data_root)
  except StudyStopped as e:
    print(f'[{study.name}] stopped: {e}', file=sys.stderr)
    raise SystemExit(130) from e
  final = results(True)
  paths = write_results(study, final, curves, out)
  print(markdown(study, final))
  for path in paths.values():
    print(f'  {path}')
  return final
