"""Evaluation metrics of 3D face reconstruction and generation (numpy).

Host-side functions over numpy arrays, for evaluation runs; `nme` also
takes jax arrays, so that the training loop's eval step measures with the
same function:

- landmarks: `nme` (AFLW2000-3D / 3DDFA protocol, 2D or 3D),
  `visible_point_errors` and `nme_visible` (AFLW's 21 points, some not
  visible) and their summary `points_summary`, yaw bins
  (`YAW_BINS`, `yaw_bin_index`, `binned_summary`, `summary_by_yaw`), `ced`
  and `ced_auc`;
- dense reconstruction: `dense_nme` over the face region of position maps;
- head pose: `estimate_pose` (a similarity fitted between a position map
  and a canonical frontal map, converted to 3DDFA's pitch / yaw / roll),
  `pose_error`, `rotation_error`, the head-pose benchmark's image
  selection (`pose_benchmark_mask`), `canonical_reference`;
- voxels: `occupancy_surface` (marching cubes), `chamfer_distance`,
  `voxel_chamfer`.

Frames: position maps and landmarks are image-like, x right, y down, z
towards the viewer, in pixels (`jaxface.face.uv`). Errors called "NME" are
unitless fractions (multiply by 100 for the usual percentages).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from scipy import spatial
from skimage import measure

from jaxface.face import bfm as bfm_lib
from jaxface.face import model as model_lib
from jaxface.face import render

# Yaw bins of AFLW2000-3D's tables, |yaw| in degrees.
YAW_BINS = ((0, 30), (30, 60), (60, 90))
BIN_NAMES = tuple(f'{lo}-{hi}' for lo, hi in YAW_BINS)

# The head-pose benchmark's largest |pitch|, |yaw| or |roll| (degrees), see
# `pose_benchmark_mask`.
POSE_MAX_ABS_DEG = 99.0

# Squared box sizes below this (squared pixels) count as 0.
_TINY = 1e-12
# Flips y: the y-down image frame <-> the y-up model / camera frame.
_FLIP_Y = np.diag([1.0, -1.0, 1.0])


# ------------------------------------------------------------ landmarks ----


def _namespace(*arrays):
  """jax.numpy for jax arrays (tracers inside jit included), else numpy."""
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def _box_norm(points_xy):
  """(..., P, 2) -> (...) sqrt(w * h) of the points' bounding box (numpy
  or jax, as the input)."""
  xp = _namespace(points_xy)
  size = points_xy.max(axis=-2) - points_xy.min(axis=-2)
  return xp.sqrt(xp.maximum(size[..., 0] * size[..., 1], _TINY))


def nme(pred, true, dims: int = 2):
  """Normalised mean error of landmarks, per image (3DDFA's protocol).

    nme = mean_p ||pred_p[:dims] - true_p[:dims]|| / sqrt(w * h),

  with w, h the width and height of the bounding box of the TRUE landmarks'
  (x, y), whatever `dims`: dims = 2 is AFLW2000-3D's 2D NME (3DDFA's and
  PRNet's tables), dims = 3 also counts the depth error.

  The one NME of jaxface: `jaxface eval` calls it on numpy arrays (float64,
  on the host), the training loop's eval step on jax arrays (at least
  float32, inside jit); the formula is the same.

  Depth (dims = 3) is compared up to an offset: the z of each set is first
  shifted so that its minimum over the P points is 0. An orthographic
  projection leaves the depth's zero arbitrary: AFLW2000-3D's pt3d_68 z is
  the fitted 3DMM's z after the similarity transform, with whatever offset
  the fit's tz gave it, a position map's z has its minimum over the whole
  face at 0, and the landmarks-only converter puts the 68 landmarks'
  minimum at 0; those zeros differ by tens of pixels. The shift is the one
  of 3DDFA's authors ("translate the z-axis to make sure the lowest z-value
  is zero", cleardusk/3DDFA issue #75) and of 2DASL's released NME3D code,
  which subtracts min(z) of the 68 points from both the truth and each
  prediction (XgTu/2DASL, evaluation/nme_for_alignment_68pts_3d.m).

  Args:
    pred: (..., P, D) predicted landmarks, pixels, D >= dims (P = 68);
      numpy or jax.
    true: (..., P, D') true landmarks, pixels, D' >= dims.
    dims: 2 (x, y) or 3 (x, y, z, z shifted as above).

  Returns:
    (...) unitless NME per image (e.g. (B,)): float64 numpy for numpy
    inputs, a jax array (float32 or wider) for jax inputs.
  """
  if dims not in (2, 3):
    raise ValueError(f'dims must be 2 or 3, got {dims}')
  xp = _namespace(pred, true)
  if xp is np:
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
  else:
    pred, true = jnp.asarray(pred), jnp.asarray(true)
    dtype = jnp.promote_types(jnp.result_type(pred, true), jnp.float32)
    pred, true = pred.astype(dtype), true.astype(dtype)
  if pred.shape[-1] < dims or true.shape[-1] < dims:
    raise ValueError(f'need {dims} coordinates, got landmarks of shapes '
                     f'{pred.shape} and {true.shape}')
  if pred.shape[:-1] != true.shape[:-1]:
    raise ValueError(f'pred {pred.shape} and true {true.shape} landmarks do '
                     'not match')
  pred, true = pred[..., :dims], true[..., :dims]
  if dims == 3:
    z_only = xp.asarray([0.0, 0.0, 1.0], pred.dtype)
    pred = pred - pred[..., 2:].min(axis=-2, keepdims=True) * z_only
    true = true - true[..., 2:].min(axis=-2, keepdims=True) * z_only
  dist = xp.sqrt(xp.sum((pred - true)**2, axis=-1))
  return dist.mean(axis=-1) / _box_norm(true[..., :2])


def visible_box_norm(true) -> np.ndarray:
  """sqrt(w * h) of each image's visible true points' box: the divisor of
  `visible_point_errors`.

  Args:
    true: (B, P, 2+) true points, pixels; NaN where not visible.

  Returns:
    (B,) float64; NaN for an image with fewer than 2 visible points.
  """
  true = np.asarray(true, np.float64)[..., :2]
  seen = np.all(np.isfinite(true), axis=-1)
  big = np.finfo(np.float64).max
  low = np.where(seen[..., None], true, big).min(axis=-2)
  high = np.where(seen[..., None], true, -big).max(axis=-2)
  any_seen = seen.any(axis=-1)[:, None]
  low, high = np.where(any_seen, low, 0.0), np.where(any_seen, high, 0.0)
  norm = _box_norm(np.stack([low, high], axis=-2))
  return np.where(seen.sum(axis=-1) >= 2, norm, np.nan)


def visible_point_errors(pred, true) -> np.ndarray:
  """Normalised error of each visible point (3DDFA's AFLW protocol).

    e_p = ||pred_p - true_p|| / sqrt(w * h),

  with w, h the box of the image's visible TRUE points. A point counts when
  its truth is finite (datasets mark invisible points NaN) and so is its
  prediction (NaN: a point the model cannot read, e.g. an ear lobe of a
  face model without ears); the box is that of all visible true points, so
  that it does not depend on what the model can read.

  Args:
    pred: (B, P, 2+) predicted points, pixels; NaN where not readable.
    true: (B, P, 2+) true points, pixels; NaN where not visible.

  Returns:
    (B, P) float64 unitless errors; NaN for the points not counted and for
    every point of an image with fewer than 2 visible points.
  """
  pred = np.asarray(pred, np.float64)[..., :2]
  true = np.asarray(true, np.float64)[..., :2]
  if pred.shape != true.shape or pred.ndim != 3:
    raise ValueError(f'pred {pred.shape} and true {true.shape} points must '
                     'be matching (B, P, 2+) arrays')
  seen = np.all(np.isfinite(true), axis=-1)
  both = seen & np.all(np.isfinite(pred), axis=-1)
  norm = visible_box_norm(true)
  dist = np.linalg.norm(np.where(both[..., None], pred - true, 0.0), axis=-1)
  ok = both & (seen.sum(axis=-1) >= 2)[:, None]
  return np.where(ok, dist / norm[:, None], np.nan)


def nme_visible(pred, true) -> np.ndarray:
  """2D NME over the visible points, as 3DDFA's AFLW (21 points) protocol:
  the mean of `visible_point_errors` over each image's counted points.

  3DDFA's `benchmark_aflw.py` normalises by the box of its fitted 68
  landmarks, which AFLW's annotations do not include; here the box is the
  visible annotated points'.

  Args:
    pred: (B, P, 2+) predicted points, pixels; NaN where not readable.
    true: (B, P, 2+) true points, pixels; NaN where not visible.

  Returns:
    (B,) float64 unitless NME per image; NaN where fewer than 2 points are
    visible or none of them has a prediction.
  """
  errors = visible_point_errors(pred, true)
  counted = np.isfinite(errors)
  total = np.where(counted, errors, 0.0).sum(axis=-1)
  count = counted.sum(axis=-1)
  return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def yaw_bin_index(yaw_deg):
  """The `YAW_BINS` bin of yaws in degrees: 0, 1 or 2.

  0: |yaw| <= 30, 1: 30 < |yaw| <= 60, 2: |yaw| > 60 (beyond 90 included).

  Args:
    yaw_deg: a yaw or an array of yaws, degrees.

  Returns:
    An int for a scalar, else an int64 array of the input's shape.
  """
  yaw = np.abs(np.asarray(yaw_deg, np.float64))
  index = np.where(yaw <= YAW_BINS[0][1], 0,
                   np.where(yaw <= YAW_BINS[1][1], 1, 2)).astype(np.int64)
  return int(index) if index.ndim == 0 else index


def _mean_or_none(values: np.ndarray) -> float | None:
  return float(np.mean(values)) if len(values) else None


def binned_summary(errors, yaw_deg) -> dict:
  """Mean errors per yaw bin, as AFLW2000-3D's tables report them.

  'mean_of_bins' is the mean of the non-empty bins' means: each yaw range
  weighs the same whatever its number of images (AFLW2000-3D has many more
  near-frontal faces than profiles), which is the "mean" column of 3DDFA's
  and PRNet's tables. 'mean' is the plain mean over all images.

  Args:
    errors: (N,) per-image errors (e.g. `nme`).
    yaw_deg: (N,) the images' yaws, degrees.

  Returns:
    {bin name ('0-30', '30-60', '60-90'): {'mean': float or None (empty
    bin), 'count': int}, 'mean_of_bins': float or None, 'mean': float or
    None, 'count': int}.
  """
  errors = np.asarray(errors, np.float64).reshape(-1)
  yaw_deg = np.asarray(yaw_deg, np.float64).reshape(-1)
  if errors.shape != yaw_deg.shape:
    raise ValueError(f'{errors.size} errors but {yaw_deg.size} yaws')
  bins = yaw_bin_index(yaw_deg) if errors.size else np.zeros(0, np.int64)
  out = {}
  means = []
  for k, name in enumerate(BIN_NAMES):
    mean = _mean_or_none(errors[bins == k])
    out[name] = {'mean': mean, 'count': int(np.sum(bins == k))}
    if mean is not None:
      means.append(mean)
  out['mean_of_bins'] = _mean_or_none(np.asarray(means))
  out['mean'] = _mean_or_none(errors)
  out['count'] = int(errors.size)
  return out


def summary_by_yaw(errors, yaw_deg=None) -> dict:
  """`binned_summary` of the finite errors (NaN: an image not measured);
  without yaws (None) only the plain mean: {'mean', 'count'}."""
  errors = np.asarray(errors, np.float64).reshape(-1)
  ok = np.isfinite(errors)
  if yaw_deg is None:
    return {'mean': _mean_or_none(errors[ok]), 'count': int(ok.sum())}
  yaw_deg = np.asarray(yaw_deg, np.float64).reshape(-1)
  if yaw_deg.shape != errors.shape:
    raise ValueError(f'{errors.size} errors but {yaw_deg.size} yaws')
  return binned_summary(errors[ok], yaw_deg[ok])


def points_summary(pred, true, yaw_deg=None, ears=None
                   ) -> tuple[dict, dict[str, np.ndarray]]:
  """NMEs of predicted points of a landmark scheme against annotated ones
  (3DDFA's AFLW protocol, `nme_visible`), summarised as AFLW's tables are.

  Args:
    pred: (N, P, 2+) predicted points, pixels; NaN where not read.
    true: (N, P, 2+) annotated points, pixels; NaN where not visible.
    yaw_deg: (N,) the images' yaws in degrees, or None (no yaw bins).
    ears: optional (P,) bool, the points that 'nme_no_ears' leaves out
      (`Scheme.is_ear`: the points that not every UV layout reads); the
      box that normalises stays that of all visible points. None: none.

  Returns:
    (summary, per_image). summary: {'nme': `summary_by_yaw` of the images
    with an NME; 'nme_no_ears': the same without the `ears` points;
    'per_point': (P,) list, the mean normalised error of each point over
    the images where it counts (None: never); 'unusable': images without
    an NME (fewer than 2 visible points, or none read)}. per_image:
    {'nme', 'nme_no_ears': (N,) float64, NaN where unusable}.
  """
  pred = np.asarray(pred, np.float64)
  errors = visible_point_errors(pred, true)
  nme = nme_visible(pred, true)
  no_ears = np.array(pred, copy=True)
  if ears is not None:
    no_ears[:, np.asarray(ears, bool)] = np.nan
  nme_no_ears = nme_visible(no_ears, true)
  counted = np.isfinite(errors)
  per_point = [float(errors[counted[:, p], p].mean())
               if counted[:, p].any() else None
               for p in range(errors.shape[1])]
  summary = {'nme': summary_by_yaw(nme, yaw_deg),
             'nme_no_ears': summary_by_yaw(nme_no_ears, yaw_deg),
             'per_point': per_point,
             'unusable': int((~np.isfinite(nme)).sum())}
  return summary, {'nme': nme, 'nme_no_ears': nme_no_ears}


def ced(errors, max_error: float = 0.1, num: int = 101
        ) -> tuple[np.ndarray, np.ndarray]:
  """Cumulative error distribution: the fraction of images within each error.

  Args:
    errors: (N,) per-image errors (e.g. NME, unitless).
    max_error: largest threshold.
    num: number of thresholds, evenly spaced over [0, max_error].

  Returns:
    (thresholds (num,), fraction (num,) of the images with error <=
    threshold, in [0, 1]).
  """
  errors = np.asarray(errors, np.float64).reshape(-1)
  thresholds = np.linspace(0.0, max_error, num)
  if errors.size == 0:
    return thresholds, np.zeros(num)
  return thresholds, np.mean(errors[:, None] <= thresholds[None], axis=0)


def ced_auc(errors, max_error: float = 0.1, num: int = 1001) -> float:
  """Area under the CED curve up to `max_error`, divided by `max_error`.

  1 when every error is 0, 0 when none is within `max_error`; trapezoids
  over `num` thresholds.
  """
  thresholds, fraction = ced(errors, max_error, num)
  area = np.sum((fraction[1:] + fraction[:-1]) / 2 * np.diff(thresholds))
  return float(area / max_error)


# ----------------------------------------------------------------- dense ----


def dense_nme(pred_map, true_map, mask, dims: int = 3) -> np.ndarray:
  """Normalised mean error of position maps over a texel mask, per image.

    nme = mean_{texels in mask} ||pred[:dims] - true[:dims]|| / sqrt(w * h),

  with w, h the width and height of the bounding box of the true map's
  masked texels' (x, y). This is PRNet's dense alignment measure: the error
  of the face-region vertices normalised by the face's bounding box, with
  the texels of the face region (`model.face_region_mask`) as the vertices.

  Args:
    pred_map: (B, R, R, D) predicted position maps, pixels, D >= dims.
    true_map: (B, R, R, D') true position maps, pixels, D' >= dims.
    mask: (R, R) or (B, R, R) bool, the texels measured (not empty).
    dims: 2 (x, y) or 3 (x, y, z).

  Returns:
    (B,) float64 unitless NME per image.
  """
  if dims not in (2, 3):
    raise ValueError(f'dims must be 2 or 3, got {dims}')
  pred = np.asarray(pred_map, np.float64)
  true = np.asarray(true_map, np.float64)
  if pred.shape[:-1] != true.shape[:-1] or pred.ndim != 4:
    raise ValueError(f'pred {pred.shape} and true {true.shape} must be '
                     'matching (B, R, R, D) maps')
  mask = np.broadcast_to(np.asarray(mask, bool), pred.shape[:3])
  out = np.empty(pred.shape[0])
  for b in range(pred.shape[0]):
    if not mask[b].any():
      raise ValueError(f'the mask of image {b} is empty')
    p, t = pred[b][mask[b]], true[b][mask[b]]
    dist = np.linalg.norm(p[:, :dims] - t[:, :dims], axis=-1)
    out[b] = dist.mean() / _box_norm(t[:, :2])
  return out


def mean_position_error(pred_map, true_map, mask):
  """Mean distance between two batches of position maps over a texel mask,
  in the maps' units (numpy or jax, as the input).

  Args:
    pred_map, true_map: (B, R, R, 3) position maps.
    mask: (R, R) bool, the texels measured (the face region; not empty).

  Returns:
    (B,) mean over the masked texels of the Euclidean distance.
  """
  xp = _namespace(pred_map, true_map)
  dist = xp.linalg.norm(pred_map - true_map, axis=-1)
  mask = xp.asarray(mask, dist.dtype)
  return xp.sum(dist * mask, axis=(1, 2)) / xp.sum(mask)


def voxel_iou(pred_occ, true_occ):
  """Intersection over union of (B, V, V, V) bool occupancy grids: (B,)
  (numpy or jax, as the input; 0 when both are empty)."""
  xp = _namespace(pred_occ, true_occ)
  inter = xp.sum(pred_occ & true_occ, axis=(1, 2, 3))
  union = xp.maximum(xp.sum(pred_occ | true_occ, axis=(1, 2, 3)), 1)
  return inter / union


# ------------------------------------------------------------------ pose ----


def _similarity(points: np.ndarray, canonical: np.ndarray,
                weights: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
  """Weighted Umeyama: (s, R, t) minimising sum w ||s R c + t - p||^2."""
  w = weights / weights.sum()
  mu_p = w @ points
  mu_c = w @ canonical
  p, c = points - mu_p, canonical - mu_c
  cov = (p * w[:, None]).T @ c  # sum w (p - mu_p)(c - mu_c)^T
  u, d, vt = np.linalg.svd(cov)
  # A proper rotation (det +1), never a reflection.
  sign = np.ones(3)
  sign[2] = np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0
  rotation = (u * sign) @ vt
  var_c = np.sum(w * np.sum(c * c, axis=1))
  scale = float(np.sum(d * sign) / var_c) if var_c > 0 else 0.0
  return scale, rotation, mu_p - scale * rotation @ mu_c


def _angles_3ddfa(rotation: np.ndarray) -> np.ndarray:
  """3DDFA's R = Rx(pitch) Ry(yaw) Rz(roll) -> (pitch, yaw, roll), radians.

  From `render.angle2matrix_3ddfa`: R[0, 2] = -sin(yaw), (R[0, 0], R[0, 1])
  = cos(yaw) (cos(roll), sin(roll)), (R[1, 2], R[2, 2]) = cos(yaw)
  (sin(pitch), cos(pitch)); yaw is taken in [-90, 90] degrees. At
  |yaw| = 90 only pitch - roll (or pitch + roll) is defined: roll is 0.
  """
  r = rotation
  yaw = np.arcsin(np.clip(-r[0, 2], -1.0, 1.0))
  if np.hypot(r[0, 0], r[0, 1]) > 1e-6:
    roll = np.arctan2(r[0, 1], r[0, 0])
    pitch = np.arctan2(r[1, 2], r[2, 2])
  else:
    roll = 0.0
    pitch = np.arctan2(-r[2, 1], r[1, 1])
  return np.array([pitch, yaw, roll])


def estimate_pose(points, canonical, weights=None) -> dict:
  """Head pose of a face from corresponding points, by a similarity fit.

  Fits points ~= scale * rotation @ canonical + translation (weighted least
  squares, Umeyama's method, rotation proper), where both frames are
  image-like (x right, y down, z towards the viewer): `canonical` is a
  frontal face (a face model's `canonical_position_map`, or
  `canonical_reference`) and `points` the same texels of a posed face, e.g.
  a predicted position map in crop pixels.

  Angles follow 3DDFA (a record's `pose`): a record renders model-space
  vertices v (y up) as F (s R v + t) plus a crop similarity, with F =
  diag(1, -1, 1) the image's y flip, and the canonical map is k F v plus a
  shift. So the image-frame rotation is F R F, and R = F rotation F is
  decomposed as R = Rx(pitch) Ry(yaw) Rz(roll) (`render.angle2matrix_3ddfa`),
  yaw in [-90, 90] degrees. The angles are relative to the canonical frame:
  a canonical face that is itself turned biases them.

  Args:
    points: (N, 3) posed points, pixels.
    canonical: (N, 3) the same points on the frontal face (N >= 3, not all
      on a line).
    weights: optional (N,) non-negative weights (default all 1).

  Returns:
    {'pitch', 'yaw', 'roll': floats, degrees; 'scale': float (pixels of
    `points` per pixel of `canonical`); 'rotation': (3, 3) image-frame
    rotation; 'translation': (3,) pixels}.
  """
  points = np.asarray(points, np.float64)
  canonical = np.asarray(canonical, np.float64)
  if points.shape != canonical.shape or points.ndim != 2 or (
      points.shape[1] != 3):
    raise ValueError(f'points {points.shape} and canonical '
                     f'{canonical.shape} must both be (N, 3)')
  if len(points) < 3:
    raise ValueError(f'need at least 3 points, got {len(points)}')
  weights = (np.ones(len(points)) if weights is None
             else np.asarray(weights, np.float64).reshape(-1))
  if weights.shape != (len(points),) or np.any(weights < 0) or (
      weights.sum() <= 0):
    raise ValueError('weights must be (N,), non-negative, not all 0')
  scale, rotation, translation = _similarity(points, canonical, weights)
  pitch, yaw, roll = np.rad2deg(_angles_3ddfa(_FLIP_Y @ rotation @ _FLIP_Y))
  return {'pitch': float(pitch), 'yaw': float(yaw), 'roll': float(roll),
          'scale': scale, 'rotation': rotation, 'translation': translation}


def pose_fit_texels(face_mask, canonical) -> np.ndarray:
  """(R, R) bool: the texels a pose fit (`estimate_pose`) uses, the face
  region where the (R, R, 3) canonical map lies on its mesh (texels off
  it, all zero, e.g. outside the BFM, are left out). ValueError when
  fewer than 3 remain."""
  canonical = np.asarray(canonical)
  face_mask = np.asarray(face_mask, bool)
  if canonical.shape != face_mask.shape + (3,):
    raise ValueError(f'canonical must be a {face_mask.shape + (3,)} map, '
                     f'got {canonical.shape}')
  fit = face_mask & np.any(canonical != 0, axis=-1)
  if fit.sum() < 3:
    raise ValueError('the canonical map covers fewer than 3 texels of the '
                     'face region')
  return fit


def pose_error(pred_deg, true_deg) -> np.ndarray:
  """Absolute angle differences, wrapped into [0, 180] degrees.

  Args:
    pred_deg: (B, 3) predicted (pitch, yaw, roll), degrees.
    true_deg: (B, 3) true angles, degrees.

  Returns:
    (B, 3) float64 |pred - true| modulo 360, folded into [0, 180].
  """
  diff = np.asarray(pred_deg, np.float64) - np.asarray(true_deg, np.float64)
  return np.abs((diff + 180.0) % 360.0 - 180.0)


def pose_benchmark_mask(true_deg,
                        max_abs_deg: float = POSE_MAX_ABS_DEG) -> np.ndarray:
  """The images that the head-pose benchmark on AFLW2000-3D measures.

  The standard protocol (FSA-Net's, Yang et al. 2019, followed by Hopenet's
  later tables, img2pose and 6DRepNet) leaves out the images whose true
  pitch, yaw or roll exceeds `max_abs_deg` = 99 degrees in magnitude: 31 of
  AFLW2000-3D's 2,000 images, leaving 1,969.

  Args:
    true_deg: (B, 3) true (pitch, yaw, roll), degrees.
    max_abs_deg: the largest |angle| kept.

  Returns:
    (B,) bool, True for the images kept.
  """
  true = np.asarray(true_deg, np.float64).reshape(-1, 3)
  return np.all(np.abs(true) <= max_abs_deg, axis=-1)


def rotation_error(pred_deg, true_deg) -> np.ndarray:
  """Angle of the rotation between two 3DDFA poses, degrees.

  The geodesic distance arccos((trace(R_pred^T R_true) - 1) / 2) between
  R = `render.angle2matrix_3ddfa(pitch, yaw, roll)` of each pose. Unlike
  the per-angle `pose_error`, it does not blow up near |yaw| = 90 degrees,
  where pitch and roll describe nearly the same rotation (at yaw = 90,
  (pitch + d, roll + d) is the same pose for every d).

  Args:
    pred_deg: (B, 3) predicted (pitch, yaw, roll), degrees.
    true_deg: (B, 3) true angles, degrees.

  Returns:
    (B,) float64 angles in [0, 180] degrees.
  """
  pred = np.deg2rad(np.asarray(pred_deg, np.float64).reshape(-1, 3))
  true = np.deg2rad(np.asarray(true_deg, np.float64).reshape(-1, 3))
  out = np.empty(len(pred))
  for b, (p, t) in enumerate(zip(pred, true)):
    relative = render.angle2matrix_3ddfa(*p).T @ render.angle2matrix_3ddfa(*t)
    out[b] = np.arccos(np.clip((np.trace(relative) - 1) / 2, -1.0, 1.0))
  return np.rad2deg(out)


def load_canonical(path: str | None, resolution: int) -> np.ndarray | None:
  """A canonical mean face for the pose fit from a command-line path: a BFM
  folder (`canonical_reference(resolution, path)`) or an (R, R, 3) `.npy`
  map; None for None.

  Raises:
    FileNotFoundError, ValueError: a missing, unreadable or wrong-shaped map,
      or a file that is not a .npy array (an .npz archive, text, a pickle).
  """
  if path is None:
    return None
  if os.path.isdir(path):
    return canonical_reference(resolution, bfm_dir=path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'canonical map {path} does not exist')
  want = (f'a ({resolution}, {resolution}, 3) array saved with numpy.save, '
          'or a BFM folder')
  with open(path, 'rb') as f:
    magic = f.read(len(np.lib.format.MAGIC_PREFIX))
  # np.load would open an .npz archive, or try anything else as a pickle.
  if magic != np.lib.format.MAGIC_PREFIX:
    raise ValueError(f'canonical map {path} is not a .npy array; want {want}')
  try:
    canonical = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(f'canonical map {path} is not a readable .npy array '
                     f'({e}); want {want}') from None
  if canonical.shape != (resolution, resolution, 3):
    raise ValueError(f'canonical map {path} has shape {canonical.shape}; '
                     f'the model needs ({resolution}, {resolution}, 3)')
  if not np.issubdtype(canonical.dtype, np.number) or not np.isfinite(
      canonical).all():
    raise ValueError(f'canonical map {path} must hold finite numbers')
  return canonical


def canonical_reference(resolution: int, bfm_dir: str | None = None
                        ) -> np.ndarray:
  """The mean face in the canonical frontal frame, (R, R, 3) float32.

  Without `bfm_dir`: the procedural face model's mean (all coefficients 0)
  through `model.FaceModel.canonical_position_map`, the frame of the
  synthetic data. With `bfm_dir` (face3d's BFM folder): the BFM mean face
  through `bfm.BFM.canonical_position_map` (its texels off the mesh are 0),
  for maps in the BFM's UV layout.
  """
  if bfm_dir is None:
    model = model_lib.build_face_model()
    return model.canonical_position_map(model.vertices(), resolution)
  model = bfm_lib.cached_bfm(bfm_dir)
  mean = model.vertices(np.zeros(model.num_shape),
                        np.zeros(model.num_expression))
  return model.canonical_position_map(mean, resolution)


# ---------------------------------------------------------------- voxels ----


def occupancy_surface(occupancy, level: float = 0.5, voxel_size: float = 1.0
                      ) -> tuple[np.ndarray, np.ndarray]:
  """The surface of an occupancy grid, by marching cubes.

  The grid is padded with one voxel of zeros on every side first, so that
  shapes touching the border come out as closed surfaces. Coordinates follow
  `jaxface.losses.voxelize_position_map`: voxel (k, i, j) spans [k, k + 1)
  x voxel_size in z (and likewise i in y, j in x), so its centre is at
  (index + 0.5) * voxel_size; a binary box of voxels gives vertices on the
  box's faces.

  Args:
    occupancy: (V, V, V) occupancy (or probabilities), axes (z, y, x).
    level: iso-level of the surface.
    voxel_size: side of a voxel (e.g. pixels of the canonical frame).

  Returns:
    (vertices (N, 3) float64 as (x, y, z), faces (F, 3) int triangles, wound
    counter-clockwise seen from outside, i.e. normals pointing out of the
    occupied region).

  Raises:
    ValueError: if the grid is not 3D or has no voxel above `level`.
  """
  occupancy = np.asarray(occupancy, np.float64)
  if occupancy.ndim != 3:
    raise ValueError(f'occupancy must be a (V, V, V) grid, got shape '
                     f'{occupancy.shape}')
  if occupancy.size == 0 or not np.any(occupancy > level):
    raise ValueError(f'the occupancy grid has no voxel above level {level}: '
                     'there is no surface')
  padded = np.pad(occupancy, 1)
  vertices, faces, _, _ = measure.marching_cubes(padded, level)
  # Padded index -> voxel index -> position of the voxel centre.
  vertices = (vertices - 1.0 + 0.5) * voxel_size
  # skimage winds its triangles with normals into the occupied region of
  # the (z, y, x) grid; reordering the axes to (x, y, z) mirrors the frame,
  # which turns them outwards.
  return vertices[:, ::-1].copy(), faces


def chamfer_distance(a, b) -> float:
  """Symmetric Chamfer distance between two point sets.

    chamfer = (mean_{p in a} min_{q in b} ||p - q||
               + mean_{q in b} min_{p in a} ||q - p||) / 2,

  the mean of the two directions' mean nearest-neighbour distances (not
  their sum, nor squared), so it is in the points' units: two sampled
  parallel planes d apart are d apart.

  Args:
    a: (N, 3) points.
    b: (M, 3) points.

  Returns:
    The distance, float, in the points' units.
  """
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f'expected (N, D) and (M, D) points, got {a.shape} and '
                     f'{b.shape}')
  if len(a) == 0 or len(b) == 0:
    raise ValueError('both point sets must be non-empty')
  a_to_b, _ = spatial.cKDTree(b).query(a)
  b_to_a, _ = spatial.cKDTree(a).query(b)
  return float((a_to_b.mean() + b_to_a.mean()) / 2)


def voxel_chamfer(pred_occ, true_occ, voxel_size: float = 1.0,
                  level: float = 0.5) -> float:
  """Chamfer distance between the surfaces of two occupancy grids.

  Both surfaces come from `occupancy_surface` (vertices of the marching
  cubes meshes), and are compared with `chamfer_distance`.

  Args:
    pred_occ: (V, V, V) predicted occupancy (probabilities), axes (z, y, x).
    true_occ: (V', V', V') true occupancy in the same frame.
    voxel_size: side of a voxel (the distance's unit).
    level: iso-level of both surfaces.

  Returns:
    The distance in the units of `voxel_size`.

  Raises:
    ValueError: if a grid has no surface (nothing above `level`).
  """
  pred, _ = occupancy_surface(pred_occ, level, voxel_size)
  true, _ = occupancy_surface(true_occ, level, voxel_size)
  return chamfer_distance(pred, true)
