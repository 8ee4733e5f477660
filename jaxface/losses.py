"""Losses of the two systems: reconstruction, adversarial, identity, geometry.

Everything here is a pure jnp function (jit / vmap / grad friendly) that
returns a float32 scalar unless stated otherwise. `B` is the batch size, and
position maps are (B, H, W, 3) in pixels (x right, y down, z towards the
viewer; `jaxface.face.uv`).

Reconstruction (the second seed, PRNet):
- `position_map_loss`: PRNet's weighted squared error ('mse') or the second
  seed's weighted absolute error ('l1', sum |p - p_g| * W), normalised so its
  value does not depend on the resolution.
- `landmark_loss`: error of the 68 landmarks read off a position map.

Adversarial (both systems): `discriminator_loss` / `generator_loss` with
`ADVERSARIAL_KINDS` = 'lsgan' (CycleGAN), 'nonsaturating', 'hinge' and
'percentage' (the second seed's "1 minus the discriminator's percentage").

First seed's GAN:
- `perceptual_loss`: identity loss between the discriminator's feature maps
  of real and generated faces.
- `canonical_views`, `geometric_consistency_loss`: the geometric features
  re-measured on front / left / right views of the generated face.
- `voxelize_position_map`, `voxel_loss`: targets and loss of the voxel head.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxface.face import features as features_lib
from jaxface.face import frames
from jaxface.face import model as model_lib
from jaxface.face import uv as uv_lib

POSITION_KINDS = ('mse', 'l1')
# Texel weights of the position-map loss (config.loss.mask): PRNet's
# 16 : 4 : 3 : 0 mask, or 1 on the texels it weighs (its emphasis off).
MASKS = ('prnet', 'uniform')
LANDMARK_KINDS = ('l2', 'squared')
ADVERSARIAL_KINDS = ('lsgan', 'nonsaturating', 'hinge', 'percentage')
# The fixed yaws (degrees, 3DDFA sign) of the front, left and right views.
VIEW_YAWS_DEG = (0.0, -70.0, 70.0)

# Squared lengths below this (in squared normalised units) count as 0.
_TINY = 1e-12


def _check_kind(kind: str, choices: Sequence[str], what: str) -> None:
  if kind not in choices:
    raise ValueError(f'unknown {what} kind {kind!r}; choose from '
                     f'{tuple(choices)}')


def _f32(x) -> jax.Array:
  """At least float32: bfloat16 and integers go up, float64 stays."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _safe_norm(v: jax.Array) -> jax.Array:
  """(..., D) -> (...) Euclidean norm with a finite (zero) gradient at 0."""
  sq = jnp.sum(v * v, axis=-1)
  ok = sq > _TINY
  return jnp.where(ok, jnp.sqrt(jnp.where(ok, sq, 1.0)), 0.0)


# ------------------------------------------------------- reconstruction ----


def position_map_loss(pred, target, weight, kind: str = 'mse',
                      scale: float | None = None,
                      z_weight: float = 1.0) -> jax.Array:
  """Weighted position-map error (PRNet's loss), resolution independent.

  With d = (pred - target) / scale per coordinate and err = d^2 ('mse',
  PRNet's weighted squared error) or |d| ('l1', the second seed's
  sum |p(x, y) - p_g(x, y)| * W(x, y)):

    loss = sum_{b,h,w,c} W[b,h,w] err[b,h,w,c] / (3 * sum_{b,h,w} W[b,h,w]),

  i.e. the W-weighted mean over texels, coordinates and examples; with an
  (H, W) mask the denominator is sum(W) * 3 * B. Dividing coordinates by a
  scale proportional to the resolution (default 1.1 * H, PRNet's
  normalisation of its maps) and dividing by sum(W) make the value the same
  for the same face at any resolution. Zero-weight texels (neck, outside)
  contribute nothing.

  Args:
    pred: (B, H, W, 3) predicted position map, pixels.
    target: (B, H, W, 3) ground-truth position map, pixels.
    weight: (H, W) or (B, H, W) non-negative texel weights, e.g.
      `model.uv_weight_mask(H)` (16 : 4 : 3 : 0).
    kind: 'mse' or 'l1'.
    scale: pixels per normalised unit; default 1.1 * H.
    z_weight: the weight of the z coordinate's error relative to x and y.

  Returns:
    () float32 loss (units of (pixels / scale)^2 for 'mse', pixels / scale
    for 'l1').
  """
  _check_kind(kind, POSITION_KINDS, 'position map loss')
  pred, target = _f32(pred), _f32(target)
  if pred.shape != target.shape or pred.ndim != 4 or pred.shape[-1] != 3:
    raise ValueError(f'pred and target must both be (B, H, W, 3), got '
                     f'{pred.shape} and {target.shape}')
  scale = frames.POSITION_SCALE * pred.shape[1] if scale is None else scale
  weight = jnp.broadcast_to(_f32(weight), pred.shape[:3])
  d = (pred - target) / scale
  err = d * d if kind == 'mse' else jnp.abs(d)
  if z_weight != 1.0:
    err = err * jnp.array([1.0, 1.0, z_weight], err.dtype)
  total = jnp.sum(weight[..., None] * err)
  return total / jnp.maximum(3.0 * jnp.sum(weight), _TINY)


def landmark_loss(pred_map, target_landmarks, landmark_uv=None,
                  kind: str = 'l2', scale: float | None = None,
                  visible=None) -> jax.Array:
  """Error of landmarks read off a predicted position map.

  The P landmarks are sampled from `pred_map` at `landmark_uv` with the
  differentiable bilinear `uv.sample_uv` (the cycle's "Generator 2"), then

    'l2':      loss = mean_{b,p} ||l_pred - l_true|| / scale,
    'squared': loss = mean_{b,p} ||l_pred - l_true||^2 / scale^2,

  with the Euclidean norm over the target's D coordinates (3: x, y, z; with
  D = 2 only x, y are compared). The 'l2' norm has a zero gradient where a
  landmark is exact (no NaN). With `visible`, the mean is over the visible
  points only, and the others (whose targets may be anything, NaN included)
  have no effect on the loss or its gradient.

  Args:
    pred_map: (B, H, W, 3) predicted position map, pixels.
    target_landmarks: (B, P, D) true landmarks, pixels, D = 2 or 3.
    landmark_uv: (P, 2) UV coordinates of the landmarks; None: the face
      model's 68 (`model.landmark_uv()`).
    kind: 'l2' or 'squared'.
    scale: pixels per normalised unit; default 1.1 * H.
    visible: optional (B, P) or (P,) weights, 1 for an annotated visible
      point, 0 for one to ignore (a real dataset's 2D annotations).

  Returns:
    () float32 loss, in units of scale ('l2') or scale^2 ('squared'); 0
    when no point is visible.
  """
  _check_kind(kind, LANDMARK_KINDS, 'landmark loss')
  pred_map = _f32(pred_map)
  if landmark_uv is None:
    landmark_uv = model_lib.landmark_uv()
  scale = (frames.POSITION_SCALE * pred_map.shape[-3] if scale is None
           else scale)
  target = _f32(target_landmarks)
  pred = uv_lib.sample_uv(pred_map, _f32(landmark_uv))[..., :target.shape[-1]]
  diff = (pred - target) / scale
  if visible is not None:
    visible = jnp.broadcast_to(_f32(visible), diff.shape[:-1])
    diff = jnp.where(visible[..., None] > 0, diff, 0.0)
  per_point = (jnp.sum(diff * diff, axis=-1) if kind == 'squared'
               else _safe_norm(diff))
  if visible is None:
    return jnp.mean(per_point)
  return jnp.sum(per_point * visible) / jnp.maximum(jnp.sum(visible), 1.0)


# ---------------------------------------------------------- adversarial ----


def discriminator_loss(real_logits, fake_logits, kind: str) -> jax.Array:
  """The discriminator's adversarial loss (minimised by D).

  Logits are the discriminator's raw outputs (no sigmoid); means run over
  all their elements. With r = real_logits, f = fake_logits:
    'lsgan' (CycleGAN's least squares, the raw output as the LS output):
      mean((r - 1)^2) + mean(f^2)  (CycleGAN's code halves this sum to slow
      D down; here the halving is left to the loss weight);
    'nonsaturating' and 'percentage' (binary cross-entropy against labels 1
      for real and 0 for fake, optax.sigmoid_binary_cross_entropy):
      mean(softplus(-r)) + mean(softplus(f));
    'hinge': mean(relu(1 - r)) + mean(relu(1 + f)).

  Args:
    real_logits: (...) logits on real samples, e.g. (B,).
    fake_logits: (...) logits on generated samples.
    kind: one of `ADVERSARIAL_KINDS`.

  Returns:
    () float32 loss.
  """
  _check_kind(kind, ADVERSARIAL_KINDS, 'adversarial')
  r, f = _f32(real_logits), _f32(fake_logits)
  if kind == 'lsgan':
    return jnp.mean((r - 1.0)**2) + jnp.mean(f**2)
  if kind == 'hinge':
    return jnp.mean(jax.nn.relu(1.0 - r)) + jnp.mean(jax.nn.relu(1.0 + f))
  return (jnp.mean(optax.sigmoid_binary_cross_entropy(r, jnp.ones_like(r)))
          + jnp.mean(optax.sigmoid_binary_cross_entropy(f, jnp.zeros_like(f))))


def generator_loss(fake_logits, kind: str) -> jax.Array:
  """The generator's adversarial loss (minimised by G).

  With f = the discriminator's logits on generated samples (mean over all
  elements):
    'lsgan': mean((f - 1)^2) (CycleGAN);
    'nonsaturating': mean(softplus(-f)) = BCE against label 1;
    'hinge': -mean(f);
    'percentage': mean(1 - sigmoid(f)), the second seed's "1 minus the
      discriminator's percentage" (D's probability that the sample is real).
  Each decreases as the fake logits grow ('lsgan' up to f = 1).

  Args:
    fake_logits: (...) logits on generated samples, e.g. (B,).
    kind: one of `ADVERSARIAL_KINDS`.

  Returns:
    () float32 loss.
  """
  _check_kind(kind, ADVERSARIAL_KINDS, 'adversarial')
  f = _f32(fake_logits)
  if kind == 'lsgan':
    return jnp.mean((f - 1.0)**2)
  if kind == 'hinge':
    return -jnp.mean(f)
  if kind == 'percentage':
    return jnp.mean(1.0 - jax.nn.sigmoid(f))
  return jnp.mean(optax.sigmoid_binary_cross_entropy(f, jnp.ones_like(f)))


# ------------------------------------------------------------ identity -----


def perceptual_loss(real_maps: Sequence[jax.Array],
                    fake_maps: Sequence[jax.Array]) -> jax.Array:
  """The first seed's perceptual (identity) loss over feature maps.

  For layers l with maps (B, S_1, ..., S_k, C) (k = 2 for position maps,
  3 for voxels; N_l = S_1 * ... * S_k):

    loss = sum_l mean_{b, c} [ sum_{s} (f_real - f_fake)[b, s, c]^2 / N_l ],

  i.e. per layer ||f_real - f_fake||^2 divided by its H_l x W_l (x D_l),
  averaged over the batch and the channels; which equals the plain mean of
  the squared difference over all of the layer's elements. The real maps are
  constants (`stop_gradient`): only the generator's side gets gradients.
  Computed in float32 (maps may be bfloat16).

  Args:
    real_maps: sequence of (B, ..., C) maps of real samples, e.g. the second
      output of `FaceDiscriminator`.
    fake_maps: the same layers for generated samples, same shapes.

  Returns:
    () float32 loss.
  """
  real_maps, fake_maps = tuple(real_maps), tuple(fake_maps)
  if len(real_maps) != len(fake_maps):
    raise ValueError(f'got {len(real_maps)} real and {len(fake_maps)} fake '
                     'feature maps')
  total = jnp.zeros((), jnp.float32)
  for real, fake in zip(real_maps, fake_maps):
    if real.shape != fake.shape:
      raise ValueError(f'feature map shapes differ: {real.shape} vs '
                       f'{fake.shape}')
    d = jax.lax.stop_gradient(_f32(real)) - _f32(fake)
    total = total + jnp.mean(d * d)
  return total


# ------------------------------------------------------------ geometry -----


def yaw_matrix(yaw):
  """3DDFA's yaw rotation Ry in jaxface's y-down image frame, jnp.

  `render.angle2matrix_3ddfa(0, yaw, 0)` = [[c, 0, -s], [0, 1, 0],
  [s, 0, c]] acts on model space (x right, y up, z towards the camera);
  in a y-down frame the matrix is F Ry F with F = diag(1, -1, 1), which
  equals Ry since Ry leaves y alone. A positive yaw turns the face to the
  image left (its right side towards the camera).

  Args:
    yaw: () or (...) angle in radians.

  Returns:
    (..., 3, 3) float32 rotation, applied as p' = R p.
  """
  yaw = _f32(yaw)
  c, s = jnp.cos(yaw), jnp.sin(yaw)
  zero, one = jnp.zeros_like(yaw), jnp.ones_like(yaw)
  return jnp.stack([jnp.stack([c, zero, -s], -1),
                    jnp.stack([zero, one, zero], -1),
                    jnp.stack([s, zero, c], -1)], -2)


def _points_uv(uv) -> jax.Array:
  """(73, 2) UVs of the 68 landmarks and 5 extra points; None: the face
  model's (`model.landmark_uv()`, `model.extra_point_uv()`)."""
  if uv is None:
    return jnp.asarray(np.concatenate([model_lib.landmark_uv(),
                                       model_lib.extra_point_uv()]))
  uv = _f32(uv)
  if uv.shape != (73, 2):
    raise ValueError(f'uv must be (73, 2): the 68 landmarks\' then the 5 '
                     f'extra points\' UVs (`UVLayout.points_uv`), got '
                     f'{uv.shape}')
  return uv


def canonical_views(position_map, yaws_deg: Sequence[float] = VIEW_YAWS_DEG,
                    uv=None) -> tuple[jax.Array, jax.Array]:
  """Landmarks and extra points of rotated orthographic views of a face.

  Reads the 68 iBUG landmarks and the 5 extra points (glabella, ears,
  lateral head points) at `uv` (by default the face model's,
  `model.landmark_uv()` and `model.extra_point_uv()`) off a
  canonical frontal position map with `uv.sample_uv`, then rotates them about
  a vertical axis (the image's y axis) by each yaw with 3DDFA's convention
  (`yaw_matrix`) and projects orthographically: a view's (x, y) are image
  pixels (y down) and its z is the depth towards the camera. The axis goes
  through the centroid of the 73 points' (x, z), so the views stay where the
  face is; the features are translation invariant anyway. Yaw 0 returns
  the points unchanged. The default yaws (0, -70, +70 degrees) give the
  front, left (the left side, iBUG 36-41 / ear_left, faces the camera) and
  right views of `features.geometric_features`.

  Args:
    position_map: (B, R, R, 3) canonical (frontal) position map, pixels
      (a face model's `canonical_position_map`, the generator's 'uv'
      head).
    yaws_deg: K yaws in degrees (3DDFA sign).
    uv: (73, 2) UVs of the 68 landmarks then the 5 extra points in the map's
      UV layout (`layout.UVLayout.points_uv`); None: the face model's.

  Returns:
    (landmarks (K, B, 68, 3), extra (K, B, 5, 3)), float32 pixels.
  """
  position_map = _f32(position_map)
  points = uv_lib.sample_uv(position_map, _points_uv(uv))  # (B, 73, 3)
  # The axis through the centroid; y is left alone by the rotation anyway.
  pivot = jnp.mean(points, axis=-2, keepdims=True)
  rot = yaw_matrix(jnp.deg2rad(jnp.asarray(yaws_deg, jnp.float32)))
  views = jnp.einsum('kij,bpj->kbpi', rot, points - pivot) + pivot
  return views[:, :, :68], views[:, :, 68:]


def geometric_consistency_loss(pred_position_map, target_features,
                               yaws_deg: Sequence[float] = VIEW_YAWS_DEG,
                               vertical: str = 'image',
                               huber_delta: float | None = None,
                               uv=None) -> jax.Array:
  """The first seed's geometric consistency: features in = features out.

  Recomputes `features.geometric_features` (31 values) from the front, left
  and right `canonical_views` of the generated face and compares them with
  the conditioning features:

    loss = mean_{b, f} (features(pred)[b, f] - target_features[b, f])^2.

  With `huber_delta`, each squared error d^2 with |d| > delta becomes
  2 delta |d| - delta^2 (the same value and slope at delta, linear beyond):
  a generated face far from a face (early in training) has ratios of
  near-zero lengths among its features, whose squared errors would swamp
  every other loss.

  The views are taken at fixed yaws (0, -70, +70 degrees, no pitch or roll),
  whereas the target features were measured on the three input photos,
  whose yaws vary by several degrees around these (the synthetic multiview
  data: front within +-10, sides within 55-85, pitch +-10, roll +-8), so the
  loss of the true face is small but not exactly zero; the front distances
  and areas are invariant to scale, translation and in-plane rotation, the
  side areas to scale and translation.

  Args:
    pred_position_map: (B, R, R, 3) generated canonical position map, pixels.
    target_features: (B, 31) features of the input photos, in the order of
      `features.FEATURE_NAMES`.
    yaws_deg: yaws of the front, left and right views (degrees).
    vertical: imaginary-point construction, see `features.imaginary_points`.
    huber_delta: None (plain squared error) or the delta above.
    uv: (73, 2) UVs of the landmarks and extra points in the map's UV
      layout (see `canonical_views`); None: the face model's.

  Returns:
    () float32 loss (squared unitless features).
  """
  if len(yaws_deg) != 3:
    raise ValueError(f'need 3 yaws (front, left, right), got {yaws_deg}')
  lmk, extra = canonical_views(pred_position_map, yaws_deg, uv)
  feats = features_lib.geometric_features(lmk[0], extra[0], lmk[1], extra[1],
                                          lmk[2], extra[2], vertical)
  d = feats - _f32(target_features)
  if huber_delta is None:
    return jnp.mean(d * d)
  return jnp.mean(2.0 * optax.huber_loss(d, delta=huber_delta))


# --------------------------------------------------------------- voxels ----


def voxelize_position_map(position_map, size: int, extent: float | None = None,
                          mask=None) -> jax.Array:
  """Occupancy targets of the voxel head from canonical position maps.

  The cube [0, extent)^3 of the canonical frame (pixels; default extent = R,
  the map's side) is cut into size^3 voxels of side s = extent / size.
  Voxel (k, i, j) covers z in [k s, (k + 1) s), y in [i s, (i + 1) s) and
  x in [j s, (j + 1) s): the axis order is (z, y, x) = (depth, row,
  column), z = 0 (index 0) at the back and growing towards the viewer, y
  down, x right, so `occupancy[b, k]` is an image-aligned depth slice.

  "Filled behind the surface": each texel (x, y, z) falls into column
  (i, j) = (floor(y / s), floor(x / s)); texels with x or y outside
  [0, extent) are ignored, z is clipped into the cube. A column's surface
  voxel is the largest depth index floor(z / s) of its texels (a scatter-max
  over the texels), and voxel (k, i, j) is occupied iff the column has a
  texel and k <= that index, i.e. the voxel's back face lies at or behind
  the surface depth. Columns without texels are empty: where the map's
  texel spacing exceeds s (steep surfaces, size > R), holes appear.

  Not differentiable (targets): gradients are stopped.

  Args:
    position_map: (B, R, R, 3) canonical position map, pixels.
    size: V, voxels per side.
    extent: side of the cube in pixels; default R.
    mask: optional (R, R) or (B, R, R) bool, texels to use (default all).

  Returns:
    (B, V, V, V) float32 occupancy in {0, 1}, axes (z, y, x).
  """
  pm = jax.lax.stop_gradient(_f32(position_map))
  batch, res = pm.shape[0], pm.shape[1]
  extent = float(res if extent is None else extent)
  voxel = extent / size
  idx = jnp.floor(pm / voxel).astype(jnp.int32)  # (B, R, R, 3): x, y, z.
  ix, iy = idx[..., 0], idx[..., 1]
  iz = jnp.clip(idx[..., 2], 0, size - 1)
  valid = (ix >= 0) & (ix < size) & (iy >= 0) & (iy < size)
  if mask is not None:
    valid = valid & jnp.broadcast_to(jnp.asarray(mask, bool), valid.shape)
  column = (jnp.arange(batch)[:, None, None] * size + iy) * size + ix
  column = jnp.where(valid, column, batch * size * size)  # Out of range.
  depth = jnp.full((batch * size * size,), -1, jnp.int32)
  depth = depth.at[column.reshape(-1)].max(iz.reshape(-1), mode='drop')
  depth = depth.reshape(batch, 1, size, size)
  k = jnp.arange(size, dtype=jnp.int32)[None, :, None, None]
  return (k <= depth).astype(jnp.float32)


def voxel_loss(logits, occupancy) -> jax.Array:
  """Mean sigmoid binary cross-entropy of the voxel head.

  Args:
    logits: (B, V, V, V, 1) or (B, V, V, V) occupancy logits (the
      generator's 'voxel' head), axes as `voxelize_position_map`.
    occupancy: (B, V, V, V) targets in [0, 1].

  Returns:
    () float32 mean over all voxels and examples.
  """
  logits, occupancy = _f32(logits), _f32(occupancy)
  if logits.ndim == occupancy.ndim + 1 and logits.shape[-1] == 1:
    logits = logits[..., 0]
  if logits.shape != occupancy.shape:
    raise ValueError(f'logits {logits.shape} do not match occupancy '
                     f'{occupancy.shape}')
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, occupancy))
