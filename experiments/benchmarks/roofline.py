"""How fast the PRNet train step's convolutions could run on an accelerator,
at best: a roofline over each convolution of the program lowered for it.

  python -m experiments.benchmarks.roofline --resolution 256 --batch 128 \
      [--override model.half_res_head=True ...]

Runs on a CPU: the train step (`loop.jit_train_step`, as `jaxface bench`
compiles it) is lowered for `--platform` (default cuda) without a device
(`lowering_platforms`). For each convolution of that program (forward,
input gradient, weight gradient), with F its multiply-adds x 2 and M the
bytes of its two operands and its result:

  time >= max(F / matmul_flops, M / bandwidth),

the time it would take if it read each operand and wrote its result once
at the chip's bandwidth, or ran at its matrix-product rate, whichever is
longer. Their sum is a lower bound on the step: it leaves out every other
operation (BatchNorm, activations, the optimiser) as if fused away for free.
The defaults are what an H200 measured through `jax.jit` (README,
Benchmarks: an 8192^3 bfloat16 product at 800 TFLOP/s, 3.23 TB/s read +
write); the MFU ceiling is the convolutions' FLOPs over that time against
`--peak-flops` (the datasheet's 989.4 TFLOP/s, as `jaxface bench`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re

import jax

BYTES = {'bf16': 2, 'f16': 2, 'f32': 4, 'f64': 8}

_CONVOLUTION = re.compile(
    r'stablehlo\.convolution\(%[^,]+, %[^)]+\) dim_numbers = '
    r'\[[^\]]*\]x\[([^\]]*)\]->\[[^\]]*\](.*?)'
    r': \(tensor<([^>]*)>, tensor<([^>]*)>\) -> tensor<([^>]*)>')
_LHS_DILATION = re.compile(r'lhs_dilate = \[([0-9, ]*)\]')


@dataclasses.dataclass(frozen=True)
class Convolution:
  """One convolution of a StableHLO program: its FLOPs (2 x multiply-adds)
  and the bytes of its operands and result; the tensor types as written
  (e.g. '128x256x256x16xbf16')."""
  flops: int
  bytes: int
  lhs: str
  rhs: str
  out: str

  def seconds(self, matmul_flops: float, bandwidth: float) -> float:
    return max(self.flops / matmul_flops, self.bytes / bandwidth)

  def memory_bound(self, matmul_flops: float, bandwidth: float) -> bool:
    return self.bytes / bandwidth > self.flops / matmul_flops


def _tensor(text: str) -> tuple[list[int], int]:
  """'AxBxCxbf16' -> ([A, B, C], bytes per element)."""
  *dims, dtype = text.split('x')
  return [int(d) for d in dims], BYTES[dtype]


def convolutions(stablehlo: str) -> list[Convolution]:
  """The convolutions of a StableHLO module's text. FLOPs: 2 x the
  result's elements x the kernel's window x its input features (per feature
  group: the kernel's 'i' dimension), over the input's dilation (an input
  gradient of a strided convolution: the products with the zeros between
  its pixels are not counted). Convolutions with batch groups are counted
  as if they had none."""
  out = []
  for match in _CONVOLUTION.finditer(stablehlo):
    labels, attributes, lhs, rhs, result = match.groups()
    dilation = _LHS_DILATION.search(attributes)
    dilation = math.prod(int(d) for d in dilation.group(1).split(',')
                         ) if dilation else 1
    labels = [label.strip() for label in labels.split(',')]
    (lhs_dims, lhs_size), (rhs_dims, rhs_size), (out_dims, out_size) = (
        _tensor(t) for t in (lhs, rhs, result))
    window = math.prod(d for d, label in zip(rhs_dims, labels)
                       if label not in ('i', 'o'))
    flops = (2 * math.prod(out_dims) * window * rhs_dims[labels.index('i')]
             // dilation)
    size = (math.prod(lhs_dims) * lhs_size + math.prod(rhs_dims) * rhs_size
            + math.prod(out_dims) * out_size)
    out.append(Convolution(flops, size, lhs, rhs, result))
  return out


def train_step_text(config_path: str | None, resolution: int, batch: int,
                    dtype: str, platform: str, overrides=()) -> str:
  """The StableHLO text of the config's train step (then `overrides`,
  'KEY=VALUE') lowered for `platform`."""
  from jaxface import bench  # pylint: disable=g-import-not-at-top
  from jaxface.train import loop  # pylint: disable=g-import-not-at-top
  from jaxface.train import state as state_lib  # pylint: disable=g-import-not-at-top
  config = bench.train_config(None, dtype, batch, config_path, overrides)
  task = loop.make_task(config, resolution)
  repl = state_lib.replicated(state_lib.make_mesh(jax.devices()[:1]))
  example = bench.random_batch(batch, resolution)
  key = jax.random.key(0)
  state = jax.eval_shape(task.init_state, key, example)
  return loop.jit_train_step(task, key, repl).trace(state, example).lower(
      lowering_platforms=(platform,)).as_text()


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default=None,
                      help='experiment config (default prnet_pretrain.py)')
  parser.add_argument('--resolution', type=int, default=256)
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--dtype', default='bfloat16')
  parser.add_argument('--platform', default='cuda')
  parser.add_argument('--matmul-flops', type=float, default=800e12)
  parser.add_argument('--bandwidth', type=float, default=3.23e12,
                      help='bytes/s, read + write')
  parser.add_argument('--peak-flops', type=float, default=989.4e12)
  parser.add_argument('--override', action='append', default=[],
                      metavar='KEY=VALUE', help='config override (repeat)')
  parser.add_argument('--top', type=int, default=8)
  args = parser.parse_args(argv)
  convs = convolutions(train_step_text(args.config, args.resolution,
                                       args.batch, args.dtype, args.platform,
                                       args.override))
  rates = (args.matmul_flops, args.bandwidth)
  flops = sum(c.flops for c in convs)
  seconds = sum(c.seconds(*rates) for c in convs)
  memory = [c for c in convs if c.memory_bound(*rates)]
  print(f'PRNet train step, {args.resolution}x{args.resolution}, batch '
        f'{args.batch}, {args.dtype}, lowered for {args.platform}: '
        f'{len(convs)} convolutions, {flops / 1e12:.2f} TFLOP, '
        f'{sum(c.bytes for c in convs) / 1e9:.1f} GB of operands and '
        'results')
  print(f'roofline at {args.matmul_flops / 1e12:.0f} TFLOP/s and '
        f'{args.bandwidth / 1e12:.2f} TB/s: the convolutions alone take at '
        f'least {seconds * 1e3:.2f} ms a step; {len(memory)} of them are '
        f'bound by memory, {sum(c.seconds(*rates) for c in memory) * 1e3:.2f}'
        ' ms of it')
  print(f'MFU ceiling (those FLOPs over that time, against '
        f'{args.peak_flops / 1e12:.1f} TFLOP/s): '
        f'{100 * flops / seconds / args.peak_flops:.1f} %')
  print(f'the {args.top} slowest at the roofline:')
  for c in sorted(convs, key=lambda c: -c.seconds(*rates))[:args.top]:
    print(f'  {c.seconds(*rates) * 1e3:6.3f} ms  {c.flops / 1e9:7.1f} GFLOP '
          f'{c.bytes / 1e6:7.0f} MB  {c.lhs} * {c.rhs} -> {c.out}')


if __name__ == '__main__':
  main()
