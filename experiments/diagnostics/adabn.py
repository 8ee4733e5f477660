"""How much of a synthetic-only PRNet's error on real faces sits in its
BatchNorm statistics? AdaBN (Li et al. 2016, "Revisiting Batch
Normalization for Practical Domain Adaptation"): every BatchNorm layer's
mean and variance re-estimated on unlabelled images of the target domain.

  python -m experiments.diagnostics.adabn --model synthetic [--images 2048]
  python -m experiments.diagnostics.adabn --workdir RUN --stats-from DATA

The statistics are re-estimated on `--images` photos of AFLW-21's training
split (the faces that are not held out; their images only, resized to the
model's resolution as `aflw21_eval`'s 'resize' crops are), or on the test
split of a synthetic dataset with `--stats-from DATA` (a control: the
model's own domain). Then the model is measured on AFLW-21's held-out faces
(`aflw21_eval.measure`, 'resize' crops) with its stored and its
re-estimated statistics. Prints one JSON line.

A diagnostic of the domain gap, not a way to ship a model: the shipped
models' statistics come from synthetic faces only, and a model that adapts
to each dataset cannot be measured on one photo at a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import cv2
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import aflw21
from experiments.benchmarks import aflw21_eval
from jaxface.data import pipeline
from jaxface.train import trained as trained_lib


def reestimated_stats(trained: trained_lib.TrainedModel, images: np.ndarray,
                      batch_size: int = 64) -> dict:
  """The PRNet's BatchNorm statistics over `images` ((N, R, R, 3) float32
  in [0, 1]): per layer, the mean of the batches' means, and the mean of
  their variances plus the variance of their means (the whole set's
  variance when the batches are equal). The network's layers see each
  batch normalised by that batch's own statistics, as in training."""
  module, variables = trained_lib.prnet(trained)
  module = module.clone(bn_momentum=0.0)  # running stats := the batch's

  @jax.jit
  def batch_stats(x):
    _, updates = module.apply(variables, x, train=True,
                              mutable=['batch_stats'])
    return updates['batch_stats']

  return pooled_stats([
      jax.device_get(batch_stats(jnp.asarray(images[i:i + batch_size])))
      for i in range(0, len(images) - batch_size + 1, batch_size)])


def pooled_stats(per_batch: list[dict]) -> dict:
  """BatchNorm statistics of equal batches pooled: per layer, 'mean' the
  mean of the batches' means, 'var' the mean of their (biased) variances
  plus the variance of their means, which is the variance of all the
  batches' values together."""
  if not per_batch:
    raise ValueError('no batch: need at least one full batch of images')
  flat = [traverse_util.flatten_dict(b) for b in per_batch]
  out = {}
  for key in flat[0]:
    out[key] = np.stack([f[key] for f in flat]).mean(0)
    if key[-1] == 'var':
      out[key] += np.stack([f[key[:-1] + ('mean',)] for f in flat]).var(0)
  return traverse_util.unflatten_dict(out)


def aflw21_training_images(data: aflw21.AFLW21, resolution: int,
                           count: int, seed: int = 0) -> np.ndarray:
  """(count, R, R, 3) float32 in [0, 1]: random faces of AFLW-21's
  training split (not held out), each 120x120 crop resized to R."""
  train = np.flatnonzero([not aflw21.held_out(n) for n in data.names])
  pick = np.random.default_rng(seed).choice(
      train, size=min(count, len(train)), replace=False)
  return np.stack([
      cv2.resize(data.image(int(i)), (resolution, resolution),
                 interpolation=cv2.INTER_AREA) for i in pick
  ]).astype(np.float32) / 255


def synthetic_images(data_dir: str, count: int) -> np.ndarray:
  """(count or fewer, R, R, 3) float32 in [0, 1] images of a synthetic
  dataset's test split, in order."""
  it = pipeline.make_iterator(data_dir, pipeline.PipelineConfig(
      split='test', global_batch_size=1, shuffle=False, training=False))
  images = []
  try:
    for batch in it:
      images.append(np.asarray(batch['image'][0], np.float32))
      if len(images) == count:
        break
  finally:
    it.close()
  return np.stack(images)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  aflw21_eval.add_model_source(parser)
  parser.add_argument('--images', type=int, default=2048,
                      help='images the statistics are estimated on')
  parser.add_argument('--stats-from', default='aflw21',
                      help="'aflw21' (its training split) or a synthetic "
                      'dataset folder (its test split)')
  args = parser.parse_args(argv)
  trained = trained_lib.load_model(args.workdir, args.model)
  data = aflw21.load(args.data)
  if args.stats_from == 'aflw21':
    images = aflw21_training_images(data, trained.resolution, args.images)
  else:
    images = synthetic_images(args.stats_from, args.images)
  adapted = dataclasses.replace(
      trained, batch_stats=reestimated_stats(trained, images))
  out = {'model': args.workdir or args.model, 'stats_from': args.stats_from,
         'images': int(len(images))}
  for name, model in (('stored', trained), ('reestimated', adapted)):
    nme = aflw21_eval.held_out_nme(model, data, args.limit)
    out[name] = {'nme': nme['all'], 'nme_no_ears': nme['no_ears']}
  print(json.dumps(out))
  return out


if __name__ == '__main__':
  main()
