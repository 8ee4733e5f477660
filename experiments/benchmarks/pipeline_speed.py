"""Input pipeline speed: records/s of decode + augment + batch.

  python -m experiments.benchmarks.pipeline_speed --resolution 256 \
      --records 256 --workers 0 2

Renders `--records` synthetic recon train records at `--resolution` into a
temporary directory (`synthesize` with 2 worker processes), then, for each
worker count, iterates the full training pipeline (`jaxface.data.pipeline`:
read, deserialise, JPEG decode, float conversion, PRNet augmentation with
the default AugmentConfig, batching, worker prefetch) over `--batches`
batches of `--batch-size` and prints records per second by wall time:
steady state (after `--warmup` batches, which absorb worker start-up) and
from `make_iterator` on (start-up included). It also times each stage of one
record on this process's thread (`--stage-records` records).

Measured on the 2-core CI-class machine (shared, so +-15 %), 4 runs, batch
32, 2 read threads, 256x256 with augmentation: 0 workers 317-346 records/s
steady; 2 workers 290-372 records/s steady, 180-209 with their ~2 s
start-up. One record costs ~3.4-5 ms of one core (augmentation ~60 % of
it), so two cores cap the rate near 400-500 records/s and worker processes
only pay off on larger hosts.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from data_pipelines import synthetic
from jaxface.data import augment
from jaxface.data import pipeline
from jaxface.data import records
from jaxface.data import shards


def pipeline_rate(directory: str, workers: int, batch_size: int,
                  batches: int, warmup: int, read_threads: int
                  ) -> tuple[float, float]:
  """(steady-state records/s, records/s with start-up) of the pipeline."""
  config = pipeline.PipelineConfig(
      kind='recon', split='train', global_batch_size=batch_size,
      worker_count=workers, read_threads=read_threads, seed=0)
  start = time.perf_counter()
  it = pipeline.make_iterator(directory, config, process_index=0,
                              process_count=1)
  try:
    for _ in range(warmup):
      next(it)
    steady = time.perf_counter()
    for _ in range(batches):
      batch = next(it)
      assert batch['image'].shape[0] == batch_size
    end = time.perf_counter()
  finally:
    it.close()
  return (batches * batch_size / (end - steady),
          (warmup + batches) * batch_size / (end - start))


def stage_times(directory: str, count: int) -> dict[str, float]:
  """Milliseconds per record of each stage, on this thread."""
  reader = shards.RecordReader(directory, 'recon', 'train')
  count = min(count, len(reader))
  times = dict.fromkeys(('read', 'deserialise', 'decode JPEG + float',
                         'augment', 'total'), 0.0)
  config = augment.AugmentConfig()
  for index in range(count):
    t0 = time.perf_counter()
    data = reader.read_bytes(index)
    t1 = time.perf_counter()
    record = records.deserialize(data, kind='recon')
    t2 = time.perf_counter()
    image = records.decode_jpeg(record['image']).astype(np.float32) / 255
    t3 = time.perf_counter()
    augment.augment(image, record['position_map'], record['landmarks'],
                    np.random.default_rng(index), config)
    t4 = time.perf_counter()
    for name, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
      times[name] += dt
  return {name: 1e3 * t / count for name, t in times.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--resolution', type=int, default=256)
  parser.add_argument('--records', type=int, default=256)
  parser.add_argument('--workers', type=int, nargs='+', default=[0, 2])
  parser.add_argument('--batch-size', type=int, default=32)
  parser.add_argument('--batches', type=int, default=24)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--read-threads', type=int, default=2)
  parser.add_argument('--stage-records', type=int, default=64)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as directory:
    start = time.perf_counter()
    synthetic.synthesize(
        directory, synthetic.SynthConfig(resolution=args.resolution),
        {'recon': {'train': args.records}}, workers=2, progress=False)
    print(f'made {args.records} recon records at {args.resolution}x'
          f'{args.resolution} in {time.perf_counter() - start:.1f} s')
    stages = stage_times(directory, args.stage_records)
    print('one record, one thread (ms): ' + ', '.join(
        f'{name} {ms:.2f}' for name, ms in stages.items()))
    for workers in args.workers:
      steady, overall = pipeline_rate(directory, workers, args.batch_size,
                                      args.batches, args.warmup,
                                      args.read_threads)
      print(f'pipeline, {workers} worker processes, {args.read_threads} read '
            f'threads, batch {args.batch_size}: {steady:.0f} records/s '
            f'steady ({args.batches} batches after {args.warmup}), '
            f'{overall:.0f} records/s with start-up')


if __name__ == '__main__':
  main()
