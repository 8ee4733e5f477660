"""The grain input pipeline: jaxface records -> batches of numpy arrays.

  config = pipeline.PipelineConfig(kind='recon', split='train',
                                   global_batch_size=64, worker_count=4)
  it = pipeline.make_iterator('/data/300wlp', config)
  batch = next(it)            # {'image': (B, H, W, 3) float32, ...}
  arrays = pipeline.to_global_arrays(batch, mesh)   # jax.Arrays over 'data'

Stages, per record: read the serialised bytes (a dataset directory's
ArrayRecord shards via `shards.RecordReader`, or any random-access source of
record bytes, e.g. a TFDS / grain ArrayRecord data source), deserialise and
validate (`records.deserialize`), decode the JPEG(s) to RGB, scale to float32
in [0, 1], augment (`augment.augment`; recon records in training only), then
batch and prefetch in worker processes. With on-device augmentation
(`augment.AugmentConfig.on_device`) recon training images stay uint8 and
only the occluder is painted here (see Batches).

Batches (B = per-process batch size = global / process count):

  recon      image (B, H, W, 3) float32 in [0, 1]; position_map (B, H, W, 3)
             float32 crop pixels (absent if the dataset's records have none,
             e.g. AFLW2000-3D converted without a BFM); landmarks (B, 68, 3)
             float32 crop pixels; pose (B, 7) float32; identity (B,) int64;
             index (B,) int64. 2D records (annotated points of a landmark
             scheme): image; points2d (B, P, 2) float32 crop pixels;
             points_visible (B, P) float32, 1 or 0; yaw (B,) float32
             radians, if the dataset has it; identity; index. Never
             augmented.
             With on-device augmentation (`augment.AugmentConfig.on_device`)
             the 3D recon records' training batches carry the image as
             uint8 (the occluder painted), the map and landmarks as
             recorded, and the drawn parameters (`augment.DEVICE_FIELDS`)
             that `device_augment.apply` applies in the train step.
  multiview  images (B, 3, H, W, 3) float32 (front, left, right);
             landmarks (B, 3, 68, 3); extra_points (B, 3, 5, 3); poses
             (B, 3, 7); canonical_position_map (B, H, W, 3); identity (B,)
             int64; index (B,) int64. Never augmented.
  clips      frames (B, T, H, W, 3) float32; landmarks (B, T, 68, 3); label
             (B,) int64; corruption (B,) int64; index (B,) int64. Never
             augmented.

`index` is the record's index in its (kind, split). Every batch has the
fields and shapes of the dataset's first good record (checked at start); a
record that differs is treated as corrupted.

Order and determinism. Epoch e visits the records in the order of
np.random.default_rng([seed, e]).permutation(n) (or in index order without
shuffle); process p of P takes positions p, p + P, p + 2P, ... of it, so the
processes see disjoint records that cover the epoch, n // P each (the n % P
left over are not seen that epoch; with shuffle, different ones each
epoch). Epochs follow each other without a break (a batch can straddle two).
A record's augmentation draws from np.random.default_rng([seed, 0xA6,
epoch, index]): it depends on neither the worker that makes it nor the
thread. With worker processes, each worker batches every worker_count-th
example and the batches are interleaved round-robin, so the batches depend
on worker_count (deterministically); keep it fixed across a run. At the end
of a finite run each worker has its own last partial batch (dropped with
drop_remainder). Skipped records and partial batches can give processes
different numbers of batches in a finite run; multi-host training should
repeat forever (num_epochs=None) and count steps.

Corrupted records (unreadable bytes, not a record, invalid fields, a JPEG
that does not decode, arrays whose size differs from the dataset's) are
skipped and counted, and each is logged once per iterator (absl, WARNING,
with the record's index and the error), not again in later epochs. The
skips must cross from worker processes, so each batch carries the indices
and errors of the records skipped while it was assembled, under private
keys that the iterator removes; `PipelineIterator.skipped` is the running
total of skips (a record skipped in two epochs counts twice),
`skipped_records` the number of distinct records skipped (both kept in the
iterator state), and `skipped_indices` the most recent indices. Records
skipped after the last batch of a finite run are logged where they are
met, not counted.
A source that is not a dataset (no dataset.json, shards that are not
ArrayRecord files) or whose first records are not jaxface records of the
kind fails in `make_iterator` with a `shards.DatasetError`.

Checkpointing. `PipelineIterator.get_state()` is a small JSON-able dict:

  {'format': 'jaxface-pipeline', 'version': 1,
   'config': {...what must match to restore...},
   'batches': int, 'skipped': int, 'skipped_record_indices': [int],
   'grain': grain's iterator state}

and `set_state` on an iterator made with the same config (and process
index, process count, worker count) continues with exactly the batches the
saved one would have produced. `PipelineIterator` is a grain
`DatasetIterator`, so grain's orbax handler saves it (as JSON, one file per
process):

  import orbax.checkpoint as ocp
  manager = ocp.CheckpointManager(directory, item_names=('state', 'data'))
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(train_state),
      data=grain.checkpoint.CheckpointSave(it)))
  ...
  it = pipeline.make_iterator(dataset_dir, config)
  manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data=grain.checkpoint.CheckpointRestore(it)))
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

from absl import flags
from absl import logging
import grain
import jax
import numpy as np

from jaxface.data import augment as augment_lib
from jaxface.data import records
from jaxface.data import shards

STATE_FORMAT = 'jaxface-pipeline'
STATE_VERSION = 1
MIXED_STATE_FORMAT = 'jaxface-mixed'  # `MixedIterator`'s state
# Keys under which a batch carries the indices and errors of the records
# skipped while it was assembled, from the worker to PipelineIterator (which
# removes them).
_SKIPPED_KEY = '_skipped_indices'
_SKIPPED_ERRORS_KEY = '_skipped_errors'
_AUGMENT_STREAM = 0xA6  # Separates augmentation rngs from other seeded uses.
_CHECKED_RECORDS = 8  # make_iterator fails if none of these many decode.
_RECENT_SKIPS = 100


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """What to read and how.

  Attributes:
    kind: record kind, one of records.KINDS.
    split: split name in the dataset.
    global_batch_size: examples per step over all processes.
    shuffle: visit records in a random order, new every epoch.
    seed: seed of the order and the augmentations.
    num_epochs: passes over the data; None repeats forever.
    worker_count: worker processes (0: all in this process).
    worker_buffer_size: batches each worker prepares ahead.
    read_threads: threads that read and decode records, per process (grain
      ReadOptions.num_threads).
    read_buffer_size: examples prefetched by those threads, per process.
    augment: the augmentations of recon records in training.
    training: augment recon records and drop the last partial batch
      (unless drop_remainder says otherwise); None means split == 'train'.
    drop_remainder: drop a final partial batch; None means `training`.
    shard_by_process: each process reads its own 1/P of the records and
      makes global_batch_size / P examples per batch; if False every process
      reads all records and makes global_batch_size per batch.
  """
  kind: str = 'recon'
  split: str = 'train'
  global_batch_size: int = 32
  shuffle: bool = True
  seed: int = 0
  num_epochs: int | None = None
  worker_count: int = 0
  worker_buffer_size: int = 2
  read_threads: int = 2
  read_buffer_size: int = 16
  augment: augment_lib.AugmentConfig = augment_lib.AugmentConfig()
  training: bool | None = None
  drop_remainder: bool | None = None
  shard_by_process: bool = True

  def __post_init__(self):
    if self.kind not in records.KINDS:
      raise ValueError(f'kind must be one of {records.KINDS}, got '
                       f'{self.kind!r}')
    if self.num_epochs is not None and self.num_epochs < 1:
      raise ValueError(f'num_epochs must be >= 1 or None (forever), got '
                       f'{self.num_epochs}')
    if self.worker_count < 0 or self.worker_buffer_size < 1:
      raise ValueError('worker_count must be >= 0 and worker_buffer_size >= '
                       f'1, got {self.worker_count}, {self.worker_buffer_size}')
    if self.read_threads < 0 or self.read_buffer_size < 0:
      raise ValueError('read_threads and read_buffer_size must be >= 0')
    if not 0 <= self.seed < 2**32:
      raise ValueError(f'seed must be in [0, 2**32), got {self.seed}')

  @property
  def is_training(self) -> bool:
    return self.split == 'train' if self.training is None else self.training

  @property
  def augments(self) -> bool:
    """Whether examples are augmented (recon, training, augment.enabled)."""
    return (self.kind == 'recon' and self.is_training
            and self.augment.enabled)

  @property
  def drops_remainder(self) -> bool:
    return (self.is_training if self.drop_remainder is None
            else self.drop_remainder)


def per_process_batch_size(global_batch_size: int, process_count: int) -> int:
  """global_batch_size / process_count, which must divide exactly."""
  if process_count < 1:
    raise ValueError(f'process_count must be >= 1, got {process_count}')
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(
        f'global batch size {global_batch_size} must be a positive multiple '
        f'of the process count {process_count} (each process makes an equal '
        f'share of the batch); use e.g. '
        f'{max(1, global_batch_size // process_count) * process_count}')
  return global_batch_size // process_count


class RecordBytes:
  """A `shards.RecordReader` as a random-access source of record bytes."""

  def __init__(self, reader: shards.RecordReader):
    self.reader = reader

  def __len__(self) -> int:
    return len(self.reader)

  def __getitem__(self, index: int) -> bytes:
    return self.reader.read_bytes(index)

  def __repr__(self) -> str:
    return f'RecordBytes({self.reader!r})'


def _as_source(directory_or_source: Any, kind: str, split: str
               ) -> tuple[Any, str]:
  """(a random-access source of record bytes, a description for messages)."""
  if isinstance(directory_or_source, (str, os.PathLike)):
    reader = shards.RecordReader(directory_or_source, kind, split)
    return RecordBytes(reader), f'{reader.directory} {kind}/{split}'
  if isinstance(directory_or_source, shards.RecordReader):
    if (directory_or_source.kind, directory_or_source.split) != (kind, split):
      raise ValueError(
          f'the RecordReader reads {directory_or_source.kind}/'
          f'{directory_or_source.split} but the config asks for {kind}/'
          f'{split}')
    return (RecordBytes(directory_or_source),
            f'{directory_or_source.directory} {kind}/{split}')
  source = directory_or_source
  if not (hasattr(source, '__len__') and hasattr(source, '__getitem__')):
    raise TypeError(
        'expected a dataset directory, a shards.RecordReader or a random-'
        'access source of record bytes (with __len__ and __getitem__), got '
        f'{type(source).__name__}')
  return source, f'{type(source).__name__} source of {kind} records'


# ---------------------------------------------------------------- decoding


def _decode_images(data: Sequence[bytes], where: str, unit_float: bool = True
                   ) -> np.ndarray:
  """JPEGs -> (N, H, W, 3) float32 in [0, 1] (uint8 if not `unit_float`);
  RecordError if sizes differ."""
  images = [records.decode_jpeg(d, f'{where} image {i}')
            for i, d in enumerate(data)]
  shapes = {im.shape for im in images}
  if len(shapes) > 1:
    raise records.RecordError(f'{where}: its images differ in size: '
                              f'{sorted(shapes)}')
  images = np.stack(images)
  return records.to_unit_float(images) if unit_float else images


def _image_size_check(image_shape, map_shape, where: str) -> None:
  if tuple(image_shape[:2]) != tuple(map_shape[:2]):
    raise records.RecordError(
        f'{where}: image is {image_shape[0]}x{image_shape[1]} but the '
        f'position map is {map_shape[0]}x{map_shape[1]}')


def decode_record(data: Any, kind: str, index: int, where: str,
                  rng: np.random.Generator | None = None,
                  augment_config: augment_lib.AugmentConfig | None = None
                  ) -> dict[str, np.ndarray]:
  """Serialised record bytes -> one example (see the module docstring).

  Args:
    data: `records.serialize` bytes.
    kind: the kind the record must have.
    index: the record's index, put in the example.
    where: names the record in errors.
    rng: augmentation randomness (recon only; None: no augmentation).
    augment_config: what to augment.

  Returns:
    {name: numpy array}, the per-example slices of a batch (for on-device
    augmentation: the image uint8 and the `augment.DEVICE_FIELDS`).

  Raises:
    records.RecordError: if the record is corrupted in any way.
  """
  record = records.deserialize(data, kind=kind, where=where)
  out = {}
  if kind == 'recon' and 'landmarks' not in record:
    # A 2D record (annotated points of a landmark scheme): not augmented.
    out.update(image=_decode_images([record['image']], where)[0],
               points2d=np.array(record['points2d'], np.float32),
               points_visible=np.array(record['points_visible'], np.float32),
               identity=np.int64(record['identity']))
    if 'yaw' in record:
      out['yaw'] = np.float32(record['yaw'][0])
  elif kind == 'recon':
    augment_config = augment_config or augment_lib.AugmentConfig()
    on_device = rng is not None and augment_config.on_device
    image = _decode_images([record['image']], where,
                           unit_float=not on_device)[0]
    position_map = record.get('position_map')  # Optional in the schema.
    landmarks = record['landmarks']
    if position_map is not None:
      _image_size_check(image.shape, position_map.shape, where)
    if on_device:  # the train step does the rest (`device_augment`)
      image, fields = augment_lib.augment_for_device(image, rng,
                                                     augment_config)
      out.update(fields)
    elif rng is not None:
      image, position_map, landmarks = augment_lib.augment(
          image, position_map, landmarks, rng, augment_config)
    out['image'] = image
    if position_map is not None:
      out['position_map'] = np.array(position_map, np.float32)
    out.update(landmarks=np.array(landmarks, np.float32),
               pose=np.array(record['pose'], np.float32),
               identity=np.int64(record['identity']))
  elif kind == 'multiview':
    images = _decode_images(record['images'], where)
    _image_size_check(images.shape[1:], record['canonical_position_map'].shape,
                      where)
    out.update(images=images,
               landmarks=np.array(record['landmarks'], np.float32),
               extra_points=np.array(record['extra_points'], np.float32),
               poses=np.array(record['poses'], np.float32),
               canonical_position_map=np.array(
                   record['canonical_position_map'], np.float32),
               identity=np.int64(record['identity']))
  elif kind == 'clips':
    out.update(frames=_decode_images(record['frames'], where),
               landmarks=np.array(record['landmarks'], np.float32),
               label=np.int64(record['label']),
               corruption=np.int64(record['corruption']))
  else:
    raise ValueError(f'unknown record kind {kind!r}')
  out['index'] = np.int64(index)
  return out


@dataclasses.dataclass(frozen=True)
class Skipped:
  """Stands for a corrupted record in the stream until batching drops it."""
  index: int
  error: str


class RecordOrder(grain.transforms.MapWithIndex):
  """Stream position -> (epoch, record index) for one process.

  Position i of process p's stream is epoch e = i // m, slot k = i % m with
  m = n // P records per process and epoch; its record is the one at
  position k * P + p of epoch e's order (a permutation of range(n) from
  (seed, e), or the identity without shuffle).
  """

  def __init__(self, num_records: int, process_index: int,
               process_count: int, seed: int, shuffle: bool):
    self.num_records = num_records
    self.process_index = process_index
    self.process_count = process_count
    self.per_process = num_records // process_count
    self.seed = seed
    self.shuffle = shuffle
    self._cache: tuple[int, np.ndarray] | None = None

  def epoch_order(self, epoch: int) -> np.ndarray:
    """(n,) record indices in the order epoch `epoch` visits them."""
    cache = self._cache  # One read: the tuple is replaced, never mutated.
    if cache is not None and cache[0] == epoch:
      return cache[1]
    order = np.random.default_rng([self.seed, epoch]).permutation(
        self.num_records)
    self._cache = (epoch, order)
    return order

  def map_with_index(self, index: int, element: Any) -> tuple[int, int]:
    del element  # The slot, index % per_process.
    epoch, slot = divmod(int(index), self.per_process)
    position = slot * self.process_count + self.process_index
    if self.shuffle:
      return epoch, int(self.epoch_order(epoch)[position])
    return epoch, position

  def __getstate__(self) -> dict[str, Any]:
    state = self.__dict__.copy()
    state['_cache'] = None
    return state


class DecodeExample(grain.transforms.Map):
  """(epoch, record index) -> example dict, or `Skipped` if corrupted.

  Reads the record from `source`, decodes it (`decode_record`), augments it
  with an rng of (seed, epoch, index) if `augment_config` is given, and
  checks that every array has the shape in `expected_shapes` (the shapes of
  the dataset's first good record).
  """

  def __init__(self, source: Any, kind: str, seed: int,
               augment_config: augment_lib.AugmentConfig | None,
               expected_shapes: Mapping[str, tuple[int, ...]]):
    self.source = source
    self.kind = kind
    self.seed = seed
    self.augment_config = augment_config
    self.expected_shapes = dict(expected_shapes)

  def decode(self, epoch: int, index: int) -> dict[str, np.ndarray]:
    """The example of record `index` in `epoch`; RecordError if corrupted."""
    where = f'{self.kind} record {index}'
    data = self.source[index]
    rng = None
    if self.augment_config is not None:
      rng = np.random.default_rng([self.seed, _AUGMENT_STREAM, epoch, index])
    example = decode_record(data, self.kind, index, where, rng,
                            self.augment_config)
    if self.expected_shapes and set(example) != set(self.expected_shapes):
      raise records.RecordError(
          f'{where}: has fields {sorted(example)}, but the dataset\'s '
          f'records give {sorted(self.expected_shapes)}')
    for name, shape in self.expected_shapes.items():
      if example[name].shape != shape:
        raise records.RecordError(
            f'{where}: {name} has shape {example[name].shape}, but the '
            f"dataset's records give {shape}")
    return example

  def map(self, element: tuple[int, int]) -> dict[str, np.ndarray] | Skipped:
    epoch, index = element
    try:
      return self.decode(epoch, index)
    except records.RecordError as e:
      return Skipped(index, str(e))


def _warn_skipped(index: int, error: str, description: str) -> None:
  logging.warning('jaxface pipeline: skipping corrupted record %d of %s: %s',
                  index, description, error)


# ---------------------------------------------------------------- batching


def _stack(examples: Sequence[Mapping[str, np.ndarray]]
           ) -> dict[str, np.ndarray]:
  return {name: np.stack([e[name] for e in examples]) for name in examples[0]}


class SkipAndBatchIterDataset(grain.IterDataset):
  """Drops `Skipped` elements and batches the rest, noting what it dropped.

  Each batch is `_stack`ed examples plus `_SKIPPED_KEY`: (k,) int64 indices
  of the records skipped since the previous batch, and
  `_SKIPPED_ERRORS_KEY`: (k,) str, their errors. Skips after the last batch
  are logged here (with `description`), as no batch carries them.
  """

  def __init__(self, parent: grain.IterDataset, batch_size: int,
               drop_remainder: bool, description: str = ''):
    super().__init__(parent)
    self.batch_size = batch_size
    self.drop_remainder = drop_remainder
    self.description = description

  def __iter__(self) -> grain.DatasetIterator:
    return _SkipAndBatchIterator(self._parent.__iter__(), self.batch_size,
                                 self.drop_remainder, self.description)

  def __str__(self) -> str:
    return (f'SkipAndBatchIterDataset(batch_size={self.batch_size}, '
            f'drop_remainder={self.drop_remainder})')


class _SkipAndBatchIterator(grain.DatasetIterator):
  """Iterator of `SkipAndBatchIterDataset`; its state is its parent's, as it
  holds no elements between batches."""

  def __init__(self, parent: grain.DatasetIterator, batch_size: int,
               drop_remainder: bool, description: str):
    super().__init__(parent)
    self._batch_size = batch_size
    self._drop_remainder = drop_remainder
    self._description = description

  def __next__(self) -> dict[str, np.ndarray]:
    examples, skipped = [], []
    while len(examples) < self._batch_size:
      try:
        element = next(self._parent)
      except StopIteration:
        if self._drop_remainder or not examples:
          for s in skipped:
            _warn_skipped(s.index, s.error, self._description)
          raise
        break
      if isinstance(element, Skipped):
        skipped.append(element)
      else:
        examples.append(element)
    batch = _stack(examples)
    batch[_SKIPPED_KEY] = np.asarray([s.index for s in skipped], np.int64)
    batch[_SKIPPED_ERRORS_KEY] = np.asarray([s.error for s in skipped], str)
    return batch

  def get_state(self) -> dict[str, Any]:
    return self._parent.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state)

  def __str__(self) -> str:
    return f'_SkipAndBatchIterator(batch_size={self._batch_size})'


# ---------------------------------------------------------------- iterator


class PipelineIterator(grain.DatasetIterator):
  """Batches of one process, with a restorable state and skip counts.

  Attributes:
    config: the PipelineConfig.
    process_index, process_count: this process's share of the records.
    batch_size: examples per batch of this process.
    num_records: records in the (kind, split).
    batches: batches returned so far (restored with the state).
    skipped: skips of corrupted records so far, a record skipped in two
      epochs counting twice (restored with the state).
    skipped_indices: indices of the most recent skipped records (this
      iterator's own, at most 100, not restored).
    description: what is read, for messages.
  """

  def __init__(self, parent: grain.DatasetIterator, config: PipelineConfig,
               process_index: int, process_count: int, batch_size: int,
               num_records: int, description: str = ''):
    super().__init__(parent)
    self.config = config
    self.process_index = process_index
    self.process_count = process_count
    self.batch_size = batch_size
    self.num_records = num_records
    self.description = description
    self.batches = 0
    self.skipped = 0
    self.skipped_indices: collections.deque[int] = collections.deque(
        maxlen=_RECENT_SKIPS)
    self._skipped_records: set[int] = set()
    self._identity = _json_round_trip({
        'config': _config_dict(config),
        'process_index': process_index, 'process_count': process_count,
        'num_records': num_records})

  @property
  def skipped_records(self) -> int:
    """Distinct corrupted records skipped so far (restored with the state);
    each was logged once."""
    return len(self._skipped_records)

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._parent)
    indices = batch.pop(_SKIPPED_KEY).tolist()
    errors = batch.pop(_SKIPPED_ERRORS_KEY).tolist()
    for index, error in zip(indices, errors):
      if index not in self._skipped_records:
        self._skipped_records.add(index)
        _warn_skipped(index, error, self.description)
    self.skipped += len(indices)
    self.skipped_indices.extend(indices)
    self.batches += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    """A JSON-able dict: format, version, config, counters, grain state."""
    return {'format': STATE_FORMAT, 'version': STATE_VERSION,
            **self._identity, 'batches': self.batches,
            'skipped': self.skipped,
            'skipped_record_indices': sorted(self._skipped_records),
            'grain': self._parent.get_state()}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Restores `get_state()` of an iterator made with the same config.

    Raises:
      ValueError: if the state is not a jaxface pipeline state of this
        version, or was saved by an iterator with another config, process
        index or count, or number of records.
    """
    if isinstance(state, Mapping) and state.get('format') == (
        MIXED_STATE_FORMAT):
      raise ValueError('the iterator state was saved by a mixed run (with '
                       'config.mix: 2D records beside the main data); resume '
                       'with config.mix as it was saved')
    if (not isinstance(state, Mapping) or state.get('format') != STATE_FORMAT
        or state.get('version') != STATE_VERSION):
      raise ValueError(
          f'not a {STATE_FORMAT} iterator state of version {STATE_VERSION}: '
          f'format {getattr(state, "get", lambda _: None)("format")!r}, '
          f'version {getattr(state, "get", lambda _: None)("version")!r}')
    mismatched = _differences(self._identity,
                              {k: state.get(k) for k in self._identity})
    if mismatched:
      raise ValueError(
          'the iterator state was saved by a pipeline that differs from this '
          'one in ' + '; '.join(mismatched) + '; make the iterator with the '
          'saved config (same worker_count, process index and count) to '
          'restore it')
    self._parent.set_state(state['grain'])
    self.batches = int(state['batches'])
    self.skipped = int(state['skipped'])
    # States saved before the key existed: their records are logged again.
    self._skipped_records = {
        int(i) for i in state.get('skipped_record_indices', ())}
    self.skipped_indices.clear()

  def __str__(self) -> str:
    return (f'PipelineIterator({self.config.kind}/{self.config.split}, '
            f'batch_size={self.batch_size}, process {self.process_index} of '
            f'{self.process_count})')


MIX_PREFIX = 'mix_'


class MixedIterator:
  """Batches of two iterators side by side, one restorable state.

  Each batch is the first iterator's batch plus the second's with its keys
  prefixed `MIX_PREFIX` (e.g. synthetic 3D records plus real 2D records:
  image, ..., mix_image, mix_points2d, mix_points_visible, ...).
  """

  def __init__(self, main: PipelineIterator, mix: PipelineIterator):
    self.main, self.mix = main, mix

  @property
  def skipped_records(self) -> int:
    """Distinct corrupted records skipped so far, of both iterators."""
    return self.main.skipped_records + self.mix.skipped_records

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = dict(next(self.main))
    batch.update({MIX_PREFIX + k: v for k, v in next(self.mix).items()})
    return batch

  def get_state(self) -> dict[str, Any]:
    return {'format': MIXED_STATE_FORMAT, 'main': self.main.get_state(),
            'mix': self.mix.get_state()}

  def set_state(self, state: Mapping[str, Any]) -> None:
    if not isinstance(state, Mapping) or state.get('format') != (
        MIXED_STATE_FORMAT):
      raise ValueError('the iterator state was not saved by a mixed '
                       '(config.mix) run; resume with the config it was '
                       'saved with')
    self.main.set_state(state['main'])
    self.mix.set_state(state['mix'])

  def close(self) -> None:
    self.main.close()
    self.mix.close()


def _config_dict(config: PipelineConfig) -> dict[str, Any]:
  """The config fields a restored state must match: not buffer sizes, nor
  where the augmentation runs (`augment.on_device`: the same records in
  the same order with the same draws either way; states saved before the
  field existed lack it)."""
  d = dataclasses.asdict(config)
  for name in ('read_threads', 'read_buffer_size', 'worker_buffer_size'):
    d.pop(name)
  d['augment'].pop('on_device')
  return d


def _json_round_trip(value: Any) -> Any:
  return json.loads(json.dumps(value))


def _differences(want: Any, got: Any, path: str = '') -> list[str]:
  if isinstance(want, dict) and isinstance(got, dict):
    out = []
    for key in sorted(set(want) | set(got)):
      out += _differences(want.get(key), got.get(key),
                          f'{path}.{key}' if path else key)
    return out
  return [] if want == got else [f'{path} (saved {got!r}, here {want!r})']


def mark_absl_flags_parsed() -> None:
  """Marks absl flags parsed if no one has parsed them.

  grain reads its absl flags when it starts worker processes, which fails
  with UnparsedFlagAccessError in programs that do not run absl.app (tests,
  notebooks, scripts); flags keep their defaults.
  """
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _check_source(source: Any, decode: DecodeExample, description: str
                  ) -> dict[str, tuple[int, ...]]:
  """Decodes the first records; returns the first good one's shapes.

  Raises:
    shards.DatasetError: if none of the first `_CHECKED_RECORDS` records is
      a readable record of the kind.
  """
  errors = []
  for index in range(min(len(source), _CHECKED_RECORDS)):
    try:
      example = decode.decode(0, index)
    except records.RecordError as e:
      errors.append(str(e))
      continue
    return {name: value.shape for name, value in example.items()}
  raise shards.DatasetError(
      f'{description}: not jaxface {decode.kind} records: the first '
      f'{len(errors)} record(s) cannot be read as {decode.kind} records; '
      f'the first: {errors[0]}')


def make_iterator(directory_or_source: Any, config: PipelineConfig,
                  process_index: int | None = None,
                  process_count: int | None = None) -> PipelineIterator:
  """Builds the pipeline and returns its iterator (see the module docstring).

  Args:
    directory_or_source: a jaxface dataset directory, a
      `shards.RecordReader`, or any random-access source of serialised
      record bytes (`__len__`, `__getitem__(int) -> bytes`, picklable if
      worker_count > 0).
    config: what to read and how.
    process_index, process_count: this process's share of the records;
      default jax.process_index() and jax.process_count() (ignored, as
      0 of 1, if config.shard_by_process is False).

  Returns:
    A `PipelineIterator`: batches of numpy arrays, with get_state /
    set_state. Close it (`close()`) when done to stop worker processes.
    absl flags are marked parsed if nobody parsed them (grain's worker
    start-up reads its flags).

  Raises:
    shards.DatasetError: if the directory is not a jaxface dataset, has no
      such (kind, split), its shards are not ArrayRecord files, or its first
      records are not jaxface records of `config.kind`.
    ValueError: if the batch size does not divide by the process count, or
      there are fewer records than processes.
  """
  mark_absl_flags_parsed()
  if not config.shard_by_process:
    process_index, process_count = 0, 1
  if process_index is None:
    process_index = jax.process_index()
  if process_count is None:
    process_count = jax.process_count()
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} is not in [0, '
                     f'{process_count})')
  batch_size = per_process_batch_size(
      config.global_batch_size,
      process_count if config.shard_by_process else 1)
  source, description = _as_source(directory_or_source, config.kind,
                                   config.split)
  num_records = len(source)
  if num_records < process_count or num_records == 0:
    raise ValueError(f'{description}: {num_records} records cannot be '
                     f'shared by {process_count} process(es)')
  augment_config = config.augment if config.augments else None
  decode = DecodeExample(source, config.kind, config.seed, augment_config, {})
  expected = _check_source(source, decode, description)
  decode = DecodeExample(source, config.kind, config.seed, augment_config,
                         expected)

  order = RecordOrder(num_records, process_index, process_count, config.seed,
                      config.shuffle)
  ds = grain.MapDataset.range(order.per_process).repeat(config.num_epochs)
  ds = ds.map_with_index(order).map(decode)
  ds = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=config.read_threads,
      prefetch_buffer_size=config.read_buffer_size))
  ds = SkipAndBatchIterDataset(ds, batch_size, config.drops_remainder,
                               description)
  if config.worker_count > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=config.worker_count,
        per_worker_buffer_size=config.worker_buffer_size))
  return PipelineIterator(ds.__iter__(), config, process_index, process_count,
                          batch_size, num_records, description)


def to_global_arrays(batch: Mapping[str, Any], mesh: jax.sharding.Mesh,
                     data_axis: str | Sequence[str] = 'data'
                     ) -> dict[str, jax.Array]:
  """This process's batch -> global jax.Arrays sharded over the batch axis.

  Every array's leading (batch) axis is split over the mesh axis (or axes)
  `data_axis`, its other axes replicated; the global batch is the
  concatenation of the processes' batches in process order (as
  `jax.make_array_from_process_local_data` infers it), so it is
  process_count times this process's batch if the data axis spans the
  processes evenly.

  Args:
    batch: {name: (B, ...) numpy array} from a PipelineIterator.
    mesh: the device mesh (any axis types).
    data_axis: the mesh axis (or tuple of axes) the batch is split over.

  Returns:
    {name: jax.Array of shape (B * process_count, ...)} (nested dicts kept).
  """
  spec = jax.sharding.PartitionSpec(
      data_axis if isinstance(data_axis, str) else tuple(data_axis))
  sharding = jax.sharding.NamedSharding(mesh, spec)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      dict(batch))

