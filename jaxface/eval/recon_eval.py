"""Evaluation of a trained reconstruction network (PRNet) on `recon` records.

  report, per_image = recon_eval.evaluate_reconstruction('runs/prnet',
                                                         'data/aflw2000')
  print(recon_eval.markdown_table(report))
  recon_eval.write_outputs(report, per_image, 'runs/prnet/eval')

The network of a `prnet` or `cycle` workdir predicts a position map per
image in the UV layout it was trained in (`TrainedModel.layout`); the 68
landmarks are read off it at that layout's landmark UVs. Per image: the 2D
and 3D landmark NME (AFLW2000-3D's protocol, `metrics.nme`; the 3D one
compares depth up to an offset), the yaw of the record's pose, the dense
NME over the layout's face region (records with position maps in the
model's layout), and the head-pose error (the pose fitted between the
predicted map and a canonical mean face in the model's layout,
`metrics.estimate_pose`, against the record's pose). The report gives the
NMEs per yaw bin (0-30, 30-60, 60-90 degrees) as AFLW2000-3D's tables do,
and the pose error as the head-pose benchmark does (mean absolute yaw,
pitch and roll errors over the images with no angle beyond 99 degrees,
`metrics.pose_benchmark_mask`).

Records of any resolution are measured: a batch at another resolution than
the model's is brought to it first (`to_model_resolution`), so one
converted dataset serves models of every resolution.

2D records (annotated 2D points of a landmark scheme, `jaxface data
convert-landmarks2d`: AFLW-21, iBUG .pts datasets) are measured as
AFLW's benchmark measures them: the scheme, read from the records
(`record_scheme`), says where each point lies in the model's UV layout
(`Scheme.uv`); the points are read off the predicted map there (only
those the layout gives, `Scheme.readable`), mapped back to the records'
pixels, and scored by the NME over the visible points
(`metrics.points_summary`: mean error / sqrt(w h) of the visible points'
box), per |yaw| bin when the records have a yaw, with and without the ear
points. They have no 3D truth: no NME 3D, dense NME or pose error.
"""

from __future__ import annotations

import io
import math
import os
import time
from typing import Any

import cv2
import jax
import numpy as np
import tqdm

from jaxface import files
from jaxface.data import padding
from jaxface.data import pipeline
from jaxface.data import shards
from jaxface.eval import metrics
from jaxface.eval import plots
from jaxface.face import bfm as bfm_lib
from jaxface.face import layout as layout_lib
from jaxface.face import render
from jaxface.face import schemes
from jaxface.models import prnet
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


# ------------------------------------------------------------ resolution ----


def resize_transform(from_resolution: int, to_resolution: int) -> np.ndarray:
  """(3, 3) map from the pixels of an R x R crop to those of an R' x R' crop
  of the same box: x' = x (R' - 1) / (R - 1), the same for y and z.

  Pixel centres 0 and R - 1 are the box's edges (`render.prnet_crop`), and
  texel (i, j) of a position map is at uv = (j, i) / (R - 1), so this one
  map resizes the images, the landmarks and the position maps' UV grid
  alike.
  """
  k = (to_resolution - 1) / (from_resolution - 1)
  return np.diag([k, k, 1.0])


def warp_image(image: np.ndarray, transform: np.ndarray,
               resolution: int) -> np.ndarray:
  """An (H, W, C) image through a similarity into an R x R crop.

  Bilinear and black outside (`render.crop_image`), after a Gaussian
  blur of sigma (1 / s - 1) / 2 source pixels when the transform shrinks by
  s < 1 (skimage's anti-aliasing choice), so that a 256 -> 64 resize does
  not alias.

  Args:
    image: (H, W, C) uint8 or float32 image.
    transform: (3, 3) similarity, image pixels -> crop pixels.
    resolution: side R of the crop.

  Returns:
    (R, R, C) image of the input's dtype.
  """
  transform = np.asarray(transform, np.float64)
  scale = float(np.hypot(transform[0, 0], transform[1, 0]))
  if scale < 1.0:
    sigma = (1.0 / scale - 1.0) / 2.0
    image = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)
  return render.crop_image(image, transform, resolution)


def to_model_resolution(batch: dict, count: int, resolution: int) -> dict:
  """The first `count` examples of a pipeline `recon` batch at the model's
  resolution R'.

  Records converted once at R (e.g. 256) serve models of any R': images are
  resampled by `warp_image` through `resize_transform(R, R')`, landmarks
  (x, y and z) and 2D records' points2d (x, y; 0 where not visible stays
  0) are multiplied by k = (R' - 1) / (R - 1), and position maps are
  resampled over their UV grid (`resize_position_map`) and their values
  multiplied by k. Batches already at R' are only cut to `count`.

  Args:
    batch: the pipeline's batch: 'image' (B, R, R, 3) float32 in [0, 1],
      'landmarks' (B, 68, 3) and optional 'position_map' (B, R, R, 3) in
      crop pixels (3D records) or 'points2d' (B, P, 2) in crop pixels (2D
      records), and per-image fields ('index', 'pose', ...).
    count: the examples wanted.
    resolution: the model's R'.

  Returns:
    A dict with the same keys, each cut to `count` examples, 'image',
    'landmarks', 'points2d' and 'position_map' at R'.
  """
  out = {k: np.asarray(v)[:count] for k, v in batch.items()}
  images = out['image']
  if images.shape[1] != images.shape[2]:
    raise ValueError(f'recon images must be square crops, got '
                     f'{images.shape[1]}x{images.shape[2]}')
  source = images.shape[1]
  if source == resolution:
    return out
  transform = resize_transform(source, resolution)
  k = transform[0, 0]
  out['image'] = np.stack([warp_image(image, transform, resolution)
                           for image in images]).reshape(
                               count, resolution, resolution, -1)
  for key in ('landmarks', 'points2d'):
    if key in out:
      out[key] = out[key].astype(np.float64) * k
  if 'position_map' in out:
    out['position_map'] = np.stack([
        resize_position_map(m, transform, resolution)
        for m in out['position_map']]) * k
  return out


def resize_position_map(position_map: np.ndarray, transform: np.ndarray,
                        resolution: int) -> np.ndarray:
  """An (R, R, 3) position map resampled over its UV grid to R' x R'
  (values unchanged: scale them separately).

  Bilinear over the texels on the face model's mesh only (those not all
  0): the weights of the off-mesh texels are left out and the others'
  renormalised, so that texels at the mesh's border do not average with
  0. Texels with no on-mesh neighbour stay 0.

  Args:
    position_map: (R, R, 3) map.
    transform: (3, 3) `resize_transform(R, R')`.
    resolution: R'.

  Returns:
    (R', R', 3) float64 map.
  """
  position_map = np.asarray(position_map, np.float32)
  on_mesh = np.any(position_map != 0, axis=-1).astype(np.float32)
  weight = render.crop_image(on_mesh, transform, resolution)
  total = render.crop_image(position_map * on_mesh[..., None], transform,
                            resolution)
  inside = weight > 1e-3
  out = np.zeros(total.shape, np.float64)
  out[inside] = total[inside] / weight[inside][:, None]
  return out


# ------------------------------------------------------------------ pose ----


def _training_data_info(trained: trained_lib.TrainedModel) -> dict | None:
  """The dataset.json of the model's training data, if readable here."""
  try:
    data_dir = trained.config.data.dir
  except AttributeError:
    return None
  if not data_dir:
    return None
  try:
    return shards.read_dataset_info(str(data_dir))
  except (shards.DatasetError, OSError, ValueError):
    return None


def find_canonical(trained: trained_lib.TrainedModel, info: dict,
                   resolution: int) -> tuple[np.ndarray | None, str]:
  """The canonical mean face of the model's UV layout, for the pose fit.

  - the procedural layout: the procedural face model's mean face
    (`metrics.canonical_reference(R)`);
  - another layout: the mean face of a BFM folder recorded in a
    dataset.json (`bfm.path`, written by the converters with --bfm): the
    evaluated dataset's, then the model's training data's
    (`config.data.dir`), the first that loads here and whose UV layout is
    the model's.

  Args:
    trained: the model.
    info: the evaluated dataset's dataset.json.
    resolution: the model's R.

  Returns:
    ((R, R, 3) canonical map, its description), or (None, why there is
    none).
  """
  layout = trained.layout
  if layout.is_procedural:
    note = 'the procedural face model\'s mean face'
    if info.get('source') != 'synthetic':
      note += (' (real data: the angles are relative to its frontal frame, '
               'which the records\' poses may not share exactly)')
    return metrics.canonical_reference(resolution), note
  tried = []
  for where, entry in (('the dataset\'s', info),
                       ('the training data\'s', _training_data_info(trained))):
    path = ((entry or {}).get('bfm') or {}).get('path')
    if not path:
      continue
    if not os.path.isdir(path):
      tried.append(f'{path} ({where} BFM) is not here')
      continue
    try:
      model = bfm_lib.cached_bfm(path)
    except (bfm_lib.BFMError, OSError, ValueError) as e:
      tried.append(f'{path} ({where} BFM) does not load: {e}')
      continue
    if model.uv_layout() != layout:
      tried.append(f'{path} ({where} BFM) is not in the model\'s UV layout')
      continue
    return (metrics.canonical_reference(resolution, bfm_dir=path),
            f'the mean face of the BFM in {path} ({where} dataset.json)')
  found = '; '.join(tried) if tried else 'no dataset.json names a BFM'
  return None, (
      f'no canonical mean face in the model\'s {layout.name!r} UV layout '
      f'({found}); pass --canonical BFM_DIR')


def _pose_setup(canonical, trained: trained_lib.TrainedModel, info: dict,
                resolution: int, mask: np.ndarray
                ) -> tuple[np.ndarray | None, np.ndarray | None, str]:
  """(canonical map, texels used for the pose fit, description or the
  reason the pose error is skipped); `canonical` None: `find_canonical`."""
  if canonical is None:
    canonical, description = find_canonical(trained, info, resolution)
    if canonical is None:
      return None, None, description
  else:
    description = 'the given canonical map'
  canonical = np.asarray(canonical, np.float32)
  return canonical, metrics.pose_fit_texels(mask, canonical), description


def _predicted_poses(maps: np.ndarray, canonical: np.ndarray,
                     fit_mask: np.ndarray) -> np.ndarray:
  """(B, R, R, 3) predicted maps -> (B, 3) pitch, yaw, roll in degrees."""
  poses = []
  for position_map in maps:
    fit = metrics.estimate_pose(position_map[fit_mask], canonical[fit_mask])
    poses.append([fit['pitch'], fit['yaw'], fit['roll']])
  return np.array(poses, np.float64).reshape(-1, 3)


def _summary(values: np.ndarray) -> float | None:
  values = np.asarray(values, np.float64)
  return float(values.mean()) if values.size else None


def _batch_metrics(batch: dict, count: int, maps: np.ndarray,
                   landmarks: np.ndarray, mask: np.ndarray,
                   canonical: np.ndarray | None,
                   fit_mask: np.ndarray | None) -> dict[str, np.ndarray]:
  """Per-image metrics of the first `count` examples of a batch.

  Args:
    batch: the pipeline's recon batch at the model's resolution.
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
         'yaw_deg': true_pose[:, 1], 'true_pose_deg': true_pose,
         'pose_benchmark': metrics.pose_benchmark_mask(true_pose)}
  if 'position_map' in batch and mask is not None:
    out['dense_nme'] = metrics.dense_nme(maps, batch['position_map'][:count],
                                         mask, dims=3)
  if canonical is not None:
    pred_pose = _predicted_poses(maps, canonical, fit_mask)
    out['pred_pose_deg'] = pred_pose
    out['pose_error_deg'] = metrics.pose_error(pred_pose, true_pose)
    out['rotation_error_deg'] = metrics.rotation_error(pred_pose, true_pose)
  return out


def _model_and_dataset(trained: trained_lib.TrainedModel, data_dir: str,
                       split: str, info: dict, uv_layout: str | None
                       ) -> dict[str, Any]:
  """The 'model' and 'dataset' entries of a report."""
  return {
      'model': {'workdir': os.path.abspath(trained.workdir),
                'step': trained.step, 'task': trained.task,
                'resolution': trained.resolution,
                'uv_layout': trained.layout.name,
                'flip_average': trained_lib.flip_average(trained)},
      'dataset': {'path': os.path.abspath(data_dir), 'split': split,
                  'source': info.get('source'),
                  'resolution': info.get('resolution', trained.resolution),
                  'uv_layout': uv_layout},
  }


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
      # None: records without position maps have no layout.
      **_model_and_dataset(
          trained, data_dir, split, info,
          layout_lib.layout_of_dataset(info).name
          if info.get('position_maps', True) else None),
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
  kept = np.asarray(per_image['pose_benchmark'], bool)
  if 'pose_error_deg' in per_image:
    err = per_image['pose_error_deg'][kept]
    report['pose_error'] = {
        'pitch': _summary(err[:, 0]), 'yaw': _summary(err[:, 1]),
        'roll': _summary(err[:, 2]), 'mean': _summary(err),
        'rotation': _summary(per_image['rotation_error_deg'][kept]),
        'count': int(kept.sum()), 'excluded': int(n - kept.sum()),
        'max_abs_angle_deg': metrics.POSE_MAX_ABS_DEG,
        'canonical': pose_note}
  else:
    report['pose_error'] = {'pitch': None, 'yaw': None, 'roll': None,
                            'mean': None, 'rotation': None, 'count': 0,
                            'excluded': int(n - kept.sum()),
                            'max_abs_angle_deg': metrics.POSE_MAX_ABS_DEG,
                            'skipped': pose_note}
  return report


# ------------------------------------------------------------ 2D records ----

# Why 2D records have no NME 3D, dense NME or pose error (the report's
# 'not_measured').
NOT_MEASURED_2D = ('2D records: annotated 2D points only, no 3D landmarks, '
                   'position maps or head pose')


def record_scheme(data_dir: str, info: dict, split: str
                  ) -> schemes.Scheme | None:
  """The landmark scheme of a split's 2D `recon` records; None for 3D
  records.

  Read from the split's first record ('scheme'; 3D records have none); when
  it cannot be read here, from dataset.json's 'scheme' (the pipeline then
  reports what is wrong with the records). None too when the split does
  not exist (`split_batches` says so).

  Raises:
    ValueError: a scheme jaxface does not know (`schemes.get`).
  """
  if split not in info.get('kinds', {}).get('recon', {}):
    return None
  try:
    record = shards.first_record(data_dir, 'recon', split)
  except (shards.DatasetError, OSError):
    record = None
  if record is None:
    name = info.get('scheme')
  elif 'landmarks' in record:
    name = None
  else:
    name = record.get('scheme')
  return None if name is None else schemes.get(str(name))


def _to_pixels(points: np.ndarray, from_resolution: int,
               to_resolution: int) -> np.ndarray:
  """(..., 2) crop points at one resolution -> the same box's pixels at
  another (`resize_transform`; NaN stays NaN)."""
  if from_resolution == to_resolution:
    return points
  return points * resize_transform(from_resolution, to_resolution)[0, 0]


def _evaluate_points(trained: trained_lib.TrainedModel, module, variables,
                     data_dir: str, info: dict, split: str,
                     scheme: schemes.Scheme, batch_size: int,
                     limit: int | None, progress: bool
                     ) -> tuple[dict, dict[str, np.ndarray]]:
  """`evaluate_reconstruction` on 2D records (without 'seconds')."""
  resolution = trained.resolution
  layout = trained.layout
  readable = scheme.readable(layout)
  point_uv = scheme.uv(layout)
  columns: dict[str, list[np.ndarray]] = {}
  stats: dict[str, int] = {}
  batches = 0
  for count, batch in split_batches(data_dir, info, 'recon', split,
                                    batch_size, limit, progress, stats):
    if 'points2d' not in batch:
      raise ValueError(f'{data_dir} {split}: a batch of 3D records among '
                       f'the 2D records of scheme {scheme.name!r}')
    if batch['points2d'].shape[1] != scheme.num_points:
      raise ValueError(
          f'{data_dir} {split}: records with {batch["points2d"].shape[1]} '
          f'points, but scheme {scheme.name!r} has {scheme.num_points}')
    source = int(np.shape(batch['image'])[1])
    visible = np.asarray(batch['points_visible'][:count]) > 0
    true = np.where(visible[..., None],
                    np.asarray(batch['points2d'][:count], np.float64),
                    np.nan)
    batch = to_model_resolution(batch, count, resolution)
    _, points = prnet.predict(module, variables,
                              padding.pad_batch(batch['image'], batch_size),
                              point_uv)
    pred = np.array(np.asarray(points)[:count, :, :2], np.float64)
    pred[:, ~readable] = np.nan
    batches += 1
    out = {'index': batch['index'],
           'pred_points': _to_pixels(pred, resolution, source),
           'true_points': true}
    if 'yaw' in batch:
      out['yaw_deg'] = np.rad2deg(batch['yaw'].astype(np.float64))
    for key, value in out.items():
      columns.setdefault(key, []).append(np.asarray(value))
  # A yaw only if every record has one.
  if len(columns.get('yaw_deg', ())) != batches:
    columns.pop('yaw_deg', None)
  per_image = {k: np.concatenate(v) for k, v in columns.items()}
  summary, nmes = metrics.points_summary(
      per_image['pred_points'], per_image['true_points'],
      per_image.get('yaw_deg'), scheme.is_ear)
  per_image.update(nmes)
  report = _points_report(trained, data_dir, split, info, scheme, readable,
                          summary, len(per_image['index']), stats['skipped'],
                          'yaw_deg' in per_image)
  return report, per_image


def _points_report(trained: trained_lib.TrainedModel, data_dir: str,
                   split: str, info: dict, scheme: schemes.Scheme,
                   readable: np.ndarray, summary: dict, count: int,
                   skipped: int, has_yaw: bool) -> dict[str, Any]:
  """The report dict of `evaluate_reconstruction` on 2D records (without
  'seconds')."""
  report = _model_and_dataset(trained, data_dir, split, info, None)
  report['dataset']['scheme'] = scheme.name
  return {
      **report,
      'count': count, 'skipped_records': skipped,
      'points': {'scheme': scheme.name, 'count': scheme.num_points,
                 'read': readable.tolist(),
                 'ears': np.flatnonzero(scheme.is_ear).tolist(),
                 'normalisation': 'sqrt(w h) of the box of each image\'s '
                                  'visible annotated points',
                 'yaw_bins': has_yaw},
      **summary,
      'not_measured': {'nme_3d': NOT_MEASURED_2D,
                       'dense_nme': NOT_MEASURED_2D,
                       'pose_error': NOT_MEASURED_2D},
  }


def evaluate_reconstruction(workdir_or_trained, data_dir: str,
                            split: str = 'test', batch_size: int = 32,
                            limit: int | None = None, canonical=None,
                            progress: bool = True
                            ) -> tuple[dict, dict[str, np.ndarray]]:
  """Measures a reconstruction network on a dataset's `recon` records.

  Records are read in index order, once, without augmentation, and brought
  to the model's resolution (`to_model_resolution`); every batch is padded
  to `batch_size`, so the jitted network compiles once. 3D records (a 3DMM
  fit: landmarks, pose, maybe position maps) get AFLW2000-3D's measures;
  2D records (annotated points of a landmark scheme) AFLW's (see the
  module docstring and the 2D report below).

  Args:
    workdir_or_trained: the workdir of a `prnet` or `cycle` training run
      (its last checkpoint), or a `trained.TrainedModel`.
    data_dir: a jaxface dataset directory with `recon` records (of any
      resolution).
    split: the split to evaluate.
    batch_size: images per forward pass.
    limit: evaluate only the first `limit` records (None: all).
    canonical: (R, R, 3) canonical frontal mean face for the pose fit
      (`metrics.canonical_reference`), in the model's UV layout. None:
      `find_canonical` (the procedural mean face, or the mean face of a
      BFM that the dataset's or the training data's dataset.json names);
      without one the pose error is skipped.
    progress: show a progress bar.

  Returns:
    (report, per_image). `report` is a JSON-able dict:
      'model': {'workdir', 'step', 'task', 'resolution', 'uv_layout' (the
        layout's name)};
      'dataset': {'path', 'split', 'source', 'resolution', 'uv_layout'};
      'count': images evaluated; 'skipped_records': corrupted records
        skipped by the pipeline;
      'nme_2d', 'nme_3d': `metrics.binned_summary` of the landmark NME
        (unitless) by yaw bin (3D: depth up to an offset, `metrics.nme`);
      'dense_nme': {'mean', 'count', 'dims': 3, 'region': 'face'}, plus
        'skipped' (the reason) with mean None when the records have no
        position maps or their UV layout is not the model's (texels of
        different layouts are different points of the face);
      'pose_error': {'pitch', 'yaw', 'roll', 'mean' (of the three),
        'rotation' (the geodesic `metrics.rotation_error`), all mean
        absolute errors in degrees over the images the head-pose benchmark
        keeps (`metrics.pose_benchmark_mask`: no true angle beyond
        'max_abs_angle_deg' = 99); 'count' (images kept), 'excluded'
        (images left out), 'canonical'}, or with None values and 'skipped'
        (the reason);
      'seconds': wall time.
    `per_image` holds numpy arrays over the N images: 'index' (record
    indices), 'nme_2d', 'nme_3d', 'yaw_deg', 'true_pose_deg' (N, 3 as
    pitch, yaw, roll), 'pose_benchmark' (N,) bool (kept by the head-pose
    benchmark), and when measured 'dense_nme', 'pred_pose_deg' (N, 3),
    'pose_error_deg' (N, 3), 'rotation_error_deg' (N,), over all N images.

    On 2D records (`record_scheme` finds their scheme), the report has
    'model', 'count', 'skipped_records' and 'seconds' as above, and:
      'dataset': as above with 'uv_layout' None and 'scheme' (its name);
      'points': {'scheme', 'count' (P), 'read' ((P,) bools: the points the
        model's layout gives, `Scheme.readable`), 'ears' (the indices of
        the ear points), 'normalisation', 'yaw_bins' (whether the records
        have yaws)};
      'nme', 'nme_no_ears', 'per_point', 'unusable': as
        `metrics.points_summary` (by yaw bin with yaws, else only 'mean'
        and 'count'; 'nme_no_ears' leaves the ear points out);
      'not_measured': {'nme_3d', 'dense_nme', 'pose_error': why not}; no
        'nme_2d', 'nme_3d', 'dense_nme' or 'pose_error' keys.
    and `per_image`: 'index', 'nme', 'nme_no_ears' (N,) (NaN: unusable),
    'pred_points', 'true_points' (N, P, 2) in the records' crop pixels
    (NaN: not read / not visible), and 'yaw_deg' (N,) when the records
    have yaws.

  Raises:
    ValueError: the model is not a reconstruction network, a malformed
      uv_layout, non-square images, or bad arguments.
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
  scheme = record_scheme(data_dir, info, split)
  if scheme is not None:
    report, per_image = _evaluate_points(
        trained, module, jax.device_put(variables), data_dir, info, split,
        scheme, batch_size, limit, progress)
    report['seconds'] = round(time.perf_counter() - start_time, 3)
    return json_safe(report), per_image
  layout = trained.layout
  mask = layout.face_region(resolution)
  data_layout = layout_lib.layout_of_dataset(info)
  dense_mask, dense_note = mask, None
  if data_layout != layout:
    dense_mask, dense_note = None, (
        f'the records\' position maps are in the {data_layout.name!r} UV '
        f'layout, the model\'s in the {layout.name!r} one')
  canonical, fit_mask, pose_note = _pose_setup(canonical, trained, info,
                                               resolution, mask)
  landmark_uv = np.asarray(layout.landmark_uv)
  variables = jax.device_put(variables)
  columns: dict[str, list[np.ndarray]] = {}
  stats: dict[str, int] = {}
  has_maps = False
  for count, batch in split_batches(data_dir, info, 'recon', split,
                                    batch_size, limit, progress, stats):
    batch = to_model_resolution(batch, count, resolution)
    maps, landmarks = prnet.predict(
        module, variables, padding.pad_batch(batch['image'], batch_size),
        landmark_uv)
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
  """The report as Markdown: the images measured and the unreadable records
  skipped, the NME table by yaw bin, then dense NME and pose error lines.

  NMEs are shown in percent, pose errors in degrees. A report on 2D
  records (`is_points_report`): the visible-point NME table instead, and
  what was not measured.
  """
  bins = metrics.BIN_NAMES
  model, data = report['model'], report['dataset']
  resized = ''
  if data.get('resolution') not in (None, model['resolution']):
    resized = (f' Records at {data["resolution"]}x{data["resolution"]}, '
               f'resized to the model\'s {model["resolution"]}x'
               f'{model["resolution"]}.')
  if is_points_report(report):
    return _points_markdown(report, resized)
  lines = [
      f'## Reconstruction on {data["path"]} ({data["split"]})', '',
      f'Model: {model["workdir"]} (step {model["step"]}, {model["task"]}'
      f'{_flip_note(model)}); '
      f'{report["count"]} images.{skipped_note(report)}{resized}', '',
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
    excluded = pose.get('excluded') or 0
    left_out = (f', {excluded} with an angle beyond '
                f'{pose.get("max_abs_angle_deg", 99):g} degrees left out'
                if excluded else '')
    lines.append(
        f'Pose error (MAE, degrees): yaw {_degrees(pose["yaw"])}, pitch '
        f'{_degrees(pose["pitch"])}, roll {_degrees(pose["roll"])}, mean '
        f'{_degrees(pose["mean"])}; rotation (geodesic) '
        f'{_degrees(pose.get("rotation"))}; over {pose["count"]} images'
        f'{left_out} (canonical: {pose["canonical"]}).')
  return '\n'.join(lines) + '\n'


def skipped_note(report: dict) -> str:
  """' N unreadable record(s) skipped.' (the report's 'skipped_records'), for
  its Markdown; '' for a report without the count."""
  if report.get('skipped_records') is None:
    return ''
  return f' {report["skipped_records"]} unreadable record(s) skipped.'


def is_points_report(report: dict) -> bool:
  """Whether a report is of 2D records (`evaluate_reconstruction`)."""
  return report.get('dataset', {}).get('scheme') is not None


def _flip_note(model: dict) -> str:
  return ', flip-averaged' if model.get('flip_average') else ''


def _points_markdown(report: dict, resized: str) -> str:
  """`markdown_table` of a report on 2D records."""
  bins = metrics.BIN_NAMES
  model, data, points = report['model'], report['dataset'], report['points']
  by_yaw = bool(points.get('yaw_bins'))
  read = int(sum(points['read']))
  ears = points.get('ears') or []
  ears_read = [p for p in ears if points['read'][p]]
  lines = [
      f'## Reconstruction on {data["path"]} ({data["split"]})', '',
      f'Model: {model["workdir"]} (step {model["step"]}, {model["task"]}'
      f'{_flip_note(model)}); '
      f'{report["count"]} images, 2D records of the {points["scheme"]} '
      f'scheme.{skipped_note(report)}{resized}', '']
  if by_yaw:
    lines += ['| NME (%) | ' + ' | '.join(f'yaw {b}' for b in bins)
              + ' | mean of bins | all |',
              '|---|' + '---:|' * (len(bins) + 2)]
  else:
    lines += ['| NME (%) | all |', '|---|---:|']
  rows = [('nme', f'NME ({read} of {points["count"]} points)')]
  if ears:
    rows.append(('nme_no_ears', f'NME without ears '
                                f'({read - len(ears_read)} points)'))
  for key, name in rows:
    summary = report[key]
    cells = [_percent(summary['mean'])]
    if by_yaw:
      cells = [_percent(summary[b]['mean']) for b in bins] + [
          _percent(summary['mean_of_bins'])] + cells
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  summary = report['nme']
  counts = ([str(summary[b]['count']) for b in bins] + [''] if by_yaw
            else [])
  lines.append('| images | ' + ' | '.join(counts + [str(summary['count'])])
               + ' |')
  lines.append('')
  notes = [f'NME: the mean error over the visible points that the model '
           f'reads, divided by {points["normalisation"]}.']
  if not by_yaw:
    notes.append('The records have no yaw: no yaw bins.')
  if ears and len(ears_read) < len(ears):
    notes.append('The model\'s UV layout has no ears: the ear points are '
                 'not read.')
  if report.get('unusable'):
    notes.append(f'{report["unusable"]} images without a usable point left '
                 'out.')
  lines.append(' '.join(notes))
  not_measured = report.get('not_measured') or {}
  if not_measured:
    names = {'nme_3d': 'NME 3D', 'dense_nme': 'dense NME',
             'pose_error': 'pose error'}
    reasons: dict[str, list[str]] = {}
    for key, why in not_measured.items():
      reasons.setdefault(why, []).append(names.get(key, key))
    for why, keys in reasons.items():
      lines.append(f'Not measured: {", ".join(keys)} ({why}).')
  return '\n'.join(lines) + '\n'


def _ced_errors(per_image: dict[str, np.ndarray]) -> tuple[np.ndarray, str]:
  """The per-image errors of the CED plot and their name: NME 2D (3D
  records) or the visible-point NME (2D records; NaN where unusable)."""
  if 'nme_2d' in per_image:
    return np.asarray(per_image['nme_2d']), 'NME 2D'
  return np.asarray(per_image['nme'], np.float64), 'NME (visible points)'


def _ced_curves(per_image: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """NME 2D of all images and of each yaw bin (empty bins left out); of 2D
  records, their visible-point NME (yaw bins only where they have yaws)."""
  errors, _ = _ced_errors(per_image)
  yaw = per_image.get('yaw_deg')
  if 'nme_2d' not in per_image:
    ok = np.isfinite(errors)
    errors = errors[ok]
    yaw = None if yaw is None else np.asarray(yaw)[ok]
  curves = {f'all ({errors.size})': errors}
  if yaw is None:
    return curves
  bins = metrics.yaw_bin_index(np.asarray(yaw))
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


def report_paths(out, **extra: tuple[str, str]) -> dict[str, str]:
  """Where a report goes: with `out` a folder, {'json': out/report.json,
  'markdown': out/report.md, key: out/NAME}; with `out` a path ending in
  .json, that path, its stem + '.md' and its stem + SUFFIX, for each
  `key=(NAME, SUFFIX)` of `extra`."""
  out = os.fspath(out)
  names = {'json': (REPORT_NAME, '.json'), 'markdown': ('report.md', '.md'),
           **extra}
  if out.endswith('.json'):
    stem = out[:-len('.json')]
    return {key: stem + suffix for key, (_, suffix) in names.items()}
  return {key: os.path.join(out, name) for key, (name, _) in names.items()}


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
  paths = report_paths(out, ced=('ced.png', '_ced.png'),
                       per_image=('per_image.npz', '_per_image.npz'))
  files.write_json(paths['json'], json_safe(report), allow_nan=False)
  files.write_atomic(paths['markdown'], markdown_table(report))
  data = report.get('dataset', {})
  errors, name = _ced_errors(per_image)
  plots.ced_plot(_ced_curves(per_image), paths['ced'],
                 max_error=ced_range(errors),
                 title=f'{name}, {data.get("split", "")} '
                       f'({report.get("count", 0)} images)')
  buffer = io.BytesIO()
  np.savez(buffer, **{k: np.asarray(v) for k, v in per_image.items()})
  files.write_atomic(paths['per_image'], buffer.getvalue())
  return paths
