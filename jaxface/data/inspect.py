"""`jaxface data inspect`: what a dataset holds, and a picture of samples."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from jaxface import files
from jaxface.data import records
from jaxface.data import shards

_TILE = 160


def summary(directory: str, check: dict[str, Any]) -> str:
  """A readable summary of dataset.json, the schemas and a `shards.check`."""
  info = shards.read_dataset_info(directory)
  lines = [f'dataset {directory}',
           f'  source: {info.get("source")}  seed: {info.get("seed")}  '
           f'resolution: {info.get("resolution")}  '
           f'schema version: {info["schema_version"]}']
  for kind, splits in info['kinds'].items():
    for split, entry in splits.items():
      c = check['counts'].get(kind, {}).get(split, {})
      lines.append(f'  {kind}/{split}: {entry["count"]} records in '
                   f'{len(entry["shards"])} shard(s); checked '
                   f'{c.get("checked", 0)}, bad {c.get("bad", 0)}')
  for kind in info['kinds']:
    lines.append('')
    lines.append(records.schema_description(kind))
  if check['problems']:
    lines.append('')
    lines.append(f'{len(check["problems"])} problem(s):')
    for p in check['problems'][:20]:
      where = f'{p["kind"]}/{p["split"]}'
      if p.get('index') is not None:
        where += f' record {p["index"]}'
      lines.append(f'  {where} ({p.get("shard")}): {p["error"]}')
    if len(check['problems']) > 20:
      lines.append(f'  ... and {len(check["problems"]) - 20} more')
  return '\n'.join(lines)


def position_map_picture(position_map: np.ndarray,
                         mask: np.ndarray | None = None) -> np.ndarray:
  """(H, W, 3) position map -> uint8 RGB, x/y/z each scaled to [0, 255]."""
  pos = np.asarray(position_map, np.float32)
  valid = np.ones(pos.shape[:2], bool) if mask is None else mask
  lo = pos[valid].min(0)
  hi = pos[valid].max(0)
  pic = (pos - lo) / np.maximum(hi - lo, 1e-6)
  pic[~valid] = 0
  return (np.clip(pic, 0, 1) * 255).astype(np.uint8)


def draw_landmarks(rgb: np.ndarray, landmarks: np.ndarray,
                   colour=(0, 255, 0)) -> np.ndarray:
  """Draws (N, 2+) landmarks (pixels) on a copy of an RGB image."""
  out = np.ascontiguousarray(rgb).copy()
  radius = max(1, out.shape[0] // 128)
  for x, y in np.asarray(landmarks)[:, :2]:
    cv2.circle(out, (int(round(x)), int(round(y))), radius, colour, -1)
  return out


def tile(rgb: np.ndarray, side: int = _TILE) -> np.ndarray:
  """An (H, W, 3) uint8 picture as a (side, side) tile: area-averaged when
  it shrinks, nearest-neighbour (whole texels) when it grows."""
  return cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA
                    if rgb.shape[0] > side else cv2.INTER_NEAREST)


def tile_grid(rows: list[list[np.ndarray]], side: int = _TILE) -> np.ndarray:
  """Rows of uint8 RGB pictures -> one uint8 image of (side, side) tiles,
  short rows filled with black."""
  width = max(len(r) for r in rows)
  blank = np.zeros((side, side, 3), np.uint8)
  return np.concatenate([
      np.concatenate([tile(t, side) for t in r] + [blank] * (width - len(r)),
                     1) for r in rows], 0)


def sample_row(kind: str, record: dict) -> list[np.ndarray]:
  """Pictures of one record: images with landmarks and position maps."""
  if kind == 'recon':
    image = records.decode_jpeg(record['image'])
    if 'landmarks' in record:
      points = record['landmarks']
    else:  # A 2D record: its annotated points, where visible.
      points = record['points2d'][record['points_visible'] == 1]
    pictures = [draw_landmarks(image, points)]
    if 'position_map' in record:
      pictures.append(position_map_picture(record['position_map']))
    if 'original_image' in record:
      pictures.append(records.decode_jpeg(record['original_image']))
    return pictures
  if kind == 'multiview':
    pictures = [draw_landmarks(records.decode_jpeg(im), lmk)
                for im, lmk in zip(record['images'], record['landmarks'])]
    return pictures + [position_map_picture(record['canonical_position_map'])]
  return [draw_landmarks(records.decode_jpeg(f), lmk,
                         (0, 255, 0) if record['label'] else (255, 0, 0))
          for f, lmk in zip(record['frames'], record['landmarks'])]


def sample_grid(directory: str, kind: str, split: str, count: int
                ) -> np.ndarray:
  """uint8 RGB grid, one row per record (the first `count` readable ones)."""
  rows = []
  with shards.RecordReader(directory, kind, split) as reader:
    for index in range(len(reader)):
      if len(rows) == count:
        break
      try:
        rows.append(sample_row(kind, reader[index]))
      except records.RecordError:
        continue  # Reported by the check; the picture shows good records.
  if not rows:
    raise shards.DatasetError(f'{directory}: no readable {kind}/{split} '
                              'records to draw')
  return tile_grid(rows)


def write_png(path: str, image: np.ndarray) -> None:
  """Writes an (H, W, 3) RGB or (H, W) grey uint8 / uint16 image as a PNG,
  atomically (`files.write_atomic`): every PNG jaxface writes goes here."""
  if image.ndim == 3:
    image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
  ok, buffer = cv2.imencode('.png', image)
  if not ok:
    raise OSError(f'could not encode {path} as PNG')
  files.write_atomic(path, buffer.tobytes())
