"""Which library runs PRNet's convolutions faster on a CPU: YNNPACK or Eigen.

  python -m experiments.benchmarks.conv_library [--cores 1] [--shapes 4x64x64]

jaxlib 0.10's XLA hands 2D float32 convolutions to YNNPACK; the flag
`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution` leaves
them to XLA's Eigen convolutions, as the `jaxface` command does
(`jaxface.host_setup`). For the decoder's stride-1 4x4 layers
(`conv_weight_grad.SHAPES`, or --shapes BATCHxSIDExCHANNELS,...) this
times, jitted, median of 5, the forward pass, the input gradient and the
weight gradient under each library, each in a process of its own (XLA
reads its flags when it starts), pinned to the first --cores CPUs (default:
all of this process's). Run it with --cores 1 as well: a library that
leaves a core idle takes as long there as on all of them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys

from experiments.benchmarks import conv_weight_grad
from jaxface import bench
from jaxface import host_setup

LIBRARIES = {'ynnpack': '+individual_convolution',
             'eigen': '-individual_convolution'}
MEASUREMENTS = ('forward', 'input_grad', 'weight_grad')


def library_flags(current: str, library: str) -> str:
  """XLA_FLAGS `current` with the convolutions sent to `library`."""
  kept = [f for f in current.split()
          if not f.startswith(host_setup.YNN_FUSION_FLAG)]
  return ' '.join(kept + [f'{host_setup.YNN_FUSION_FLAG}={LIBRARIES[library]}'])


def time_convolutions(shapes, repeats: int = 5) -> dict:
  """{'BxSxC': {measurement: median ms, 'forward_library': the library
  the compiled forward pass calls}} for 4x4 stride-1 convolutions of batch
  B over S x S x C -> C (padded 2 before, 1 after), in this process as XLA
  is set up here. (YNNPACK takes only those with more than 16 channels.)"""
  import jax  # pylint: disable=g-import-not-at-top

  padding = conv_weight_grad.TRANSPOSE4

  def conv(x, kernel):
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), padding, dimension_numbers=conv_weight_grad.DIMS)

  programs = {
      'forward': jax.jit(lambda x, kernel, g: conv(x, kernel)),
      'input_grad': jax.jit(lambda x, kernel, g: jax.vjp(
          lambda x: conv(x, kernel), x)[1](g)[0]),
      'weight_grad': jax.jit(lambda x, kernel, g: jax.vjp(
          lambda kernel: conv(x, kernel), kernel)[1](g)[0]),
  }
  results = {}
  for batch, side, channels in shapes:
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (batch, side, side, channels))
    kernel = jax.random.normal(keys[1], (4, 4, channels, channels))
    g = jax.random.normal(keys[2], (batch, side, side, channels))
    results[f'{batch}x{side}x{channels}'] = {
        name: 1e3 * statistics.median(bench.time_repeats(
            lambda p=program: p(x, kernel, g).block_until_ready(),
            repeats, warmup=1))
        for name, program in programs.items()}
    compiled = programs['forward'].lower(x, kernel, g).compile().as_text()
    results[f'{batch}x{side}x{channels}']['forward_library'] = (
        'ynnpack' if 'ynn_fusion' in compiled else 'eigen')
  return results


def _parse_shapes(text: str) -> list[tuple[int, int, int]]:
  try:
    shapes = [tuple(int(n) for n in item.split('x'))
              for item in text.split(',')]
  except ValueError:
    shapes = []
  if not shapes or any(len(s) != 3 or min(s) < 1 for s in shapes):
    raise SystemExit(f'--shapes: BATCHxSIDExCHANNELS[,...], got {text!r}')
  return shapes


def measure_library(library: str, shapes_text: str, cores: int | None,
                    repeats: int) -> dict:
  """`time_convolutions` in a new process with `library`'s flag."""
  env = dict(os.environ, XLA_FLAGS=library_flags(
      os.environ.get('XLA_FLAGS', ''), library))
  command = [sys.executable, '-m', 'experiments.benchmarks.conv_library',
             '--child', '--shapes', shapes_text, '--repeats', str(repeats)]
  if cores:
    command += ['--cores', str(cores)]
  out = subprocess.run(command, env=env, check=True, capture_output=True,
                       text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--shapes', default=','.join(
      'x'.join(map(str, s)) for s in conv_weight_grad.SHAPES))
  parser.add_argument('--cores', type=int, default=None,
                      help='pin to the first N CPUs (default: all)')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  shapes = _parse_shapes(args.shapes)
  if args.child:
    pinned = bench.on_cores(args.cores) if args.cores else (
        contextlib.nullcontext())
    with pinned:
      print(json.dumps(time_convolutions(shapes, args.repeats)))
    return
  runs = {library: measure_library(library, args.shapes, args.cores,
                                   args.repeats) for library in LIBRARIES}
  print(f'4x4 stride-1 convolutions, ms (median of {args.repeats}), '
        f'{args.cores or "all"} core(s): YNNPACK / Eigen')
  print(f'{"batch x side x channels":>24} ' +
        ' '.join(f'{m:>16}' for m in MEASUREMENTS))
  for shape in runs['ynnpack']:
    cells = [f'{runs["ynnpack"][shape][m]:7.1f} / '
             f'{runs["eigen"][shape][m]:<6.1f}' for m in MEASUREMENTS]
    print(f'{shape:>24} ' + ' '.join(f'{c:>16}' for c in cells))


if __name__ == '__main__':
  main()
