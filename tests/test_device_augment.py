"""On-device augmentation (`device_augment`) against the CPU path
(`augment.augment`), alone, through the input pipeline and in the train
step."""

import dataclasses

import cv2
import jax
import numpy as np
import pytest

from jaxface.data import augment
from jaxface.data import device_augment
from jaxface.data import pipeline
from jaxface.data import records
from jaxface.data import synthetic
from jaxface.train import loop
from jaxface.train import state as state_lib
import shared
import test_train

NO_OCCLUDER = augment.AugmentConfig(p_occluder=0.0)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  """test_train's dataset (rendered once per session)."""
  return shared.synthetic_dataset(tmp_path_factory, synthetic.SynthConfig(
      resolution=32, identities=(('train', 20), ('test', 5))),
                                  {'recon': {'train': 64, 'test': 16}})


def test_warp_by_identity_shift_and_flip():
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(3, 6, 8, 2)).astype(np.float32)
  identity = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
  shift = np.array([[1, 0, 2], [0, 1, -1]], np.float32)  # x + 2, y - 1
  matrices = np.stack([identity, shift, identity])
  out = np.asarray(device_augment.warp_images(
      images, matrices, np.array([False, False, True])))
  np.testing.assert_allclose(out[0], images[0], atol=1e-6)
  # Output (x, y) holds source (x - 2, y + 1); zeros where that is outside.
  expected = np.zeros_like(images[1])
  expected[:-1, 2:] = images[1][1:, :-2]
  np.testing.assert_allclose(out[1], expected, atol=1e-6)
  np.testing.assert_allclose(out[2], images[2][:, ::-1], atol=1e-6)


def test_a_batch_without_parameters_is_left_alone():
  batch = {'image': np.zeros((1, 4, 4, 3), np.float32)}
  assert device_augment.apply(batch) is batch


def test_records_without_position_maps_are_augmented_too():
  # AFLW2000-3D converted without a BFM: image and landmarks only.
  image, fields = augment.augment_for_device(
      np.full((8, 8, 3), 255, np.uint8), np.random.default_rng(0),
      NO_OCCLUDER)
  batch = {'image': image[None], 'landmarks': np.ones((1, 68, 3), np.float32),
           **{name: value[None] for name, value in fields.items()}}
  out = device_augment.apply(batch)
  assert sorted(out) == ['image', 'landmarks']
  assert out['image'].dtype == np.float32 and out['image'].shape == (1, 8, 8, 3)


def _smooth_uint8_image(rng, height, width):
  low = rng.uniform(size=(6, 6, 3)).astype(np.float32)
  image = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
  return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def test_equals_the_cpu_augmentation_of_the_same_draws():
  rng = np.random.default_rng(1)
  height, width = 40, 48  # not square: rows and columns are not mixed up
  image = _smooth_uint8_image(rng, height, width)
  position_map = rng.uniform(0, width, (32, 32, 3)).astype(np.float32)
  landmarks = rng.uniform(0, width, (68, 3)).astype(np.float32)
  examples, expected = [], []
  for seed in range(8):
    expected.append(augment.augment(
        records.to_unit_float(image), position_map, landmarks,
        np.random.default_rng(seed), NO_OCCLUDER))
    kept, fields = augment.augment_for_device(
        image, np.random.default_rng(seed), NO_OCCLUDER)
    examples.append({'image': kept, 'position_map': position_map,
                     'landmarks': landmarks, **fields})
  batch = {name: np.stack([e[name] for e in examples]) for name in examples[0]}
  assert set(batch['augment_flip'].tolist()) == {False, True}
  out = jax.jit(device_augment.apply)(batch)
  assert not set(out) & set(augment.DEVICE_FIELDS)
  for k, (image_cpu, map_cpu, landmarks_cpu) in enumerate(expected):
    np.testing.assert_allclose(out['position_map'][k], map_cpu, atol=1e-4)
    np.testing.assert_allclose(out['landmarks'][k], landmarks_cpu, atol=1e-4)
    # cv2 rounds sample positions to 1/32 pixel; this does not.
    difference = np.abs(np.asarray(out['image'][k]) - image_cpu)
    assert difference.mean() < 2e-3 and difference.max() < 0.05, k


def _batches(data, augment_config, size=8):
  """The first training batch of `data` in record order."""
  it = pipeline.make_iterator(data, pipeline.PipelineConfig(
      split='train', global_batch_size=size, shuffle=False,
      augment=augment_config))
  try:
    return next(it)
  finally:
    it.close()


def test_the_pipeline_hands_on_uint8_images_and_the_draws(data):
  on_device = dataclasses.replace(NO_OCCLUDER, on_device=True)
  plain = _batches(data, dataclasses.replace(NO_OCCLUDER, enabled=False))
  batch = _batches(data, on_device)
  assert batch['image'].dtype == np.uint8
  np.testing.assert_array_equal(records.to_unit_float(batch['image']),
                                plain['image'])  # no occluder: as recorded
  np.testing.assert_array_equal(batch['position_map'], plain['position_map'])
  assert batch['augment_matrix'].shape == (8, 2, 3)
  assert batch['augment_colour'].shape == (8, 3)
  cpu = _batches(data, NO_OCCLUDER)
  out = jax.jit(device_augment.apply)(batch)
  assert sorted(out) == sorted(cpu)
  np.testing.assert_allclose(out['position_map'], cpu['position_map'],
                             atol=1e-4)
  assert np.abs(np.asarray(out['image']) - cpu['image']).mean() < 5e-3
  # The occluder is painted in the pipeline, on the image as recorded.
  occluded = _batches(data, dataclasses.replace(on_device, p_occluder=1.0))
  assert (occluded['image'] != batch['image']).any(axis=(1, 2, 3)).all()


def test_the_train_step_augments_on_the_device(data):
  config = test_train._config(data, **{'data.augment': True})  # pylint: disable=protected-access
  task = loop.make_task(config, 32)
  mesh = state_lib.make_mesh(jax.devices()[:1])
  repl = state_lib.replicated(mesh)
  key = jax.random.key(0)
  batches = {name: pipeline.to_global_arrays(_batches(data, c), mesh)
             for name, c in (
                 ('cpu', NO_OCCLUDER),
                 ('device', dataclasses.replace(NO_OCCLUDER, on_device=True)),
                 ('none', dataclasses.replace(NO_OCCLUDER, enabled=False)))}
  state = state_lib.initialize(task.init_state, key, batches['cpu'],
                               sharding=repl)
  step = loop.jit_train_step(task, key, repl)
  losses = {}
  for name, batch in batches.items():  # the step donates its state: copies
    _, metrics = step(jax.tree.map(lambda x: x.copy(), state), batch)
    losses[name] = float(metrics['loss'])
  assert losses['device'] == pytest.approx(losses['cpu'], rel=1e-3)
  assert abs(losses['none'] - losses['cpu']) > 1e-2 * losses['cpu'], losses


@pytest.mark.multidevice
def test_sharded_over_the_batch_it_equals_one_device():
  rng = np.random.default_rng(2)
  examples = []
  for seed in range(8):
    image, fields = augment.augment_for_device(
        _smooth_uint8_image(rng, 16, 16), np.random.default_rng(seed),
        NO_OCCLUDER)
    examples.append({'image': image, 'landmarks': rng.uniform(
        0, 16, (68, 3)).astype(np.float32), **fields})
  batch = {name: np.stack([e[name] for e in examples]) for name in examples[0]}
  single = jax.jit(device_augment.apply)(batch)
  mesh = state_lib.make_mesh(jax.devices()[:8])
  sharded = jax.jit(device_augment.apply)(
      pipeline.to_global_arrays(batch, mesh))
  assert len(jax.devices()) >= 8
  for name in single:
    assert sharded[name].sharding.spec[0] == 'data', name
    # Programs compiled apart may fuse multiply-adds apart: 1e-6 rounding.
    np.testing.assert_allclose(sharded[name], single[name], atol=1e-5,
                               err_msg=name)
