"""The shipped `synthetic` model: a PRNet trained only on jaxface's
synthetic faces, at 128 x 128, on a 2-core CPU.

  jaxface data synth --out data/synth128 --num-train 40000 --num-test 512 \
      --resolution 128 --seed 1 --identities-train 8000 \
      --identities-test 500 --workers 2
  jaxface train --config experiments/configs/synthetic_model.py \
      --workdir runs/synthetic --config.data.dir=data/synth128
  jaxface export --workdir runs/synthetic --name synthetic

Quarter-width PRNet (about 2 MB in float16) with the conv output head, x / y
and u / v coordinate channels and z's error weighted 0.1 (see
`experiments/diagnostics/prnet_learning.py`), PRNet's augmentations, Adam
with a cosine schedule and an EMA of the weights. The data seed (1) differs
from the seed `jaxface export` renders its check set with (7).
"""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.task = 'prnet'
  config.model.width = 0.25
  config.model.head = 'conv'
  config.model.coords = True
  config.model.bn_momentum = 0.99
  config.loss.z_weight = 0.1
  config.data.global_batch_size = 16
  config.data.eval_batch_size = 32
  config.optimizer.name = 'adam'
  config.optimizer.lr = 1e-3
  config.optimizer.schedule = 'cosine'
  config.optimizer.warmup_steps = 500
  config.optimizer.end_lr_fraction = 0.02
  config.train.num_steps = 8000
  config.train.log_every = 100
  config.train.eval_every = 2000
  config.train.eval_batches = 0
  config.train.checkpoint_every = 1000
  config.train.keep_checkpoints = 2
  config.train.ema_decay = 0.999
  return config
