"""jaxface.files: atomic writes, the folder lock, outputs inside --out."""

import json
import os
import subprocess
import sys

import pytest

from jaxface import files


def test_write_atomic_replaces_a_link_instead_of_writing_through(tmp_path):
  outside = tmp_path / 'outside.txt'
  outside.write_text('keep me')
  folder = tmp_path / 'out'
  folder.mkdir()
  (folder / 'report.json').symlink_to(outside)
  files.write_atomic(str(folder / 'report.json'), 'new')
  assert outside.read_text() == 'keep me'
  assert not os.path.islink(folder / 'report.json')
  assert (folder / 'report.json').read_text() == 'new'
  assert sorted(os.listdir(folder)) == ['report.json']  # no temporary left


def test_output_path_refuses_links_and_escapes(tmp_path):
  (tmp_path / 'link').symlink_to(tmp_path / 'elsewhere')
  with pytest.raises(ValueError, match='is a link'):
    files.output_path(str(tmp_path), 'link')
  with pytest.raises(ValueError, match='outside'):
    files.output_path(str(tmp_path / 'sub'), '../x')
  assert files.output_path(str(tmp_path), 'a.obj') == str(tmp_path / 'a.obj')


def test_a_held_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
  with files.FolderLock(str(tmp_path), 'workdir'):
    with pytest.raises(files.FolderInUseError,
                       match=rf'workdir .* is in use by process {os.getpid()}'):
      with files.FolderLock(str(tmp_path), 'workdir'):
        pass
  with files.FolderLock(str(tmp_path), 'workdir') as lock:  # released
    holder = json.loads(open(lock.path).read())
    assert holder['pid'] == os.getpid()


@pytest.mark.slow  # a child process
def test_the_lock_of_a_killed_process_does_not_block(tmp_path):
  code = ('import os, sys\n'
          'from jaxface import files\n'
          'files.FolderLock(sys.argv[1]).__enter__()\n'
          'os._exit(9)\n')  # dies holding it, the file left behind
  result = subprocess.run([sys.executable, '-c', code, str(tmp_path)],
                          check=False, capture_output=True, text=True)
  assert result.returncode == 9, result.stderr
  assert json.loads((tmp_path / files.LOCK_NAME).read_text())['pid'] != (
      os.getpid())
  with files.FolderLock(str(tmp_path)):
    pass


def test_a_file_is_not_a_folder_to_lock(tmp_path):
  (tmp_path / 'f').write_text('x')
  with pytest.raises(NotADirectoryError, match='is a file'):
    with files.FolderLock(str(tmp_path / 'f'), 'workdir'):
      pass


def test_check_output_file_names_the_option_and_the_problem(tmp_path):
  files.check_output_file(str(tmp_path / 'new' / 'a.PNG'), '--png', '.png')
  files.check_output_file(str(tmp_path / 'any'), '--json')  # no suffix
  with pytest.raises(IsADirectoryError,
                     match='--png .* is a folder; give a file name ending '
                     r'in \.png'):
    files.check_output_file(str(tmp_path), '--png', '.png')
  with pytest.raises(ValueError, match=r'must be a file name ending in \.png'):
    files.check_output_file(str(tmp_path / 'a.jpg'), '--png', '.png')
  (tmp_path / 'f').write_text('x')
  with pytest.raises(NotADirectoryError, match='--out .*f/r.json: its folder'):
    files.check_output_file(str(tmp_path / 'f' / 'r.json'), '--out', '.json')
  assert sorted(os.listdir(tmp_path)) == ['f']  # nothing made
