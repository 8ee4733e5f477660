"""Per-face latency of `jaxface reconstruct` on this machine (CPU by default).

  python -m experiments.benchmarks.reconstruct_latency [--resolution 256]
      [--batch 8] [--runs 5]

Times a full-width PRNet (width 1.0) at 256 x 256, freshly initialised:
the weights do not change the amount of computation, so a trained model
takes the same time. Two measures, each at batch 1 and at `--batch`:

- forward: the jitted network alone on a batch of crops, plus reading the
  68 landmarks off the maps (what `Reconstructor.predict` runs per batch);
- end to end: `Reconstructor.reconstruct` on a 1024 x 768 photo with that
  many face boxes: crop (cv2.warpAffine), predict, map the position maps
  back to the photo, landmarks and pose; no detection, no file writing.

The photo is scikit-image's astronaut resized to 1024 x 768; the Haar
detector's time on it is printed too. Every figure is the median of
`--runs` runs after a warm-up run (compilation excluded); per-face figures
divide a run by its number of faces.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import cv2
import jax
import numpy as np
import skimage.data

from jaxface.infer import detect
from jaxface.infer import reconstruct
from jaxface.models import PRNet


def _median_s(fn, runs: int) -> float:
  fn()  # Warm-up: compiles.
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _cpu_name() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown CPU'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--resolution', type=int, default=256)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--width', type=float, default=1.0)
  parser.add_argument('--runs', type=int, default=5)
  args = parser.parse_args()
  res = args.resolution
  module = PRNet(width=args.width)
  variables = jax.jit(module.init)(jax.random.key(0),
                                   np.zeros((1, res, res, 3), np.float32))
  model = reconstruct.Reconstructor(module, variables, res, args.batch)
  rng = np.random.default_rng(0)
  photo = cv2.resize(skimage.data.astronaut(), (1024, 768))
  # Face boxes of 160 px on a grid over the photo.
  corners = [(40 + 240 * (k % 4), 60 + 340 * (k // 4 % 2))
             for k in range(args.batch)]
  boxes = np.array([[x, y, x + 160, y + 160] for x, y in corners], float)

  rows = []
  for batch in sorted({1, args.batch}):
    crops = rng.integers(0, 256, (batch, res, res, 3), np.uint8)
    forward = _median_s(lambda c=crops: model.predict(c), args.runs)
    end_to_end = _median_s(
        lambda b=boxes[:batch]: model.reconstruct(photo, b), args.runs)
    rows.append((batch, forward / batch, end_to_end / batch))
  detect_s = _median_s(lambda: detect.detect_faces(photo), args.runs)

  print(f'PRNet width {args.width} at {res}x{res} on '
        f'{jax.devices()[0].platform} ({_cpu_name()}, '
        f'{os.cpu_count()} cores visible), median of {args.runs} runs:')
  print('| batch | forward ms/face | end to end ms/face |')
  print('|---:|---:|---:|')
  for batch, forward, end_to_end in rows:
    print(f'| {batch} | {1000 * forward:.0f} | {1000 * end_to_end:.0f} |')
  print(f'Haar detection on the 1024x768 astronaut: {1000 * detect_s:.0f} ms')


if __name__ == '__main__':
  main()
