"""Writing files safely: atomic writes, one writer per folder, outputs that
stay inside their folder.

- `write_atomic(path, data)`: readers see the old file or the new one, never
  a part (hidden temporary file, fsync, `os.replace`); `hidden_temp` and
  `publish` are its two halves, for files written piece by piece (shards).
- `FolderLock(folder)`: an exclusive lock held while a command writes a
  workdir or a dataset. It is `fcntl.flock` on `folder/.jaxface.lock`: the
  kernel drops it when its process ends, however it ends, so a lock left
  by a killed process never blocks the next run. The file holds the
  holder's pid, host, command line and start time, for the message that
  the next writer gets.
- `output_path(folder, name)`: `folder/name`, refused when it is a link
  (a planted link would be written through, to a file outside `folder`).
- `check_output_folder(folder, flag)`: before any work, that an output
  folder is one, or can be made, and can be written.
- `sha256_of(path)`: a file's hash (shipped weights, dataset fingerprints).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import sys
import tempfile
import time

LOCK_NAME = '.jaxface.lock'


class FolderInUseError(OSError):
  """Another process holds the folder's lock."""


def hidden_temp(path: str) -> str:
  """Creates an empty hidden file next to `path` (`.NAME.XXXXXXXX.tmp`,
  the folder made if needed); returns its path, for `publish`.

  The file gets the permissions of any file created under the user's umask
  (mkstemp's would be private): datasets and workdirs are meant to be read
  by others.
  """
  folder, name = os.path.split(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, temp = tempfile.mkstemp(prefix=f'.{name}.', suffix='.tmp', dir=folder)
  os.close(fd)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(temp, 0o666 & ~umask)
  return temp


def publish(temp: str, path: str) -> None:
  """Moves a finished `hidden_temp` file to `path`, after an fsync: readers
  see the old file or the whole new one. A link at `path` is replaced, not
  written through."""
  fd = os.open(temp, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)
  os.replace(temp, path)


def write_atomic(path: str, data: bytes | str) -> str:
  """Writes `data` (bytes, or text as UTF-8) to `path` through a
  `hidden_temp` file and `publish`; returns the path. Readers never see a
  partial file."""
  if isinstance(data, str):
    data = data.encode('utf-8')
  temp = hidden_temp(path)
  try:
    with open(temp, 'wb') as f:
      f.write(data)
    publish(temp, path)
  except BaseException:
    remove_if_present(temp)
    raise
  return path


def sha256_of(path: str) -> str:
  """Hex sha256 of a file's bytes."""
  with open(path, 'rb') as f:
    return hashlib.file_digest(f, 'sha256').hexdigest()


def write_json(path: str, value, **kwargs) -> str:
  """`write_atomic` of `json.dumps(value, indent=2, **kwargs)` + newline."""
  return write_atomic(path, json.dumps(value, indent=2, **kwargs) + '\n')


def remove_if_present(path: str) -> None:
  """Removes the file `path`; nothing if it is not there."""
  try:
    os.remove(path)
  except FileNotFoundError:
    pass


def output_path(folder: str, name: str) -> str:
  """`folder/name` for writing; ValueError when it is a link or leads out
  of `folder` (`name` with '..' or absolute)."""
  path = os.path.join(folder, name)
  root = os.path.realpath(folder)
  parent = os.path.realpath(os.path.dirname(path))
  if os.path.commonpath([root, parent]) != root:
    raise ValueError(f'{path} is outside {folder}; refusing to write it')
  if os.path.islink(path):
    raise ValueError(f'{path} is a link (to {os.readlink(path)}); refusing '
                     'to write through it: remove it first')
  return path


def check_output_file(path: str, flag: str, suffix: str = '') -> None:
  """Raises unless `path` names a file (ending in `suffix`, any case) that
  this process can write, in a folder that is there or can be made;
  creates nothing. `flag` names the option in the messages.

  Raises:
    IsADirectoryError: `path` is a folder.
    ValueError: `path` does not end in `suffix`.
    NotADirectoryError, PermissionError: as `check_output_folder`, for its
      folder.
  """
  ending = f' ending in {suffix}' if suffix else ''
  if os.path.isdir(path):
    raise IsADirectoryError(f'{flag} {path} is a folder; give a file '
                            f'name{ending}')
  if not path.lower().endswith(suffix.lower()):
    raise ValueError(f'{flag} {path} must be a file name{ending}')
  check_output_folder(os.path.dirname(path) or '.',
                      f'{flag} {path}: its folder')


def check_output_folder(folder: str, flag: str) -> None:
  """Raises unless `folder` is a folder this process can write into, or
  one that `os.makedirs` can make; creates nothing.

  Commands call it before any work, so that a bad --out or --workdir fails
  at once with a message naming `flag` (e.g. '--out'), not with a raw
  errno after minutes of computing.

  Raises:
    NotADirectoryError: `folder`, or a folder above it, is not a folder.
    PermissionError: the nearest existing folder cannot be written.
  """
  path = os.path.abspath(folder)
  existing = path
  while not os.path.lexists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    what = ('a file, not a folder' if os.path.isfile(existing) else
            'not a folder')
    if existing == path:
      raise NotADirectoryError(f'{flag} {folder} is {what}')
    raise NotADirectoryError(f'{flag} {folder} cannot be made: {existing} '
                             f'is {what}')
  if not os.access(existing, os.W_OK | os.X_OK):
    raise PermissionError(f'{flag} {folder} cannot be written: no write '
                          f'permission in {existing}')


class FolderLock:
  """Exclusive lock on a folder for the life of a `with` block; see the
  module docstring.

  Args:
    folder: the folder (created if needed).
    what: what the folder is, for the message ('workdir', 'dataset').

  Raises (on entry):
    FolderInUseError: another process holds it; the message names it.
    NotADirectoryError: `folder` is a file.
  """

  def __init__(self, folder: str, what: str = 'folder'):
    self.folder = folder
    self.what = what
    self._fd = None

  @property
  def path(self) -> str:
    return os.path.join(self.folder, LOCK_NAME)

  def __enter__(self) -> 'FolderLock':
    if os.path.exists(self.folder) and not os.path.isdir(self.folder):
      raise NotADirectoryError(f'{self.what} {self.folder} is a file, not a '
                               'folder')
    os.makedirs(self.folder, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      os.close(fd)
      raise FolderInUseError(
          f'{self.what} {self.folder} is in use by {holder}; wait for it to '
          f'end (or stop it), or use another {self.what}') from None
    except BaseException:
      os.close(fd)
      raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({
        'pid': os.getpid(), 'host': socket.gethostname(),
        'command': ' '.join(sys.argv),
        'since': time.strftime('%Y-%m-%d %H:%M:%S')}).encode(), 0)
    self._fd = fd
    return self

  def __exit__(self, *exc) -> None:
    if self._fd is not None:
      os.ftruncate(self._fd, 0)
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None


def _read_holder(fd: int) -> str:
  """'process PID on HOST (COMMAND, since TIME)', from a held lock file."""
  try:
    holder = json.loads(os.pread(fd, 65536, 0).decode())
    return (f'process {holder["pid"]} on {holder["host"]} '
            f'({holder["command"]!r}, since {holder["since"]})')
  except (ValueError, KeyError, UnicodeDecodeError):
    return 'another process'
