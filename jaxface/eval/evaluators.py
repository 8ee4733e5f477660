"""Evaluators: the measurements of `jaxface eval`, also run while training.

One table, `EVALUATORS`, names each kind of measurement and the tasks it
applies to. `jaxface eval` runs the one of a model's task
(`for_task`); a training run runs the ones its config declares in
`config.evals`, on its own current weights, and logs their figures as
`evals/NAME/PATH` (PATH a dotted path into the report, e.g.
`nme_2d.mean_of_bins`), so the numbers a run logs are the numbers
`jaxface eval` gives for the same checkpoint, split and records.

  config.evals.NAME = evaluators.config('reconstruction', every=2000)

Each entry (`config()` makes one with every key, so that
`--config.evals.NAME.KEY=VALUE` overrides are type-checked):
  type: a key of `EVALUATORS`.
  data_dir: the dataset ('' : the run's `config.data.dir`).
  split: its split ('' : the run's `config.data.eval_split`).
  every: steps between runs; 0: once, at the end of training.
  limit: the first N records only (0: all).
  batch_size: images per forward pass (0: `config.data.eval_batch_size`).

The loop's own `eval_every` measurement (the task's jitted `eval_step`,
on a few batches, NME by `metrics.nme` like these) stays the quick check
that drives the best-checkpoint choice and the learning curve.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """A kind of measurement.

  Attributes:
    tasks: the training tasks whose models it measures.
    measure: `(model (trained.TrainedModel), data_dir, split, batch_size,
      limit (None: all), progress, **options) -> (report, extra)`: a
      JSON-able report, and what `write` needs besides it (per-image
      arrays, or None).
    write: `(report, extra, out) -> {name: path}`: the report's files.
    table: `report -> str`, its Markdown table.
  """
  tasks: tuple[str, ...]
  measure: Callable[..., tuple[dict, Any]]
  write: Callable[[dict, Any, str], dict[str, str]]
  table: Callable[[dict], str]


def _reconstruction(model, data_dir, split, batch_size, limit, progress,
                    canonical=None, **_):
  """`canonical`: the pose fit's canonical face, a path for
  `metrics.load_canonical` (a BFM folder or a .npy map), or None."""
  from jaxface.eval import metrics  # pylint: disable=g-import-not-at-top
  from jaxface.eval import recon_eval  # pylint: disable=g-import-not-at-top
  return recon_eval.evaluate_reconstruction(
      model, data_dir, split, batch_size, limit,
      metrics.load_canonical(canonical, model.resolution), progress)


def _write_reconstruction(report, per_image, out):
  from jaxface.eval import recon_eval  # pylint: disable=g-import-not-at-top
  return recon_eval.write_outputs(report, per_image, out)


def _table_reconstruction(report):
  from jaxface.eval import recon_eval  # pylint: disable=g-import-not-at-top
  return recon_eval.markdown_table(report)


def _facegen(model, data_dir, split, batch_size, limit, progress,
             classifier=None, samples=1, classifier_dir=None, **_):
  from jaxface.eval import gen_eval  # pylint: disable=g-import-not-at-top
  return gen_eval.evaluate_facegen(
      model, data_dir, split, batch_size, limit, classifier, samples,
      progress, classifier_dir=classifier_dir), None


def _progression(model, data_dir, split, batch_size, limit, progress, **_):
  from jaxface.eval import gen_eval  # pylint: disable=g-import-not-at-top
  return gen_eval.evaluate_progression(
      model, data_dir, split, batch_size, limit, progress), None


def _write_gen(report, _, out):
  from jaxface.eval import gen_eval  # pylint: disable=g-import-not-at-top
  return gen_eval.write_outputs(report, out)


def _table_gen(report):
  from jaxface.eval import gen_eval  # pylint: disable=g-import-not-at-top
  return gen_eval.markdown_table(report)


EVALUATORS: dict[str, Evaluator] = {
    # AFLW2000-3D's protocol on 3D records (NME 2D / 3D per yaw bin, dense
    # NME, head pose), AFLW's visible-point NME on 2D records.
    'reconstruction': Evaluator(('prnet', 'cycle'), _reconstruction,
                                _write_reconstruction, _table_reconstruction),
    # Inception Score, Frechet distance, geometric consistency, error
    # against the true faces (a jaxface identity classifier).
    'facegen': Evaluator(('facegen',), _facegen, _write_gen, _table_gen),
    # The RNN's accuracy and loss on held-out clips.
    'progression': Evaluator(('progression',), _progression, _write_gen,
                             _table_gen),
}

CONFIG_KEYS = ('type', 'data_dir', 'split', 'every', 'limit', 'batch_size')


def config(kind: str, every: int = 0, data_dir: str = '', split: str = '',
           limit: int = 0, batch_size: int = 0) -> ml_collections.ConfigDict:
  """One `config.evals` entry (see the module docstring)."""
  return ml_collections.ConfigDict(dict(
      type=kind, data_dir=data_dir, split=split, every=every, limit=limit,
      batch_size=batch_size))


def for_task(task: str) -> Evaluator:
  """The evaluator `jaxface eval` runs on a model of `task`."""
  for evaluator in EVALUATORS.values():
    if task in evaluator.tasks:
      return evaluator
  raise ValueError(f'no evaluation for task {task!r}')


def check(evals, task: str) -> list[str]:
  """Problems of a run's `config.evals` (empty when none), as messages
  naming the keys."""
  problems = []
  for name, entry in (evals or {}).items():
    where = f'config.evals.{name}'
    if not isinstance(entry, (dict, ml_collections.ConfigDict)):
      problems.append(f'{where} must be an entry made by '
                      f'jaxface.eval.evaluators.config(), got {entry!r}')
      continue
    missing = [k for k in CONFIG_KEYS if k not in entry]
    unknown = [k for k in entry if k not in CONFIG_KEYS]
    if missing or unknown:
      problems.append(f'{where} must have exactly the keys {CONFIG_KEYS} '
                      f'(missing {missing}, unknown {unknown})')
      continue
    kind = entry['type']
    if kind not in EVALUATORS:
      problems.append(f'{where}.type must be one of {tuple(EVALUATORS)}, got '
                      f'{kind!r}')
    elif task not in EVALUATORS[kind].tasks:
      problems.append(f'{where}.type {kind!r} measures models of '
                      f'{EVALUATORS[kind].tasks}, not of task {task!r}')
    for key in ('every', 'limit', 'batch_size'):
      value = entry[key]
      if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        problems.append(f'{where}.{key} must be a whole number >= 0, got '
                        f'{value!r}')
    if entry['data_dir'] and not os.path.isfile(
        os.path.join(entry['data_dir'], 'dataset.json')):
      problems.append(f'{where}.data_dir {entry["data_dir"]!r} is not a '
                      'jaxface dataset (no dataset.json)')
  return problems


def run_configured(entry, model, run_config, progress: bool = False
                   ) -> tuple[dict, Any]:
  """Measures `model` (a `trained.TrainedModel`) as one `config.evals`
  entry says, with the run's `config.data` where the entry leaves a value
  empty: (report, extra)."""
  evaluator = EVALUATORS[entry['type']]
  return evaluator.measure(
      model, entry['data_dir'] or run_config.data.dir,
      entry['split'] or run_config.data.eval_split,
      entry['batch_size'] or run_config.data.eval_batch_size,
      entry['limit'] or None, progress)


def scalars(report: dict, prefix: str = '') -> dict[str, float]:
  """The report's finite numbers, by dotted path (e.g.
  'nme_2d.mean_of_bins'), leaving out where the report says what was
  measured ('model', 'dataset') and its timing ('seconds')."""
  out = {}
  for key, value in report.items():
    if not prefix and key in ('model', 'dataset', 'seconds'):
      continue
    path = f'{prefix}{key}'
    if isinstance(value, dict):
      out.update(scalars(value, f'{path}.'))
    elif (isinstance(value, (int, float, np.number))
          and not isinstance(value, bool) and np.isfinite(value)):
      out[path] = float(value)
  return out
