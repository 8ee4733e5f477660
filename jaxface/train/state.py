"""Train state, device mesh and shardings.

Data parallelism is `jax.jit` over a one-axis `Mesh` ('data'): the batch is
sharded over the axis and the train state replicated, which is what `pmap`
lowers to in current JAX. BatchNorm statistics are means over the global
(sharded) batch, as the jitted computation sees the whole array.
"""

from __future__ import annotations

import os
from typing import Any

import flax
import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = 'data'


@flax.struct.dataclass
class TrainState:
  """Everything a training phase updates; a pytree of arrays.

  Attributes:
    step: scalar int32, number of steps taken.
    params: model parameters (a dict of named models' params for phases
      with several networks).
    batch_stats: BatchNorm / spectral-norm state (same structure, or {}).
    opt_state: optimizer state(s).
    ema_params: exponential moving average of `params` ({} when off).
    extra: other state a task carries from step to step, neither
      parameters nor statistics: the cycle task's image pool ({} for the
      others).
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any
  extra: Any = flax.struct.field(default_factory=dict)


def maybe_initialize_distributed() -> None:
  """`jax.distributed.initialize()` when the launcher's environment asks.

  Launchers (see launch/) set JAXFACE_DISTRIBUTED=1, or the standard
  JAX_COORDINATOR_ADDRESS; on TPU VMs, Slurm and Open MPI JAX finds the
  rest itself. Elsewhere JAX_COORDINATOR_ADDRESS (host:port of process 0),
  JAXFACE_NUM_PROCESSES and JAXFACE_PROCESS_ID say it. On a single process
  nothing happens.
  """
  if os.environ.get('JAXFACE_DISTRIBUTED') != '1' and not os.environ.get(
      'JAX_COORDINATOR_ADDRESS'):
    return
  kwargs = {}
  for name, key in (('JAXFACE_NUM_PROCESSES', 'num_processes'),
                    ('JAXFACE_PROCESS_ID', 'process_id')):
    if os.environ.get(name):
      try:
        kwargs[key] = int(os.environ[name])
      except ValueError:
        raise ValueError(f'{name} must be an integer, got '
                         f'{os.environ[name]!r}') from None
  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    kwargs['coordinator_address'] = os.environ['JAX_COORDINATOR_ADDRESS']
  jax.distributed.initialize(**kwargs)


def make_mesh(devices=None) -> Mesh:
  """A one-axis ('data',) mesh over all (or the given) devices."""
  devices = list(devices if devices is not None else jax.devices())
  return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


# XLA's backend optimisation of a random initialiser's threefry draws costs
# about a second of compilation per parameter on CPU (40 s for PRNet's 51
# kernels); the initial state is computed once, so it is compiled without.
INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 0}


def initialize(init_fn, *args, sharding: NamedSharding | None = None):
  """`init_fn(*args)` (a task's `init_state`, a model's `init`) jitted with
  outputs at `sharding` and compiled quickly (`INIT_COMPILER_OPTIONS`); the
  values equal those of a plain `jax.jit` to float rounding."""
  jitted = jax.jit(init_fn, out_shardings=sharding)
  return jitted.lower(*args).compile(
      compiler_options=INIT_COMPILER_OPTIONS)(*args)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def update_ema(ema: Any, params: Any, decay: float) -> Any:
  """ema <- decay * ema + (1 - decay) * params; `ema` itself when decay <= 0
  (EMA off, `ema` is then {})."""
  if decay <= 0:
    return ema
  return jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, params)
