"""Evaluation figures drawn with matplotlib: CED, learning curves, ablations.

`ced_plot` draws the CED curves of per-image errors (the fraction of images
whose NME is at most each threshold), as in AFLW2000-3D's figures, with a
legend giving each curve's mean and AUC; `learning_curve_plot` draws a run's
loss and eval metric against the step; `ablation_plot` a study's metrics
per variant with error bars and its learning curves. Figures use matplotlib's object API
on the Agg canvas (never pyplot), so drawing opens no window, changes no
global state and is safe in threads. Files are written atomically
(`files.write_atomic`).
"""

from __future__ import annotations

import io

from matplotlib import figure as figure_lib
from matplotlib.backends import backend_agg
import numpy as np

from jaxface import files
from jaxface.eval import metrics

# Figure size (width, height) in pixels.
SIZE = (720, 540)
# Curve colours, BGR (as cv2.imread reads them), in the order of the curves.
COLOURS = ((189, 114, 0), (25, 83, 217), (32, 177, 237), (142, 47, 126),
           (48, 172, 119), (238, 190, 77), (47, 20, 162), (128, 128, 128))
_DPI = 100
_TICKS = 6
LEARNING_CURVE = 'learning_curve.png'


def _figure(size: tuple[int, int]) -> figure_lib.Figure:
  """A figure of `size` (width, height) pixels on its own Agg canvas."""
  fig = figure_lib.Figure(figsize=(size[0] / _DPI, size[1] / _DPI), dpi=_DPI,
                          layout='constrained')
  backend_agg.FigureCanvasAgg(fig)
  return fig


def _save(fig: figure_lib.Figure, path: str) -> str:
  """Writes `fig` as a PNG of its pixel size to `path`, atomically."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=_DPI)
  return files.write_atomic(path, buffer.getvalue())


def _rgb(bgr: tuple[int, int, int]) -> tuple[float, ...]:
  """A BGR colour in 0..255 -> matplotlib's RGB in [0, 1]."""
  return tuple(c / 255 for c in reversed(bgr))


def _ced_curve(label: str, errors, max_error: float
               ) -> tuple[np.ndarray, np.ndarray, str]:
  """One CED curve: (T,) thresholds (unitless), (T,) fractions in [0, 1]
  and its legend text; T is 0 when `errors` is empty."""
  errors = np.asarray(errors, np.float64).reshape(-1)
  if not errors.size:
    return np.zeros(0), np.zeros(0), f'{label}: no images'
  failed = np.where(np.isfinite(errors), errors, np.inf)
  thresholds, fraction = metrics.ced(failed, max_error, 501)
  finite = errors[np.isfinite(errors)]
  mean = f'{100 * finite.mean():.2f}%' if finite.size else 'n/a'
  auc = metrics.ced_auc(failed, max_error)
  return thresholds, fraction, (f'{label}: mean {mean}, '
                                f'AUC@{100 * max_error:g}% {auc:.3f}')


def ced_plot(curves: dict[str, np.ndarray], path: str,
             max_error: float = 0.1, title: str = '',
             size: tuple[int, int] = SIZE) -> str:
  """Draws cumulative error distribution curves into a PNG.

  x: the error threshold as a percentage (NME x 100, 0 to max_error x 100);
  y: the percentage of images with an error at most x. Curve k is drawn in
  `COLOURS[k % len(COLOURS)]`. The legend gives each curve's mean error (in
  %, over all its images, also those beyond max_error) and its AUC@max_error
  (`metrics.ced_auc`, in [0, 1]). Non-finite errors count as failures (never
  within a threshold) and are left out of the mean.

  Args:
    curves: {label: (N,) per-image errors, unitless (e.g. NME)}, in legend
      order.
    path: the PNG to write (atomically).
    max_error: the largest error shown, unitless, > 0.
    title: drawn above the plot.
    size: (width, height) of the image in pixels.

  Returns:
    The path.

  Raises:
    ValueError: max_error is not a positive finite number.
  """
  if not (np.isfinite(max_error) and max_error > 0):
    raise ValueError(f'max_error must be positive and finite, not '
                     f'{max_error!r}')
  fig = _figure(size)
  ax = fig.add_subplot()
  for k, (label, errors) in enumerate(curves.items()):
    thresholds, fraction, text = _ced_curve(label, errors, max_error)
    # Above the frame and unclipped, so a curve at 100 % stays whole.
    ax.plot(100 * thresholds, 100 * fraction, label=text,
            color=_rgb(COLOURS[k % len(COLOURS)]), linewidth=2 * 72 / _DPI,
            clip_on=False, zorder=3)
  x_ticks = np.linspace(0, 100 * max_error, _TICKS)
  ax.set_xticks(x_ticks, [f'{t:g}' for t in x_ticks])
  ax.set_yticks(np.linspace(0, 100, _TICKS))
  ax.set_xlim(0, 100 * max_error)
  ax.set_ylim(0, 100)
  ax.set_xlabel('NME (%)')
  ax.set_ylabel('images (%)')
  ax.grid(True, color='0.88')
  if curves:
    # Bottom right, below the rising curves.
    ax.legend(loc='lower right', fontsize='small', framealpha=1)
  if title:
    ax.set_title(title)
  return _save(fig, path)


def learning_curve_plot(records: list[dict], path: str, title: str = '',
                        loss_key: str = 'train/loss',
                        eval_key: str = 'eval/nme',
                        baseline_key: str = 'eval/nme_mean_face') -> str:
  """Draws a run's learning curve into a 720 x 450 pixel PNG.

  Left axis: the training loss (log scale) against the step; right axis:
  the eval metric against the step, with the constant baseline (the mean
  face's NME) as a dashed line. A step logged twice (a resumed run repeats
  the steps after its last checkpoint) is drawn with its last value.

  Args:
    records: metrics.jsonl records (`jaxface.train.metrics.read_jsonl`).
    path: the PNG to write (atomically).
    title: the figure's title.
    loss_key, eval_key, baseline_key: the metrics drawn.

  Returns:
    The path.

  Raises:
    ValueError: the records hold neither the loss nor the eval metric.
  """

  def series(key):
    last = {int(r['step']): float(r[key]) for r in records if key in r}
    steps = sorted(last)
    return np.array(steps), np.array([last[s] for s in steps])

  loss_steps, loss = series(loss_key)
  eval_steps, evals = series(eval_key)
  _, baseline = series(baseline_key)
  if not len(loss_steps) and not len(eval_steps):
    raise ValueError(f'no {loss_key!r} or {eval_key!r} in the metrics')
  fig = _figure((720, 450))
  ax = fig.add_subplot()
  ax.plot(loss_steps, loss, color='tab:blue', label=loss_key)
  ax.set_yscale('log')
  ax.set_xlabel('step')
  ax.set_ylabel(loss_key, color='tab:blue')
  ax.grid(True, alpha=0.3)
  right = ax.twinx()
  right.plot(eval_steps, evals, 'o-', color='tab:red', label=eval_key)
  if len(baseline):
    right.axhline(baseline[-1], color='tab:gray', linestyle='--',
                  label=f'{baseline_key} {baseline[-1]:.3f}')
  if len(evals):
    right.set_ylim(0, 1.1 * max(np.max(evals), *baseline[-1:]))
  right.set_ylabel(eval_key, color='tab:red')
  lines = ax.get_legend_handles_labels()
  more = right.get_legend_handles_labels()
  right.legend(lines[0] + more[0], lines[1] + more[1], loc='upper right')
  if title:
    ax.set_title(title)
  return _save(fig, path)


def ablation_plot(metrics: dict[str, list[tuple[str, float | None,
                                                float | None, float]]],
                  curves: dict[str, tuple[np.ndarray, np.ndarray]],
                  path: str, title: str = '') -> str:
  """Draws an ablation study's results into one PNG.

  One panel per metric: each variant's mean over seeds with its standard
  deviation as an error bar; a last panel: each variant's mean training
  loss (log scale) against the step.

  Args:
    metrics: label -> [(variant, mean or None, std or None, scale)], the
      values drawn times `scale`.
    curves: variant -> ((S,) steps, (S,) mean loss).
    path: the PNG to write (atomically).
    title: the figure's title.

  Returns:
    The path.
  """
  panels = len(metrics) + 1
  columns = min(panels, 3)
  rows = -(-panels // columns)
  fig = _figure((400 * columns, 330 * rows))
  for k, (label, values) in enumerate(metrics.items()):
    ax = fig.add_subplot(rows, columns, k + 1)
    names = [v[0] for v in values]
    means = [np.nan if v[1] is None else v[1] * v[3] for v in values]
    stds = [0.0 if v[2] is None else v[2] * v[3] for v in values]
    ax.errorbar(np.arange(len(names)), means, yerr=stds, fmt='o',
                capsize=4, color='tab:blue')
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha='right',
                  fontsize=8)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_title(label, fontsize=10)
    ax.grid(True, axis='y', alpha=0.3)
  ax = fig.add_subplot(rows, columns, panels)
  for name, (steps, loss) in curves.items():
    if len(steps):
      ax.plot(steps, loss, label=name)
  ax.set_yscale('log')
  ax.set_xlabel('step')
  ax.set_title('train loss (mean over seeds)', fontsize=10)
  ax.grid(True, alpha=0.3)
  if any(len(s) for s, _ in curves.values()):
    ax.legend(fontsize=7)
  if title:
    fig.suptitle(title, fontsize=11)
  return _save(fig, path)
