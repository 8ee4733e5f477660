"""Checkpoints of a training run: orbax CheckpointManager in the workdir.

A checkpoint holds the train state (all networks, optimizer states, step),
the input iterator's state (JSON), and metadata (the config, the step, the
last metrics). The newest `keep` checkpoints of every kind (periodic, final,
SIGTERM) are kept, plus the best by the eval metric among those that have
it. Saving is asynchronous; `wait()` blocks until it is on disk. orbax
writes a checkpoint into a temporary folder and renames it to its step
when complete, so a folder named by a number is a whole checkpoint.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm


class Checkpointer:
  """Saves and restores (state, data iterator state, metadata)."""

  def __init__(self, workdir: str, keep: int = 3,
               best_metric: str | None = None, best_mode: str = 'min',
               asynchronous: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    policies = [cm.LatestN(n=keep)]
    if best_metric:
      policies.append(cm.BestN(
          get_metric_fn=lambda m: m[best_metric], n=1,
          # BestN keeps the end of the sorted list: for 'min', sort down.
          reverse=best_mode == 'min', keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=cm.AnyPreservationPolicy(policies),
        enable_async_checkpointing=asynchronous, create=True)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=('state', 'data', 'meta'))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: dict | None, meta: dict,
           metrics: dict | None = None) -> None:
    self._manager.save(
        step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state or {}),
            meta=ocp.args.JsonSave(meta)),
        metrics=metrics, force=True)

  def restore(self, step: int, abstract_state: Any
              ) -> tuple[Any, dict, dict]:
    """(state, data iterator state, metadata) of checkpoint `step`.

    Args:
      step: which checkpoint.
      abstract_state: a pytree of jax.ShapeDtypeStruct (with shardings) of
        the state to restore into.
    """
    stored = set(self._stored_tree(step).keys())
    before_extra = hasattr(abstract_state, 'extra') and 'extra' not in stored
    target = _without_extra(abstract_state) if before_extra else abstract_state
    restored = self._manager.restore(
        step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target),
            data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
    state = restored['state']
    if before_extra:
      state = _with_extra(abstract_state, state)
    return state, dict(restored['data']), dict(restored['meta'])

  def _stored_tree(self, step: int) -> Any:
    """The metadata tree (structure, shapes, dtypes) of checkpoint `step`'s
    train state."""
    path = os.path.join(self.directory, str(step), 'state')
    absl_logger = logging.getLogger('absl')
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # A warning about a file not needed.
    try:
      with ocp.StandardCheckpointer() as reader:
        return reader.metadata(path).item_metadata
    finally:
      absl_logger.setLevel(level)

  def restore_state_and_meta(self, step: int) -> tuple[Any, dict]:
    """(train state, metadata) of checkpoint `step`, on this process's first
    device, whatever devices saved it (a run on 8 GPUs is evaluated on a
    laptop)."""
    tree = self._stored_tree(step)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        tree)
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                      meta=ocp.args.JsonRestore()))
    return restored['state'], dict(restored['meta'])

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    try:
      self._manager.wait_until_finished()
    finally:
      self._manager.close()


# Checkpoints written before the train state had its `extra` slot: the
# cycle task kept its image pool in batch_stats['pool'], which now lives in
# extra['pool']; other tasks had nothing there.


def _without_extra(abstract_state: Any) -> dict:
  """The restore target of a checkpoint from before `extra`."""
  target = {name: getattr(abstract_state, name) for name in (
      'step', 'params', 'batch_stats', 'opt_state', 'ema_params')}
  if 'pool' in abstract_state.extra:
    target['batch_stats'] = {**target['batch_stats'],
                             'pool': abstract_state.extra['pool']}
  return target


def _with_extra(abstract_state: Any, restored: dict) -> Any:
  """`restored` (a `_without_extra` target) as the train state."""
  restored = dict(restored)
  extra = {}
  if 'pool' in abstract_state.extra:
    stats = dict(restored['batch_stats'])
    extra['pool'] = stats.pop('pool')
    restored['batch_stats'] = stats
  return type(abstract_state)(**restored, extra=extra)


def latest_step(workdir: str) -> int | None:
  """The step of `workdir`'s newest complete checkpoint (None: none), read
  from the folder names without opening orbax (nothing is created)."""
  folder = os.path.join(workdir, 'checkpoints')
  try:
    steps = [int(name) for name in os.listdir(folder) if name.isdigit()]
  except (FileNotFoundError, NotADirectoryError):
    return None
  return max(steps, default=None)


def abstract(tree: Any, sharding) -> Any:
  """ShapeDtypeStructs of `tree` with `sharding`, for `Checkpointer.restore`."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      tree)
