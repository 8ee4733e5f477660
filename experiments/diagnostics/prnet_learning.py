"""Why does a PRNet learn slowly? Trains named variants of a config on one
dataset and tabulates the eval NME against steps.

  jaxface data synth --out /tmp/d0 --resolution 64 --num-train 3000 \
      --num-test 256 --identities-train 500 --identities-test 100 \
      --crop-jitter 0      # the quickstart's data (--crop-jitter 0.1: 300W-LP's)
  python -m experiments.diagnostics.prnet_learning --data /tmp/d0 \
      --out /tmp/diag --steps 1500 --variants original noaug conv coords

Each variant is a list of config overrides on `--config` (default: the
quickstart's); its run goes to OUT/NAME (an existing run is resumed, so the
script can be stopped and started again). The table (markdown) goes to
stdout and OUT/results.md; OUT/results.json has the curves.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from jaxface.train import config_lib
from jaxface.train import loop
from jaxface.train import metrics as metrics_lib

# name -> overrides of the quickstart config. The first group adds one
# change at a time: from PRNet as published (its 24 layers, its 3-channel
# sigmoid output layers, the augmentations, Adam at 1e-3) to the recipe of
# 2026-12-01; the others are one change to that recipe (`_PRNET`: PRNet's
# 24 layers, no skips, the head at full resolution, as the README's figures
# for them were measured). 'quickstart' is the quickstart config as it is.
_PRNET = ['model.lite=False', 'model.skips=False', 'model.standardize=False',
          'model.half_res_head=False']
_ORIGINAL = _PRNET + ['model.head=prnet', 'model.coords=False',
                      'loss.z_weight=1.0', 'data.augment=True',
                      'optimizer.lr=1e-3']
VARIANTS = {
    'original': _ORIGINAL,
    'noaug': _ORIGINAL + ['data.augment=False'],
    'conv': _ORIGINAL + ['data.augment=False', 'model.head=conv'],
    'coords': _ORIGINAL + ['data.augment=False', 'model.head=conv',
                           'model.coords=True'],
    'z0.1': _ORIGINAL + ['data.augment=False', 'model.head=conv',
                         'model.coords=True', 'loss.z_weight=0.1'],
    'prnet': _PRNET,  # + Adam at 2e-3: the recipe of 2026-12-01
    'dense': _PRNET + ['model.global_dim=256'],
    'width0.5': _PRNET + ['model.width=0.5'],
    'landmark4': _PRNET + ['loss.landmark_weight=4.0'],
    'batch32': _PRNET + ['data.global_batch_size=32', 'train.num_steps=2000',
                         'optimizer.lr=3e-3'],
    'ema': _PRNET + ['train.ema_decay=0.995'],
    'dense128': _PRNET + ['model.global_dim=128'],
    'lr4e-3': _PRNET + ['optimizer.lr=4e-3'],
    'l1': _PRNET + ['loss.position=l1'],
    'skips': _PRNET + ['model.skips=True'],
    'lite': _PRNET + ['model.lite=True'],
    'skips_lite': _PRNET + ['model.skips=True', 'model.lite=True'],
    'quickstart': [],  # the quickstart config as it is
}


def _repo_config() -> str:
  here = os.path.dirname(os.path.abspath(__file__))
  return os.path.join(os.path.dirname(here), 'configs', 'quickstart.py')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data', required=True, help='a recon dataset')
  parser.add_argument('--out', required=True, help='folder for the runs')
  parser.add_argument('--config', default=_repo_config())
  parser.add_argument('--steps', type=int, default=1500)
  parser.add_argument('--eval-every', type=int, default=500)
  parser.add_argument('--variants', nargs='+', default=list(VARIANTS),
                      choices=sorted(VARIANTS))
  args = parser.parse_args()
  results = {}
  for name in args.variants:
    config = config_lib.apply_overrides(
        config_lib.load_config(args.config),
        [f'data.dir={args.data}', f'train.num_steps={args.steps}',
         f'train.eval_every={args.eval_every}', 'train.progress=False',
         *VARIANTS[name]])
    workdir = os.path.join(args.out, name)
    start = time.perf_counter()
    loop.run(config, workdir)
    records = metrics_lib.read_jsonl(
        os.path.join(workdir, metrics_lib.JSONL_NAME))
    curve = {int(r['step']): r['eval/nme'] for r in records
             if 'eval/nme' in r}
    baseline = [r['eval/nme_mean_face'] for r in records
                if 'eval/nme_mean_face' in r]
    results[name] = {'overrides': VARIANTS[name], 'nme': curve,
                     'nme_mean_face': baseline[-1] if baseline else None,
                     'seconds': time.perf_counter() - start}
  steps = sorted({s for r in results.values() for s in r['nme']})
  lines = ['| variant | ' + ' | '.join(f'NME @ {s}' for s in steps) +
           ' | mean face | wall s |',
           '|---' * (len(steps) + 3) + '|']
  for name, r in results.items():
    cells = [f'{r["nme"][s]:.4f}' if s in r['nme'] else '' for s in steps]
    lines.append(f'| {name} | ' + ' | '.join(cells) +
                 f' | {r["nme_mean_face"]:.4f} | {r["seconds"]:.0f} |')
  table = '\n'.join(lines)
  print(table)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'results.md'), 'w') as f:
    f.write(table + '\n')
  with open(os.path.join(args.out, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2)


if __name__ == '__main__':
  main()
