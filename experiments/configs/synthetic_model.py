"""The shipped `synthetic` model: a PRNet trained only on jaxface's
synthetic faces, at 96 x 96, on a 2-core CPU.

  jaxface data synth --out data/synth96x2 --num-train 48000 --num-test 512 \
      --resolution 96 --seed 1 --identities-train 16000 \
      --identities-test 500 --workers 2 --crop-jitter 0 --shape-mean none
  jaxface train --config experiments/configs/synthetic_model.py \
      --workdir runs/synthetic --config.data.dir=data/synth96x2
  jaxface export --workdir runs/synthetic --name synthetic

The quickstart's recipe (experiments/configs/quickstart.py: a quarter-width
PRNet with one layer per resolution and encoder skips, conv head,
coordinate channels, each image standardised, predictions averaged with
the mirror image's at inference, z weighted 0.1, a landmark loss, centred
crops, no augmentation beyond the renderer's own randomisation) at 96 x 96,
with 8 times the faces and 28,000 steps (about 70 minutes with the
rendering on 2 CPU cores), on renders of
`synthetic.GENERATOR_VERSION` 2 (roll N(0, 12) degrees). The data seed (1)
differs from the seed `jaxface export` renders its check set with (7). At
the end, the `report` evaluator measures the held-out split as `jaxface
eval` does (NME 2D / 3D per yaw bin, dense NME, head pose), into
summary.json and metrics.jsonl (`evals/report/...`).
"""

from experiments.configs import quickstart
from jaxface.eval import evaluators


def get_config():
  config = quickstart.get_config()
  config.model.bn_momentum = 0.99  # a longer run than the quickstart's
  # Trained before the quickstart's head moved to half resolution.
  config.model.half_res_head = False
  config.train.num_steps = 28000
  config.train.log_every = 100
  config.train.eval_every = 7000
  config.train.checkpoint_every = 1000
  config.train.keep_checkpoints = 2
  config.evals.report = evaluators.config('reconstruction')
  return config
