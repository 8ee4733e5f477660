"""The first seed's conditional 3D face GAN, trained with SGD + momentum.

  jaxface data synth --out data/multiview --kinds multiview --resolution 64
  jaxface train --config experiments/configs/facegen.py \
      --workdir runs/facegen --config.data.dir=data/multiview \
      [--config.facegen.head=voxel]

Features (distances and FR/LS/RS areas of the front, left and right views)
+ noise -> a 3D face: the canonical UV position map ('uv', R x R x 3, R =
the dataset's resolution) or a 64^3 occupancy grid ('voxel').
"""

from experiments.configs import default
from jaxface.train import optim


def get_config():
  config = default.get_config()
  config.task = 'facegen'
  config.data.augment = False  # multiview records are never augmented
  config.data.global_batch_size = 32
  config.data.eval_batch_size = 32
  config.loss.position = 'l1'
  config.optimizer.name = 'sgd'
  config.optimizer.lr = 1e-3
  config.optimizer.momentum = 0.9
  config.optimizer.schedule = 'cosine'
  config.optimizer.warmup_steps = 200
  config.train.num_steps = 20000
  config.train.eval_every = 1000
  config.train.checkpoint_every = 1000
  config.facegen = dict(
      head='uv',                # uv | voxel
      voxel_size=64,            # V of the voxel head
      base_channels=256,        # generator channels at 4 x 4
      disc_base_channels=64,
      code_dim=128,             # Phi's output
      noise_dim=128,            # z
      attention=True,           # channel attention in both networks
      num_residual=2,
      feature_norm=False,       # standardise the features in Phi
      # the networks' condition: features (the paper's 31) | landmarks
      # (the features and the three views' normalised landmarks)
      condition='features',
      code_every_stage=False,   # the code into every upsampling block
      gen_norm='batch',
      disc_norm='instance',     # none | layer | instance | spectral | batch
      gan_loss='nonsaturating',  # lsgan | nonsaturating | hinge | percentage
      adversarial_weight=1.0,
      perceptual_weight=1.0,
      geometric_weight=1.0,     # 'uv' head only
      geometric_huber_delta=1.0,  # squared error up to it, linear beyond (0: off)
      reconstruction_weight=1.0,
  )
  config.facegen.disc_optimizer = optim.default_optimizer_config()
  config.facegen.disc_optimizer.name = 'sgd'
  config.facegen.disc_optimizer.lr = 1e-3
  config.facegen.disc_optimizer.momentum = 0.9
  return config
