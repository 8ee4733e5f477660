"""How the `jaxface` command sets up its process on a Linux host: glibc's
transparent huge pages and XLA's CPU convolutions (`set_up`).

Huge pages. XLA's CPU runtime allocates a program's large buffers afresh on
every run, and glibc maps each one from the kernel and gives it back when
it is freed: every train step touches fresh 4 KiB pages, which the kernel
faults in and zeroes one at a time. PRNet's train step at 256x256, batch
4, took about 155,000 page faults and 0.3 s of kernel CPU time a step that
way. With glibc's tunable `glibc.malloc.hugetlb=1` (glibc 2.35 and later)
malloc asks for transparent huge pages (2 MiB) where it maps memory: about
1,200 faults a step, and the step 10-13 % faster (README, "Benchmarks").
glibc reads its tunables only when a program starts, so the command starts
itself again, once, with the tunable added (`restart_with_huge_pages`),
where the kernel gives huge pages on request
(`/sys/kernel/mm/transparent_hugepage/enabled` set to madvise). A
GLIBC_TUNABLES that already sets `glibc.malloc.hugetlb` is left as it is,
and `JAXFACE_HUGE_PAGES=0` turns the restart off.

CPU convolutions. jaxlib 0.10 runs 2D float32 convolutions through YNNPACK,
which computes those with at most 64 input and output channels on one
thread: PRNet's layers at 32-128 pixels then take as long on two cores
as on one. XLA's Eigen convolutions use every core: PRNet's 256x256
forward pass at batch 1 ran 1.4x faster, the train step 8 % faster
(README). `xla_flags` adds XLA's flag that leaves convolutions to Eigen
unless XLA_FLAGS already says where they go, on the jaxlib releases it
was measured on (XLA stops at a flag it does not know).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Mapping

TUNABLE = 'glibc.malloc.hugetlb'
OPT_OUT = 'JAXFACE_HUGE_PAGES'
THP_SETTING = '/sys/kernel/mm/transparent_hugepage/enabled'
MIN_GLIBC = (2, 35)  # the first with glibc.malloc.hugetlb
# OPT_OUT's value in a restarted process (and its children, which inherit
# the tunable): never restart twice, whatever the loader did with it.
RESTARTED = 'restarted'

YNN_FUSION_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
EIGEN_CONVOLUTIONS = f'{YNN_FUSION_FLAG}=-individual_convolution'
# jaxlib (major, minor) releases whose XLA has that flag and was measured.
EIGEN_CONVOLUTIONS_JAXLIB = ((0, 10),)


def thp_mode(path: str = THP_SETTING) -> str | None:
  """The kernel's transparent huge page mode ('always', 'madvise' or
  'never': the bracketed word of `path`), None where it cannot be read."""
  try:
    with open(path, encoding='ascii') as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find('['), text.find(']')
  return text[start + 1:end] if 0 <= start < end else None


def _release(version: str) -> tuple[int, ...] | None:
  """'2.36' or '0.10.2' -> (2, 36) / (0, 10); None if not numbers."""
  try:
    return tuple(int(part) for part in version.split('.')[:2])
  except ValueError:
    return None


def tunables_with_huge_pages(environ: Mapping[str, str],
                             libc: tuple[str, str],
                             mode: str | None) -> str | None:
  """The GLIBC_TUNABLES value to restart with, or None where a restart
  would not change anything: opted out (`JAXFACE_HUGE_PAGES=0`) or
  restarted already (`JAXFACE_HUGE_PAGES=restarted`), a C library other
  than glibc 2.35+ (`libc`: `platform.libc_ver()`), a kernel mode other
  than 'madvise' ('always' gives huge pages without asking, 'never' not at
  all), or `glibc.malloc.hugetlb` already set."""
  if environ.get(OPT_OUT, '1') in ('0', RESTARTED) or mode != 'madvise':
    return None
  name, version = libc
  release = _release(version)
  if name != 'glibc' or release is None or release < MIN_GLIBC:
    return None
  current = environ.get('GLIBC_TUNABLES', '')
  if TUNABLE in current:
    return None
  return f'{current}:{TUNABLE}=1' if current else f'{TUNABLE}=1'


def restart_with_huge_pages() -> None:
  """Replaces this process by the same command (interpreter, its options,
  script or module, arguments) with huge pages on, where
  `tunables_with_huge_pages` gives a value; returns where it does not (or
  where the interpreter cannot be executed again). Call it first thing,
  before any work is done or any thread started."""
  if sys.platform != 'linux' or not sys.executable:
    return
  value = tunables_with_huge_pages(os.environ, platform.libc_ver(),
                                   thp_mode())
  if value is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
              dict(os.environ, GLIBC_TUNABLES=value, **{OPT_OUT: RESTARTED}))
  except OSError:
    return  # the interpreter cannot be started again: run without them


def xla_flags(current: str, jaxlib: str | None) -> str:
  """XLA_FLAGS `current` with Eigen's convolutions on the CPU: unchanged
  where it already sets the YNNPACK fusion types, or where `jaxlib` (its
  version) is not a release the flag was measured on
  (`EIGEN_CONVOLUTIONS_JAXLIB`; None: not installed). The flag only
  concerns XLA's CPU compiler."""
  if (YNN_FUSION_FLAG in current or jaxlib is None or
      _release(jaxlib) not in EIGEN_CONVOLUTIONS_JAXLIB):
    return current
  return f'{current} {EIGEN_CONVOLUTIONS}'.strip()


def jaxlib_version() -> str | None:
  """The installed jaxlib's version, None without one."""
  try:
    return importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return None


def set_up() -> None:
  """What the `jaxface` command does first: huge pages (a restart, where
  they are to be had), then XLA's CPU flags, before JAX starts a backend."""
  restart_with_huge_pages()
  current = os.environ.get('XLA_FLAGS', '')
  flags = xla_flags(current, jaxlib_version())
  if flags != current:
    os.environ['XLA_FLAGS'] = flags


def describe(environ: Mapping[str, str] = os.environ) -> str:
  """How this process's host was set up, for benchmark reports."""
  tunables = environ.get('GLIBC_TUNABLES', '')
  settings = dict(item.partition('=')[::2] for item in tunables.split(':'))
  state = {'1': 'on', '2': 'on (hugetlbfs)'}.get(settings.get(TUNABLE), 'off')
  return (f'glibc huge pages {state} (GLIBC_TUNABLES={tunables!r}; kernel '
          f'transparent_hugepage: {thp_mode() or "unknown"}); '
          f'XLA_FLAGS={environ.get("XLA_FLAGS", "")!r}')
