"""Synthetic record generation speed, on one CPU core and end to end.

  python -m experiments.benchmarks.synth_speed --resolution 256 --records 300

Single-core: this process is pinned to one core with one thread per library,
and makes + serialises `--records` records (the face model is built and the
first record made before timing), `--repeats` times; it prints the median
rate by wall time and by this process's CPU time (on a shared virtual
machine the two differ when other guests take the core). End to end
(`--workers N`): `jaxface data synth` into a temporary directory, shards and
all.
"""

from __future__ import annotations

import os

for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
  os.environ.setdefault(_var, '1')

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import statistics  # pylint: disable=g-import-not-at-top,wrong-import-position
import tempfile  # pylint: disable=g-import-not-at-top,wrong-import-position
import time  # pylint: disable=g-import-not-at-top,wrong-import-position

import cv2  # pylint: disable=g-import-not-at-top,wrong-import-position

from data_pipelines import synthetic  # pylint: disable=g-import-not-at-top,wrong-import-position
from jaxface.data import records  # pylint: disable=g-import-not-at-top,wrong-import-position


def single_core(kind: str, resolution: int, count: int, repeats: int
                ) -> tuple[float, float]:
  """Median records per second (wall, CPU) of make + serialise, one core."""
  cores = os.sched_getaffinity(0) if hasattr(os, 'sched_setaffinity') else None
  if cores:
    os.sched_setaffinity(0, {min(cores)})
  cv2.setNumThreads(1)
  gen = synthetic.Generator(synthetic.SynthConfig(resolution=resolution))
  records.serialize(kind, gen.make(kind, 'train', 0))
  wall, cpu = [], []
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    for index in range(1, count + 1):
      records.serialize(kind, gen.make(kind, 'train', index))
    wall.append(count / (time.perf_counter() - start))
    cpu.append(count / (time.process_time() - start_cpu))
  if cores:
    os.sched_setaffinity(0, cores)  # worker processes inherit affinity
  return statistics.median(wall), statistics.median(cpu)


def end_to_end(resolution: int, count: int, workers: int) -> float:
  """Records per second of `synthesize` (recon train split) with workers,
  worker start-up included."""
  config = synthetic.SynthConfig(resolution=resolution)
  with tempfile.TemporaryDirectory() as out:
    start = time.perf_counter()
    synthetic.synthesize(out, config, {'recon': {'train': count}},
                         workers=workers, progress=False)
    return count / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--resolution', type=int, default=256)
  parser.add_argument('--records', type=int, default=300)
  parser.add_argument('--kind', default='recon',
                      choices=['recon', 'multiview', 'clips'])
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--workers', type=int, default=0,
                      help='also time `synthesize` with this many workers')
  args = parser.parse_args()
  wall, cpu = single_core(args.kind, args.resolution, args.records,
                          args.repeats)
  print(f'{args.kind} records at {args.resolution}x{args.resolution}, one '
        f'core: {wall:.1f} records/s by wall time, {cpu:.1f} by CPU time '
        f'(median of {args.repeats} x {args.records} records)')
  if args.workers:
    rate = end_to_end(args.resolution, args.records, args.workers)
    print(f'synthesize with {args.workers} workers, shards included: '
          f'{rate:.1f} records/s')


if __name__ == '__main__':
  main()
