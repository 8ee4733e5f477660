"""Evaluation of a trained reconstruction network (PRNet) on `recon` records.

  report, per_image = recon_eval.evaluate_reconstruction('runs/prnet',
                                                         'data/aflw2000')
  print(recon_eval.markdown_table(report))
  recon_eval.write_outputs(report, per_image, 'runs/prnet/eval')

The network of a `prnet` or `cycle` workdir predicts a position map per
image in the UV layout it was trained in (`TrainedModel.layout`); the 68
landmarks are read off it at that layout's landmark UVs. Per image: the 2D
and 3D landmark NME (AFLW2000-3D's protocol, `metrics.nme`), the yaw of the
record's pose, the dense NME over the layout's face region (records with
position maps in the model's layout), and the head-pose error (the pose
fitted between the predicted map and a canonical mean face in the model's
layout, `metrics.estimate_pose`, against the record's pose). The report
gives them per yaw bin (0-30, 30-60, 60-90 degrees) as AFLW2000-3D's tables
do.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import time
from typing import Any

import jax
import numpy as np
import tqdm

from jaxface.data import pipeline
from jaxface.data import shards
from jaxface.eval import metrics
from jaxface.eval import plots
from jaxface.face import layout as layout_lib
from jaxface.face import uv as uv_lib
from jaxface.train import trained as trained_lib

REPORT_NAME = 'report.json'


def _load(workdir_or_trained) -> trained_lib.TrainedModel:
  if isinstance(workdir_or_trained, trained_lib.TrainedModel):
    return workdir_or_trained
  return trained_lib.load(os.fspath(workdir_or_trained))


def split_batches(data_dir: str, info: dict, kind: str, split: str,
                  batch_size: int, limit: int | None = None,
                  progress: bool = True, stats: dict | None = None):
  """Yields (count, batch) over one epoch of a split, in index order.

  Every record once (`shard_by_process=False`), no augmentation, the last
  partial batch kept; `count` of the batch's examples are wanted (fewer in
  the last batch when `limit` cuts it). A progress bar counts them. At the
  end `stats['skipped']` holds the corrupted records the pipeline skipped.

  Raises:
    shards.DatasetError: no such kind or split.
    ValueError: no readable records.
  """
  entry = info.get('kinds', {}).get(kind, {}).get(split)
  if entry is None:
    present = {k: sorted(splits) for k, splits in info.get('kinds', {}).items()}
    raise shards.DatasetError(
        f'{data_dir} has no {kind}/{split} records; it has {present}')
  total = int(entry['count'])
  total = total if limit is None else min(total, limit)
  iterator = pipeline.make_iterator(data_dir, pipeline.PipelineConfig(
      kind=kind, split=split, global_batch_size=batch_size, shuffle=False,
      num_epochs=1, training=False, drop_remainder=False,
      shard_by_process=False))
  bar = tqdm.tqdm(total=total, unit='rec', desc=f'eval {kind}/{split}',
                  disable=not progress, dynamic_ncols=True)
  done = 0
  try:
    for batch in iterator:
      count = min(len(batch['index']), total - done)
      if count <= 0:
        break
      yield count, batch
      done += count
      bar.update(count)
      if done >= total:
        break
    if stats is not None:
      stats['skipped'] = int(iterator.skipped)
  finally:
    bar.close()
    iterator.close()
  if not done:
    raise ValueError(f'{data_dir} {kind}/{split}: no readable records')


def _check_resolution(model_res: int, data_res: int, what: str) -> None:
  if int(data_res) != int(model_res):
    raise ValueError(
        f'resolution mismatch: the model was trained on {model_res}x'
        f'{model_res} images but {what} is {data_res}x{data_res}; evaluate '
        f'on a dataset made at {model_res} (e.g. `jaxface data synth '
        f'--resolution {model_res}`)')


def _pose_setup(canonical, info: dict, resolution: int, mask: np.ndarray,
                layout: layout_lib.UVLayout
                ) -> tuple[np.ndarray | None, np.ndarray | None, str]:
  """(canonical map, texels used for the pose fit, description or the
  reason the pose error is skipped).

  The default canonical map is the procedural face model's mean face, which
  is in the procedural layout and in the synthetic data's frame: other
  layouts and sources need `canonical`.
  """
  if canonical is None:
    if not layout.is_procedural:
      return None, None, (
          f'no canonical map in the model\'s {layout.name!r} UV layout (pass '
          'canonical=metrics.canonical_reference(R, bfm_dir) for a model '
          'trained in the BFM UV layout)')
    if info.get('source') != 'synthetic':
      return None, None, (
          f'no canonical map for a {info.get("source")!r} dataset '
          '(pass canonical=metrics.canonical_reference(R, bfm_dir) for maps '
          'in the BFM UV layout)')
    canonical = metrics.canonical_reference(resolution)
    description = 'the procedural face model\'s mean face'
  else:
    description = 'the given canonical map'
  canonical = np.asarray(canonical, np.float32)
  if canonical.shape != (resolution, resolution, 3):
    raise ValueError(f'canonical must be a ({resolution}, {resolution}, 3) '
                     f'map, got {canonical.shape}')
  # Texels off the canonical mesh (all zero, e.g. outside the BFM) are left
  # out of the fit.
  fit = mask & np.any(canonical != 0, axis=-1)
  if fit.sum() < 3:
    raise ValueError('the canonical map covers fewer than 3 face texels')
  return canonical, fit, description


@functools.partial(jax.jit, static_argnums=0)
def _predict(module, variables, images, landmark_uv):
  """(B, R, R, 3) images -> (position maps (B, R, R, 3), landmarks
  (B, 68, 3) read at `landmark_uv` (68, 2)), crop pixels. Jitted once per
  network config and shape."""
  maps = module.apply(variables, images)
  return maps, uv_lib.sample_uv(maps, landmark_uv)


def _predicted_poses(maps: np.ndarray, canonical: np.ndarray,
                     fit_mask: np.ndarray) -> np.ndarray:
  """(B, R, R, 3) predicted maps -> (B, 3) pitch, yaw, roll in degrees."""
  poses = []
  for position_map in maps:
    fit = metrics.estimate_pose(position_map[fit_mask], canonical[fit_mask])
    poses.append([fit['pitch'], fit['yaw'], fit['roll']])
  return np.array(poses, np.float64).reshape(-1, 3)


def pad_batch(images: np.ndarray, batch_size: int) -> np.ndarray:
  """(n, ...) -> (batch_size, ...), zeros after the n images."""
  pad = batch_size - len(images)
  if pad <= 0:
    return images
  return np.concatenate([images, np.zeros((pad,) + images.shape[1:],
                                          images.dtype)])


def _summary(values: np.ndarray) -> float | None:
  values = np.asarray(values, np.float64)
  return float(values.mean()) if values.size else None


def _batch_metrics(batch: dict, count: int, maps: np.ndarray,
                   landmarks: np.ndarray, mask: np.ndarray,
                   canonical: np.ndarray | None,
                   fit_mask: np.ndarray | None) -> dict[str, np.ndarray]:
  """Per-image metrics of the first `count` examples of a batch.

  Args:
    batch: the pipeline's recon batch.
    count: examples to measure.
    maps: (count, R, R, 3) predicted position maps, crop pixels.
    landmarks: (count, 68, 3) landmarks read off them.
    mask: (R, R) face region of the dense NME, or None (no dense NME: the
      records' maps are in another UV layout).
    canonical: (R, R, 3) canonical map of the pose fit, or None (no pose).
    fit_mask: (R, R) texels of the pose fit.

  Returns:
    {name: (count, ...) array}, see `evaluate_reconstruction`'s per_image.
  """
  true_lmk = batch['landmarks'][:count]
  true_pose = np.rad2deg(batch['pose'][:count, :3].astype(np.float64))
  out = {'index': batch['index'][:count],
         'nme_2d': metrics.nme(landmarks, true_lmk, 2),
         'nme_3d': metrics.nme(landmarks, true_lmk, 3),
         'yaw_deg': true_pose[:, 1], 'true_pose_deg': true_pose}
  if 'position_map' in batch and mask is not None:
    out['dense_nme'] = metrics.dense_nme(maps, batch['position_map'][:count],
                                         mask, dims=3)
  if canonical is not None:
    pred_pose = _predicted_poses(maps, canonical, fit_mask)
    out['pred_pose_deg'] = pred_pose
    out['pose_error_deg'] = metrics.pose_error(pred_pose, true_pose)
    out['rotation_error_deg'] = metrics.rotation_error(pred_pose, true_pose)
  return out


def _report(trained: trained_lib.TrainedModel, data_dir: str, split: str,
            info: dict, per_image: dict[str, np.ndarray], skipped: int,
            pose_note: str, dense_note: str | None = None) -> dict[str, Any]:
  """The report dict of `evaluate_reconstruction` (without 'seconds').

  `pose_note` names the canonical map of the pose fit, or says why the pose
  error was not measured (then `per_image` has no pose errors).
  `dense_note` says why the dense NME was not measured (None: because the
  records have no position maps, if `per_image` has no dense NME).
  """
  n = len(per_image['index'])
  report: dict[str, Any] = {
      'model': {'workdir': os.path.abspath(trained.workdir),
                'step': trained.step, 'task': trained.task,
                'resolution': trained.resolution,
                'uv_layout': trained.layout.name},
      'dataset': {'path': os.path.abspath(data_dir), 'split': split,
                  'source': info.get('source'),
                  'resolution': info.get('resolution', trained.resolution),
                  'uv_layout': layout_lib.layout_of_dataset(info).name},
      'count': n, 'skipped_records': skipped,
      'nme_2d': metrics.binned_summary(per_image['nme_2d'],
                                       per_image['yaw_deg']),
      'nme_3d': metrics.binned_summary(per_image['nme_3d'],
                                       per_image['yaw_deg']),
  }
  if 'dense_nme' in per_image:
    report['dense_nme'] = {'mean': _summary(per_image['dense_nme']),
                           'count': n, 'dims': 3, 'region': 'face'}
  else:
    report['dense_nme'] = {'mean': None, 'count': 0, 'dims': 3,
                           'region': 'face',
                           'skipped': dense_note or
                                      'the records have no position maps'}
  if 'pose_error_deg' in per_image:
    err = per_image['pose_error_deg']
    report['pose_error'] = {
        'pitch': _summary(err[:, 0]), 'yaw': _summary(err[:, 1]),
        'roll': _summary(err[:, 2]), 'mean': _summary(err),
        'rotation': _summary(per_image['rotation_error_deg']), 'count': n,
        'canonical': pose_note}
  else:
    report['pose_error'] = {'pitch': None, 'yaw': None, 'roll': None,
                            'mean': None, 'rotation': None, 'count': 0,
                            'skipped': pose_note}
  return report


def evaluate_reconstruction(workdir_or_trained, data_dir: str,
                            split: str = 'test', batch_size: int = 32,
                            limit: int | None = None, canonical=None,
                            progress: bool = True
                            ) -> tuple[dict, dict[str, np.ndarray]]:
  """Measures a reconstruction network on a dataset's `recon` records.

  Records are read in index order, once, without augmentation; every batch
  is padded to `batch_size`, so the jitted network compiles once.

  Args:
    workdir_or_trained: the workdir of a `prnet` or `cycle` training run
      (its last checkpoint), or a `trained.TrainedModel`.
    data_dir: a jaxface dataset directory with `recon` records at the
      model's resolution.
    split: the split to evaluate.
    batch_size: images per forward pass.
    limit: evaluate only the first `limit` records (None: all).
    canonical: (R, R, 3) canonical frontal mean face for the pose fit
      (`metrics.canonical_reference`), in the model's UV layout. None: the
      procedural model's mean face for a model in the procedural layout on
      a synthetic dataset; otherwise the pose error is skipped.
    progress: show a progress bar.

  Returns:
    (report, per_image). `report` is a JSON-able dict:
      'model': {'workdir', 'step', 'task', 'resolution', 'uv_layout' (the
        layout's name)};
      'dataset': {'path', 'split', 'source', 'resolution', 'uv_layout'};
      'count': images evaluated; 'skipped_records': corrupted records
        skipped by the pipeline;
      'nme_2d', 'nme_3d': `metrics.binned_summary` of the landmark NME
        (unitless) by yaw bin;
      'dense_nme': {'mean', 'count', 'dims': 3, 'region': 'face'}, plus
        'skipped' (the reason) with mean None when the records have no
        position maps or their UV layout is not the model's (texels of
        different layouts are different points of the face);
      'pose_error': {'pitch', 'yaw', 'roll', 'mean' (of the three),
        'rotation' (the geodesic `metrics.rotation_error`), all mean
        absolute errors in degrees; 'count', 'canonical'}, or with None
        values and 'skipped' (the reason);
      'seconds': wall time.
    `per_image` holds numpy arrays over the N images: 'index' (record
    indices), 'nme_2d', 'nme_3d', 'yaw_deg', 'true_pose_deg' (N, 3 as
    pitch, yaw, roll), and when measured 'dense_nme', 'pred_pose_deg'
    (N, 3), 'pose_error_deg' (N, 3), 'rotation_error_deg' (N,).

  Raises:
    ValueError: the dataset's resolution is not the model's, the model is
      not a reconstruction network, a malformed uv_layout, or bad
      arguments.
    shards.DatasetError: no such dataset or split.
    FileNotFoundError: not a training workdir.
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  if limit is not None and limit < 1:
    raise ValueError(f'limit must be >= 1 or None, got {limit}')
  start_time = time.perf_counter()
  trained = _load(workdir_or_trained)
  module, variables = trained_lib.prnet(trained)
  resolution = trained.resolution
  data_dir = os.fspath(data_dir)
  info = shards.read_dataset_info(data_dir)
  if info.get('resolution') is not None:
    _check_resolution(resolution, info['resolution'], f'the dataset {data_dir}')
  layout = trained.layout
  mask = layout.face_region(resolution)
  data_layout = layout_lib.layout_of_dataset(info)
  dense_mask, dense_note = mask, None
  if data_layout != layout:
    dense_mask, dense_note = None, (
        f'the records\' position maps are in the {data_layout.name!r} UV '
        f'layout, the model\'s in the {layout.name!r} one')
  canonical, fit_mask, pose_note = _pose_setup(canonical, info, resolution,
                                               mask, layout)
  landmark_uv = np.asarray(layout.landmark_uv)
  variables = jax.device_put(variables)
  columns: dict[str, list[np.ndarray]] = {}
  stats: dict[str, int] = {}
  has_maps = False
  for count, batch in split_batches(data_dir, info, 'recon', split,
                                    batch_size, limit, progress, stats):
    images = batch['image'][:count]
    if images.shape[1] != resolution or images.shape[2] != resolution:
      _check_resolution(resolution, images.shape[1],
                        f'the images of {data_dir}')
    maps, landmarks = _predict(module, variables,
                               pad_batch(images, batch_size), landmark_uv)
    maps = np.asarray(maps, np.float64)[:count]
    landmarks = np.asarray(landmarks, np.float64)[:count]
    has_maps = has_maps or 'position_map' in batch
    out = _batch_metrics(batch, count, maps, landmarks, dense_mask,
                         canonical, fit_mask)
    for key, value in out.items():
      columns.setdefault(key, []).append(np.asarray(value))
  per_image = {k: np.concatenate(v) for k, v in columns.items()}
  skipped = stats['skipped']

  report = _report(trained, data_dir, split, info, per_image, skipped,
                   pose_note, dense_note if has_maps else None)
  report['seconds'] = round(time.perf_counter() - start_time, 3)
  return json_safe(report), per_image


def json_safe(value):
  """Non-finite floats -> None, numpy scalars -> Python, recursively."""
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def _percent(value) -> str:
  return '-' if value is None else f'{100 * value:.2f}'


def _degrees(value) -> str:
  return '-' if value is None else f'{value:.2f}'


def markdown_table(report: dict) -> str:
  """The report as Markdown: the NME table by yaw bin, then dense NME and
  pose error lines.

  NMEs are shown in percent, pose errors in degrees.
  """
  bins = metrics.BIN_NAMES
  model, data = report['model'], report['dataset']
  lines = [
      f'## Reconstruction on {data["path"]} ({data["split"]})', '',
      f'Model: {model["workdir"]} (step {model["step"]}, {model["task"]}); '
      f'{report["count"]} images.', '',
      '| NME (%) | ' + ' | '.join(f'yaw {b}' for b in bins)
      + ' | mean of bins | all |',
      '|---|' + '---:|' * (len(bins) + 2)]
  for key, name in (('nme_2d', 'NME 2D'), ('nme_3d', 'NME 3D')):
    summary = report[key]
    cells = [_percent(summary[b]['mean']) for b in bins]
    cells += [_percent(summary['mean_of_bins']), _percent(summary['mean'])]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  summary = report['nme_2d']
  lines.append('| images | ' + ' | '.join(str(summary[b]['count'])
                                          for b in bins)
               + f' | | {summary["count"]} |')
  lines.append('')
  dense = report['dense_nme']
  if dense.get('skipped'):
    lines.append(f'Dense NME: not measured ({dense["skipped"]}).')
  else:
    lines.append(f'Dense NME (3D, face region): {_percent(dense["mean"])} % '
                 f'over {dense["count"]} images.')
  pose = report['pose_error']
  if pose.get('skipped'):
    lines.append(f'Pose error: not measured ({pose["skipped"]}).')
  else:
    lines.append(
        f'Pose error (degrees): yaw {_degrees(pose["yaw"])}, pitch '
        f'{_degrees(pose["pitch"])}, roll {_degrees(pose["roll"])}, mean '
        f'{_degrees(pose["mean"])}; rotation (geodesic) '
        f'{_degrees(pose.get("rotation"))}; over {pose["count"]} images '
        f'(canonical: {pose["canonical"]}).')
  return '\n'.join(lines) + '\n'


def _ced_curves(per_image: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """NME 2D of all images and of each yaw bin (empty bins left out)."""
  errors = np.asarray(per_image['nme_2d'])
  bins = metrics.yaw_bin_index(np.asarray(per_image['yaw_deg']))
  curves = {f'all ({errors.size})': errors}
  for k, name in enumerate(metrics.BIN_NAMES):
    if np.any(bins == k):
      curves[f'yaw {name} ({int(np.sum(bins == k))})'] = errors[bins == k]
  return curves


def ced_range(errors) -> float:
  """The CED plot's NME range: AFLW2000-3D's usual 0-10 %, widened in 5 %
  steps to the 95th percentile when more than 5 % of the errors lie beyond
  it (a weak model's curve would otherwise be off the plot)."""
  errors = np.asarray(errors, np.float64)
  errors = errors[np.isfinite(errors)]
  if not errors.size:
    return 0.1
  return max(0.1, math.ceil(np.quantile(errors, 0.95) * 20) / 20)


def write_outputs(report: dict, per_image: dict[str, np.ndarray],
                  out: str) -> dict[str, str]:
  """Writes the report JSON, its Markdown, the CED figure and the arrays.

  Every file is written atomically. With `out` a folder (made if needed):
  `report.json`, `report.md`, `ced.png` and `per_image.npz`. With `out` a
  path ending in `.json`: that file, and next to it the same stem with
  `.md`, `_ced.png` and `_per_image.npz`.

  Args:
    report: from `evaluate_reconstruction`.
    per_image: from `evaluate_reconstruction`.
    out: output folder or report path.

  Returns:
    {'json', 'markdown', 'ced', 'per_image': the paths written}.
  """
  out = os.fspath(out)
  if out.endswith('.json'):
    stem = out[:-len('.json')]
    paths = {'json': out, 'markdown': stem + '.md', 'ced': stem + '_ced.png',
             'per_image': stem + '_per_image.npz'}
  else:
    paths = {'json': os.path.join(out, REPORT_NAME),
             'markdown': os.path.join(out, 'report.md'),
             'ced': os.path.join(out, 'ced.png'),
             'per_image': os.path.join(out, 'per_image.npz')}
  text = json.dumps(json_safe(report), indent=2, allow_nan=False) + '\n'
  plots.write_atomic(paths['json'], text.encode('utf-8'))
  plots.write_atomic(paths['markdown'],
                     markdown_table(report).encode('utf-8'))
  data = report.get('dataset', {})
  plots.ced_plot(_ced_curves(per_image), paths['ced'],
                 max_error=ced_range(per_image['nme_2d']),
                 title=f'NME 2D, {data.get("split", "")} '
                       f'({report.get("count", 0)} images)')
  buffer = io.BytesIO()
  np.savez(buffer, **{k: np.asarray(v) for k, v in per_image.items()})
  plots.write_atomic(paths['per_image'], buffer.getvalue())
  return paths
