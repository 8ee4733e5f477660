"""Study 1 of the second seed: do the discriminators help PRNet?

  python -m experiments.ablations.cycle --scale cpu

Per seed, a PRNet is pretrained with the weighted position-map loss; each
variant then continues from it for the same number of steps with the cycle
system (`experiments/configs/cycle_gan.py`): without adversarial losses
(pretraining only, the baseline), with the ResNet-18 position-map
discriminator, with the landmark discriminator, with both (LSGAN), and with
both and the paper's "1 minus the percentage" loss, and with both at a
tenth of the adversarial weight. Measured on held-out
synthetic faces (`recon_metrics`).
"""

from experiments.ablations import recon_metrics
from experiments.ablations import runner

STUDY = runner.Study(
    name='cycle',
    title='Cycle system: PRNet pretraining alone vs. the two discriminators',
    config='experiments/configs/cycle_gan.py',
    variants=(
        runner.Variant('pretrain-only', ('cycle.resnet_weight=0.0',
                                         'cycle.landmark_weight=0.0')),
        runner.Variant('resnet-disc', ('cycle.landmark_weight=0.0',)),
        runner.Variant('landmark-disc', ('cycle.resnet_weight=0.0',)),
        runner.Variant('both-discs', ()),
        runner.Variant('both-discs-percentage', ('cycle.gan_loss=percentage',)),
        # The position loss is a weighted mean (about 0.01 here): at 0.01
        # the adversarial terms (about 1.3) outweigh it; a tenth of that.
        runner.Variant('both-discs-weight-0.001',
                       ('cycle.adversarial_weight=0.001',)),
    ),
    metrics=recon_metrics.METRICS,
    evaluate=recon_metrics.evaluate,
    scales={
        # 1,500 pretraining steps, then 500 of each variant at a lower rate.
        'cpu': runner.Scale(
            overrides=(*recon_metrics.CPU_MODEL, 'cycle.disc_width=0.25',
                       'optimizer.lr=3e-4', 'train.num_steps=500',
                       'train.eval_every=500', 'train.checkpoint_every=500'),
            data=recon_metrics.CPU_DATA,
            pretrain=('task=prnet', 'optimizer.lr=2e-3',
                      'optimizer.schedule=cosine', 'optimizer.warmup_steps=50',
                      'optimizer.end_lr_fraction=0.05',
                      'train.num_steps=1500', 'train.eval_every=1500',
                      'train.checkpoint_every=1500')),
        # The paper's: full-width PRNet at 256x256 (its pretraining recipe),
        # then the cycle phase; for accelerators.
        'paper': runner.Scale(
            overrides=('train.num_steps=20000', 'train.eval_every=5000',
                       'train.checkpoint_every=5000'),
            data=recon_metrics.PAPER_DATA,
            # prnet_pretrain.py's recipe: 40 epochs of 300W-LP's size.
            pretrain=('task=prnet', 'optimizer.lr=1e-4',
                      'train.num_steps=306000')),
    },
    pretrain_key='cycle.init_from',
)

if __name__ == '__main__':
  runner.main(STUDY)
