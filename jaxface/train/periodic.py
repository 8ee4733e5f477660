"""The training loop's periodic actions, each a small piece of its own (as
clu's `periodic_actions`): when an action is due (`is_due`), the metrics the
steps left on the device (`MetricWindow`), logging (`Logger`), the eval
split (`Evaluation`), the evaluators of `config.evals` (`ConfiguredEvals`),
checkpoints (`Checkpointing`), and SIGTERM / SIGINT (`StopSignals`).
`loop._train` builds them and calls each when it is due.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import tempfile
import time

import jax
import numpy as np

from jaxface.eval import evaluators
from jaxface.train import checkpoint as checkpoint_lib
from jaxface.train import trained as trained_lib


class TrainingError(RuntimeError):
  """Training cannot go on (non-finite loss, ...)."""


def is_due(step: int, every: int, last: int) -> bool:
  """Whether a periodic action runs after `step`: every `every` steps, and
  after the last step."""
  return step % every == 0 or step == last


class StopSignals:
  """Turns SIGTERM (preemption) and SIGINT (Ctrl-C) into a flag the loop
  checks between steps; `signal_name` says which came first. A second
  SIGINT interrupts at once (a user who means it)."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signal_name = None
    self._previous = {}

  def __enter__(self):
    for signum in self.SIGNALS:
      try:
        self._previous[signum] = signal.signal(signum, self._handle)
      except ValueError:  # not the main thread
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signal_name == 'SIGINT' and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signal_name = self.signal_name or signal.Signals(signum).name

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)


class MetricWindow:
  """The metrics of the steps since the last fetch, left on the device
  (fetching each step would stall the dispatch of the next); `fetch` moves
  them to the host and checks every step's loss, `means` averages what was
  fetched since the last log.

  `add` also bounds how far the host runs ahead of the device: it returns
  once at most `steps_in_flight` steps are unfinished. Unbounded, the host
  dispatches up to the runtime's own limit (32 steps on CPU), and a SIGTERM
  or a checkpoint then waits for all of them (minutes, with slow steps); two
  keep the device busy while the host prepares the next batch.
  """

  def __init__(self, steps_in_flight: int = 2):
    if steps_in_flight < 1:
      raise ValueError(f'steps_in_flight must be >= 1, got {steps_in_flight}')
    self._steps_in_flight = steps_in_flight
    self._pending: list[tuple[int, dict]] = []
    self._values: dict[str, list[float]] = {}
    self._since = time.perf_counter()

  def add(self, step: int, metrics: dict) -> None:
    """Keeps the metrics of `step` (just dispatched) and waits until the
    step `steps_in_flight` before it has finished."""
    self._pending.append((step, metrics))
    if len(self._pending) > self._steps_in_flight:
      jax.block_until_ready(self._pending[-1 - self._steps_in_flight][1])

  def fetch(self, last_good) -> None:
    """Raises TrainingError at the first non-finite loss, naming its step
    and what `last_good()` says of the checkpoints."""
    fetched, self._pending = jax.device_get(self._pending), []
    for step, metrics in fetched:
      loss = float(metrics['loss'])
      if not math.isfinite(loss):
        raise TrainingError(
            f'step {step}: the loss is {loss}; stopping. {last_good()}')
      for key, value in metrics.items():
        self._values.setdefault(key, []).append(float(value))

  def means(self, images_per_step: int) -> dict[str, float]:
    """'train/NAME' means since the last call, and the images/s."""
    seconds = max(time.perf_counter() - self._since, 1e-9)
    means = {f'train/{k}': float(np.mean(v)) for k, v in self._values.items()}
    means['train/images_per_second'] = (
        len(self._values['loss']) * images_per_step / seconds)
    self._values, self._since = {}, time.perf_counter()
    return means


class Logger:
  """Writes the window's training means, the images/s and the learning rate
  of the step (`schedule`, optax's: updates counted from 0), and shows the
  loss on the progress bar."""

  def __init__(self, window: MetricWindow, writer, bar, schedule,
               images_per_step: int):
    self.window, self.writer, self.bar = window, writer, bar
    self.schedule, self.images_per_step = schedule, images_per_step

  def __call__(self, step: int) -> None:
    means = self.window.means(self.images_per_step)
    means['train/learning_rate'] = float(self.schedule(step - 1))
    self.writer.write_scalars(step, means)
    self.bar.set_postfix(loss=f'{means["train/loss"]:.4g}',
                         img_s=f'{means["train/images_per_second"]:.1f}')


class Checkpointing:
  """Saves the state and the input iterator's state (at most once a step),
  and says which checkpoint is the last complete one."""

  def __init__(self, checkpointer: checkpoint_lib.Checkpointer, workdir: str,
               config, train_it, start: int):
    self.checkpointer, self.workdir = checkpointer, workdir
    self.config, self.train_it = config, train_it
    self.saved_step = start

  def last_good(self) -> str:
    try:
      self.checkpointer.wait()  # a save still in flight
    except Exception:  # pylint: disable=broad-except
      pass  # it failed: it is not complete, which the folder names show
    step = checkpoint_lib.latest_step(self.workdir)  # complete ones only
    return (f'The last complete checkpoint (step {step}) in {self.workdir} '
            'is untouched' if step is not None
            else f'No checkpoint was saved in {self.workdir}')

  def __call__(self, step: int, state, metrics: dict | None = None) -> None:
    if self.saved_step == step:
      return
    try:
      self.checkpointer.save(
          step, state, self.train_it.get_state(),
          {'step': step,
           'config': json.loads(self.config.to_json_best_effort())}, metrics)
    except Exception as e:  # orbax raises many kinds
      raise TrainingError(
          f'saving the checkpoint of step {step} failed ({type(e).__name__}: '
          f'{e}); stopping. {self.last_good()}') from e
    self.saved_step = step

  def wait(self) -> None:
    """Until the last asynchronous save is written; TrainingError if it
    failed."""
    try:
      self.checkpointer.wait()
    except Exception as e:  # orbax raises many kinds
      raise TrainingError(
          f'writing the checkpoint of step {self.saved_step} failed '
          f'({type(e).__name__}: {e}). {self.last_good()}') from e


class Evaluation:
  """The eval split's mean metrics (`measure(state) -> (metrics, first
  batch, true landmarks)`), beside the task's baseline (measured once, on
  the first 8 batches of `baseline_iterator()`, a training-split iterator),
  logged as 'eval/...', and the task's figure as `eval_STEP.png` (process 0
  keeps it). Fills `summary` ('eval', 'figure', the baseline's 'nme_*')."""

  def __init__(self, task, measure, baseline_iterator, writer, workdir: str,
               lead: bool, summary: dict):
    self.task, self.measure = task, measure
    self.baseline_iterator = baseline_iterator
    self.writer, self.workdir, self.lead = writer, workdir, lead
    self.summary = summary

  def __call__(self, step: int, state) -> dict:
    metrics, batch, landmarks = self.measure(state)
    if self.task.has_baseline and 'nme_mean_face' not in self.summary:
      it = self.baseline_iterator()
      try:
        batches = list(itertools.islice(it, 8))  # or fewer
      finally:
        it.close()
      self.summary.update(self.task.baseline(batches, landmarks))
    metrics.update({k: v for k, v in self.summary.items()
                    if k.startswith('nme_')})
    self.writer.write_scalars(step,
                              {f'eval/{k}': v for k, v in metrics.items()})
    path = os.path.join(self.workdir, f'eval_{step:07d}.png')
    # Every process computes the figure (the state is a global array);
    # only process 0 keeps it.
    self.task.figure(state, batch, path if self.lead else os.path.join(
        tempfile.gettempdir(), f'jaxface_eval_{jax.process_index()}.png'))
    self.summary['eval'] = metrics
    self.summary['figure'] = path
    return metrics


class ConfiguredEvals:
  """The evaluators of `jaxface eval` that `config.evals` declares, each
  every `entry.every` steps (0: at the end), on the live weights as
  `trained.load` would read them from this step's checkpoint; logged as
  'evals/NAME/...' and kept in `summary['evals']`."""

  def __init__(self, config, workdir: str, model_info: dict, layout, writer,
               summary: dict):
    self.config, self.workdir = config, workdir
    self.model_info, self.layout = model_info, layout
    self.writer, self.summary = writer, summary

  def __call__(self, step: int, state) -> None:
    """Runs those of `config.evals` that are due after `step`."""
    last = self.config.train.num_steps
    names = [name for name, entry in self.config.evals.items()
             if is_due(step, entry.every or last, last)]
    if not names:
      return
    model = trained_lib.from_state(state, self.config, self.workdir, step,
                                   self.model_info, self.layout)
    for name in names:
      report, _ = evaluators.run_configured(self.config.evals[name], model,
                                            self.config)
      self.writer.write_scalars(step, {
          f'evals/{name}/{path}': value
          for path, value in evaluators.scalars(report).items()})
      self.summary.setdefault('evals', {})[name] = report

