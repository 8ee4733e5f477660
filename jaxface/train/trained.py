"""A trained model read back from a training workdir, for eval and inference.

`load(workdir)` returns a `TrainedModel`: the run's config, its task, the
resolution it was trained at, and the variables of the last (or a given)
checkpoint, as numpy. `prnet(trained)` gives the reconstruction network
(PRNet) and its variables for the `prnet` and `cycle` tasks (the EMA
weights when the run kept them); `facegen(trained)` the face GAN's
generator for the `facegen` task.

The workdir's `model.json` (written by `loop.run`) records the task and the
resolution; the config is the checkpoint's own copy.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxface.train import checkpoint as checkpoint_lib

MODEL_INFO = 'model.json'


@dataclasses.dataclass
class TrainedModel:
  """What a workdir's checkpoint holds, on the host.

  Attributes:
    workdir: the training workdir.
    step: the checkpoint's step.
    config: the run's ConfigDict.
    task: config.task ('prnet', 'cycle', 'facegen', 'progression').
    resolution: side of the training images (pixels).
    params, batch_stats, ema_params: the train state's trees (numpy).
  """
  workdir: str
  step: int
  config: ml_collections.ConfigDict
  task: str
  resolution: int
  params: Any
  batch_stats: Any
  ema_params: Any


def write_model_info(workdir: str, task: str, resolution: int) -> None:
  with open(os.path.join(workdir, MODEL_INFO), 'w') as f:
    json.dump({'task': task, 'resolution': int(resolution)}, f, indent=2)


def load(workdir: str, step: int | None = None) -> TrainedModel:
  """Reads the last (or `step`'s) checkpoint of a training workdir.

  Raises:
    FileNotFoundError: no workdir, no model.json or no checkpoint.
  """
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f'{workdir} is not a directory (want the workdir '
                            'of a `jaxface train` run)')
  info_path = os.path.join(workdir, MODEL_INFO)
  if not os.path.exists(info_path):
    raise FileNotFoundError(
        f'{workdir} has no {MODEL_INFO}: it is not the workdir of a '
        '`jaxface train` run')
  with open(info_path) as f:
    info = json.load(f)
  checkpointer = checkpoint_lib.Checkpointer(workdir, asynchronous=False)
  try:
    steps = checkpointer.all_steps()
    if not steps:
      raise FileNotFoundError(f'no checkpoint in {checkpointer.directory}')
    if step is None:
      step = max(steps)
    elif step not in steps:
      raise FileNotFoundError(f'no checkpoint of step {step} in '
                              f'{checkpointer.directory}; it has {steps}')
    state, meta = checkpointer.restore_state_and_meta(step)
  finally:
    checkpointer.close()
  config = ml_collections.ConfigDict(meta['config'])
  host = lambda tree: jax.tree.map(np.asarray, tree)
  return TrainedModel(
      workdir=workdir, step=int(step), config=config, task=info['task'],
      resolution=int(info['resolution']), params=host(state['params']),
      batch_stats=host(state['batch_stats']),
      ema_params=host(state.get('ema_params') or {}))


def _generator_trees(trained: TrainedModel):
  """(params, batch_stats) of the generator ('gen' in GAN tasks), with the
  EMA weights when the run kept them."""
  params, stats, ema = trained.params, trained.batch_stats, trained.ema_params
  if trained.task in ('cycle', 'facegen'):
    params, stats = params['gen'], stats['gen']
  if ema:
    params = ema
  return params, stats


def prnet(trained: TrainedModel):
  """(PRNet module, variables) of a `prnet` or `cycle` run, for inference:
  `module.apply(variables, images (B, R, R, 3) in [0, 1])` -> (B, R, R, 3)
  position maps in crop pixels."""
  if trained.task not in ('prnet', 'cycle'):
    raise ValueError(f'{trained.workdir} trained task {trained.task!r}, not a '
                     'reconstruction network (prnet or cycle)')
  from jaxface.models import PRNet  # pylint: disable=g-import-not-at-top
  m = trained.config.model
  module = PRNet(width=m.width, bn_momentum=m.bn_momentum)
  params, stats = _generator_trees(trained)
  return module, {'params': params, 'batch_stats': stats}


def facegen(trained: TrainedModel):
  """(FaceGenerator module, variables) of a `facegen` run:
  `module.apply(variables, features (B, 31), noise (B, noise_dim))`."""
  if trained.task != 'facegen':
    raise ValueError(f'{trained.workdir} trained task {trained.task!r}, not '
                     'the face GAN (facegen)')
  from jaxface.train import facegen as facegen_lib  # pylint: disable=g-import-not-at-top
  module = facegen_lib.make_generator(trained.config, trained.resolution)
  params, stats = _generator_trees(trained)
  return module, {'params': params, 'batch_stats': stats}
