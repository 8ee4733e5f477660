"""Where the input pipeline's time goes: milliseconds per record per stage.

  python -m experiments.benchmarks.pipeline_stages --resolution 256 \
      --records 64

Renders `--records` synthetic recon train records at `--resolution` into a
temporary directory, then times each stage of one record on this thread:
read, deserialise, JPEG decode + float conversion, PRNet augmentation (the
default AugmentConfig). The pipeline's records/s as a whole (workers,
threads, batching, prefetch) is `jaxface bench --what pipeline`.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from jaxface.data import augment
from jaxface.data import records
from jaxface.data import shards
from jaxface.data import synthetic


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
  parser.add_argument('--records', type=int, default=64)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as directory:
    synthetic.synthesize(
        directory, synthetic.SynthConfig(resolution=args.resolution),
        {'recon': {'train': args.records}}, workers=2, progress=False)
    stages = stage_times(directory, args.records)
  print(f'one recon record at {args.resolution}x{args.resolution}, one '
        'thread (ms): ' + ', '.join(f'{name} {ms:.2f}'
                                    for name, ms in stages.items()))


if __name__ == '__main__':
  main()
