"""Test set-up: one CPU device (eight for the multi-device tests), quick
compilation and a persistent compilation cache.

XLA_FLAGS must be set before JAX initialises its backends, so it is set here,
before any test module imports jax (and inherited by the tests' training
subprocesses):
- One device: the tests' small models compile and train about a third
  faster than over eight fake devices on two cores. A test marked
  `multidevice` runs in a pytest process of its own with `MULTI_DEVICES`
  fake devices; the multi-process tests set their own device counts.
- No XLA backend (LLVM) optimisation: most of a test's time is compiling
  models it runs for a few steps; the suite took a quarter less time.
  The thresholds of `test_learning.py` were measured with full
  optimisation, which it restores in its own process.
"""

import os
import subprocess
import sys

import pytest

MULTI_DEVICES = 8

QUICK_COMPILE = '--xla_backend_optimization_level=0'


def _xla_flags(devices: int) -> str:
  return f'--xla_force_host_platform_device_count={devices} {QUICK_COMPILE}'


os.environ.setdefault('XLA_FLAGS', _xla_flags(1))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault(
    'JAX_COMPILATION_CACHE_DIR',
    os.path.join(os.path.dirname(os.path.dirname(__file__)), '.jax_cache'))


def pytest_pyfunc_call(pyfuncitem):
  """Runs a `multidevice` test in a process with `MULTI_DEVICES` devices
  when this one has fewer."""
  if pyfuncitem.get_closest_marker('multidevice') is None:
    return None
  import jax  # pylint: disable=g-import-not-at-top
  if jax.device_count() >= MULTI_DEVICES:
    return None  # already in such a process: run the test here
  env = {**os.environ, 'XLA_FLAGS': _xla_flags(MULTI_DEVICES)}
  result = subprocess.run(
      [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
       pyfuncitem.nodeid], cwd=str(pyfuncitem.config.rootpath), env=env,
      capture_output=True, text=True, check=False, timeout=1800)
  if result.returncode != 0:
    pytest.fail(f'failed in a process with {MULTI_DEVICES} devices:\n'
                f'{result.stdout[-6000:]}\n{result.stderr[-2000:]}',
                pytrace=False)
  return True
