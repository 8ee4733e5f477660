"""Tests of jaxface.data.pipeline: the grain input pipeline."""

from __future__ import annotations

import dataclasses
import json
import logging
import os

from array_record.python import array_record_module
import jax
import numpy as np
import pytest

from jaxface.data import pipeline
from jaxface.data import records
from jaxface.data import shards
from jaxface.data import synthetic
import shared

RES = 32
NUM_TRAIN = 24


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  """A synthetic dataset at 32x32: recon train 24 / test 6, 4 multiview and
  4 clips records."""
  return shared.synthetic_dataset(
      tmp_path_factory,
      synthetic.SynthConfig(resolution=RES, identities=(('train', 8),
                                                        ('test', 4)),
                            clip_length=3),
      {'recon': {'train': NUM_TRAIN, 'test': 6}, 'multiview': {'train': 4},
       'clips': {'train': 4}})


CORRUPTED = {3: 'garbage', 7: 'broken_jpeg', 10: 'wrong_size',
             15: 'no_position_map'}


def write_recon_dataset(directory, data, per_shard=12):
  """Writes serialised recon train records into shards + dataset.json."""
  names = []
  parts = [data[i:i + per_shard] for i in range(0, len(data), per_shard)]
  for s, part in enumerate(parts):
    name = shards.shard_name('recon', 'train', s, len(parts))
    with shards.ShardWriter(os.path.join(directory, name)) as writer:
      for record in part:
        writer.write(record)
    names.append(name)
  shards.write_dataset_info(directory, {
      'source': 'test', 'seed': 0, 'resolution': RES,
      'kinds': {'recon': {'train': {'count': len(data), 'shards': names}}}})
  return directory


def recon_fields(reader, index):
  record = records.deserialize(reader.read_bytes(index), kind='recon')
  return {k: v for k, v in record.items() if k != 'kind'}


@pytest.fixture(scope='module')
def corrupted_dataset(dataset, tmp_path_factory):
  """The recon train records in two shards, with records 3 (garbage bytes),
  7 (a truncated JPEG), 10 (a valid 16x16 record) and 15 (a valid record
  without a position map) corrupted."""
  reader = shards.RecordReader(dataset, 'recon', 'train')
  data = [reader.read_bytes(i) for i in range(len(reader))]
  fields = recon_fields(reader, 0)
  jpeg = fields['image']
  data[3] = b'\x00\x01 not a record at all'
  data[7] = records.serialize('recon',
                              {**fields, 'image': jpeg[:len(jpeg) // 3]})
  small = np.zeros((16, 16, 3), np.uint8)
  data[10] = records.serialize('recon', {
      **fields, 'image': records.encode_jpeg(small, 90),
      'position_map': np.zeros((16, 16, 3), np.float32)})
  fields = recon_fields(reader, 15)
  del fields['position_map']
  data[15] = records.serialize('recon', fields)
  return write_recon_dataset(str(tmp_path_factory.mktemp('corrupted')), data)


def config(**kwargs) -> pipeline.PipelineConfig:
  defaults = dict(kind='recon', split='train', global_batch_size=4, seed=0,
                  read_threads=2)
  return pipeline.PipelineConfig(**{**defaults, **kwargs})


def take(it, n):
  return [next(it) for _ in range(n)]


def all_batches(directory, cfg, **kwargs):
  it = pipeline.make_iterator(directory, cfg, **kwargs)
  try:
    return list(it), it.skipped, list(it.skipped_indices)
  finally:
    it.close()


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for name in x:
      np.testing.assert_array_equal(x[name], y[name], err_msg=name)


def test_recon_batch(dataset):
  it = pipeline.make_iterator(dataset, config(global_batch_size=6))
  batch = next(it)
  it.close()
  shapes = {k: (v.shape, v.dtype) for k, v in batch.items()}
  assert shapes == {
      'image': ((6, RES, RES, 3), np.float32),
      'position_map': ((6, RES, RES, 3), np.float32),
      'landmarks': ((6, 68, 3), np.float32),
      'pose': ((6, 7), np.float32),
      'identity': ((6,), np.int64),
      'index': ((6,), np.int64),
  }
  assert 0 <= batch['image'].min() and batch['image'].max() <= 1
  assert batch['image'].max() > 0.5
  assert len(set(batch['index'].tolist())) == 6


def test_test_split_is_not_augmented(dataset):
  (batch,), _, _ = all_batches(dataset, config(split='test', shuffle=False,
                                               global_batch_size=6,
                                               num_epochs=1))
  reader = shards.RecordReader(dataset, 'recon', 'test')
  assert batch['index'].tolist() == list(range(6))
  for i in range(6):
    record = reader[i]
    np.testing.assert_array_equal(
        batch['image'][i], records.decode_jpeg(record['image']) / np.float32(
            255))
    np.testing.assert_array_equal(batch['position_map'][i],
                                  record['position_map'])
    np.testing.assert_array_equal(batch['landmarks'][i], record['landmarks'])
    np.testing.assert_array_equal(batch['pose'][i], record['pose'])
    assert batch['identity'][i] == record['identity']


def test_train_split_is_augmented(dataset):
  cfg = config(shuffle=False, num_epochs=1, global_batch_size=NUM_TRAIN)
  (augmented,), _, _ = all_batches(dataset, cfg)
  off = dataclasses.replace(cfg, augment=dataclasses.replace(
      cfg.augment, enabled=False))
  (plain,), _, _ = all_batches(dataset, off)
  reader = shards.RecordReader(dataset, 'recon', 'train')
  np.testing.assert_array_equal(plain['position_map'][5],
                                reader[5]['position_map'])
  for name in ('image', 'position_map', 'landmarks'):
    assert not np.allclose(augmented[name], plain[name], atol=1e-3), name
  np.testing.assert_array_equal(augmented['pose'], plain['pose'])


@pytest.mark.parametrize('kind, shapes', [
    ('multiview', {'images': (2, 3, RES, RES, 3), 'landmarks': (2, 3, 68, 3),
                   'extra_points': (2, 3, 5, 3), 'poses': (2, 3, 7),
                   'canonical_position_map': (2, RES, RES, 3),
                   'identity': (2,), 'index': (2,)}),
    ('clips', {'frames': (2, 3, RES, RES, 3), 'landmarks': (2, 3, 68, 3),
               'label': (2,), 'corruption': (2,), 'index': (2,)}),
])
def test_other_kinds(dataset, kind, shapes):
  batches, _, _ = all_batches(dataset, config(kind=kind, global_batch_size=2,
                                              num_epochs=1, shuffle=False))
  assert len(batches) == 2
  assert {k: v.shape for k, v in batches[0].items()} == shapes
  reader = shards.RecordReader(dataset, kind, 'train')
  record = reader[1]
  if kind == 'multiview':
    np.testing.assert_array_equal(batches[0]['images'][1, 2],
                                  records.decode_jpeg(record['images'][2])
                                  / np.float32(255))
    np.testing.assert_array_equal(batches[0]['canonical_position_map'][1],
                                  record['canonical_position_map'])
  else:
    np.testing.assert_array_equal(batches[0]['frames'][1, 2],
                                  records.decode_jpeg(record['frames'][2])
                                  / np.float32(255))
    assert batches[0]['label'][1] == record['label']
    assert batches[0]['corruption'][1] == record['corruption']
  np.testing.assert_array_equal(batches[0]['landmarks'][1],
                                record['landmarks'])


def test_epochs_cover_all_records_in_new_orders(dataset):
  batches, _, _ = all_batches(dataset, config(num_epochs=2))
  assert len(batches) == 2 * NUM_TRAIN // 4
  indices = np.concatenate([b['index'] for b in batches])
  first, second = indices[:NUM_TRAIN], indices[NUM_TRAIN:]
  assert sorted(first.tolist()) == list(range(NUM_TRAIN))
  assert sorted(second.tolist()) == list(range(NUM_TRAIN))
  assert first.tolist() != second.tolist()
  assert first.tolist() != list(range(NUM_TRAIN))


def test_remainder(dataset):
  cfg = config(global_batch_size=5, num_epochs=1)
  kept, _, _ = all_batches(dataset, cfg)  # training drops the remainder
  assert [len(b['index']) for b in kept] == [5] * 4
  kept, _, _ = all_batches(dataset, dataclasses.replace(
      cfg, drop_remainder=False))
  assert [len(b['index']) for b in kept] == [5] * 4 + [4]


def test_same_seed_same_batches_other_seed_differs(dataset):
  cfg = config()
  a = take(pipeline.make_iterator(dataset, cfg), 7)
  b = take(pipeline.make_iterator(dataset, cfg), 7)
  assert_batches_equal(a, b)
  c = take(pipeline.make_iterator(dataset, dataclasses.replace(cfg, seed=1)),
           7)
  assert [x['index'].tolist() for x in a] != [x['index'].tolist() for x in c]


def test_augmentation_depends_on_record_not_position(dataset):
  # A record's augmentation is a function of (seed, epoch, index): the same
  # record in the same epoch looks the same whatever the batch size.
  a, _, _ = all_batches(dataset, config(num_epochs=1, global_batch_size=4))
  b, _, _ = all_batches(dataset, config(num_epochs=1, global_batch_size=3))

  def by_index(batches):
    return {int(i): im for bt in batches
            for i, im in zip(bt['index'], bt['image'])}

  a, b = by_index(a), by_index(b)
  assert sorted(a) == sorted(b) == list(range(NUM_TRAIN))
  for i in a:
    np.testing.assert_array_equal(a[i], b[i])


def test_restore_mid_epoch(dataset):
  cfg = config()  # 6 batches per epoch; the restored run crosses epochs.
  expected = take(pipeline.make_iterator(dataset, cfg), 10)
  it = pipeline.make_iterator(dataset, cfg)
  assert_batches_equal(take(it, 3), expected[:3])
  state = json.loads(json.dumps(it.get_state()))
  assert len(json.dumps(state)) < 4096
  assert state['batches'] == 3
  restored = pipeline.make_iterator(dataset, cfg)
  restored.set_state(state)
  assert_batches_equal(take(restored, 7), expected[3:])
  assert restored.batches == 10


def test_restore_mid_epoch_with_workers(dataset):
  cfg = config(worker_count=2, num_epochs=2)
  it = pipeline.make_iterator(dataset, cfg)
  try:
    head = take(it, 3)
    state = json.loads(json.dumps(it.get_state()))
    tail = list(it)
  finally:
    it.close()
  assert len(head) + len(tail) == 12
  indices = np.concatenate([b['index'] for b in head + tail])
  assert sorted(indices.tolist()) == sorted(list(range(NUM_TRAIN)) * 2)
  restored = pipeline.make_iterator(dataset, cfg)
  try:
    restored.set_state(state)
    assert_batches_equal(list(restored), tail)
  finally:
    restored.close()


def test_orbax_checkpoint(dataset, tmp_path):
  ocp = pytest.importorskip('orbax.checkpoint')
  grain = pytest.importorskip('grain')
  cfg = config()
  it = pipeline.make_iterator(dataset, cfg)
  take(it, 2)
  manager = ocp.CheckpointManager(str(tmp_path), item_names=('data',))
  manager.save(2, args=ocp.args.Composite(
      data=grain.checkpoint.CheckpointSave(it)))
  manager.wait_until_finished()
  expected = take(it, 2)
  restored = pipeline.make_iterator(dataset, cfg)
  manager.restore(2, args=ocp.args.Composite(
      data=grain.checkpoint.CheckpointRestore(restored)))
  assert_batches_equal(take(restored, 2), expected)
  manager.close()


def test_state_of_other_config_is_rejected(dataset):
  state = pipeline.make_iterator(dataset, config()).get_state()
  other = pipeline.make_iterator(dataset, config(seed=3))
  with pytest.raises(ValueError, match='seed'):
    other.set_state(state)
  with pytest.raises(ValueError, match='jaxface-pipeline'):
    other.set_state({'grain': {}})


def test_a_state_restores_wherever_the_augmentation_runs(dataset):
  # The records, their order and the draws are the same with the
  # augmentation in the pipeline or on the device, so a run can move; and
  # states saved before AugmentConfig.on_device existed lack it.
  it = pipeline.make_iterator(dataset, config())
  take(it, 1)
  state = json.loads(json.dumps(it.get_state()))
  expected = take(it, 2)
  assert 'on_device' not in state['config']['augment']
  on_device = pipeline.make_iterator(dataset, config(
      augment=dataclasses.replace(pipeline.augment_lib.AugmentConfig(),
                                  on_device=True)))
  on_device.set_state(state)
  moved = take(on_device, 2)
  for a, b in zip(moved, expected):
    np.testing.assert_array_equal(a['index'], b['index'])
    assert a['image'].dtype == np.uint8


def test_two_processes_share_an_epoch(dataset):
  cfg = config(global_batch_size=8, num_epochs=1)
  assert pipeline.per_process_batch_size(8, 2) == 4
  seen = []
  for process in (0, 1):
    batches, _, _ = all_batches(dataset, cfg, process_index=process,
                                process_count=2)
    assert [len(b['index']) for b in batches] == [4, 4, 4]
    seen.append(np.concatenate([b['index'] for b in batches]).tolist())
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == list(range(NUM_TRAIN))


def test_per_process_batch_size_must_divide(dataset):
  assert pipeline.per_process_batch_size(32, 4) == 8
  with pytest.raises(ValueError, match='multiple of the process count 4'):
    pipeline.per_process_batch_size(30, 4)
  with pytest.raises(ValueError, match='multiple of the process count 3'):
    pipeline.make_iterator(dataset, config(global_batch_size=8),
                           process_index=0, process_count=3)


def test_corrupted_records_are_skipped_and_counted(corrupted_dataset, caplog):
  cfg = config(num_epochs=1, drop_remainder=False, shuffle=False)
  with caplog.at_level(logging.WARNING):
    batches, skipped, skipped_indices = all_batches(corrupted_dataset, cfg)
  indices = np.concatenate([b['index'] for b in batches]).tolist()
  assert indices == [i for i in range(NUM_TRAIN) if i not in CORRUPTED]
  assert [len(b['index']) for b in batches] == [4, 4, 4, 4, 4]
  assert skipped == 4
  assert skipped_indices == sorted(CORRUPTED)
  for index in CORRUPTED:
    assert any(f'corrupted record {index} ' in r.getMessage()
               for r in caplog.records), index


def test_corrupted_records_are_counted_with_workers(corrupted_dataset):
  # Each worker batches its own share, so keep the partial batches.
  cfg = config(num_epochs=2, worker_count=2, drop_remainder=False)
  batches, skipped, skipped_indices = all_batches(corrupted_dataset, cfg)
  indices = np.concatenate([b['index'] for b in batches]).tolist()
  assert sorted(indices) == sorted(
      [i for i in range(NUM_TRAIN) if i not in CORRUPTED] * 2)
  assert skipped == 8
  assert sorted(skipped_indices) == sorted(list(CORRUPTED) * 2)


def test_corrupted_records_are_logged_once_with_workers(corrupted_dataset,
                                                        caplog):
  it = pipeline.make_iterator(corrupted_dataset, config(
      num_epochs=2, worker_count=2, drop_remainder=False, shuffle=False))
  with caplog.at_level(logging.WARNING):
    list(it)
  it.close()
  assert sorted(_warned(caplog)) == sorted(CORRUPTED)
  assert it.skipped_records == 4


def _warned(caplog):
  """The record indices of the corrupted-record warnings, in order."""
  return [int(r.getMessage().split('corrupted record ')[1].split()[0])
          for r in caplog.records if 'corrupted record ' in r.getMessage()]


def test_corrupted_records_are_logged_and_counted_once(corrupted_dataset,
                                                       caplog):
  # Three epochs without shuffle: every skip is carried by a batch (the
  # last record is good), and each corrupted record is met three times.
  it = pipeline.make_iterator(corrupted_dataset, config(
      num_epochs=3, shuffle=False, drop_remainder=False))
  with caplog.at_level(logging.WARNING):
    batches = list(it)
  it.close()
  assert len(batches) == 15
  assert sorted(_warned(caplog)) == sorted(CORRUPTED)
  assert it.skipped == 12 and it.skipped_records == 4


def test_restored_iterator_keeps_the_skipped_records(corrupted_dataset,
                                                     caplog):
  cfg = config(shuffle=False)
  it = pipeline.make_iterator(corrupted_dataset, cfg)
  take(it, 6)  # The first epoch (20 good records) and a bit of the second.
  state = json.loads(json.dumps(it.get_state()))
  it.close()
  assert it.skipped_records == 4
  restored = pipeline.make_iterator(corrupted_dataset, cfg)
  restored.set_state(state)
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    take(restored, 10)  # Two more epochs.
  restored.close()
  assert restored.skipped_records == 4 and restored.skipped > it.skipped + 4
  assert _warned(caplog) == []


def test_mixed_iterator_counts_the_skipped_records_of_both(corrupted_dataset,
                                                           dataset):
  cfg = config(num_epochs=1, shuffle=False, drop_remainder=False)
  mixed = pipeline.MixedIterator(
      pipeline.make_iterator(corrupted_dataset, cfg),
      pipeline.make_iterator(dataset, cfg))
  take(mixed, 5)
  mixed.close()
  assert mixed.skipped_records == 4


def test_records_without_position_maps(dataset, tmp_path):
  # AFLW2000-3D converted without a BFM has no position maps: batches come
  # without them, and augmentation still moves image and landmarks.
  reader = shards.RecordReader(dataset, 'recon', 'train')
  data = []
  for i in range(8):
    fields = recon_fields(reader, i)
    del fields['position_map']
    data.append(records.serialize('recon', fields))
  directory = write_recon_dataset(str(tmp_path), data)
  (batch,), skipped, _ = all_batches(directory, config(
      global_batch_size=8, num_epochs=1, shuffle=False))
  assert skipped == 0
  assert sorted(batch) == ['identity', 'image', 'index', 'landmarks', 'pose']
  assert batch['image'].shape == (8, RES, RES, 3)
  original = np.stack([reader[i]['landmarks'] for i in range(8)])
  assert not np.allclose(batch['landmarks'], original, atol=0.5)


def test_not_a_dataset_fails_at_start(tmp_path):
  with pytest.raises(shards.DatasetError, match='not a jaxface dataset'):
    pipeline.make_iterator(str(tmp_path), config())
  with pytest.raises(shards.DatasetError, match='does not exist'):
    pipeline.make_iterator(str(tmp_path / 'missing'), config())


def test_shards_that_are_not_array_record_fail_at_start(tmp_path):
  name = shards.shard_name('recon', 'train', 0, 1)
  (tmp_path / name).write_bytes(b'this is not an ArrayRecord file' * 10)
  shards.write_dataset_info(str(tmp_path), {
      'source': 'test', 'resolution': RES,
      'kinds': {'recon': {'train': {'count': 1, 'shards': [name]}}}})
  with pytest.raises(shards.DatasetError, match='ArrayRecord'):
    pipeline.make_iterator(str(tmp_path), config())


def test_array_records_that_are_not_jaxface_records_fail_at_start(tmp_path):
  name = shards.shard_name('recon', 'train', 0, 1)
  writer = array_record_module.ArrayRecordWriter(
      str(tmp_path / name), shards.WRITER_OPTIONS)
  for i in range(10):
    writer.write(f'a tf.Example, maybe {i}'.encode())
  writer.close()
  shards.write_dataset_info(str(tmp_path), {
      'source': 'test', 'resolution': RES,
      'kinds': {'recon': {'train': {'count': 10, 'shards': [name]}}}})
  with pytest.raises(shards.DatasetError,
                     match='not jaxface recon records.*corrupted record'):
    pipeline.make_iterator(str(tmp_path), config())


def test_wrong_kind_fails_at_start(dataset):
  reader = shards.RecordReader(dataset, 'multiview', 'train')
  source = [reader.read_bytes(i) for i in range(len(reader))]
  with pytest.raises(shards.DatasetError, match='expected a recon record'):
    pipeline.make_iterator(source, config())


def test_bytes_source(dataset):
  reader = shards.RecordReader(dataset, 'recon', 'train')
  source = [reader.read_bytes(i) for i in range(len(reader))]
  cfg = config(num_epochs=1)
  assert_batches_equal(all_batches(source, cfg)[0],
                       all_batches(dataset, cfg)[0])


@pytest.mark.slow  # a pytest process of its own, with 8 devices
@pytest.mark.multidevice
def test_to_global_arrays_shards_over_data(dataset):
  assert jax.device_count() == 8
  mesh = jax.make_mesh((4, 2), ('data', 'model'),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  it = pipeline.make_iterator(dataset, config(global_batch_size=8),
                              process_index=0, process_count=1)
  batch = next(it)
  arrays = pipeline.to_global_arrays(batch, mesh)
  assert sorted(arrays) == sorted(batch)
  for name, array in arrays.items():
    assert isinstance(array, jax.Array)
    assert array.shape == batch[name].shape
    assert array.sharding.spec == jax.sharding.PartitionSpec('data')
    assert len(array.addressable_shards) == 8
    for shard in array.addressable_shards:
      assert shard.data.shape == (2,) + batch[name].shape[1:]
      np.testing.assert_array_equal(shard.data, batch[name][shard.index])
    np.testing.assert_array_equal(np.asarray(array), batch[name])
  with jax.set_mesh(mesh):
    total = jax.jit(lambda x: x.sum())(arrays['image'])
  np.testing.assert_allclose(total, batch['image'].sum(), rtol=1e-4)
