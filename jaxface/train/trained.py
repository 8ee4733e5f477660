"""A trained model read back from a training workdir, for eval and inference.

`load(workdir)` returns a `TrainedModel`: the run's config, its task, the
resolution it was trained at, and the variables of the last (or a given)
checkpoint, as numpy. `prnet(trained)` gives the reconstruction network
(PRNet) and its variables for the `prnet` and `cycle` tasks (the EMA
weights when the run kept them); `facegen(trained)` the face GAN's
generator for the `facegen` task. `load_pretrained(name)` returns the
same kind of `TrainedModel` for a PRNet shipped in the package
(`jaxface.pretrained`, made by `jaxface export`), and `load_model` either,
as the commands' --workdir / --model options ask.

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

from jaxface import files
from jaxface import pretrained as pretrained_lib
from jaxface.face import layout as layout_lib
from jaxface.train import checkpoint as checkpoint_lib
from jaxface.train import config_lib

MODEL_INFO = 'model.json'
# The tasks whose network is a PRNet: a photo in, a position map out.
RECONSTRUCTION_TASKS = ('prnet', 'cycle')


@dataclasses.dataclass
class TrainedModel:
  """What a workdir's checkpoint holds, on the host.

  Attributes:
    workdir: the training workdir (a shipped model's folder).
    step: the checkpoint's step.
    config: the run's ConfigDict.
    task: config.task ('prnet', 'cycle', 'facegen', 'progression').
    resolution: side of the training images (pixels).
    params, batch_stats, ema_params: the train state's trees (numpy).
    layout: the UV layout of the position maps the run trained on (and its
      networks make); `layout.PROCEDURAL` when model.json has none.
    pretrained: the name of a shipped model (`load_pretrained`), whose
      params are already the generator's (EMA) weights; None for a workdir.
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
  pretrained: str | None = None


def eval_state(model: TrainedModel):
  """The `state.TrainState` a task's `eval_step` and `predict` take: the
  model's trees on the host, without optimizer state."""
  from jaxface.train import state as state_lib  # pylint: disable=g-import-not-at-top
  return state_lib.TrainState(
      step=np.asarray(model.step, np.int32), params=model.params,
      batch_stats=model.batch_stats, opt_state={},
      ema_params=model.ema_params)


def model_info(task: str, resolution: int,
               layout: layout_lib.UVLayout | None = None) -> dict:
  """model.json's content: {task, resolution, uv_layout
  (`UVLayout.to_json`)}.

  Args:
    task: config.task.
    resolution: side of the training images (pixels).
    layout: the UV layout of the training data; None: the procedural one.
  """
  layout = layout_lib.PROCEDURAL if layout is None else layout
  return {'task': task, 'resolution': int(resolution),
          'uv_layout': layout.to_json()}


def write_model_info(workdir: str, task: str, resolution: int,
                     layout: layout_lib.UVLayout | None = None) -> None:
  """Writes model.json (`model_info`) atomically."""
  files.write_json(os.path.join(workdir, MODEL_INFO),
                   model_info(task, resolution, layout))


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
  layout = _layout_of(info, os.path.join(workdir, MODEL_INFO))
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
  config = config_lib.with_added_keys(
      ml_collections.ConfigDict(meta['config']))
  host = lambda tree: jax.tree.map(np.asarray, tree)
  return TrainedModel(
      workdir=workdir, step=int(step), config=config, task=info['task'],
      resolution=int(info['resolution']), params=host(state['params']),
      batch_stats=host(state['batch_stats']),
      ema_params=host(state.get('ema_params') or {}), layout=layout)


def from_state(state, config, workdir: str, step: int, info: dict,
               layout: layout_lib.UVLayout) -> TrainedModel:
  """The `TrainedModel` that `load` would read from a checkpoint of the
  live train `state` (replicated jax arrays) at `step`; `info` is
  model.json's content (`model_info`)."""
  host = lambda tree: jax.tree.map(  # noqa: E731
      lambda x: np.asarray(x.addressable_data(0)), tree)
  return TrainedModel(
      workdir=workdir, step=int(step), config=config, task=info['task'],
      resolution=int(info['resolution']), params=host(state.params),
      batch_stats=host(state.batch_stats),
      ema_params=host(state.ema_params or {}), layout=layout)


def _layout_of(info: dict, path: str) -> layout_lib.UVLayout:
  """The UV layout a model.json (at `path`) records; the procedural one
  when it records none. ValueError when it is malformed."""
  if info.get('uv_layout') is None:
    return layout_lib.PROCEDURAL
  try:
    return layout_lib.UVLayout.from_json(info['uv_layout'])
  except ValueError as e:
    raise ValueError(f'{path}: uv_layout: {e}') from e


def load_pretrained(name: str = pretrained_lib.DEFAULT_MODEL,
                    directory: str | None = None) -> TrainedModel:
  """Reads a PRNet shipped in the package (`jaxface export` made it).

  Args:
    name: the model's name, a folder of the models folder.
    directory: the models folder (default: `pretrained.models_dir()`: the
      package's jaxface/pretrained/, or $JAXFACE_PRETRAINED_DIR).

  Returns:
    A `TrainedModel` of task 'prnet' whose `workdir` is the model's folder
    and `pretrained` its name: `prnet(model)` gives the network. Its
    variables are float32 (stored as float16); `ema_params` is empty (the
    params already are the run's EMA weights when it kept them); `config`
    is the run's, with `config.model` the recorded architecture.

  Raises:
    pretrained.PretrainedError (a ValueError): an unknown name (the message
      lists the models there are), missing files (it says how to make
      them), a weights file whose sha256 is not model.json's, or a
      malformed model.json.
  """
  folder = pretrained_lib.model_dir(name, directory)
  info = pretrained_lib.read_info(folder)
  path = os.path.join(folder, pretrained_lib.INFO_FILE)
  if info['network'] != 'PRNet' or info['task'] != 'prnet':
    raise pretrained_lib.PretrainedError(
        f'{path}: network {info["network"]!r}, task {info["task"]!r}; this '
        'jaxface ships PRNets (task prnet) only')
  variables = pretrained_lib.read_variables(folder, info)
  config = ml_collections.ConfigDict(info['config'])
  config.model = ml_collections.ConfigDict(info['architecture'])
  config = config_lib.with_added_keys(config)
  return TrainedModel(
      workdir=folder, step=int(info['step']), config=config, task='prnet',
      resolution=int(info['resolution']), params=variables['params'],
      batch_stats=variables['batch_stats'], ema_params={},
      layout=_layout_of(info, path), pretrained=name)


def load_model(workdir: str | None = None, name: str | None = None,
               step: int | None = None, default: str | None = None,
               flags: tuple[str, str] = ('--workdir', '--model'),
               flip_average: bool | None = None) -> TrainedModel:
  """A training workdir's model (`load`) or a shipped one (`load_pretrained`),
  as a command's options give them.

  Args:
    workdir: a training workdir, or None.
    name: a shipped model's name, or None.
    step: the workdir's checkpoint (None: the last); only with `workdir`.
    default: the shipped model to use when neither is given (None: one of
      them is required).
    flags: the command's names of the two options, for the messages.
    flip_average: a reconstruction network's `model.flip_average` at
      inference, in place of the model's own (None: the model's).

  Raises:
    ValueError: both given, neither given without a default, a step for a
      shipped model, or flip_average for a network that is not PRNet's;
      and those of `load` and `load_pretrained`.
  """
  trained = _load_model(workdir, name, step, default, flags)
  if flip_average is not None:
    if trained.task not in RECONSTRUCTION_TASKS:
      raise ValueError(f'--flip-average is for reconstruction networks; '
                       f'{trained.workdir} trained task {trained.task!r}')
    trained.config.model.flip_average = bool(flip_average)
  return trained


def _load_model(workdir, name, step, default, flags) -> TrainedModel:
  if workdir is not None and name is not None:
    raise ValueError(f'give {flags[0]} (a training run) or {flags[1]} (a '
                     'shipped model), not both')
  if workdir is not None:
    return load(workdir, step)
  if step is not None:
    raise ValueError(f'a step picks a checkpoint of {flags[0]}; a shipped '
                     'model has a single set of weights')
  name = name or default
  if name is None:
    names = pretrained_lib.available()
    raise ValueError(f'give {flags[0]} (a training run) or {flags[1]} (a '
                     'shipped model: '
                     f'{", ".join(names) if names else "none is installed"})')
  return load_pretrained(name)


def describe(trained: TrainedModel) -> dict:
  """Which model made an output, as JSON: {'workdir', 'step', 'resolution'}
  for a training run; {'pretrained' (name), 'path', 'step', 'resolution',
  'sha256' (of its weights)} for a shipped model; and 'flip_average' for a
  reconstruction network."""
  if trained.pretrained is None:
    out = {'workdir': os.path.abspath(trained.workdir),
           'step': trained.step, 'resolution': trained.resolution}
  else:
    info = pretrained_lib.read_info(trained.workdir)
    out = {'pretrained': trained.pretrained,
           'path': os.path.abspath(trained.workdir), 'step': trained.step,
           'resolution': trained.resolution,
           'sha256': info['weights']['sha256']}
  if trained.task in RECONSTRUCTION_TASKS:
    out['flip_average'] = flip_average(trained)
  return out


def flip_average(trained: TrainedModel) -> bool:
  """Whether a reconstruction network averages with the mirror image's
  prediction at inference (`model.flip_average`)."""
  return bool(trained.config.model.get('flip_average', False))


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
  if trained.task not in RECONSTRUCTION_TASKS:
    raise ValueError(f'{trained.workdir} trained task {trained.task!r}, not a '
                     'reconstruction network (prnet or cycle)')
  from jaxface.models import prnet as prnet_lib  # pylint: disable=g-import-not-at-top
  module = prnet_lib.from_config(trained.config.model, layout=trained.layout)
  params, stats = _generator_trees(trained)
  return module, {'params': params, 'batch_stats': stats}


def facegen(trained: TrainedModel):
  """(FaceGenerator module, variables) of a `facegen` run:
  `module.apply(variables, condition (B, C), noise (B, noise_dim))`, the
  condition of `facegen.condition_of` (the run's `facegen.condition`)."""
  if trained.task != 'facegen':
    raise ValueError(f'{trained.workdir} trained task {trained.task!r}, not '
                     'the face GAN (facegen)')
  from jaxface.train import facegen as facegen_lib  # pylint: disable=g-import-not-at-top
  module = facegen_lib.make_generator(trained.config, trained.resolution)
  params, stats = _generator_trees(trained)
  return module, {'params': params, 'batch_stats': stats}
