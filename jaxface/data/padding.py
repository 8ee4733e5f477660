"""Batches padded to a fixed number of rows, so that a jitted step compiles
once (evaluation, inference), or so that the rows divide over the devices.

    padded = padding.pad_batch(batch, batch_size)
    out = step(padded)[:n]   # keep the first n rows of the results
"""

from __future__ import annotations

import numpy as np


def pad_batch(batch, size: int):
  """A batch with `size` rows: an array, or a dict of arrays (rows on
  axis 0, the same number in each).

  The added rows repeat the batch's last row (zeros when it has none), so
  they are valid inputs; results on them are to be dropped. A batch with
  `size` rows or more is returned as it is.
  """
  if isinstance(batch, dict):
    return {key: pad_batch(value, size) for key, value in batch.items()}
  batch = np.asarray(batch)
  pad = size - len(batch)
  if pad <= 0:
    return batch
  last = batch[-1:] if len(batch) else np.zeros((1,) + batch.shape[1:],
                                                batch.dtype)
  return np.concatenate([batch, np.repeat(last, pad, 0)])
