"""XLA's stride-1 convolutions against `layers.conv_stride1`'s CPU forms.

  python -m experiments.benchmarks.conv_stride1_speed

The stride-1 layers of the narrow PRNets (`model.width=0.25`: the
quickstart's at 64x64, batch 16; the shipped `synthetic` model's at 96x96,
batch 64 = 32 faces and their mirror images) where the forms differ from
XLA's own convolution, and a wider layer where `conv_stride1` keeps XLA's.
Times the forward pass and forward + backward (value and gradients w.r.t.
input and kernel), jitted, medians of 5.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp

from experiments.benchmarks import conv_transpose_speed
from jaxface.models import layers

SAME4 = ((1, 2), (1, 2))  # 'SAME' for a 4-wide kernel
TRANSPOSE4 = ((2, 1), (2, 1))  # lax.conv_transpose's 'SAME', stride 1
SAME3 = ((1, 1), (1, 1))

# (what, batch, side, kernel, input channels, output channels, padding)
LAYERS = (
    ('quickstart first conv (image + coordinates)', 16, 64, 4, 5, 4, SAME4),
    ('quickstart head (3x3, + coordinates)', 16, 64, 3, 6, 3, SAME3),
    ('quickstart bottleneck (transposed, 2x2)', 16, 2, 4, 130, 128,
     TRANSPOSE4),
    ('shipped model first conv', 64, 96, 4, 5, 4, SAME4),
    ('shipped model head', 64, 96, 3, 6, 3, SAME3),
    ('shipped model bottleneck (transposed, 3x3)', 64, 3, 4, 130, 128,
     TRANSPOSE4),
    ('full-width first conv (XLA kept)', 4, 256, 4, 5, 16, SAME4),
)


def main():
  argparse.ArgumentParser(description=__doc__.split('\n')[0]).parse_args()
  dims = ('NHWC', 'HWIO', 'NHWC')
  print(f'on {jax.devices()[0].platform}: XLA / conv_stride1, ms')
  for what, batch, side, k, cin, cout, padding in LAYERS:
    x = jax.random.normal(jax.random.key(0), (batch, side, side, cin))
    kernel = jax.random.normal(jax.random.key(1), (k, k, cin, cout)) * 0.05
    xla = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1),
                            padding=padding, dimension_numbers=dims)
    ours = functools.partial(layers.conv_stride1, padding=padding)
    times = []
    for fn in (xla, ours):
      forward = jax.jit(lambda x, k, fn=fn: fn(x, k))
      both = jax.jit(jax.value_and_grad(
          lambda x, k, fn=fn: jnp.sum(fn(x, k)**2), argnums=(0, 1)))
      times.append((conv_transpose_speed.median_seconds(forward, x, kernel),
                    conv_transpose_speed.median_seconds(both, x, kernel)))
    (fx, bx), (fo, bo) = times
    print(f'{what}: batch {batch}, {side}x{side}, {k}x{k}, {cin} -> {cout}: '
          f'forward {fx * 1e3:.1f} / {fo * 1e3:.1f} ({fx / fo:.1f}x), '
          f'forward + backward {bx * 1e3:.1f} / {bo * 1e3:.1f} '
          f'({bx / bo:.1f}x)')


if __name__ == '__main__':
  main()
