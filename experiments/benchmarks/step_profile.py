"""Where the PRNet train step's (or forward pass's) time goes, per XLA
operation.

  python -m experiments.benchmarks.step_profile --resolution 256 --batch 4
  python -m experiments.benchmarks.step_profile --resolution 96 --batch 16 \
      --config experiments/configs/synthetic_model.py
  python -m experiments.benchmarks.step_profile --resolution 256 --batch 1 \
      --forward
  python -m experiments.benchmarks.step_profile --resolution 256 --batch 128 \
      --dtype bfloat16 --trace-out trace.json.gz   # on an accelerator

With `--forward`, the network in eval mode with fresh weights (as
`jaxface bench --what infer` times it) instead of the train step.

Compiles `jaxface bench`'s train step (the prnet_pretrain task, or the
experiment config given with `--config`, at its own width), traces a
few steps with `jax.profiler` (a Perfetto trace), and sums each XLA
operation's time per step. Operations are named from the compiled HLO:
convolutions (XLA's own, or fused into a YNNPACK / oneDNN call), layout
copies (transposes that put a tensor in the layout a convolution wants),
and the rest (BatchNorm, activations, Adam: elementwise and reductions);
forward or backward from the operation's JAX name (layout copies that XLA
inserts have none). Prints the totals and
the `--top` most expensive operations with their shapes. On a GPU the
trace's device events are kernels; each is counted under the XLA operation
its `hlo_op` argument names (convolutions there are cuDNN calls). On a CPU
an asynchronous operation (XLA's Eigen convolutions) counts from its start
to its end event, and operations that run at the same time each count in
full: the sum can pass the step's time by the clock, which is printed
beside it.
`--trace-out` keeps the Perfetto trace.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import shutil
import statistics
import tempfile

import jax

from jaxface import bench
from jaxface import files
from jaxface import host_setup

# name = shape (a tuple's in parentheses) rest-of-line
_OP = re.compile(r'^\s*(?:ROOT )?%(\S+) = (\([^)]*\)|\S+) (.*)$', re.M)


def _kind(name: str, rest: str) -> str:
  if name.startswith(('convolution', 'conv_general_dilated')) or (
      'ynn_fusion' in name or 'onednn' in name) and 'conv' in rest or (
          'cudnn$conv' in rest or 'cudnn-conv' in name):  # GPU: cuDNN calls
    return 'convolution'
  if name.startswith(('transpose', 'copy')) or 'transpose_fusion' in name:
    return 'layout copy'
  return 'other (norm, activation, optimiser)'


class _Step:
  """A compiled computation run to completion by calling it; its HLO text
  names the operations the trace times."""

  def __init__(self, compiled, run):
    self.compiled_text = compiled.as_text()
    self._run = run

  def __call__(self):
    jax.block_until_ready(self._run())


_END = 'end: '  # XLA:CPU's event where an asynchronous operation ends


def _op_times(events: list[dict], ops: dict) -> collections.Counter:
  """Microseconds per XLA operation in trace `events`: of events named
  after an operation (CPU), or where any event carries an `hlo_op` (a GPU's
  kernels), of those events alone, each under its `hlo_op`.

  On the CPU an operation that runs asynchronously (Eigen's convolutions)
  has an event for its start, as long as its dispatch takes, and one named
  'end: NAME' where it finishes, on whichever thread that is: its time is
  from the start of the one to the end of the other, the k-th start paired
  with the k-th end (the traced runs do not overlap).
  """
  timed = [e for e in events if e.get('ph') == 'X']
  by_kernel = any('hlo_op' in e.get('args', {}) for e in timed)
  starts, ends = collections.defaultdict(list), collections.defaultdict(list)
  for e in timed:
    name = e.get('args', {}).get('hlo_op') if by_kernel else e.get('name')
    if name in ops:
      starts[name].append((e['ts'], e['ts'] + e['dur']))
    elif e.get('name', '').startswith(_END):  # no hlo_op
      ends[e['name'][len(_END):]].append(e['ts'] + e['dur'])
  per_op = collections.Counter()
  for name, spans in starts.items():
    spans.sort()
    finish = sorted(ends.get(name, ()))
    if finish and len(finish) != len(spans):
      raise ValueError(f'{name}: {len(spans)} starts but {len(finish)} ends '
                       'in the trace')
    per_op[name] = sum((finish[k] if finish else end) - start
                       for k, (start, end) in enumerate(spans))
  return per_op


def _train_step(config, resolution: int) -> _Step:
  step = bench.compiled_train_step(config, resolution)
  holder = [step.state]

  def run():
    holder[0], metrics = step.compiled(holder[0], step.batch)
    return holder[0], metrics

  return _Step(step.compiled, run)


def _forward(config, resolution: int, batch_size: int, dtype: str) -> _Step:
  model, variables = bench.fresh_network(config, dtype, resolution)
  images = jax.device_put(
      bench.random_batch(batch_size, resolution)['image'])
  compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
      variables, images).compile()
  return _Step(compiled, lambda: compiled(variables, images))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--resolution', type=int, default=256)
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--width', type=float, default=None,
                      help="the network's width (default: the config's)")
  parser.add_argument('--config', default=None,
                      help='an experiment config (default: prnet_pretrain)')
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--top', type=int, default=15)
  parser.add_argument('--forward', action='store_true',
                      help="the network's forward pass in eval mode "
                      'instead of the train step')
  parser.add_argument('--dtype', default='float32', choices=bench.DTYPES,
                      help='compute dtype (parameters stay float32)')
  parser.add_argument('--trace-out', default=None, metavar='FILE.json.gz',
                      help='also keep the Perfetto trace here')
  args = parser.parse_args()
  if args.trace_out:  # refused now, not after the run
    try:
      files.check_output_file(args.trace_out, '--trace-out')
    except (OSError, ValueError) as e:
      parser.error(str(e))
  config = bench.train_config(args.width, args.dtype, args.batch, args.config)
  step = (_forward(config, args.resolution, args.batch, args.dtype)
          if args.forward else _train_step(config, args.resolution))
  ops = {m.group(1): (m.group(2), m.group(3)) for m in _OP.finditer(
      step.compiled_text)}
  walls = bench.time_repeats(step, args.steps, warmup=2)
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    for _ in range(args.steps):
      step()
    jax.profiler.stop_trace()
    path = glob.glob(f'{trace_dir}/**/*perfetto_trace.json.gz',
                     recursive=True)[0]
    if args.trace_out:
      os.makedirs(os.path.dirname(os.path.abspath(args.trace_out)),
                  exist_ok=True)
      shutil.copyfile(path, args.trace_out)
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  per_op = collections.Counter({  # ms per step
      name: us / 1e3 / args.steps
      for name, us in _op_times(events, ops).items()})
  totals = collections.Counter()
  for name, ms in per_op.items():
    shape, rest = ops[name]
    op_name = re.search(r'op_name="([^"]*)"', rest)
    phase = ('no JAX name' if not op_name else 'backward' if 'transpose(' in
             op_name.group(1) else 'forward')
    totals[(_kind(name, rest), phase)] += ms
  what = 'forward pass' if args.forward else 'train step'
  print(f'PRNet {what}, {args.resolution}x{args.resolution}, batch '
        f'{args.batch}, width {config.model.width}, {args.dtype}: '
        f'{sum(per_op.values()):.1f} ms '
        f'of XLA operations per step ({jax.devices()[0].device_kind}); '
        f'{1e3 * statistics.median(walls):.1f} ms a step by the clock, '
        'untraced (operations that run at the same time, such as the CPU\'s '
        'asynchronous convolutions, each count in full)')
  for (kind, phase), ms in totals.most_common():
    print(f'  {ms:7.1f} ms  {kind}, {phase}')
  print(f'the {args.top} most expensive operations:')
  for name, ms in per_op.most_common(args.top):
    shape, rest = ops[name]
    op_name = re.search(r'op_name="([^"]*)"', rest)
    where = op_name.group(1).replace('jit(<lambda>)/', '') if op_name else ''
    print(f'  {ms:7.1f} ms  {name:28s} {shape:28s} {where[:70]}')


if __name__ == '__main__':
  host_setup.set_up()  # as the `jaxface` command runs
  main()
