"""The default config every experiment overrides (not run on its own)."""

import dataclasses

import ml_collections

from jaxface.data import augment


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.task = 'prnet'  # prnet | cycle | facegen | progression
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.dir = ''  # a jaxface dataset directory
  config.data.train_split = 'train'
  config.data.eval_split = 'test'
  config.data.global_batch_size = 16
  config.data.eval_batch_size = 16
  config.data.augment = True
  # The augmentations' ranges and probabilities (`augment.AugmentConfig`'s
  # fields and defaults; used when data.augment is True), and where they
  # run (`on_device`: in the train step, for accelerators).
  config.data.augmentation = ml_collections.ConfigDict({
      f.name: f.default for f in dataclasses.fields(augment.AugmentConfig)
      if f.name != 'enabled'})
  config.data.worker_count = 0  # grain worker processes (0: threads only)

  # Mixed training (task prnet): each step also takes `batch_size` 2D
  # recon records (annotated 2D points of a landmark scheme, e.g. from
  # `jaxface data convert-landmarks2d`) from `dir`, with a visibility-masked
  # 2D landmark loss on the scheme's points read off the predicted maps.
  config.mix = ml_collections.ConfigDict()
  config.mix.dir = ''  # '' : off
  config.mix.split = 'train'
  config.mix.batch_size = 0  # 2D records per step (global)
  config.mix.weight = 1.0  # weight of the 2D landmark loss
  config.mix.ears = False  # train on ear points (the face model's ear
  # point is mid-ear, AFLW's the lobe: off by default)

  config.model = ml_collections.ConfigDict()
  config.model.width = 1.0
  config.model.dtype = 'float32'  # compute dtype: float32 | bfloat16
  config.model.bn_momentum = 0.99  # BatchNorm running-average decay
  config.model.head = 'prnet'  # PRNet's output head: prnet | conv
  config.model.coords = False  # PRNet: x, y / u, v channels into the layers
  config.model.global_dim = 0  # PRNet: width of a dense bottleneck path
  config.model.skips = False  # PRNet: encoder features added in the decoder
  config.model.lite = False  # PRNet: one block per stage (PRNet: 2 and 3)
  config.model.standardize = False  # PRNet: per-image input standardisation
  # PRNet at inference: mean of the image's and its mirror image's maps
  config.model.flip_average = False
  # PRNet: the conv head at half resolution (2x2 texels a position)
  config.model.half_res_head = False
  config.model.half_res_stem = False  # PRNet: a stride-2 stem

  config.loss = ml_collections.ConfigDict()
  config.loss.position = 'mse'  # mse (PRNet) | l1 (the second seed)
  # The position-map loss's texel weights: 'prnet' (16 : 4 : 3 : 0 for
  # landmarks : eyes, nose, mouth : other face : neck) or 'uniform' (1 on
  # the same texels, 0 on the neck): the mask's emphasis ablated.
  config.loss.mask = 'prnet'
  config.loss.landmark_weight = 0.0
  config.loss.z_weight = 1.0  # weight of z's error relative to x and y

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = 'adam'
  config.optimizer.lr = 1e-4
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = False
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.weight_decay = 0.0
  config.optimizer.grad_clip_norm = 0.0
  config.optimizer.schedule = 'constant'
  config.optimizer.warmup_steps = 0
  config.optimizer.decay_steps = 0
  config.optimizer.decay_rate = 0.5
  config.optimizer.end_lr_fraction = 0.0

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 1000
  config.train.log_every = 50
  config.train.eval_every = 500
  config.train.eval_batches = 8  # 0: the whole eval split
  config.train.checkpoint_every = 500
  config.train.keep_checkpoints = 3
  config.train.ema_decay = 0.0  # EMA of the weights (0: off)
  config.train.progress = True
  # A jax.profiler trace of steps FIRST..LAST (1-based, inclusive) into
  # WORKDIR/profile, for TensorBoard's profile plugin or Perfetto; 0, 0: off.
  config.train.profile_steps = (0, 0)

  # The measurements of `jaxface eval`, run on the training weights: name ->
  # jaxface.eval.evaluators.config(TYPE, every=...), logged as
  # evals/NAME/... (see jaxface/eval/evaluators.py). None by default.
  config.evals = ml_collections.ConfigDict()
  return config
