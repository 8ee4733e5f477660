"""The built-in synthetic 300W-LP-style dataset: `jaxface data synth`.

Faces of the procedural morphable model (`jaxface.face.model`) are rendered
with random identity (`recon` faces with adult proportions:
`SynthConfig.shape_mean`), expression, albedo (`jaxface.face.texture`: skin
detail, make-up, facial hair, hair), light (`render.SceneLight`: a
spherical-harmonics environment, a key light with cast shadows, ambient
occlusion and a skin sheen), pose (`photo_pose`: 300W-LP / AFLW2000-3D-like
yaw, pitch and roll), scale and translation, with hair volume, neck,
clothes, glasses and hats around the face (`jaxface.face.appearance`), over
scene-like backgrounds, sometimes with an occluder (a hand, a microphone, an
object), with camera effects (blur, colour, vignetting, noise, JPEG;
`scenes`), and cropped as PRNet crops 300W-LP (now and then shifted so the
face is cut by the crop's edge). In the spirit of Wood et al., "Fake It
Till You Make It" (ICCV 2021): realism plus heavy randomisation.

Every record is a pure function of (seed, kind, split, index): the same seed
gives byte-identical records whatever the number of worker processes.

Identities (`jaxface.face.identities`) come from fixed pools, disjoint
between splits (train identities 0..n_train-1, test identities
n_train..n_train+n_test-1), so a classifier can be trained over identities
and tested on unseen faces. `multiview` records hold the face's canonical
position map (`FaceModel.canonical_position_map`, the canonical frame of
`jaxface.face.frames`).

The original image the crop comes from is virtual (ORIGINAL_SIZE square, as
300W-LP's 450 x 450 images): jaxface renders the crop directly at the
training resolution, which equals rendering the original and warping it,
without the resampling blur; `face_box` and `crop_transform` are in that
virtual image's pixels.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib

import cv2
import numpy as np

from jaxface.data import records
from jaxface.data import scenes
from jaxface.data import shards
from jaxface.data import writing
from jaxface.face import appearance
from jaxface.face import identities as identities_lib
from jaxface.face import layout as layout_lib
from jaxface.face import model as model_lib
from jaxface.face import render
from jaxface.face import texture as texture_lib

ORIGINAL_SIZE = 450
# Raised whenever the same config and seed render different records
# (dataset.json's `generator_version`), so that stored data can be told
# from the current renderer's. 2: the default roll became N(0, 12) degrees
# (`SynthConfig.roll_deg`; version 1 drew N(0, 7) within +-30). 3: the
# `recon` identities have adult proportions (`SynthConfig.shape_mean`;
# version 2 drew the face model's coefficients around 0).
GENERATOR_VERSION = 3
# SynthConfig fields added after configs were first stored (a model.json's
# synthetic eval set, say), with the behaviour before each existed: a stored
# config without them renders what it rendered then (`SynthConfig.from_dict`).
ADDED_FIELDS = {'roll_deg': (7.0, 30.0), 'shape_mean': ()}
_KIND_CODE = {'recon': 1, 'multiview': 2, 'clips': 3}
_SPLIT_CODE = {'train': 1, 'test': 2, 'validation': 3}


# What `SynthConfig.leave_out` can remove from `recon` records, and what
# takes its place: the skin's spatial detail, brows and lips (a flat skin
# albedo); the scene light (one white Lambertian light and a uniform
# ambient term: no environment colour, cast shadows or sheen);
# the scene-like backgrounds (smooth colour noise); the occluders (none);
# hair volume, neck, clothes, glasses and hats (the bare head); the camera
# effects (no blur, colour jitter, vignetting or noise; JPEG at quality
# 95); the photo pose distribution (yaw, pitch, roll uniform in +-90, +-30,
# +-20 degrees, `random_pose`).
REALISM_PARTS = ('texture', 'light', 'background', 'occluders', 'dressing',
                 'camera', 'pose')


@dataclasses.dataclass(frozen=True)
class SynthConfig:
  """What the synthetic generator makes.

  Attributes:
    resolution: side of the crops and position maps in pixels.
    seed: dataset seed.
    identities: {split: number of identities in its pool}.
    clip_length: frames per `clips` record.
    texture_size: side of the UV albedo textures (0: 2 x resolution,
      at most 256).
    p_occluder: probability of an occluder in a `recon` image.
    crop_jitter: the largest shift of a `recon` crop's centre, relative to
      the landmarks' extent (face3d's 300W-LP perturbation: 0.1); 15 % of
      crops shift up to 2.5 times as far (faces cut by the crop).
    crop_scale_jitter: the largest relative change of a `recon` crop's
      side (face3d's: 0.1, a side of U(0.9, 1.1) x 1.5 x the landmarks'
      extent).
    leave_out: parts of the renderer (`REALISM_PARTS`) that `recon`
      records are made without, for the realism ablation
      (experiments/ablations/realism.py).
    roll_deg: (standard deviation, limit) in degrees of the photo pose's
      normal roll (`photo_pose`).
    shape_mean: ((semantic shape name, value), ...): the mean of the
      `recon` identities' shape coefficients, in standard deviations
      (`model.ADULT_SHAPE_MEAN`: adult proportions; (): the face model's
      own, renderer version 2). `multiview` and `clips` records, the face
      GAN's and the progression model's data, keep the face model's own:
      their features and results were measured on it.
    mesh_rows, mesh_cols: face model grid.
  """
  resolution: int = 256
  seed: int = 0
  identities: tuple[tuple[str, int], ...] = (('train', 1000), ('test', 200))
  clip_length: int = 8
  texture_size: int = 0
  p_occluder: float = 0.2
  crop_jitter: float = 0.1
  crop_scale_jitter: float = 0.1
  leave_out: tuple[str, ...] = ()
  roll_deg: tuple[float, float] = (12.0, 40.0)
  shape_mean: tuple[tuple[str, float], ...] = model_lib.ADULT_SHAPE_MEAN
  mesh_rows: int = 96
  mesh_cols: int = 113

  def __post_init__(self):
    # A tuple, also when it comes from JSON as a list (a hashable config).
    object.__setattr__(self, 'leave_out', tuple(self.leave_out))
    object.__setattr__(self, 'roll_deg',
                       tuple(float(v) for v in self.roll_deg))
    object.__setattr__(self, 'shape_mean',
                       model_lib.check_shape_mean(self.shape_mean))
    if len(self.roll_deg) != 2 or min(self.roll_deg) < 0:
      raise ValueError(f'roll_deg must be (std, limit) >= 0 degrees, got '
                       f'{self.roll_deg}')
    unknown = sorted(set(self.leave_out) - set(REALISM_PARTS))
    if unknown:
      raise ValueError(f'leave_out: unknown part(s) {unknown}; parts: '
                       f'{",".join(REALISM_PARTS)}')

  @classmethod
  def from_dict(cls, fields: dict) -> 'SynthConfig':
    """The config of a stored `dataclasses.asdict` (JSON lists allowed);
    fields it lacks that were added later take `ADDED_FIELDS`' values."""
    fields = {**ADDED_FIELDS, **fields}
    fields['identities'] = tuple(tuple(p) for p in fields['identities'])
    return cls(**fields)

  def identity_pool(self, split: str) -> tuple[int, int]:
    """(first identity id, count) of a split's pool."""
    first = 0
    for name, count in self.identities:
      if name == split:
        return first, count
      first += count
    raise ValueError(f'no identity pool for split {split!r}; '
                     f'pools: {[n for n, _ in self.identities]}')

  @property
  def tex_size(self) -> int:
    return self.texture_size or min(256, 2 * self.resolution)


def _rng(*key: int) -> np.random.Generator:
  return np.random.default_rng([int(k) for k in key])


def random_background(rng: np.random.Generator, size: int) -> np.ndarray:
  """(size, size, 3) float32 scene-like background in [0, 1] (`scenes`)."""
  return scenes.background(rng, size)


def add_occluder(image: np.ndarray, rng: np.random.Generator,
                 skin: np.ndarray | None = None) -> None:
  """In place: a hand, a microphone, an object or a shape (`scenes`)."""
  scenes.add_occluder(image, rng, skin)


def finish_image(image: np.ndarray, rng: np.random.Generator) -> bytes:
  """Camera effects and JPEG compression (`scenes.finish_image`)."""
  return scenes.finish_image(image, rng)


def _flat_texture(albedo, size: int) -> np.ndarray:
  """(size, size, 3) float32: the skin colour everywhere."""
  return np.broadcast_to(np.asarray(albedo.skin, np.float32),
                         (size, size, 3)).copy()


def _plain_light(rng: np.random.Generator) -> render.SceneLight:
  """`render.random_light`'s white Lambertian light as a SceneLight: a
  uniform ambient term and a key light, no environment colour or gradient,
  no cast shadows, no sheen."""
  plain = render.random_light(rng)
  sh = np.zeros((9, 3), np.float32)
  sh[0] = plain.ambient
  return render.SceneLight(sh=sh, direction=plain.direction,
                           key=np.full(3, plain.diffuse, np.float32),
                           specular=0.0, shininess=1.0, shadow=0.0)


def _noise_background(rng: np.random.Generator, size: int) -> np.ndarray:
  """(size, size, 3) float32 smooth colour noise in [0, 1]."""
  cells = rng.uniform(0, 1, (4, 4, 3)).astype(np.float32)
  return cv2.resize(cells, (size, size), interpolation=cv2.INTER_CUBIC).clip(
      0, 1)


@functools.lru_cache(maxsize=2)
def _hair_streaks(size: int) -> np.ndarray:
  """(size, size, 1) float32 multiplier in [0.55, 1.35]: hair-like streaks
  (noise blurred along image columns) for the hair volume overlay."""
  white = np.random.default_rng(11).uniform(0, 1, (size, size))
  streaks = cv2.GaussianBlur(white.astype(np.float32), (0, 0),
                             sigmaX=max(0.5, size / 400), sigmaY=size / 40)
  lo, hi = np.percentile(streaks, [1, 99])
  return (0.55 + 0.8 * np.clip((streaks - lo) / (hi - lo), 0, 1))[..., None]


def _soften_silhouette(image: np.ndarray, background: np.ndarray,
                       mask: np.ndarray) -> None:
  """In place: replaces the rasterizer's aliased silhouette by a 3 x 3 box
  coverage: edge pixels = background (1 - coverage) + mean face colour x
  coverage (premultiplied, so no division)."""
  cover = cv2.blur(mask.astype(np.float32), (3, 3))
  edge = np.flatnonzero((cover > 0) & (cover < 1))
  face = cv2.blur(image * mask[..., None], (3, 3)).reshape(-1, 3)[edge]
  alpha = cover.reshape(-1)[edge, None]
  flat = image.reshape(-1, 3)
  flat[edge] = background.reshape(-1, 3)[edge] * (1 - alpha) + face


@dataclasses.dataclass(frozen=True)
class View:
  """One rendered face in crop pixels; z shifted so the map's minimum is 0."""
  image: np.ndarray           # (R, R, 3) float32 in [0, 1], not compressed
  mask: np.ndarray            # (R, R) bool, pixels covered by the head mesh
  position_map: np.ndarray    # (R, R, 3) float32
  landmarks: np.ndarray       # (68, 3) float32
  extra_points: np.ndarray    # (5, 3) float32
  crop_transform: np.ndarray  # (3, 3) float32, original -> crop
  face_box: np.ndarray        # (4,) float32, landmarks' box in the original


def render_view(model: model_lib.FaceModel, vertices: np.ndarray,
                tex: np.ndarray, pose: np.ndarray,
                light: render.Light | render.SceneLight,
                background: np.ndarray, crop_rng: np.random.Generator | None,
                dressing: appearance.Dressing | None = None,
                crop_jitter: float = 0.1,
                crop_scale_jitter: float = 0.1) -> View:
  """Renders model-space `vertices` with `pose` and crops as PRNet does.

  Args:
    model: the face model (for topology, UVs and landmarks).
    vertices: (N, 3) model-space vertices.
    tex: (T, T, 3) UV albedo.
    pose: (7,) Pose_Para in the virtual original image.
    light: a `render.SceneLight` (spherical-harmonics environment, key
      light with cast shadows, ambient occlusion and sheen, shaded in
      linear light) or a Lambertian `render.Light`.
    background: (R, R, 3) float32 background of the crop (not modified).
    crop_rng: random generator of PRNet's crop perturbation, or None.
    dressing: hair volume, neck, clothes, glasses and hat drawn around
      the face (`appearance`; with a `SceneLight` only), or None for the
      bare head.
    crop_jitter: the crop centre's perturbation (`render.prnet_crop`).
    crop_scale_jitter: the crop side's perturbation.
  """
  resolution = background.shape[0]
  camera = render.pose_to_camera(vertices, pose)
  image_pts = render.camera_to_image(camera, ORIGINAL_SIZE)
  lmk_image = model.landmarks(image_pts)
  transform, _ = render.prnet_crop(lmk_image, resolution, crop_rng,
                                   jitter=crop_jitter,
                                   scale_jitter=crop_scale_jitter)
  crop = render.apply_crop(transform, image_pts)
  normals = render.grid_normals(camera, model.rows, model.cols)
  specular, linear = None, False
  if isinstance(light, render.SceneLight):
    visibility = render.key_visibility(camera, light.direction,
                                       bias=2.0 * float(pose[6]),
                                       normals=normals,
                                       grid=(model.rows, model.cols))
    intensity, specular = render.shade_scene(
        normals, light, visibility, appearance.vertex_occlusion(model))
    linear = True
  else:
    intensity = render.shade(normals, light)
  project = appearance.Projector(np.asarray(pose, np.float64), transform,
                                 ORIGINAL_SIZE)
  width_scale = float(np.abs(vertices[:model.cols, 0]).max()) / 66.0
  if dressing is not None:
    if not isinstance(light, render.SceneLight):
      raise ValueError('a dressing is drawn with a render.SceneLight')
    background = np.array(background, np.float32, copy=True)
    appearance.draw_behind(background, dressing, project, light, width_scale,
                           _hair_streaks(resolution))
  image, r = render.render_mesh(crop, model.triangles, model.uv, intensity,
                                tex, background, light.colour, specular,
                                linear)
  if dressing is not None:
    _soften_silhouette(image, background, r.mask)
  if dressing is not None:
    appearance.draw_in_front(image, dressing, project, light, r, model,
                             vertices, width_scale)
  # z is shifted so that the position map's minimum is 0 (PRNet shifts its
  # vertices; the texels of a map are what users see and train on).
  position_map = model.position_map(crop, resolution)
  z_min = position_map[..., 2].min()
  position_map[..., 2] -= z_min
  crop[:, 2] -= z_min
  box = np.concatenate([lmk_image[:, :2].min(0), lmk_image[:, :2].max(0)])
  return View(image=image, mask=r.mask, position_map=position_map,
              landmarks=model.landmarks(crop).astype(np.float32),
              extra_points=model.extra_points(crop).astype(np.float32),
              crop_transform=transform.astype(np.float32),
              face_box=box.astype(np.float32))


def random_pose(rng: np.random.Generator, yaw_deg=(-90, 90), pitch_deg=(-30, 30),
                roll_deg=(-20, 20)) -> np.ndarray:
  """A Pose_Para in the virtual original image (angles in radians)."""
  angles = np.deg2rad([rng.uniform(*pitch_deg), rng.uniform(*yaw_deg),
                       rng.uniform(*roll_deg)])
  centre = ORIGINAL_SIZE / 2 + rng.uniform(-25, 25, 2)
  return np.array([*angles, centre[0], centre[1], 0.0,
                   rng.uniform(1.0, 1.6)], np.float32)


def photo_pose(rng: np.random.Generator,
               roll_deg: tuple[float, float] = SynthConfig.roll_deg
               ) -> np.ndarray:
  """A Pose_Para distributed like 300W-LP / AFLW2000-3D's faces.

  Yaw: 60 % from N(0, 22 deg), 40 % uniform, clipped to +-90 deg (about
  63 % of faces within 30 deg of frontal, 14 % beyond 60, as AFLW2000-3D's
  0-30 / 30-60 / 60-90 split); pitch N(0, 11) within +-40; roll
  N(0, roll_deg[0]) within +-roll_deg[1] degrees, by default N(0, 12)
  within +-40. The roll's spread is matched to real faces: on
  AFLW-21's faces within 30 degrees of frontal, the line through the outer
  eye corners has a standard deviation of 13.5 degrees, and with this roll
  the renders' has about as much (9.2 degrees with the N(0, 7) of before;
  pitch and yaw add about 6). With the narrower roll, PRNets learned to
  follow in-plane rotation only late in training, and on real photos not
  at all (README: "What carries synthetic training over to real faces").
  """
  yaw = (rng.normal(0, 22) if rng.random() < 0.6 else rng.uniform(-90, 90))
  angles = np.deg2rad([np.clip(rng.normal(0, 11), -40, 40),
                       np.clip(yaw, -90, 90),
                       np.clip(rng.normal(0, roll_deg[0]), -roll_deg[1],
                               roll_deg[1])])
  centre = ORIGINAL_SIZE / 2 + rng.uniform(-25, 25, 2)
  return np.array([*angles, centre[0], centre[1], 0.0,
                   rng.uniform(1.0, 1.6)], np.float32)


class Generator:
  """Makes records of each kind; holds the face model and config."""

  def __init__(self, config: SynthConfig):
    self.config = config
    self.model = model_lib.build_face_model(config.mesh_rows, config.mesh_cols)

  def _identity(self, split: str, rng: np.random.Generator, shape_mean=()
                ) -> identities_lib.Identity:
    first, count = self.config.identity_pool(split)
    return identities_lib.sample_identity(self.model, self.config.seed,
                                          first + int(rng.integers(count)),
                                          shape_mean)

  def _rng(self, kind: str, split: str, index: int) -> np.random.Generator:
    return _rng(self.config.seed, _KIND_CODE[kind], _SPLIT_CODE.get(
        split, zlib.crc32(split.encode())), index)

  def recon(self, split: str, index: int) -> dict:
    """A `recon` record (fields of `records`' schema)."""
    rng = self._rng('recon', split, index)
    res = self.config.resolution
    ident = self._identity(split, rng, self.config.shape_mean)
    expr = model_lib.sample_expression_coeffs(rng, self.model)
    out = self.config.leave_out
    pose = (random_pose(rng) if 'pose' in out else
            photo_pose(rng, self.config.roll_deg))
    tex = (_flat_texture(ident.albedo, self.config.tex_size)
           if 'texture' in out else
           texture_lib.make_texture(ident.albedo, self.config.tex_size))
    # Now and then the face is cut by the crop's edge (as in photos).
    jitter = self.config.crop_jitter * (2.5 if rng.random() < 0.15 else 1.0)
    light = (_plain_light(rng) if 'light' in out else
             render.random_scene_light(rng))
    background = (_noise_background(rng, res) if 'background' in out else
                  random_background(rng, res))
    dressing = (None if 'dressing' in out else
                appearance.sample_dressing(rng, ident.albedo))
    view = render_view(self.model, self.model.vertices(ident.shape, expr), tex,
                       pose, light, background, rng, dressing, jitter,
                       self.config.crop_scale_jitter)
    image = view.image
    occlude = rng.random() < self.config.p_occluder
    if occlude and 'occluders' not in out:
      add_occluder(image, rng, ident.albedo.skin)
    if 'camera' in out:
      image = records.encode_jpeg(
          np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8))
    else:
      image = finish_image(image, rng)
    return dict(
        image=image, position_map=view.position_map,
        landmarks=view.landmarks, pose=pose, shape_coeffs=ident.shape,
        expression_coeffs=expr, face_box=view.face_box,
        crop_transform=view.crop_transform,
        original_size=np.array([ORIGINAL_SIZE, ORIGINAL_SIZE], np.int32),
        identity=ident.index, source=f'synthetic/recon/{split}/{index}')

  def multiview(self, split: str, index: int) -> dict:
    """A `multiview` record: front, left and right views of one face."""
    rng = self._rng('multiview', split, index)
    res = self.config.resolution
    ident = self._identity(split, rng)
    expr = model_lib.sample_expression_coeffs(rng, self.model, p_active=0.2)
    vertices = self.model.vertices(ident.shape, expr)
    tex = texture_lib.make_texture(ident.albedo, self.config.tex_size)
    dressing = appearance.sample_dressing(rng, ident.albedo)
    views, poses = [], []
    for yaw in ((-10, 10), (-85, -55), (55, 85)):  # front, left, right
      pose = random_pose(rng, yaw, (-10, 10), (-8, 8))
      view = render_view(self.model, vertices, tex, pose,
                         render.random_scene_light(rng),
                         random_background(rng, res), rng, dressing)
      views.append(view)
      poses.append(pose)
    return dict(
        images=[finish_image(v.image, rng) for v in views],
        landmarks=np.stack([v.landmarks for v in views]),
        extra_points=np.stack([v.extra_points for v in views]),
        poses=np.stack(poses),
        crop_transforms=np.stack([v.crop_transform for v in views]),
        canonical_position_map=self.model.canonical_position_map(vertices,
                                                                 res),
        shape_coeffs=ident.shape, expression_coeffs=expr,
        identity=ident.index, source=f'synthetic/multiview/{split}/{index}')

  def clip(self, split: str, index: int) -> dict:
    """A `clips` record: a smooth progression (label 1) or a corrupted one.

    Half the clips are true progressions: one identity whose pose, position
    and expression move smoothly. The other half are corrupted, evenly:
    `shuffled` (frames out of order), `identity_switch` (a second identity
    from the middle on, same motion), `frozen` (the clip stops moving at a
    random frame), `jitter` (every frame gets a large random pose offset).
    """
    rng = self._rng('clips', split, index)
    cfg = self.config
    length, res = cfg.clip_length, cfg.resolution
    ident = self._identity(split, rng)
    label = int(rng.random() < 0.5)
    corruption = 0 if label else int(rng.integers(1, len(records.CORRUPTIONS)))
    name = records.CORRUPTIONS[corruption]
    other = ident
    while name == 'identity_switch' and other.index == ident.index:
      other = self._identity(split, rng)

    t = np.linspace(0, 1, length)
    start = random_pose(rng, (-60, 60), (-20, 20), (-10, 10)).astype(np.float64)
    amplitude = np.deg2rad(rng.uniform(8, 35)) * rng.choice([-1, 1])
    freq, phase = rng.uniform(0.3, 1.0), rng.uniform(0, np.pi)
    poses = np.repeat(start[None], length, 0)
    poses[:, 1] += amplitude * np.sin(2 * np.pi * freq * t + phase)
    poses[:, 0] += np.deg2rad(rng.uniform(-8, 8)) * np.sin(np.pi * t)
    poses[:, 3:5] += rng.uniform(-15, 15, 2) * t[:, None]
    expr0 = model_lib.sample_expression_coeffs(rng, self.model)
    expr1 = model_lib.sample_expression_coeffs(rng, self.model)
    exprs = expr0 + (expr1 - expr0) * t[:, None]
    if name == 'jitter':
      poses[:, :3] += np.deg2rad(rng.uniform(-20, 20, (length, 3)))
      poses[:, 3:5] += rng.uniform(-20, 20, (length, 2))
    order = np.arange(length)
    if name == 'frozen':
      stop = int(rng.integers(1, length - 1))
      order = np.minimum(order, stop)
    elif name == 'shuffled':
      while np.all(np.abs(np.diff(order)) == 1):
        order = rng.permutation(length)

    light = render.random_scene_light(rng)
    background = random_background(rng, res)
    textures = {i.index: texture_lib.make_texture(i.albedo, cfg.tex_size)
                for i in (ident, other)}
    dressings = {i.index: appearance.sample_dressing(rng, i.albedo)
                 for i in (ident, other)}
    frames, landmarks, identities, rendered = [], [], [], {}
    for k, source in enumerate(order):
      who = other if (name == 'identity_switch' and k >= length // 2) else ident
      key = (int(source), who.index)
      if key not in rendered:
        vertices = self.model.vertices(who.shape, exprs[source])
        rendered[key] = render_view(self.model, vertices, textures[who.index],
                                    poses[source].astype(np.float32), light,
                                    background, None, dressings[who.index])
      view = rendered[key]
      frames.append(finish_image(view.image, rng))
      landmarks.append(view.landmarks)
      identities.append(who.index)
    return dict(
        frames=frames, landmarks=np.stack(landmarks),
        poses=poses[order].astype(np.float32),
        identities=np.array(identities, np.int64), label=label,
        corruption=corruption, source=f'synthetic/clips/{split}/{index}')

  def make(self, kind: str, split: str, index: int) -> dict:
    if kind == 'recon':
      return self.recon(split, index)
    if kind == 'multiview':
      return self.multiview(split, index)
    if kind == 'clips':
      return self.clip(split, index)
    raise ValueError(f'unknown record kind {kind!r}; kinds: {records.KINDS}')


@functools.lru_cache(maxsize=2)
def _generator(config: SynthConfig) -> Generator:
  """One Generator per process and config (the face model is built once)."""
  return Generator(config)


@dataclasses.dataclass(frozen=True)
class _Make:
  """Picklable `index -> record fields` for `writing.write_split`."""
  config: SynthConfig
  kind: str
  split: str

  def __call__(self, index: int) -> dict:
    return _generator(self.config).make(self.kind, self.split, index)


def synthesize(out_dir: str, config: SynthConfig,
               counts: dict[str, dict[str, int]], *, workers: int = 1,
               shard_size: int = 256, overwrite: bool = False,
               progress: bool = True, extra_info: dict | None = None) -> dict:
  """Writes a synthetic dataset: shards and dataset.json.

  The folder is written as `writing.dataset_output` says: by one writer at
  a time, all or nothing, and the leftovers of an interrupted run (shards
  without a dataset.json, hidden partial files) are removed first, without
  `overwrite`.

  Args:
    out_dir: output directory (created; an existing dataset there is only
      replaced with `overwrite`).
    config: the generator's config.
    counts: {kind: {split: number of records}}.
    workers: processes.
    shard_size: records per shard.
    overwrite: replace an existing dataset in `out_dir`.
    progress: show progress bars.
    extra_info: more keys for dataset.json.

  Returns:
    The dataset.json dict.

  Raises:
    ValueError: an unknown kind or split.
    FileExistsError: `out_dir` holds a dataset and not `overwrite`.
    files.FolderInUseError: another writer is writing `out_dir`.
    writing.Interrupted: Ctrl-C; nothing of `out_dir` is left.
  """
  for kind, splits in counts.items():
    if kind not in records.KINDS:
      raise ValueError(f'unknown record kind {kind!r}; kinds: {records.KINDS}')
    for split in splits:
      config.identity_pool(split)
  with writing.dataset_output(out_dir, overwrite):
    results = _write_splits(out_dir, config, counts, workers, shard_size,
                            progress)
    info = _dataset_info(config, results, extra_info)
    shards.write_dataset_info(out_dir, info)
  return info


def _write_splits(out_dir: str, config: SynthConfig,
                  counts: dict[str, dict[str, int]], workers: int,
                  shard_size: int, progress: bool) -> list:
  """Writes the records of `counts`; one `writing.SplitResult` per split."""
  plan = [(kind, split, range(count), _Make(config, kind, split))
          for kind, splits in counts.items()
          for split, count in splits.items()]
  return writing.write_splits(out_dir, plan, workers=workers,
                              shard_size=shard_size, progress=progress)


def _dataset_info(config: SynthConfig, results: list,
                  extra_info: dict | None) -> dict:
  """The dataset.json dict of a synthetic dataset."""
  model = _generator(config).model
  return writing.dataset_info(
      results, source='synthetic', seed=config.seed,
      generator_version=GENERATOR_VERSION,
      crop_jitter=config.crop_jitter,
      crop_scale_jitter=config.crop_scale_jitter,
      leave_out=list(config.leave_out),
      roll_deg=list(config.roll_deg),
      shape_mean=dict(config.shape_mean),
      resolution=config.resolution,
      identities={name: n for name, n in config.identities},
      clip_length=config.clip_length,
      face_model={'rows': model.rows, 'cols': model.cols,
                  'num_shape': model.num_shape,
                  'num_expression': model.num_expression,
                  'shape_names': list(model.shape_names),
                  'expression_names': list(model.expression_names)},
      uv_layout=layout_lib.PROCEDURAL.to_json(),
      **(extra_info or {}))
