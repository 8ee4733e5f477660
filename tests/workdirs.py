"""Training workdirs for eval and inference tests, made without training.

`prnet_workdir` writes what `jaxface train` leaves behind (model.json,
config.json, an orbax checkpoint of a PRNet train state), with freshly
initialised weights: tests of file formats and plumbing do not need a good
model, and this takes a second instead of a training run.
"""

import os

import jax
import jax.numpy as jnp

from jaxface.train import checkpoint as checkpoint_lib
from jaxface.train import config_lib
from jaxface.train import loop
from jaxface.train import trained

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = os.path.join(REPO, 'experiments', 'configs', 'quickstart.py')


def write_workdir(workdir: str, config, resolution: int, batch: dict,
                  step: int = 1) -> None:
  """Initialises `config`'s task on `batch` and saves it as step `step`."""
  os.makedirs(workdir, exist_ok=True)
  task = loop.make_task(config, resolution)
  state = jax.jit(task.init_state)(jax.random.key(config.seed), batch)
  state = state.replace(step=jnp.asarray(step, jnp.int32))
  trained.write_model_info(workdir, config.task, resolution)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  checkpointer = checkpoint_lib.Checkpointer(workdir, asynchronous=False)
  try:
    checkpointer.save(step, state, {}, {
        'step': step, 'config': config.to_dict()})
  finally:
    checkpointer.close()


def prnet_workdir(workdir: str, resolution: int = 32, width: float = 0.125,
                  data_dir: str = '') -> str:
  """A `prnet` workdir (quickstart config, `width`) at `resolution`."""
  config = config_lib.apply_overrides(config_lib.load_config(QUICK), [
      f'model.width={width}', f'data.dir={data_dir}'])
  batch = {'image': jnp.zeros((1, resolution, resolution, 3), jnp.float32)}
  write_workdir(workdir, config, resolution, batch)
  return workdir
