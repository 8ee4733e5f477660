"""The networks: shapes, parameter counts, exactness, determinism, gradients.

Full-size models are only shape-checked (`jax.eval_shape`); compiled tests
use small resolutions and widths.
"""

import functools
import re

import chex
from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxface import models
from jaxface.train import state as state_lib

KEY = jax.random.key(0)


def _count(tree):
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def _init(module, *args, **kwargs):
  # Jitted (eager init would compile every primitive on its own), without
  # backend optimisation (`state_lib.INIT_COMPILER_OPTIONS`).
  return state_lib.initialize(functools.partial(module.init, **kwargs), KEY,
                              *args)


def _shapes(module, *args, **kwargs):
  return jax.eval_shape(functools.partial(module.init, **kwargs), KEY, *args)


def _apply(module, variables, *args, **kwargs):
  return jax.jit(functools.partial(module.apply, **kwargs))(variables, *args)


# ------------------------------------------------------------ PRNet --------


def test_prnet_full_size_shapes_and_original_parameter_count():
  model = models.PRNet()
  variables = _shapes(model, jnp.zeros((1, 256, 256, 3)))
  # PRNet's ResFCN256 counted with BatchNorm scales and offsets.
  assert _count(variables['params']) == 13_353_618
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((4, 256, 256, 3))),
                       variables)
  chex.assert_shape(out, (4, 256, 256, 3))
  assert out.dtype == jnp.float32
  for res in (64, 128, 512):
    out = jax.eval_shape(lambda v, r=res: model.apply(
        v, jnp.zeros((1, r, r, 3))), variables)
    chex.assert_shape(out, (1, res, res, 3))


def test_prnet_rejects_bad_resolution():
  with pytest.raises(ValueError,
                     match='side must be a positive multiple of 32'):
    _shapes(models.PRNet(), jnp.zeros((1, 48, 48, 3)))


def test_prnet_variants_full_size_shapes():
  images = jnp.zeros((2, 128, 128, 3))
  base = _shapes(models.PRNet(width=0.25), images)
  for kwargs in ({'head': 'conv'}, {'head': 'conv', 'coords': True},
                 {'global_dim': 64}):
    model = models.PRNet(width=0.25, **kwargs)
    variables = _shapes(model, images)
    out = jax.eval_shape(lambda v, m=model: m.apply(v, images), variables)
    chex.assert_shape(out, (2, 128, 128, 3))
    assert _count(variables['params']) != _count(base['params']), kwargs
  with pytest.raises(ValueError, match='unknown PRNet head'):
    _shapes(models.PRNet(head='x'), images)


def test_prnet_conv_head_starts_at_the_centre_and_leaves_the_crop():
  # The procedural head's forehead lies above the crop (y < 0): the conv
  # head is linear, where the original's sigmoid stops at 0.
  model = models.PRNet(width=0.25, head='conv', coords=True)
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  variables = _init(model, images)
  out = np.asarray(_apply(model, variables, images))
  np.testing.assert_allclose(out, 0.5 * 1.1 * 32, rtol=1e-6)
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: x - 1.0 if 'bias' in jax.tree_util.keystr(path) and (
          x.shape == (3,)) else x, variables['params'])
  out = np.asarray(_apply(model, {**variables, 'params': params}, images))
  np.testing.assert_allclose(out, -0.5 * 1.1 * 32, rtol=1e-6)


@pytest.fixture(scope='module')
def small_prnet():
  model = models.PRNet(width=0.25)
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  return model, _init(model, images), images


def test_prnet_small_compiled_train_step(small_prnet):
  model, variables, images = small_prnet

  def loss(params):
    out, updates = model.apply({**variables, 'params': params}, images,
                               train=True, mutable=['batch_stats'])
    return jnp.mean(out), updates

  (value, updates), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
      variables['params'])
  out = _apply(model, variables, images)
  chex.assert_shape(out, (2, 32, 32, 3))
  assert float(out.min()) >= 0 and float(out.max()) <= 1.1 * 32
  chex.assert_tree_all_finite(grads)
  assert float(value) > 0
  # Training mode updated the BatchNorm running statistics.
  before = jax.tree.leaves(variables['batch_stats'])
  after = jax.tree.leaves(updates['batch_stats'])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_prnet_lite_keeps_one_layer_per_resolution_and_skips_add_encoder_features():
  images = jnp.zeros((2, 64, 64, 3))
  full = _shapes(models.PRNet(width=0.25, head='conv'), images)['params']
  lite = _shapes(models.PRNet(width=0.25, head='conv', lite=True),
                 images)['params']
  blocks = lambda p: sorted(k for k in p if k.startswith('ResBlock'))  # noqa: E731
  ups = lambda p: sorted(k for k in p if k.startswith('ConvTranspose'))  # noqa: E731
  assert len(blocks(full)) == 10 and len(ups(full)) == 14
  assert len(blocks(lite)) == 5 and len(ups(lite)) == 6
  # Lite's first decoder layer is the full one's (512 x width at the
  # bottleneck), then one stride-2 layer per side: 256, 128, 64, 32, 16 x
  # width channels; the stride-1 blocks that it drops keep the shapes.
  assert [lite[k]['kernel'].shape[-1] for k in ups(lite)] == [
      128, 64, 32, 16, 8, 4]
  assert lite['ResBlock_4']['Conv_3']['kernel'].shape == (1, 1, 64, 128)
  # skips: a 1x1 projection of the encoder's features after each of the
  # five upsamplings, at sides 4, 8, 16, 32 (the residual blocks' 256, 128,
  # 64, 32 x width channels) and 64 (the stem's 16 x width).
  skips = _shapes(models.PRNet(width=0.25, head='conv', skips=True),
                  images)['params']
  one_by_one = lambda p: [  # noqa: E731
      p[k]['kernel'].shape for k in sorted(
          (k for k in p if k.startswith('Conv_')),
          key=lambda k: int(k.split('_')[1]))
      if p[k]['kernel'].shape[:2] == (1, 1)]
  assert not one_by_one(full)  # the stem is 4x4, the head 3x3
  assert one_by_one(skips) == [
      (1, 1, 64, 64), (1, 1, 32, 32), (1, 1, 16, 16), (1, 1, 8, 8),
      (1, 1, 4, 4)]
  out = _apply(models.PRNet(width=0.25, head='conv', lite=True, skips=True),
               _init(models.PRNet(width=0.25, head='conv', lite=True,
                                  skips=True), images[:, :32, :32]),
               images[:, :32, :32])
  chex.assert_shape(out, (2, 32, 32, 3))


def _full_resolution_layers(model, images):
  """The names of `model`'s layers whose outputs have the input's side."""
  variables = _shapes(model, images)  # shapes only: nothing compiles
  _, state = jax.eval_shape(functools.partial(
      model.apply, capture_intermediates=True), variables, images)
  sides = {'/'.join(path[:-1]): value[0].shape[1] for path, value in
           traverse_util.flatten_dict(state['intermediates']).items()}
  assert sides.pop('') == images.shape[1]  # the network's output
  assert len(sides) > 20  # every layer was captured
  return variables['params'], sorted(
      name for name, side in sides.items() if side == images.shape[1])


@pytest.mark.parametrize('lite', [True, False])
def test_prnet_half_res_options_take_the_full_resolution_layers_out(lite):
  images = jnp.zeros((2, 64, 64, 3))
  kwargs = dict(width=0.25, head='conv', coords=True, lite=lite, skips=True)
  _, plain = _full_resolution_layers(models.PRNet(**kwargs), images)
  stem = {'Conv_0', 'BatchNorm_0', 'ResBlock_0'}
  assert stem <= {name.split('/')[0] for name in plain}
  # The head: every full-resolution layer left is the stem's (the first
  # convolution, its BatchNorm, the first block's wide-side layers).
  _, head = _full_resolution_layers(
      models.PRNet(**kwargs, half_res_head=True), images)
  assert head and {name.split('/')[0] for name in head} == stem, head
  # Both: no layer at full resolution.
  params, none = _full_resolution_layers(
      models.PRNet(**kwargs, half_res_head=True, half_res_stem=True), images)
  assert not none, none
  # The stem is one 4x4 stride-2 convolution to the first block's channels
  # (32 x width) in place of the first convolution and that block.
  assert params['Conv_0']['kernel'].shape == (4, 4, 5, 8)
  full = _shapes(models.PRNet(**kwargs), images)['params']
  count = lambda p, kind: sum(k.startswith(kind) for k in p)  # noqa: E731
  assert count(params, 'ResBlock') == count(full, 'ResBlock') - 1
  # lite: the one upsampling to full resolution goes; PRNet's decoder: also
  # the 16 x width layer after it.
  assert count(params, 'ConvTranspose') == count(
      full, 'ConvTranspose') - (1 if lite else 2)
  with pytest.raises(ValueError, match="half_res_head needs head 'conv'"):
    _shapes(models.PRNet(width=0.25, half_res_head=True), images)


def test_prnet_half_res_head_puts_each_positions_12_channels_on_its_2x2_texels():
  # The head's 12 channels at half-resolution position (i, j) are the map's
  # texels (2i + dy, 2j + dx), channel c, in (dy, dx, c) order: with a zero
  # kernel the map is the head's bias, placed texel by texel.
  model = models.PRNet(width=0.25, head='conv', lite=True, half_res_head=True)
  images = jnp.zeros((1, 32, 32, 3))
  variables = _init(model, images)
  head = max((k for k in variables['params'] if k.startswith('Conv_')),
             key=lambda k: int(k.split('_')[1]))
  bias = np.array([100 * dy + 10 * dx + c for dy in (0, 1) for dx in (0, 1)
                   for c in range(3)], np.float32)
  params = dict(variables['params'])
  params[head] = {**params[head], 'bias': jnp.asarray(bias)}
  out = np.asarray(_apply(model, {**variables, 'params': params}, images))
  scale = 1.1 * 32
  for dy in (0, 1):
    for dx in (0, 1):
      for c in range(3):
        np.testing.assert_allclose(
            out[0, dy::2, dx::2, c], (100 * dy + 10 * dx + c + 0.5) * scale,
            rtol=1e-6)


def test_prnet_standardize_ignores_each_images_brightness_and_contrast():
  # Two images, each channel of each scaled and shifted its own way: with
  # standardize the first layer's features barely move, without it they
  # move (a per-image affine colour change reaches the features).
  images = jax.random.uniform(KEY, (2, 32, 32, 3), minval=0.2, maxval=0.8)
  gain = jnp.array([[0.6, 0.8, 0.7], [1.2, 1.1, 1.15]])[:, None, None]
  offset = jnp.array([[0.25, 0.1, 0.2], [-0.15, -0.1, -0.05]])[:, None, None]
  moved = {}
  for standardize in (False, True):
    model = models.PRNet(width=0.25, lite=True, standardize=standardize)
    variables = _init(model, images)
    stem = lambda x: _apply(  # noqa: E731  the stem conv's output
        model, variables, x, capture_intermediates=True,
        mutable=['intermediates'])[1]['intermediates']['Conv_0'][
            '__call__'][0]
    before, after = stem(images), stem(images * gain + offset)
    moved[standardize] = float(jnp.max(jnp.abs(after - before))
                               / jnp.max(jnp.abs(before)))
  # Measured 0.18 and 0.022 (the remainder: the 1e-2 added to the std).
  assert moved[False] > 0.1, moved
  assert moved[True] < 0.2 * moved[False], moved


def test_prnet_flip_average_is_the_mean_with_the_mirror_images_map():
  # The same weights with and without flip_average; by hand: the map of
  # the mirrored image, its columns reversed and x -> 31 - x, averaged with
  # the plain map. Training (train=True) ignores it.
  images = jax.random.uniform(KEY, (2, 32, 32, 3))
  plain = models.PRNet(width=0.25, lite=True, head='conv')
  both = models.PRNet(width=0.25, lite=True, head='conv', flip_average=True)
  variables = _init(plain, images)
  chex.assert_trees_all_equal_shapes(
      variables, jax.eval_shape(both.init, KEY, images))
  direct = np.asarray(_apply(plain, variables, images))
  mirrored = np.asarray(_apply(plain, variables, images[:, :, ::-1]))
  back = mirrored[:, :, ::-1].copy()
  back[..., 0] = 31.0 - back[..., 0]
  averaged = np.asarray(_apply(both, variables, images))
  np.testing.assert_allclose(averaged, 0.5 * (direct + back), atol=1e-4)
  assert np.abs(averaged - direct).max() > 1e-3  # the mirror did count
  trained, _ = _apply(both, variables, images, train=True,
                      mutable=['batch_stats'])
  train_plain, _ = _apply(plain, variables, images, train=True,
                          mutable=['batch_stats'])
  np.testing.assert_array_equal(trained, train_plain)


def test_quickly_compiled_init_equals_a_plain_jit():
  # state.initialize compiles without XLA's backend optimisation; the
  # values are the same draws, equal to float rounding.
  model = nn.Sequential([nn.Conv(8, (3, 3)), nn.relu, nn.Dense(4)])
  x = jnp.ones((1, 8, 8, 3))
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  quick = state_lib.initialize(model.init, KEY, x, sharding=sharding)
  plain = jax.jit(model.init)(KEY, x)
  chex.assert_trees_all_close(quick, plain, rtol=1e-6, atol=1e-7)
  assert all(leaf.sharding == sharding for leaf in jax.tree.leaves(quick))
  other = state_lib.initialize(model.init, jax.random.key(1), x)
  assert not np.allclose(other['params']['layers_0']['kernel'],
                         quick['params']['layers_0']['kernel'])


def test_prnet_is_deterministic_for_a_seed(small_prnet):
  model, variables, images = small_prnet
  again = _init(model, images)
  chex.assert_trees_all_equal(variables, again)
  other = state_lib.initialize(model.init, jax.random.key(7), images)
  assert any(not np.allclose(a, b) for a, b in zip(
      jax.tree.leaves(other['params']), jax.tree.leaves(variables['params'])))
  np.testing.assert_array_equal(_apply(model, variables, images),
                                _apply(model, variables, images))


def test_prnet_bfloat16_compute_is_close_to_float32(small_prnet):
  model, variables, images = small_prnet
  bf16 = models.PRNet(width=0.25, dtype=jnp.bfloat16)
  out32 = _apply(model, variables, images)
  out16 = _apply(bf16, variables, images)
  assert out16.dtype == jnp.float32  # outputs are float32 pixels
  # Parameters stay float32 in the bfloat16 model.
  params16 = _shapes(bf16, images)['params']
  assert {np.dtype(x.dtype) for x in jax.tree.leaves(params16)} == {
      np.dtype('float32')}
  err = np.abs(np.asarray(out16) - np.asarray(out32))
  assert err.mean() < 0.02 * 32 and err.max() < 0.1 * 32


# ------------------------------------------------ transposed convolution ---


@pytest.mark.parametrize('ndim', [1, 2, 3])
def test_subpixel_transposed_conv_equals_lax_reference(ndim):
  rng = np.random.default_rng(ndim)
  x = jnp.asarray(rng.normal(size=(2,) + (5,) * ndim + (3,)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(4,) * ndim + (3, 4)), jnp.float32)
  spatial = 'DHW'[-ndim:]
  ref = jax.lax.conv_transpose(
      x, kernel, (2,) * ndim, 'SAME',
      dimension_numbers=(f'N{spatial}C', f'{spatial}IO', f'N{spatial}C'))
  got = models.conv_transpose_subpixel(x, kernel)
  chex.assert_shape(got, ref.shape)
  np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize('ndim', [1, 2, 3])
def test_stacked_transposed_conv_and_its_gradients_equal_lax(ndim):
  # Sides differ per axis, so that an axis or parity mix-up shows.
  rng = np.random.default_rng(10 + ndim)
  x = jnp.asarray(rng.normal(size=(2,) + (3, 4, 5)[-ndim:] + (3,)),
                  jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(4,) * ndim + (3, 4)), jnp.float32)
  spatial = 'DHW'[-ndim:]
  reference = lambda x, kernel: jax.lax.conv_transpose(  # noqa: E731
      x, kernel, (2,) * ndim, 'SAME',
      dimension_numbers=(f'N{spatial}C', f'{spatial}IO', f'N{spatial}C'))
  want, want_vjp = jax.vjp(reference, x, kernel)
  got, got_vjp = jax.vjp(models.layers.conv_transpose_stacked, x, kernel)
  np.testing.assert_allclose(got, want, atol=1e-4)
  g = jnp.asarray(rng.normal(size=want.shape), jnp.float32)
  for ours, theirs in zip(got_vjp(g), want_vjp(g)):
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_3d_transposed_conv_is_one_convolution_on_cpu():
  x = jax.random.normal(jax.random.key(3), (2, 3, 4, 5, 6))
  ours = models.ConvTranspose(4, (4, 4, 4), (2, 2, 2))
  theirs = nn.ConvTranspose(4, (4, 4, 4), (2, 2, 2), padding='SAME',
                            use_bias=False)
  params = ours.init(KEY, x)
  np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x),
                             atol=1e-4)
  forward = jax.jit(ours.apply).lower(params, x).compile().as_text()
  assert forward.count(' convolution(') == 1
  # One convolution for each gradient, the kernel's written out: XLA's own
  # of the stacked convolution has a reversed window (20 times slower on
  # CPU).
  grad = jax.jit(jax.grad(lambda p: ours.apply(p, x).sum())).lower(
      params).compile().as_text()
  assert grad.count(' convolution(') == 1  # the forward pass is not needed
  assert 'rhs_reversal' not in grad
  both = jax.jit(jax.grad(lambda p, x: ours.apply(p, x).sum(), (0, 1))).lower(
      params, x).compile().as_text()
  assert both.count(' convolution(') == 2


@pytest.mark.parametrize('strides, kernel_size, cin', [
    ((2, 2, 2), (4, 4, 4), 1), ((1, 1, 1), (3, 3, 3), 2)])
def test_3d_conv_of_few_channels_is_a_matrix_product_on_cpu(
    strides, kernel_size, cin):
  # Patches of 64 and 54 taps x channels: `conv_as_patches` forward and
  # backward, equal to flax's module; sides differ per axis.
  x = jax.random.normal(jax.random.key(4), (2, 4, 6, 8, cin))
  ours = models.layers.Conv(5, kernel_size, strides)
  theirs = nn.Conv(5, kernel_size, strides, padding='SAME')
  params = ours.init(KEY, x)
  chex.assert_trees_all_equal_shapes(params, theirs.init(KEY, x))
  loss = lambda module: lambda p, x: (module.apply(p, x) ** 2).sum()  # noqa: E731
  np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x),
                             atol=1e-4)
  for a, b in zip(jax.tree.leaves(jax.grad(loss(ours), (0, 1))(params, x)),
                  jax.tree.leaves(jax.grad(loss(theirs), (0, 1))(params, x))):
    np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-4)
  compiled = jax.jit(jax.grad(loss(ours), (0, 1))).lower(
      params, x).compile().as_text()
  assert ' convolution(' not in compiled


@pytest.mark.parametrize('side', [6, 3, 2])
def test_conv_transpose_module_matches_flax_module(side):
  # 6: XLA's own or blocks; 3 and 2: smaller than the kernel (matrix).
  x = jax.random.normal(jax.random.key(2), (2, side, side, 5))
  for strides in ((2, 2), (1, 1)):
    ours = models.ConvTranspose(7, (4, 4), strides)
    theirs = nn.ConvTranspose(7, (4, 4), strides, padding='SAME',
                              use_bias=False)
    params = ours.init(KEY, x)
    # Same parameters as flax's module: checkpoints are interchangeable.
    chex.assert_trees_all_equal_shapes(params, theirs.init(KEY, x))
    np.testing.assert_allclose(ours.apply(params, x),
                               theirs.apply(params, x), atol=1e-5)


@pytest.mark.parametrize('ndim', [1, 2, 3])
def test_stride2_conv_gradients_equal_xla(ndim, monkeypatch):
  # The sub-pixel input gradient and the phase kernel gradient against
  # XLA's own, for every kernel width and the paddings 'SAME', 'VALID' and
  # an uneven one; sides differ per axis so that an axis mix-up shows.
  # Thresholds 0: conv_stride2 takes both forms at these small sizes.
  monkeypatch.setattr(models.layers, 'SUBPIXEL_GRAD_MIN_ELEMENTS', 0)
  monkeypatch.setattr(models.layers, 'PHASE_KERNEL_GRAD_MIN_ELEMENTS', 0)
  rng = np.random.default_rng(ndim)
  sides = (4, 6, 8)[-ndim:]
  spatial = 'DHW'[-ndim:]
  dims = (f'N{spatial}C', f'{spatial}IO', f'N{spatial}C')
  x = jnp.asarray(rng.normal(size=(2,) + sides + (3,)), jnp.float32)
  # Every width in 1D and 2D; in 3D (slow to compile) an odd and an even.
  for k in (1, 2, 3, 4, 5) if ndim < 3 else (3, 4):
    kernel = jnp.asarray(rng.normal(size=(k,) * ndim + (3, 5)), jnp.float32)
    for pad in ('SAME', 'VALID', ((2, 0),) * ndim):
      padding = tuple(pad if not isinstance(pad, str) else
                      jax.lax.padtype_to_pads(sides, (k,) * ndim, (2,) * ndim,
                                              pad))
      ref_out, ref_vjp = jax.vjp(
          lambda x, w, p=padding: jax.lax.conv_general_dilated(
              x, w, (2,) * ndim, p, dimension_numbers=dims), x, kernel)
      out, vjp = jax.vjp(
          lambda x, w, p=padding: models.layers.conv_stride2(x, w, p),
          x, kernel)
      g = jnp.asarray(rng.normal(size=ref_out.shape), jnp.float32)
      np.testing.assert_allclose(out, ref_out, atol=1e-4)
      for got, ref in zip(vjp(g), ref_vjp(g)):
        np.testing.assert_allclose(got, ref, atol=1e-3, err_msg=f'{k} {pad}')
      dx = models.layers.strided_conv_input_grad(g, kernel, padding, sides)
      np.testing.assert_allclose(dx, ref_vjp(g)[0], atol=1e-4)
      dk = models.layers.strided_conv_kernel_grad(x, g, padding, (k,) * ndim)
      assert dk.shape == kernel.shape
      np.testing.assert_allclose(dk, ref_vjp(g)[1], atol=1e-4,
                                 err_msg=f'{k} {pad}')


def test_conv_with_tap_channels_equals_xla_with_gradients():
  # 3D and 2D, 'SAME' and uneven paddings, kernels of unequal sides.
  rng = np.random.default_rng(5)
  for shape, sides, cout, padding in (
      ((2, 5, 6, 7, 16), (3, 3, 3), 1, ((1, 1),) * 3),
      ((2, 6, 5, 4, 8), (3, 3, 2), 1, ((0, 0), (2, 1), (1, 0))),
      ((2, 6, 5, 8), (3, 2), 2, ((1, 1), (0, 1)))):
    n = len(sides)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=sides + (shape[-1], cout)),
                         jnp.float32)
    ref, ref_vjp = jax.vjp(
        lambda x, k, p=padding, n=n: jax.lax.conv_general_dilated(
            x, k, (1,) * n, p, dimension_numbers=models.layers._DIMS[n]),  # pylint: disable=protected-access
        x, kernel)
    out, vjp = jax.vjp(
        lambda x, k, p=padding: models.layers.conv_with_tap_channels(x, k, p),
        x, kernel)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    g = jnp.asarray(rng.normal(size=ref.shape), jnp.float32)
    for got, want in zip(vjp(g), ref_vjp(g)):
      np.testing.assert_allclose(got, want, atol=1e-3)


def _gradient_convolutions(conv, shape, argnums):
  """The convolution lines of the CPU-compiled gradient of sum(conv(x)^2)
  w.r.t. `argnums` (0: the parameters, 1: the input x of `shape`)."""
  x = jnp.zeros(shape)
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(conv.apply(p, x)**2),
                          argnums=argnums))
  hlo = grad.lower(conv.init(KEY, x), x).compile().as_text()
  return [line for line in hlo.splitlines() if ' convolution(' in line]


def test_3d_convs_to_few_channels_train_without_xlas_3d_convolution():
  # The voxel head's 16 -> 1 convolution: XLA's CPU 3D convolution is 3-17
  # times slower there (forward and both gradients); 16 -> 16 keeps it.
  def convolutions(cin, cout):
    return _gradient_convolutions(models.layers.Conv(cout, (3, 3, 3)),
                                  (2, 6, 6, 6, cin), (0, 1))
  assert not convolutions(16, 1)
  assert convolutions(16, 16)


def test_space_to_depth_stacks_each_blocks_pixels_in_depth_to_space_order():
  x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
  blocks = models.layers.space_to_depth(x)
  assert blocks.shape == (2, 2, 3, 12)
  # Block (1, 2) holds pixels (2, 4), (2, 5), (3, 4), (3, 5), C each.
  np.testing.assert_array_equal(
      blocks[1, 1, 2], np.concatenate([x[1, 2, 4], x[1, 2, 5], x[1, 3, 4],
                                       x[1, 3, 5]]))
  np.testing.assert_array_equal(models.layers.depth_to_space(blocks), x)
  volume = jnp.arange(4 * 2 * 6 * 2, dtype=jnp.float32).reshape(1, 4, 2, 6,
                                                                  2)
  np.testing.assert_array_equal(
      models.layers.depth_to_space(models.layers.space_to_depth(volume)),
      volume)


def test_large_stride2_convs_take_the_phase_kernel_gradient():
  # XLA's CPU kernel gradient is a convolution with a dilated window
  # (rhs_dilate); the phase form has none. Below the threshold in 2D XLA's
  # is kept; in 3D the phase form is taken at any size.
  def window_dilated(shape):
    n = len(shape) - 2
    conv = models.layers.Conv(8, (4,) * n, (2,) * n, use_bias=False)
    return [line for line in _gradient_convolutions(conv, shape, 0)
            if 'rhs_dilate=' in line]
  side = 128  # 2 x 128 x 128 x 32 = 2**20 elements
  assert 2 * side * side * 32 == models.layers.PHASE_KERNEL_GRAD_MIN_ELEMENTS
  assert not window_dilated((2, side, side, 32))
  assert window_dilated((2, side // 2, side // 2, 32))
  assert not window_dilated((2, 8, 8, 8, 4))


@pytest.mark.parametrize('fast', ['conv_as_patches', 'conv_on_blocks'])
def test_stride1_conv_forms_equal_xla_with_gradients(fast):
  # Every kernel width and 'SAME'-sized padding (and, for the patches form,
  # 'VALID' and an uneven one); sides differ per axis so that a mix-up
  # shows. The patches form is for inputs smaller than the kernel, the
  # block form for even sides.
  rng = np.random.default_rng(7)
  dims = ('NHWC', 'HWIO', 'NHWC')
  form = getattr(models.layers, fast)
  sides = (3, 2) if fast == 'conv_as_patches' else (6, 4)
  x = jnp.asarray(rng.normal(size=(2,) + sides + (3,)), jnp.float32)
  for k in (2, 3, 4, 5):
    kernel = jnp.asarray(rng.normal(size=(k, k, 3, 5)), jnp.float32)
    paddings = [((lo, k - 1 - lo), (k - 1 - lo, lo)) for lo in range(k)]
    if fast == 'conv_as_patches':
      paddings += [((0, 0), (0, 0)), ((2, 0), (0, 3))]
    for padding in paddings:
      if any(s + lo + hi < k for s, (lo, hi) in zip(sides, padding)):
        continue  # no output
      ref_out, ref_vjp = jax.vjp(
          lambda x, w, p=padding: jax.lax.conv_general_dilated(
              x, w, (1, 1), p, dimension_numbers=dims), x, kernel)
      out, vjp = jax.vjp(lambda x, w, p=padding: form(x, w, p), x, kernel)
      chex.assert_shape(out, ref_out.shape)
      np.testing.assert_allclose(out, ref_out, atol=1e-4,
                                 err_msg=f'{k} {padding}')
      g = jnp.asarray(rng.normal(size=ref_out.shape), jnp.float32)
      for got, ref in zip(vjp(g), ref_vjp(g)):
        np.testing.assert_allclose(got, ref, atol=1e-3,
                                   err_msg=f'{k} {padding}')


def test_stride1_convs_take_the_fast_forms_where_xla_is_slow(monkeypatch):
  calls = []
  for name in ('conv_as_patches', 'conv_on_blocks'):
    original = getattr(models.layers, name)
    monkeypatch.setattr(
        models.layers, name,
        lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
  pad = ((1, 2), (1, 2))
  cases = [((2, 3, 3, 64), (4, 4, 64, 64), ['conv_as_patches']),
           ((2, 8, 8, 5), (4, 4, 5, 4), ['conv_on_blocks']),
           ((2, 8, 8, 16), (4, 4, 16, 16), []),  # many channels
           ((2, 7, 8, 5), (4, 4, 5, 4), []),  # an odd side
           ((2, 8, 8, 5), (1, 1, 5, 4), [])]  # a 1x1 kernel
  for x_shape, k_shape, expected in cases:
    calls.clear()
    padding = pad if k_shape[0] == 4 else ((0, 0), (0, 0))
    jax.jit(lambda x, w, p=padding: models.layers.conv_stride1(x, w, p)
            ).lower(jnp.zeros(x_shape), jnp.zeros(k_shape))
    assert calls == expected, (x_shape, k_shape)


def test_stride1_conv_gradients_equal_xlas():
  rng = np.random.default_rng(8)
  dims = ('NHWC', 'HWIO', 'NHWC')
  pad = ((1, 2), (1, 2))
  for x_shape, k_shape in (((2, 3, 3, 6), (4, 4, 6, 5)),  # patches
                           ((2, 8, 6, 5), (4, 4, 5, 4))):  # blocks
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=k_shape), jnp.float32)
    ref, ref_vjp = jax.vjp(lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1), pad, dimension_numbers=dims), x, kernel)
    out, vjp = jax.jit(lambda x, w: jax.vjp(
        lambda x, w: models.layers.conv_stride1(x, w, pad), x, w))(x, kernel)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    g = jnp.asarray(rng.normal(size=ref.shape), jnp.float32)
    for got, want in zip(vjp(g), ref_vjp(g)):
      np.testing.assert_allclose(got, want, atol=1e-4)


def test_the_block_form_also_computes_the_input_gradient(monkeypatch):
  # PRNet's last layers at full resolution (16 -> 3, 3 -> 3): XLA's CPU
  # input gradient, a 3 -> 16 convolution, is as slow as their forward.
  calls = []
  original = models.layers.conv_on_blocks
  monkeypatch.setattr(models.layers, 'conv_on_blocks',
                      lambda x, *a: calls.append(x.shape) or original(x, *a))
  pad = ((2, 1), (2, 1))
  x, kernel = jnp.zeros((2, 8, 6, 16)), jnp.zeros((4, 4, 16, 3))
  jax.jit(jax.grad(lambda x, w: jnp.sum(
      models.layers.conv_stride1(x, w, pad)), argnums=(0, 1))).lower(
          x, kernel)
  # The forward pass on x, the input gradient on the output gradient.
  assert set(calls) == {(2, 8, 6, 16), (2, 8, 6, 3)}, calls


def test_small_input_convs_train_without_xlas_convolution():
  # Inputs smaller than the kernel: forward and backward are matrix
  # products (XLA's CPU convolution, and its gradients, are slow there).
  pad = ((2, 1), (2, 1))
  grads = jax.jit(jax.grad(lambda x, w: jnp.sum(
      models.layers.conv_stride1(x, w, pad)**2), argnums=(0, 1)))
  ops = lambda x_shape: set(re.findall(  # noqa: E731
      r' = \S+ (\w[\w-]*)\(', grads.lower(
          jnp.zeros(x_shape), jnp.zeros((4, 4, 8, 8))).compile().as_text()))
  small = ops((2, 3, 3, 8))
  assert 'convolution' not in small and 'dot' in small, small
  # Where XLA's is kept (a larger input), the check sees it.
  assert 'convolution' in ops((2, 6, 6, 8))


def test_stride2_convs_small_outputs_and_3d_use_the_subpixel_input_grad():
  # XLA's CPU input gradient (a convolution with a dilation) is slow where
  # the output is smaller than the kernel, and in 3D at any size; the
  # sub-pixel one has none.
  def dilated_convolutions(shape):
    n = len(shape) - 2
    conv = models.layers.Conv(8, (4,) * n, (2,) * n)
    return [line for line in _gradient_convolutions(conv, shape, 1)
            if 'dilate=' in line]
  assert not dilated_convolutions((2, 6, 6, 8))  # 6x6 -> 3x3, kernel 4
  assert dilated_convolutions((2, 12, 12, 8))  # 12x12 -> 6x6: XLA's own
  assert not dilated_convolutions((2, 8, 8, 8, 2))


def test_conv_module_matches_flax_module_and_names(monkeypatch):
  # Below the size threshold the module is lax's convolution; force the
  # custom-gradient path to compare it too.
  x = jax.random.normal(jax.random.key(3), (2, 8, 8, 5))
  for threshold in (None, 0):
    for name in ('SUBPIXEL_GRAD_MIN_ELEMENTS',
                 'PHASE_KERNEL_GRAD_MIN_ELEMENTS'):
      if threshold is not None:
        monkeypatch.setattr(models.layers, name, threshold)
    for kernel, strides in (((4, 4), (2, 2)), ((1, 1), (2, 2)),
                            ((3, 3), (1, 1))):
      ours = models.layers.Conv(7, kernel, strides)
      theirs = nn.Conv(7, kernel, strides, padding='SAME')
      params = ours.init(KEY, x)
      chex.assert_trees_all_equal_shapes(params, theirs.init(KEY, x))
      grad = lambda m: jax.grad(  # noqa: E731
          lambda p: jnp.sum(jnp.sin(m.apply(p, x))))(params)['params']
      np.testing.assert_allclose(grad(ours)['kernel'], grad(theirs)['kernel'],
                                 rtol=1e-4, atol=1e-4)
  # Auto-names as flax's: a parent mixing the two numbers them in order.
  class Both(nn.Module):
    @nn.compact
    def __call__(self, x):
      return models.layers.Conv(3, (1, 1))(nn.Conv(3, (1, 1))(x))
  assert set(Both().init(KEY, x)['params']) == {'Conv_0', 'Conv_1'}


# -------------------------------------------------------- discriminators ---


def test_resnet_discriminator_is_resnet18():
  model = models.ResNetDiscriminator()
  variables = _shapes(model, jnp.zeros((1, 256, 256, 3)))
  # torchvision's ResNet-18 has 11,689,512 parameters with its 1000-way
  # classifier (512 * 1000 + 1000); here the classifier has one logit.
  assert _count(variables['params']) == 11_689_512 - 513_000 + 513
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((3, 256, 256, 6))),
                       _shapes(model, jnp.zeros((1, 256, 256, 6))))
  chex.assert_shape(out, (3,))


@pytest.mark.parametrize('norm', ['instance', 'layer', 'none', 'spectral',
                                  'batch'])
def test_resnet_discriminator_norms_shapes(norm):
  model = models.ResNetDiscriminator(width=0.125, norm=norm)
  x = jnp.zeros((2, 64, 64, 3))
  variables = jax.eval_shape(lambda: model.init(KEY, x))
  assert ('batch_stats' in variables) == (norm in ('batch', 'spectral'))
  out = jax.eval_shape(lambda v: model.apply(
      v, x, train=True, mutable=['batch_stats'])[0], variables)
  chex.assert_shape(out, (2,))


# Compiled with gradients: the default and the one with mutable state.
@pytest.mark.parametrize('norm', ['instance', 'spectral'])
def test_resnet_discriminator_norms_compile_and_have_finite_grads(norm):
  model = models.ResNetDiscriminator(width=0.125, norm=norm)
  x = jax.random.uniform(jax.random.key(3), (2, 32, 32, 3))
  variables = _init(model, x)
  mutable = [k for k in variables if k != 'params']

  def loss(params):
    out = model.apply({**variables, 'params': params}, x, train=True,
                      mutable=mutable or False)
    logits = out[0] if mutable else out
    return jnp.sum(logits)

  grads = jax.jit(jax.grad(loss))(variables['params'])
  chex.assert_tree_all_finite(grads)


def test_instance_norm_discriminator_is_independent_of_the_batch():
  model = models.ResNetDiscriminator(width=0.125)
  x = jax.random.uniform(jax.random.key(4), (3, 32, 32, 3))
  variables = _init(model, x)
  together = _apply(model, variables, x, train=True)
  alone = _apply(model, variables, x[:1], train=True)
  np.testing.assert_allclose(together[0], alone[0], rtol=1e-4, atol=1e-5)


def test_landmark_discriminator_ignores_position_and_scale():
  model = models.LandmarkDiscriminator()
  lmk = jax.random.normal(jax.random.key(5), (2, 68, 3)) * 30 + 100
  variables = _init(model, lmk)
  moved = lmk * 2.5 + jnp.array([10.0, -4.0, 7.0])
  np.testing.assert_allclose(_apply(model, variables, lmk),
                             _apply(model, variables, moved), rtol=1e-4,
                             atol=1e-5)
  other = lmk.at[:, 30].add(25.0)  # a different shape
  assert not np.allclose(_apply(model, variables, lmk),
                         _apply(model, variables, other))


# ---------------------------------------------------------- face GAN -------


def test_feature_encoder_is_128_leaky_relu():
  enc = models.FeatureEncoder()
  x = jax.random.normal(KEY, (4, 31))
  variables = _init(enc, x)
  out = _apply(enc, variables, x)
  chex.assert_shape(out, (4, 128))
  dense = variables['params']['Dense_0']
  pre = x @ dense['kernel'] + dense['bias']
  np.testing.assert_allclose(out, jnp.where(pre > 0, pre, 0.2 * pre),
                             rtol=1e-5, atol=1e-6)


def test_feature_encoder_standardises_its_features():
  # Training mode: each feature standardised over the batch, so a per-feature
  # scale and shift of the inputs (raw ratios of very different sizes)
  # changes nothing; after training, the running averages are used.
  enc = models.FeatureEncoder(normalize=True)
  x = jax.random.normal(KEY, (16, 31))
  scale = jnp.linspace(0.3, 3.0, 31)
  shifted = x * scale + jnp.linspace(-1.0, 2.0, 31)
  variables = _init(enc, x)
  train = lambda v, x: enc.apply(v, x, train=True,  # noqa: E731
                                 mutable=['batch_stats'])
  out, _ = train(variables, x)
  out_shifted, updates = train(variables, shifted)
  np.testing.assert_allclose(out, out_shifted, rtol=2e-3, atol=2e-3)
  stats = updates['batch_stats']['BatchNorm_0']
  np.testing.assert_allclose(stats['mean'], 0.01 * jnp.mean(shifted, 0),
                             rtol=1e-4, atol=1e-6)
  assert 'scale' not in variables['params'].get('BatchNorm_0', {})
  # Eval mode with fresh statistics (mean 0, var 1): the raw features.
  plain = models.FeatureEncoder()
  np.testing.assert_allclose(
      enc.apply(variables, shifted), plain.apply(
          {'params': {'Dense_0': variables['params']['Dense_0']}}, shifted),
      rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize('head, shape', [('uv', (64, 64, 3)),
                                         ('voxel', (64, 64, 64, 1))])
def test_face_gan_full_size_shapes(head, shape):
  gen = models.FaceGenerator(head=head)
  features, noise = jnp.zeros((2, 31)), jnp.zeros((2, 128))
  variables = _shapes(gen, features, noise)
  out = jax.eval_shape(lambda v: gen.apply(v, features, noise), variables)
  chex.assert_shape(out, (2,) + shape)
  disc = models.FaceDiscriminator(head=head)
  x = jnp.zeros((2,) + shape)
  dvars = _shapes(disc, x, features)
  logits, maps = jax.eval_shape(lambda v: disc.apply(v, x, features), dvars)
  chex.assert_shape(logits, (2,))
  assert [m.shape[1] for m in maps] == [32, 16, 8, 4]


def _small_gan(head, attention=True):
  size = 16 if head == 'uv' else 8  # 3D convolutions compile slowly
  gen = models.FaceGenerator(head=head, size=size, base_channels=32,
                             attention=attention)
  disc = models.FaceDiscriminator(head=head, base_channels=8,
                                  attention=attention, compress_dim=16)
  return gen, disc


@pytest.mark.parametrize('head', ['uv', 'voxel'])
def test_face_gan_small_compiled_with_finite_gradients(head):
  gen, disc = _small_gan(head)
  features = jax.random.normal(jax.random.key(1), (2, 31))
  noise = jax.random.normal(jax.random.key(2), (2, 128))
  gvars = _init(gen, features, noise)
  fake, _ = _apply(gen, gvars, features, noise, train=True,
                   mutable=['batch_stats'])
  size = gen.size
  expected = (2, 16, 16, 3) if head == 'uv' else (2, 8, 8, 8, 1)
  chex.assert_shape(fake, expected)
  x = fake / (1.1 * size) if head == 'uv' else jax.nn.sigmoid(fake)
  dvars = _init(disc, x, features)

  def loss(gparams):
    out, _ = gen.apply({**gvars, 'params': gparams}, features, noise,
                       train=True, mutable=['batch_stats'])
    inp = out / (1.1 * size) if head == 'uv' else jax.nn.sigmoid(out)
    logits, maps = disc.apply(dvars, inp, features)
    return jnp.mean(logits) + sum(jnp.mean(m) for m in maps)

  grads = jax.jit(jax.grad(loss))(gvars['params'])
  chex.assert_tree_all_finite(grads)
  # The discriminator's verdict depends on the conditioning features.
  a, _ = _apply(disc, dvars, x, features)
  b, _ = _apply(disc, dvars, x, features + 3.0)
  assert not np.allclose(a, b)


def _se_params(channels, reduction=8):
  hidden = max(1, channels // reduction)
  return channels * hidden + hidden + hidden * channels + channels


def test_attention_flag_adds_exactly_the_attention_parameters():
  features, noise = jnp.zeros((1, 31)), jnp.zeros((1, 128))
  with_att, _ = _small_gan('uv', attention=True)
  without, _ = _small_gan('uv', attention=False)
  p_with = _shapes(with_att, features, noise)['params']
  p_without = _shapes(without, features, noise)['params']
  # Generator 16x16 from 4x4 with base 32: up blocks of 16 and 16 channels
  # (halving, at least 16), each followed by a residual block: 4 SE blocks.
  assert _count(p_with) - _count(p_without) == 4 * _se_params(16)
  assert 'SqueezeExcite_0' in p_with['UpBlock_0']
  assert 'SqueezeExcite_0' not in p_without['UpBlock_0']


def test_code_every_stage_widens_exactly_the_up_blocks_inputs():
  features, noise = jnp.zeros((1, 31)), jnp.zeros((1, 128))
  plain = models.FaceGenerator(size=16, base_channels=32)
  every = models.FaceGenerator(size=16, base_channels=32,
                               code_every_stage=True)
  p_plain = _shapes(plain, features, noise)['params']
  p_every = _shapes(every, features, noise)['params']
  # Two up blocks (4 -> 8 -> 16) with 4x4 kernels, 16 output channels each:
  # 128 more input channels (the code) each.
  assert _count(p_every) - _count(p_plain) == 2 * 4 * 4 * 128 * 16
  assert p_every['UpBlock_0']['ConvTranspose_0']['kernel'].shape == (
      4, 4, 32 + 128, 16)


def test_generator_is_deterministic_and_uses_noise():
  gen, _ = _small_gan('uv')
  features = jax.random.normal(jax.random.key(1), (2, 31))
  noise = jax.random.normal(jax.random.key(2), (2, 128))
  variables = _init(gen, features, noise)
  chex.assert_trees_all_equal(variables, _init(gen, features, noise))
  a = _apply(gen, variables, features, noise)
  np.testing.assert_array_equal(a, _apply(gen, variables, features, noise))
  assert not np.allclose(a, _apply(gen, variables, features, noise + 1.0))


def test_generator_bfloat16_close_to_float32():
  gen, _ = _small_gan('uv')
  features = jax.random.normal(jax.random.key(1), (2, 31))
  noise = jax.random.normal(jax.random.key(2), (2, 128))
  variables = _init(gen, features, noise)
  bf16 = models.FaceGenerator(head='uv', size=16, base_channels=32,
                              dtype=jnp.bfloat16)
  err = np.abs(np.asarray(_apply(bf16, variables, features, noise)) -
               np.asarray(_apply(gen, variables, features, noise)))
  assert err.max() < 0.05 * 16


# ------------------------------------------------------- progression RNN ---


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
def test_progression_rnn_masks_frames_after_the_length(cell):
  model = models.ProgressionRNN(cell=cell, hidden=16, frame_channels=(8, 8),
                                frame_features=16, use_landmarks=True)
  frames = jax.random.uniform(jax.random.key(1), (2, 5, 16, 16, 3))
  lmk = jax.random.normal(jax.random.key(2), (2, 5, 68, 3)) * 20 + 50
  lengths = jnp.array([5, 3])
  variables = _init(model, frames, lengths, lmk)
  apply = jax.jit(model.apply)
  logits = apply(variables, frames, lengths, lmk)
  chex.assert_shape(logits, (2,))
  # Changing frames after clip 1's length leaves its logit unchanged ...
  changed = frames.at[1, 3:].set(0.0)
  out = apply(variables, changed, lengths, lmk.at[1, 3:].set(0.0))
  np.testing.assert_allclose(out[1], logits[1], rtol=1e-5, atol=1e-6)
  # ... but changing a frame inside the length changes it.
  inside = apply(variables, frames.at[1, 1].set(0.0), lengths, lmk)
  assert not np.isclose(inside[1], logits[1])
  grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(
      {'params': p}, frames, lengths, lmk))))(variables['params'])
  chex.assert_tree_all_finite(grads)
