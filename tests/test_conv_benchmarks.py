"""The hand-made convolution forms timed by
`experiments/benchmarks/conv_weight_grad.py` compute what XLA's do."""

import jax
import numpy as np

from experiments.benchmarks import conv_weight_grad as cwg


def test_winograd_matrices_give_the_correlation():
  at, g, bt = cwg.winograd_matrices(4, 4, cwg.POINTS)
  rng = np.random.default_rng(0)
  kernel, signal = rng.normal(size=4), rng.normal(size=7)
  expected = [sum(kernel[j] * signal[k + j] for j in range(4))
              for k in range(4)]
  np.testing.assert_allclose(at @ ((g @ kernel) * (bt @ signal)), expected,
                             rtol=1e-12, atol=1e-12)


def test_winograd_and_per_tap_forms_match_xla():
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (2, 10, 10, 3))  # 10: not a tile multiple
  kernel = jax.random.normal(keys[1], (4, 4, 3, 5))
  g = jax.random.normal(keys[2], (2, 10, 10, 5))
  xla = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
      x, k, (1, 1), cwg.TRANSPOSE4, dimension_numbers=cwg.DIMS)
  mine = lambda x, k: cwg.conv_winograd(x, k, cwg.TRANSPOSE4)  # noqa: E731
  np.testing.assert_allclose(mine(x, kernel), xla(x, kernel), atol=2e-4)
  want = jax.vjp(xla, x, kernel)[1](g)[1]
  np.testing.assert_allclose(jax.vjp(mine, x, kernel)[1](g)[1], want,
                             atol=2e-3, rtol=1e-4)
  np.testing.assert_allclose(cwg.weight_grad_taps(x, g, cwg.TRANSPOSE4), want,
                             atol=2e-4, rtol=1e-5)
  # 'VALID': a smaller output.
  valid = ((0, 0), (0, 0))
  small_g = g[:, :7, :7]
  np.testing.assert_allclose(
      cwg.weight_grad_taps(x, small_g, valid),
      jax.vjp(lambda k: jax.lax.conv_general_dilated(
          x, k, (1, 1), valid, dimension_numbers=cwg.DIMS), kernel)[1](
              small_g)[0], atol=2e-4, rtol=1e-5)
