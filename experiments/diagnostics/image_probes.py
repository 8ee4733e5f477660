"""Which image qualities does a synthetic-only PRNet misread in photos?
Each probe changes the photos in one way before the network sees them, and
the AFLW-21 held-out error is measured again.

  python -m experiments.diagnostics.image_probes --model synthetic \
      [--workdir RUN] [--limit 1000] [--probes none,grey,blur1,...]

A probe that lowers the error on photos names something in them that the
renders lack or have otherwise: blurring helps when photos carry fine
detail that the network never saw on renders, greyscale when their
colours mislead it; a `zoom` probe scales the faces within the crops (and
the predictions back), a probe of the framing; a `zooms` probe averages
the predictions over several zooms (test-time augmentation); a
`derotate` probe predicts twice, the second time on the crop turned so that
the first prediction's face stands upright (test-time alignment of the
tilt). Probes
(`PROBES`) act on the (B, R, R, 3) crops at the model's resolution, after
the records are brought to it, in `prnet.predict`; the measurement is
`aflw21_eval.measure`'s ('resize' crops, averaged with the mirror image
where the model is). Prints a markdown table (NME % mean of the yaw bins,
with and without the ear lobes); `--out F.json` also writes it.
"""

from __future__ import annotations

import argparse
import contextlib
from unittest import mock

import cv2
import numpy as np

from data_pipelines import aflw21
from experiments.benchmarks import aflw21_eval
from jaxface import files
from jaxface.eval import metrics
from jaxface.face import layout as layout_lib
from jaxface.models import prnet as prnet_lib
from jaxface.train import trained as trained_lib


def _per_image(fn):
  def apply(images: np.ndarray) -> np.ndarray:
    return np.stack([fn(image) for image in images]).astype(np.float32)
  return apply


def _blur(sigma: float):
  return _per_image(lambda x: cv2.GaussianBlur(x, (0, 0), sigma))


def _down_up(factor: int):
  def fn(x):
    side = x.shape[0]
    small = cv2.resize(x, (side // factor, side // factor),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR)
  return _per_image(fn)


def _sharpen(amount: float, sigma: float = 1.0):
  return _per_image(lambda x: np.clip(
      x + amount * (x - cv2.GaussianBlur(x, (0, 0), sigma)), 0, 1))


def _grey(images: np.ndarray) -> np.ndarray:
  grey = images @ np.array([0.299, 0.587, 0.114], np.float32)
  return np.repeat(grey[..., None], 3, -1)


def _noise(sigma: float):
  def apply(images):
    rng = np.random.default_rng(0)
    return np.clip(images + rng.normal(0, sigma, images.shape), 0,
                   1).astype(np.float32)
  return apply


def _gamma(g: float):
  return lambda images: np.power(np.clip(images, 0, 1), g).astype(np.float32)


class Zoom:
  """Scales the crops' content by `scale` about their centre (the border
  replicated), and the predictions back: a probe of the framing. Below 1
  the faces fill less of the crop."""

  def __init__(self, scale: float):
    self.scale = scale

  def __call__(self, images: np.ndarray) -> np.ndarray:
    side = images.shape[1]
    c = (side - 1) / 2
    m = cv2.getRotationMatrix2D((c, c), 0, self.scale)
    return _per_image(lambda x: cv2.warpAffine(
        x, m, (side, side), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE))(images)

  def unmap(self, points, side: int):
    """(..., 3) x, y, z predicted on the zoomed crop -> the crop's."""
    c = (side - 1) / 2
    xy = (points[..., :2] - c) / self.scale + c
    return np.concatenate([xy, points[..., 2:] / self.scale], -1)


class ZoomAverage:
  """Not a change of the photos but test-time augmentation over the
  framing: the mean of the predictions on the crops zoomed by each of
  `scales`, each mapped back (`Zoom`)."""

  def __init__(self, scales: tuple[float, ...]):
    self.zooms = tuple(Zoom(s) for s in scales)


class Derotate:
  """Test-time alignment of the in-plane rotation: predict once, turn each
  crop about its centre so that the predicted face's up axis (its
  canonical up, (0, -1, 0), through the rotation of a similarity fit of the
  predicted map to the procedural layout's canonical face) points straight
  up, predict again and turn the second prediction back. `passes` > 2
  repeats the turn from each pass's prediction. A probe of whether the
  network under-follows the photos' tilt (its `roll_follow` below 1)."""

  def __init__(self, passes: int = 2):
    self.passes = passes
    self._canonical = {}

  def fit_mask_and_canonical(self, side: int):
    if side not in self._canonical:
      canonical = metrics.canonical_reference(side)
      mask = metrics.pose_fit_texels(
          layout_lib.PROCEDURAL.face_region(side), canonical)
      self._canonical[side] = (mask, canonical[mask].astype(np.float64))
    return self._canonical[side]

  def tilts(self, maps: np.ndarray) -> np.ndarray:
    """(B, R, R, 3) maps -> (B, 2, 2) rotations of the image plane that
    turn each predicted face upright."""
    mask, canonical = self.fit_mask_and_canonical(maps.shape[1])
    out = []
    for position_map in maps:
      rotation = metrics.estimate_pose(position_map[mask],
                                       canonical)['rotation']
      up = rotation[:2, 1] * -1.0  # the canonical up (0, -1, 0), turned
      angle = np.arctan2(up[0], -up[1])  # from straight up, towards +x
      c, s = np.cos(angle), np.sin(angle)
      out.append([[c, s], [-s, c]])  # turns up back to (0, -1)
    return np.asarray(out, np.float64)

  @staticmethod
  def turn(images: np.ndarray, q: np.ndarray) -> np.ndarray:
    side = images.shape[1]
    c = np.full(2, (side - 1) / 2)
    out = []
    for image, qi in zip(images, q):
      m = np.concatenate([qi, (c - qi @ c)[:, None]], 1)
      out.append(cv2.warpAffine(image, m, (side, side),
                                flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE))
    return np.stack(out).astype(np.float32)

  @staticmethod
  def unturn(points: np.ndarray, q: np.ndarray, side: int) -> np.ndarray:
    """(B, ..., 3) points predicted on the turned crops -> the crops'."""
    c = (side - 1) / 2
    shape = points.shape
    flat = points.reshape(shape[0], -1, 3)
    xy = np.einsum('bji,bnj->bni', q, flat[..., :2] - c) + c
    return np.concatenate([xy, flat[..., 2:]], -1).reshape(shape)


# name -> (B, R, R, 3) float32 in [0, 1] -> the same shape and range (a
# `Zoom` also maps the predictions back to the crop's frame), or a
# `ZoomAverage` or `Derotate` (test-time augmentation, run by `probed`).
PROBES = {
    'none': lambda images: images,
    'grey': _grey,
    'blur0.7': _blur(0.7),
    'blur1.5': _blur(1.5),
    'down2': _down_up(2),
    'sharpen': _sharpen(1.0),
    'noise0.03': _noise(0.03),
    'gamma0.7': _gamma(0.7),
    'gamma1.4': _gamma(1.4),
    'zoom0.9': Zoom(0.9),
    'zoom1.1': Zoom(1.1),
    'zooms0.95+1+1.05': ZoomAverage((0.95, 1.0, 1.05)),
    'zooms0.9+1+1.1': ZoomAverage((0.9, 1.0, 1.1)),
    'derotate': Derotate(2),
    'derotate3': Derotate(3),
}


@contextlib.contextmanager
def probed(probe):
  """`prnet.predict` with `probe` applied to its images."""
  real = prnet_lib.predict

  def predict(module, variables, images, landmark_uv):
    images = np.asarray(images, np.float32)
    side = images.shape[1]
    if isinstance(probe, Derotate):
      m, p = real(module, variables, images, landmark_uv)
      for _ in range(probe.passes - 1):
        q = probe.tilts(np.asarray(m))  # m is in the crop's frame
        m, p = real(module, variables, probe.turn(images, q), landmark_uv)
        m = probe.unturn(np.asarray(m), q, side)
        p = probe.unturn(np.asarray(p), q, side)
      return np.asarray(m), np.asarray(p)
    each = probe.zooms if isinstance(probe, ZoomAverage) else (probe,)
    maps, points = [], []
    for one in each:
      m, p = real(module, variables, one(images), landmark_uv)
      if isinstance(one, Zoom):
        m, p = one.unmap(np.asarray(m), side), one.unmap(np.asarray(p), side)
      maps.append(np.asarray(m))
      points.append(np.asarray(p))
    return np.mean(maps, 0), np.mean(points, 0)

  with mock.patch.object(prnet_lib, 'predict', predict):
    yield


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  aflw21_eval.add_model_source(parser)
  parser.add_argument('--probes', default=','.join(PROBES),
                      help='comma-separated names of PROBES')
  parser.add_argument('--out', default=None, help='also write JSON here')
  args = parser.parse_args(argv)
  names = [n for n in args.probes.split(',') if n]
  unknown = sorted(set(names) - set(PROBES))
  if unknown or not names:
    parser.error(f'--probes: unknown {unknown}; available: {list(PROBES)}')
  trained = trained_lib.load_model(args.workdir, args.model)
  data = aflw21.load(args.data)
  out = {'model': args.workdir or args.model, 'limit': args.limit,
         'nme': {}}
  for name in names:
    with probed(PROBES[name]):
      out['nme'][name] = aflw21_eval.held_out_nme(trained, data, args.limit)
  print('| probe | NME % | without the ear lobes |\n|---|---|---|')
  for name, nme in out['nme'].items():
    print(f'| {name} | {nme["all"]} | {nme["no_ears"]} |')
  if args.out:
    files.write_json(args.out, out)
  return out


if __name__ == '__main__':
  main()
