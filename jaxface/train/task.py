"""What the training loop asks of a task, and the one table of tasks.

A task (`recon.ReconTask`, `cycle.CycleTask`, `facegen.FaceGenTask`,
`progression.ProgressionTask`) is a dataclass built by `Task.build` from
the config, the data's resolution, the optimizer and the data's UV layout.
It declares the record kind it trains on and the eval metric that picks
the best checkpoint, and gives the loop pure steps (`init_state`,
`train_step`, `eval_step`, jitted by the loop; `predict`, the eval-mode
network's output for a batch, which `eval_step` measures) and host-side pieces
(`figure`, and the optional hooks `check_pretrained`, `load_pretrained`
and `baseline`, which default to doing nothing). `TASKS` names them;
`task_class` imports one.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

# config.task -> 'module:class'; the one list of tasks.
TASKS = {
    'prnet': 'jaxface.train.recon:ReconTask',
    'cycle': 'jaxface.train.cycle:CycleTask',
    'facegen': 'jaxface.train.facegen:FaceGenTask',
    'progression': 'jaxface.train.progression:ProgressionTask',
}


def task_class(name: str) -> type[Task]:
  """The class of task `name`; ValueError naming the tasks otherwise."""
  if name not in TASKS:
    raise ValueError(f'unknown task {name!r}; available: {sorted(TASKS)}')
  module, cls = TASKS[name].split(':')
  return getattr(importlib.import_module(module), cls)


class Task:
  """The base of every task.

  Class attributes:
    data_kind: the record kind it trains on ('recon', 'multiview', 'clips').
    best_metric, best_mode: the eval metric that picks the best checkpoint,
      and whether lower ('min') or higher ('max') is better.
    has_baseline: `baseline` gives a figure to print beside the eval (the
      loop then reads a few training batches for it).
  """
  data_kind: ClassVar[str]
  best_metric: ClassVar[str]
  best_mode: ClassVar[str]
  has_baseline: ClassVar[bool] = False

  @classmethod
  def build(cls, config, resolution: int, tx, layout=None,
            mix_scheme=None) -> Task:
    """The task for `config` on data of `resolution` pixels in UV layout
    `layout` (None: the procedural one), optimised by `tx`. `mix_scheme`
    (config.mix's landmark scheme) is for tasks that take 2D records."""
    if mix_scheme is not None:
      raise ValueError(f'task {config.task!r} does not take config.mix')
    return cls(config, resolution, tx, layout)

  def init_state(self, key, batch):
    raise NotImplementedError

  def train_step(self, state, batch, key) -> tuple[Any, dict]:
    raise NotImplementedError

  def predict(self, state, batch: dict, key=None):
    """The trained network's output for `batch`, in eval mode: position
    maps of batch['image'] (prnet, cycle), faces for the batch's features
    (facegen; `key` draws the noise, None: fixed), a logit per clip
    (progression)."""
    raise NotImplementedError

  def eval_step(self, state, batch) -> dict:
    raise NotImplementedError

  def figure(self, state, batch, path: str) -> None:
    raise NotImplementedError

  def check_pretrained(self) -> None:
    """ValueError if the pretrained weights a fresh run starts from cannot
    serve this task; the loop calls it before building the state (default:
    there are none)."""

  def load_pretrained(self, state):
    """A fresh state with pretrained weights loaded in (default: as is)."""
    return state

  def baseline(self, train_batches, eval_landmarks) -> dict:
    """Figures of a trivial predictor, e.g. the mean face ({}: none)."""
    del train_batches, eval_landmarks
    return {}
