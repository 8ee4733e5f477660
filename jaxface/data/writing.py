"""Writing records in parallel into the shards of a dataset directory.

Shared by the synthetic generator and the dataset converters: worker
processes make and serialise records; the parent writes them in index order
into atomically renamed shards (`jaxface.data.shards.ShardWriter`), so the
output does not depend on the number of workers, a crash never leaves a
half-written shard under a final name, and samples that cannot be made are
skipped and listed instead of ending the run.

A writer works inside `dataset_output`: one writer per folder, and a folder
holds a whole dataset (dataset.json, written last, and its shards) or none.
A converter's run is summed up in a `Conversion` (`run_splits`, `finish`,
`format_summary`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import multiprocessing
import os
import re
import signal
import threading
from typing import Any, Callable, Iterator, Sequence

import tqdm

from jaxface import files
from jaxface.data import records
from jaxface.data import shards

CLOSER_THREAD_NAME = 'jaxface-shard-closer'  # write_split's closing thread

# make(item) -> fields of one record, or raises for a sample to skip.
MakeFn = Callable[[Any], dict]


@dataclasses.dataclass
class SplitResult:
  """What was written for one (kind, split)."""
  kind: str
  split: str
  count: int
  shards: list[str]
  skipped: list[tuple[Any, str]]  # (item, reason)


class _Worker:
  """Picklable wrapper: make + serialise one item; never raises."""

  def __init__(self, kind: str, make: MakeFn, skip_errors: bool):
    self.kind, self.make, self.skip_errors = kind, make, skip_errors

  def __call__(self, item):
    try:
      return item, records.serialize(self.kind, self.make(item)), None
    except Exception as e:  # pylint: disable=broad-except
      if not self.skip_errors:
        raise
      return item, None, f'{type(e).__name__}: {e}'


# The smallest crop / position map side any writer accepts.
MIN_RESOLUTION = 16
_THREAD_VARS = ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')


def _init_worker():
  # Ctrl-C is the parent's to handle (it stops the pool); a worker would
  # print a traceback. Workers spawned later than make_pool need this.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  # One thread per worker process: the workers are the parallelism.
  import cv2  # pylint: disable=g-import-not-at-top
  cv2.setNumThreads(1)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
  """Ignores SIGINT in the block (main thread only: elsewhere a no-op), so
  that processes spawned in it start ignoring it: Python installs its
  KeyboardInterrupt handler only where SIGINT is not ignored, so a Ctrl-C
  while a worker imports cannot give a traceback either."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)


def make_pool(workers: int) -> multiprocessing.pool.Pool:
  """A pool of `workers` spawned processes, each limited to one thread.

  BLAS thread limits only take effect if set before numpy loads, so they
  go into the environment the workers are spawned with. (Without them each
  worker's OpenBLAS spins a thread per core and two workers on two cores run
  three times slower than one.) The workers ignore SIGINT: Ctrl-C stops
  the parent, which terminates the pool.
  """
  saved = {k: os.environ.get(k) for k in _THREAD_VARS}
  os.environ.update({k: '1' for k in _THREAD_VARS})
  try:
    with _sigint_ignored():
      return multiprocessing.get_context('spawn').Pool(
          workers, initializer=_init_worker)
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


def write_splits(out_dir: str, plan: Sequence[tuple[str, str, Sequence[Any],
                                                   MakeFn]],
                 *, workers: int = 1, shard_size: int = 256,
                 skip_errors: bool = False, progress: bool = True
                 ) -> list[SplitResult]:
  """`write_split` for each (kind, split, items, make) of `plan`, in
  order, sharing one pool of `workers` processes. Call it inside
  `dataset_output`, which removes what it wrote if it raises."""
  results = []
  pool = make_pool(workers) if workers > 1 else None
  try:
    for kind, split, items, make in plan:
      results.append(write_split(
          out_dir, kind, split, items, make, shard_size=shard_size,
          workers=workers, skip_errors=skip_errors, progress=progress,
          pool=pool))
  finally:
    if pool is not None:
      pool.terminate()
      pool.join()
  return results


def write_split(out_dir: str, kind: str, split: str, items: Sequence[Any],
                make: MakeFn, *, shard_size: int = 256, workers: int = 1,
                skip_errors: bool = False, progress: bool = True,
                pool: multiprocessing.pool.Pool | None = None) -> SplitResult:
  """Makes one record per item and writes them as shards of `out_dir`.

  Args:
    out_dir: dataset directory (must exist; write inside `dataset_output`).
    kind, split: which records these are.
    items: what `make` takes, one per record, in record order.
    make: item -> record fields (must be picklable when workers > 1).
    shard_size: records per shard (the last shards may hold fewer).
    workers: processes; 1 makes records in this process.
    skip_errors: list samples whose `make` raises instead of stopping.
    progress: show a progress bar.
    pool: an existing pool to use instead of starting one.

  Returns:
    A SplitResult. Shard names have the final shard count in them; a split
    with no records has no shards.
  """
  num_shards = max(1, -(-len(items) // shard_size))
  worker = _Worker(kind, make, skip_errors)
  own_pool = None
  if pool is None and workers > 1:
    own_pool = pool = make_pool(workers)
  try:
    if pool is None:
      results = map(worker, items)
    else:
      results = pool.imap(worker, items, chunksize=4)
    bar = tqdm.tqdm(total=len(items), desc=f'{kind}/{split}', unit='rec',
                    disable=not progress, leave=False)
    temp_names, skipped, count = [], [], 0
    writer = None
    # A full shard is closed (flushed, fsynced, renamed) by a thread while
    # the next one fills: the fsync waits on the disk, not the CPU.
    closer = concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix=CLOSER_THREAD_NAME)
    closing = pending = None  # the last close handed to it, and its shard
    try:
      # Its thread starts before any shard is handed over: a Ctrl-C while
      # `Thread.start` waits leaves a running thread that `shutdown` does
      # not wait for, which could publish a shard after the clean-up below.
      closer.submit(int).result()
      for position, (item, data, error) in enumerate(results):
        bar.update(1)
        if error is not None:
          skipped.append((item, error))
          continue
        shard = min(position // shard_size, num_shards - 1)
        if writer is None or shard >= len(temp_names):
          if writer is not None:
            if closing is not None:
              closing.result()  # raises if the previous close failed
            pending, writer = writer, None
            closing = closer.submit(pending.close)
          # Temporary names; renamed below once the final count is known.
          name = _partial_name(kind, split, shard)
          writer = shards.ShardWriter(os.path.join(out_dir, name))
          temp_names.append(name)
        writer.write(data)
        count += 1
      if writer is not None:
        writer.close()
      if closing is not None:
        closing.result()
    except BaseException as raised:
      if writer is not None:
        writer.abort()
      closer.shutdown()  # every close handed over has ended
      if pending is not None:
        pending.abort()  # a no-op unless its close never ran
      failed = closing.exception() if closing is not None else None
      if failed is not None and failed is not raised:
        raised.add_note(f'closing the shard before also failed: {failed!r}')
      # A failed close removes its own file; a finished one is removed here.
      for name in temp_names:
        files.remove_if_present(os.path.join(out_dir, name))
      raise
    finally:
      closer.shutdown()
      bar.close()
  finally:
    if own_pool is not None:
      own_pool.terminate()
      own_pool.join()
  final = []
  for index, name in enumerate(temp_names):
    target = shards.shard_name(kind, split, index, len(temp_names))
    os.replace(os.path.join(out_dir, name), os.path.join(out_dir, target))
    final.append(target)
  return SplitResult(kind, split, count, final, skipped)


class Interrupted(InterruptedError):
  """Ctrl-C (SIGINT) stopped a dataset writer; what it wrote is removed."""


@contextlib.contextmanager
def dataset_output(out_dir: str, overwrite: bool) -> Iterator[None]:
  """Makes the block the one writer of the dataset folder `out_dir`.

  For the whole block it holds `files.FolderLock(out_dir, 'dataset')`. On
  entry it refuses a folder that holds a dataset (a dataset.json) unless
  `overwrite`, touching nothing; with `overwrite` it removes that dataset
  (dataset.json first, then the shards it lists), so the folder is never a
  mix of old and new data. Then it removes what interrupted writers left
  (`_remove_unfinished`). Shards without a dataset.json are such leftovers,
  never a dataset (dataset.json is written last), so writing into a folder
  that holds only them needs no `overwrite`: running the same command
  again after an interruption just works.

  If the block raises, what it wrote is removed too (all or nothing), and
  Ctrl-C (KeyboardInterrupt) becomes `Interrupted`, a one-line message.
  With `overwrite`, the old dataset is gone from the start: a run that
  fails leaves neither the old dataset nor a new one.

  Raises:
    files.FolderInUseError: another writer holds the folder (the message
      names it); nothing is touched.
    FileExistsError: `out_dir` holds a dataset and not `overwrite`.
    NotADirectoryError: `out_dir` is a file.
    Interrupted: Ctrl-C in the block.
  """
  with files.FolderLock(out_dir, 'dataset'):
    has_dataset = os.path.exists(os.path.join(out_dir, shards.DATASET_INFO))
    if has_dataset and not overwrite:
      raise FileExistsError(
          f'{out_dir} already holds a dataset ({shards.DATASET_INFO}); '
          'pass --overwrite to replace it, or choose another --out')
    try:
      if has_dataset:
        _remove_dataset(out_dir)
      _remove_unfinished(out_dir)
      yield
    except KeyboardInterrupt:
      complete = _remove_unfinished(out_dir)
      raise Interrupted(
          f'interrupted after {out_dir} was complete' if complete else
          f'interrupted: nothing of {out_dir} is usable; run the same '
          'command again') from None
    except BaseException:
      _remove_unfinished(out_dir)
      raise


def _partial_name(kind: str, split: str, shard: int) -> str:
  """The hidden name of a shard of `write_split` before its final name."""
  return f'.{kind}-{split}.partial-{shard:05d}'


_KIND = '(?:' + '|'.join(records.KINDS) + ')'
_PARTIAL = _KIND + r'-[^-./\\]+\.partial-\d{5}'
_SHARD = _KIND + r'-[^-./\\]+\.array_record-\d{5}-of-\d{5}'  # shard_name's
# What only an unfinished writer leaves: `_partial_name`s, and the temporary
# files of ShardWriter and `files.write_atomic` (mkstemp's: '.', the target's
# name, maybe '.', 8 random characters, '.tmp').
_UNFINISHED = re.compile(
    rf'\.{_PARTIAL}|\.(?:\.{_PARTIAL}|{_SHARD}|'
    rf'{re.escape(shards.DATASET_INFO)})\.?[a-z0-9_]{{8}}\.tmp')
_SHARD_NAME = re.compile(_SHARD)


def _remove_unfinished(out_dir: str) -> bool:
  """Removes what interrupted writers left in `out_dir`; returns whether it
  holds a (whole) dataset.

  That is: the hidden partial shards and temporary files that jaxface's
  writers name, and, when there is no dataset.json, the shards (which no
  dataset lists). Other files are never touched. Call it only as the
  folder's one writer (`dataset_output`).
  """
  complete = os.path.exists(os.path.join(out_dir, shards.DATASET_INFO))
  for name in os.listdir(out_dir):
    path = os.path.join(out_dir, name)
    if ((_UNFINISHED.fullmatch(name)
         or (not complete and _SHARD_NAME.fullmatch(name)))
        and not os.path.isdir(path)):
      files.remove_if_present(path)
  return complete


def _remove_dataset(out_dir: str) -> None:
  """Removes out_dir's dataset.json, then the shards it lists."""
  info_path = os.path.join(out_dir, shards.DATASET_INFO)
  # The listing is read without validation: a dataset with a shard deleted
  # by hand is not valid, but its other shards must still go.
  names = []
  try:
    with open(info_path, encoding='utf-8') as f:
      old = json.load(f)
    for splits in old.get('kinds', {}).values():
      for entry in splits.values():
        names.extend(n for n in entry.get('shards', [])
                     if isinstance(n, str) and os.path.basename(n) == n)
  except (OSError, ValueError, AttributeError):
    pass  # An unreadable listing: nothing known to remove.
  os.remove(info_path)
  for name in names:
    files.remove_if_present(os.path.join(out_dir, name))


def dataset_info(results: Sequence[SplitResult], **extra) -> dict:
  """The dataset.json dict for the written splits (plus `extra` keys)."""
  kinds: dict[str, dict] = {}
  for r in results:
    kinds.setdefault(r.kind, {})[r.split] = {'count': r.count,
                                             'shards': r.shards}
  return {'format': shards.FORMAT, 'schema_version': records.SCHEMA_VERSION,
          **extra, 'kinds': kinds}


# ------------------------------------------------ converter runs


@dataclasses.dataclass
class Conversion:
  """What a converter run wrote and skipped.

  Attributes:
    source: the dataset's name ("300W_LP", "AFLW2000").
    out_dir: the output folder.
    results: one `SplitResult` per (kind, split) written.
    info: the dataset.json written, or None when nothing usable was made
      (then no dataset.json is written).
    notes: lines for the summary (e.g. faces without views on both sides).
    root: the input folder, to shorten the listed paths.
  """
  source: str
  out_dir: str
  results: list
  info: dict | None
  notes: list[str]
  root: str = ''

  @property
  def total(self) -> int:
    return sum(r.count for r in self.results)

  @property
  def ok(self) -> bool:
    """True if any record was written."""
    return self.total > 0

  def describe(self, item: Any) -> str:
    """An item of write_split as a short string (path relative to root)."""
    if isinstance(item, tuple) and item and isinstance(item[0], str):
      return item[0]
    text = os.fspath(item) if isinstance(item, (str, os.PathLike)) else str(
        item)
    if self.root and isinstance(item, str):
      rel = os.path.relpath(text, self.root)
      if not rel.startswith('..'):
        return rel
    return text

  def skipped(self) -> list[tuple[str, str, str, str]]:
    """(kind, split, item, reason) of every skipped sample."""
    return [(r.kind, r.split, self.describe(item), reason)
            for r in self.results for item, reason in r.skipped]


def format_summary(conversion: Conversion, listed: int = 20) -> str:
  """The summary a converter prints: counts, notes, the first skips."""
  lines = [f'{conversion.source} -> {conversion.out_dir}']
  for r in conversion.results:
    lines.append(f'  {r.kind}/{r.split}: {r.count} records in '
                 f'{len(r.shards)} shard(s), {len(r.skipped)} skipped')
  lines.extend(f'  {note}' for note in conversion.notes)
  skipped = conversion.skipped()
  if skipped:
    lines.append(f'skipped ({len(skipped)}):')
    for kind, split, item, reason in skipped[:listed]:
      lines.append(f'  {kind}/{split} {item}: {reason}')
    if len(skipped) > listed:
      lines.append(f'  ... and {len(skipped) - listed} more (all are listed '
                   'in dataset.json, "skipped_samples")')
  if conversion.ok:
    lines.append(f'wrote {conversion.total} records')
  else:
    lines.append('nothing usable was converted: no records, no dataset.json')
  return '\n'.join(lines)


def validate_options(resolution: int, workers: int, shard_size: int,
                     limit: int | None) -> None:
  if resolution < MIN_RESOLUTION:
    raise ValueError(f'--resolution must be at least {MIN_RESOLUTION}, got '
                     f'{resolution}')
  if workers < 1 or shard_size < 1:
    raise ValueError(f'--workers and --shard-size must be >= 1, got '
                     f'{workers} and {shard_size}')
  if limit is not None and limit < 1:
    raise ValueError(f'--limit must be >= 1, got {limit}')


def run_splits(out_dir: str, plan: Sequence[tuple[str, str, list, Any]],
               workers: int, shard_size: int, progress: bool) -> list:
  """Writes (kind, split, items, make) in order, skipping the samples that
  cannot be converted (`write_splits`); entries without items
  write nothing."""
  plan = [entry for entry in plan if entry[2]]
  return write_splits(out_dir, plan, workers=workers, shard_size=shard_size,
                      skip_errors=True, progress=progress)


def finish(conversion: Conversion, **info_keys) -> Conversion:
  """Writes dataset.json if any record was written; returns `conversion`."""
  if not conversion.ok:
    return conversion
  skipped = conversion.skipped()
  counts: dict[str, dict[str, int]] = {}
  for r in conversion.results:
    counts.setdefault(r.kind, {})[r.split] = len(r.skipped)
  info = dataset_info(
      conversion.results, source=conversion.source, **info_keys,
      skipped=counts,
      skipped_samples=[{'kind': k, 'split': s, 'item': i, 'reason': r}
                       for k, s, i, r in skipped])
  shards.write_dataset_info(conversion.out_dir, info)
  conversion.info = info
  return conversion
