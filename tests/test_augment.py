"""Tests of jaxface.data.augment: PRNet's augmentations of recon examples."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jaxface.data import augment
from jaxface.data import records
from jaxface.data import synthetic
from jaxface.face import layout as layout_lib
from jaxface.face import model as model_lib
from jaxface.face import uv

RES = 32
OFF = augment.AugmentConfig(
    p_rotation=0.0, p_scale=0.0, p_translation=0.0, p_flip=0.0,
    p_occluder=0.0, p_colour=0.0)


@pytest.fixture(scope='module')
def examples():
  """Three synthetic recon examples: (uint8 image, position map, landmarks)."""
  gen = synthetic.Generator(synthetic.SynthConfig(resolution=RES))
  out = []
  for index in range(3):
    fields = gen.recon('train', index)
    out.append((records.decode_jpeg(fields['image']),
                np.asarray(fields['position_map'], np.float32),
                np.asarray(fields['landmarks'], np.float32)))
  return out


def only(**kwargs) -> augment.AugmentConfig:
  """A config with every augmentation off except those given."""
  return dataclasses.replace(OFF, **kwargs)


def resample_landmarks(position_map):
  return np.asarray(uv.sample_uv(position_map, model_lib.landmark_uv()))


def test_mirror_position_maps_numpy_and_jax():
  # Texel (i, j) holds (x, y, z) = (j + 0.25, i, 7): mirrored for a 10-pixel
  # image, texel (i, j) holds what (i, 4 - j) held, x -> 9 - x.
  rows, cols = np.meshgrid(np.arange(3.0), np.arange(5.0), indexing='ij')
  maps = np.stack([cols + 0.25, rows, np.full_like(rows, 7.0)], -1)[None]
  expected = np.stack([9.0 - (4.0 - cols + 0.25), rows,
                       np.full_like(rows, 7.0)], -1)[None]
  out = uv.mirror_position_maps(maps, 10)
  assert isinstance(out, np.ndarray)
  np.testing.assert_array_equal(out, expected)
  np.testing.assert_array_equal(uv.mirror_position_maps(out, 10), maps)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  np.testing.assert_array_equal(
      np.asarray(uv.mirror_position_maps(jnp.asarray(maps), 10)), expected)
  # One float map (the input pipeline's path), float32 and float64.
  for dtype in (np.float32, np.float64):
    single = uv.mirror_position_maps(maps[0].astype(dtype), 10)
    assert single.dtype == dtype
    np.testing.assert_array_equal(single, expected[0].astype(dtype))


def test_flip_permutation_pairs():
  perm = layout_lib.IBUG_FLIP_PERMUTATION
  assert sorted(perm.tolist()) == list(range(68))
  np.testing.assert_array_equal(perm[perm], np.arange(68))
  pairs = [(36, 45), (39, 42), (37, 44), (41, 46), (0, 16), (7, 9), (8, 8),
           (17, 26), (21, 22), (27, 27), (30, 30), (31, 35), (33, 33),
           (48, 54), (51, 51), (55, 59), (57, 57), (60, 64), (62, 62),
           (65, 67), (66, 66)]
  for a, b in pairs:
    assert perm[a] == b and perm[b] == a, (a, b)


def test_flip_permutation_mirrors_landmark_uv():
  # The UV layout is mirror-symmetric: landmark k's mirror sits at (1 - u, v)
  # of landmark k.
  luv = model_lib.landmark_uv()
  mirrored = luv[layout_lib.IBUG_FLIP_PERMUTATION]
  np.testing.assert_allclose(mirrored[:, 0], 1 - luv[:, 0], atol=1e-6)
  np.testing.assert_allclose(mirrored[:, 1], luv[:, 1], atol=1e-6)


@pytest.mark.parametrize('seed', [0, 1, 2, 3])
@pytest.mark.parametrize('p_flip', [0.0, 1.0])
def test_landmarks_follow_position_map_exactly(examples, seed, p_flip):
  # With landmarks that are exactly the map's samples at landmark_uv, they
  # must stay so after any augmentation (bilinear sampling commutes with
  # the affine map; the flip needs the mirrored map and the permutation).
  config = augment.AugmentConfig(p_flip=p_flip, p_occluder=1.0)
  image, position_map, _ = examples[seed % len(examples)]
  landmarks = resample_landmarks(position_map)
  rng = np.random.default_rng(seed)
  _, aug_map, aug_landmarks = augment.augment(image, position_map, landmarks,
                                              rng, config)
  np.testing.assert_allclose(aug_landmarks, resample_landmarks(aug_map),
                             atol=2e-3)
  assert not np.allclose(aug_landmarks, landmarks, atol=0.5)


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('p_flip', [0.0, 1.0])
def test_landmarks_follow_position_map(examples, seed, p_flip):
  # The records' landmarks are the mesh's, a little off the map's bilinear
  # samples at 32x32; augmentation may scale that gap by at most 1.2.
  image, position_map, landmarks = examples[seed % len(examples)]
  gap = np.linalg.norm(landmarks - resample_landmarks(position_map), axis=-1)
  assert gap.max() < 2.0
  perm = layout_lib.IBUG_FLIP_PERMUTATION if p_flip else np.arange(68)
  config = augment.AugmentConfig(p_flip=p_flip)
  _, aug_map, aug_landmarks = augment.augment(
      image, position_map, landmarks, np.random.default_rng(seed), config)
  aug_gap = np.linalg.norm(aug_landmarks - resample_landmarks(aug_map),
                           axis=-1)
  assert np.all(aug_gap <= 1.2 * gap[perm] + 2e-3)


def test_rotation_by_90_degrees_by_hand():
  # 33 x 33 image: centre c = 16. +90 degrees is counter-clockwise on the
  # image (y down): the point d pixels right of the centre goes d pixels up.
  c, d = 16.0, 5.0
  matrix = augment.similarity_matrix(33, 33, angle=90.0, scale=1.0)
  np.testing.assert_allclose(matrix @ [c + d, c, 1.0], [c, c - d], atol=1e-9)
  np.testing.assert_allclose(matrix @ [c, c + d, 1.0], [c + d, c], atol=1e-9)

  image = np.zeros((33, 33, 3), np.uint8)
  image[16, 21] = 255  # row c, column c + d
  position_map = np.zeros((4, 4, 3), np.float32)
  position_map[0, 0] = [c + d, c, 2.0]
  landmarks = np.zeros((68, 3), np.float32)
  landmarks[7] = [c + d, c, 3.0]
  params = augment.AugmentParams(angle=90.0)
  out_image, out_map, out_landmarks = augment.apply_params(
      image, position_map, landmarks, params)
  assert out_image[11, 16].tolist() == [255, 255, 255]  # row c - d, col c
  assert out_image.sum() == 3 * 255
  np.testing.assert_allclose(out_map[0, 0], [c, c - d, 2.0], atol=1e-4)
  np.testing.assert_allclose(out_landmarks[7], [c, c - d, 3.0], atol=1e-4)


def test_scale_and_shift_by_hand():
  # 21 x 41 image (H x W): centre (20, 10). Scale 2 then shift (3, -1):
  # (x, y, z) -> (2 (x - 20) + 20 + 3, 2 (y - 10) + 10 - 1, 2 z).
  params = augment.AugmentParams(scale=2.0, shift=(3.0, -1.0))
  image = np.zeros((21, 41, 3), np.float32)
  points = np.array([[21.0, 12.0, 4.0]] * 68, np.float32)
  _, out_map, out_landmarks = augment.apply_params(
      image, points[None, :4], points, params)
  np.testing.assert_allclose(out_landmarks[0], [25.0, 13.0, 8.0], atol=1e-5)
  np.testing.assert_allclose(out_map[0, 0], [25.0, 13.0, 8.0], atol=1e-5)


def test_geometry_keeps_min_depth_at_zero(examples):
  image, position_map, landmarks = examples[0]
  assert position_map[..., 2].min() == 0
  _, aug_map, _ = augment.augment(image, position_map, landmarks,
                                  np.random.default_rng(5),
                                  augment.AugmentConfig())
  assert aug_map[..., 2].min() == 0


def test_flip_by_hand():
  image = np.zeros((8, 10, 3), np.uint8)
  image[2, 1] = [10, 20, 30]
  position_map = np.zeros((4, 4, 3), np.float32)
  position_map[1, 0] = [2.0, 3.0, 4.0]  # texel at u = 0
  landmarks = np.zeros((68, 3), np.float32)
  landmarks[36] = [1.5, 2.0, 6.0]
  out_image, out_map, out_landmarks = augment.hflip(image, position_map,
                                                    landmarks)
  assert out_image[2, 8].tolist() == [10, 20, 30]
  np.testing.assert_array_equal(out_map[1, 3], [7.0, 3.0, 4.0])  # u = 1
  np.testing.assert_array_equal(out_landmarks[45], [7.5, 2.0, 6.0])


def test_flip_twice_is_identity(examples):
  image, position_map, landmarks = examples[1]
  params = augment.AugmentParams(flip=True)
  once = augment.apply_params(image, position_map, landmarks, params)
  assert not np.array_equal(once[0], image)
  twice = augment.apply_params(*once, params)
  np.testing.assert_array_equal(twice[0], image)
  # x -> (W - 1) - x twice is exact up to float32 rounding.
  np.testing.assert_allclose(twice[1], position_map, rtol=0, atol=1e-5)
  np.testing.assert_allclose(twice[2], landmarks, rtol=0, atol=1e-5)


@pytest.mark.parametrize('config', [
    augment.AugmentConfig(enabled=False),
    OFF,
    augment.AugmentConfig(max_rotation_degrees=0.0, scale_range=(1.0, 1.0),
                          max_translation=0.0, p_flip=0.0, p_occluder=0.0,
                          colour_scale_range=(1.0, 1.0)),
], ids=['disabled', 'probabilities_0', 'ranges_neutral'])
@pytest.mark.parametrize('dtype', [np.uint8, np.float32])
def test_all_off_is_identity(examples, config, dtype):
  image, position_map, landmarks = examples[0]
  if dtype == np.float32:
    image = image.astype(np.float32) / 255
  out = augment.augment(image, position_map, landmarks,
                        np.random.default_rng(0), config)
  assert out[0].dtype == dtype
  np.testing.assert_array_equal(out[0], image)
  np.testing.assert_array_equal(out[1], position_map)
  np.testing.assert_array_equal(out[2], landmarks)


def test_each_augmentation_alone(examples):
  image, position_map, landmarks = examples[2]

  def run(config, seed=3):
    return augment.augment(image, position_map, landmarks,
                           np.random.default_rng(seed), config)

  # Colour: geometry untouched, every channel scaled by one factor.
  out = run(only(p_colour=1.0))
  np.testing.assert_array_equal(out[1], position_map)
  np.testing.assert_array_equal(out[2], landmarks)
  bright = (image > 20) & (image < 150)
  ratios = [np.median(out[0][..., ch][bright[..., ch]]
                      / image[..., ch][bright[..., ch]]) for ch in range(3)]
  assert all(0.58 < r < 1.42 for r in ratios)
  assert max(ratios) - min(ratios) > 0.01  # channels scale differently

  # Occluder: geometry untouched, the image changed in a region only.
  out = run(only(p_occluder=1.0))
  np.testing.assert_array_equal(out[1], position_map)
  np.testing.assert_array_equal(out[2], landmarks)
  changed = (out[0] != image).any(-1)
  assert 0 < changed.sum() < 0.6 * changed.size

  # Translation: every point moves by one (dx, dy) within 10 % of the size.
  out = run(only(p_translation=1.0))
  delta = out[1] - position_map
  shift = delta[0, 0]
  np.testing.assert_allclose(delta, np.broadcast_to(shift, delta.shape),
                             atol=1e-4)
  assert shift[2] == 0 and 0 < np.abs(shift[:2]).max() <= 0.1 * RES
  np.testing.assert_allclose(out[2] - landmarks, np.broadcast_to(
      shift, landmarks.shape), atol=1e-4)

  # Scale: z scaled by s in [0.9, 1.2], distances to the centre likewise.
  out = run(only(p_scale=1.0))
  s = out[1][..., 2].max() / position_map[..., 2].max()
  assert 0.9 <= s <= 1.2 and abs(s - 1) > 1e-3
  centre = (RES - 1) / 2
  np.testing.assert_allclose(out[1][..., :2] - centre,
                             s * (position_map[..., :2] - centre), atol=1e-3)

  # Rotation: z untouched, distances to the centre kept, angle <= 45 deg.
  out = run(only(p_rotation=1.0))
  np.testing.assert_array_equal(out[1][..., 2], position_map[..., 2])
  before = position_map[..., :2] - centre
  after = out[1][..., :2] - centre
  np.testing.assert_allclose(np.linalg.norm(after, axis=-1),
                             np.linalg.norm(before, axis=-1), atol=1e-3)
  angle = np.degrees(np.arctan2(
      before[..., 0] * after[..., 1] - before[..., 1] * after[..., 0],
      (before * after).sum(-1)))
  assert 0 < np.abs(np.median(angle)) <= 45


def test_colour_leaves_geometry_unchanged(examples):
  image, position_map, landmarks = examples[0]
  base = augment.AugmentConfig(p_flip=1.0, p_colour=0.0)
  with_colour = dataclasses.replace(base, p_colour=1.0)
  a = augment.augment(image, position_map, landmarks,
                      np.random.default_rng(9), base)
  b = augment.augment(image, position_map, landmarks,
                      np.random.default_rng(9), with_colour)
  np.testing.assert_array_equal(a[1], b[1])
  np.testing.assert_array_equal(a[2], b[2])
  assert not np.array_equal(a[0], b[0])


def test_deterministic_in_rng(examples):
  image, position_map, landmarks = examples[0]
  config = augment.AugmentConfig(p_occluder=1.0)
  a = augment.augment(image, position_map, landmarks,
                      np.random.default_rng(4), config)
  b = augment.augment(image, position_map, landmarks,
                      np.random.default_rng(4), config)
  c = augment.augment(image, position_map, landmarks,
                      np.random.default_rng(5), config)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0])
  assert not np.array_equal(a[1], c[1])


def test_inputs_not_modified(examples):
  image, position_map, landmarks = examples[0]
  copies = [np.array(x) for x in (image, position_map, landmarks)]
  augment.augment(image, position_map, landmarks, np.random.default_rng(0),
                  augment.AugmentConfig(p_flip=1.0, p_occluder=1.0))
  for x, y in zip((image, position_map, landmarks), copies):
    np.testing.assert_array_equal(x, y)


def test_without_position_map(examples):
  image, position_map, landmarks = examples[0]
  config = augment.AugmentConfig(p_flip=1.0, p_occluder=1.0)
  full = augment.augment(image, position_map, landmarks,
                         np.random.default_rng(2), config)
  out = augment.augment(image, None, landmarks, np.random.default_rng(2),
                        config)
  assert out[1] is None
  np.testing.assert_array_equal(out[0], full[0])
  np.testing.assert_array_equal(out[2], full[2])


def test_config_rejects_bad_values():
  with pytest.raises(ValueError, match='p_flip'):
    augment.AugmentConfig(p_flip=1.5)
  with pytest.raises(ValueError, match='scale_range'):
    augment.AugmentConfig(scale_range=(1.2, 0.9))
