"""The quickstart: a small PRNet on the built-in synthetic data, on a CPU.

  jaxface quickstart            # makes the data, then runs this config
  jaxface train --config experiments/configs/quickstart.py \
      --workdir quickstart --config.data.dir=quickstart/data

64 x 64 crops, a quarter-width PRNet with one layer per resolution
(`lite`), encoder features added in the decoder (`skips`), each image
standardised (`standardize`), predictions averaged with the mirror
image's (`flip_average`, at inference only), the conv output head at half
resolution (`half_res_head`) and x / y, u / v coordinate channels, z's
error weighted 0.1, a landmark loss, no augmentation, Adam with a cosine
schedule over 3,000 steps. Why each choice:
experiments/diagnostics/prnet_learning.py and the README's "What made the
quickstart learn", "What carries synthetic training over to real faces"
and "The layers at full resolution".
"""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.task = 'prnet'
  config.model.width = 0.25
  config.model.head = 'conv'
  config.model.coords = True
  config.model.lite = True  # 2.2x the images/s of PRNet's 24 layers
  config.model.skips = True  # what made it learn in minutes
  # Photos' brightness and contrast differ from the renders': 1.2-2.2
  # points less AFLW-21 NME, and a lower synthetic NME (README: "What
  # carries synthetic training over to real faces").
  config.model.standardize = True
  # At inference (the eval steps, `jaxface eval`, `reconstruct`): the mean
  # of the image's and its mirror image's maps. Training ignores it.
  config.model.flip_average = True
  # No decoder layer at 64 x 64: 1.3x the step's speed, lower synthetic
  # NME, the same AFLW-21 NME without the ear lobes (README: "The layers
  # at full resolution").
  config.model.half_res_head = True
  config.model.bn_momentum = 0.9  # a short run: running stats must catch up
  config.loss.z_weight = 0.1
  config.loss.landmark_weight = 1.0
  config.data.global_batch_size = 16
  config.data.eval_batch_size = 32
  config.data.augment = False
  config.optimizer.name = 'adam'
  config.optimizer.lr = 2e-3
  config.optimizer.schedule = 'cosine'
  config.optimizer.warmup_steps = 50
  config.optimizer.end_lr_fraction = 0.05
  config.train.num_steps = 3000
  config.train.log_every = 50
  config.train.eval_every = 1000
  config.train.eval_batches = 0
  config.train.checkpoint_every = 1000
  return config
