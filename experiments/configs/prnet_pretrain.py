"""PRNet pretraining with the weighted position-map loss (PRNet's recipe).

  jaxface train --config experiments/configs/prnet_pretrain.py \
      --workdir runs/prnet --config.data.dir=data/300wlp

Adam at 1e-4, halved every 5 epochs, batch 16, 256 x 256 crops; 300W-LP has
122,450 images, so an epoch is about 7,650 steps.
"""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.task = 'prnet'
  config.data.global_batch_size = 16
  config.model.bn_momentum = 0.999  # TensorFlow's default, as PRNet
  config.optimizer.name = 'adam'
  config.optimizer.lr = 1e-4
  config.optimizer.schedule = 'step'
  config.optimizer.decay_steps = 5 * 7650
  config.optimizer.decay_rate = 0.5
  config.train.num_steps = 40 * 7650
  config.train.eval_every = 5000
  config.train.checkpoint_every = 5000
  config.train.log_every = 100
  return config
