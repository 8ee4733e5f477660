"""What the reconstruction studies measure: `jaxface eval` on the held-out
synthetic split (NME 2D and 3D as mean of yaw bins, dense NME, head pose)
and, where the AFLW-21 development folder is present, the NME on real
faces: the first `AFLW21_LIMIT` held-out faces of AFLW-21 (21-point NME,
visible points, mean of |yaw| bins, crops resized to the model's input:
`experiments/benchmarks/aflw21_eval.py`). Without the folder
(`aflw21.DEFAULT_DIR`, or the environment variable JAXFACE_AFLW21) the
real-face metrics are absent (n/a), the synthetic ones still measured."""

import os

from experiments.ablations import runner

# Held-out AFLW-21 faces measured per run: 1,000 of the 3,784 keep a run's
# evaluation under half a minute on 2 cores.
AFLW21_LIMIT = 1000

AFLW21_NME = runner.Metric('aflw21.nme.mean_of_bins', 'AFLW-21 NME % (lower)',
                           scale=100)

METRICS = (
    runner.Metric('nme_2d.mean_of_bins', 'NME 2D % (lower)', scale=100),
    runner.Metric('nme_3d.mean_of_bins', 'NME 3D % (lower)', scale=100),
    runner.Metric('dense_nme.mean', 'dense NME % (lower)', scale=100),
    runner.Metric('pose_error.mean', 'pose MAE deg (lower)'),
    AFLW21_NME,
)

# The quickstart's recipe (experiments/configs/quickstart.py) on any base
# config: a quarter-width PRNet at 64x64 that learns in minutes on a CPU.
CPU_MODEL = (
    'model.width=0.25', 'model.head=conv', 'model.coords=true',
    'model.bn_momentum=0.9', 'loss.z_weight=0.1', 'loss.landmark_weight=1.0',
    'data.global_batch_size=16', 'data.eval_batch_size=32',
    'data.augment=false', 'train.log_every=50', 'train.eval_batches=0',
    'train.keep_checkpoints=1')
CPU_DATA = runner.Data(resolution=64)
PAPER_DATA = runner.Data(resolution=256, num_train=60000, num_test=2000,
                         identities=(('train', 10000), ('test', 1000)),
                         crop_jitter=0.1)


def aflw21_folder() -> str:
  from data_pipelines import aflw21  # pylint: disable=g-import-not-at-top
  return os.environ.get('JAXFACE_AFLW21', aflw21.DEFAULT_DIR)


def evaluate(workdir: str, data_dir: str) -> dict:
  """`jaxface eval`'s report on the held-out synthetic faces, plus
  'aflw21': {'nme', 'nme_no_ears', 'images'} on real faces (None without
  the AFLW-21 folder)."""
  # pylint: disable=g-import-not-at-top
  from data_pipelines import aflw21
  from experiments.benchmarks import aflw21_eval
  from jaxface.eval import recon_eval
  from jaxface.train import trained as trained_lib
  # pylint: enable=g-import-not-at-top
  model = trained_lib.load(workdir)  # once, for both measurements
  report, _ = recon_eval.evaluate_reconstruction(model, data_dir, 'test',
                                                 batch_size=32,
                                                 progress=False)
  folder = aflw21_folder()
  if not os.path.isdir(folder):
    report['aflw21'] = None
    return report
  indices, results = aflw21_eval.measure(
      model, aflw21.load(folder), modes=('resize',),
      limit=AFLW21_LIMIT, batch_size=32)
  real = results['resize']['report']
  report['aflw21'] = {'nme': real['nme'], 'nme_no_ears': real['nme_no_ears'],
                      'images': int(len(indices))}
  return report
