"""The weight gradient of PRNet's stride-1 4x4 convolutions on a CPU: XLA's
against three hand-made forms, none of which jaxface uses.

  python -m experiments.benchmarks.conv_weight_grad

In the full-width train step (256x256, batch 4) the largest XLA operations
are the weight gradients of the decoder's stride-1 4x4 convolutions, 1.6 to
2.4 times the time of the same layer's forward pass
(`experiments.benchmarks.step_profile`). For the decoder's shapes this
times, jitted, medians of 5:
- XLA: the forward pass, the input gradient and the weight gradient;
- taps: the weight gradient as 16 matrix products, one per kernel tap, of
  the shifted input (B H W, Cin) with the output gradient (B H W, Cout);
- winograd: the convolution as Winograd's F(4x4, 4x4) (7x7 input tiles: 49
  multiplications per 4x4 outputs against 256; Lavin and Gray 2016) in jnp, and
  its weight gradient by autodiff (49 matrix products of the transformed
  tiles), with its error against XLA's relative to the largest entry;
- rows: a numba kernel on one core (`weight_grad_rows`), one output row at a
  time: the output gradient's row and the input rows under it transposed
  (channels major), then 4 kernel columns x 4 output channels as 16 running
  sums along the row, which LLVM vectorises. Called from a jitted train step
  (as an XLA FFI custom call, its handler a numba `cfunc`) it moved PRNet's
  step little: XLA runs it on one of its two threads, and the kernel
  gradients are not on the step's critical path.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numba
import numpy as np

from experiments.benchmarks import conv_transpose_speed
from experiments.benchmarks.conv_stride1_speed import TRANSPOSE4

DIMS = ('NHWC', 'HWIO', 'NHWC')
# (batch, side, channels in = out): the decoder's stride-1 4x4 layers, which
# are transposed convolutions: padded 2 before, 1 after (TRANSPOSE4).
SHAPES = ((4, 16, 256), (4, 32, 128), (4, 64, 64), (4, 128, 32),
          (4, 256, 16))
TILE = 4  # outputs per tile side
POINTS = (0.0, 1.0, -1.0, 2.0, -2.0, 0.5)  # and infinity: 7 for F(4, 4)


def winograd_matrices(m: int, r: int, points) -> tuple[np.ndarray, ...]:
  """Toom-Cook matrices of F(m, r): AT (m, a), G (a, r), BT (a, a) with
  a = m + r - 1, from a - 1 finite points and infinity: the correlation
  y = AT [(G g) * (BT d)]. AT and G follow Lavin and Gray; BT is the
  solution of that identity for every g and d, checked exact."""
  a = m + r - 1
  p = np.asarray(points, np.float64)
  at = np.concatenate([p[None, :] ** np.arange(m)[:, None],
                       np.eye(m)[:, -1:]], 1)
  f = np.array([np.prod([p[i] - p[j] for j in range(a - 1) if j != i])
                for i in range(a - 1)])
  g = np.concatenate([p[:, None] ** np.arange(r)[None, :] / f[:, None],
                      np.eye(r)[-1:]], 0)
  # Linear in BT: sum_i AT[k, i] G[i, j] BT[i, l] = [l == k + j] for all
  # k, j, l; one equation per (k, j, l), unknowns BT[i, l] at i a + l.
  lhs = np.zeros((m, r, a, a, a))
  for l in range(a):
    lhs[:, :, l, :, l] = at[:, None, :] * g.T[None, :, :]
  rhs = (np.arange(a)[None, None, :] ==
         np.arange(m)[:, None, None] + np.arange(r)[None, :, None])
  lhs, rhs = lhs.reshape(m * r * a, a * a), rhs.reshape(-1).astype(float)
  bt = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
  assert np.allclose(lhs @ bt, rhs, atol=1e-9), 'no exact BT'
  return at, g, bt.reshape(a, a)


def conv_winograd(x, kernel, padding):
  """Stride-1 2D convolution (B, H, W, C) * (r, r, C, O) as F(TILE, r),
  r <= 4 (POINTS has the points of F(4, 4))."""
  r = kernel.shape[0]
  a = TILE + r - 1
  if kernel.shape[1] != r or a - 1 > len(POINTS):
    raise ValueError(f'conv_winograd takes square kernels up to 4 wide, got '
                     f'{kernel.shape[:2]}')
  at, g, bt = (jnp.asarray(t, x.dtype)
               for t in winograd_matrices(TILE, r, POINTS[:a - 1]))
  b, h, w, c = x.shape
  (top, bottom), (left, right) = padding
  out_h, out_w = h + top + bottom - r + 1, w + left + right - r + 1
  tiles_h, tiles_w = -(-out_h // TILE), -(-out_w // TILE)
  padded = jnp.pad(x, ((0, 0), (top, tiles_h * TILE + r - 1 - h - top),
                       (left, tiles_w * TILE + r - 1 - w - left), (0, 0)))
  rows = jnp.stack([padded[:, i:i + TILE * (tiles_h - 1) + 1:TILE]
                    for i in range(a)])
  rows = jnp.einsum('ui,ibhwc->ubhwc', bt, rows)
  tiles = jnp.stack([rows[:, :, :, i:i + TILE * (tiles_w - 1) + 1:TILE]
                     for i in range(a)])
  tiles = jnp.einsum('vi,iubhwc->uvbhwc', bt, tiles)
  weights = jnp.einsum('ui,vj,ijco->uvco', g, g, kernel)
  products = jnp.einsum('uvpc,uvco->uvpo',
                        tiles.reshape(a, a, b * tiles_h * tiles_w, c), weights)
  y = jnp.einsum('ku,lv,uvpo->klpo', at, at, products)
  y = y.reshape(TILE, TILE, b, tiles_h, tiles_w, -1).transpose(
      2, 3, 0, 4, 1, 5).reshape(b, tiles_h * TILE, tiles_w * TILE, -1)
  return y[:, :out_h, :out_w]


def weight_grad_taps(x, g, padding):
  """dL/dkernel (kh, kw, Cin, Cout) of a stride-1 convolution of x
  (B, H, W, Cin) with output gradient g (B, H', W', Cout): one matrix
  product per tap, of the shifted input with g."""
  padded = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  (h, w), c = g.shape[1:3], x.shape[-1]
  kh, kw = padded.shape[1] - h + 1, padded.shape[2] - w + 1
  flat_g = g.reshape(-1, g.shape[-1])
  contract = (((0,), (0,)), ((), ()))
  return jnp.stack([jnp.stack([jax.lax.dot_general(
      padded[:, ty:ty + h, tx:tx + w].reshape(-1, c), flat_g, contract)
                               for tx in range(kw)]) for ty in range(kh)])


@numba.njit(fastmath=True, nogil=True, cache=True)
def _rows_kernel(x, g, top, left, out, scratch):
  """out (KH, 4, Ci, Co) = sum over n, h, w of x[n, h + dy - top,
  w + dx - left, ci] g[n, h, w, co], x zero outside its (N, H, W, Ci);
  g (N, Ho, Wo, Co); scratch at least Ci (Wo + 3) + Co Wo floats."""
  n_, h_, w_, co_ = g.shape
  hi, wi, ci_ = x.shape[1], x.shape[2], x.shape[3]
  wp = w_ + 3
  xt = scratch[:ci_ * wp].reshape(ci_, wp)  # an input row, channels major
  gt = scratch[ci_ * wp:ci_ * wp + co_ * w_].reshape(co_, w_)
  out[:] = 0
  co4 = co_ - co_ % 4
  for n in range(n_):
    for h in range(h_):
      for w in range(w_):
        for co in range(co_):
          gt[co, w] = g[n, h, w, co]
      for dy in range(out.shape[0]):
        row = h + dy - top
        if row < 0 or row >= hi:
          continue
        for j in range(wp):
          col = j - left
          for ci in range(ci_):
            xt[ci, j] = x[n, row, col, ci] if 0 <= col < wi else 0
        o = out[dy]
        for ci in range(ci_):
          xr = xt[ci]
          for co in range(0, co4, 4):
            g0, g1, g2, g3 = gt[co], gt[co + 1], gt[co + 2], gt[co + 3]
            a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = np.float32(0)
            a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = np.float32(0)
            for w in range(w_):
              x0, x1, x2, x3 = xr[w], xr[w + 1], xr[w + 2], xr[w + 3]
              v0, v1, v2, v3 = g0[w], g1[w], g2[w], g3[w]
              a00 += x0 * v0
              a01 += x0 * v1
              a02 += x0 * v2
              a03 += x0 * v3
              a10 += x1 * v0
              a11 += x1 * v1
              a12 += x1 * v2
              a13 += x1 * v3
              a20 += x2 * v0
              a21 += x2 * v1
              a22 += x2 * v2
              a23 += x2 * v3
              a30 += x3 * v0
              a31 += x3 * v1
              a32 += x3 * v2
              a33 += x3 * v3
            o[0, ci, co] += a00
            o[0, ci, co + 1] += a01
            o[0, ci, co + 2] += a02
            o[0, ci, co + 3] += a03
            o[1, ci, co] += a10
            o[1, ci, co + 1] += a11
            o[1, ci, co + 2] += a12
            o[1, ci, co + 3] += a13
            o[2, ci, co] += a20
            o[2, ci, co + 1] += a21
            o[2, ci, co + 2] += a22
            o[2, ci, co + 3] += a23
            o[3, ci, co] += a30
            o[3, ci, co + 1] += a31
            o[3, ci, co + 2] += a32
            o[3, ci, co + 3] += a33
          for co in range(co4, co_):  # the channels past a multiple of 4
            g0 = gt[co]
            a0 = a1 = a2 = a3 = np.float32(0)
            for w in range(w_):
              v = g0[w]
              a0 += xr[w] * v
              a1 += xr[w + 1] * v
              a2 += xr[w + 2] * v
              a3 += xr[w + 3] * v
            o[0, ci, co] += a0
            o[1, ci, co] += a1
            o[2, ci, co] += a2
            o[3, ci, co] += a3


def weight_grad_rows(x: np.ndarray, g: np.ndarray, padding,
                     kernel_height: int = 4) -> np.ndarray:
  """dL/dkernel (kh, 4, Cin, Cout) float32 of a stride-1 convolution of a
  kernel 4 wide, x (B, H, W, Cin) float32 padded `padding`, at its output
  gradient g (B, H', W', Cout) float32: `_rows_kernel` on one core."""
  (top, _), (left, _) = padding
  out = np.empty((kernel_height, 4, x.shape[-1], g.shape[-1]), np.float32)
  scratch = np.empty(x.shape[-1] * (g.shape[2] + 3) + g.shape[-1] * g.shape[2],
                     np.float32)
  _rows_kernel(x, g, top, left, out, scratch)
  return out


def _relative_error(got, reference) -> float:
  """The largest deviation relative to the reference's largest entry."""
  return float(jnp.abs(got - reference).max() / jnp.abs(reference).max())


def main():
  argparse.ArgumentParser(description=__doc__.split('\n')[0]).parse_args()
  xla = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1),
                          padding=TRANSPOSE4, dimension_numbers=DIMS)
  print(f'on {jax.devices()[0].platform}, ms (median of 5)')
  for batch, side, channels in SHAPES:
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (batch, side, side, channels))
    kernel = jax.random.normal(keys[1], (4, 4, channels, channels)) / (
        4 * channels**0.5)
    g = jax.random.normal(keys[2], (batch, side, side, channels))

    def grad_of(conv, argnum):
      return jax.jit(lambda x, k, g: jax.vjp(conv, x, k)[1](g)[argnum])

    forward = jax.jit(xla)
    input_grad, kernel_grad = grad_of(xla, 0), grad_of(xla, 1)
    taps = jax.jit(functools.partial(weight_grad_taps, padding=TRANSPOSE4))
    winograd = grad_of(functools.partial(conv_winograd, padding=TRANSPOSE4), 1)
    reference = kernel_grad(x, kernel, g)
    error = _relative_error(winograd(x, kernel, g), reference)
    assert _relative_error(taps(x, g), reference) < 1e-4
    x_np, g_np = np.asarray(x), np.asarray(g)
    rows = functools.partial(weight_grad_rows, padding=TRANSPOSE4)
    assert _relative_error(rows(x_np, g_np), reference) < 1e-4
    ms = lambda fn, *a: conv_transpose_speed.median_seconds(fn, *a) * 1e3  # noqa: E731
    print(f'batch {batch}, {side}x{side}, {channels} -> {channels}: XLA '
          f'forward {ms(forward, x, kernel):.1f}, input gradient '
          f'{ms(input_grad, x, kernel, g):.1f}, weight gradient '
          f'{ms(kernel_grad, x, kernel, g):.1f}; weight gradient by taps '
          f'{ms(taps, x, g):.1f}, by Winograd F(4x4, 4x4) '
          f'{ms(winograd, x, kernel, g):.1f} (error {error:.0e}), by rows '
          f'on one core {ms(rows, x_np, g_np):.1f}', flush=True)


if __name__ == '__main__':
  main()
