"""Training workdirs for eval and inference tests, made without training.

`prnet_workdir` writes what `jaxface train` leaves behind (model.json,
config.json, an orbax checkpoint of a PRNet train state) with random
weights of the right shapes: tests of file formats and plumbing do not need
a good model. The shapes come from `jax.eval_shape` and the values from
numpy, which takes a second where compiling the init takes most of a minute.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxface.face import layout as layout_lib
from jaxface.train import checkpoint as checkpoint_lib
from jaxface.train import config_lib
from jaxface.train import loop
from jaxface.train import trained

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = os.path.join(REPO, 'experiments', 'configs', 'quickstart.py')


def made_up_layout() -> layout_lib.UVLayout:
  """A UV layout other than the procedural one, for tests: its UVs mirrored
  left-right and moved down by 0.04."""
  procedural = layout_lib.PROCEDURAL

  def move(uv):
    return np.stack([1.0 - uv[:, 0], uv[:, 1] + 0.04], 1)

  return layout_lib.UVLayout('made_up', move(procedural.landmark_uv),
                             move(procedural.extra_uv))


def write_workdir(workdir: str, config, resolution: int, batch: dict,
                  step: int = 1, layout=None, model_info: bool = True) -> None:
  """Initialises `config`'s task on `batch` and saves it as step `step`.

  model.json records `layout` (None: the procedural one); with
  `model_info` False, the workdir's model.json is left as it is.
  """
  os.makedirs(workdir, exist_ok=True)
  task = loop.make_task(config, resolution, layout)
  shapes = jax.eval_shape(task.init_state, jax.random.key(config.seed), batch)
  rng = np.random.default_rng(config.seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if "'var'" in name or "'scale'" in name:
      return np.ones(leaf.shape, leaf.dtype)
    if "'mean'" in name or "'bias'" in name or not leaf.shape:
      return np.zeros(leaf.shape, leaf.dtype)
    fan_in = max(1, int(np.prod(leaf.shape[:-1])))
    return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(
        leaf.dtype)

  state = jax.tree_util.tree_map_with_path(fill, shapes)
  state = state.replace(step=np.asarray(step, np.int32))
  if model_info:
    trained.write_model_info(workdir, config.task, resolution, layout)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  checkpointer = checkpoint_lib.Checkpointer(workdir, asynchronous=False)
  try:
    checkpointer.save(step, state, {}, {
        'step': step, 'config': config.to_dict()})
  finally:
    checkpointer.close()


def prnet_workdir(workdir: str, resolution: int = 32, width: float = 0.125,
                  data_dir: str = '', layout=None) -> str:
  """A `prnet` workdir (quickstart config, `width`, PRNet's sigmoid head:
  whatever the weights, its maps lie in [0, 1.1 R]) at `resolution`,
  trained in UV layout `layout` (None: the procedural one)."""
  config = config_lib.apply_overrides(config_lib.load_config(QUICK), [
      f'model.width={width}', f'data.dir={data_dir}', 'model.head=prnet',
      'model.half_res_head=False', 'model.coords=False'])
  batch = {'image': jnp.zeros((1, resolution, resolution, 3), jnp.float32)}
  write_workdir(workdir, config, resolution, batch, layout=layout)
  return workdir


FACEGEN = os.path.join(REPO, 'experiments', 'configs', 'facegen.py')
# A small face GAN (the networks' sizes of tests/test_facegen_train.py).
SMALL_FACEGEN = ('facegen.base_channels=32', 'facegen.disc_base_channels=16',
                 'facegen.code_dim=32', 'facegen.noise_dim=16',
                 'facegen.voxel_size=8')


def facegen_workdir(workdir: str, data_dir: str, head: str = 'uv',
                    condition: str = 'features') -> str:
  """A small `facegen` workdir for the multiview dataset `data_dir`."""
  from jaxface.data import pipeline  # pylint: disable=g-import-not-at-top
  from jaxface.data import shards  # pylint: disable=g-import-not-at-top
  config = config_lib.apply_overrides(config_lib.load_config(FACEGEN), [
      *SMALL_FACEGEN, f'facegen.head={head}', f'data.dir={data_dir}',
      f'facegen.condition={condition}'])
  it = pipeline.make_iterator(data_dir, pipeline.PipelineConfig(
      kind='multiview', split='train', global_batch_size=2, shuffle=False,
      training=False))
  try:
    batch = jax.tree.map(jnp.asarray, next(it))
  finally:
    it.close()
  resolution = int(shards.read_dataset_info(data_dir)['resolution'])
  write_workdir(workdir, config, resolution, batch)
  return workdir
