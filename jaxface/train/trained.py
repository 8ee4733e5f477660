"""A trained model read back from a training workdir, for eval and inference.

`load(workdir)` returns a `TrainedModel`: the run's config, its task, the
resolution it was trained at, and the variables of the last (or a given)
checkpoint, as numpy. `prnet(trained)` gives the reconstruction network
(PRNet) and its variables for the `prnet` and `cycle` tasks (the EMA
weights when the run kept them); `facegen(trained)` the face GAN's
generator for the `facegen` task.

The workdir's `model.json` (written by `loop.run`) records the task, the
resolution and the UV layout of the training data's position maps (the
layout the network's maps are in; workdirs written before layouts were
recorded are in the procedural one); the config is the checkpoint's own
copy.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxface.face import layout as layout_lib
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
    layout: the UV layout of the position maps the run trained on (and its
      networks make); `layout.PROCEDURAL` when model.json has none.
  """
  workdir: str
  step: int
  config: ml_collections.ConfigDict
  task: str
  resolution: int
  params: Any
  batch_stats: Any
  ema_params: Any
  layout: layout_lib.UVLayout = layout_lib.PROCEDURAL


def write_model_info(workdir: str, task: str, resolution: int,
                     layout: layout_lib.UVLayout | None = None) -> None:
  """Writes model.json: {task, resolution, uv_layout (`UVLayout.to_json`)}.

  Args:
    workdir: the training workdir.
    task: config.task.
    resolution: side of the training images (pixels).
    layout: the UV layout of the training data; None: the procedural one.
  """
  layout = layout_lib.PROCEDURAL if layout is None else layout
  with open(os.path.join(workdir, MODEL_INFO), 'w') as f:
    json.dump({'task': task, 'resolution': int(resolution),
               'uv_layout': layout.to_json()}, f, indent=2)


def read_model_info(workdir: str) -> dict:
  """The workdir's model.json: task, resolution, uv_layout.

  Raises:
    FileNotFoundError: no workdir or no model.json.
    ValueError: model.json is not JSON.
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
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{info_path} is not valid JSON: {e}') from e


def load(workdir: str, step: int | None = None) -> TrainedModel:
  """Reads the last (or `step`'s) checkpoint of a training workdir.

  Raises:
    FileNotFoundError: no workdir, no model.json or no checkpoint.
    ValueError: model.json's uv_layout is malformed.
  """
  info = read_model_info(workdir)
  info_path = os.path.join(workdir, MODEL_INFO)
  layout = layout_lib.PROCEDURAL
  if info.get('uv_layout') is not None:
    try:
      layout = layout_lib.UVLayout.from_json(info['uv_layout'])
    except ValueError as e:
      raise ValueError(f'{info_path}: uv_layout: {e}') from e
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
      ema_params=host(state.get('ema_params') or {}), layout=layout)


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
