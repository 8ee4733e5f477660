"""PRNet's training augmentations of `recon` examples, as pure numpy functions.

One augmentation acts on an example's three geometric parts consistently:

  image         (H, W, 3) uint8 in [0, 255] or float in [0, 1], RGB;
  position_map  (R, R', 3) float32 UV position map: x, y in crop pixels
                (x right, y down), z the depth towards the camera in the same
                pixel units, with the map's minimum z at 0 (see
                `jaxface.face.uv`);
  landmarks     (68, 3) float32 iBUG-68 points, in the same frame as the map.

The position map may be None (records without 3DMM ground truth, e.g.
AFLW2000-3D converted without a BFM): the image and landmarks are augmented
alone, and None comes back.

What it does, in this order (PRNet, Feng et al. 2018, section 3.3, plus a
flip):

1. a similarity about the crop centre c = ((W - 1) / 2, (H - 1) / 2): a
   rotation by `angle` degrees (counter-clockwise as the image is viewed,
   i.e. cv2.getRotationMatrix2D's convention: with y down, the point
   (c_x + d, c_y) goes to (c_x, c_y - d) for +90 degrees), a scale `s` and a
   shift `t` in pixels:

     (x', y') = s R(angle) ((x, y) - c) + c + t,     z' = s z.

   The image is resampled once with cv2.warpAffine (bilinear, constant 0
   border); the map's and the landmarks' x, y go through the same 2x3 matrix.
   z is scaled by s so that depth keeps its units relative to x and y. z is
   NOT re-shifted: as s > 0 and rotation and shift leave z alone, a map whose
   minimum z is 0 keeps its minimum at 0 (the records' convention holds
   after augmentation), and the landmarks stay in the frame of their map.
   This matches PRNet, which scales z and never shifts it.
2. a horizontal flip: the image is mirrored; x -> W - 1 - x in the map and
   the landmarks; the UV map is mirrored (its columns reversed: the texel at
   u moves to 1 - u, as the UV layout is mirror-symmetric about u = 1/2);
   and the landmarks are renumbered by the iBUG-68 left/right permutation
   `layout.IBUG_FLIP_PERMUTATION`, so landmark k stays the point at
   landmark_uv()[k].
3. a synthetic occluder: a random polygon or ellipse filled with a random
   texture, painted over the image only (the geometry is the face's, seen or
   not).
4. per-channel colour scaling by factors in [0.6, 1.4], clipped to the
   image's range.

With `AugmentConfig.on_device`, the input pipeline draws the same
parameters but applies only the occluder, painted on the image before the
similarity (so it turns and scales with the face); it hands the image on as
uint8 with the parameters as arrays (`device_fields`), and the train step
applies the similarity, the flip and the colours on the accelerator
(`jaxface.data.device_augment`). That moves most of the augmentation's CPU
time (the warp, the map's transform and mirror, the float conversion) off
the host, which an accelerator's input pipeline needs at 256x256.

Every random number comes from the caller's np.random.Generator, drawn in a
fixed order whatever the config says (see `sample_params`), so one rng
gives one augmentation, and turning an augmentation off leaves the others'
parameters as they were.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from jaxface.face import layout as layout_lib
from jaxface.face import uv as uv_lib



@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Which augmentations are applied, with what ranges and probabilities.

  A probability of 0 (or a degenerate range) turns one augmentation off;
  `enabled=False` turns them all off.

  Attributes:
    enabled: apply any augmentation at all.
    max_rotation_degrees: the angle is uniform in [-max, max] degrees.
    p_rotation: probability of rotating.
    scale_range: the scale is uniform in [low, high].
    p_scale: probability of scaling.
    max_translation: the shift along x (y) is uniform in [-max, max] times
      the image width (height).
    p_translation: probability of shifting.
    p_flip: probability of a horizontal flip.
    p_occluder: probability of painting one occluder.
    occluder_size_range: the occluder's extent (its bounding circle's
      diameter) is uniform in [low, high] times the image's shorter side.
    colour_scale_range: each RGB channel's factor is uniform in [low, high].
    p_colour: probability of scaling the colours.
    on_device: apply the similarity, flip and colours in the train step on
      the accelerator, not in the input pipeline (see the module docstring).
  """
  enabled: bool = True
  max_rotation_degrees: float = 45.0
  p_rotation: float = 1.0
  scale_range: tuple[float, float] = (0.9, 1.2)
  p_scale: float = 1.0
  max_translation: float = 0.1
  p_translation: float = 1.0
  p_flip: float = 0.5
  p_occluder: float = 0.3
  occluder_size_range: tuple[float, float] = (0.15, 0.5)
  colour_scale_range: tuple[float, float] = (0.6, 1.4)
  p_colour: float = 1.0
  on_device: bool = False

  def __post_init__(self):
    for name in ('p_rotation', 'p_scale', 'p_translation', 'p_flip',
                 'p_occluder', 'p_colour'):
      p = getattr(self, name)
      if not 0.0 <= p <= 1.0:
        raise ValueError(f'AugmentConfig.{name} must be in [0, 1], got {p}')
    for name in ('scale_range', 'occluder_size_range', 'colour_scale_range'):
      low, high = getattr(self, name)
      if not 0.0 < low <= high:
        raise ValueError(f'AugmentConfig.{name} must be (low, high) with '
                         f'0 < low <= high, got {(low, high)}')
    if self.max_rotation_degrees < 0 or self.max_translation < 0:
      raise ValueError('AugmentConfig.max_rotation_degrees and '
                       'max_translation must be >= 0')

  @property
  def runs_on_device(self) -> bool:
    """Whether augmentations are on and the train step applies them."""
    return self.enabled and self.on_device


@dataclasses.dataclass(frozen=True)
class AugmentParams:
  """One drawn augmentation (the neutral values mean "not applied").

  Attributes:
    angle: rotation in degrees, counter-clockwise on the image.
    scale: similarity scale (1 = none).
    shift: (dx, dy) translation in pixels.
    flip: mirror horizontally.
    occluder_seed: seed of the occluder's shape and texture, or None.
    occluder_size: occluder extent as a fraction of the shorter image side.
    colour: per-channel (R, G, B) factors, or None.
  """
  angle: float = 0.0
  scale: float = 1.0
  shift: tuple[float, float] = (0.0, 0.0)
  flip: bool = False
  occluder_seed: int | None = None
  occluder_size: float = 0.0
  colour: tuple[float, float, float] | None = None

  @property
  def is_geometric_identity(self) -> bool:
    return self.angle == 0 and self.scale == 1 and self.shift == (0.0, 0.0)


def sample_params(rng: np.random.Generator, config: AugmentConfig,
                  height: int, width: int) -> AugmentParams:
  """Draws one augmentation for an (height, width) image.

  Always draws the same random numbers in the same order (6 coin flips, then
  angle, scale, shift x, shift y, occluder seed and size, 3 colour factors),
  whatever `config` turns off.
  """
  coins = rng.random(6)
  angle = rng.uniform(-1.0, 1.0) * config.max_rotation_degrees
  scale = rng.uniform(*config.scale_range)
  shift = rng.uniform(-1.0, 1.0, 2) * config.max_translation * np.array(
      [width, height], np.float64)
  occluder_seed = int(rng.integers(0, 2**63 - 1))
  occluder_size = rng.uniform(*config.occluder_size_range)
  colour = rng.uniform(*config.colour_scale_range, 3)
  if not config.enabled:
    return AugmentParams()
  on = coins < [config.p_rotation, config.p_scale, config.p_translation,
                config.p_flip, config.p_occluder, config.p_colour]
  return AugmentParams(
      angle=float(angle) if on[0] else 0.0,
      scale=float(scale) if on[1] else 1.0,
      shift=(float(shift[0]), float(shift[1])) if on[2] else (0.0, 0.0),
      flip=bool(on[3]),
      occluder_seed=occluder_seed if on[4] else None,
      occluder_size=float(occluder_size) if on[4] else 0.0,
      colour=tuple(float(c) for c in colour) if on[5] else None)


def similarity_matrix(height: int, width: int, angle: float, scale: float,
                      shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
  """The (2, 3) float64 similarity about the image centre, then a shift.

  Maps pixel (x, y) (column, row; pixel centres at integers) to
  s R(angle) ((x, y) - c) + c + shift, with c = ((W - 1) / 2, (H - 1) / 2)
  and R rotating counter-clockwise on the image for angle > 0 (as
  cv2.getRotationMatrix2D).
  """
  theta = np.deg2rad(angle)
  a, b = scale * np.cos(theta), scale * np.sin(theta)
  cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
  return np.array([
      [a, b, (1 - a) * cx - b * cy + shift[0]],
      [-b, a, b * cx + (1 - a) * cy + shift[1]],
  ], np.float64)


def transform_points(points: np.ndarray, matrix: np.ndarray,
                     scale: float) -> np.ndarray:
  """Applies a similarity to (..., 3) points: x, y by `matrix`, z times scale.

  Args:
    points: (..., 3) float x, y (pixels), z (pixel units).
    matrix: (2, 3) affine matrix of a similarity of scale `scale`.
    scale: the similarity's scale.

  Returns:
    (..., 3) float32 transformed points.
  """
  points = np.ascontiguousarray(points, np.float32)
  if points.size == 0:
    return points.copy()
  m = np.asarray(matrix, np.float32)
  # One pass of cv2.transform with the 3x4 matrix [[m, 0], [0, 0, scale,
  # 0]]: a 256x256 map in 0.06 ms, against 0.32 ms for numpy's strided
  # channels (float32 either way; its sums may round in another order).
  affine = np.zeros((3, 4), np.float32)
  affine[:2, :2], affine[:2, 3] = m[:, :2], m[:, 2]
  affine[2, 2] = scale
  return cv2.transform(points.reshape(-1, 1, 3), affine).reshape(points.shape)


def warp_image(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
  """Resamples an (H, W, C) image by a (2, 3) pixel map (bilinear, 0 border)."""
  height, width = image.shape[:2]
  return cv2.warpAffine(image, np.asarray(matrix, np.float64), (width, height),
                        flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def hflip(image: np.ndarray, position_map: np.ndarray | None,
          landmarks: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
  """Mirrors an example horizontally (see the module docstring).

  Args:
    image: (H, W, C) image.
    position_map: (R, R', 3) UV position map in the image's pixels, or None.
    landmarks: (68, 3) landmarks in the image's pixels.

  Returns:
    (image, position_map, landmarks), new arrays; applying hflip twice gives
    the input back exactly.
  """
  width = image.shape[1]
  image = cv2.flip(np.ascontiguousarray(image), 1)  # Columns reversed.
  if position_map is not None:
    position_map = np.ascontiguousarray(uv_lib.mirror_position_maps(
        np.asarray(position_map, np.float32), width))
  landmarks = np.array(
      np.asarray(landmarks)[layout_lib.IBUG_FLIP_PERMUTATION], np.float32)
  landmarks[:, 0] = (width - 1) - landmarks[:, 0]
  return image, position_map, landmarks


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """(height, width, 3) float32 random texture in [0, 1]."""
  cells = int(rng.integers(2, 9))
  low = rng.uniform(0.0, 1.0, (cells, cells, 3)).astype(np.float32)
  texture = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
  if rng.random() < 0.5:  # stripes
    period = rng.uniform(3.0, 12.0)
    direction = rng.uniform(0.0, np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = (xx * np.cos(direction) + yy * np.sin(direction)) / period
    texture *= (0.6 + 0.4 * np.sin(2 * np.pi * phase))[..., None]
  texture += rng.uniform(-0.15, 0.15, (height, width, 3)).astype(np.float32)
  return np.clip(texture, 0.0, 1.0)


def occluder_mask(rng: np.random.Generator, height: int, width: int,
                  size: float) -> np.ndarray:
  """(H, W) bool mask of a random polygon or ellipse of extent `size`.

  `size` is the diameter of the shape's bounding circle as a fraction of the
  shorter image side; the centre is uniform in the middle 70 % of the image.
  """
  radius = 0.5 * size * min(height, width)
  centre = rng.uniform(0.15, 0.85, 2) * [width, height]
  mask = np.zeros((height, width), np.uint8)
  if rng.random() < 0.5:
    axes = radius * rng.uniform(0.4, 1.0, 2)
    box = ((float(centre[0]), float(centre[1])),
           (float(2 * axes[0]), float(2 * axes[1])), float(rng.uniform(0, 180)))
    cv2.ellipse(mask, box, 1, -1)
  else:
    count = int(rng.integers(3, 9))
    angles = np.sort(rng.uniform(0, 2 * np.pi, count))
    radii = radius * rng.uniform(0.4, 1.0, count)
    points = centre + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[
        :, None]
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
  return mask.astype(bool)


def paint_occluder(image: np.ndarray, rng: np.random.Generator,
                   size: float) -> np.ndarray:
  """Paints a randomly textured shape over a copy of `image` (uint8 or float
  in [0, 1]); see `occluder_mask` for `size`."""
  height, width = image.shape[:2]
  mask = occluder_mask(rng, height, width, size)
  out = np.array(image)
  if not mask.any():
    return out
  rows, cols = np.nonzero(mask)
  r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
  texture = _texture(rng, r1 - r0, c1 - c0)
  if image.dtype == np.uint8:
    texture = np.round(texture * 255).astype(np.uint8)
  sub = mask[r0:r1, c0:c1]
  out[r0:r1, c0:c1][sub] = texture[sub].astype(out.dtype)
  return out


def _paint_drawn_occluder(image: np.ndarray, params: AugmentParams
                          ) -> np.ndarray:
  """`image` with `params`' occluder painted over a copy, if one was drawn
  (else `image` itself)."""
  if params.occluder_seed is None:
    return image
  return paint_occluder(image, np.random.default_rng(params.occluder_seed),
                        params.occluder_size)


def scale_colour(image: np.ndarray, factors) -> np.ndarray:
  """Multiplies each channel by its factor and clips to the image's range.

  Args:
    image: (H, W, 3) uint8 in [0, 255] (rounded back to uint8) or float in
      [0, 1] (clipped to [0, 1], same dtype).
    factors: 3 per-channel factors.
  """
  factors = np.asarray(factors, np.float32)
  if image.dtype == np.uint8:
    scaled = np.round(image.astype(np.float32) * factors)
    return np.clip(scaled, 0, 255).astype(np.uint8)
  out = np.multiply(image, factors.astype(image.dtype))
  return np.clip(out, 0, 1, out=out)


def apply_params(image: np.ndarray, position_map: np.ndarray | None,
                 landmarks: np.ndarray, params: AugmentParams
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
  """Applies drawn augmentation `params` (see the module docstring).

  Returns:
    (image, position_map, landmarks): the image in the input's dtype, the map
    and landmarks float32 (the map None if it was None); new arrays, the
    inputs are not modified.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'expected an (H, W, 3) image, got {image.shape}')
  landmarks = np.asarray(landmarks, np.float32)
  height, width = image.shape[:2]
  if params.is_geometric_identity:
    image, landmarks = np.array(image), np.array(landmarks)
    if position_map is not None:
      position_map = np.array(position_map, np.float32)
  else:
    matrix = similarity_matrix(height, width, params.angle, params.scale,
                               params.shift)
    image = warp_image(image, matrix)
    if position_map is not None:
      position_map = transform_points(position_map, matrix, params.scale)
    landmarks = transform_points(landmarks, matrix, params.scale)
  if params.flip:
    image, position_map, landmarks = hflip(image, position_map, landmarks)
  image = _paint_drawn_occluder(image, params)
  if params.colour is not None:
    image = scale_colour(image, params.colour)
  return image, position_map, landmarks


def augment(image: np.ndarray, position_map: np.ndarray | None,
            landmarks: np.ndarray, rng: np.random.Generator,
            config: AugmentConfig = AugmentConfig()
            ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
  """Draws an augmentation from `rng` and applies it to one example.

  Args:
    image: (H, W, 3) uint8 in [0, 255] or float in [0, 1], RGB.
    position_map: (R, R', 3) float32 UV position map in the image's pixels
      (x, y) and pixel-unit depth z, or None.
    landmarks: (68, 3) float32 landmarks in the same frame.
    rng: the randomness; the result is a function of its state.
    config: what to apply.

  Returns:
    (image, position_map, landmarks) augmented, as `apply_params`.
  """
  height, width = np.shape(image)[:2]
  params = sample_params(rng, config, height, width)
  return apply_params(image, position_map, landmarks, params)


# The fields an on-device augmentation adds to a recon example (per example;
# a batch has a leading B): see `device_fields`.
DEVICE_FIELDS = ('augment_matrix', 'augment_scale', 'augment_flip',
                 'augment_colour')


def device_fields(params: AugmentParams, height: int, width: int
                  ) -> dict[str, np.ndarray]:
  """`params`' geometry and colours as the arrays the train step applies
  (`jaxface.data.device_augment.apply`); the occluder is not among them.

  Returns:
    augment_matrix (2, 3) float32, the similarity (`similarity_matrix`;
    the identity when none); augment_scale () float32, its scale;
    augment_flip () bool; augment_colour (3,) float32 factors (ones when
    none).
  """
  matrix = similarity_matrix(height, width, params.angle, params.scale,
                             params.shift)
  colour = (1.0, 1.0, 1.0) if params.colour is None else params.colour
  return {'augment_matrix': matrix.astype(np.float32),
          'augment_scale': np.float32(params.scale),
          'augment_flip': np.bool_(params.flip),
          'augment_colour': np.asarray(colour, np.float32)}


def augment_for_device(image: np.ndarray, rng: np.random.Generator,
                       config: AugmentConfig
                       ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """The input pipeline's part of an on-device augmentation: draws the
  parameters from `rng` as `augment` does (the same numbers for the same
  rng), paints the occluder on the (H, W, 3) image as it is, and returns
  (that image, `device_fields`)."""
  height, width = np.shape(image)[:2]
  params = sample_params(rng, config, height, width)
  return _paint_drawn_occluder(image, params), device_fields(params, height,
                                                             width)
