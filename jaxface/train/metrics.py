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
                         them back into floats. A resumed run appends to the
                         same file, so steps may repeat after a restart.
  workdir/events.out.tfevents.<unix time>.<host>
                         a TensorBoard event file (TFRecord framing of Event
                         protobufs with scalar summaries, float32 values),
                         written by hand: neither TensorFlow nor the
                         tensorboard package is needed. The first record is
                         the file_version event "brain.Event:2". Each writer
                         opens a new file (".1", ".2"... is appended when the
                         name is taken).

In a multi-host job, create the writer on process 0 only.

`read_jsonl` and `read_tfevents` read these files back in pure python;
`read_tfevents` verifies every CRC.

The wire formats written:

  TFRecord  uint64 length (little-endian), uint32 masked crc32c of those 8
            bytes, the data, uint32 masked crc32c of the data; masked(crc) =
            ((crc >> 15) | (crc << 17)) + 0xa282ead8 mod 2^32.
  Event     1: wall_time (double), 2: step (int64), 3: file_version (string),
            5: summary (Summary).
  Summary   1: value (repeated Value).
  Value     1: tag (string), 2: simple_value (float).
"""

from __future__ import annotations

from collections.abc import Mapping
import json
import math
import os
import socket
import struct
import time
from typing import Any

import numpy as np

JSONL_NAME = 'metrics.jsonl'
EVENTS_PREFIX = 'events.out.tfevents.'
FILE_VERSION = 'brain.Event:2'

_RESERVED = ('step', 'time')
_NON_FINITE = {'nan': math.nan, 'inf': math.inf, '-inf': -math.inf}


# crc32c (Castagnoli).


def _make_crc32c_table() -> tuple[int, ...]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return tuple(table)


_CRC32C_TABLE = _make_crc32c_table()


def _crc32c_table(data: bytes) -> int:
  crc = 0xFFFFFFFF
  table = _CRC32C_TABLE
  for byte in data:
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _native_crc32c():
  """Returns a compiled crc32c from an installed package, or None."""
  try:
    import google_crc32c  # pylint: disable=g-import-not-at-top
    if google_crc32c.implementation == 'c':
      return google_crc32c.value
  except (ImportError, AttributeError):
    pass
  try:
    import crc32c as crc32c_package  # pylint: disable=g-import-not-at-top
    return crc32c_package.crc32c
  except (ImportError, AttributeError):
    pass
  return None


_NATIVE_CRC32C = _native_crc32c()


def crc32c(data: bytes) -> int:
  """Returns the CRC-32C (Castagnoli) of `data` as an unsigned int.

  Uses the `google-crc32c` or `crc32c` package when one is installed, else a
  table-driven pure-python implementation.
  """
  if _NATIVE_CRC32C is not None:
    return int(_NATIVE_CRC32C(bytes(data))) & 0xFFFFFFFF
  return _crc32c_table(data)


def masked_crc32c(data: bytes) -> int:
  """Returns TFRecord's masked crc32c of `data`."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# Protobuf encoding.


def _varint(value: int) -> bytes:
  if value < 0:
    value += 1 << 64  # int64: two's complement, 10 bytes.
  out = bytearray()
  while True:
    bits = value & 0x7F
    value >>= 7
    if value:
      out.append(bits | 0x80)
    else:
      out.append(bits)
      return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
  return _varint((field << 3) | wire_type)


def _length_delimited(field: int, payload: bytes) -> bytes:
  return _key(field, 2) + _varint(len(payload)) + payload


def _encode_value(tag: str, value: float) -> bytes:
  return (_length_delimited(1, tag.encode('utf-8')) +
          _key(2, 5) + struct.pack('<f', value))


def encode_event(wall_time: float, step: int, *,
                 scalars: Mapping[str, float] | None = None,
                 file_version: str | None = None) -> bytes:
  """Returns the serialized Event protobuf (see the module docstring)."""
  out = _key(1, 1) + struct.pack('<d', wall_time)
  out += _key(2, 0) + _varint(int(step))
  if file_version is not None:
    out += _length_delimited(3, file_version.encode('utf-8'))
  if scalars:
    summary = b''.join(_length_delimited(1, _encode_value(tag, value))
                       for tag, value in scalars.items())
    out += _length_delimited(5, summary)
  return out


def frame_record(data: bytes) -> bytes:
  """Returns `data` in TFRecord framing."""
  length = struct.pack('<Q', len(data))
  return (length + struct.pack('<I', masked_crc32c(length)) + data +
          struct.pack('<I', masked_crc32c(data)))


# The writer.


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


def _events_path(workdir: str, wall_time: float) -> str:
  base = os.path.join(
      workdir, f'{EVENTS_PREFIX}{int(wall_time):010d}.{socket.gethostname()}')
  path, n = base, 0
  while os.path.exists(path):
    n += 1
    path = f'{base}.{n}'
  return path


class MetricWriter:
  """Writes scalar metrics to `workdir`'s metrics.jsonl and an event file.

  Attributes:
    workdir: the directory written to (created if needed).
    jsonl_path: the metrics.jsonl path.
    events_path: the event file's path.
  """

  def __init__(self, workdir: str | os.PathLike[str]):
    self.workdir = os.fspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    self.jsonl_path = os.path.join(self.workdir, JSONL_NAME)
    self._jsonl = open(self.jsonl_path, 'a', encoding='utf-8')
    now = time.time()
    self.events_path = _events_path(self.workdir, now)
    self._events = open(self.events_path, 'xb')
    self._events.write(frame_record(
        encode_event(now, 0, file_version=FILE_VERSION)))
    self._events.flush()
    self._closed = False

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes `scalars` (name -> scalar: python, numpy or jax) at `step`.

    The jsonl line is flushed and fsynced before this returns; the event is
    flushed to the operating system. An empty mapping writes nothing.

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
    now = time.time()
    line = {'step': step, 'time': now}
    line.update({name: _json_number(v) for name, v in values.items()})
    self._jsonl.write(json.dumps(line, allow_nan=False) + '\n')
    self._jsonl.flush()
    os.fsync(self._jsonl.fileno())
    self._events.write(frame_record(encode_event(
        now, step, scalars={name: float(v) for name, v in values.items()})))
    self._events.flush()

  def flush(self) -> None:
    """Flushes and fsyncs both files."""
    if self._closed:
      return
    for f in (self._jsonl, self._events):
      f.flush()
      os.fsync(f.fileno())

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


# Readers.


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


def read_records(path: str | os.PathLike[str]) -> list[bytes]:
  """Returns the data of every record of a TFRecord file, verifying the CRCs.

  Raises:
    ValueError: a CRC mismatch or a truncated record (with its offset).
  """
  with open(path, 'rb') as f:
    blob = f.read()
  records = []
  offset = 0
  while offset < len(blob):
    where = f'{os.fspath(path)}: record {len(records)} at byte {offset}'
    if offset + 12 > len(blob):
      raise ValueError(f'{where}: truncated header')
    length_bytes = blob[offset:offset + 8]
    (length_crc,) = struct.unpack('<I', blob[offset + 8:offset + 12])
    if masked_crc32c(length_bytes) != length_crc:
      raise ValueError(f'{where}: corrupted length (CRC mismatch)')
    (length,) = struct.unpack('<Q', length_bytes)
    start = offset + 12
    end = start + length
    if end + 4 > len(blob):
      raise ValueError(f'{where}: truncated data ({length} bytes expected)')
    data = blob[start:end]
    (data_crc,) = struct.unpack('<I', blob[end:end + 4])
    if masked_crc32c(data) != data_crc:
      raise ValueError(f'{where}: corrupted data (CRC mismatch)')
    records.append(data)
    offset = end + 4
  return records


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
  value = shift = 0
  while True:
    if pos >= len(data):
      raise ValueError('truncated varint')
    byte = data[pos]
    pos += 1
    value |= (byte & 0x7F) << shift
    if not byte & 0x80:
      return value, pos
    shift += 7
    if shift >= 70:
      raise ValueError('varint too long')


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
  """Decodes a protobuf message into (field, wire type, raw value) triples."""
  out = []
  pos = 0
  while pos < len(data):
    key, pos = _read_varint(data, pos)
    field, wire_type = key >> 3, key & 7
    if wire_type == 0:
      value, pos = _read_varint(data, pos)
    elif wire_type == 1:
      value, pos = data[pos:pos + 8], pos + 8
    elif wire_type == 2:
      length, pos = _read_varint(data, pos)
      value, pos = data[pos:pos + length], pos + length
    elif wire_type == 5:
      value, pos = data[pos:pos + 4], pos + 4
    else:
      raise ValueError(f'unsupported protobuf wire type {wire_type}')
    if pos > len(data):
      raise ValueError('truncated protobuf message')
    out.append((field, wire_type, value))
  return out


def _tensor_scalar(data: bytes) -> float | None:
  """The value of a scalar float/double TensorProto (TF2 summaries), or None."""
  dtype = None
  values = []
  for field, wire_type, value in _fields(data):
    if field == 1 and wire_type == 0:
      dtype = value
    elif field == 4 and wire_type == 2:  # tensor_content
      if dtype == 1 and len(value) == 4:
        values.append(struct.unpack('<f', value)[0])
      elif dtype == 2 and len(value) == 8:
        values.append(struct.unpack('<d', value)[0])
    elif field == 5 and wire_type in (2, 5):  # float_val, packed or not.
      values.extend(struct.unpack(f'<{len(value) // 4}f', value))
    elif field == 6 and wire_type in (1, 2):  # double_val, packed or not.
      values.extend(struct.unpack(f'<{len(value) // 8}d', value))
  return float(values[0]) if len(values) == 1 else None


def decode_event(data: bytes) -> dict[str, Any]:
  """Decodes an Event's fields: wall_time, step, file_version, scalars.

  `scalars` is a list of (tag, value) from the summary's simple values (and
  scalar float tensors, as TF2 writes them).
  """
  event = {'wall_time': None, 'step': 0, 'file_version': None, 'scalars': []}
  for field, wire_type, value in _fields(data):
    if field == 1 and wire_type == 1:
      event['wall_time'] = struct.unpack('<d', value)[0]
    elif field == 2 and wire_type == 0:
      event['step'] = value - (1 << 64) if value >= 1 << 63 else value
    elif field == 3 and wire_type == 2:
      event['file_version'] = value.decode('utf-8')
    elif field == 5 and wire_type == 2:
      for v_field, v_wire, v_data in _fields(value):
        if v_field != 1 or v_wire != 2:
          continue
        tag, number = None, None
        for s_field, s_wire, s_value in _fields(v_data):
          if s_field == 1 and s_wire == 2:
            tag = s_value.decode('utf-8')
          elif s_field == 2 and s_wire == 5:
            number = struct.unpack('<f', s_value)[0]
          elif s_field == 8 and s_wire == 2:
            number = _tensor_scalar(s_value)
        if tag is not None and number is not None:
          event['scalars'].append((tag, number))
  return event


def read_tfevents(path: str | os.PathLike[str]) -> list[tuple[int, str, float]]:
  """Returns every scalar of an event file as (step, tag, value), in order.

  Pure python: verifies every record's CRCs, needs no TensorFlow.

  Raises:
    ValueError: a corrupted or truncated record, or a malformed Event.
  """
  out = []
  for index, data in enumerate(read_records(path)):
    try:
      event = decode_event(data)
    except ValueError as e:
      raise ValueError(
          f'{os.fspath(path)}: record {index}: malformed Event: {e}') from e
    out.extend((event['step'], tag, value) for tag, value in event['scalars'])
  return out
