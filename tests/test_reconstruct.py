"""Tests of `jaxface reconstruct` (jaxface.infer): detection, crops, outputs.

The network of the test workdir is freshly initialised, so what it predicts
is meaningless; the tests check the files and the geometry around it. One
test swaps the network for an oracle that returns the true position maps of
the crops, which must come back exactly in the photo's pixels.
"""

import argparse
import json
import os

import cv2
import numpy as np
import pytest
import skimage.data

from jaxface.data import synthetic
from jaxface.face import mesh_io
from jaxface.face import model as model_lib
from jaxface.face import render
from jaxface.face import texture as texture_lib
from jaxface.face import uv as uv_lib
from jaxface.infer import detect
from jaxface.infer import reconstruct
import workdirs

RESOLUTION = 32
# Her face in skimage's astronaut photo (512 x 512), placed by eye: jaw
# line, eyebrows to chin.
ASTRONAUT_FACE = (182, 87, 272, 166)
# (centre x, centre y, yaw degrees) of the two faces of the synthetic photo.
FACES = ((95.0, 112.0, 20.0), (265.0, 118.0, -15.0))


def _main(argv):
  """`jaxface reconstruct ...` through the CLI, or the module's own parser
  while other subcommands' modules are missing."""
  from jaxface import cli  # pylint: disable=g-import-not-at-top
  try:
    cli.build_parser()
  except ModuleNotFoundError:
    parser = argparse.ArgumentParser()
    reconstruct.add_arguments(parser)
    return reconstruct.run(parser.parse_args(argv[1:]))
  return cli.main(argv)


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  return workdirs.prnet_workdir(str(tmp_path_factory.mktemp('workdir')),
                                resolution=RESOLUTION)


def _render_photo():
  """A 360 x 240 photo with two mean-shape faces at FACES.

  Returns:
    (240, 360, 3) uint8 photo, (2, 68, 3) true landmarks and (2, 4) their
    boxes in its pixels, the faces' true (R, R, 3) position maps in its
    pixels, and the (2,) yaws in degrees.
  """
  rng = np.random.default_rng(3)
  model = model_lib.build_face_model()
  image = synthetic.random_background(rng, 360)[:240]
  light = render.Light(np.array([0.0, 0.3, 1.0]) / np.hypot(0.3, 1.0), 0.5,
                       0.6, np.ones(3))
  landmarks, maps = [], []
  for cx, cy, yaw in FACES:
    pose = [0.0, np.deg2rad(yaw), 0.0, 0.0, 0.0, 0.0, 0.55]
    camera = render.pose_to_camera(model.vertices(), pose)
    pts = render.camera_to_image(camera, 240)
    lmk = model.landmarks(pts)
    pts[:, :2] += [cx, cy] - (lmk[:, :2].min(0) + lmk[:, :2].max(0)) / 2
    tex = texture_lib.make_texture(texture_lib.sample_albedo(rng), 128)
    shading = render.shade(render.grid_normals(camera, model.rows,
                                               model.cols), light)
    image, _ = render.render_mesh(pts, model.triangles, model.uv, shading,
                                  tex, image, light.colour)
    landmarks.append(model.landmarks(pts))
    maps.append(model.position_map(pts, RESOLUTION))
  photo = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
  landmarks = np.stack(landmarks)
  boxes = np.concatenate([landmarks[..., :2].min(1),
                          landmarks[..., :2].max(1)], 1)
  return photo, landmarks, boxes, np.stack(maps), [f[2] for f in FACES]


@pytest.fixture(scope='module')
def two_faces():
  return _render_photo()


def _write_rgb(path, rgb):
  assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
  return str(path)


def test_crop_matches_prnet_training_crop_and_maps_back():
  rng = np.random.default_rng(0)
  landmarks = rng.uniform(100, 200, (68, 2))
  box = detect.box_from_landmarks(landmarks)
  expected, _ = render.prnet_crop(landmarks, 256)
  np.testing.assert_allclose(detect.box_to_crop(box, 256), expected,
                             atol=1e-9)
  # The crop's corners land on the crop square around the shifted box.
  transform = detect.box_to_crop([10, 20, 110, 140], 64)
  corners = reconstruct.crop_to_photo(transform, [[0, 0, 0], [63, 63, 63]])
  side = detect.CROP_SIDE * 110
  centre = np.array([60, 80]) + np.multiply(detect.CROP_SHIFT, 110)
  np.testing.assert_allclose(corners[:, :2], [centre - side / 2,
                                              centre + side / 2], atol=1e-9)
  np.testing.assert_allclose(corners[1, 2], side, atol=1e-9)
  # crop_to_photo inverts render.apply_crop.
  points = rng.uniform(-50, 300, (10, 3))
  np.testing.assert_allclose(
      reconstruct.crop_to_photo(transform,
                                render.apply_crop(transform, points)),
      points, atol=1e-9)


def test_haar_detector_finds_the_astronaut():
  boxes = detect.detect_faces(skimage.data.astronaut())
  assert boxes.shape == (1, 4)
  box = boxes[0]
  x0, y0, x1, y1 = ASTRONAUT_FACE
  inter = (max(0, min(box[2], x1) - max(box[0], x0)) *
           max(0, min(box[3], y1) - max(box[1], y0)))
  union = (box[2] - box[0]) * (box[3] - box[1]) + (x1 - x0) * (y1 - y0)
  assert inter / (union - inter) > 0.5, box
  # Her face is inside the inference crop, with a margin.
  corners = reconstruct.crop_to_photo(detect.box_to_crop(box, 256),
                                      [[0, 0, 0], [255, 255, 0]])
  assert (corners[0, :2] < [x0 - 5, y0 - 5]).all()
  assert (corners[1, :2] > [x1 + 5, y1 + 5]).all()


def test_two_faces_with_json_boxes(workdir, two_faces, tmp_path, capsys):
  photo, landmarks, _, _, _ = two_faces
  path = _write_rgb(tmp_path / 'two.png', photo)
  face_boxes = [detect.box_from_landmarks(l).tolist() for l in landmarks]
  with open(tmp_path / 'boxes.json', 'w') as f:
    json.dump({'two.png': face_boxes}, f)
  out = tmp_path / 'out'
  assert _main(['reconstruct', path, '--workdir', workdir, '--out', str(out),
                '--boxes', str(tmp_path / 'boxes.json'),
                '--batch-size', '4']) == 0
  assert '2 face(s)' in capsys.readouterr().out
  face_texels = int(model_lib.face_region_mask(RESOLUTION).sum())
  for k, box in enumerate(face_boxes):
    with open(out / f'two_face{k}.json') as f:
      record = json.load(f)
    assert record['source'] == path and record['box'] == box
    assert record['model']['step'] == 1
    assert np.shape(record['landmarks_2d']) == (68, 2)
    assert np.shape(record['landmarks_3d']) == (68, 3)
    assert set(record['pose']) == {'yaw', 'pitch', 'roll'}
    transform = np.array(record['crop_transform'])
    np.testing.assert_allclose(transform,
                               detect.box_to_crop(box, RESOLUTION))
    # PRNet's outputs are in [0, 1.1 R] crop pixels: the landmarks come
    # back inside this face's crop square (+10 %), whatever the weights.
    lo, hi = reconstruct.crop_to_photo(
        transform, [[0, 0, 0], [1.1 * (RESOLUTION - 1)] * 3])[:, :2]
    lmk = np.array(record['landmarks_2d'])
    assert (lmk >= lo - 1e-3).all() and (lmk <= hi + 1e-3).all()
    vertices, triangles, colors = mesh_io.read_obj(out / f'two_face{k}.obj')
    assert vertices.shape == (face_texels, 3) and len(triangles) > 0
    assert colors.shape == vertices.shape
    points, faces, point_colors = mesh_io.read_ply(out / f'two_face{k}.ply')
    np.testing.assert_allclose(points, vertices, rtol=1e-5, atol=1e-3)
    assert len(faces) == 0
    np.testing.assert_allclose(point_colors, colors, atol=1 / 255 + 1e-6)
    depth = cv2.imread(str(out / f'two_face{k}_depth.png'),
                       cv2.IMREAD_UNCHANGED)
    assert depth.shape == photo.shape[:2] and depth.dtype == np.uint16
  drawn = cv2.imread(str(out / 'two_faces.png'))
  assert drawn.shape == photo.shape
  with open(out / 'summary.json') as f:
    summary = json.load(f)
  assert summary['faces'] == 2 and summary['skipped'] == []
  assert summary['photos'][0]['faces'] == 2


def test_oracle_network_maps_back_exactly(workdir, two_faces, tmp_path):
  photo, landmarks, _, true_maps, yaws = two_faces
  model = reconstruct.Reconstructor.from_workdir(workdir, batch_size=2)
  boxes = np.stack([detect.box_from_landmarks(l) for l in landmarks])
  transforms = [detect.box_to_crop(b, RESOLUTION) for b in boxes]
  crop_maps = np.stack([
      render.apply_crop(t, m.reshape(-1, 3)).reshape(m.shape)
      for t, m in zip(transforms, true_maps)]).astype(np.float32)

  def oracle(variables, crops):
    del variables
    assert crops.shape == (2, RESOLUTION, RESOLUTION, 3)
    return crop_maps, uv_lib.sample_uv(crop_maps, model_lib.landmark_uv())

  model._forward = oracle  # pylint: disable=protected-access
  faces = model.reconstruct(photo, boxes)
  assert len(faces) == 2
  mask = model.face_mask
  for face, true_map, lmk, yaw in zip(faces, true_maps, landmarks, yaws):
    np.testing.assert_allclose(face.position_map[mask], true_map[mask],
                               atol=1e-3)
    np.testing.assert_allclose(
        face.landmarks, uv_lib.sample_uv(true_map, model_lib.landmark_uv()),
        atol=1e-3)
    # Sampled from a 32 x 32 map, they are near the mesh's own landmarks.
    assert np.median(np.abs(face.landmarks[:, :2] - lmk[:, :2])) < 0.5
    assert abs(face.pose['yaw'] - yaw) < 3.0
    assert abs(face.pose['pitch']) < 3.0 and abs(face.pose['roll']) < 3.0
  record = reconstruct.write_face(str(tmp_path), 'two_face0', photo, faces[0],
                                  mask, {'source': 'two.png'})
  vertices, _, colors = mesh_io.read_obj(tmp_path / 'two_face0.obj')
  np.testing.assert_allclose(vertices, faces[0].position_map[mask], atol=1e-3)
  # Vertex colours come from the photo under the vertices.
  xy = np.round(vertices[:, :2]).astype(int)
  assert np.median(np.abs(colors * 255 - photo[xy[:, 1], xy[:, 0]])) < 12
  depth = cv2.imread(str(tmp_path / record['files']['depth']),
                     cv2.IMREAD_UNCHANGED)
  covered = depth > 0
  x0, y0 = np.floor(vertices[:, :2].min(0)).astype(int)
  x1, y1 = np.ceil(vertices[:, :2].max(0)).astype(int)
  assert covered.sum() > 0.5 * (x1 - x0) * (y1 - y0)
  assert not covered[:, x1 + 1:].any() and not covered[y1 + 1:].any()
  # Brighter is nearer: the nose tip is in front of the eyes' corners.
  nose, eye_l, eye_r = np.round(faces[0].landmarks[[30, 36, 45], :2]).astype(
      int)
  assert depth[nose[1], nose[0]] > depth[eye_l[1], eye_l[0]] > 0
  assert depth[nose[1], nose[0]] > depth[eye_r[1], eye_r[0]] > 0


def test_a_model_in_another_uv_layout(two_faces, tmp_path):
  # Landmarks and mesh follow the workdir's layout; without a canonical face
  # in that layout the pose is left out, and says why.
  from jaxface.eval import metrics  # pylint: disable=g-import-not-at-top
  photo, landmarks, _, _, _ = two_faces
  layout = workdirs.made_up_layout()
  workdir = workdirs.prnet_workdir(str(tmp_path / 'run'),
                                   resolution=RESOLUTION, layout=layout)
  model = reconstruct.Reconstructor.from_workdir(workdir)
  assert model.layout == layout and not model.estimates_pose
  np.testing.assert_array_equal(model.face_mask,
                                layout.face_region(RESOLUTION))
  box = detect.box_from_landmarks(landmarks[0])
  transform = detect.box_to_crop(box, RESOLUTION)
  # A network whose maps are (col, row, row + col): the landmarks read at
  # UV (u, v) are (u, v, u + v) (R - 1) in the crop.
  cols, rows = np.meshgrid(np.arange(RESOLUTION), np.arange(RESOLUTION))
  ramp = np.stack([cols, rows, rows + cols], -1).astype(np.float32)

  class Ramp:

    def apply(self, variables, crops):
      del variables
      return np.broadcast_to(ramp, (crops.shape[0],) + ramp.shape)

  model = reconstruct.Reconstructor(Ramp(), {}, RESOLUTION, layout=layout)
  face, = model.reconstruct(photo, box[None])
  assert face.pose is None
  uv = layout.landmark_uv.astype(np.float64) * (RESOLUTION - 1)
  np.testing.assert_allclose(
      face.landmarks,
      reconstruct.crop_to_photo(transform, np.c_[uv, uv.sum(1)]), atol=1e-3)
  record = reconstruct.write_face(str(tmp_path), 'face0', photo, face,
                                  model.face_mask, {})
  with open(tmp_path / 'face0.json') as f:
    assert json.load(f) == json.loads(json.dumps(record))
  assert record['pose'] is None and 'canonical' in record['pose_skipped']
  vertices, _, _ = mesh_io.read_obj(tmp_path / 'face0.obj')
  assert len(vertices) == layout.face_region(RESOLUTION).sum()
  # With a canonical face given for the layout, the pose is fitted.
  posed = reconstruct.Reconstructor.from_workdir(
      workdir, canonical=metrics.canonical_reference(RESOLUTION))
  assert posed.estimates_pose
  assert set(posed.reconstruct(photo, box[None])[0].pose) == {
      'yaw', 'pitch', 'roll'}
  with pytest.raises(ValueError, match='canonical must be'):
    reconstruct.Reconstructor.from_workdir(workdir,
                                           canonical=np.zeros((4, 4, 3)))


def test_non_image_is_skipped_and_run_continues(workdir, two_faces, tmp_path,
                                                capsys):
  folder = tmp_path / 'in'
  folder.mkdir()
  (folder / 'notes.txt').write_text('not a photo')
  _write_rgb(folder / 'photo.png', two_faces[0])
  out = tmp_path / 'out'
  assert _main(['reconstruct', str(folder), '--workdir', workdir, '--out',
                str(out)]) == 0
  printed = capsys.readouterr().out
  assert f'skipping {folder / "notes.txt"}: not an image' in printed
  with open(out / 'summary.json') as f:
    summary = json.load(f)
  assert [p['path'] for p in summary['photos']] == [str(folder / 'photo.png')]
  assert summary['skipped'][0]['path'] == str(folder / 'notes.txt')
  assert (out / 'photo_faces.png').exists()


def test_nothing_readable_exits_non_zero(workdir, tmp_path, capsys):
  (tmp_path / 'a.jpg').write_bytes(b'\xff\xd8 truncated')
  status = _main(['reconstruct', str(tmp_path / 'a.jpg'),
                  str(tmp_path / 'missing.png'), '--workdir', workdir,
                  '--out', str(tmp_path / 'out')])
  assert status == 1
  printed = capsys.readouterr().out
  assert f'skipping {tmp_path / "a.jpg"}: not an image' in printed
  assert f'skipping {tmp_path / "missing.png"}: no such file' in printed


def test_image_without_a_face(workdir, tmp_path, capsys):
  path = _write_rgb(tmp_path / 'gray.png', np.full((120, 160, 3), 128,
                                                   np.uint8))
  out = tmp_path / 'out'
  assert _main(['reconstruct', path, '--workdir', workdir, '--out',
                str(out)]) == 0
  assert f'{path}: no face found' in capsys.readouterr().out
  with open(out / 'summary.json') as f:
    summary = json.load(f)
  assert summary['photos'][0]['faces'] == 0 and summary['faces'] == 0
  assert sorted(os.listdir(out)) == ['gray_faces.png', 'summary.json']


def test_load_boxes_lookup_and_errors(tmp_path):
  path = tmp_path / 'boxes.json'
  path.write_text(json.dumps({'a.jpg': [[1, 2, 30, 40]], 'dir/b.png': [],
                              str(tmp_path / 'c.png'): [[0, 0, 5, 5]]}))
  boxes = detect.load_boxes(str(path))
  assert detect.boxes_for(boxes, '/anywhere/a.jpg').tolist() == [[1, 2, 30,
                                                                  40]]
  assert detect.boxes_for(boxes, 'dir/./b.png').shape == (0, 4)
  assert detect.boxes_for(boxes, str(tmp_path / 'c.png')).shape == (1, 4)
  assert detect.boxes_for(boxes, 'd.png') is None
  for text, message in (('[1, 2]', 'must hold an object'),
                        ('{"a.jpg": [[1, 2, 3]]}', 'shape'),
                        ('{"a.jpg": [[5, 2, 3, 4]]}', 'empty'),
                        ('{"a.jpg": [["x", 2, 3, 4]]}', 'numbers'),
                        ('{"a.jpg": ', 'not valid JSON')):
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
      detect.load_boxes(str(path))


def test_boxes_outside_the_photo_or_too_small_write_no_face(workdir, tmp_path,
                                                            capsys):
  path = _write_rgb(tmp_path / 'gray.png', np.full((120, 160, 3), 128,
                                                   np.uint8))
  boxes = [[200, 150, 260, 210],  # wholly outside
           [50, 40, 50.001, 90],  # 0.001 px wide
           [0, 0, 1e12, 1e12],  # huge: almost all outside
           [-10, -10, 40, 40]]  # 64 % inside: reconstructed
  (tmp_path / 'boxes.json').write_text(json.dumps({'gray.png': boxes}))
  out = tmp_path / 'out'
  assert _main(['reconstruct', path, '--workdir', workdir, '--out', str(out),
                '--boxes', str(tmp_path / 'boxes.json')]) == 0
  assert 'skipping face 0: 0 % of the box is inside' in capsys.readouterr().out
  with open(out / 'summary.json') as f:
    summary = json.load(f)
  assert summary['faces'] == 1 and summary['faces_skipped'] == 3
  photo, = summary['photos']
  skipped = photo['skipped_faces']
  assert [s['face'] for s in skipped] == [0, 1, 2]
  assert [s['box'] for s in skipped] == boxes[:3]
  assert 'inside the 160 x 120 photo' in skipped[0]['reason']
  assert '0.001 px on its shorter side' in skipped[1]['reason']
  assert 'inside the 160 x 120 photo' in skipped[2]['reason']
  # Face 3 keeps its index; the skipped ones have no files.
  assert sorted(os.listdir(out)) == sorted(['summary.json'] + photo['files'])
  assert sorted(photo['files']) == ['gray_face3.json', 'gray_face3.obj',
                                    'gray_face3.ply', 'gray_face3_depth.png',
                                    'gray_faces.png']
  # Non-finite boxes are refused with a message before anything is written.
  (tmp_path / 'nan.json').write_text('{"gray.png": [[NaN, 0, 10, 10]]}')
  assert _main(['reconstruct', path, '--workdir', workdir, '--out',
                str(tmp_path / 'out2'), '--boxes',
                str(tmp_path / 'nan.json')]) == 2
  assert 'boxes must be finite' in capsys.readouterr().err
  assert not (tmp_path / 'out2').exists()


def test_drawing_clips_huge_and_non_finite_coordinates():
  photo = np.zeros((40, 50, 3), np.uint8)
  mask = model_lib.face_region_mask(RESOLUTION)
  pmap = np.full((RESOLUTION, RESOLUTION, 3), 1e12, np.float32)
  pmap[::2] = np.nan
  landmarks = np.full((68, 3), -1e12, np.float32)
  landmarks[0] = [10, 20, 0]
  face = reconstruct.FaceResult(
      box=np.array([-1e12, 5.0, 1e12, 30.0]), crop_transform=np.eye(3),
      position_map=pmap, landmarks=landmarks, pose=None)
  drawn = reconstruct.draw_faces(photo, [face], mask)
  assert drawn.shape == photo.shape
  # The box's edges at y 5 and 30 cross the picture; landmark 0 is drawn.
  assert drawn[5].any() and drawn[30].any()
  assert tuple(drawn[20, 10]) == (0, 255, 0)


def test_bad_canonical_is_a_clear_error(workdir, two_faces, tmp_path,
                                        capsys):
  path = _write_rgb(tmp_path / 'two.png', two_faces[0])
  np.savez(tmp_path / 'maps.npz', canonical=np.zeros((RESOLUTION,
                                                      RESOLUTION, 3)))
  (tmp_path / 'notes.txt').write_text('not an array\n')
  for name, message in (('missing.npz', 'does not exist'),
                        ('maps.npz', 'is not a .npy array'),
                        ('notes.txt', 'is not a .npy array')):
    out = tmp_path / f'out_{name}'
    assert _main(['reconstruct', path, '--workdir', workdir, '--out',
                  str(out), '--canonical', str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('jaxface: error: canonical map') and message in err
    assert 'pickle' not in err and not out.exists()


def test_out_is_checked_and_links_in_it_are_not_written_through(
    workdir, tmp_path, capsys):
  path = _write_rgb(tmp_path / 'gray.png', np.full((60, 80, 3), 128,
                                                   np.uint8))
  (tmp_path / 'file').write_text('a file')
  assert _main(['reconstruct', path, '--workdir', workdir, '--out',
                str(tmp_path / 'file')]) == 2
  assert (f'jaxface: error: --out {tmp_path / "file"} is a file, not a '
          'folder') in capsys.readouterr().err
  outside = tmp_path / 'outside.png'
  outside.write_bytes(b'precious')
  out = tmp_path / 'out'
  out.mkdir()
  os.symlink(outside, out / 'gray_faces.png')
  assert _main(['reconstruct', path, '--workdir', workdir, '--out',
                str(out)]) == 2
  assert 'is a link' in capsys.readouterr().err
  assert outside.read_bytes() == b'precious'
