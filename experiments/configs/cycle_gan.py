"""The cycle system's adversarial phase: PRNet + two discriminators.

  jaxface train --config experiments/configs/cycle_gan.py \
      --workdir runs/cycle --config.data.dir=data/300wlp \
      --config.cycle.init_from=runs/prnet

Starts from the pretrained PRNet of `cycle.init_from` (a workdir of
prnet_pretrain.py), adds the ResNet-18 position-map discriminator and the
landmark discriminator, and trains with the weighted position-map loss plus
the adversarial losses.
"""

from experiments.configs import prnet_pretrain
from jaxface.train import optim


def get_config():
  config = prnet_pretrain.get_config()
  config.task = 'cycle'
  config.optimizer.lr = 5e-5
  config.train.num_steps = 10 * 7650
  config.cycle = dict(
      init_from='',            # a pretraining workdir ('' : from scratch)
      disc_width=1.0,
      disc_norm='instance',    # none | layer | instance | spectral | batch
      gan_loss='lsgan',        # lsgan | nonsaturating | hinge | percentage
      adversarial_weight=0.01,
      # Each discriminator's share of the adversarial loss (0: its
      # judgement does not reach the generator; it still trains).
      resnet_weight=1.0,
      landmark_weight=1.0,
      pool_size=50,            # CycleGAN's image pool (0: off)
  )
  config.cycle.disc_optimizer = optim.default_optimizer_config()
  config.cycle.disc_optimizer.lr = 1e-4
  config.cycle.disc_optimizer.b1 = 0.5
  return config
