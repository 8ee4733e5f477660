"""The training loop: one pure step per phase, jitted once over the mesh.

`run(config, workdir)` checks the config and the dataset (before anything is
compiled), builds the task's state, resumes from the workdir's last
checkpoint if there is one, and trains: the batch is sharded over the
'data' axis of a mesh of all devices, the state replicated and donated, the
step's randomness is `fold_in(key(seed), step)`. Every `log_every` steps the
mean metrics go to TensorBoard event files and metrics.jsonl, every
`eval_every` steps the eval split is measured and a PNG drawn, every
`checkpoint_every` steps (and at the end) a checkpoint is saved. The task
reads landmarks and masks in the UV layout of the dataset's position maps
(dataset.json's `uv_layout`, `layout.layout_of_dataset`), which model.json
records for eval and inference. With `config.mix`, each batch also carries
2D records of a landmark scheme from a second dataset
(`pipeline.MixedIterator`; see `recon.ReconTask`).

Faults: SIGTERM (preemption) saves a checkpoint and returns normally; a
non-finite loss raises `TrainingError` naming the step and the value, and
saves nothing (the last good checkpoint stays as it was); a run killed
between checkpoints and started again in the same workdir resumes from the
last checkpoint and, on the same machine and seed, ends with the parameters
of an uninterrupted run (the input iterator's state is in the checkpoint).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import signal
import tempfile
import time
from typing import Any

import jax
import numpy as np
import tqdm

from jaxface.data import augment as augment_lib
from jaxface.data import padding
from jaxface.data import pipeline
from jaxface.data import shards
from jaxface.eval import plots
from jaxface.face import layout as layout_lib
from jaxface.face import schemes
from jaxface.train import checkpoint as checkpoint_lib
from jaxface.train import metrics as metrics_lib
from jaxface.train import optim
from jaxface.train import state as state_lib
from jaxface.train import task as task_lib
from jaxface.train import trained as trained_lib


class TrainingError(RuntimeError):
  """Training cannot go on (non-finite loss, ...)."""


def _check_config(config) -> None:
  """ValueError for config values that cannot make a sensible run, before
  anything is written or compiled."""
  problems = []
  for name in ('num_steps', 'log_every', 'eval_every', 'checkpoint_every',
               'keep_checkpoints'):
    value = config.train[name]
    if not isinstance(value, int) or value < 1:
      problems.append(f'config.train.{name} must be a whole number >= 1, got '
                      f'{value!r}')
  optimizers = {'optimizer': config.optimizer}
  for task in ('cycle', 'facegen'):
    if config.get(task) and config[task].get('disc_optimizer'):
      optimizers[f'{task}.disc_optimizer'] = config[task].disc_optimizer
  for name, optimizer in optimizers.items():
    if not optimizer.lr > 0:
      problems.append(f'config.{name}.lr must be > 0, got {optimizer.lr!r}')
  for name in ('global_batch_size', 'eval_batch_size'):
    if config.data[name] < 1:
      problems.append(f'config.data.{name} must be >= 1, got '
                      f'{config.data[name]!r}')
  if problems:
    raise ValueError('; '.join(problems))


def _check_dataset(config) -> dict:
  """Reads dataset.json; clear errors for a missing or wrong dataset."""
  if not config.data.dir:
    raise ValueError('config.data.dir is empty: pass --config.data.dir=DIR '
                     '(a dataset made by `jaxface data synth` or a converter)')
  info = shards.read_dataset_info(config.data.dir)
  kind = _task_kind(config.task)
  if kind not in info['kinds']:
    raise shards.DatasetError(
        f'{config.data.dir} has no {kind!r} records, which task '
        f'{config.task!r} trains on; it has {sorted(info["kinds"])}')
  for split in (config.data.train_split, config.data.eval_split):
    if split and split not in info['kinds'][kind]:
      raise shards.DatasetError(
          f'{config.data.dir} has no {split!r} split of {kind} records; it '
          f'has {sorted(info["kinds"][kind])}')
  return info


def _check_mix_dataset(config, info: dict) -> schemes.Scheme | None:
  """Checks config.mix's dataset of 2D records; returns its landmark scheme
  (None when config.mix is off)."""
  mix = config.get('mix')
  if mix is None or not mix.dir:
    return None
  if config.task != 'prnet':
    raise ValueError(f'config.mix (2D records) is for the prnet task, not '
                     f'{config.task!r}')
  if mix.batch_size <= 0:
    raise ValueError(f'config.mix.dir is set but config.mix.batch_size is '
                     f'{mix.batch_size}; give the 2D records per step')
  try:
    mix_info = shards.read_dataset_info(mix.dir)
  except shards.DatasetError as e:
    raise shards.DatasetError(f'config.mix.dir: {e}') from e
  splits = mix_info['kinds'].get('recon', {})
  if mix.split not in splits:
    raise shards.DatasetError(
        f'config.mix.dir {mix.dir} has no {mix.split!r} split of recon '
        f'records; it has {sorted(splits)}')
  if mix_info['resolution'] != info['resolution']:
    raise shards.DatasetError(
        f'config.mix.dir {mix.dir} holds {mix_info["resolution"]}-pixel '
        f'crops, config.data.dir {info["resolution"]}-pixel ones; convert '
        f'the 2D dataset with --resolution {info["resolution"]}')
  first = shards.first_record(mix.dir, 'recon', mix.split)
  if first is None or 'scheme' not in first:
    raise shards.DatasetError(
        f'config.mix.dir {mix.dir}: its first records are not 2D records '
        "(no 'scheme' field; make them with `jaxface data "
        "convert-landmarks2d`)")
  scheme = schemes.get(first['scheme'])
  if len(first['points2d']) != scheme.num_points:
    raise shards.DatasetError(
        f'config.mix.dir {mix.dir}: its records have '
        f'{len(first["points2d"])} points, scheme {scheme.name!r} has '
        f'{scheme.num_points}')
  return scheme


def _task_kind(task: str) -> str:
  return task_lib.task_class(task).data_kind


def make_task(config, resolution: int,
              layout: layout_lib.UVLayout | None = None,
              mix_scheme: schemes.Scheme | None = None) -> task_lib.Task:
  """The task of `config.task` (`task.TASKS`) for data at `resolution`
  (pixels).

  Args:
    config: the run's config.
    resolution: side of the dataset's images and position maps.
    layout: the UV layout of the dataset's position maps
      (`layout.layout_of_dataset`); None: the procedural face model's. The
      progression task has no position maps and ignores it.
    mix_scheme: the landmark scheme of config.mix's 2D records (prnet).
  """
  cls = task_lib.task_class(config.task)
  tx = optim.make_optimizer(config.optimizer, config.train.num_steps)
  return cls.build(config, resolution, tx, layout, mix_scheme)


def augment_config(config) -> augment_lib.AugmentConfig:
  """config.data.augment (on / off) and config.data.augmentation (the
  ranges and probabilities; configs without it get the defaults) as an
  `AugmentConfig`; ValueError naming a bad field."""
  fields = dict(config.data.get('augmentation') or {})
  known = {f.name for f in dataclasses.fields(augment_lib.AugmentConfig)
           } - {'enabled'}  # that is config.data.augment
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f'config.data.augmentation has unknown field(s) '
                     f'{unknown}; it takes {sorted(known)}')
  fields = {k: tuple(v) if isinstance(v, (list, tuple)) else v
            for k, v in fields.items()}
  return augment_lib.AugmentConfig(enabled=bool(config.data.augment),
                                   **fields)


def _iterator(config, split: str, training: bool, batch_size: int,
              directory: str | None = None):
  augment = augment_config(config)
  return pipeline.make_iterator(
      directory or config.data.dir, pipeline.PipelineConfig(
          kind=_task_kind(config.task), split=split,
          global_batch_size=batch_size, shuffle=training, seed=config.seed,
          num_epochs=None if training else 1,
          worker_count=config.data.worker_count if training else 0,
          augment=augment, training=training, drop_remainder=training))


def _train_iterator(config, mixed: bool):
  """The training batches: config.data's, plus config.mix's 2D records
  (`pipeline.MixedIterator`) when `mixed`."""
  main = _iterator(config, config.data.train_split, True,
                   config.data.global_batch_size)
  if not mixed:
    return main
  try:
    mix = _iterator(config, config.mix.split, True, config.mix.batch_size,
                    directory=config.mix.dir)
  except Exception:
    main.close()
    raise
  return pipeline.MixedIterator(main, mix)


class _NoWriter:
  """The metric writer of processes other than 0."""

  def write_scalars(self, step, scalars):
    del step, scalars

  def close(self):
    pass


class _Preemption:
  """Turns SIGTERM into a flag the loop checks between steps."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def evaluate(task, eval_step, state, config, mesh) -> tuple[dict, dict | None,
                                                             np.ndarray]:
  """Mean eval metrics over the eval split (or `eval_batches` batches).

  Returns (metrics, the first eval batch (host numpy), all true landmarks).
  """
  it = _iterator(config, config.data.eval_split, False,
                 config.data.eval_batch_size)
  sums: dict[str, float] = {}
  count, first, landmarks = 0, None, []
  try:
    for k, batch in enumerate(it):
      if config.train.eval_batches and k >= config.train.eval_batches:
        break
      first = first or batch
      landmarks.append(batch['landmarks'])
      n = len(batch['index'])
      # Pad the (possibly partial) last batch to a multiple of the devices.
      padded = padding.pad_batch(batch, n + (-n) % mesh.size)
      out = eval_step(state, pipeline.to_global_arrays(padded, mesh))
      for key, value in out.items():
        sums[key] = sums.get(key, 0.0) + float(np.sum(np.asarray(value)[:n]))
      count += n
  finally:
    it.close()
  if not count:
    raise TrainingError(f'the eval split {config.data.eval_split!r} gave no '
                        'records')
  return ({k: v / count for k, v in sums.items()}, first,
          np.concatenate(landmarks))


def run(config, workdir: str) -> dict:
  """Trains `config` in `workdir`; returns the summary (also saved)."""
  state_lib.maybe_initialize_distributed()
  _check_config(config)
  info = _check_dataset(config)
  mix_scheme = _check_mix_dataset(config, info)
  os.makedirs(workdir, exist_ok=True)
  # With several processes (hosts) the workdir is shared; process 0 writes
  # its files, orbax coordinates the checkpoints.
  lead = jax.process_index() == 0
  if lead:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
  mesh = state_lib.make_mesh()
  sizes = {'data.global_batch_size': config.data.global_batch_size}
  if mix_scheme:
    sizes['mix.batch_size'] = config.mix.batch_size
  for name, size in sizes.items():
    if size % mesh.size:
      raise ValueError(f'config.{name} ({size}) must be divisible by the '
                       f'number of devices ({mesh.size})')
  layout = layout_lib.layout_of_dataset(info)
  task = make_task(config, int(info['resolution']), layout, mix_scheme)
  if lead:
    trained_lib.write_model_info(workdir, config.task,
                                 int(info['resolution']), layout)
  repl = state_lib.replicated(mesh)

  train_it = _train_iterator(config, mixed=mix_scheme is not None)
  checkpointer = None
  try:  # close the input workers (and orbax) if start-up fails
    initial_data_state = train_it.get_state()
    first = pipeline.to_global_arrays(next(train_it), mesh)  # for shapes
    base_key = jax.random.key(config.seed)
    state = jax.jit(task.init_state, out_shardings=repl)(base_key, first)

    checkpointer = checkpoint_lib.Checkpointer(
        workdir, keep=config.train.keep_checkpoints,
        best_metric=task.best_metric, best_mode=task.best_mode)
    start = checkpointer.latest_step()
    if start is not None:
      state, data_state, _ = checkpointer.restore(
          start, checkpoint_lib.abstract(state, repl))
      train_it.set_state(data_state)
      print(f'resumed from the checkpoint of step {start} in {workdir}')
    else:
      train_it.set_state(initial_data_state)  # start over after the peek
      start = 0
      state = jax.device_put(task.load_pretrained(state), repl)
  except BaseException:
    train_it.close()
    if checkpointer is not None:
      checkpointer.close()
    raise

  def train_step(state, batch):
    key = jax.random.fold_in(base_key, state.step)
    return task.train_step(state, batch, key)

  train_step = jax.jit(train_step, in_shardings=(repl, None),
                       out_shardings=(repl, repl), donate_argnums=0)
  eval_step = jax.jit(task.eval_step, out_shardings=repl)
  writer = metrics_lib.MetricWriter(workdir) if lead else _NoWriter()
  num_steps = config.train.num_steps
  summary: dict[str, Any] = {'workdir': os.path.abspath(workdir),
                             'start_step': start}
  batch_size = config.data.global_batch_size + (
      config.mix.batch_size if mix_scheme else 0)  # images per step

  saved = {'step': start}

  def save(step, metrics=None):
    if saved['step'] == step:
      return
    saved['step'] = step
    checkpointer.save(step, state, train_it.get_state(),
                      {'step': step, 'config': json.loads(
                          config.to_json_best_effort())}, metrics)

  def do_eval(step):
    metrics, batch, landmarks = evaluate(task, eval_step, state, config, mesh)
    if task.has_baseline and 'nme_mean_face' not in summary:
      baseline_it = _iterator(config, config.data.train_split, False,
                              config.data.eval_batch_size)
      try:
        batches = list(itertools.islice(baseline_it, 8))  # or fewer
      finally:
        baseline_it.close()
      summary.update(task.baseline(batches, landmarks))
    metrics.update({k: v for k, v in summary.items() if k.startswith('nme_')})
    writer.write_scalars(step, {f'eval/{k}': v for k, v in metrics.items()})
    path = os.path.join(workdir, f'eval_{step:07d}.png')
    # Every process computes the figure (the state is a global array);
    # only process 0 keeps it.
    task.figure(state, batch, path if lead else os.path.join(
        tempfile.gettempdir(), f'jaxface_eval_{jax.process_index()}.png'))
    summary['eval'] = metrics
    summary['figure'] = path
    return metrics

  learning_rate = optim.make_schedule(config.optimizer,
                                      config.train.num_steps)
  wall = time.perf_counter()
  step = start
  # The steps' metrics stay on the device until a log, eval or checkpoint
  # step needs them (fetching each step would stall the dispatch of the
  # next); `fetch_window` moves them to the host and checks every step's
  # loss before anything is saved; `values` holds them until the log.
  window: list[tuple[int, dict]] = []
  values: dict[str, list[float]] = {}
  window_start = time.perf_counter()
  bar = tqdm.tqdm(total=num_steps, initial=start, unit='step',
                  disable=not config.train.progress, dynamic_ncols=True)
  preempted = False

  def fetch_window() -> None:
    fetched, window[:] = jax.device_get(window), []
    for at, metrics in fetched:
      loss = float(metrics['loss'])
      if not math.isfinite(loss):
        raise TrainingError(
            f'step {at}: the loss is {loss}; stopping. The last good '
            f'checkpoint (step {checkpointer.latest_step()}) in {workdir} '
            'is untouched')
      for key, value in metrics.items():
        values.setdefault(key, []).append(float(value))

  with _Preemption() as preemption, contextlib.closing(writer):
    try:
      while step < num_steps:
        batch = pipeline.to_global_arrays(next(train_it), mesh)
        state, metrics = train_step(state, batch)
        step += 1
        window.append((step, metrics))
        bar.update(1)
        preempt = preemption.requested  # read once: it may change mid-step
        log = step % config.train.log_every == 0 or step == num_steps
        evals = step % config.train.eval_every == 0 or step == num_steps
        checkpoint = (step % config.train.checkpoint_every == 0 or
                      step == num_steps)
        if log or evals or checkpoint or preempt:
          fetch_window()
        if log:
          seconds = time.perf_counter() - window_start
          means = {f'train/{k}': float(np.mean(v)) for k, v in values.items()}
          means['train/images_per_second'] = len(values['loss']) * (
              batch_size) / max(seconds, 1e-9)
          # The rate of this step's update (optax counts updates from 0).
          means['train/learning_rate'] = float(learning_rate(step - 1))
          writer.write_scalars(step, means)
          bar.set_postfix(loss=f'{means["train/loss"]:.4g}',
                          img_s=f'{means["train/images_per_second"]:.1f}')
          values.clear()
          window_start = time.perf_counter()
        eval_metrics = do_eval(step) if evals else None
        if checkpoint:
          save(step, eval_metrics)
        if preempt:
          save(step)
          preempted = True
          print(f'SIGTERM: saved the checkpoint of step {step}; stopping')
          break
    finally:
      bar.close()
      checkpointer.close()
      train_it.close()
  seconds = time.perf_counter() - wall
  summary.update({'steps': step, 'preempted': preempted,
                  'wall_seconds': seconds,
                  'images_per_second': (step - start) * batch_size / max(
                      seconds, 1e-9),
                  'checkpoints': checkpointer.directory})
  if lead:
    curve = os.path.join(workdir, plots.LEARNING_CURVE)
    records = metrics_lib.read_jsonl(
        os.path.join(workdir, metrics_lib.JSONL_NAME))
    if any('train/loss' in r for r in records):
      name = os.path.basename(os.path.abspath(workdir))
      summary['learning_curve'] = plots.learning_curve_plot(
          records, curve, title=f'{config.task}: {name}')
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(summary, f, indent=2, default=float)
  return summary


def final_variables(workdir: str):
  """(params, batch_stats) of the last checkpoint of `workdir`, numpy."""
  model = trained_lib.load(workdir)
  return model.params, model.batch_stats


def tree_equal(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a),
                                                  jax.tree.leaves(b)))
