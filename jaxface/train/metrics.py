"""Metric logging: a JSON-lines file and TensorBoard event files.

    writer = metrics.MetricWriter(workdir)
    writer.write_scalars(step, {'loss': loss, 'lr': lr})
    ...
    writer.close()

`MetricWriter` writes each `write_scalars` call to

  workdir/metrics.jsonl  one JSON object per line,
                         {"step": int, "time": unix seconds, name: value, ...},
                         appended, flushed and fsynced at every write, so a
                         crash loses nothing that was written. Non-finite
                         values are written as the strings "nan", "inf" and
                         "-inf" (JSON has no such numbers); `read_jsonl` turns
                         them back into floats.
  workdir/events.out.tfevents.*
                         TensorBoard event files, written by tensorboardX
                         (a new file per writer; float32 values; written by
                         a background thread, on disk after `flush` or
                         `close`).

A run resumed from the checkpoint of step S replays the steps after S that a
killed run had already logged. `MetricWriter(workdir, resume_step=S)` drops
those records from metrics.jsonl and starts its event file with
TensorBoard's purge marker for steps after S, so each step is logged once.

In a multi-host job, create the writer on process 0 only.
"""

from __future__ import annotations

from collections.abc import Mapping
import json
import math
import os
import time
import uuid
from typing import Any

import numpy as np
import tensorboardX

from jaxface import files

JSONL_NAME = 'metrics.jsonl'
EVENTS_PREFIX = 'events.out.tfevents.'

_RESERVED = ('step', 'time')
_NON_FINITE = {'nan': math.nan, 'inf': math.inf, '-inf': -math.inf}


def _to_number(name: str, value: Any) -> int | float:
  """A python int or float from a scalar (python, numpy or jax)."""
  array = np.asarray(value)
  if array.size != 1:
    raise ValueError(
        f'metric {name!r} is not a scalar: its shape is {array.shape}')
  item = array.reshape(()).item()
  if isinstance(item, bool):
    return int(item)
  if isinstance(item, int):
    return item
  if isinstance(item, float):
    return item
  raise ValueError(
      f'metric {name!r} is not a real number: {value!r} ({array.dtype})')


def _json_number(value: int | float) -> int | float | str:
  if isinstance(value, float) and not math.isfinite(value):
    return 'nan' if math.isnan(value) else ('inf' if value > 0 else '-inf')
  return value


def _drop_records_after(path: str, step: int) -> int:
  """Rewrites metrics.jsonl at `path` without the records of steps after
  `step` (atomically); returns how many were dropped."""
  records = read_jsonl(path)
  kept = [r for r in records if r['step'] <= step]
  if len(kept) < len(records):
    files.write_atomic(path, ''.join(
        json.dumps({k: _json_number(v) for k, v in r.items()},
                   allow_nan=False) + '\n' for r in kept))
  return len(records) - len(kept)


class MetricWriter:
  """Writes scalar metrics to `workdir`'s metrics.jsonl and an event file.

  Args:
    workdir: the directory written to (created if needed).
    resume_step: the step a resumed run starts after: records of later
      steps are dropped (see the module docstring). None: a new run, or
      keep everything.

  Attributes:
    workdir, jsonl_path: where it writes.
    dropped: how many records of replayed steps were dropped.
  """

  def __init__(self, workdir: str | os.PathLike[str],
               resume_step: int | None = None):
    self.workdir = os.fspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    self.jsonl_path = os.path.join(self.workdir, JSONL_NAME)
    self.dropped = 0
    if resume_step is not None and os.path.exists(self.jsonl_path):
      self.dropped = _drop_records_after(self.jsonl_path, resume_step)
    self._jsonl = open(self.jsonl_path, 'a', encoding='utf-8')
    # The suffix: tensorboardX names files by the second and the host, and
    # a second writer within the same second would overwrite the first's.
    self._events = tensorboardX.SummaryWriter(
        self.workdir, flush_secs=30, filename_suffix=f'.{uuid.uuid4().hex[:8]}',
        purge_step=None if resume_step is None else resume_step + 1)
    self._closed = False

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes `scalars` (name -> scalar: python, numpy or jax) at `step`.

    The jsonl line is flushed and fsynced before this returns. An empty
    mapping writes nothing.

    Raises:
      ValueError: a name that is not a non-empty string or is 'step' or
        'time', a value that is not a real scalar, or a closed writer.
    """
    if self._closed:
      raise ValueError('write_scalars on a closed MetricWriter')
    step = int(step)
    values = {}
    for name, value in scalars.items():
      if not isinstance(name, str) or not name:
        raise ValueError(f'metric names must be non-empty strings: {name!r}')
      if name in _RESERVED:
        raise ValueError(
            f'{name!r} is reserved in metrics.jsonl; rename the metric')
      values[name] = _to_number(name, value)
    if not values:
      return
    line = {'step': step, 'time': time.time()}
    line.update({name: _json_number(v) for name, v in values.items()})
    self._jsonl.write(json.dumps(line, allow_nan=False) + '\n')
    self._jsonl.flush()
    os.fsync(self._jsonl.fileno())
    for name, value in values.items():
      self._events.add_scalar(name, float(value), step, walltime=line['time'])

  def flush(self) -> None:
    """Flushes both files to disk."""
    if self._closed:
      return
    os.fsync(self._jsonl.fileno())
    self._events.flush()

  def close(self) -> None:
    """Flushes and closes both files; closing twice is harmless."""
    if self._closed:
      return
    try:
      self.flush()
    finally:
      self._closed = True
      self._jsonl.close()
      self._events.close()

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """Returns the records of a metrics.jsonl file, in order.

  "nan", "inf" and "-inf" metric values come back as floats. A last line that
  is incomplete (no newline, not valid JSON: a write cut short) is dropped.

  Raises:
    ValueError: a malformed line anywhere else (its line number is given).
  """
  with open(path, encoding='utf-8') as f:
    lines = f.read().split('\n')
  # After the final newline, split gives '' (or the cut-short last line).
  records = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      if number == len(lines):
        break  # An incomplete last line.
      raise ValueError(f'{os.fspath(path)}:{number}: not JSON: {e}') from e
    if not isinstance(record, dict) or 'step' not in record:
      raise ValueError(f'{os.fspath(path)}:{number}: not a metrics record')
    for name, value in record.items():
      if name not in _RESERVED and isinstance(value, str) and (
          value in _NON_FINITE):
        record[name] = _NON_FINITE[value]
    records.append(record)
  return records
