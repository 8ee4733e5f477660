"""Evaluation of the first seed's networks: the face GAN and the RNN.

  report = gen_eval.evaluate_facegen('runs/facegen', 'data/multiview')
  print(gen_eval.markdown_table(report))

Face GAN (`facegen` workdirs), on `multiview` records: for each record the
generator gets its condition (the run's `facegen.condition`: the features
measured on the three views, and with 'landmarks' the views' landmarks)
and `samples` noise seeds (seed s uses `jax.random.key(s)` folded with the
record index, so a report is reproducible). Per generated face:
- the geometric-consistency error (the mean squared difference between
  the features re-measured on the generated face and the input features,
  `losses.geometric_consistency_loss` without its Huber tail), next to the
  same error of the record's true face, which is not 0 because the true
  views' yaws are not exactly the fixed ones (see that function);
- 'uv': the mean distance to the true canonical map over the face region
  of the model's UV layout (`TrainedModel.layout`, which must be the
  dataset's), in mm (the canonical frame has (R - 1) / 255 pixels per mm);
- 'voxel': the IoU of the occupancy and the Chamfer distance between the
  marching-cubes surfaces of the generated and the true occupancy, in mm;
- 'uv': the Inception Score of all generated faces and the Frechet distance
  between their features and those of the true faces, both with a jaxface
  identity classifier (`jaxface.eval.inception`), whose name the report
  gives: the numbers are comparable between jaxface runs measured with the
  same classifier, not with ImageNet Inception Scores. (The classifier
  takes position maps, so the voxel head has no Inception Score.)

Progression RNN (`progression` workdirs), on `clips` records: accuracy and
cross-entropy overall and per kind of clip (true progressions, and each
corruption of the false ones).

Both reports count the unreadable records that were skipped
('skipped_records'), and their Markdown says it.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxface import files
from jaxface import losses
from jaxface.data import padding
from jaxface.data import records
from jaxface.data import shards
from jaxface.eval import inception
from jaxface.eval import metrics
from jaxface.eval import recon_eval
from jaxface.face import frames
from jaxface.face import layout as layout_lib
from jaxface.train import facegen as facegen_lib
from jaxface.train import trained as trained_lib

# The classifier trained when none is given: classes and maps per class.
CLASSIFIER_IDENTITIES = 100
CLASSIFIER_SAMPLES = 16


@functools.partial(jax.jit, static_argnums=(0,))
def _generate(module, variables, condition, keys):
  noise = jax.vmap(lambda k: jax.random.normal(k, (module.noise_dim,)))(keys)
  return module.apply(variables, condition, noise)


_batch_condition = jax.jit(facegen_lib.batch_condition, static_argnums=1)


@jax.jit
def _geometric_errors(maps, feats, points_uv):
  """(B,) geometric-consistency errors of canonical maps (B, R, R, 3)
  against features (B, 31), the points read at `points_uv` (73, 2)."""
  return jax.vmap(lambda m, f: losses.geometric_consistency_loss(
      m[None], f[None], uv=points_uv))(maps, feats)


def _classifier(path, classifier_dir, data_dir, info, resolution, progress):
  """The identity classifier: given, saved earlier, or trained now."""
  for directory in (path, classifier_dir):
    if directory and os.path.exists(os.path.join(directory,
                                                 inception.META_FILE)):
      bundle = inception.load_classifier(directory)
      if bundle.resolution != resolution:
        raise ValueError(f'the classifier in {directory} takes '
                         f'{bundle.resolution}x{bundle.resolution} maps; the '
                         f'generator makes {resolution}x{resolution}')
      return bundle
    if directory == path and path:
      raise FileNotFoundError(f'--classifier {path}: no saved classifier '
                              f'({inception.META_FILE}) there')
  start = time.perf_counter()
  if info.get('source', '').startswith('synthetic'):
    if progress:
      print(f'training the identity classifier on {CLASSIFIER_IDENTITIES} '
            f'synthetic identities ...')
    train = inception.identity_training_set(
        CLASSIFIER_IDENTITIES, CLASSIFIER_SAMPLES, resolution,
        seed=int(info.get('seed', 0)))
    held = inception.identity_training_set(
        CLASSIFIER_IDENTITIES, 2, resolution, seed=int(info.get('seed', 0)),
        first_sample=CLASSIFIER_SAMPLES)
    validation = (held.maps, held.labels)
  else:
    if progress:
      print(f'training the identity classifier on {data_dir} [train] ...')
    train = inception.dataset_training_set(data_dir, 'train')
    validation = None
  bundle = inception.train_identity_classifier(
      train.maps, train.labels, train.num_classes,
      identities=[int(i) for i in train.identities], source=train.source,
      validation=validation)
  if classifier_dir:
    inception.save_classifier(bundle, classifier_dir)
  if progress:
    print(f'  {bundle.name}: train accuracy {bundle.train_accuracy:.3f}, '
          f'held-out {bundle.val_accuracy}, '
          f'{time.perf_counter() - start:.0f} s')
  return bundle


def evaluate_facegen(workdir_or_trained, data_dir: str, split: str = 'test',
                     batch_size: int = 32, limit: int | None = None,
                     classifier: str | None = None, samples: int = 1,
                     progress: bool = True,
                     classifier_dir: str | None = None) -> dict:
  """Measures a `facegen` workdir on a dataset's `multiview` records.

  Args:
    workdir_or_trained: a workdir or a `trained.TrainedModel`.
    data_dir: a jaxface dataset with multiview records at the model's
      resolution.
    split: the split to measure.
    batch_size: records per generator call.
    limit: only the first `limit` records.
    classifier: a saved identity classifier folder; None: the one in
      `classifier_dir` if there is one, else one trained now (on the
      dataset's synthetic identities, or on its train split's multiview
      identities for real data) and saved in `classifier_dir`.
    samples: noise seeds per record.
    progress: progress bars and messages.
    classifier_dir: where a trained classifier is kept.

  Returns:
    The JSON-able report (see the module docstring).

  Raises:
    ValueError: bad arguments, a resolution other than the model's, or
      canonical maps in another UV layout than the model's (its faces would
      be compared texel by texel with other points of the true faces).
  """
  if batch_size < 1 or samples < 1:
    raise ValueError('batch_size and samples must be >= 1')
  start = time.perf_counter()
  model = (workdir_or_trained if isinstance(
      workdir_or_trained, trained_lib.TrainedModel) else trained_lib.load(
          workdir_or_trained))
  module, variables = trained_lib.facegen(model)
  info = shards.read_dataset_info(data_dir)
  res = model.resolution
  if int(info['resolution']) != res:
    raise ValueError(f'{data_dir} has {info["resolution"]}x'
                     f'{info["resolution"]} records; the model was trained '
                     f'at {res}x{res}')
  layout = model.layout
  data_layout = layout_lib.layout_of_dataset(info)
  if data_layout != layout:
    raise ValueError(
        f'{data_dir} has canonical maps in the {data_layout.name!r} UV '
        f'layout; the generator of {model.workdir} makes maps in the '
        f'{layout.name!r} layout')
  points_uv = np.asarray(layout.points_uv)
  mm_per_px = frames.canonical_mm_per_px(res)
  voxel_mm = res / module.size * mm_per_px  # a voxel's side ('voxel' head)
  face = layout.face_region(res)
  cols: dict[str, list] = {}
  fakes, reals = [], []
  stats: dict[str, int] = {}
  for count, batch in recon_eval.split_batches(
      data_dir, info, 'multiview', split, batch_size, limit, progress, stats):
    padded = padding.pad_batch(batch, batch_size)
    feats, cond = _batch_condition(padded, model.config.facegen.condition)
    true_map = padded['canonical_position_map']
    if module.head == 'uv':
      cols.setdefault('geometric_error_true_face', []).append(np.asarray(
          _geometric_errors(true_map, feats, points_uv))[:count])
    else:
      occ = np.asarray(losses.voxelize_position_map(true_map, module.size))
    for s in range(samples):
      keys = jax.vmap(lambda i, s=s: jax.random.fold_in(
          jax.random.key(s), i))(jnp.asarray(padded['index']))
      fake = np.asarray(_generate(module, variables, cond, keys))
      if module.head == 'uv':
        geo = _geometric_errors(fake, feats, points_uv)
        cols.setdefault('geometric_error', []).append(np.asarray(geo)[:count])
        cols.setdefault('position_error_mm', []).append(
            (metrics.mean_position_error(fake, np.asarray(true_map), face)
             * mm_per_px)[:count])
        fakes.append(fake[:count])
      else:
        pred_occ, true_occ = fake[..., 0] > 0, occ > 0.5
        cols.setdefault('iou', []).append(
            metrics.voxel_iou(pred_occ, true_occ)[:count])
        for k in range(count):
          pred = pred_occ[k]
          cols.setdefault('chamfer_mm', []).append([
              metrics.voxel_chamfer(pred.astype(np.float32), occ[k], voxel_mm)
              if pred.any() else np.nan])
    if module.head == 'uv':
      reals.append(np.asarray(true_map)[:count])
  per = {k: np.concatenate([np.ravel(v) for v in vs]) for k, vs in cols.items()}
  report: dict[str, Any] = {
      'task': 'facegen', 'head': module.head,
      'model': {'workdir': os.path.abspath(model.workdir), 'step': model.step,
                'resolution': res, 'uv_layout': layout.name},
      'dataset': {'path': os.path.abspath(data_dir), 'split': split,
                  'source': info.get('source')},
      'count': int(sum(len(r) for r in reals)) if reals else len(
          per.get('iou', [])) // samples,
      'skipped_records': stats['skipped'], 'samples_per_record': samples}
  for key, values in per.items():
    finite = values[np.isfinite(values)]
    report[key] = {'mean': float(finite.mean()) if finite.size else None,
                   'std': float(finite.std()) if finite.size else None,
                   'count': int(finite.size)}
  if module.head == 'uv':
    generated = np.concatenate(fakes)
    splits = min(10, len(generated))
    bundle = _classifier(classifier, classifier_dir, data_dir, info, res,
                         progress)
    scores = inception.generation_scores(bundle, generated,
                                         np.concatenate(reals), splits)
    scores['splits'] = splits
    scores['classifier_val_accuracy'] = bundle.val_accuracy
    report['generation'] = scores
    # For scale: the same classifier on the true faces.
    probs, _ = inception.classify(bundle, np.concatenate(reals))
    report['generation']['inception_score_true_faces'] = (
        inception.inception_score(probs, min(10, len(probs)))[0])
  else:
    report['generation'] = {'skipped': 'the identity classifier takes '
                                       'position maps; the voxel head has no '
                                       'Inception Score'}
  report['seconds'] = round(time.perf_counter() - start, 3)
  return recon_eval.json_safe(report)


def evaluate_progression(workdir_or_trained, data_dir: str,
                         split: str = 'test', batch_size: int = 32,
                         limit: int | None = None,
                         progress: bool = True) -> dict:
  """Accuracy and cross-entropy of a `progression` workdir on `clips`."""
  from jaxface.train import loop  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  model = (workdir_or_trained if isinstance(
      workdir_or_trained, trained_lib.TrainedModel) else trained_lib.load(
          workdir_or_trained))
  if model.task != 'progression':
    raise ValueError(f'{model.workdir} trained {model.task!r}, not the '
                     'progression RNN')
  task = loop.make_task(model.config, model.resolution, model.layout)
  state = trained_lib.eval_state(model)
  eval_step = jax.jit(task.eval_step)
  info = shards.read_dataset_info(data_dir)
  accuracy, loss, corruption = [], [], []
  stats: dict[str, int] = {}
  for count, batch in recon_eval.split_batches(
      data_dir, info, 'clips', split, batch_size, limit, progress, stats):
    out = eval_step(state, padding.pad_batch(batch, batch_size))
    accuracy.append(np.asarray(out['accuracy'])[:count])
    loss.append(np.asarray(out['loss'])[:count])
    corruption.append(np.asarray(batch['corruption'])[:count])
  accuracy, loss = np.concatenate(accuracy), np.concatenate(loss)
  corruption = np.concatenate(corruption)
  per_kind = {}
  for k, name in enumerate(records.CORRUPTIONS):
    sel = corruption == k
    if sel.any():
      per_kind['true progression' if k == 0 else name] = {
          'accuracy': float(accuracy[sel].mean()), 'count': int(sel.sum())}
  return recon_eval.json_safe({
      'task': 'progression',
      'model': {'workdir': os.path.abspath(model.workdir),
                'step': model.step},
      'dataset': {'path': os.path.abspath(data_dir), 'split': split},
      'count': int(len(accuracy)), 'skipped_records': stats['skipped'],
      'accuracy': float(accuracy.mean()),
      'loss': float(loss.mean()), 'per_kind': per_kind,
      'seconds': round(time.perf_counter() - start, 3)})


def _fmt(value, digits=4) -> str:
  return 'n/a' if value is None else f'{value:.{digits}g}'


def markdown_table(report: dict) -> str:
  """A Markdown summary of `evaluate_facegen` / `evaluate_progression`."""
  m, d = report['model'], report['dataset']
  lines = [f'# {report["task"]}: {m["workdir"]} (step {m["step"]})', '',
           f'{d["path"]} [{d["split"]}], {report["count"]} records.'
           f'{recon_eval.skipped_note(report)}', '',
           '| metric | value |', '|---|---|']
  if report['task'] == 'progression':
    lines.append(f'| accuracy | {_fmt(report["accuracy"])} |')
    lines.append(f'| cross-entropy | {_fmt(report["loss"])} |')
    for name, row in report['per_kind'].items():
      lines.append(f'| accuracy, {name} ({row["count"]}) | '
                   f'{_fmt(row["accuracy"])} |')
    return '\n'.join(lines) + '\n'
  names = {'geometric_error': 'geometric-consistency error (generated)',
           'geometric_error_true_face': 'geometric-consistency error (true '
                                        'face)',
           'position_error_mm': 'distance to the true face (mm, face region)',
           'iou': 'occupancy IoU', 'chamfer_mm': 'Chamfer distance (mm)'}
  for key, name in names.items():
    if key in report:
      lines.append(f'| {name} | {_fmt(report[key]["mean"])} |')
  gen = report['generation']
  if 'skipped' in gen:
    lines.append(f'| Inception Score | not measured ({gen["skipped"]}) |')
  else:
    lines.append(f'| Inception Score ({gen["splits"]} splits) | '
                 f'{_fmt(gen["inception_score"])} +- '
                 f'{_fmt(gen["inception_score_std"], 2)} (true faces: '
                 f'{_fmt(gen["inception_score_true_faces"])}) |')
    lines.append(f'| Frechet distance to the true faces | '
                 f'{_fmt(gen["frechet_distance"])} |')
    lines += ['', f'Classifier: {gen["classifier"]} (held-out accuracy '
              f'{_fmt(gen["classifier_val_accuracy"], 3)}). These scores '
              'compare jaxface runs measured with the same classifier; they '
              'are not ImageNet Inception Scores.']
  return '\n'.join(lines) + '\n'


def write_outputs(report: dict, out: str) -> dict[str, str]:
  """The report as JSON and Markdown: `out` is a folder (report.json,
  report.md) or a path ending in .json (and the same stem with .md)."""
  paths = recon_eval.report_paths(out)
  files.write_json(paths['json'], report, allow_nan=False)
  files.write_atomic(paths['markdown'], markdown_table(report))
  return paths
