"""Test set-up: 8 fake CPU devices and a persistent compilation cache.

XLA_FLAGS must be set before JAX initialises its backends, so it is set here,
before any test module imports jax.
"""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault(
    'JAX_COMPILATION_CACHE_DIR',
    os.path.join(os.path.dirname(os.path.dirname(__file__)), '.jax_cache'))
