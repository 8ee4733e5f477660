"""How the `jaxface` command sets up its process: glibc's transparent huge
pages (a restart) and XLA's CPU convolution flag."""

import os
import platform
import subprocess
import sys

import pytest

from jaxface import cli
from jaxface import host_setup

GLIBC = ('glibc', '2.36')


@pytest.mark.parametrize('environ, libc, mode, expected', [
    ({}, GLIBC, 'madvise', 'glibc.malloc.hugetlb=1'),
    ({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}, GLIBC, 'madvise',
     'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'),
    # The user's setting, or a process that already restarted: no restart.
    ({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, GLIBC, 'madvise', None),
    ({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}, GLIBC, 'madvise', None),
    ({'JAXFACE_HUGE_PAGES': '0'}, GLIBC, 'madvise', None),
    ({'JAXFACE_HUGE_PAGES': 'restarted'}, GLIBC, 'madvise', None),
    ({'JAXFACE_HUGE_PAGES': '1'}, GLIBC, 'madvise', 'glibc.malloc.hugetlb=1'),
    ({}, GLIBC, 'always', None),
    ({}, GLIBC, 'never', None),
    ({}, GLIBC, None, None),
    ({}, ('glibc', '2.34'), 'madvise', None),
    ({}, ('glibc', '2.40'), 'madvise', 'glibc.malloc.hugetlb=1'),
    ({}, ('', ''), 'madvise', None),  # musl and others
])
def test_tunables_with_huge_pages(environ, libc, mode, expected):
  assert host_setup.tunables_with_huge_pages(environ, libc, mode) == expected


def test_thp_mode_reads_the_bracketed_word(tmp_path):
  setting = tmp_path / 'enabled'
  setting.write_text('always [madvise] never\n')
  assert host_setup.thp_mode(str(setting)) == 'madvise'
  setting.write_text('[always] madvise never\n')
  assert host_setup.thp_mode(str(setting)) == 'always'
  assert host_setup.thp_mode(str(tmp_path / 'missing')) is None


EIGEN = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'


@pytest.mark.parametrize('current, jaxlib, expected', [
    ('', '0.10.2', EIGEN),
    ('--xla_cpu_multi_thread_eigen=true', '0.10.0',
     '--xla_cpu_multi_thread_eigen=true ' + EIGEN),
    # The user's choice of where convolutions go stands.
    ('--xla_cpu_experimental_ynn_fusion_type=+individual_convolution',
     '0.10.2',
     '--xla_cpu_experimental_ynn_fusion_type=+individual_convolution'),
    # Releases it was not measured on (XLA stops at a flag it does not know).
    ('', '0.9.1', ''),
    ('--xla_dump_to=/tmp/x', '0.11.0', '--xla_dump_to=/tmp/x'),
    ('', None, ''),
    ('', 'dev', ''),
])
def test_xla_flags(current, jaxlib, expected):
  assert host_setup.xla_flags(current, jaxlib) == expected


def test_set_up_leaves_xla_flags_alone_where_nothing_changes(monkeypatch):
  monkeypatch.setattr(host_setup, 'restart_with_huge_pages', lambda: None)
  monkeypatch.setattr(host_setup, 'jaxlib_version', lambda: '0.10.2')
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  host_setup.set_up()
  assert os.environ['XLA_FLAGS'] == EIGEN
  monkeypatch.setattr(host_setup, 'jaxlib_version', lambda: '0.9.0')
  monkeypatch.delenv('XLA_FLAGS')
  host_setup.set_up()
  assert 'XLA_FLAGS' not in os.environ


def test_describe_says_whether_huge_pages_are_on():
  assert 'huge pages on' in host_setup.describe(
      {'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'})
  assert 'huge pages off' in host_setup.describe(
      {'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'})
  assert 'huge pages off' in host_setup.describe({})
  assert EIGEN in host_setup.describe({'XLA_FLAGS': EIGEN})


def test_the_command_restarts_with_the_tunable(monkeypatch):
  calls = []

  def execve(path, argv, env):
    calls.append((path, argv, env))
    raise SystemExit(0)  # execve does not return

  monkeypatch.setattr(os, 'execve', execve)
  monkeypatch.setattr(sys, 'platform', 'linux')
  monkeypatch.setattr(platform, 'libc_ver', lambda: GLIBC)
  monkeypatch.setattr(host_setup, 'thp_mode', lambda: 'madvise')
  monkeypatch.setattr(sys, 'orig_argv', ['python', '-m', 'jaxface.cli',
                                         'models'])
  monkeypatch.delenv('GLIBC_TUNABLES', raising=False)
  monkeypatch.delenv('JAXFACE_HUGE_PAGES', raising=False)
  monkeypatch.delenv('XLA_FLAGS', raising=False)  # set_up sets it
  with pytest.raises(SystemExit):
    cli.run()
  (path, argv, env), = calls
  assert path == sys.executable
  assert argv == [sys.executable, '-m', 'jaxface.cli', 'models']
  assert env['GLIBC_TUNABLES'] == 'glibc.malloc.hugetlb=1'
  assert env['JAXFACE_HUGE_PAGES'] == 'restarted'
  # Restarted (the tunable set), it runs the command.
  monkeypatch.setenv('GLIBC_TUNABLES', 'glibc.malloc.hugetlb=1')
  monkeypatch.setattr(sys, 'argv', ['jaxface', 'models'])
  with pytest.raises(SystemExit) as ended:
    cli.run()
  assert ended.value.code == 0 and len(calls) == 1


def test_a_failed_restart_runs_the_command_as_it_is(monkeypatch):
  def execve(path, argv, env):
    raise PermissionError(13, 'Permission denied', path)

  monkeypatch.setattr(os, 'execve', execve)
  monkeypatch.setattr(sys, 'platform', 'linux')
  monkeypatch.setattr(platform, 'libc_ver', lambda: GLIBC)
  monkeypatch.setattr(host_setup, 'thp_mode', lambda: 'madvise')
  monkeypatch.setattr(sys, 'argv', ['jaxface', 'models'])
  monkeypatch.delenv('GLIBC_TUNABLES', raising=False)
  monkeypatch.delenv('JAXFACE_HUGE_PAGES', raising=False)
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  with pytest.raises(SystemExit) as ended:
    cli.run()
  assert ended.value.code == 0
  assert 'GLIBC_TUNABLES' not in os.environ


_ALLOCATE = """
import os, sys
from jaxface import host_setup
host_setup.restart_with_huge_pages()
buffer = bytearray(64 << 20)  # glibc maps it (above its mmap threshold)
buffer[::4096] = b'x' * len(buffer[::4096])  # touch every page
with open('/proc/self/smaps_rollup') as f:
  huge = [l for l in f if l.startswith('AnonHugePages:')][0].split()[1]
print(os.environ.get('GLIBC_TUNABLES', ''), int(huge))
"""


@pytest.mark.skipif(
    host_setup.tunables_with_huge_pages({}, platform.libc_ver(),
                                         host_setup.thp_mode()) is None
    or not os.path.exists('/proc/self/smaps_rollup'),
    reason='needs Linux, glibc 2.35+ and transparent huge pages on madvise')
def test_a_restarted_process_gets_huge_pages():
  env = {k: v for k, v in os.environ.items()
         if k not in ('GLIBC_TUNABLES', 'JAXFACE_HUGE_PAGES')}
  runs = {}
  for opt_out in ('0', '1'):
    out = subprocess.run(
        [sys.executable, '-c', _ALLOCATE], check=True, capture_output=True,
        text=True, env=dict(env, JAXFACE_HUGE_PAGES=opt_out)).stdout.split()
    runs[opt_out] = out
  assert runs['0'] == ['0']  # no tunable, no huge pages
  tunables, huge_kb = runs['1']
  assert tunables == 'glibc.malloc.hugetlb=1'
  assert int(huge_kb) >= 32 << 10  # most of the 64 MiB in 2 MiB pages
