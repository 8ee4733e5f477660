"""Where does a PRNet's error on real faces come from? Splits its AFLW-21
held-out error into framing (position, scale, in-plane rotation) and the
rest, and compares it with a mean shape that knows the yaw.

  python -m experiments.diagnostics.aflw21_errors --model synthetic \
      --workdir runs/a --workdir runs/b [--limit 500]

For each model: `experiments.benchmarks.aflw21_eval.measure` (resized
crops, the model's resolution), then the 21-point NME (visible points,
mean of the |yaw| bins, ear lobes included; `metrics.points_summary`) of

- `raw`: the predictions as they are (the benchmark's figure);
- `-shift`: each image's predicted points moved so that their centroid is
  the true points' (over the points both have);
- `-scale`: also scaled about it, by the least-squares factor;
- `-rotation`: also rotated (2D Procrustes), the shape error alone;

and the framing statistics: the mean centroid offset (x, y, in units of
the visible points' box, sqrt(w h)), the mean log scale (truth over
prediction), and `roll_follow`: the slope of the predicted face's in-plane
angle against the truth's (the angle of the outer eye corners' line;
faces with both visible), 1 for a model that follows the photo's roll, 0
for one that always predicts an upright face. `yaw_mean_shape` is the NME
of a constant per 10-degree yaw bin (the held-out faces' mean points in
that bin): a model that reads only the yaw off the photo scores about that.

`--probe NAME` measures the predictions through one of
`image_probes.PROBES` (a change of the photos, or test-time augmentation).

Prints a markdown table; `--out F.json` also writes the figures.
`--per-point` also prints, per point, the mean signed error of the
`-rotation` stage over the faces within 30 degrees of frontal (x, y in %
of the visible points' box; y down): what stays wrong in a point after
each face's framing is removed, a shape bias or a point read at another
place than the annotators mark.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import numpy as np

from data_pipelines import aflw21
from experiments.benchmarks import aflw21_eval
from experiments.diagnostics import image_probes
from jaxface.eval import metrics
from jaxface.face import schemes
from jaxface.train import trained as trained_lib

# AFLW-21's outer eye corners (schemes.AFLW21's order).
_EYE_CORNERS = (6, 11)
STAGES = ('raw', '-shift', '-scale', '-rotation')


def _fit(pred: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
  """Each image's alignment of its predicted points to the true ones.

  Args:
    pred, true: (N, P, 2) points; NaN where missing.

  Returns:
    {stage (`STAGES`): (N, P, 2) the predictions after that stage's
    alignment (points missing on either side stay NaN; images with fewer
    than 2 points in common are left as they are), 'offset': (N, 2) the
    predicted minus the true centroid in units of sqrt(w h) of the visible
    true points' box, 'log_scale': (N,) log of the truth's spread over the
    prediction's, 'points': (N,) the points in common}.
  """
  out = {stage: np.array(pred, np.float64) for stage in STAGES}
  out['offset'] = np.full((len(pred), 2), np.nan)
  out['log_scale'] = np.full(len(pred), np.nan)
  out['points'] = np.zeros(len(pred), int)
  norms = metrics.visible_box_norm(true)
  for i, (p, t) in enumerate(zip(pred, true)):
    both = np.isfinite(p[:, 0]) & np.isfinite(t[:, 0])
    out['points'][i] = both.sum()
    if both.sum() < 2:
      continue
    pc, tc = p[both].mean(0), t[both].mean(0)
    a, b = p[both] - pc, t[both] - tc
    scale = np.sqrt((b ** 2).sum() / max((a ** 2).sum(), 1e-12))
    u, s, vt = np.linalg.svd(a.T @ b)
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
      u[:, -1] *= -1
      rotation = u @ vt
    similar = s.sum() / max((a ** 2).sum(), 1e-12)
    out['-shift'][i][both] = a + tc
    out['-scale'][i][both] = scale * a + tc
    out['-rotation'][i][both] = similar * a @ rotation + tc
    out['offset'][i] = (pc - tc) / norms[i]
    out['log_scale'][i] = np.log(scale)
  return out


def _angle(points: np.ndarray) -> np.ndarray:
  """(N, P, 2) -> (N,) degrees of the outer eye corners' line (NaN where
  one is missing)."""
  d = points[:, _EYE_CORNERS[1]] - points[:, _EYE_CORNERS[0]]
  return np.degrees(np.arctan2(d[:, 1], d[:, 0]))


def framing(pred: np.ndarray, true: np.ndarray,
            fit: dict[str, np.ndarray]) -> dict[str, object]:
  """The mean centroid offset and log scale (`_fit`'s, over the images
  with 3 points or more in common), and the roll slope."""
  used = fit['points'] >= 3
  true_angle, pred_angle = _angle(true), _angle(pred)
  ok = np.isfinite(true_angle) & np.isfinite(pred_angle)
  slope = float(np.polyfit(true_angle[ok], pred_angle[ok], 1)[0])
  return {'offset_xy': np.mean(fit['offset'][used], 0).round(4).tolist(),
          'log_scale': round(float(np.mean(fit['log_scale'][used])), 4),
          'roll_follow': round(slope, 3), 'roll_faces': int(ok.sum())}


def yaw_mean_shape(true: np.ndarray, yaw_deg: np.ndarray) -> np.ndarray:
  """(N, P, 2): each face's prediction is the mean of the true points of
  the faces in its 10-degree yaw bin."""
  bins = np.floor(np.asarray(yaw_deg) / 10).astype(int)
  out = np.full(true.shape, np.nan)
  with warnings.catch_warnings():  # a point never visible in a bin: NaN
    warnings.simplefilter('ignore', RuntimeWarning)
    for b in np.unique(bins):
      out[bins == b] = np.nanmean(true[bins == b], axis=0)
  return out


def point_bias(aligned: np.ndarray, true: np.ndarray, yaw_deg: np.ndarray,
               max_yaw: float = 30.0) -> np.ndarray:
  """(P, 2) mean of (aligned - true) / sqrt(w h) of each face's visible
  true points' box, in %, over the faces with |yaw| < max_yaw (NaN for a
  point never seen there)."""
  sel = np.abs(np.asarray(yaw_deg)) < max_yaw
  a, t = aligned[sel], true[sel]
  box = metrics.visible_box_norm(t)
  with warnings.catch_warnings():  # a point never visible: NaN
    warnings.simplefilter('ignore', RuntimeWarning)
    return 100 * np.nanmean((a - t) / box[:, None, None], axis=0)


def analyse(pred: np.ndarray, true: np.ndarray, yaw_deg: np.ndarray
            ) -> dict[str, object]:
  """The module docstring's figures (NMEs in %, mean of bins)."""
  nme = lambda p: round(100 * metrics.points_summary(  # noqa: E731
      p, true, yaw_deg, schemes.AFLW21.is_ear)[0]['nme']['mean_of_bins'], 2)
  fit = _fit(pred, true)
  out = {stage: nme(fit[stage]) for stage in STAGES}
  out['yaw_mean_shape'] = nme(yaw_mean_shape(true, yaw_deg))
  bias = point_bias(fit['-rotation'], true, yaw_deg)
  return {**out, **framing(pred, true, fit),
          'point_bias': np.round(bias, 2).tolist()}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', action='append', default=[],
                      help='a training workdir (repeatable)')
  parser.add_argument('--model', action='append', default=[],
                      help='a shipped model\'s name (repeatable)')
  parser.add_argument('--data', default=aflw21.DEFAULT_DIR)
  parser.add_argument('--limit', type=aflw21_eval.face_count, default=None)
  parser.add_argument('--out', help='also write the figures to this JSON')
  parser.add_argument('--probe', default='none',
                      choices=sorted(image_probes.PROBES),
                      help='measure the predictions through this image probe '
                      '(image_probes.PROBES; default: none)')
  parser.add_argument('--per-point', action='store_true',
                      help='also print each point\'s mean signed error '
                      'after framing, faces within 30 degrees of frontal')
  args = parser.parse_args(argv)
  named = ([(m, dict(name=m)) for m in args.model]
           + [(w, dict(workdir=w)) for w in args.workdir])
  if not named:
    parser.error('give at least one --model or --workdir')
  rows = {}
  try:
    data = aflw21.load(args.data)
    for label, which in named:
      trained = trained_lib.load_model(**which)
      with image_probes.probed(image_probes.PROBES[args.probe]):
        _, results = aflw21_eval.measure(trained, data, ('resize',),
                                         args.limit)
      per_image = results['resize']['per_image']
      rows[label] = analyse(per_image['pred_points'],
                            per_image['true_points'], per_image['yaw_deg'])
  except (OSError, ValueError) as e:
    print(f'aflw21_errors: error: {e}', file=sys.stderr)
    return 2
  keys = [k for k in next(iter(rows.values())) if k != 'point_bias']
  print('| model | ' + ' | '.join(keys) + ' |')
  print('|---' * (len(keys) + 1) + '|')
  for label, row in rows.items():
    print(f'| {label} | ' + ' | '.join(str(row[k]) for k in keys) + ' |')
  if args.per_point:
    print('\nmean signed error after framing (x, y; % of the box; y down), '
          'faces within 30 degrees of frontal:\n')
    print('| point | ' + ' | '.join(rows) + ' |')
    print('|---' * (len(rows) + 1) + '|')
    for i, name in enumerate(schemes.AFLW21.point_names):
      print(f'| {name} | ' + ' | '.join(
          '{:+.1f}, {:+.1f}'.format(*row['point_bias'][i])
          for row in rows.values()) + ' |')
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(rows, f, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main())
