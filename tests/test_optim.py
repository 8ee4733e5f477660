"""Tests of jaxface.train.optim: schedules and optimizers from a config."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import shared

from jaxface.train import optim


def _config(**kwargs):
  config = optim.default_optimizer_config()
  config.update(kwargs)
  return config


def _values(schedule, steps):
  return [float(schedule(step)) for step in steps]


def test_default_config_has_every_documented_field():
  config = optim.default_optimizer_config()
  assert set(config.keys()) == {
      'name', 'lr', 'momentum', 'nesterov', 'b1', 'b2', 'eps', 'weight_decay',
      'grad_clip_norm', 'schedule', 'warmup_steps', 'decay_steps',
      'decay_rate', 'end_lr_fraction'}
  assert config.name == 'adam' and config.lr == 1e-4


def test_constant_schedule():
  schedule = optim.make_schedule(_config(lr=0.3), total_steps=10)
  np.testing.assert_allclose(_values(schedule, [0, 5, 10, 100]), [0.3] * 4)


def test_warmup_ramp_then_constant():
  schedule = optim.make_schedule(_config(lr=0.4, warmup_steps=4), 100)
  np.testing.assert_allclose(_values(schedule, [0, 1, 2, 3, 4, 5, 50]),
                             [0.0, 0.1, 0.2, 0.3, 0.4, 0.4, 0.4], rtol=1e-6)


def test_step_schedule_halves_every_decay_steps():
  # PRNet: halve every 5 epochs (here an epoch is 10 steps).
  config = _config(lr=1e-4, schedule='step', decay_steps=50, decay_rate=0.5)
  schedule = optim.make_schedule(config, total_steps=1000)
  np.testing.assert_allclose(
      _values(schedule, [0, 49, 50, 99, 100, 149, 150, 250]),
      [1e-4, 1e-4, 5e-5, 5e-5, 2.5e-5, 2.5e-5, 1.25e-5, 1e-4 / 32],
      rtol=1e-6)


def test_step_schedule_counts_after_warmup():
  config = _config(lr=1.0, schedule='step', decay_steps=10, decay_rate=0.1,
                   warmup_steps=5)
  schedule = optim.make_schedule(config, total_steps=100)
  np.testing.assert_allclose(_values(schedule, [0, 5, 14, 15, 25]),
                             [0.0, 1.0, 1.0, 0.1, 0.01], rtol=1e-6)


def test_cosine_schedule_midpoint_and_end():
  config = _config(lr=2.0, schedule='cosine', end_lr_fraction=0.1)
  schedule = optim.make_schedule(config, total_steps=100)
  # lr * ((1 - a) * (1 + cos(pi * t)) / 2 + a) with a = 0.1.
  quarter = 2.0 * (0.9 * (1 + math.cos(math.pi / 4)) / 2 + 0.1)
  np.testing.assert_allclose(_values(schedule, [0, 25, 50, 100, 200]),
                             [2.0, quarter, 1.1, 0.2, 0.2], rtol=1e-6)


def test_cosine_schedule_with_warmup():
  config = _config(lr=1.0, schedule='cosine', warmup_steps=10)
  schedule = optim.make_schedule(config, total_steps=110)
  np.testing.assert_allclose(_values(schedule, [0, 5, 10, 60, 110]),
                             [0.0, 0.5, 1.0, 0.5, 0.0], rtol=1e-6, atol=1e-7)


def test_linear_schedule_end():
  config = _config(lr=1.0, schedule='linear', end_lr_fraction=0.25,
                   warmup_steps=20)
  schedule = optim.make_schedule(config, total_steps=120)
  np.testing.assert_allclose(_values(schedule, [10, 20, 70, 120, 500]),
                             [0.5, 1.0, 0.625, 0.25, 0.25], rtol=1e-6)


@pytest.mark.parametrize('field, value, choices', [
    ('name', 'rmsprop', 'sgd, adam, adamw'),
    ('schedule', 'exponential', 'constant, step, cosine, linear'),
])
def test_unknown_names_list_the_choices(field, value, choices):
  config = _config(**{field: value})
  with pytest.raises(ValueError, match=f"{value!r}.*{choices}"):
    optim.make_optimizer(config, 100)


def test_unknown_field_is_refused():
  config = ml_collections.ConfigDict({'name': 'sgd', 'learning_rate': 0.1})
  with pytest.raises(ValueError, match='learning_rate'):
    optim.make_optimizer(config, 100)


def test_partial_config_takes_defaults():
  config = ml_collections.ConfigDict({'name': 'sgd', 'lr': 0.5})
  schedule = optim.make_schedule(config, 10)
  assert float(schedule(3)) == 0.5
  optim.make_optimizer(config, 10)


@pytest.mark.parametrize('kwargs, match', [
    ({'schedule': 'step'}, 'decay_steps'),
    ({'schedule': 'cosine', 'warmup_steps': 100}, 'warmup_steps'),
    ({'warmup_steps': -1}, 'warmup_steps'),
])
def test_inconsistent_steps_are_refused(kwargs, match):
  with pytest.raises(ValueError, match=match):
    optim.make_schedule(_config(**kwargs), 100)


def _toy_problem():
  rng = np.random.default_rng(0)
  params = {'w': jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
            'b': jnp.asarray(rng.normal(size=(4,)), jnp.float32)}
  x = jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)

  def loss(p):
    return jnp.mean((x @ p['w'] + p['b'] - y) ** 2)

  return params, jax.grad(loss)


def _run(tx, steps=5):
  """Returns the updates of `steps` optimizer steps on the toy problem."""
  params, grad = _toy_problem()
  state = tx.init(params)
  updates_seen = []
  for _ in range(steps):
    updates, state = tx.update(grad(params), state, params)
    params = optax.apply_updates(params, updates)
    updates_seen.append(updates)
  return updates_seen


def _assert_same_updates(ours, reference):
  for a, b in zip(_run(ours), _run(reference)):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-6,
                                                         atol=1e-9), a, b)


@pytest.mark.parametrize('nesterov', [False, True])
def test_sgd_momentum_matches_optax(nesterov):
  config = _config(name='sgd', lr=0.05, momentum=0.8, nesterov=nesterov)
  _assert_same_updates(optim.make_optimizer(config, 100),
                       optax.sgd(0.05, momentum=0.8, nesterov=nesterov))


def test_sgd_without_momentum_matches_optax():
  config = _config(name='sgd', lr=0.05, momentum=0.0)
  _assert_same_updates(optim.make_optimizer(config, 100), optax.sgd(0.05))


def test_sgd_with_l2_matches_optax():
  config = _config(name='sgd', lr=0.05, weight_decay=1e-2)
  _assert_same_updates(
      optim.make_optimizer(config, 100),
      optax.chain(optax.add_decayed_weights(1e-2),
                  optax.sgd(0.05, momentum=0.9)))


def test_adam_matches_optax():
  config = _config(name='adam', lr=1e-3, b1=0.8, b2=0.99, eps=1e-6)
  _assert_same_updates(optim.make_optimizer(config, 100),
                       optax.adam(1e-3, b1=0.8, b2=0.99, eps=1e-6))


def test_adam_with_l2_matches_optax():
  config = _config(name='adam', lr=1e-3, weight_decay=0.1)
  _assert_same_updates(
      optim.make_optimizer(config, 100),
      optax.chain(optax.add_decayed_weights(0.1), optax.adam(1e-3)))


def test_adamw_matches_optax():
  config = _config(name='adamw', lr=1e-3, weight_decay=0.05)
  _assert_same_updates(optim.make_optimizer(config, 100),
                       optax.adamw(1e-3, weight_decay=0.05))


def test_schedule_drives_the_optimizer():
  config = _config(name='sgd', lr=0.1, momentum=0.0, schedule='step',
                   decay_steps=2, decay_rate=0.5)
  schedule = optim.make_schedule(config, 100)
  params, grad = _toy_problem()
  tx = optim.make_optimizer(config, 100)
  state = tx.init(params)
  for step in range(5):
    g = grad(params)
    updates, state = tx.update(g, state, params)
    np.testing.assert_allclose(updates['w'], -float(schedule(step)) * g['w'],
                               rtol=1e-6)
    params = optax.apply_updates(params, updates)


def _global_norm(tree):
  return float(optax.tree.norm(tree))


def test_grad_clip_bounds_the_update_norm():
  params = {'w': jnp.zeros((10,)), 'b': jnp.zeros((3,))}
  big = {'w': jnp.full((10,), 100.0), 'b': jnp.full((3,), -50.0)}
  small = {'w': jnp.full((10,), 1e-3), 'b': jnp.full((3,), 1e-3)}
  config = _config(name='sgd', lr=1.0, momentum=0.0, grad_clip_norm=2.0)
  tx = optim.make_optimizer(config, 100)
  state = tx.init(params)
  updates, _ = tx.update(big, state, params)
  np.testing.assert_allclose(_global_norm(updates), 2.0, rtol=1e-6)
  # Direction preserved.
  np.testing.assert_allclose(
      updates['w'], -big['w'] * 2.0 / _global_norm(big), rtol=1e-6)
  # Small gradients pass unchanged.
  updates, _ = tx.update(small, state, params)
  np.testing.assert_allclose(updates['w'], -small['w'], rtol=1e-6)
  # Without clipping the update is the raw gradient.
  unclipped = optim.make_optimizer(_config(name='sgd', lr=1.0, momentum=0.0),
                                   100)
  updates, _ = unclipped.update(big, unclipped.init(params), params)
  np.testing.assert_allclose(_global_norm(updates), _global_norm(big),
                             rtol=1e-6)


def test_grad_clip_with_adam_bounds_the_first_moment():
  # Adam's first update is lr * sign-like; clipping shows in its state.
  params = {'w': jnp.zeros((4,))}
  big = {'w': jnp.array([300.0, -400.0, 0.0, 0.0])}
  config = _config(name='adam', lr=1e-3, grad_clip_norm=5.0)
  tx = optim.make_optimizer(config, 100)
  _, state = tx.update(big, tx.init(params), params)
  mu = optax.tree_utils.tree_get(state, 'mu')['w']
  np.testing.assert_allclose(mu, 0.1 * np.array([3.0, -4.0, 0.0, 0.0]),
                             rtol=1e-6)


def _two_convolutions(params, x):
  """A loss of two 3x3 convolutions and a scale: the second kernel is also
  read by the input gradient into the first, which does not lead to its
  own update."""
  conv = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  y = conv(jax.nn.relu(conv(x, params['w1'])), params['w2']) * params['s']
  return jnp.mean(y ** 2)


def _two_convolution_problem():
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  params = {'w1': jax.random.normal(k1, (3, 3, 4, 8)) * 0.3,
            'w2': jax.random.normal(k2, (3, 3, 8, 8)) * 0.3,
            's': jnp.ones((8,))}
  return params, jax.random.normal(k3, (2, 8, 8, 4))


def test_apply_gradients_is_the_optimizer_update_and_the_norm():
  params, x = _two_convolution_problem()
  tx = optim.make_optimizer(_config(name='adam', lr=1e-2), 100)
  opt_state = tx.init(params)
  grads = jax.grad(_two_convolutions)(params, x)
  new_params, new_opt_state, norm = optim.apply_gradients(
      tx, grads, opt_state, params)
  updates, want_opt_state = tx.update(grads, opt_state, params)
  jax.tree.map(np.testing.assert_array_equal, new_params,
               optax.apply_updates(params, updates))
  jax.tree.map(np.testing.assert_array_equal, new_opt_state, want_opt_state)
  flat = np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads)])
  np.testing.assert_allclose(norm, np.sqrt(np.sum(flat.astype(np.float64)
                                                  ** 2)), rtol=1e-5)


@pytest.mark.parametrize('bad', [np.nan, np.inf])
def test_a_non_finite_gradient_leaves_the_parameters(bad):
  params, x = _two_convolution_problem()
  tx = optim.make_optimizer(_config(name='adam', lr=1e-2), 100)
  grads = jax.grad(_two_convolutions)(params, x)
  grads['w1'] = grads['w1'].at[0, 0, 0, 0].set(bad)  # one entry of one leaf
  new_params, _, norm = jax.jit(optim.apply_gradients, static_argnums=0)(
      tx, grads, tx.init(params), params)
  assert not np.isfinite(float(norm))
  jax.tree.map(np.testing.assert_array_equal, new_params, params)


def test_donated_parameters_are_updated_in_place():
  params, x = _two_convolution_problem()
  tx = optim.make_optimizer(_config(name='adam', lr=1e-2), 100)

  def step(params, opt_state, x):
    grads = jax.grad(_two_convolutions)(params, x)
    return optim.apply_gradients(tx, grads, opt_state, params)[:2]

  def plain_step(params, opt_state, x):
    grads = jax.grad(_two_convolutions)(params, x)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  compiled = lambda f: jax.jit(f, donate_argnums=(0, 1)).lower(
      params, tx.init(params), x).compile().as_text()
  # Without the update's dependency on every gradient XLA:CPU copies them.
  if jax.default_backend() == 'cpu':
    assert shared.copied_parameters(compiled(plain_step))
  assert shared.copied_parameters(compiled(step)) == []
