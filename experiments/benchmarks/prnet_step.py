"""Time of one PRNet training step on this machine (records it consumes/s).

  python -m experiments.benchmarks.prnet_step --resolution 256 --batch 16

A step is what the pretraining phase does per batch: PRNet forward in
training mode (BatchNorm statistics updated), the weighted position-map
loss, backward, and an Adam update, jitted once with the state donated.
Prints the compile time and the median step time over `--steps` steps; the
input pipeline must deliver at least 5x the records/s this consumes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxface.face import frames
from jaxface.face import model as face_model
from jaxface.models import PRNet


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--resolution', type=int, default=256)
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--width', type=float, default=1.0)
  parser.add_argument('--steps', type=int, default=3)
  args = parser.parse_args()
  res, batch = args.resolution, args.batch
  model = PRNet(width=args.width)
  weight = jnp.asarray(face_model.uv_weight_mask(res))[None, ..., None]
  images = jnp.asarray(np.random.default_rng(0).uniform(
      size=(batch, res, res, 3)), jnp.float32)
  target = images * res
  variables = jax.jit(model.init)(jax.random.key(0), images[:1])
  tx = optax.adam(1e-4)
  state = (variables['params'], variables['batch_stats'],
           tx.init(variables['params']))

  def step(state, images, target):
    params, stats, opt = state

    def loss_fn(p):
      out, new = model.apply({'params': p, 'batch_stats': stats}, images,
                             train=True, mutable=['batch_stats'])
      scale = frames.POSITION_SCALE * res
      return jnp.mean(((out - target) / scale)**2 * weight), new

    (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return (optax.apply_updates(params, updates), new['batch_stats'],
            opt), loss

  step = jax.jit(step, donate_argnums=0)
  start = time.perf_counter()
  state, loss = step(state, images, target)
  loss.block_until_ready()
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    state, loss = step(state, images, target)
    loss.block_until_ready()
    times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  print(f'PRNet width {args.width} at {res}x{res}, batch {batch}, on '
        f'{jax.devices()[0].platform}: compile + first step {compile_s:.1f} s, '
        f'step {step_s:.2f} s (median of {args.steps}), '
        f'{batch / step_s:.2f} records/s consumed')


if __name__ == '__main__':
  main()
