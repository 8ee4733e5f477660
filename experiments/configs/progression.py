"""The progression RNN: is this clip a true progression of one face?

  jaxface data synth --out data/clips --kinds clips --resolution 64
  jaxface train --config experiments/configs/progression.py \
      --workdir runs/progression --config.data.dir=data/clips
"""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.task = 'progression'
  config.model.cell = 'gru'  # gru | lstm
  config.model.hidden = 128
  config.model.use_landmarks = True
  config.data.global_batch_size = 16
  config.optimizer.name = 'adam'
  config.optimizer.lr = 3e-4
  config.optimizer.schedule = 'cosine'
  config.optimizer.warmup_steps = 100
  config.train.num_steps = 5000
  config.train.eval_every = 500
  config.train.checkpoint_every = 500
  return config
