"""The initial train state's time with and without XLA backend optimisation.

  python -m experiments.benchmarks.init_compile --config experiments/configs/quickstart.py --resolution 64 --batch 16

Computes a config's initial state (the task's `init_state`: the model's
random initialisers, the optimiser's state) twice on the first device,
with a plain `jax.jit` and with `state.initialize` (compiled without
backend optimisation, `state.INIT_COMPILER_OPTIONS`), and prints each
one's seconds, compilation included, and the largest difference between
their parameters. Run it with an empty compilation cache
(JAX_COMPILATION_CACHE_DIR unset) for first-run figures.
"""

from __future__ import annotations

import argparse
import time

import jax

from jaxface import bench
from jaxface.train import loop
from jaxface.train import state as state_lib


def _seconds(fn):
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default=None,
                      help='a PRNet experiment config (default: '
                      'prnet_pretrain.py)')
  parser.add_argument('--resolution', type=int, default=64)
  parser.add_argument('--batch', type=int, default=16)
  args = parser.parse_args()
  config = bench.train_config(None, 'float32', args.batch, args.config)
  task = loop.make_task(config, args.resolution)
  repl = state_lib.replicated(state_lib.make_mesh(jax.devices()[:1]))
  batch = jax.device_put(bench.random_batch(args.batch, args.resolution),
                         repl)
  key = jax.random.key(config.seed)
  plain, plain_s = _seconds(lambda: jax.jit(
      task.init_state, out_shardings=repl)(key, batch))
  quick, quick_s = _seconds(lambda: state_lib.initialize(
      task.init_state, key, batch, sharding=repl))
  diff = max(float(abs(a - b).max()) for a, b in zip(
      jax.tree.leaves(plain.params), jax.tree.leaves(quick.params)))
  name = args.config or 'prnet_pretrain.py'
  print(f'{name} at {args.resolution}x{args.resolution}, '
        f'{jax.devices()[0].device_kind}:')
  print(f'  jax.jit:             {plain_s:.1f} s')
  print(f'  state.initialize:    {quick_s:.1f} s')
  print(f'  largest |difference| of a parameter: {diff:.2g}')


if __name__ == '__main__':
  main()
