"""The accelerator's part of an on-device augmentation, in jax.numpy.

With `augment.AugmentConfig.on_device`, the input pipeline paints the
occluder and hands each recon example on with its image as uint8 and the
drawn parameters as arrays (`augment.device_fields`):

  augment_matrix  (B, 2, 3) float32  the similarity, source pixel (x, y) ->
                                     augmented pixel, as
                                     `augment.similarity_matrix`
  augment_scale   (B,) float32       its scale (z is multiplied by it)
  augment_flip    (B,) bool          mirror after the similarity
  augment_colour  (B, 3) float32     per-channel factors (ones: none)

`apply` turns such a batch into the one the CPU path (`augment.augment`)
would have made for the same draws without an occluder (the occluder,
painted before the similarity here, turns, scales and shifts with the
face, and may leave the crop in part): image (B, H, W, 3) float32 in
[0, 1], resampled bilinearly with 0 outside (as cv2.warpAffine, which
rounds sample positions to 1/32 pixel where this does not), mirrored,
colour-scaled and clipped; position_map (B, R, R', 3) and landmarks
(B, 68, 3) in the augmented crop's pixels. The train step calls it first
(`jaxface.train.loop.jit_train_step`), so it runs inside the step's jit,
sharded over the batch like the rest.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxface.data import augment as augment_lib
from jaxface.data import records
from jaxface.face import layout as layout_lib
from jaxface.face import uv as uv_lib


def _bilinear_zero_border(image: jax.Array, x: jax.Array, y: jax.Array
                          ) -> jax.Array:
  """(H, W, C) image sampled at (H', W') pixel positions x (column), y
  (row): bilinear, taps outside the image count as 0."""
  height, width = image.shape[:2]
  x0, y0 = jnp.floor(x), jnp.floor(y)
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)

  def tap(row, col):
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    value = image[jnp.clip(row, 0, height - 1), jnp.clip(col, 0, width - 1)]
    return jnp.where(inside[..., None], value, 0)

  top = (1 - fx) * tap(y0, x0) + fx * tap(y0, x0 + 1)
  bottom = (1 - fx) * tap(y0 + 1, x0) + fx * tap(y0 + 1, x0 + 1)
  return (1 - fy) * top + fy * bottom


def warp_images(images: jax.Array, matrices: jax.Array, flip: jax.Array
                ) -> jax.Array:
  """Resamples each image by its similarity, then mirrors it where `flip`.

  Args:
    images: (B, H, W, C) float images.
    matrices: (B, 2, 3) maps of source pixels to output pixels (invertible).
    flip: (B,) bool.

  Returns:
    (B, H, W, C) images: output pixel (x, y) holds the source at the
    inverse map of (W - 1 - x, y) where flipped, of (x, y) elsewhere.
  """
  _, height, width, _ = images.shape
  columns = jnp.arange(width, dtype=jnp.float32)
  rows = jnp.arange(height, dtype=jnp.float32)
  columns = jnp.where(flip[:, None], (width - 1) - columns, columns)
  a, b = matrices[:, 0, 0], matrices[:, 0, 1]
  c, d = matrices[:, 1, 0], matrices[:, 1, 1]
  det = a * d - b * c
  dx = columns[:, None, :] - matrices[:, 0, 2, None, None]  # (B, 1, W)
  dy = rows[None, :, None] - matrices[:, 1, 2, None, None]  # (B, H, 1)

  def per_image(v):
    return v[:, None, None]

  source_x = (per_image(d) * dx - per_image(b) * dy) / per_image(det)
  source_y = (per_image(a) * dy - per_image(c) * dx) / per_image(det)
  return jax.vmap(_bilinear_zero_border)(images, source_x, source_y)


def transform_points(points: jax.Array, matrices: jax.Array,
                     scales: jax.Array) -> jax.Array:
  """(B, ..., 3) points: x, y by each example's (2, 3) matrix, z times its
  scale (as `augment.transform_points`)."""
  extra = (1,) * (points.ndim - 2)
  m = matrices.reshape(matrices.shape[:1] + extra + (2, 3))
  x, y, z = points[..., 0], points[..., 1], points[..., 2]
  new_x = m[..., 0, 0] * x + m[..., 0, 1] * y + m[..., 0, 2]
  new_y = m[..., 1, 0] * x + m[..., 1, 1] * y + m[..., 1, 2]
  return jnp.stack([new_x, new_y, z * scales.reshape(scales.shape + extra)],
                   axis=-1)


def apply(batch: dict) -> dict:
  """The batch augmented (see the module docstring); a batch without
  `augment_matrix` comes back as it is. Works under jit."""
  if 'augment_matrix' not in batch:
    return batch
  batch = dict(batch)
  fields = {name: batch.pop(name) for name in augment_lib.DEVICE_FIELDS}
  matrices, scales = fields['augment_matrix'], fields['augment_scale']
  flip, colour = fields['augment_flip'], fields['augment_colour']
  image = records.to_unit_float(batch['image'])
  width = image.shape[2]
  image = warp_images(image, matrices, flip)
  batch['image'] = jnp.clip(image * colour[:, None, None, :], 0.0, 1.0)

  def flipped(mirrored, plain):
    where = flip.reshape(flip.shape + (1,) * (plain.ndim - 1))
    return jnp.where(where, mirrored, plain)

  if 'position_map' in batch:
    maps = transform_points(batch['position_map'], matrices, scales)
    batch['position_map'] = flipped(uv_lib.mirror_position_maps(maps, width),
                                    maps)
  landmarks = transform_points(batch['landmarks'], matrices, scales)
  mirrored = landmarks[:, layout_lib.IBUG_FLIP_PERMUTATION]
  mirrored = mirrored.at[..., 0].set((width - 1) - mirrored[..., 0])
  batch['landmarks'] = flipped(mirrored, landmarks)
  return batch
