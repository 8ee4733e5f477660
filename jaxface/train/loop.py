"""The training loop: one pure step per phase, jitted once over the mesh.

`run(config, workdir)` checks the config and the dataset (before anything is
compiled), builds the task's state, resumes from the workdir's last
checkpoint if there is one, and trains: the batch is sharded over the
'data' axis of a mesh of all devices, the state replicated and donated, the
step's randomness is `fold_in(key(seed), step)`. Every `log_every` steps the
mean metrics go to TensorBoard event files and metrics.jsonl, every
`eval_every` steps the eval split is measured and a PNG drawn, every
`checkpoint_every` steps (and at the end) a checkpoint is saved (each of
these a small piece of `periodic`, which `_train` calls when due). The task
reads landmarks and masks in the UV layout of the dataset's position maps
(dataset.json's `uv_layout`, `layout.layout_of_dataset`), which model.json
records for eval and inference. With `config.mix`, each batch also carries
2D records of a landmark scheme from a second dataset
(`pipeline.MixedIterator`; see `recon.ReconTask`).

Faults: SIGTERM (preemption) and SIGINT (Ctrl-C; a second one interrupts
at once) save a checkpoint and return normally (`summary['stopped_by']`);
a non-finite loss, or a checkpoint that cannot be written, raises
`TrainingError` naming the step, and the last complete checkpoint stays as
it was; a second `run` on a workdir in use is refused (`files.FolderLock`);
a resume whose model or data differ from the workdir's is refused before
anything is written, and one whose other config values differ needs
`allow_config_change`; a run killed
between checkpoints and started again in the same workdir resumes from the
last checkpoint and, on the same machine and seed, ends with the parameters
of an uninterrupted run (the input iterator's state is in the checkpoint).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from jaxface import files
from jaxface import losses
from jaxface.data import augment as augment_lib
from jaxface.data import device_augment
from jaxface.data import padding
from jaxface.data import pipeline
from jaxface.data import shards
from jaxface.eval import evaluators
from jaxface.eval import plots
from jaxface.face import layout as layout_lib
from jaxface.face import schemes
from jaxface.train import checkpoint as checkpoint_lib
from jaxface.train import config_lib
from jaxface.train import metrics as metrics_lib
from jaxface.train import optim
from jaxface.train import periodic
from jaxface.train import state as state_lib
from jaxface.train import task as task_lib
from jaxface.train import trained as trained_lib


# Raised by `run`: training cannot go on (non-finite loss, ...).
TrainingError = periodic.TrainingError


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
  first, last = tuple(config.train.profile_steps)
  if (first, last) != (0, 0) and not 1 <= first <= last:
    problems.append(f'config.train.profile_steps must be (FIRST, LAST) with '
                    f'1 <= FIRST <= LAST, or (0, 0) for none; got '
                    f'{(first, last)!r}')
  mask = config.loss.mask
  if mask not in losses.MASKS:
    problems.append(f'config.loss.mask must be one of {losses.MASKS}, got '
                    f'{mask!r}')
  for name in ('global_batch_size', 'eval_batch_size'):
    if config.data[name] < 1:
      problems.append(f'config.data.{name} must be >= 1, got '
                      f'{config.data[name]!r}')
  problems += evaluators.check(config.evals, config.task)
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
  config = config_lib.with_added_keys(config)
  cls = task_lib.task_class(config.task)
  tx = optim.make_optimizer(config.optimizer, config.train.num_steps)
  return cls.build(config, resolution, tx, layout, mix_scheme)


def jit_train_step(task: task_lib.Task, base_key: jax.Array,
                   replicated: jax.sharding.NamedSharding):
  """The task's train step, jitted once: `(state, batch) -> (state,
  metrics)` with the state replicated and donated, the batch as it is
  sharded (first augmented if it carries on-device augmentation:
  `device_augment.apply`), and the step's rng `fold_in(base_key,
  state.step)`."""
  def train_step(state, batch):
    key = jax.random.fold_in(base_key, state.step)
    return task.train_step(state, device_augment.apply(batch), key)

  return jax.jit(train_step, in_shardings=(replicated, None),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def augment_config(config) -> augment_lib.AugmentConfig:
  """config.data.augment (on / off) and config.data.augmentation (the
  ranges and probabilities; a field it lacks takes its default) as an
  `AugmentConfig`; ValueError naming a bad field."""
  fields = dict(config.data.augmentation)
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


def evaluate(task, eval_step, state, config, mesh) -> tuple[dict, dict | None,
                                                             np.ndarray]:
  """Mean eval metrics over the eval split (or `eval_batches` batches).

  Returns (metrics, the first eval batch (host numpy), all true landmarks).
  """
  it = _iterator(config, config.data.eval_split, False,
                 config.data.eval_batch_size)
  # Every batch of this process, the last partial one too, padded to one
  # size (a multiple of its devices): one compile.
  size = -(-config.data.eval_batch_size // jax.process_count())
  size += (-size) % jax.local_device_count()
  sums: dict[str, float] = {}
  count, first, landmarks = 0, None, []
  try:
    for k, batch in enumerate(it):
      if config.train.eval_batches and k >= config.train.eval_batches:
        break
      first = first or batch
      landmarks.append(batch['landmarks'])
      n = len(batch['index'])
      padded = padding.pad_batch(batch, size)
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


# Config keys a resumed run may change freely: how often it logs, measures
# and saves, and how it shows progress. Other changes are listed and need
# `allow_config_change`; `task` and `model.*` can never change, except
# `model.flip_average` (inference only).
_FREE_ON_RESUME = ('train.progress', 'train.log_every', 'train.eval_every',
                   'train.checkpoint_every', 'train.keep_checkpoints',
                   'train.eval_batches', 'train.profile_steps',
                   'data.worker_count',
                   'data.eval_batch_size',
                   'model.flip_average')  # inference only
_FIXED_ON_RESUME = ('task', 'model')  # top-level keys
_FREE_SECTIONS_ON_RESUME = ('evals',)  # what is measured, not how it trains


def _flat(tree: Any, prefix: str = '') -> dict[str, Any]:
  """{'a.b': value} of a nested dict."""
  if not isinstance(tree, dict):
    return {prefix[:-1]: tree}
  out = {}
  for key, value in tree.items():
    out.update(_flat(value, f'{prefix}{key}.'))
  return out


def _check_resume(config, workdir: str, model_info: dict,
                  allow_config_change: bool) -> None:
  """Before a resume writes anything: the workdir's model.json and
  config.json against this run's. ValueError listing what differs."""
  path = os.path.join(workdir, trained_lib.MODEL_INFO)
  if os.path.exists(path):
    stored = trained_lib.read_model_info(workdir)
    if stored != model_info:
      diff = {k: (stored.get(k), model_info[k]) for k in model_info
              if stored.get(k) != model_info[k]}
      raise ValueError(
          f'{workdir} holds a model trained on other data: '
          + '; '.join(f'{k} {a!r} there, {b!r} now' for k, (a, b)
                      in diff.items() if k != 'uv_layout')
          + ('; another UV layout' if 'uv_layout' in diff else '')
          + '. Resume with the same data, or train in a new workdir')
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      stored = _flat(json.load(f))
  except ValueError as e:
    raise ValueError(f'{path} is not valid JSON ({e}); move it away to '
                     'resume without comparing configs') from e
  current = _flat(json.loads(config.to_json_best_effort()))
  # What a stored config lacks is what the code did before the key existed.
  added = _flat(json.loads(json.dumps({  # as JSON has them: lists
      k: v.to_dict() if isinstance(v, ml_collections.ConfigDict) else v
      for k, v in config_lib.ADDED_KEYS.items()})))
  stored = {**{k: v for k, v in added.items() if k in current}, **stored}
  changed = sorted(k for k in set(stored) | set(current)
                   if stored.get(k, '<unset>') != current.get(k, '<unset>')
                   and k not in _FREE_ON_RESUME
                   and k.split('.')[0] not in _FREE_SECTIONS_ON_RESUME)
  fixed = [k for k in changed if k.split('.')[0] in _FIXED_ON_RESUME]
  describe = lambda keys: ', '.join(  # noqa: E731
      f'{k}: {stored.get(k, "<unset>")!r} -> {current.get(k, "<unset>")!r}'
      for k in keys)
  if fixed:
    raise ValueError(f'{workdir} holds a run of another model ({describe(fixed)}); '
                     'train it in a new workdir')
  if changed and not allow_config_change:
    raise ValueError(
        f'resuming {workdir} with a changed config ({describe(changed)}); '
        'pass --allow-config-change to resume with these values, or train in '
        'a new workdir')
  if changed:
    print(f'resuming with a changed config: {describe(changed)}')


def _check_writable(workdir: str) -> None:
  """OSError naming the first of the workdir's folders that cannot be
  written (found now, before compiling, not at the first checkpoint)."""
  for folder in (workdir, os.path.join(workdir, 'checkpoints')):
    if not os.path.exists(folder):
      continue
    if not os.path.isdir(folder):
      raise NotADirectoryError(f'{folder} is a file, not a folder')
    try:  # a real write: permissions, read-only mounts, a full disk
      with tempfile.TemporaryFile(dir=folder):
        pass
    except OSError as e:
      raise OSError(f'cannot write to {folder}: {e.strerror or e}') from e


def run(config, workdir: str, allow_config_change: bool = False) -> dict:
  """Trains `config` in `workdir`; returns the summary (also saved).

  Everything is checked before the first write: the config, the datasets,
  that the workdir is writable and, for a resume, that the stored model
  and config match (`allow_config_change` lets values other than the task
  and the model differ). Process 0 holds the workdir's lock
  (`files.FolderLock`) for the whole run.
  """
  state_lib.maybe_initialize_distributed()
  config = config_lib.with_added_keys(config)
  _check_config(config)
  info = _check_dataset(config)
  mix_scheme = _check_mix_dataset(config, info)
  # With several processes (hosts) the workdir is shared; process 0 writes
  # its files, orbax coordinates the checkpoints.
  lead = jax.process_index() == 0
  lock = (files.FolderLock(workdir, 'workdir') if lead
          else contextlib.nullcontext())
  with lock:
    _check_writable(workdir)
    layout = layout_lib.layout_of_dataset(info)
    model_info = trained_lib.model_info(config.task, int(info['resolution']),
                                        layout)
    if checkpoint_lib.latest_step(workdir) is not None:
      _check_resume(config, workdir, model_info, allow_config_change)
    return _train(config, workdir, info, layout, mix_scheme, model_info,
                  lead)


def _train(config, workdir: str, info: dict, layout: layout_lib.UVLayout,
           mix_scheme: schemes.Scheme | None, model_info: dict,
           lead: bool) -> dict:
  """`run` after its checks, with the lock held."""
  mesh = state_lib.make_mesh()
  sizes = {'data.global_batch_size': config.data.global_batch_size}
  if mix_scheme:
    sizes['mix.batch_size'] = config.mix.batch_size
  for name, size in sizes.items():
    if size % mesh.size:
      raise ValueError(f'config.{name} ({size}) must be divisible by the '
                       f'number of devices ({mesh.size})')
  task = make_task(config, int(info['resolution']), layout, mix_scheme)
  if checkpoint_lib.latest_step(workdir) is None:
    task.check_pretrained()  # before anything is compiled
  repl = state_lib.replicated(mesh)

  train_it = _train_iterator(config, mixed=mix_scheme is not None)
  checkpointer = None
  try:  # close the input workers (and orbax) if start-up fails
    initial_data_state = train_it.get_state()
    first = pipeline.to_global_arrays(next(train_it), mesh)  # for shapes
    base_key = jax.random.key(config.seed)
    state = state_lib.initialize(task.init_state, base_key,
                                 device_augment.apply(first), sharding=repl)

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
    # Only now, with every check passed and the state restored: a refused
    # resume leaves the workdir as it was.
    if lead:
      files.write_atomic(os.path.join(workdir, 'config.json'),
                         config.to_json_best_effort(indent=2))
      files.write_json(os.path.join(workdir, trained_lib.MODEL_INFO),
                       model_info)
  except BaseException:
    train_it.close()
    if checkpointer is not None:
      checkpointer.close()
    raise

  train_step = jit_train_step(task, base_key, repl)
  eval_step = jax.jit(task.eval_step, out_shardings=repl)
  # Steps after `start` that a killed run logged are replayed: dropped.
  writer = (metrics_lib.MetricWriter(workdir, resume_step=start) if lead
            else _NoWriter())
  num_steps = config.train.num_steps
  summary: dict[str, Any] = {'workdir': os.path.abspath(workdir),
                             'start_step': start}
  batch_size = config.data.global_batch_size + (
      config.mix.batch_size if mix_scheme else 0)  # images per step

  window = periodic.MetricWindow()
  bar = tqdm.tqdm(total=num_steps, initial=start, unit='step',
                  disable=not config.train.progress, dynamic_ncols=True)
  log = periodic.Logger(window, writer, bar, optim.make_schedule(
      config.optimizer, config.train.num_steps), batch_size)
  checkpoint = periodic.Checkpointing(checkpointer, workdir, config, train_it,
                                      start)
  evaluation = periodic.Evaluation(
      task, lambda state: evaluate(task, eval_step, state, config, mesh),
      lambda: _iterator(config, config.data.train_split, False,
                        config.data.eval_batch_size),
      writer, workdir, lead, summary)
  configured_evals = periodic.ConfiguredEvals(config, workdir, model_info,
                                              layout, writer, summary)
  periods = {'log': config.train.log_every, 'eval': config.train.eval_every,
             'checkpoint': config.train.checkpoint_every}
  wall = time.perf_counter()
  step = start
  stopped_by, finished = None, False

  profile_first, profile_last = tuple(config.train.profile_steps)
  profiling = False

  with periodic.StopSignals() as signals, contextlib.closing(writer):
    try:
      while step < num_steps:
        batch = pipeline.to_global_arrays(next(train_it), mesh)
        if step + 1 == profile_first:
          summary['profile'] = os.path.join(workdir, 'profile')
          jax.profiler.start_trace(summary['profile'])
          profiling = True
        state, metrics = train_step(state, batch)
        step += 1
        if profiling and step == profile_last:
          jax.block_until_ready(state)
          jax.profiler.stop_trace()
          profiling = False
        window.add(step, metrics)
        bar.update(1)
        stop = signals.signal_name  # read once: it may change mid-step
        due = {name: periodic.is_due(step, every, num_steps)
               for name, every in periods.items()}
        if stop or any(due.values()):
          window.fetch(checkpoint.last_good)  # the loss checked before a save
        if due['log']:
          log(step)
        eval_metrics = evaluation(step, state) if due['eval'] else None
        if due['checkpoint']:
          checkpoint(step, state, eval_metrics)
        if stop:
          checkpoint(step, state)
          stopped_by = stop
          bar.close()
          print(f'{stop}: saved the checkpoint of step {step}; stopping')
          break
        # After the step's checkpoint: an evaluator that fails loses no
        # training.
        configured_evals(step, state)
      checkpoint.wait()  # the last asynchronous save
      finished = True
    finally:
      if profiling:  # stopped before the window's end
        jax.profiler.stop_trace()
      bar.close()
      train_it.close()
      try:
        checkpointer.close()
      except Exception:  # after a failure, the first error is the one to see
        if finished:
          raise
  seconds = time.perf_counter() - wall
  summary.update({'steps': step, 'preempted': stopped_by is not None,
                  # distinct unreadable records this process skipped
                  'skipped_records': int(train_it.skipped_records),
                  'stopped_by': stopped_by, 'wall_seconds': seconds,
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
    files.write_json(os.path.join(workdir, 'summary.json'), summary,
                     default=float)
  return summary


def final_variables(workdir: str):
  """(params, batch_stats) of the last checkpoint of `workdir`, numpy."""
  model = trained_lib.load(workdir)
  return model.params, model.batch_stats


def tree_equal(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a),
                                                  jax.tree.leaves(b)))
