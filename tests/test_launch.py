"""launch/ scripts build the right commands; the distributed start-up."""

import os
import subprocess

import jax
import pytest

from jaxface.train import state as state_lib

LAUNCH = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'launch')


def _dry_run(script, *args):
  return subprocess.run(['bash', os.path.join(LAUNCH, script), *args],
                        env=dict(os.environ, DRY_RUN='1'), capture_output=True,
                        text=True, timeout=30)


def test_tpu_pod_runs_train_on_every_worker_with_distributed_set():
  out = _dry_run('tpu_pod.sh', 'my-tpu', 'us-central2-b',
                 'experiments/configs/prnet_pretrain.py', '/gcs/b/runs/p',
                 '--config.data.dir=/data/300wlp')
  assert out.returncode == 0, out.stderr
  cmd = out.stdout
  assert 'gcloud compute tpus tpu-vm ssh my-tpu' in cmd
  assert '--worker=all' in cmd and 'JAXFACE_DISTRIBUTED=1' in cmd
  for part in ('prnet_pretrain.py', '/gcs/b/runs/p',
               '--config.data.dir=/data/300wlp'):
    assert part in cmd


def test_slurm_script_runs_one_distributed_process_per_node():
  out = _dry_run('gpu_slurm.sbatch', 'cfg.py', '/shared/run',
                 '--config.optimizer.lr=1e-4')
  assert out.returncode == 0, out.stderr
  words = out.stdout.split()
  assert words[:3] == ['srun', '--ntasks-per-node=1', 'env']
  assert 'JAXFACE_DISTRIBUTED=1' in words
  assert words[words.index('--config') + 1] == 'cfg.py'
  assert '--config.optimizer.lr=1e-4' in words


def test_gpu_node_runs_train_directly():
  out = _dry_run('gpu_node.sh', 'cfg.py', 'runs/x')
  assert out.returncode == 0, out.stderr
  assert out.stdout.split()[:2] == ['jaxface', 'train']
  assert 'JAXFACE_DISTRIBUTED' not in out.stdout


@pytest.mark.parametrize('script', ['tpu_pod.sh', 'tpu_setup.sh',
                                    'gpu_slurm.sbatch', 'gpu_node.sh'])
def test_missing_arguments_print_usage_and_fail(script):
  out = _dry_run(script)
  assert out.returncode == 2
  assert 'usage' in (out.stdout + out.stderr).lower() or script in (
      out.stdout + out.stderr)


def test_distributed_initialization_follows_the_environment(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, 'initialize',
                      lambda **kw: calls.append(kw))
  for name in ('JAXFACE_DISTRIBUTED', 'JAX_COORDINATOR_ADDRESS',
               'JAXFACE_NUM_PROCESSES', 'JAXFACE_PROCESS_ID'):
    monkeypatch.delenv(name, raising=False)
  state_lib.maybe_initialize_distributed()
  assert not calls  # a single process: nothing to do
  monkeypatch.setenv('JAXFACE_DISTRIBUTED', '1')
  state_lib.maybe_initialize_distributed()
  assert calls[-1] == {}  # TPU / Slurm / MPI: JAX finds the rest
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', 'host0:1234')
  monkeypatch.setenv('JAXFACE_NUM_PROCESSES', '4')
  monkeypatch.setenv('JAXFACE_PROCESS_ID', '3')
  state_lib.maybe_initialize_distributed()
  assert calls[-1] == {'coordinator_address': 'host0:1234',
                       'num_processes': 4, 'process_id': 3}
  monkeypatch.setenv('JAXFACE_PROCESS_ID', 'three')
  with pytest.raises(ValueError, match='JAXFACE_PROCESS_ID'):
    state_lib.maybe_initialize_distributed()
