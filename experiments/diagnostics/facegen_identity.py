"""How much identity the face GAN's condition carries, without any GAN.

  python -m experiments.diagnostics.facegen_identity --data data/mv32 \
      [--workdir runs/facegen_quick]

On a `multiview` dataset, measures on the held-out split:
- the signal in the 31 geometric features: per feature, the share of its
  variance that lies between identities (an intraclass correlation; the
  rest is pose, expression and measurement);
- the scale of the raw features (mean and spread): what a Dense layer sees
  without standardisation;
- the distance to the true face (mm, the face region, as `jaxface eval`)
  and the identity classifier's Inception Score of: the mean training face,
  ridge regressions to the canonical map (fitted on the train split, on a
  quarter and a half of it for the features) from the 31 features, from
  them with their squares and products, from the frontal view's and the
  three views' normalised landmarks, and from the 'landmarks' condition
  (`facegen.condition_of`: the features and the three views' landmarks);
  the true faces; and, with --workdir, the trained generator.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from jaxface.data import shards
from jaxface.eval import gen_eval
from jaxface.eval import inception
from jaxface.eval import recon_eval
from jaxface.face import features as features_lib
from jaxface.face import frames
from jaxface.face import layout as layout_lib
from jaxface.train import facegen as facegen_lib


def load_split(data_dir: str, info: dict, split: str,
               condition: str = 'features'):
  """(condition (N, C) (`facegen.condition_of`; 'features': the 31
  features), maps (N, R, R, 3), identities (N,)) of a split."""
  conds, maps, ids = [], [], []
  stats: dict[str, int] = {}
  for count, batch in recon_eval.split_batches(
      data_dir, info, 'multiview', split, 64, None, False, stats):
    conds.append(np.asarray(facegen_lib.batch_condition(
        {k: jnp.asarray(batch[k][:count]) for k in ('landmarks',
                                                      'extra_points')},
        condition)[1]))
    maps.append(np.asarray(batch['canonical_position_map'][:count]))
    ids.append(np.asarray(batch['identity'][:count]))
  return (np.concatenate(conds).astype(np.float64), np.concatenate(maps),
          np.concatenate(ids))


def between_identity_share(feats: np.ndarray, ids: np.ndarray) -> np.ndarray:
  """(F,) variance of the identity means / total variance, per feature."""
  total = feats.var(axis=0)
  means = np.stack([feats[ids == i].mean(axis=0) for i in ids])
  return means.var(axis=0) / np.maximum(total, 1e-12)


def ridge(x_train, y_train, x_test, alpha: float):
  """Ridge regression with an intercept; returns predictions for x_test."""
  mx, my = x_train.mean(0), y_train.mean(0)
  xc, yc = x_train - mx, y_train - my
  w = np.linalg.solve(xc.T @ xc + alpha * np.eye(xc.shape[1]), xc.T @ yc)
  return (x_test - mx) @ w + my


def _quadratic(x):
  """(N, F) -> (N, F + F (F + 1) / 2): x, and every product x_i x_j, i <= j."""
  i, j = np.triu_indices(x.shape[1])
  return np.concatenate([x, x[:, i] * x[:, j]], axis=1)


def fitted_ridge(c_tr, flat_tr, id_tr, c_te, map_shape, distance_mm):
  """A ridge regression from the standardised condition to the canonical
  map, alpha chosen on the last fifth of the train identities: (alpha, the
  test split's maps)."""
  mu, sd = c_tr.mean(0), c_tr.std(0) + 1e-8
  z_tr, z_te = (c_tr - mu) / sd, (c_te - mu) / sd
  ids = np.unique(id_tr)
  held = np.isin(id_tr, ids[-len(ids) // 5:])
  scores = []
  for alpha in (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0):
    pred = ridge(z_tr[~held], flat_tr[~held], z_tr[held], alpha)
    truth = flat_tr[held].reshape((-1,) + map_shape)
    scores.append((distance_mm(pred.reshape(truth.shape), truth), alpha))
  alpha = min(scores)[1]
  pred = ridge(z_tr, flat_tr, z_te, alpha)
  return alpha, pred.reshape((-1,) + map_shape).astype(np.float32)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data', required=True)
  parser.add_argument('--workdir', default='')
  parser.add_argument('--classifier', default='',
                      help='a saved identity classifier (default: trained '
                           'as jaxface eval does, into /tmp)')
  args = parser.parse_args()
  info = shards.read_dataset_info(args.data)
  res = int(info['resolution'])
  # The 'landmarks' condition: the 31 features, then the views' landmarks.
  c_tr, y_tr, id_tr = load_split(args.data, info, 'train', 'landmarks')
  c_te, y_te, id_te = load_split(args.data, info, 'test', 'landmarks')
  f = features_lib.NUM_FEATURES
  x_tr, x_te = c_tr[:, :f], c_te[:, :f]
  print(f'{len(x_tr)} train records ({len(set(id_tr))} identities), '
        f'{len(x_te)} test ({len(set(id_te))})')
  share = between_identity_share(x_te, id_te)
  order = np.argsort(share)
  names = features_lib.FEATURE_NAMES
  print('between-identity share of each feature\'s variance (test split): '
        f'median {np.median(share):.2f}, min {share.min():.2f} '
        f'({names[order[0]]}), max {share.max():.2f} ({names[order[-1]]})')
  spread = x_tr.std(0) / np.abs(x_tr.mean(0))
  print(f'raw features: |mean| {np.abs(x_tr.mean(0)).min():.3f} to '
        f'{np.abs(x_tr.mean(0)).max():.3f}; std / |mean| median '
        f'{np.median(spread):.3f} (what a Dense layer sees unstandardised)')

  flat_tr = y_tr.reshape(len(y_tr), -1).astype(np.float64)
  face = layout_lib.layout_of_dataset(info).face_region(res)
  mm = frames.canonical_mm_per_px(res)

  def distance_mm(pred, true):
    return float((np.linalg.norm(pred - true, axis=-1)[:, face].mean(1) *
                  mm).mean())

  predictions = {
      'mean training face': np.broadcast_to(y_tr.mean(0), y_te.shape)}
  inputs = {  # name: (train, test) columns of the 'landmarks' condition
      'the 31 features': (x_tr, x_te),
      'the features, their squares and products': (
          _quadratic(x_tr), _quadratic(x_te)),
      'the frontal view\'s normalised landmarks': (
          c_tr[:, f:f + 136], c_te[:, f:f + 136]),
      'the three views\' normalised landmarks': (c_tr[:, f:], c_te[:, f:]),
      'the landmarks condition: the features and the three views\' '
      'landmarks': (c_tr, c_te)}
  ids = np.unique(id_tr)
  for share in (0.25, 0.5):  # does a linear map of the features want data?
    some = np.isin(id_tr, ids[:int(len(ids) * share)])
    alpha, pred = fitted_ridge(c_tr[some, :f], flat_tr[some], id_tr[some],
                               c_te[:, :f], y_tr.shape[1:], distance_mm)
    predictions[f'ridge on the 31 features, {some.sum()} train records '
                f'(alpha {alpha:g})'] = pred
  for name, (a, b) in inputs.items():
    alpha, pred = fitted_ridge(a, flat_tr, id_tr, b, y_tr.shape[1:],
                               distance_mm)
    predictions[f'ridge on {name} ({a.shape[1]} numbers, alpha '
                f'{alpha:g})'] = pred
  predictions['true faces'] = y_te
  if args.workdir:
    from jaxface.train import trained as trained_lib  # pylint: disable=g-import-not-at-top
    model = trained_lib.load(args.workdir)
    module, variables = trained_lib.facegen(model)
    cond, _, _ = load_split(args.data, info, 'test',
                            model.config.facegen.condition)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(
        jnp.arange(len(cond)))
    predictions['the generator'] = np.asarray(gen_eval._generate(  # pylint: disable=protected-access
        module, variables, jnp.asarray(cond, jnp.float32), keys))
  bundle = gen_eval._classifier(  # pylint: disable=protected-access
      args.classifier or None, '/tmp/facegen_identity_classifier', args.data,
      info, res, True)
  print('| prediction | distance to the true face (mm) | Inception Score |')
  print('|---|---|---|')
  for name, pred in predictions.items():
    probs, _ = inception.classify(bundle, np.ascontiguousarray(pred))
    score = inception.inception_score(probs, min(10, len(probs)))[0]
    print(f'| {name} | {distance_mm(pred, y_te):.2f} | {score:.2f} |')


if __name__ == '__main__':
  main()
