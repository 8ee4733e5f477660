"""ArrayRecord shards of serialised records, and the `dataset.json` that lists them.

A dataset directory holds

  dataset.json                                   what is in the directory
  recon-train.array_record-00000-of-00004        ArrayRecord shards of
  ...                                            `records.serialize` bytes

and dataset.json is

  {"format": "jaxface-records", "schema_version": 1, "source": str,
   "seed": int or null, "resolution": int,
   "kinds": {kind: {split: {"count": int, "shards": [file names]}}}, ...}

with other keys allowed (and kept). Shards and dataset.json are written to
hidden temporary files and renamed into place only when complete, so a reader
never sees a half-written file under a final name.
"""

from __future__ import annotations

import bisect
import itertools
import json
import operator
import os
import threading
from typing import Any, Iterator

from array_record.python import array_record_module
import numpy as np

from jaxface import files
from jaxface.data import records

DATASET_INFO = "dataset.json"
FORMAT = "jaxface-records"

# group_size:1 puts every record in its own chunk, so grain's random access
# reads (and decompresses) one record, not a group. Snappy rather than the
# default zstd:3: on ~0.8 MB recon records (256x256x3 float32 position map
# plus a JPEG), measured on this machine with readahead off:
#   zero-background maps:   zstd:3 58% of raw size, write 2.8 ms, read 0.93 ms
#                           snappy 68%,             write 0.4 ms, read 0.42 ms
#                           uncompressed 100%,      write 0.6 ms, read 0.35 ms
#   dense maps:             zstd:3 90%, read 1.2 ms; snappy 100%, read 0.36 ms
# zstd's extra 10 points of size cost ~0.5-0.8 ms of CPU per record on every
# epoch (as much as decoding the JPEG), while snappy still removes the zero
# background of position maps almost for free.
WRITER_OPTIONS = "group_size:1,snappy"
# Random access: no readahead (as grain's ArrayRecordDataSource).
_RANDOM_ACCESS_OPTIONS = "readahead_buffer_size:0"


class DatasetError(ValueError):
  """A dataset directory or its dataset.json is missing or inconsistent."""


def shard_name(kind: str, split: str, index: int, count: int) -> str:
  """File name of shard `index` of `count` of one (kind, split)."""
  if kind not in records.KINDS:
    raise ValueError(f"unknown record kind {kind!r}; expected one of "
                     f"{records.KINDS}")
  if not split or not isinstance(split, str) or any(
      c in split for c in "-./\\"):
    raise ValueError(f"split must be a non-empty name without '-', '.' or "
                     f"path separators, got {split!r}")
  if not 0 <= index < count:
    raise ValueError(f"shard index {index} is not in [0, {count})")
  return f"{kind}-{split}.array_record-{index:05d}-of-{count:05d}"


class ShardWriter:
  """Writes serialised records to one ArrayRecord shard, atomically.

  Records go to a hidden temporary file in the shard's directory, which is
  renamed to `path` only by a clean `close()` (or a `with` block that exits
  without an exception); on an exception, or `abort()`, the temporary file is
  deleted. An existing file at `path` is replaced.

    with ShardWriter(os.path.join(directory, shard_name(...))) as writer:
      for fields in ...:
        writer.write(records.serialize("recon", fields))
  """

  def __init__(self, path: str | os.PathLike[str], *,
               options: str = WRITER_OPTIONS):
    self._path = os.fspath(path)
    self._count = 0
    self._done = False
    self._temp = files.hidden_temp(self._path)
    try:
      self._writer = array_record_module.ArrayRecordWriter(self._temp, options)
      if not self._writer.ok():
        self._writer.close()  # Raises with the reason.
        raise OSError(f"cannot write ArrayRecord file {self._temp}")
    except BaseException:
      files.remove_if_present(self._temp)
      raise

  @property
  def path(self) -> str:
    """The final path of the shard."""
    return self._path

  @property
  def count(self) -> int:
    """Number of records written so far."""
    return self._count

  def write(self, record: bytes) -> None:
    """Appends one serialised record."""
    if self._done:
      raise ValueError(f"ShardWriter for {self._path} is closed")
    if not isinstance(record, bytes):
      raise TypeError(f"records must be bytes (see records.serialize), got "
                      f"{type(record).__name__}")
    self._writer.write(record)
    self._count += 1

  def close(self) -> str:
    """Finishes the shard and moves it to its final path; returns the path."""
    if self._done:
      return self._path
    self._done = True
    try:
      self._writer.close()
      files.publish(self._temp, self._path)
    except BaseException:
      files.remove_if_present(self._temp)
      raise
    return self._path

  def abort(self) -> None:
    """Discards the records written so far; nothing appears at `path`."""
    if self._done:
      return
    self._done = True
    try:
      self._writer.close()
    except RuntimeError:
      pass  # The file is deleted anyway.
    finally:
      files.remove_if_present(self._temp)

  def __enter__(self) -> ShardWriter:
    return self

  def __exit__(self, exc_type, exc_value, traceback) -> None:
    if exc_type is None:
      self.close()
    else:
      self.abort()

  def __repr__(self) -> str:
    state = "closed" if self._done else "open"
    return f"ShardWriter({self._path!r}, count={self._count}, {state})"


def _json_default(value: Any) -> Any:
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.floating):
    return float(value)
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_dataset_info(directory: str | os.PathLike[str],
                       info: dict[str, Any]) -> str:
  """Writes `directory`/dataset.json atomically; returns its path.

  "format" and "schema_version" default to this jaxface's; all other keys are
  written as given.
  """
  info = {"format": FORMAT, "schema_version": records.SCHEMA_VERSION, **info}
  return files.write_json(os.path.join(os.fspath(directory), DATASET_INFO),
                          info, default=_json_default)


def read_dataset_info(directory: str | os.PathLike[str]) -> dict[str, Any]:
  """Reads and checks `directory`/dataset.json.

  Returns:
    The parsed dataset.json, all keys kept.

  Raises:
    DatasetError: if the directory or dataset.json is missing, the JSON is
      invalid or not a jaxface dataset description, its schema version is
      not `records.SCHEMA_VERSION`, or a listed shard is missing.
  """
  directory = os.fspath(directory)
  if not os.path.isdir(directory):
    raise DatasetError(f"dataset directory {directory} does not exist (or is "
                       "not a directory)")
  path = os.path.join(directory, DATASET_INFO)
  if not os.path.isfile(path):
    raise DatasetError(
        f"{directory} is not a jaxface dataset: no {DATASET_INFO}; make one "
        "with `jaxface data synth` or a converter")
  try:
    with open(path, encoding="utf-8") as f:
      info = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DatasetError(f"{path}: invalid JSON: {e}") from e
  if not isinstance(info, dict):
    raise DatasetError(f"{path}: expected a JSON object, got "
                       f"{type(info).__name__}")
  if info.get("format") != FORMAT:
    raise DatasetError(f"{path}: format is {info.get('format')!r}, expected "
                       f"{FORMAT!r}; not a jaxface records dataset")
  version = info.get("schema_version")
  if version != records.SCHEMA_VERSION or isinstance(version, bool):
    raise DatasetError(
        f"{path}: dataset has schema version {version!r}, but this jaxface "
        f"reads schema version {records.SCHEMA_VERSION}; regenerate the "
        "dataset with this jaxface (`jaxface data synth` or a converter) or "
        f"convert it to schema version {records.SCHEMA_VERSION}")
  kinds = info.get("kinds")
  if not isinstance(kinds, dict):
    raise DatasetError(f"{path}: 'kinds' must be an object "
                       "{kind: {split: {count, shards}}}, got "
                       f"{type(kinds).__name__}")
  for kind, splits in kinds.items():
    if kind not in records.KINDS:
      raise DatasetError(f"{path}: unknown record kind {kind!r}; this "
                         f"jaxface reads {records.KINDS}")
    if not isinstance(splits, dict):
      raise DatasetError(f"{path}: kinds.{kind} must be an object "
                         "{split: {count, shards}}")
    for split, entry in splits.items():
      where = f"{path}: kinds.{kind}.{split}"
      if (not isinstance(entry, dict)
          or not isinstance(entry.get("count"), int)
          or isinstance(entry.get("count"), bool) or entry["count"] < 0
          or not isinstance(entry.get("shards"), list)):
        raise DatasetError(f"{where} must be {{\"count\": int >= 0, "
                           f"\"shards\": [file names]}}, got {entry!r}")
      for name in entry["shards"]:
        if (not isinstance(name, str) or not name
            or os.path.basename(name) != name or name in (".", "..")):
          raise DatasetError(f"{where}: shard {name!r} is not a file name in "
                             "the dataset directory")
        if not os.path.isfile(os.path.join(directory, name)):
          raise DatasetError(f"{where}: shard {name} is listed in "
                             f"{DATASET_INFO} but missing from {directory}")
  return info


def _open_shard(path: str, options: str
                ) -> array_record_module.ArrayRecordReader:
  """Opens an ArrayRecord file; DatasetError naming it if it is unreadable."""
  reader = array_record_module.ArrayRecordReader(
      path, options, file_reader_buffer_size=32768)
  if not reader.ok():
    detail = "not a readable ArrayRecord file"
    try:
      reader.close()  # Raises with the reason.
    except RuntimeError as e:
      detail = str(e)
    raise DatasetError(f"{os.path.basename(path)}: cannot open ArrayRecord "
                       f"shard: {detail}")
  return reader


def _shards_of(info: dict[str, Any], directory: str, kind: str,
               split: str) -> tuple[list[str], int]:
  """Returns the shard names and listed count of (kind, split)."""
  kinds = info["kinds"]
  if kind not in kinds:
    raise DatasetError(
        f"dataset {directory} has no {kind!r} records; it has "
        f"{_describe(kinds) or 'no records at all'}")
  if split not in kinds[kind]:
    raise DatasetError(
        f"dataset {directory} has no {split!r} split of {kind} records; it "
        f"has {_describe(kinds)}")
  entry = kinds[kind][split]
  return list(entry["shards"]), entry["count"]


def _describe(kinds: dict[str, Any]) -> str:
  return "; ".join(
      f"{kind}: " + ", ".join(f"{split} ({entry['count']})"
                              for split, entry in splits.items())
      for kind, splits in kinds.items())


class RecordReader:
  """Random access to the records of one (kind, split) of a dataset.

  Shards are opened lazily, one ArrayRecordReader each, and a reader is
  picklable (open shards are not pickled), so it can serve as a grain data
  source in worker processes. Records come back deserialised and validated.

  Attributes:
    directory: the dataset directory.
    kind, split: what is read.
    info: the dataset.json.
    shards: shard file names, in index order.
  """

  def __init__(self, directory: str | os.PathLike[str], kind: str,
               split: str):
    self.directory = os.fspath(directory)
    self.kind = kind
    self.split = split
    if kind not in records.KINDS:
      raise DatasetError(f"unknown record kind {kind!r}; expected one of "
                         f"{records.KINDS}")
    self.info = read_dataset_info(self.directory)
    self.shards, listed = _shards_of(self.info, self.directory, kind, split)
    counts = []
    for name in self.shards:
      reader = _open_shard(os.path.join(self.directory, name),
                           _RANDOM_ACCESS_OPTIONS)
      counts.append(reader.num_records())
      reader.close()
    if sum(counts) != listed:
      raise DatasetError(
          f"{self.directory}: {DATASET_INFO} lists {listed} {kind}/{split} "
          f"records, but its shards hold {sum(counts)} ({counts}); the "
          "dataset is incomplete or dataset.json is stale")
    # _ends[s] is one past the last dataset index held by shard s.
    self._ends = list(itertools.accumulate(counts))
    self._readers: list[Any] = [None] * len(self.shards)
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return self._ends[-1] if self._ends else 0

  def _locate(self, index: Any) -> tuple[int, int]:
    """Maps a dataset index to (shard, index in that shard)."""
    i = operator.index(index)
    n = len(self)
    if i < 0:
      i += n
    if not 0 <= i < n:
      raise IndexError(f"record index {index} out of range for {n} "
                       f"{self.kind}/{self.split} records")
    shard = bisect.bisect_right(self._ends, i)
    return shard, i - (self._ends[shard - 1] if shard else 0)

  def _reader(self, shard: int) -> array_record_module.ArrayRecordReader:
    reader = self._readers[shard]
    if reader is None:
      with self._lock:
        reader = self._readers[shard]
        if reader is None:
          reader = _open_shard(os.path.join(self.directory,
                                            self.shards[shard]),
                               _RANDOM_ACCESS_OPTIONS)
          self._readers[shard] = reader
    return reader

  def _read(self, shard: int, position: int) -> bytes:
    try:
      return self._reader(shard).read([position])[0]
    except RuntimeError as e:
      raise records.RecordError(
          f"{self.shards[shard]} record {position}: cannot read: {e}") from e

  def read_bytes(self, index: int) -> bytes:
    """The serialised record at `index` (negative counts from the end)."""
    return self._read(*self._locate(index))

  def __getitem__(self, index: int) -> dict[str, Any]:
    """The record at `index`, deserialised and validated.

    Raises:
      IndexError: if index is out of range.
      RecordError: naming the shard file and the index in it, if the record
        cannot be read or is invalid.
    """
    shard, position = self._locate(index)
    return records.deserialize(
        self._read(shard, position), kind=self.kind,
        where=f"{self.shards[shard]} record {position}")

  def __iter__(self) -> Iterator[dict[str, Any]]:
    for i in range(len(self)):
      yield self[i]

  def close(self) -> None:
    """Closes the open shards (they reopen on the next read)."""
    with self._lock:
      readers, self._readers = self._readers, [None] * len(self.shards)
    for reader in readers:
      if reader is not None:
        reader.close()

  def __enter__(self) -> RecordReader:
    return self

  def __exit__(self, exc_type, exc_value, traceback) -> None:
    self.close()

  def __getstate__(self) -> dict[str, Any]:
    state = self.__dict__.copy()
    del state["_readers"], state["_lock"]
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._readers = [None] * len(self.shards)
    self._lock = threading.Lock()

  def __repr__(self) -> str:
    return (f"RecordReader({self.directory!r}, {self.kind!r}, "
            f"{self.split!r}, {len(self)} records in {len(self.shards)} "
            "shards)")


def first_record(directory: str | os.PathLike[str], kind: str, split: str,
                 tries: int = 8) -> dict[str, Any] | None:
  """The first readable record of a (kind, split) among its first `tries`
  (None if none of them reads, or the split is empty), e.g. to tell what a
  dataset's records hold before reading them all.

  Raises:
    DatasetError: no such dataset, kind or split.
  """
  with RecordReader(directory, kind, split) as reader:
    for index in range(min(tries, len(reader))):
      try:
        return reader[index]
      except records.RecordError:
        continue
  return None


def check(directory: str | os.PathLike[str], kind: str | None = None,
          split: str | None = None, limit: int | None = None
          ) -> dict[str, Any]:
  """Reads and validates every record of a dataset.

  Corrupted shards and records are reported, never raised.

  Args:
    directory: the dataset directory.
    kind: only check this kind (default: all in dataset.json).
    split: only check this split (default: all).
    limit: check at most this many records of each (kind, split).

  Returns:
    {"directory": str,
     "counts": {kind: {split: {"listed": records in dataset.json,
                               "records": records in the shards,
                               "checked": int, "bad": int}}},
     "problems": [{"kind", "split", "index", "shard", "shard_index",
                   "error"}],
     "ok": bool}
    where "index" is the record's index in (kind, split) (as RecordReader
    takes it), or None for a problem with a whole shard or the count, and
    "shard_index" its index in the shard file. An unreadable shard counts as
    holding no records when indexing the shards after it.

  Raises:
    DatasetError: if dataset.json is missing or invalid, or `kind` / `split`
      is not in it.
  """
  directory = os.fspath(directory)
  info = read_dataset_info(directory)
  kinds = info["kinds"]
  if limit is not None and limit < 0:
    raise ValueError(f"limit must be >= 0, got {limit}")
  if kind is not None and kind not in kinds:
    raise DatasetError(f"dataset {directory} has no {kind!r} records; it has "
                       f"{_describe(kinds) or 'no records at all'}")
  if split is not None and not any(
      split in splits for k, splits in kinds.items() if kind in (None, k)):
    raise DatasetError(
        f"dataset {directory} has no {split!r} split"
        + (f" of {kind} records" if kind else "")
        + f"; it has {_describe(kinds) or 'no records at all'}")
  counts: dict[str, dict[str, dict[str, int]]] = {}
  problems: list[dict[str, Any]] = []
  for k, splits in kinds.items():
    if kind is not None and k != kind:
      continue
    for s, entry in splits.items():
      if split is not None and s != split:
        continue
      stats = {"listed": entry["count"], "records": 0, "checked": 0, "bad": 0}
      counts.setdefault(k, {})[s] = stats
      _check_split(directory, k, s, entry["shards"], limit, stats, problems)
      if stats["records"] != stats["listed"]:
        problems.append({
            "kind": k, "split": s, "index": None, "shard": None,
            "shard_index": None,
            "error": f"{DATASET_INFO} lists {stats['listed']} records but "
                     f"the shards hold {stats['records']}"})
  return {"directory": directory, "counts": counts, "problems": problems,
          "ok": not problems}


def _check_split(directory: str, kind: str, split: str, shards: list[str],
                 limit: int | None, stats: dict[str, int],
                 problems: list[dict[str, Any]]) -> None:
  """Checks the shards of one (kind, split), updating stats and problems."""

  def problem(index, shard, shard_index, error):
    problems.append({"kind": kind, "split": split, "index": index,
                     "shard": shard, "shard_index": shard_index,
                     "error": error})

  start = 0  # Dataset index of the shard's first record.
  for name in shards:
    try:
      reader = _open_shard(os.path.join(directory, name), "")
    except DatasetError as e:
      problem(None, name, None, str(e))
      continue
    try:
      n = reader.num_records()
      stats["records"] += n
      for j in range(n):
        if limit is not None and stats["checked"] >= limit:
          break
        stats["checked"] += 1
        where = f"{name} record {j}"
        try:
          records.deserialize(reader.read([j])[0], kind=kind, where=where)
        except records.RecordError as e:
          stats["bad"] += 1
          problem(start + j, name, j, str(e))
        except RuntimeError as e:  # ArrayRecord could not read the chunk.
          stats["bad"] += 1
          problem(start + j, name, j, f"{where}: cannot read: {e}")
      start += n
    finally:
      reader.close()
