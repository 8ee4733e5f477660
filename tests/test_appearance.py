"""Photo-like synthetic faces: scenes, light, albedo, props, and labels."""

import dataclasses

import numpy as np
import pytest

from jaxface.data import records
from jaxface.data import scenes
from jaxface.data import synthetic
from jaxface.face import appearance
from jaxface.face import model as model_lib
from jaxface.face import render
from jaxface.face import texture as texture_lib


@pytest.fixture(scope='module')
def model():
  return model_lib.build_face_model()


def test_backgrounds_are_deterministic_in_range_and_photo_like():
  pixels = []
  for seed in range(24):
    image = scenes.background(np.random.default_rng(seed), 96)
    again = scenes.background(np.random.default_rng(seed), 96)
    np.testing.assert_array_equal(image, again)
    assert image.shape == (96, 96, 3) and image.dtype == np.float32
    assert image.min() >= 0 and image.max() <= 1
    pixels.append(image.reshape(-1, 3))
  pixels = np.concatenate(pixels)
  # Photographs: channels strongly correlated, colours muted (colour noise
  # has uncorrelated channels and a mean max - min spread near 0.5).
  corr = np.corrcoef(pixels.T)
  assert corr[0, 1] > 0.75 and corr[1, 2] > 0.75, corr
  spread = (pixels.max(1) - pixels.min(1)).mean()
  assert spread < 0.2, spread


def test_occluders_and_camera_effects_stay_in_range():
  for seed in range(12):
    rng = np.random.default_rng(seed)
    image = scenes.background(rng, 64)
    before = image.copy()
    scenes.add_occluder(image, rng, np.array([0.8, 0.6, 0.5], np.float32))
    assert image.min() >= 0 and image.max() <= 1
    assert np.any(image != before)
    rgb = records.decode_jpeg(scenes.finish_image(image, rng))
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    again = np.random.default_rng(seed)
    image2 = scenes.background(again, 64)
    scenes.add_occluder(image2, again, np.array([0.8, 0.6, 0.5], np.float32))
    np.testing.assert_array_equal(image, image2)


def test_textures_are_deterministic_in_range_with_features():
  size = 128
  masks = texture_lib.texture_masks(size)
  lum = []
  for seed in range(40):
    albedo = texture_lib.sample_albedo(np.random.default_rng(seed))
    tex = texture_lib.make_texture(albedo, size)
    again = texture_lib.make_texture(
        texture_lib.sample_albedo(np.random.default_rng(seed)), size)
    np.testing.assert_array_equal(tex, again)
    assert tex.shape == (size, size, 3) and tex.dtype == np.float32
    assert tex.min() >= 0 and tex.max() <= 1
    lum.append(float(albedo.skin.mean()))
    # Pupils are dark, the sclera light, lips redder than skin.
    lmk = model_lib.landmark_uv()
    eye = np.round(lmk[36:42].mean(0) * (size - 1)).astype(int)
    assert tex[eye[1], eye[0]].max() < 0.12
    corner = np.round((0.25 * lmk[36] + 0.75 * lmk[36:42].mean(0)) *
                      (size - 1)).astype(int)
    assert tex[corner[1], corner[0]].mean() > tex[eye[1], eye[0]].mean()
    lip = np.round((lmk[51] + lmk[62]) / 2 * (size - 1)).astype(int)
    cheek = np.round(model_lib.theta_y_to_uv(0.5, -30) * (size - 1)).astype(
        int)
    lip_rgb, skin_rgb = tex[lip[1], lip[0]], tex[cheek[1], cheek[0]]
    assert (lip_rgb[0] / (lip_rgb[1] + 1e-3) >
            skin_rgb[0] / (skin_rgb[1] + 1e-3)), (lip_rgb, skin_rgb)
    # Hair covers the top of the scalp unless bald, never the eyes.
    cover = texture_lib._hair_mask(albedo, masks, size)  # pylint: disable=protected-access
    if not albedo.bald:
      assert cover[0, size // 2, 0] == 1
    assert cover.shape[0] <= eye[1] or np.all(cover[eye[1], eye[0]] == 0)
  assert min(lum) < 0.35 and max(lum) > 0.75, (min(lum), max(lum))


@pytest.mark.parametrize('strength', [1.0, 0.6])
def test_blend_detail_is_blend_with_numpys_colour(strength):
  rng = np.random.default_rng(5)
  weight = rng.uniform(0, 1, (40, 64)).astype(np.float32)
  weight[:5] = 0  # Region.of crops to the non-zero part
  region = texture_lib.Region.of(np.pad(weight, ((10, 14), (0, 0))))
  detail = rng.uniform(0, 1, (64, 64, 1)).astype(np.float32)
  colour = np.array([0.3, 0.2, 0.1], np.float32)
  tex = rng.uniform(0, 1, (64, 64, 3)).astype(np.float32)
  before, want = tex.copy(), tex.copy()
  region.blend(want, colour * (0.45 + 0.9 * region.crop(detail)), strength)
  region.blend_detail(tex, colour, detail, 0.45, 0.9, strength)
  np.testing.assert_array_equal(tex, want)
  assert region.rows == slice(15, 50)
  assert np.all(tex[15:50] != before[15:50])
  np.testing.assert_array_equal(tex[:15], before[:15])
  np.testing.assert_array_equal(tex[50:], before[50:])


def test_scene_light_shading_and_shadows(model):
  rng = np.random.default_rng(0)
  normals = render.grid_normals(model.mean, model.rows, model.cols)
  for _ in range(10):
    light = render.random_scene_light(rng)
    diffuse, spec = render.shade_scene(normals, light)
    assert diffuse.shape == (len(normals), 3) and np.all(diffuse >= 0)
    assert np.all(np.isfinite(diffuse))
    assert np.all(spec >= 0) and np.all(spec <= light.specular + 1e-6)
  # A small square 30 units in front of a plane shadows the plane behind
  # it from a light straight ahead, and nothing else.
  g = np.linspace(-50, 50, 101)
  plane = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
  plane = np.concatenate([plane, np.zeros((len(plane), 1))], 1)
  s = np.linspace(-10, 10, 21)
  square = np.stack(np.meshgrid(s, s), -1).reshape(-1, 2)
  square = np.concatenate([square, np.full((len(square), 1), 30.0)], 1)
  vis = render.key_visibility(np.concatenate([plane, square]),
                              np.array([0.0, 0.0, 1.0]), bias=1.0)
  behind = np.all(np.abs(plane[:, :2]) < 6, 1)
  apart = np.any(np.abs(plane[:, :2]) > 20, 1)
  assert np.all(vis[:len(plane)][behind] < 0.05)
  assert np.all(vis[:len(plane)][apart] > 0.99)
  assert np.all(vis[len(plane):] > 0.99)
  occlusion = appearance.vertex_occlusion(model)
  assert occlusion.min() >= 0.35 and occlusion.max() <= 1
  ids, _ = model.locate(model_lib.landmark_uv()[[39, 32]])  # eye, nostril
  forehead, _ = model.locate(model_lib.theta_y_to_uv(np.zeros(1), [60.0]))
  assert occlusion[ids[:, 0]].max() < occlusion[forehead[0, 0]] - 0.05


def test_photo_pose_distribution():
  rng = np.random.default_rng(0)
  poses = np.stack([synthetic.photo_pose(rng) for _ in range(3000)])
  yaw = np.abs(np.rad2deg(poses[:, 1]))
  assert yaw.max() <= 90 and np.abs(np.rad2deg(poses[:, [0, 2]])).max() <= 40
  assert 0.55 < np.mean(yaw < 30) < 0.72  # AFLW2000-3D: 0.66
  assert 0.08 < np.mean(yaw > 60) < 0.2  # AFLW2000-3D: 0.15
  # Roll N(0, 12) degrees: real faces tilt about that much (AFLW-21).
  assert 11 < np.std(np.rad2deg(poses[:, 2])) < 13
  # A stored config from before `roll_deg` renders the roll of then,
  # N(0, 7) within +-30.
  stored = dataclasses.asdict(synthetic.SynthConfig())
  del stored['roll_deg']
  old = synthetic.SynthConfig.from_dict(stored)
  assert old.roll_deg == (7.0, 30.0)
  rng = np.random.default_rng(0)
  roll = np.rad2deg([synthetic.photo_pose(rng, old.roll_deg)[2]
                     for _ in range(3000)])
  assert 6 < np.std(roll) < 8 and np.abs(roll).max() <= 30
  # ... and its identities around the face model's own mean (version 2).
  del stored['shape_mean']
  assert synthetic.SynthConfig.from_dict(stored).shape_mean == ()
  assert synthetic.SynthConfig().shape_mean == model_lib.ADULT_SHAPE_MEAN
  with pytest.raises(ValueError, match='roll_deg'):
    synthetic.SynthConfig(roll_deg=(12.0,))


def test_crop_jitter_moves_the_centre_further():
  lmk = np.random.default_rng(0).uniform(100, 300, (68, 2))
  shifts = {}
  for jitter in (0.1, 0.25):
    rng = np.random.default_rng(1)
    out = [render.prnet_crop(lmk, 64, rng, jitter=jitter)[1]
           for _ in range(200)]
    centre = np.array([(b[:2] + b[2:]) / 2 for b in out])
    shifts[jitter] = np.abs(centre - (lmk.min(0) + lmk.max(0)) / 2).max()
  extent = np.mean(lmk.max(0) - lmk.min(0))
  assert shifts[0.1] <= 0.1 * extent + 1e-6 < shifts[0.25]


def _coded_texture(albedo, size):
  """Red skin, green eye openings, blue lips: a texture that names regions."""
  del albedo
  masks = texture_lib.texture_masks(size)
  tex = np.empty((size, size, 3), np.float32)
  tex[...] = (0.85, 0.12, 0.1)
  masks.sclera.blend(tex, (0.1, 0.85, 0.1))
  masks.lips.blend(tex, (0.1, 0.1, 0.85))
  return tex


def _no_props(real):
  def sample(rng, albedo):
    return dataclasses.replace(real(rng, albedo), glasses=None, hat=None)
  return sample


def _patch(image, xy):
  x, y = np.round(xy).astype(int)
  return np.median(image[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3), 0) / 255


def test_landmarks_land_on_the_rendered_features(monkeypatch):
  monkeypatch.setattr(texture_lib, 'make_texture', _coded_texture)
  monkeypatch.setattr(appearance, 'sample_dressing',
                      _no_props(appearance.sample_dressing))
  res = 256
  gen = synthetic.Generator(synthetic.SynthConfig(resolution=res,
                                                  p_occluder=0.0))
  checked = {'nose': 0, 'eye': 0}
  for index in range(16):
    rec = gen.recon('train', index)
    image = records.decode_jpeg(rec['image']).astype(np.float32)
    if np.abs(image - image.mean(-1, keepdims=True)).max() < 8:
      continue  # a greyscale photo (a camera effect): no colour codes
    lmk = rec['landmarks']
    yaw = np.rad2deg(rec['pose'][1])
    inside = lambda p: np.all((p[:2] >= 2) & (p[:2] < res - 2))  # pylint: disable=cell-var-from-loop
    if inside(lmk[30]):
      r, g, b = _patch(image, lmk[30, :2])
      assert r > g + 0.05 and r > b + 0.05, (index, r, g, b)  # on the skin
      checked['nose'] += 1
    eyes = []
    if -20 < yaw < 60:
      eyes.append(model_lib.LEFT_EYE)  # faces the camera for yaw > 0
    if -60 < yaw < 20:
      eyes.append(model_lib.RIGHT_EYE)
    for eye in eyes:
      pts = lmk[list(eye), :2]
      width = np.linalg.norm(pts[3] - pts[0])
      opening = np.linalg.norm(pts[[1, 2]].mean(0) - pts[[4, 5]].mean(0))
      centre = pts[[1, 2, 4, 5]].mean(0)
      if opening < 0.3 * width or width < 8 or not inside(centre):
        continue  # a closed or foreshortened eye
      r, g, b = _patch(image, centre)
      assert g > r + 0.05 and g > b + 0.05, (index, yaw, r, g, b)
      checked['eye'] += 1
  assert checked['nose'] >= 12 and checked['eye'] >= 8, checked


def test_overlays_draw_around_the_head_and_stay_in_range(model):
  rng = np.random.default_rng(2)
  albedo = texture_lib.sample_albedo(rng)
  dressing = dataclasses.replace(
      appearance.sample_dressing(rng, albedo), hair_length=1.0,
      glasses=np.array([0.1, 0.1, 0.1]), hat=np.array([0.8, 0.1, 0.1]))
  background = np.full((128, 128, 3), 0.5, np.float32)
  pose = np.array([0.0, 0.3, 0.0, 225, 225, 0, 1.3], np.float32)
  view = synthetic.render_view(model, model.vertices(), texture_lib.make_texture(
      albedo, 128), pose, render.random_scene_light(rng), background, None,
                               dressing)
  assert view.image.min() >= 0 and view.image.max() <= 1
  assert np.all(background == 0.5)  # not modified
  changed = np.any(np.abs(view.image - 0.5) > 1e-3, -1)
  assert np.mean(changed & ~view.mask) > 0.1  # hair, neck, clothes, hat
  bare = synthetic.render_view(model, model.vertices(), texture_lib.make_texture(
      albedo, 128), pose, render.random_scene_light(np.random.default_rng(2)),
                               background, None)
  np.testing.assert_array_equal(view.landmarks, bare.landmarks)
  np.testing.assert_array_equal(view.position_map, bare.position_map)
  np.testing.assert_array_equal(view.mask, bare.mask)
