"""Dataset writers (`data synth` and the converters): one writer per folder,
clean interruptions, no leftovers, datasets that appear only when whole."""

import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from jaxface import cli
from jaxface import files
from jaxface.data import shards
from jaxface.data import synthetic
from jaxface.data import writing

CONFIG = synthetic.SynthConfig(resolution=32, identities=(('train', 5),
                                                          ('test', 3)))
COUNTS = {'recon': {'train': 3, 'test': 2}}
SYNTH_ARGS = ['--num-train', '3', '--num-test', '2', '--resolution', '32',
              '--workers', '1']


def _synth(out, **kwargs):
  return synthetic.synthesize(str(out), CONFIG, COUNTS, progress=False,
                              **kwargs)


def _listing(folder):
  """{name: bytes} of every file in `folder`."""
  out = {}
  for name in sorted(os.listdir(folder)):
    with open(os.path.join(folder, name), 'rb') as f:
      out[name] = f.read()
  return out


def _plant_leftovers(folder):
  """What interrupted writers leave, made by the writers' own code where it
  can be (an open ShardWriter's temporary file); returns the names of other
  people's files, which must stay."""
  os.makedirs(folder, exist_ok=True)
  done = shards.ShardWriter(os.path.join(folder, writing._partial_name(
      'recon', 'train', 0)))
  done.write(b'x')
  done.close()
  open_writer = shards.ShardWriter(os.path.join(folder, writing._partial_name(
      'recon', 'test', 1)))
  open_writer.write(b'x')  # Never closed: its hidden temporary file stays.
  with shards.ShardWriter(os.path.join(folder, shards.shard_name(
      'clips', 'train', 2, 3))) as writer:  # A finished split, never listed.
    writer.write(b'x')
  for name in ('.dataset.jsonk3_9ab0z.tmp', '.dataset.json.abcdefgh.tmp'):
    open(os.path.join(folder, name), 'wb').close()
  others = ['notes.txt', '.notes.tmp', '.recon-train.partial-00000.bak',
            'recon-train.array_record-00000-of-00003.txt', '.dataset.json~']
  for name in others:
    with open(os.path.join(folder, name), 'w') as f:
      f.write('not jaxface\'s')
  return others


def test_a_second_writer_is_refused_and_touches_nothing(tmp_path, capsys):
  out = tmp_path / 'data'
  _plant_leftovers(str(out))
  with files.FolderLock(str(out), 'dataset'):
    before = _listing(out)
    with pytest.raises(files.FolderInUseError,
                       match=f'in use by process {os.getpid()}'):
      _synth(out)
    assert cli.main(['data', 'synth', '--out', str(out)] + SYNTH_ARGS) == 2
    assert f'in use by process {os.getpid()}' in capsys.readouterr().err
    assert _listing(out) == before


def test_a_rerun_removes_what_an_interrupted_run_left(tmp_path):
  # Shards and no dataset.json: an interrupted run's, never a dataset, so
  # the rerun needs no --overwrite; other people's files stay.
  out = tmp_path / 'data'
  others = _plant_leftovers(str(out))
  info = _synth(out)
  listed = [n for splits in info['kinds'].values() for e in splits.values()
            for n in e['shards']]
  assert sorted(os.listdir(out)) == sorted(
      [files.LOCK_NAME, shards.DATASET_INFO] + listed + others)
  assert shards.check(str(out))['ok']
  # --overwrite removes them too.
  _plant_leftovers(str(out))
  _synth(out, overwrite=True)
  assert sorted(os.listdir(out)) == sorted(
      [files.LOCK_NAME, shards.DATASET_INFO] + listed + others)


def _make_train_record(index):
  return synthetic._generator(CONFIG).make('recon', 'train', index)


def test_shards_close_behind_the_writer_and_keep_the_record_order(
    tmp_path, monkeypatch):
  # Shard size 2: three shards are closed by another thread while the next
  # fills, the last one by the writer at the end.
  # The last close may run before the third one has started, so each close
  # is recorded by its shard, not in the order the closes began.
  close = shards.ShardWriter.close
  closed_by = {}

  def recording_close(writer):
    closed_by[os.path.basename(writer.path)] = threading.current_thread()
    return close(writer)

  monkeypatch.setattr(shards.ShardWriter, 'close', recording_close)
  os.makedirs(tmp_path / 'data')
  result = writing.write_split(str(tmp_path / 'data'), 'recon', 'train',
                               list(range(7)), _make_train_record,
                               shard_size=2, progress=False)
  main = threading.main_thread()
  assert len(closed_by) == 4
  assert [closed_by[name] is main for name in sorted(closed_by)] == (
      [False] * 3 + [True])
  assert result.shards == [shards.shard_name('recon', 'train', i, 4)
                           for i in range(4)]
  assert sorted(os.listdir(tmp_path / 'data')) == result.shards
  shards.write_dataset_info(str(tmp_path / 'data'), writing.dataset_info(
      [result], resolution=32))
  with shards.RecordReader(str(tmp_path / 'data'), 'recon', 'train') as read:
    assert [r['source'] for r in read] == [
        f'synthetic/recon/train/{i}' for i in range(7)]


@pytest.mark.parametrize('failure', ['second close', 'last background close',
                                     'make', 'interrupt'])
def test_a_failure_while_a_shard_closes_leaves_nothing(tmp_path, monkeypatch,
                                                       failure):
  # 7 records in shards of 2: closes 1-3 in the background, 4 at the end.
  close = shards.ShardWriter.close
  closed = []
  made_the_last = threading.Event()

  def failing_close(writer):
    closed.append(writer.path)
    if (failure, len(closed)) in (('second close', 2),
                                  ('last background close', 3)):
      writer.abort()  # As ShardWriter.close does when it fails.
      raise OSError('No space left on device')
    if failure in ('make', 'interrupt') and len(closed) == 2:
      assert made_the_last.wait(60)  # Still closing when make fails.
    return close(writer)

  def make(index):
    if index == 5 and failure in ('make', 'interrupt'):
      made_the_last.set()
      raise (ValueError('no face in this sample') if failure == 'make'
             else KeyboardInterrupt)
    return _make_train_record(index)

  monkeypatch.setattr(shards.ShardWriter, 'close', failing_close)
  out = tmp_path / 'data'
  os.makedirs(out)
  error = {'make': ValueError, 'interrupt': KeyboardInterrupt}.get(failure,
                                                                   OSError)
  with pytest.raises(error):
    writing.write_split(str(out), 'recon', 'train', list(range(7)), make,
                        shard_size=2, progress=False)
  assert len(closed) == (4 if failure == 'last background close' else 2)
  assert os.listdir(out) == []


def test_ctrl_c_while_the_closing_thread_starts_leaves_nothing(
    tmp_path, monkeypatch):
  # Ctrl-C while `Thread.start` waits for the new thread: the thread runs,
  # but its executor's shutdown() does not wait for it. Were a shard handed
  # to it, it would publish that shard after write_split's clean-up; here
  # the publish is held until write_split has raised.
  start, publish = threading.Thread.start, files.publish
  started, raised = [], threading.Event()

  def start_then_interrupt(thread):
    start(thread)
    if thread.name.startswith(writing.CLOSER_THREAD_NAME):
      started.append(thread)
      raise KeyboardInterrupt

  def late_publish(temp, path):
    raised.wait(10)
    publish(temp, path)

  monkeypatch.setattr(threading.Thread, 'start', start_then_interrupt)
  monkeypatch.setattr(files, 'publish', late_publish)
  out = tmp_path / 'data'
  os.makedirs(out)
  with pytest.raises(KeyboardInterrupt):
    writing.write_split(str(out), 'recon', 'train', list(range(5)),
                        _make_train_record, shard_size=2, progress=False)
  raised.set()
  assert len(started) == 1
  started[0].join(30)
  assert not started[0].is_alive()
  assert os.listdir(out) == []


def _last_line(err):
  """The last line written to stderr (after the progress bars)."""
  return err.replace('\r', '\n').rstrip().splitlines()[-1]


def test_ctrl_c_leaves_nothing_and_says_so_in_one_line(tmp_path, capsys,
                                                       monkeypatch):
  made = []

  def make(self, index):
    made.append((self.split, index))
    if self.split == 'test':  # The train split's shards are written.
      raise KeyboardInterrupt
    return synthetic._generator(self.config).make(self.kind, self.split,
                                                  index)

  monkeypatch.setattr(synthetic._Make, '__call__', make)
  out = tmp_path / 'data'
  assert cli.main(['data', 'synth', '--out', str(out)] + SYNTH_ARGS) == 130
  err = capsys.readouterr().err
  assert 'Traceback' not in err
  assert _last_line(err) == (
      f'jaxface: interrupted: nothing of {out} is usable; run the '
      'same command again')
  assert made[-1] == ('test', 0)
  assert os.listdir(out) == [files.LOCK_NAME]


def _default_sigint():
  # A test run started in the background (e.g. `nohup ... &`) ignores
  # SIGINT, and a child inherits that: Python then leaves Ctrl-C ignored.
  signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_synth(out, *args):
  """`jaxface data synth` in its own process group (as a shell runs it in
  the foreground: SIGINT at its default)."""
  return subprocess.Popen(
      [sys.executable, '-m', 'jaxface.cli', 'data', 'synth', '--out',
       str(out), '--resolution', '32', *args], stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True, start_new_session=True,
      preexec_fn=_default_sigint)


def _wait_for(condition, process, seconds=120):
  deadline = time.monotonic() + seconds
  while not condition():
    assert process.poll() is None, process.communicate()
    assert time.monotonic() < deadline, 'timed out'
    time.sleep(0.01)


def _hidden(folder):
  return [n for n in os.listdir(folder)
          if n.startswith('.') and n != files.LOCK_NAME]


@pytest.mark.slow
def test_ctrl_c_of_a_synth_with_workers(tmp_path):
  out = tmp_path / 'data'
  # A test split long enough to be still under way when the signal comes,
  # also on a loaded machine (it is interrupted, so its size costs nothing).
  process = _start_synth(out, '--num-train', '8', '--num-test', '4000',
                         '--shard-size', '2', '--workers', '2')
  # The train split is written; the test split is under way.
  _wait_for(lambda: out.is_dir() and any(
      n.startswith('recon-train.') for n in os.listdir(out)) and _hidden(out),
            process)
  workers = [p for p in psutil.Process(process.pid).children(recursive=True)
             if 'spawn_main' in ' '.join(p.cmdline())]
  assert len(workers) == 2
  os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the whole group.
  _, err = process.communicate(timeout=60)
  assert process.returncode == 130
  assert 'Traceback' not in err
  assert _last_line(err) == (
      f'jaxface: interrupted: nothing of {out} is usable; run the '
      'same command again')
  assert os.listdir(out) == [files.LOCK_NAME]
  for worker in workers:
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE


@pytest.mark.slow
def test_a_killed_synth_is_cleaned_up_by_the_rerun(tmp_path):
  out = tmp_path / 'data'
  args = ['--num-train', '6', '--num-test', '4000', '--shard-size', '2',
          '--workers', '1']
  process = _start_synth(out, *args)
  _wait_for(lambda: out.is_dir() and any(
      n.startswith('recon-train.') for n in os.listdir(out)) and _hidden(out),
            process)
  os.killpg(process.pid, signal.SIGKILL)
  process.communicate()
  assert _hidden(out)  # The leftovers of the killed run.
  assert shards.DATASET_INFO not in os.listdir(out)
  args[args.index('--num-test') + 1] = '2'
  rerun = _start_synth(out, *args)
  assert rerun.communicate(timeout=120)[0] and rerun.returncode == 0
  assert not _hidden(out)
  info = shards.read_dataset_info(str(out))
  listed = {n for splits in info['kinds'].values() for e in splits.values()
            for n in e['shards']}
  assert set(os.listdir(out)) == listed | {files.LOCK_NAME,
                                           shards.DATASET_INFO}
  assert shards.check(str(out))['ok']
