"""What the reconstruction studies measure: `jaxface eval` on the held-out
synthetic split (NME 2D and 3D as mean of yaw bins, dense NME, head pose)."""

from experiments.ablations import runner

METRICS = (
    runner.Metric('nme_2d.mean_of_bins', 'NME 2D % (lower)', scale=100),
    runner.Metric('nme_3d.mean_of_bins', 'NME 3D % (lower)', scale=100),
    runner.Metric('dense_nme.mean', 'dense NME % (lower)', scale=100),
    runner.Metric('pose_error.mean', 'pose MAE deg (lower)'),
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


def evaluate(workdir: str, data_dir: str) -> dict:
  from jaxface.eval import recon_eval  # pylint: disable=g-import-not-at-top
  report, _ = recon_eval.evaluate_reconstruction(workdir, data_dir, 'test',
                                                 batch_size=32,
                                                 progress=False)
  return report
