"""Inception Score and Frechet distance with an identity classifier of jaxface.

The face GAN makes canonical frontal UV position maps, which ImageNet's
Inception network cannot judge, so both scores use a small CNN trained here
on the evaluation domain to tell identities apart: the synthetic identities
(`identity_training_set`) or the subjects of a dataset's `multiview` records
(`dataset_training_set`, e.g. 300W-LP's). Its class probabilities give the
Inception Score and its penultimate features the Frechet distance. The
numbers depend on that classifier and are not comparable to ImageNet
Inception Scores or FIDs: reports quote `ClassifierBundle.name` with them.

    data = identity_training_set(64, 32, resolution=64, seed=0)
    held_out = identity_training_set(64, 8, 64, seed=0, first_sample=32)
    bundle = train_identity_classifier(
        data.maps, data.labels, data.num_classes, identities=data.identities,
        source=data.source, validation=(held_out.maps, held_out.labels))
    save_classifier(bundle, 'classifier/')
    probs, feats = classify(bundle, generated_maps)   # (N, K), (N, D)
    score, spread = inception_score(probs)
    fd = frechet_distance(feats, classify(bundle, real_maps)[1])

A saved classifier is a directory with `classifier.json` (metadata) and
`params.npz` (the parameters, one array per '/'-joined parameter path).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import zipfile
from typing import Any, Sequence

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg
import scipy.special

from jaxface import files
from jaxface.data import padding
from jaxface.face import frames
from jaxface.face import identities as identities_lib
from jaxface.face import model as model_lib
from jaxface.models import layers

META_FILE = 'classifier.json'
PARAMS_FILE = 'params.npz'
FORMAT = 'jaxface-identity-classifier'
VERSION = 1
# Separates the expression draws of the classifier's training maps from the
# synthetic dataset's own random streams.
_EXPRESSION_STREAM = 0x1DC1


# ------------------------------------------------------------------ scores --


def inception_score(probs, splits: int = 10) -> tuple[float, float]:
  """Inception Score: exp(E_x KL(p(y|x) || p(y))), mean and std over splits.

  The N rows are cut into `splits` consecutive parts (sizes differing by at
  most one); p(y) is each part's mean prediction. The score lies in [1, K]:
  1 when every prediction is the same, K when the predictions are confident
  and spread evenly over K classes.

  Args:
    probs: (N, K) class probabilities (rows are renormalised to sum to 1).
    splits: number of parts; N must be at least this.

  Returns:
    (mean, standard deviation) over the splits (population std, as the
    original Inception Score code).

  Raises:
    ValueError: a wrong shape, too few rows, or negative or non-finite
      probabilities.
  """
  probs = np.asarray(probs, np.float64)
  if probs.ndim != 2 or probs.shape[1] < 1:
    raise ValueError(f'probs must be (N, K), got shape {probs.shape}')
  if splits < 1 or probs.shape[0] < splits:
    raise ValueError(f'the Inception Score needs at least one sample per '
                     f'split: {probs.shape[0]} samples, {splits} splits')
  if not np.all(np.isfinite(probs)) or np.any(probs < 0):
    raise ValueError('probs must be finite and non-negative')
  totals = probs.sum(1, keepdims=True)
  if np.any(totals <= 0):
    raise ValueError('every row of probs must have a positive sum')
  probs = probs / totals
  scores = []
  for part in np.array_split(probs, splits):
    marginal = part.mean(0, keepdims=True)
    # xlogy(0, .) = 0: classes a sample never predicts contribute nothing,
    # and p(y) = 0 implies p(y|x) = 0 for every x of the part.
    kl = (scipy.special.xlogy(part, part)
          - scipy.special.xlogy(part, marginal)).sum(1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


def _mean_and_covariance(features, what: str) -> tuple[np.ndarray, np.ndarray]:
  features = np.asarray(features, np.float64)
  if features.ndim != 2:
    raise ValueError(f'{what} must be (N, D), got shape {features.shape}')
  if features.shape[0] < 2:
    raise ValueError(f'{what} needs at least 2 samples for a covariance, '
                     f'got {features.shape[0]}')
  if not np.all(np.isfinite(features)):
    raise ValueError(f'{what} has non-finite values')
  return features.mean(0), np.atleast_2d(np.cov(features, rowvar=False))


def frechet_distance(features_a, features_b, eps: float = 1e-6) -> float:
  """Frechet distance between Gaussians fitted to two sets of features.

  ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrt(S_a S_b)), as FID computes it
  (unbiased covariances; the matrix square root by `scipy.linalg.sqrtm`).
  If the square root is not finite (singular covariances, e.g. fewer
  samples than dimensions), it is recomputed with eps * I added to both
  covariances; the round-off imaginary part of the root is dropped.

  Args:
    features_a: (N, D) features, N >= 2.
    features_b: (M, D) features, M >= 2.
    eps: the diagonal offset of the fallback.

  Returns:
    The distance, in squared feature units (>= 0 up to round-off).

  Raises:
    ValueError: wrong shapes, too few samples, non-finite features, or a
      square root with a large imaginary part.
  """
  mu_a, cov_a = _mean_and_covariance(features_a, 'features_a')
  mu_b, cov_b = _mean_and_covariance(features_b, 'features_b')
  if mu_a.shape != mu_b.shape:
    raise ValueError(f'feature dimensions differ: {mu_a.shape[0]} and '
                     f'{mu_b.shape[0]}')
  root = scipy.linalg.sqrtm(cov_a @ cov_b)
  if not np.all(np.isfinite(root)):
    offset = np.eye(cov_a.shape[0]) * eps
    root = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
  if np.iscomplexobj(root):
    imaginary = np.max(np.abs(np.diagonal(root).imag))
    if imaginary > 1e-3 * max(1.0, np.max(np.abs(np.diagonal(root).real))):
      raise ValueError(f'the square root of the covariance product has an '
                       f'imaginary part of {imaginary:.3g}')
    root = root.real
  diff = mu_a - mu_b
  return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b)
               - 2 * np.trace(root))


# -------------------------------------------------------------- classifier --


def normalize_maps(maps, mean, std):
  """Canonical maps in pixels -> the classifier's input.

  maps / (1.1 R) is in about [0, 1] (1.1 R is the range of the face GAN's
  'uv' head, `frames.POSITION_SCALE`); the training set's mean map is then
  subtracted and the result divided by the per-channel standard deviation,
  because identities differ by about 1% of that range.

  Args:
    maps: (B, R, R, 3) canonical position maps in pixels.
    mean: (R, R, 3) mean of maps / (1.1 R) over the training set.
    std: (3,) standard deviation of maps / (1.1 R) - mean per channel.

  Returns:
    (B, R, R, 3) float32, about zero mean and unit variance.
  """
  scaled = maps / (frames.POSITION_SCALE * maps.shape[1])
  return ((scaled - mean) / std).astype(jnp.float32)


def input_statistics(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean (R, R, 3), std (3,)) of a training set, for `normalize_maps`."""
  scaled = maps.astype(np.float64) / (frames.POSITION_SCALE * maps.shape[1])
  mean = scaled.mean(0)
  std = np.maximum((scaled - mean).std(axis=(0, 1, 2)), 1e-6)
  return mean.astype(np.float32), std.astype(np.float32)


class IdentityClassifier(nn.Module):
  """Small CNN: normalised canonical maps -> identity logits and features.

  Stride-2 3x3 convolutions (channels doubling from `width` up to
  4 x width) down to 4 x 4, each with layer normalisation and swish
  (smooth, so no feature is constantly zero), then a dense layer to the
  features and one to the logits.

  Attributes:
    num_classes: K.
    width: channels of the first convolution.
    features: D, the size of the penultimate features.
  """
  num_classes: int
  width: int = 8
  features: int = 128

  @nn.compact
  def __call__(self, x):
    """(B, R, R, 3) maps from `normalize_maps` (R >= 8) -> ((B, K) logits,
    (B, D) features)."""
    channels = self.width
    while x.shape[1] > 4:
      x = layers.Conv(channels, (3, 3), strides=(2, 2))(x)
      x = nn.swish(nn.LayerNorm()(x))
      channels = min(2 * channels, 4 * self.width)
    feats = nn.swish(nn.Dense(self.features)(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.num_classes)(feats), feats


@dataclasses.dataclass
class ClassifierBundle:
  """A trained identity classifier and what it was trained on.

  Attributes:
    params: the `IdentityClassifier` parameters (numpy pytree).
    input_mean, input_std: (R, R, 3) and (3,) statistics of the training
      maps for `normalize_maps`.
    num_classes: K.
    resolution: R of the R x R maps it takes.
    identities: (K,) identity id of each class (synthetic identity ids, or
      the dataset's `identity` values).
    train_accuracy: accuracy on the training maps after training.
    val_accuracy: accuracy on the validation maps, if any were given.
    name: what to quote next to the scores.
    width, features: the network's size (`IdentityClassifier`).
    steps, seed: how it was trained.
    source: what the classes are, e.g. 'synthetic identities'.
  """
  params: Any
  input_mean: np.ndarray
  input_std: np.ndarray
  num_classes: int
  resolution: int
  identities: tuple[int, ...]
  train_accuracy: float
  val_accuracy: float | None
  name: str
  width: int = 8
  features: int = 128
  steps: int = 0
  seed: int = 0
  source: str = 'identities'

  def module(self) -> IdentityClassifier:
    return IdentityClassifier(self.num_classes, self.width, self.features)


def classifier_name(num_classes: int, source: str, resolution: int) -> str:
  return (f'jaxface identity classifier: {num_classes} {source}, '
          f'{resolution}x{resolution} canonical position maps')


def _check_maps(maps, resolution: int | None = None) -> np.ndarray:
  maps = np.asarray(maps, np.float32)
  if maps.ndim != 4 or maps.shape[1] != maps.shape[2] or maps.shape[3] != 3:
    raise ValueError(f'maps must be (N, R, R, 3), got shape {maps.shape}')
  if resolution is not None and maps.shape[1] != resolution:
    raise ValueError(f'the classifier takes {resolution}x{resolution} maps, '
                     f'got {maps.shape[1]}x{maps.shape[2]}')
  if maps.shape[1] < 8:
    raise ValueError(f'maps must be at least 8x8, got {maps.shape[1]}')
  if not np.all(np.isfinite(maps)):
    raise ValueError('maps have non-finite values')
  return maps


def _check_labels(labels, count: int, num_classes: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'labels must be ({count},) integers, got '
                     f'{labels.dtype} {labels.shape}')
  if count and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f'labels must be in [0, {num_classes}), got '
                     f'[{labels.min()}, {labels.max()}]')
  return labels.astype(np.int32)


@functools.lru_cache(maxsize=8)
def _init_fn(module: IdentityClassifier):
  # Called with an 'rbg' key: XLA compiles its initialisers about five
  # times faster on CPU than threefry's (seconds per new network size).
  return jax.jit(module.init)


@functools.lru_cache(maxsize=8)
def _train_step(module: IdentityClassifier):
  """A jitted pure Adam step.

  (params, opt_state, maps (B, R, R, 3) in pixels, labels (B,), lr, mean
  (R, R, 3), std (3,)) -> (params, opt_state, loss, accuracy). The learning
  rate is an argument, so one compilation serves every schedule.
  """
  tx = optax.scale_by_adam()

  def loss_fn(params, maps, labels, mean, std):
    logits, _ = module.apply({'params': params},
                             normalize_maps(maps, mean, std))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return loss.mean(), jnp.mean(jnp.argmax(logits, -1) == labels)

  @jax.jit
  def step(params, opt_state, maps, labels, lr, mean, std):
    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, maps, labels, mean, std)
    updates, opt_state = tx.update(grads, opt_state, params)
    updates = jax.tree.map(lambda u: -lr * u, updates)
    return optax.apply_updates(params, updates), opt_state, loss, accuracy

  return tx.init, step


def _accuracy(bundle: ClassifierBundle, maps, labels) -> float:
  probs, _ = classify(bundle, maps)
  return float(np.mean(np.argmax(probs, -1) == labels))


def train_identity_classifier(
    maps, labels, num_classes: int, steps: int = 400, batch_size: int = 64,
    lr: float = 2e-3, seed: int = 0, *,
    identities: Sequence[int] | None = None, source: str = 'identities',
    validation: tuple[Any, Any] | None = None, width: int = 8,
    features: int = 128) -> ClassifierBundle:
  """Trains an `IdentityClassifier` with Adam, the rate decaying from `lr`
  to lr / 20 along a cosine.

  Args:
    maps: (N, R, R, 3) canonical position maps in pixels.
    labels: (N,) int class of each map, in [0, num_classes).
    num_classes: K.
    steps: optimizer steps.
    batch_size: maps per step (at most N); batches walk through a new
      random permutation of the maps every epoch.
    lr: peak learning rate.
    seed: seed of the initialisation (jax's 'rbg' generator, so the
      same seed gives the same classifier on the same backend) and of the
      batch order.
    identities: (K,) identity id of each class; default 0..K-1.
    source: what the classes are, for the name, e.g. 'synthetic
      identities' or '300W_LP subjects'.
    validation: optional (maps (M, R, R, 3), labels (M,)) held out, for
      `val_accuracy`.
    width, features: the network's size.

  Returns:
    The `ClassifierBundle`.
  """
  maps = _check_maps(maps)
  count, resolution = maps.shape[0], maps.shape[1]
  num_classes = int(num_classes)
  if num_classes < 2:
    raise ValueError(f'num_classes must be >= 2, got {num_classes}')
  labels = _check_labels(labels, count, num_classes)
  if count == 0 or steps < 1 or batch_size < 1:
    raise ValueError(f'need maps, steps >= 1 and batch_size >= 1; got '
                     f'{count} maps, {steps} steps, batch {batch_size}')
  identities = tuple(int(i) for i in (
      range(num_classes) if identities is None else identities))
  if len(identities) != num_classes:
    raise ValueError(f'{len(identities)} identities for {num_classes} '
                     f'classes')
  if validation is not None:
    val_maps = _check_maps(validation[0], resolution)
    val_labels = _check_labels(validation[1], val_maps.shape[0], num_classes)

  mean, std = input_statistics(maps)
  module = IdentityClassifier(num_classes, width, features)
  params = _init_fn(module)(jax.random.key(seed, impl='rbg'),
                           normalize_maps(maps[:1], mean, std))['params']
  init_optimizer, step = _train_step(module)
  opt_state = init_optimizer(params)
  # Cosine decay from lr to lr / 20 (optax.cosine_decay_schedule's curve).
  lrs = lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * np.arange(steps)
                                               / steps))).astype(np.float32)
  batch_size = min(batch_size, count)
  rng = np.random.default_rng(seed)
  order, position = rng.permutation(count), 0
  for t in range(steps):
    if position + batch_size > count:
      order, position = rng.permutation(count), 0
    index = order[position:position + batch_size]
    position += batch_size
    params, opt_state, _, _ = step(params, opt_state, maps[index],
                                   labels[index], lrs[t], mean, std)

  bundle = ClassifierBundle(
      params=jax.tree.map(np.asarray, params), input_mean=mean,
      input_std=std, num_classes=num_classes,
      resolution=resolution, identities=identities, train_accuracy=0.0,
      val_accuracy=None, name=classifier_name(num_classes, source,
                                              resolution),
      width=width, features=features, steps=steps, seed=seed, source=source)
  bundle.train_accuracy = _accuracy(bundle, maps, labels)
  if validation is not None:
    bundle.val_accuracy = _accuracy(bundle, val_maps, val_labels)
  return bundle


@functools.lru_cache(maxsize=8)
def _predict_fn(module: IdentityClassifier):
  @jax.jit
  def predict(params, mean, std, maps):
    logits, feats = module.apply({'params': params},
                                 normalize_maps(maps, mean, std))
    return jax.nn.softmax(logits, -1), feats
  return predict


def classify(bundle: ClassifierBundle, maps, batch_size: int = 64
             ) -> tuple[np.ndarray, np.ndarray]:
  """Class probabilities and penultimate features of maps.

  Args:
    bundle: the classifier.
    maps: (N, R, R, 3) canonical position maps in pixels, R the bundle's
      resolution.
    batch_size: maps per call of the network (the last batch is padded, so
      every call has the same shape and compiles once).

  Returns:
    (N, K) float32 probabilities and (N, D) float32 features.
  """
  maps = _check_maps(maps, bundle.resolution)
  predict = _predict_fn(bundle.module())
  probs, feats = [], []
  for start in range(0, maps.shape[0], batch_size):
    batch = maps[start:start + batch_size]
    real = batch.shape[0]
    p, f = predict(bundle.params, bundle.input_mean, bundle.input_std,
                   padding.pad_batch(batch, batch_size))
    probs.append(np.asarray(p)[:real])
    feats.append(np.asarray(f)[:real])
  if not probs:
    return (np.zeros((0, bundle.num_classes), np.float32),
            np.zeros((0, bundle.features), np.float32))
  return np.concatenate(probs), np.concatenate(feats)


def generation_scores(bundle: ClassifierBundle, generated, real=None,
                      splits: int = 10) -> dict[str, Any]:
  """The Inception Score of generated maps and, given real maps, the
  Frechet distance between their features, with the classifier's name.

  Args:
    bundle: the classifier.
    generated: (N, R, R, 3) generated canonical position maps, N >= splits.
    real: optional (M, R, R, 3) real maps, M >= 2.
    splits: Inception Score splits.

  Returns:
    {'inception_score', 'inception_score_std', 'classifier'} and, with
    `real`, 'frechet_distance'.
  """
  probs, feats = classify(bundle, generated)
  mean, std = inception_score(probs, splits)
  scores = {'inception_score': mean, 'inception_score_std': std,
            'classifier': bundle.name}
  if real is not None:
    scores['frechet_distance'] = frechet_distance(feats,
                                                  classify(bundle, real)[1])
  return scores


# ----------------------------------------------------------- training sets --


@dataclasses.dataclass
class LabelledMaps:
  """Canonical position maps with identity classes.

  Attributes:
    maps: (N, R, R, 3) float32 canonical position maps in pixels.
    labels: (N,) int32 class of each map, in [0, K).
    identities: (K,) int64 identity id of each class.
    source: what the classes are, e.g. 'synthetic identities'.
  """
  maps: np.ndarray
  labels: np.ndarray
  identities: np.ndarray
  source: str

  @property
  def num_classes(self) -> int:
    return len(self.identities)


def identity_training_set(num_identities: int, samples_per_identity: int,
                          resolution: int, seed: int = 0, *,
                          first_identity: int = 0, first_sample: int = 0,
                          p_expression: float = 0.2) -> LabelledMaps:
  """Canonical maps of synthetic identities with random expressions.

  The identities are those of `jaxface.face.identities` with dataset seed
  `seed`: ids first_identity .. first_identity + K - 1, which are (part of)
  the train pool of a synthetic dataset made with that seed. Each map is
  `FaceModel.canonical_position_map` of the identity's shape with an
  expression drawn as in `multiview` records (`p_expression` per
  component). Sample j of identity i draws its expression from (seed, i, j)
  only, so maps with other `first_sample` values are new faces of the same
  identities (a held-out set).

  Args:
    num_identities: K classes.
    samples_per_identity: maps per identity.
    resolution: R.
    seed: the synthetic dataset seed.
    first_identity: id of class 0.
    first_sample: index of each identity's first sample.
    p_expression: probability that each expression component is active.

  Returns:
    `LabelledMaps` of K * samples_per_identity maps, identity-major.
  """
  if num_identities < 1 or samples_per_identity < 1:
    raise ValueError('need at least one identity and one sample each')
  model = model_lib.build_face_model()
  ids = np.arange(first_identity, first_identity + num_identities)
  maps, labels = [], []
  for label, index in enumerate(ids):
    shape = identities_lib.sample_identity(model, seed, int(index)).shape
    for j in range(first_sample, first_sample + samples_per_identity):
      rng = np.random.default_rng([seed, _EXPRESSION_STREAM, int(index), j])
      expression = model_lib.sample_expression_coeffs(rng, model,
                                                      p_expression)
      maps.append(model.canonical_position_map(
          model.vertices(shape, expression), resolution))
      labels.append(label)
  return LabelledMaps(np.stack(maps).astype(np.float32),
                      np.asarray(labels, np.int32), ids.astype(np.int64),
                      'synthetic identities')


def dataset_training_set(data_dir: str, split: str = 'train',
                         batch_size: int = 64) -> LabelledMaps:
  """The canonical maps and identities of a dataset's `multiview` records.

  Reads one epoch in index order through `jaxface.data.pipeline` (no
  augmentation; corrupted records are skipped and logged there). The
  distinct identity values, sorted, become classes 0..K-1.

  Args:
    data_dir: a jaxface dataset directory with multiview records.
    split: which split.
    batch_size: records per pipeline batch.

  Returns:
    `LabelledMaps`; its source is 'synthetic identities' for a synthetic
    dataset and '<source> subjects' otherwise (e.g. '300W_LP subjects').
  """
  # Imported here: the input pipeline (grain) is only needed for this.
  from jaxface.data import pipeline  # pylint: disable=g-import-not-at-top
  from jaxface.data import shards  # pylint: disable=g-import-not-at-top
  info = shards.read_dataset_info(data_dir)
  config = pipeline.PipelineConfig(
      kind='multiview', split=split, global_batch_size=batch_size,
      shuffle=False, num_epochs=1, training=False, drop_remainder=False,
      shard_by_process=False)
  iterator = pipeline.make_iterator(data_dir, config)
  maps, identity = [], []
  try:
    for batch in iterator:
      maps.append(batch['canonical_position_map'])
      identity.append(batch['identity'])
  finally:
    iterator.close()
  identities, labels = np.unique(np.concatenate(identity),
                                 return_inverse=True)
  source = str(info.get('source', 'dataset'))
  source = ('synthetic identities' if source == 'synthetic'
            else f'{source} subjects')
  return LabelledMaps(np.concatenate(maps).astype(np.float32),
                      labels.astype(np.int32), identities.astype(np.int64),
                      source)


# ------------------------------------------------------------- save / load --

_META_KEYS = ('num_classes', 'resolution', 'identities', 'train_accuracy',
              'val_accuracy', 'name', 'width', 'features', 'steps', 'seed',
              'source')


def save_classifier(bundle: ClassifierBundle, directory: str) -> None:
  """Writes params.npz, then classifier.json, each atomically."""
  os.makedirs(directory, exist_ok=True)
  flat = {'params/' + '/'.join(path): np.asarray(value) for path, value in
          traverse_util.flatten_dict(bundle.params).items()}
  flat['input_mean'] = np.asarray(bundle.input_mean, np.float32)
  flat['input_std'] = np.asarray(bundle.input_std, np.float32)
  buffer = io.BytesIO()
  np.savez(buffer, **flat)
  files.write_atomic(os.path.join(directory, PARAMS_FILE), buffer.getvalue())
  meta = {'format': FORMAT, 'version': VERSION}
  meta.update({key: getattr(bundle, key) for key in _META_KEYS})
  meta['identities'] = [int(i) for i in bundle.identities]
  files.write_json(os.path.join(directory, META_FILE), meta,
                   default=lambda v: v.item())  # numpy scalars


def load_classifier(directory: str) -> ClassifierBundle:
  """Reads a classifier written by `save_classifier`.

  Raises:
    FileNotFoundError: classifier.json or params.npz is missing.
    ValueError: either file is corrupt, of another format or version, or
      the parameters do not fit the network the metadata describes.
  """
  meta_path = os.path.join(directory, META_FILE)
  params_path = os.path.join(directory, PARAMS_FILE)
  for path in (meta_path, params_path):
    if not os.path.isfile(path):
      raise FileNotFoundError(f'no identity classifier at {directory}: '
                              f'{path} is missing')
  try:
    with open(meta_path, 'rb') as f:
      meta = json.loads(f.read().decode())
    if meta.get('format') != FORMAT or meta.get('version') != VERSION:
      raise ValueError(f'not a {FORMAT} version {VERSION} file')
    fields = {key: meta[key] for key in _META_KEYS}
  except (ValueError, KeyError, AttributeError, UnicodeDecodeError) as e:
    raise ValueError(f'corrupt identity classifier metadata {meta_path}: '
                     f'{e!r}') from e
  try:
    with np.load(params_path, allow_pickle=False) as arrays:
      stored = {key: arrays[key] for key in arrays.files}
    mean, std = stored.pop('input_mean'), stored.pop('input_std')
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f'corrupt identity classifier parameters '
                     f'{params_path}: {e!r}') from e
  flat = {tuple(key.split('/')[1:]): value for key, value in stored.items()}
  bundle = ClassifierBundle(params=traverse_util.unflatten_dict(flat),
                            input_mean=mean, input_std=std, **fields)
  bundle.identities = tuple(int(i) for i in bundle.identities)
  resolution = int(bundle.resolution)
  expected = jax.eval_shape(
      bundle.module().init, jax.random.PRNGKey(0),
      jnp.zeros((1, resolution, resolution, 3)))['params']
  want = {('params',) + k: v.shape
          for k, v in traverse_util.flatten_dict(expected).items()}
  want[('input_mean',)] = (resolution, resolution, 3)
  want[('input_std',)] = (3,)
  got = {tuple(k.split('/')): v.shape for k, v in stored.items()}
  got[('input_mean',)], got[('input_std',)] = mean.shape, std.shape
  if want != got:
    raise ValueError(f'corrupt identity classifier parameters {params_path}: '
                     f'they do not fit the network of {meta_path}')
  return bundle
