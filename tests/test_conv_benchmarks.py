"""The hand-made convolution forms timed by `experiments/benchmarks/`
compute what XLA's do, the step profile counts each trace event once, and
the roofline counts each convolution's work."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.benchmarks import conv_transpose_speed
from experiments.benchmarks import conv_weight_grad as cwg
from experiments.benchmarks import roofline
from experiments.benchmarks import step_profile
from jaxface import host_setup


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


@pytest.mark.parametrize('x_shape, kernel_shape, padding', [
    ((2, 10, 9, 3), (4, 4, 3, 5), cwg.TRANSPOSE4),  # 5: past a multiple of 4
    ((1, 6, 7, 8), (4, 4, 8, 8), ((1, 2), (1, 2))),
    ((2, 7, 6, 2), (3, 4, 2, 4), ((0, 0), (3, 0))),  # 3 rows, 'VALID' rows
])
def test_the_row_kernel_gradient_matches_xla(x_shape, kernel_shape, padding):
  rng = np.random.default_rng(3)
  x = rng.normal(size=x_shape).astype(np.float32)
  conv = lambda k: jax.lax.conv_general_dilated(  # noqa: E731
      x, k, (1, 1), padding, dimension_numbers=cwg.DIMS)
  out, vjp = jax.vjp(conv, jnp.zeros(kernel_shape))
  g = rng.normal(size=out.shape).astype(np.float32)
  np.testing.assert_allclose(
      cwg.weight_grad_rows(x, g, padding, kernel_shape[0]), vjp(g)[0],
      atol=2e-4, rtol=1e-5)


def test_the_sub_pixel_gradient_form_matches_xla_on_any_device():
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (2, 8, 8, 3))
  kernel = jax.random.normal(keys[1], (4, 4, 3, 5))
  g = jax.random.normal(keys[2], (2, 4, 4, 5))
  xla = jax.vjp(conv_transpose_speed._conv, x, kernel)  # pylint: disable=protected-access
  mine = jax.vjp(conv_transpose_speed.subpixel_grad_conv, x, kernel)
  np.testing.assert_allclose(mine[0], xla[0], atol=1e-5)
  for got, want in zip(mine[1](g), xla[1](g)):
    np.testing.assert_allclose(got, want, atol=2e-4)
  # Its input gradient is sub-pixel also when lowered for a GPU: stride-1
  # convolutions only, where XLA's own has an input dilation; likewise its
  # kernel gradient has no window dilation.
  def grad_text(fn, wrt):  # wrt 0: the input, 1: the kernel
    return jax.jit(jax.grad(lambda x, k: fn(x, k).sum(), argnums=wrt)).trace(
        x, kernel).lower(lowering_platforms=('cuda',)).as_text()
  assert 'lhs_dilate = [2, 2]' in grad_text(conv_transpose_speed._conv, 0)  # pylint: disable=protected-access
  assert 'lhs_dilate = [2, 2]' not in grad_text(
      conv_transpose_speed.subpixel_grad_conv, 0)
  assert 'rhs_dilate = [2, 2]' in grad_text(conv_transpose_speed._conv, 1)  # pylint: disable=protected-access
  assert 'rhs_dilate = [2, 2]' not in grad_text(
      conv_transpose_speed.subpixel_grad_conv, 1)
  np.testing.assert_allclose(
      conv_transpose_speed.phase_kernel_grad(x, g),
      conv_transpose_speed.xla_kernel_grad(x, g), atol=2e-4)


def test_step_profile_counts_a_gpu_kernel_once_under_its_operation():
  ops = {'fusion.1': ('f32[2]', 'fusion(...)'),
         'custom-call.3': ('(bf16[2], u8[0])',
                           'custom-call(...), custom_call_target='
                           '"__cudnn$convForward"')}
  # A GPU trace: an event per operation on the host side and the kernels
  # that carry the operation they run.
  gpu = [{'ph': 'X', 'name': 'fusion.1', 'ts': 0, 'dur': 100},
         {'ph': 'X', 'name': 'loop_add_kernel', 'ts': 110, 'dur': 7,
          'args': {'hlo_op': 'fusion.1'}},
         {'ph': 'X', 'name': 'sm90_xmma_fprop', 'ts': 120, 'dur': 30,
          'args': {'hlo_op': 'custom-call.3'}},
         {'ph': 'X', 'name': 'sm90_xmma_fprop', 'ts': 150, 'dur': 20,
          'args': {'hlo_op': 'custom-call.3'}},
         {'ph': 'i', 'name': 'fusion.1', 'ts': 0, 'dur': 5}]
  assert step_profile._op_times(gpu, ops) == {'fusion.1': 7,  # pylint: disable=protected-access
                                              'custom-call.3': 50}
  cpu = [{'ph': 'X', 'name': 'fusion.1', 'ts': 0, 'dur': 100},
         {'ph': 'X', 'name': 'other', 'ts': 0, 'dur': 3}]
  assert step_profile._op_times(cpu, ops) == {'fusion.1': 100}  # pylint: disable=protected-access
  # XLA:CPU's asynchronous operations (Eigen's convolutions): the start's
  # event lasts as long as the dispatch, 'end: NAME' marks the finish, on
  # any thread; two runs.
  ops['convolution.2'] = ('f32[4,8,8,16]', 'convolution(...)')
  asynchronous = [
      {'ph': 'X', 'name': 'convolution.2', 'ts': 10, 'dur': 1, 'tid': 1,
       'args': {'hlo_op': 'convolution.2'}},
      {'ph': 'X', 'name': 'fusion.1', 'ts': 12, 'dur': 5, 'tid': 1,
       'args': {'hlo_op': 'fusion.1'}},
      {'ph': 'X', 'name': 'end: convolution.2', 'ts': 50, 'dur': 1, 'tid': 2},
      {'ph': 'X', 'name': 'convolution.2', 'ts': 100, 'dur': 1, 'tid': 2,
       'args': {'hlo_op': 'convolution.2'}},
      {'ph': 'X', 'name': 'end: convolution.2', 'ts': 130, 'dur': 1, 'tid': 1}]
  assert step_profile._op_times(asynchronous, ops) == {  # pylint: disable=protected-access
      'convolution.2': 41 + 31, 'fusion.1': 5}
  with pytest.raises(ValueError, match='2 starts but 1 ends'):
    step_profile._op_times(asynchronous[:-1], ops)  # pylint: disable=protected-access
  assert step_profile._kind('custom-call.3', ops['custom-call.3'][1]) == (  # pylint: disable=protected-access
      'convolution')
  assert step_profile._kind('transpose_fusion.2', '') == 'layout copy'  # pylint: disable=protected-access


@pytest.mark.parametrize('stride', [1, 2])
def test_roofline_counts_each_convolution_and_its_gradients(stride):
  # A 3x3 convolution 3 -> 5 over 2 images of 8x8, and its two gradients:
  # each does the forward pass's multiply-adds (the input gradient of a
  # strided one up to the zeros its dilation adds at the borders).
  def loss(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (stride, stride), 'SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC')).sum()

  x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 5))
  forward = roofline.convolutions(jax.jit(loss).lower(x, w).as_text())
  both = roofline.convolutions(
      jax.jit(jax.grad(loss, (0, 1))).lower(x, w).as_text())
  side = 8 // stride
  expected = 2 * (2 * side * side * 5) * 9 * 3
  assert [c.flops for c in forward] == [expected]
  assert forward[0].bytes == 4 * (2 * 8 * 8 * 3 + 9 * 3 * 5 +
                                  2 * side * side * 5)
  assert forward[0].out == f'2x{side}x{side}x5xf32'
  assert len(both) == 2  # the input and the weight gradient
  for c in both:
    assert c.flops == pytest.approx(expected, rel=0.15 if stride > 1 else 0)
  rates = (1e12, 1e11)  # FLOP/s, bytes/s
  assert forward[0].seconds(*rates) == pytest.approx(forward[0].bytes / 1e11)
  assert forward[0].memory_bound(*rates)


def test_conv_library_flags_replace_the_fusion_types():
  from experiments.benchmarks import conv_library
  flags = conv_library.library_flags(
      '--xla_dump_to=/tmp/d '
      '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution',
      'ynnpack')
  assert flags.split() == [
      '--xla_dump_to=/tmp/d',
      '--xla_cpu_experimental_ynn_fusion_type=+individual_convolution']
  assert conv_library.library_flags('', 'eigen') == (
      '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution')


@pytest.mark.skipif(
    not host_setup.xla_flags('', host_setup.jaxlib_version()),
    reason='the YNNPACK fusion flag was measured on jaxlib 0.10 only')
def test_conv_library_times_both_libraries_in_their_own_processes():
  from experiments.benchmarks import conv_library
  runs = {library: conv_library.measure_library(library, '1x8x24', 1, 1)
          for library in conv_library.LIBRARIES}
  for library, run in runs.items():
    assert set(run) == {'1x8x24'}
    times = dict(run['1x8x24'])
    # The flag reached XLA: the forward pass calls the library asked for.
    assert times.pop('forward_library') == library
    assert set(times) == set(conv_library.MEASUREMENTS)
    assert all(ms > 0 for ms in times.values())
