"""Optimizers and learning-rate schedules built from an ml_collections config.

    config = optim.default_optimizer_config()
    config.name = 'sgd'
    config.lr = 0.1
    config.schedule = 'cosine'
    tx = optim.make_optimizer(config, total_steps=10_000)
    schedule = optim.make_schedule(config, total_steps=10_000)  # for logging

The config's fields (`default_optimizer_config` gives every one of them with
its default):

  name            'sgd', 'adam' or 'adamw'.
  lr              the peak learning rate (the rate after warm-up).
  momentum        sgd: the momentum (0 = plain SGD).
  nesterov        sgd: use Nesterov momentum.
  b1, b2, eps     adam / adamw: the moment decay rates and epsilon.
  weight_decay    adamw: the decoupled weight decay (optax.adamw's, scaled by
                  the learning rate). sgd / adam: an L2 penalty when > 0,
                  applied as `optax.add_decayed_weights` before the optimizer
                  (the gradient gets weight_decay * params added). Applies to
                  every parameter, biases and norm scales included.
  grad_clip_norm  clip the gradients to this global norm before anything else
                  (the L2 term included after it); 0 = off.
  schedule        'constant', 'step', 'cosine' or 'linear'.
  warmup_steps    a linear ramp from 0 (at step 0) to `lr` (at step
                  `warmup_steps`); 0 = none. The schedule proper starts after
                  it: its step s is the optimizer's step warmup_steps + s.
  decay_steps     'step': multiply the rate by `decay_rate` every
                  `decay_steps` steps after warm-up (PRNet: halve it every 5
                  epochs, i.e. decay_rate 0.5 and decay_steps 5 epochs of
                  steps).
  decay_rate      'step': the factor per decay.
  end_lr_fraction 'cosine' / 'linear': the rate at `total_steps`, as a fraction
                  of `lr` (it stays there afterwards).

The defaults are Adam at 1e-4 with a constant rate; PRNet's recipe adds
schedule 'step' with decay_rate 0.5 and decay_steps = 5 epochs of steps.

A schedule is a function of the update count (optax's `count`, 0 for the first
update), as optax's schedules are.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ('sgd', 'adam', 'adamw')
SCHEDULES = ('constant', 'step', 'cosine', 'linear')


def default_optimizer_config() -> ml_collections.ConfigDict:
  """Returns the optimizer config with every field at its default."""
  return ml_collections.ConfigDict({
      'name': 'adam',
      'lr': 1e-4,
      'momentum': 0.9,
      'nesterov': False,
      'b1': 0.9,
      'b2': 0.999,
      'eps': 1e-8,
      'weight_decay': 0.0,
      'grad_clip_norm': 0.0,
      'schedule': 'constant',
      'warmup_steps': 0,
      'decay_steps': 0,
      'decay_rate': 0.5,
      'end_lr_fraction': 0.0,
  })


def _complete(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Returns the defaults updated with `config`; unknown fields raise."""
  full = default_optimizer_config()
  unknown = sorted(set(config.keys()) - set(full.keys()))
  if unknown:
    raise ValueError(
        f'unknown optimizer config field(s) {unknown}; the fields are '
        f'{sorted(full.keys())}')
  for key in config.keys():
    full[key] = config[key]
  return full


def _choice(value: str, choices: tuple[str, ...], what: str) -> str:
  if value not in choices:
    raise ValueError(
        f'unknown {what} {value!r}; choose one of {", ".join(choices)}')
  return value


def make_schedule(config: ml_collections.ConfigDict,
                  total_steps: int) -> optax.Schedule:
  """Returns the learning-rate schedule of `config` over `total_steps` steps.

  Args:
    config: an optimizer config (see the module docstring); missing fields
      take their defaults.
    total_steps: the length of training in optimizer steps; 'cosine' and
      'linear' reach their end value there.

  Raises:
    ValueError: an unknown schedule or field, or inconsistent step counts.
  """
  config = _complete(config)
  kind = _choice(config.schedule, SCHEDULES, 'schedule')
  lr = float(config.lr)
  warmup = int(config.warmup_steps)
  if warmup < 0:
    raise ValueError(f'warmup_steps must be >= 0, got {warmup}')
  if kind == 'constant':
    main = optax.constant_schedule(lr)
  elif kind == 'step':
    if int(config.decay_steps) <= 0:
      raise ValueError(
          f"schedule 'step' needs decay_steps > 0, got {config.decay_steps}")
    main = optax.exponential_decay(
        lr, transition_steps=int(config.decay_steps),
        decay_rate=float(config.decay_rate), staircase=True)
  else:
    decay = int(total_steps) - warmup
    if decay <= 0:
      raise ValueError(
          f'schedule {kind!r} needs total_steps ({total_steps}) > '
          f'warmup_steps ({warmup})')
    end = lr * float(config.end_lr_fraction)
    if kind == 'cosine':
      main = optax.cosine_decay_schedule(
          lr, decay_steps=decay, alpha=float(config.end_lr_fraction))
    else:
      main = optax.linear_schedule(lr, end, transition_steps=decay)
  if warmup == 0:
    return main
  ramp = optax.linear_schedule(0.0, lr, transition_steps=warmup)
  return optax.join_schedules([ramp, main], boundaries=[warmup])


def make_optimizer(config: ml_collections.ConfigDict,
                   total_steps: int) -> optax.GradientTransformation:
  """Returns the optimizer of `config`, with its schedule, clipping and decay.

  The chain is: clip_by_global_norm (if grad_clip_norm > 0), then
  add_decayed_weights (sgd / adam with weight_decay > 0), then the optimizer
  with `make_schedule(config, total_steps)` as its learning rate.

  Raises:
    ValueError: an unknown optimizer, schedule or field.
  """
  config = _complete(config)
  name = _choice(config.name, OPTIMIZERS, 'optimizer')
  schedule = make_schedule(config, total_steps)
  weight_decay = float(config.weight_decay)
  clip = float(config.grad_clip_norm)
  if weight_decay < 0:
    raise ValueError(f'weight_decay must be >= 0, got {weight_decay}')
  if clip < 0:
    raise ValueError(f'grad_clip_norm must be >= 0 (0 = off), got {clip}')
  chain = []
  if clip > 0:
    chain.append(optax.clip_by_global_norm(clip))
  if name == 'sgd':
    if weight_decay > 0:
      chain.append(optax.add_decayed_weights(weight_decay))
    momentum = float(config.momentum)
    chain.append(optax.sgd(schedule, momentum=momentum or None,
                           nesterov=bool(config.nesterov)))
  elif name == 'adam':
    if weight_decay > 0:
      chain.append(optax.add_decayed_weights(weight_decay))
    chain.append(optax.adam(schedule, b1=float(config.b1), b2=float(config.b2),
                            eps=float(config.eps)))
  else:
    chain.append(optax.adamw(schedule, b1=float(config.b1),
                             b2=float(config.b2), eps=float(config.eps),
                             weight_decay=weight_decay))
  return chain[0] if len(chain) == 1 else optax.chain(*chain)


def apply_gradients(tx: optax.GradientTransformation, grads, opt_state,
                    params):
  """One update of `params` by `tx`: (params, opt_state, grad_norm), the
  last the gradients' global L2 norm.

  Where that norm is not finite (a NaN or inf gradient), the parameters
  stay as they were (the optimizer's state takes the step as optax computes
  it; the training loop stops at the step's non-finite loss).

  The select on the norm is also what lets XLA update donated parameters
  in place: every parameter's update then depends on every gradient, so it
  comes after every reader of the old parameters. Without it XLA:CPU, which
  runs independent operations at the same time, copies each donated
  parameter at the start of the step (a kernel is also read by the input
  gradient into the layer below, which does not lead to the kernel's own
  update). Readers outside this update's gradients (a generator's step
  reading the discriminator's parameters) can still need a copy.
  """
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(grad_norm)
  updates, opt_state = tx.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)
  params = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                        new_params, params)
  return params, opt_state, grad_norm
