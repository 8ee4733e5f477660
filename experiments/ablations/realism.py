"""Study 3: which parts of the synthetic generator matter for real faces.

  python -m experiments.ablations.realism --scale cpu
  python -m experiments.ablations.realism --scale recipe \
      --out experiments/results/realism_recipe

A PRNet trained only on synthetic faces (the quickstart's recipe) on the
full renderer (the baseline) and on data rendered without one part of it
each (`synthetic.REALISM_PARTS`: texture detail, the scene light,
scene-like backgrounds, occluders, hair / clothes / glasses / hats, camera
effects, the photo pose distribution; what replaces each is written beside
`REALISM_PARTS`). Every run is measured on real faces, the first
`recon_metrics.AFLW21_LIMIT` held-out faces of AFLW-21, and on the
held-out faces of the full renderer (`recon_metrics`).
"""

from experiments.ablations import recon_metrics
from experiments.ablations import runner
from jaxface.data import synthetic

METRICS = (
    recon_metrics.AFLW21_NME,
    runner.Metric('aflw21.nme_no_ears.mean_of_bins',
                  'AFLW-21 NME % w/o ears (lower)', scale=100),
    runner.Metric('nme_2d.mean_of_bins', 'synthetic NME 2D % (lower)',
                  scale=100),
)


STUDY = runner.Study(
    name='realism',
    title='Synthetic realism: PRNet trained without each part of the '
          'renderer, measured on real AFLW-21 faces',
    config='experiments/configs/quickstart.py',
    variants=(runner.Variant('full'),) + tuple(
        runner.Variant(f'no-{part}', leave_out=(part,))
        for part in synthetic.REALISM_PARTS),
    metrics=METRICS,
    evaluate=recon_metrics.evaluate,
    scales={
        # The quickstart's recipe as the results were measured (PRNet's
        # 24 layers, before lite + skips + standardize + half_res_head;
        # renders of synthetic.GENERATOR_VERSION 1, roll N(0, 7)),
        # shortened: 2,000 steps of batch 16.
        'cpu': runner.Scale(
            overrides=('model.lite=false', 'model.skips=false',
                       'model.standardize=false', 'model.half_res_head=false',
                       'train.num_steps=2000', 'train.eval_every=2000',
                       'train.checkpoint_every=2000',
                       'train.keep_checkpoints=1'),
            data=recon_metrics.CPU_DATA),
        # Today's quickstart recipe (lite + skips + standardize +
        # half_res_head, renderer version 3: 3,000 steps on 6,000 faces of
        # 3,000 identities), the setting of the README's 3-seed
        # experiments (which kept the head at full resolution until "The
        # layers at full resolution"). Its results go to a folder of their
        # own with `--out`.
        'recipe': runner.Scale(
            overrides=('train.num_steps=3000', 'train.eval_every=3000',
                       'train.checkpoint_every=3000',
                       'train.keep_checkpoints=1'),
            data=runner.Data(resolution=64, num_train=6000,
                             identities=(('train', 3000), ('test', 100)))),
        'paper': runner.Scale(
            overrides=('model.width=1.0', 'train.num_steps=100000'),
            data=recon_metrics.PAPER_DATA),
    },
)

if __name__ == '__main__':
  runner.main(STUDY)
