"""Study 1 of the second seed, its losses: PRNet's weight mask and error.

  python -m experiments.ablations.recon_losses --scale cpu

PRNet trained from scratch with its 16 : 4 : 3 : 0 weight mask and squared
error (the baseline), with a uniform mask over the same texels
(`loss.mask=uniform`), with the second seed's L1 error, and with both.
Measured on held-out synthetic faces (`recon_metrics`).
"""

from experiments.ablations import recon_metrics
from experiments.ablations import runner

STUDY = runner.Study(
    name='recon_losses',
    title='PRNet: weight mask 16:4:3:0 vs. uniform, squared error vs. L1',
    config='experiments/configs/prnet_pretrain.py',
    variants=(
        runner.Variant('mask-mse', ()),
        runner.Variant('uniform-mse', ('loss.mask=uniform',)),
        runner.Variant('mask-l1', ('loss.position=l1',)),
        runner.Variant('uniform-l1', ('loss.mask=uniform', 'loss.position=l1')),
    ),
    metrics=recon_metrics.METRICS,
    evaluate=recon_metrics.evaluate,
    scales={
        'cpu': runner.Scale(
            overrides=(*recon_metrics.CPU_MODEL, 'optimizer.lr=2e-3',
                       'optimizer.schedule=cosine',
                       'optimizer.warmup_steps=50',
                       'optimizer.end_lr_fraction=0.05',
                       'train.num_steps=1500', 'train.eval_every=1500',
                       'train.checkpoint_every=1500'),
            data=recon_metrics.CPU_DATA),
        'paper': runner.Scale(overrides=(), data=recon_metrics.PAPER_DATA),
    },
)

if __name__ == '__main__':
  runner.main(STUDY)
