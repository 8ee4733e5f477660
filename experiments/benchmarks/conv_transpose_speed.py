"""Sub-pixel versus XLA transposed convolution, PRNet's stride-2 layers.

  python -m experiments.benchmarks.conv_transpose_speed --batch 4

For each stride-2 transposed 4x4 convolution of PRNet at 256x256 (8 -> 16
... 128 -> 256), times forward + backward (value and gradients w.r.t.
input and kernel) of `jax.lax.conv_transpose` and of jaxface's sub-pixel
equivalent, jitted, and prints the medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from jaxface.models import layers

# (input side, input channels, output channels) of PRNet's stride-2 layers.
LAYERS = ((8, 512, 256), (16, 256, 128), (32, 128, 64), (64, 64, 32),
          (128, 32, 16))


def _time(fn, *args, repeats=5):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=4)
  args = parser.parse_args()

  def reference(x, k):
    return jax.lax.conv_transpose(x, k, (2, 2), 'SAME',
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

  total_ref = total_sub = 0.0
  for side, cin, cout in LAYERS:
    x = jax.random.normal(jax.random.key(0), (args.batch, side, side, cin))
    k = jax.random.normal(jax.random.key(1), (4, 4, cin, cout)) * 0.05
    times = []
    for fn in (reference, layers.conv_transpose_subpixel):
      step = jax.jit(jax.value_and_grad(
          lambda x, k, fn=fn: jnp.sum(fn(x, k)**2), argnums=(0, 1)))
      times.append(_time(step, x, k))
    total_ref += times[0]
    total_sub += times[1]
    print(f'{side:>3} -> {2 * side:<3} {cin:>3} -> {cout:<3} channels: '
          f'lax.conv_transpose {times[0] * 1e3:8.1f} ms, sub-pixel '
          f'{times[1] * 1e3:8.1f} ms ({times[0] / times[1]:.1f}x)')
  print(f'all five layers, forward + backward, batch {args.batch} on '
        f'{jax.devices()[0].platform}: {total_ref * 1e3:.0f} ms vs '
        f'{total_sub * 1e3:.0f} ms ({total_ref / total_sub:.1f}x faster)')


if __name__ == '__main__':
  main()
