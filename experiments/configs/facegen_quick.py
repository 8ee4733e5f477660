"""A small face GAN on the built-in synthetic data, for a CPU.

  jaxface data synth --out data/mv32 --kinds multiview --resolution 32 \
      --num-train 2000 --num-test 200 --identities-train 400 \
      --identities-test 100
  jaxface train --config experiments/configs/facegen_quick.py \
      --workdir runs/facegen_quick --config.data.dir=data/mv32
  jaxface eval --workdir runs/facegen_quick --data data/mv32

32 x 32 canonical maps, a generator of 64 channels at 4 x 4; about 10
minutes on two CPU cores.

The paper's recipe (`facegen.py`: SGD, every loss weighted 1, an
instance-norm discriminator) does not follow identity at this scale: its
discriminator wins (loss 1e-7), and the generator, its gradient clipped,
ends further from the true faces than the mean face. What makes it follow
the features (README, "Why the face GAN ignored identity";
`experiments/diagnostics/facegen_identity.py`): standardised features
(`feature_norm`), the code into every upsampling block, a spectrally
normalised discriminator, Adam with clipping, and losses that let the
reconstruction lead (adversarial 0.01, perceptual 0.1, reconstruction 10).
"""

from experiments.configs import facegen


def get_config():
  config = facegen.get_config()
  config.data.global_batch_size = 16
  config.facegen.base_channels = 64
  config.facegen.disc_base_channels = 32
  config.facegen.code_dim = 64
  config.facegen.noise_dim = 32
  config.facegen.feature_norm = True
  config.facegen.code_every_stage = True
  config.facegen.disc_norm = 'spectral'
  config.facegen.adversarial_weight = 0.01
  config.facegen.perceptual_weight = 0.1
  config.facegen.reconstruction_weight = 10.0
  config.optimizer.name = 'adam'
  config.optimizer.lr = 1e-3
  config.optimizer.grad_clip_norm = 1.0
  config.optimizer.warmup_steps = 100
  config.facegen.disc_optimizer.name = 'adam'
  config.facegen.disc_optimizer.lr = 2e-4
  config.facegen.disc_optimizer.b1 = 0.5
  config.facegen.disc_optimizer.grad_clip_norm = 1.0
  config.train.num_steps = 10000
  config.train.log_every = 100
  config.train.eval_every = 2500
  config.train.checkpoint_every = 2500
  config.train.eval_batches = 0
  return config
