"""Evaluation figures drawn with OpenCV: cumulative error distributions.

`ced_plot` draws the CED curves of per-image errors (the fraction of images
whose NME is at most each threshold), as in AFLW2000-3D's figures, with
axes, ticks, a grid and a legend giving each curve's mean and AUC. Files are
written atomically (`files.write_atomic`).
"""

from __future__ import annotations


import cv2
import numpy as np

from jaxface import files
from jaxface.eval import metrics

# Figure size (width, height) in pixels.
SIZE = (720, 540)
# Curve colours, BGR, in the order of the curves.
COLOURS = ((189, 114, 0), (25, 83, 217), (32, 177, 237), (142, 47, 126),
           (48, 172, 119), (238, 190, 77), (47, 20, 162), (128, 128, 128))
_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)
_GRID = (225, 225, 225)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
# Margins of the plot area: left, top, right, bottom (pixels).
_MARGINS = (72, 44, 24, 64)
_X_TICKS = 5
_Y_TICKS = 5


def _text(image, text, origin, scale=0.45, colour=_BLACK, anchor='left'):
  """Draws text with its baseline at `origin`; anchor 'left', 'centre' or
  'right' aligns it horizontally."""
  (width, _), _ = cv2.getTextSize(text, _FONT, scale, 1)
  x, y = origin
  if anchor == 'centre':
    x -= width // 2
  elif anchor == 'right':
    x -= width
  cv2.putText(image, text, (int(x), int(y)), _FONT, scale, colour, 1,
              cv2.LINE_AA)


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
    max_error: the largest error shown.
    title: drawn above the plot.
    size: (width, height) of the image in pixels.

  Returns:
    The path.
  """
  width, height = size
  image = np.full((height, width, 3), 255, np.uint8)
  left, top = _MARGINS[0], _MARGINS[1]
  right, bottom = width - _MARGINS[2], height - _MARGINS[3]

  def to_pixel(x, y):
    """Threshold (unitless) and fraction in [0, 1] -> pixel (col, row)."""
    col = left + (np.asarray(x) / max_error) * (right - left)
    row = bottom - np.asarray(y) * (bottom - top)
    return np.stack([col, row], -1)

  for k in range(_X_TICKS + 1):
    col = int(round(left + k * (right - left) / _X_TICKS))
    cv2.line(image, (col, top), (col, bottom), _GRID, 1)
    cv2.line(image, (col, bottom), (col, bottom + 5), _BLACK, 1)
    _text(image, f'{100 * max_error * k / _X_TICKS:g}', (col, bottom + 20),
          anchor='centre')
  for k in range(_Y_TICKS + 1):
    row = int(round(bottom - k * (bottom - top) / _Y_TICKS))
    cv2.line(image, (left, row), (right, row), _GRID, 1)
    cv2.line(image, (left - 5, row), (left, row), _BLACK, 1)
    _text(image, f'{100 * k / _Y_TICKS:g}', (left - 9, row + 5),
          anchor='right')
  cv2.rectangle(image, (left, top), (right, bottom), _BLACK, 1)
  _text(image, 'NME (%)', ((left + right) // 2, height - 18), 0.5,
        anchor='centre')
  _text(image, 'images (%)', (8, top - 12), 0.5)
  if title:
    _text(image, title, ((left + right) // 2, 24), 0.6, anchor='centre')

  legend = []
  for k, (label, errors) in enumerate(curves.items()):
    colour = COLOURS[k % len(COLOURS)]
    errors = np.asarray(errors, np.float64).reshape(-1)
    finite = errors[np.isfinite(errors)]
    if errors.size == 0:
      legend.append((f'{label}: no images', colour))
      continue
    thresholds, fraction = metrics.ced(
        np.where(np.isfinite(errors), errors, np.inf), max_error, 501)
    points = np.round(to_pixel(thresholds, fraction)).astype(np.int32)
    cv2.polylines(image, [points], False, colour, 2, cv2.LINE_AA)
    mean = f'{100 * finite.mean():.2f}%' if finite.size else 'n/a'
    auc = metrics.ced_auc(np.where(np.isfinite(errors), errors, np.inf),
                          max_error)
    legend.append((f'{label}: mean {mean}, AUC@{100 * max_error:g}% '
                   f'{auc:.3f}', colour))

  # The legend sits in the plot's bottom right, below the rising curves.
  line_height = 20
  text_width = max([cv2.getTextSize(t, _FONT, 0.45, 1)[0][0]
                    for t, _ in legend] + [0])
  box_right, box_bottom = right - 8, bottom - 8
  box_left = box_right - text_width - 46
  box_top = box_bottom - line_height * len(legend) - 8
  if legend:
    cv2.rectangle(image, (box_left, box_top), (box_right, box_bottom), _WHITE,
                  -1)
    cv2.rectangle(image, (box_left, box_top), (box_right, box_bottom), _BLACK,
                  1)
  for k, (text, colour) in enumerate(legend):
    row = box_top + 4 + line_height * k + line_height // 2
    cv2.line(image, (box_left + 8, row), (box_left + 32, row), colour, 2,
             cv2.LINE_AA)
    _text(image, text, (box_left + 40, row + 5))

  ok, encoded = cv2.imencode('.png', image)
  if not ok:
    raise OSError(f'could not encode the figure for {path}')
  return files.write_atomic(path, encoded.tobytes())


LEARNING_CURVE = 'learning_curve.png'


def learning_curve_plot(records: list[dict], path: str, title: str = '',
                        loss_key: str = 'train/loss',
                        eval_key: str = 'eval/nme',
                        baseline_key: str = 'eval/nme_mean_face') -> str:
  """Draws a run's learning curve into a PNG, with matplotlib.

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
  import io  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  def series(key):
    last = {int(r['step']): float(r[key]) for r in records if key in r}
    steps = sorted(last)
    return np.array(steps), np.array([last[s] for s in steps])

  loss_steps, loss = series(loss_key)
  eval_steps, evals = series(eval_key)
  _, baseline = series(baseline_key)
  if not len(loss_steps) and not len(eval_steps):
    raise ValueError(f'no {loss_key!r} or {eval_key!r} in the metrics')
  fig, ax = plt.subplots(figsize=(7.2, 4.5), dpi=100)
  try:
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
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png')
  finally:
    plt.close(fig)
  return files.write_atomic(path, buffer.getvalue())
