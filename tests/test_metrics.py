"""Tests of jaxface.train.metrics: metrics.jsonl and TensorBoard event files.

The event files (written by tensorboardX) are read back with tensorboardX's
Event protobuf and crc32c: the test splits the TFRecord framing and checks
every CRC.
"""

from __future__ import annotations

import glob
import json
import math
import os
import struct
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from jaxface.train import metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _masked(crc: int) -> int:
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % (1 << 32)


def _split_tfrecords(blob: bytes) -> list[bytes]:
  """TFRecord framing (length, masked crc32c of the length, data, masked
  crc32c of the data), every CRC asserted."""
  from tensorboardX.crc32c import crc32c  # pylint: disable=g-import-not-at-top
  out, offset = [], 0
  while offset < len(blob):
    length_bytes = blob[offset:offset + 8]
    (length,) = struct.unpack('<Q', length_bytes)
    (length_crc,) = struct.unpack('<I', blob[offset + 8:offset + 12])
    assert length_crc == _masked(crc32c(length_bytes))
    data = blob[offset + 12:offset + 12 + length]
    (data_crc,) = struct.unpack(
        '<I', blob[offset + 12 + length:offset + 16 + length])
    assert data_crc == _masked(crc32c(data))
    out.append(data)
    offset += 16 + length
  assert offset == len(blob)
  return out


def _events_file(workdir) -> str:
  (path,) = glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))
  return path


def _events(path) -> list:
  """The Event messages of one event file, CRCs checked."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  with open(path, 'rb') as f:
    return [event_pb2.Event.FromString(d) for d in _split_tfrecords(f.read())]


def _scalars(path) -> list[tuple[int, str, float]]:
  """(step, tag, value) of every scalar in one event file, in order."""
  return [(e.step, v.tag, v.simple_value) for e in _events(path)
          for v in e.summary.value]


# metrics.jsonl.


def test_jsonl_round_trip(tmp_path):
  with metrics.MetricWriter(tmp_path) as writer:
    writer.write_scalars(0, {'loss': 1.5, 'lr': 1e-4})
    writer.write_scalars(np.int64(10), {
        'loss': np.float32(0.1), 'acc': jnp.asarray(0.75), 'images': 128,
        'nme': np.float64(0.1234567890123)})
  records = metrics.read_jsonl(tmp_path / 'metrics.jsonl')
  assert [r['step'] for r in records] == [0, 10]
  assert records[0]['loss'] == 1.5 and records[0]['lr'] == 1e-4
  assert records[1]['loss'] == float(np.float32(0.1))  # Exact float32.
  assert records[1]['acc'] == 0.75
  assert records[1]['images'] == 128 and isinstance(records[1]['images'], int)
  assert records[1]['nme'] == 0.1234567890123
  for record in records:
    assert isinstance(record['time'], float)
    assert abs(record['time'] - records[0]['time']) < 60


def test_jsonl_is_valid_after_every_write(tmp_path):
  writer = metrics.MetricWriter(tmp_path)
  path = tmp_path / 'metrics.jsonl'
  for step in range(5):
    writer.write_scalars(step, {'loss': 1.0 / (step + 1), 'bad': math.nan,
                                'big': math.inf, 'small': -math.inf})
    text = path.read_text()
    assert text.endswith('\n')
    lines = text.splitlines()
    assert len(lines) == step + 1

    def no_constants(name):
      raise AssertionError(f'non-standard JSON constant {name}')

    for line in lines:  # Strict JSON: no NaN / Infinity.
      record = json.loads(line, parse_constant=no_constants)
      assert set(record) == {'step', 'time', 'loss', 'bad', 'big', 'small'}
  writer.close()
  last = metrics.read_jsonl(path)[-1]
  assert math.isnan(last['bad']) and last['big'] == math.inf
  assert last['small'] == -math.inf


@pytest.mark.slow  # a child process
def test_jsonl_survives_a_crash(tmp_path):
  # The child writes and dies without closing or flushing anything itself.
  code = (
      'import os, sys\n'
      'from jaxface.train import metrics\n'
      'w = metrics.MetricWriter(sys.argv[1])\n'
      'for step in range(3):\n'
      '  w.write_scalars(step, {"loss": step * 0.5})\n'
      'os._exit(3)\n')
  result = subprocess.run([sys.executable, '-c', code, str(tmp_path)],
                          check=False, capture_output=True,
                          cwd=REPO)
  assert result.returncode == 3, result.stderr
  records = metrics.read_jsonl(tmp_path / 'metrics.jsonl')
  assert [(r['step'], r['loss']) for r in records] == [
      (0, 0.0), (1, 0.5), (2, 1.0)]


def test_jsonl_appends_across_writers(tmp_path):
  with metrics.MetricWriter(tmp_path) as writer:
    writer.write_scalars(1, {'loss': 1.0})
  with metrics.MetricWriter(tmp_path) as writer:
    writer.write_scalars(2, {'loss': 2.0})
  records = metrics.read_jsonl(tmp_path / 'metrics.jsonl')
  assert [(r['step'], r['loss']) for r in records] == [(1, 1.0), (2, 2.0)]
  events = sorted(glob.glob(str(tmp_path / 'events.out.tfevents.*')))
  assert len(events) == 2  # A new event file each, never overwritten.
  values = sorted(v for path in events for v in _scalars(path))
  assert values == [(1, 'loss', 1.0), (2, 'loss', 2.0)]


def test_read_jsonl_drops_a_cut_short_last_line(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 1, "time": 2.0, "loss": 0.5}\n{"step": 2, "ti')
  assert metrics.read_jsonl(path) == [{'step': 1, 'time': 2.0, 'loss': 0.5}]


def test_read_jsonl_refuses_a_malformed_line(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
  with pytest.raises(ValueError, match=r'metrics.jsonl:2: not JSON'):
    metrics.read_jsonl(path)
  path.write_text('[1, 2]\n')
  with pytest.raises(ValueError, match=r':1: not a metrics record'):
    metrics.read_jsonl(path)


# Event files.


def test_events_round_trip_in_float32(tmp_path):
  values = [{'loss': 0.1, 'lr': 3e-4}, {'loss': np.float32(1 / 3)},
            {'loss': 12345.678, 'nme': jnp.float32(2.5), 'count': 7}]
  steps = [0, 100, 2**40]
  with metrics.MetricWriter(tmp_path) as writer:
    for step, scalars in zip(steps, values):
      writer.write_scalars(step, scalars)
  expected = [(step, tag, float(np.float32(value)))
              for step, scalars in zip(steps, values)
              for tag, value in scalars.items()]
  assert _scalars(_events_file(tmp_path)) == expected


def test_events_share_the_jsonl_times(tmp_path):
  with metrics.MetricWriter(tmp_path) as writer:
    writer.write_scalars(5, {'loss': 0.25, 'd/acc': 0.5})
  events = _events(_events_file(tmp_path))
  assert events[0].file_version == 'brain.Event:2'
  (jsonl,) = metrics.read_jsonl(tmp_path / 'metrics.jsonl')
  assert [e.wall_time for e in events[1:]] == pytest.approx(
      [jsonl['time']] * 2)


def test_a_resumed_writer_logs_each_step_once(tmp_path):
  # A run logged steps 10..40, was killed after its checkpoint of step 20
  # and resumes from it: steps 30 and 40 are replayed.
  with metrics.MetricWriter(tmp_path) as writer:
    for step in (10, 20, 30, 40):
      writer.write_scalars(step, {'loss': step / 100})
  with metrics.MetricWriter(tmp_path, resume_step=20) as writer:
    assert writer.dropped == 2
    for step in (30, 40):
      writer.write_scalars(step, {'loss': step / 1000})
  records = metrics.read_jsonl(tmp_path / 'metrics.jsonl')
  assert [(r['step'], r['loss']) for r in records] == [
      (10, 0.1), (20, 0.2), (30, 0.03), (40, 0.04)]
  # TensorBoard drops the first file's events after the purge marker's
  # step: SessionLog START (status 1) at step 21.
  paths = glob.glob(str(tmp_path / 'events.out.tfevents.*'))
  purges = [[(e.step, e.session_log.status) for e in _events(path)
             if e.HasField('session_log')] for path in paths]
  assert sorted(purges) == [[], [(21, 1)]]


def test_a_new_writer_keeps_every_record(tmp_path):
  with metrics.MetricWriter(tmp_path) as writer:
    writer.write_scalars(30, {'loss': 1.0})
  with metrics.MetricWriter(tmp_path) as writer:
    assert writer.dropped == 0
  assert len(metrics.read_jsonl(tmp_path / 'metrics.jsonl')) == 1


# Errors and lifecycle.


@pytest.mark.parametrize('scalars, match', [
    ({'step': 1.0}, "'step' is reserved"),
    ({'time': 1.0}, "'time' is reserved"),
    ({'x': np.zeros(3)}, r"'x' is not a scalar: its shape is \(3,\)"),
    ({'x': 'high'}, "'x' is not a real number"),
    ({'x': 1 + 2j}, "'x' is not a real number"),
    ({'': 1.0}, 'non-empty strings'),
    ({3: 1.0}, 'non-empty strings'),
])
def test_bad_scalars_are_refused_and_nothing_is_written(tmp_path, scalars,
                                                        match):
  with metrics.MetricWriter(tmp_path) as writer:
    with pytest.raises(ValueError, match=match):
      writer.write_scalars(0, {'ok': 1.0, **scalars})
  assert metrics.read_jsonl(tmp_path / 'metrics.jsonl') == []
  assert _scalars(_events_file(tmp_path)) == []


def test_size_one_arrays_and_empty_writes(tmp_path):
  with metrics.MetricWriter(tmp_path) as writer:
    writer.write_scalars(0, {})
    writer.write_scalars(1, {'x': np.array([2.0]), 'flag': np.bool_(True)})
  assert [(r['step'], r['x'], r['flag'])
          for r in metrics.read_jsonl(tmp_path / 'metrics.jsonl')] == [
              (1, 2.0, 1)]


def test_close_is_idempotent_and_writes_after_close_fail(tmp_path):
  writer = metrics.MetricWriter(tmp_path / 'new' / 'dir')
  writer.write_scalars(0, {'x': 1.0})
  writer.close()
  writer.close()
  writer.flush()
  with pytest.raises(ValueError, match='closed'):
    writer.write_scalars(1, {'x': 1.0})
  assert len(metrics.read_jsonl(writer.jsonl_path)) == 1
