"""Two training processes (as two hosts) on CPU equal one process.

Each process has one CPU device; they find each other through
jax.distributed (JAXFACE_DISTRIBUTED=1 with a local coordinator) and
exchange gradients with gloo. Process p reads its own half of every global
batch (positions p, p + 2, ...), so the two processes together see the
records one process with two devices sees, and the parameters agree to
float rounding. The run is the progression RNN with SGD: its gradients are
well conditioned (a small PRNet's BatchNorm over a 1 x 1 bottleneck of a
batch of 8 amplifies rounding, and Adam's update amplifies rounding in
near-zero gradients), so a tight tolerance separates rounding from a wrong
batch or a missing gradient reduction. Process 0 alone writes the workdir's
files; both write the checkpoint.
"""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxface.data import synthetic
from jaxface.train import trained
import shared

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRESSION = os.path.join(REPO, 'experiments', 'configs', 'progression.py')


def _args(data):
  return ['--config', PROGRESSION, f'--config.data.dir={data}',
          '--config.model.hidden=16', '--config.data.global_batch_size=8',
          '--config.data.eval_batch_size=8', '--config.train.num_steps=3',
          '--config.train.eval_every=3', '--config.train.eval_batches=1',
          '--config.train.checkpoint_every=1', '--config.optimizer.name=sgd',
          '--config.optimizer.lr=0.01', '--config.optimizer.warmup_steps=0',
          '--config.train.progress=False', '--config.train.log_every=1']


def _env(devices, **extra):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo', **extra)
  env.pop('JAXFACE_DISTRIBUTED', None)
  env.pop('JAX_COORDINATOR_ADDRESS', None)
  env.update(extra)
  return env


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  return shared.synthetic_dataset(tmp_path_factory, synthetic.SynthConfig(
      resolution=32, identities=(('train', 10), ('test', 4)), clip_length=4),
                                  {'clips': {'train': 32, 'test': 8}})


@pytest.mark.slow
def test_two_processes_train_like_one(data, tmp_path):
  cmd = [sys.executable, '-m', 'jaxface.cli', 'train', *_args(data)]
  two = str(tmp_path / 'two')
  port = _free_port()
  procs = [subprocess.Popen(
      cmd + ['--workdir', two], cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True, env=_env(
          1, JAXFACE_DISTRIBUTED='1',
          JAX_COORDINATOR_ADDRESS=f'localhost:{port}',
          JAXFACE_NUM_PROCESSES='2', JAXFACE_PROCESS_ID=str(p)))
           for p in range(2)]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  one = str(tmp_path / 'one')
  single = subprocess.run(cmd + ['--workdir', one], cwd=REPO, env=_env(2),
                          capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]
  a, b = trained.load(one), trained.load(two)
  assert a.step == b.step == 3
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
  # Process 0 wrote the run's files, once.
  with open(os.path.join(two, 'metrics.jsonl')) as f:
    steps = [line for line in f if '"train/loss"' in line]
  assert len(steps) == 3
  # Training on a process's half of the batch alone (no reduction over the
  # processes) would change the steps by about their own size: the runs
  # differ by under 1 % of what steps 2 and 3 moved the parameters.
  flat = lambda t: np.concatenate([x.ravel() for x in jax.tree.leaves(t)])
  moved = np.linalg.norm(flat(a.params) - flat(trained.load(one, 1).params))
  differ = np.linalg.norm(flat(a.params) - flat(b.params))
  assert differ < 0.01 * moved, (differ, moved)
