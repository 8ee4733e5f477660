"""The training loop's periodic pieces that need no training run."""

import jax
import jax.numpy as jnp
import pytest

from jaxface.train import periodic


@jax.jit
def _slow_step(x):
  """A few ms of compute: the host dispatches far faster."""
  for _ in range(8):
    x = jnp.tanh(x @ x)
  return x, {'loss': x.mean()}


def test_the_metric_window_keeps_at_most_two_steps_in_flight():
  window = periodic.MetricWindow()
  x = jnp.eye(512) * 0.5
  dispatched, unfinished = [], []
  for step in range(1, 13):
    x, metrics = _slow_step(x)
    window.add(step, metrics)
    dispatched.append(metrics['loss'])
    unfinished.append(sum(not loss.is_ready() for loss in dispatched))
  assert max(unfinished) <= 2
  assert max(unfinished) >= 1  # the host did run ahead of the device
  window.fetch(lambda: '')
  assert all(loss.is_ready() for loss in dispatched)
  assert set(window.means(4)) == {'train/loss', 'train/images_per_second'}


def test_the_metric_window_refuses_no_step_in_flight():
  with pytest.raises(ValueError, match='steps_in_flight'):
    periodic.MetricWindow(steps_in_flight=0)
