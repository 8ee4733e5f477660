"""Study 3: which parts of the synthetic generator matter for real faces.

  python -m experiments.ablations.realism --scale cpu

A PRNet trained only on synthetic faces (the quickstart's recipe) on the
full renderer (the baseline) and on data rendered without one part of it
each (`synthetic.REALISM_PARTS`: texture detail, the scene light,
scene-like backgrounds, occluders, hair / clothes / glasses / hats, camera
effects, the photo pose distribution; what replaces each is written beside
`REALISM_PARTS`). Every run is measured on real faces, the first
`AFLW21_LIMIT` held-out faces of AFLW-21 (21-point NME, visible points,
mean of |yaw| bins, crops resized to the model's input:
`experiments/benchmarks/aflw21_eval.py`), and on the held-out faces of the
full renderer. Without the AFLW-21 folder (`aflw21.DEFAULT_DIR`, or the
environment variable JAXFACE_AFLW21) the real-face metrics are absent
(n/a), the synthetic ones still measured.
"""

import os

from experiments.ablations import recon_metrics
from experiments.ablations import runner
from jaxface.data import synthetic

# Held-out AFLW-21 faces measured per run: 1,000 of the 3,784 keep a run's
# evaluation under half a minute on 2 cores.
AFLW21_LIMIT = 1000

METRICS = (
    runner.Metric('aflw21.nme.mean_of_bins', 'AFLW-21 NME % (lower)',
                  scale=100),
    runner.Metric('aflw21.nme_no_ears.mean_of_bins',
                  'AFLW-21 NME % w/o ears (lower)', scale=100),
    runner.Metric('nme_2d.mean_of_bins', 'synthetic NME 2D % (lower)',
                  scale=100),
)


def aflw21_folder() -> str:
  from data_pipelines import aflw21  # pylint: disable=g-import-not-at-top
  return os.environ.get('JAXFACE_AFLW21', aflw21.DEFAULT_DIR)


def evaluate(workdir: str, data_dir: str) -> dict:
  """`recon_metrics.evaluate` on the synthetic held-out faces, plus
  'aflw21': {'nme', 'nme_no_ears', 'images'} on real faces (None without
  the AFLW-21 folder)."""
  from data_pipelines import aflw21  # pylint: disable=g-import-not-at-top
  from experiments.benchmarks import aflw21_eval  # pylint: disable=g-import-not-at-top
  from jaxface.train import trained as trained_lib  # pylint: disable=g-import-not-at-top
  report = recon_metrics.evaluate(workdir, data_dir)
  folder = aflw21_folder()
  if not os.path.isdir(folder):
    report['aflw21'] = None
    return report
  indices, results = aflw21_eval.measure(
      trained_lib.load(workdir), aflw21.load(folder), modes=('resize',),
      limit=AFLW21_LIMIT, batch_size=32)
  real = results['resize']['report']
  report['aflw21'] = {'nme': real['nme'], 'nme_no_ears': real['nme_no_ears'],
                      'images': int(len(indices))}
  return report


STUDY = runner.Study(
    name='realism',
    title='Synthetic realism: PRNet trained without each part of the '
          'renderer, measured on real AFLW-21 faces',
    config='experiments/configs/quickstart.py',
    variants=(runner.Variant('full'),) + tuple(
        runner.Variant(f'no-{part}', leave_out=(part,))
        for part in synthetic.REALISM_PARTS),
    metrics=METRICS,
    evaluate=evaluate,
    scales={
        # The quickstart's recipe as the results were measured (PRNet's
        # 24 layers, before lite + skips + standardize; renders of
        # synthetic.GENERATOR_VERSION 1, roll N(0, 7)), shortened: 2,000
        # steps of batch 16.
        'cpu': runner.Scale(
            overrides=('model.lite=false', 'model.skips=false',
                       'model.standardize=false',
                       'train.num_steps=2000', 'train.eval_every=2000',
                       'train.checkpoint_every=2000',
                       'train.keep_checkpoints=1'),
            data=recon_metrics.CPU_DATA),
        'paper': runner.Scale(
            overrides=('model.width=1.0', 'train.num_steps=100000'),
            data=recon_metrics.PAPER_DATA),
    },
)

if __name__ == '__main__':
  runner.main(STUDY)
