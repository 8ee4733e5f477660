"""Study 2, the first seed's face GAN: which of its parts matter?

  python -m experiments.ablations.facegen --scale cpu

The conditional face GAN (`experiments/configs/facegen_quick.py` at CPU
scale) against one change each: the voxel head instead of the UV map, no
residual blocks, no channel attention, the paper's SGD instead of Adam, no
perceptual (identity) loss, no geometric-consistency loss, and the paper's
equal loss weights. Measured on held-out
identities (`jaxface eval`): the identity classifier's Inception Score and
Frechet distance, the geometric-consistency error, the distance to the true
face (UV head), and IoU and Chamfer distance (voxel head).
"""

import os

from experiments.ablations import runner

METRICS = (
    runner.Metric('generation.inception_score', 'Inception Score (higher)',
                  lower_is_better=False),
    runner.Metric('generation.inception_score_true_faces',
                  'Inception Score of the true faces (reference)',
                  lower_is_better=False),
    runner.Metric('generation.frechet_distance', 'Frechet distance (lower)'),
    runner.Metric('position_error_mm.mean', 'distance to true face mm (lower)'),
    runner.Metric('geometric_error.mean', 'geometric error (lower)'),
    runner.Metric('iou.mean', 'voxel IoU (higher)', lower_is_better=False),
)


def evaluate(workdir: str, data_dir: str) -> dict:
  """`jaxface eval` of a facegen run; one identity classifier per study
  scale, trained by the first evaluation and kept beside the variants."""
  from jaxface.eval import gen_eval  # pylint: disable=g-import-not-at-top
  shared = os.path.join(os.path.dirname(os.path.dirname(workdir)),
                        'classifier')
  return gen_eval.evaluate_facegen(workdir, data_dir, 'test', batch_size=32,
                                   progress=False, classifier_dir=shared)


MULTIVIEW_32 = runner.Data(resolution=32, kinds=('multiview',),
                            num_train=2000, num_test=200,
                            identities=(('train', 400), ('test', 100)))

STUDY = runner.Study(
    name='facegen',
    title='Face GAN: head, residual blocks, attention, optimiser, losses',
    config='experiments/configs/facegen_quick.py',
    variants=(
        runner.Variant('baseline', ()),
        # Paper scale only: XLA's CPU 3D convolutions take 5.6 s a step at
        # 16^3 and batch 16 here, against 0.1 s for the UV head.
        runner.Variant('voxel-head', ('facegen.head=voxel',), ('paper',)),
        runner.Variant('no-residual', ('facegen.num_residual=0',)),
        runner.Variant('no-attention', ('facegen.attention=false',)),
        # The paper's optimiser (the old quick recipe's rates).
        runner.Variant('sgd', ('optimizer.name=sgd', 'optimizer.lr=0.01',
                               'facegen.disc_optimizer.name=sgd',
                               'facegen.disc_optimizer.lr=0.002')),
        runner.Variant('no-perceptual', ('facegen.perceptual_weight=0.0',)),
        runner.Variant('no-geometric', ('facegen.geometric_weight=0.0',)),
        # The paper's weighting: every loss 1.
        runner.Variant('equal-weights', ('facegen.adversarial_weight=1.0',
                                         'facegen.perceptual_weight=1.0',
                                         'facegen.reconstruction_weight=1.0')),
        # Beyond the paper: the views' landmarks in the condition
        # (experiments/configs/facegen_landmarks.py).
        runner.Variant('landmarks-condition', ('facegen.condition=landmarks',)),
    ),
    metrics=METRICS,
    evaluate=evaluate,
    scales={
        'cpu': runner.Scale(
            overrides=('train.num_steps=3000', 'train.eval_every=3000',
                       'train.checkpoint_every=3000', 'train.log_every=100'),
            data=MULTIVIEW_32),
        'paper': runner.Scale(
            overrides=(),
            data=runner.Data(resolution=64, kinds=('multiview',),
                             num_train=20000, num_test=1000,
                             identities=(('train', 4000), ('test', 500)))),
    },
)

if __name__ == '__main__':
  runner.main(STUDY)
