"""2D-landmark datasets (AFLW-21 folders, iBUG .pts folders) -> 2D recon
records: the .pts reader, both formats on fabricated folders, the CLI, and
(when present) the real AFLW-21 folder. Nothing from the real folder is
copied here."""

import json
import os

import cv2
import numpy as np
import pytest

from data_pipelines import aflw21
from data_pipelines import landmarks2d
from data_pipelines import the300wlp
from jaxface import cli
from jaxface import files
from jaxface.data import records
from jaxface.data import shards
from jaxface.face import render

R = 64  # Crop side of the tests (the model's multiple of 32).
SIDE = aflw21.CROP_SIZE


def _picture(seed, height, width):
  """A smooth random uint8 RGB picture (JPEG keeps it close)."""
  rng = np.random.default_rng(seed)
  low = rng.uniform(20, 235, (5, 5, 3)).astype(np.float32)
  return cv2.resize(low, (width, height),
                    interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(
                        np.uint8)


def _write_jpeg(path, rgb):
  assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                     [cv2.IMWRITE_JPEG_QUALITY, 95])


def _records(out, split):
  with shards.RecordReader(str(out), 'recon', split) as reader:
    return {r['source']: r for r in reader}


def _skipped(out):
  info = shards.read_dataset_info(str(out))
  return {s['item']: s['reason'] for s in info['skipped_samples']}


# ------------------------------------------------------------ .pts reader


def _pts_text(points, n_points=None, header=True, braces=(True, True)):
  count = len(points) if n_points is None else n_points
  lines = ['version: 1', f'n_points:  {count}'] if header else []
  lines += ['{'] if braces[0] else []
  lines += [f'{x} {y}' for x, y in points]
  lines += ['}'] if braces[1] else []
  return '\n'.join(lines) + '\n'


def test_read_pts_reads_the_values_as_written(tmp_path):
  points = np.random.default_rng(0).uniform(1, 400, (68, 2)).round(3)
  path = tmp_path / 'face.pts'
  path.write_text(_pts_text(points).replace('{\n', '{\n\n'))  # blank line
  got = landmarks2d.read_pts(path)
  assert got.shape == (68, 2) and got.dtype == np.float64
  np.testing.assert_array_equal(got, points)
  # Windows line ends and a byte-order mark are fine too.
  path.write_bytes(b'\xef\xbb\xbf' + _pts_text(points[:3]).replace(
      '\n', '\r\n').encode())
  np.testing.assert_array_equal(landmarks2d.read_pts(path), points[:3])


POINTS3 = [(1.5, 2.0), (3.0, 4.0), (5.0, 6.25)]
MALFORMED = {
    'empty': ('', ':1:|empty'),
    'no header': (_pts_text(POINTS3, header=False), r":1: header without "
                  "'version' \\(it has no header lines\\)"),
    'no n_points': ('version: 1\n{\n1 2\n}\n', r":1: header without "
                    "'n_points'"),
    'no version': ('n_points: 1\n{\n1 2\n}\n', r":1: header without "
                   "'version'"),
    'version 2': ('version: 2\nn_points: 1\n{\n1 2\n}\n', r":1: version "
                  "'2'"),
    'bad n_points': ('version: 1\nn_points: many\n{\n1 2\n}\n',
                     r":2: n_points 'many'"),
    'fewer points': (_pts_text(POINTS3, n_points=4), r':2: n_points is 4 '
                     'but 3 points'),
    'more points': (_pts_text(POINTS3, n_points=2), r':2: n_points is 2 '
                    'but 3 points'),
    'non-numeric': (_pts_text(POINTS3).replace('3.0 4.0', '3.0 four'),
                    r":5: '3.0 four' is not numeric"),
    'nan': (_pts_text(POINTS3).replace('3.0 4.0', '3.0 nan'),
            r":5: '3.0 nan' is not finite"),
    'three values': (_pts_text(POINTS3).replace('3.0 4.0', '3.0 4.0 1'),
                     r':5: .* has 3 values'),
    'no opening brace': (_pts_text(POINTS3, braces=(False, True)),
                         r":3: '1.5 2.0' is a point before the opening"),
    'no closing brace': (_pts_text(POINTS3, braces=(True, False)),
                         r":6: no closing '}'"),
    'only a header': ('version: 1\nn_points: 3\n', r":2: no opening '{'"),
    'text after': (_pts_text(POINTS3) + 'extra\n', r":8: 'extra' after"),
}


@pytest.mark.parametrize('case', sorted(MALFORMED))
def test_read_pts_names_file_and_line_of_malformed_files(tmp_path, case):
  text, message = MALFORMED[case]
  path = tmp_path / f'bad_{case.replace(" ", "_")}.pts'
  path.write_text(text)
  with pytest.raises(ValueError, match=message) as error:
    landmarks2d.read_pts(path)
  assert str(error.value).startswith(str(path))


def test_read_pts_rejects_binary_files(tmp_path):
  path = tmp_path / 'photo.pts'
  path.write_bytes(b'\xff\xd8\xff\xe0 not text')
  with pytest.raises(ValueError, match='photo.pts: not a text .pts file'):
    landmarks2d.read_pts(path)


# ---------------------------------------------------------- aflw21 folder


def _aflw21_names(held, count):
  names = (f'image{k:05d}.jpg' for k in range(1, 100000))
  return [n for n in names if aflw21.held_out(n) == held][:count]


@pytest.fixture(scope='module')
def aflw21_folder(tmp_path_factory):
  """7 faces: 4 train, 3 held out; NaN points on some; one corrupt JPEG;
  one with only 2 visible points."""
  root = tmp_path_factory.mktemp('l2d') / 'aflw21'
  (root / 'images').mkdir(parents=True)
  names = _aflw21_names(False, 4) + _aflw21_names(True, 3)
  rng = np.random.default_rng(1)
  points = rng.uniform(8, 112, (len(names), 21, 2))
  points[0, [6, 12]] = np.nan   # not visible
  points[4, 16] = np.nan
  points[4, 3, 1] = np.nan      # half a point: not visible either
  points[2, :19] = np.nan       # 2 visible: skipped
  yaw = rng.uniform(-80, 80, len(names))
  pictures = {}
  for k, name in enumerate(names):
    pictures[name] = _picture(k, SIDE, SIDE)
    _write_jpeg(root / 'images' / name, pictures[name])
  corrupt = names[5]
  (root / 'images' / corrupt).write_bytes(b'\xff\xd8 broken')
  (root / 'names.txt').write_text('\n'.join(names) + '\n')
  np.save(root / 'pts21.npy',
          np.transpose(points, (0, 2, 1)).astype(np.float32))
  np.save(root / 'yaw_deg.npy', yaw.astype(np.float32))
  return dict(root=root, names=names, points=points.astype(np.float32),
              yaw=yaw.astype(np.float32), pictures=pictures,
              corrupt=corrupt, few=names[2])


@pytest.fixture(scope='module')
def aflw21_converted(aflw21_folder, tmp_path_factory):
  out = tmp_path_factory.mktemp('l2d_out') / 'aflw21'
  conversion = landmarks2d.convert_landmarks2d(
      'aflw21', aflw21_folder['root'], out, resolution=R, progress=False)
  return conversion, out


def test_aflw21_records_keep_visibility_yaw_and_the_held_out_split(
    aflw21_folder, aflw21_converted):
  conversion, out = aflw21_converted
  assert conversion.ok
  assert shards.check(str(out))['ok']
  info = shards.read_dataset_info(str(out))
  assert info['format'] == shards.FORMAT
  assert (info['source'], info['input_format'], info['crop'],
          info['scheme'], info['resolution']) == ('AFLW21', 'aflw21',
                                                  'given', 'aflw21', R)
  names, points = aflw21_folder['names'], aflw21_folder['points']
  bad = {aflw21_folder['corrupt'], aflw21_folder['few']}
  assert {s: info['kinds']['recon'][s]['count'] for s in ('train', 'test')
          } == {'train': 3, 'test': 2}
  assert info['skipped'] == {'recon': {'train': 1, 'test': 1}}
  skipped = _skipped(out)
  assert set(skipped) == bad
  assert 'corrupt image' in skipped[aflw21_folder['corrupt']]
  assert '2 visible point(s); at least 3' in skipped[aflw21_folder['few']]

  scale = (R - 1) / (SIDE - 1)
  for split in ('train', 'test'):
    for source, rec in _records(out, split).items():
      name = source.split('/')[1] + '.jpg'
      k = names.index(name)
      assert name not in bad
      assert split == ('test' if aflw21.held_out(name) else 'train')
      assert rec['scheme'] == 'aflw21' and 'landmarks' not in rec
      visible = ~np.isnan(points[k]).any(axis=1)
      np.testing.assert_array_equal(rec['points_visible'], visible)
      np.testing.assert_allclose(rec['points2d'][visible],
                                 points[k][visible] * scale, rtol=1e-6)
      assert (rec['points2d'][~visible] == 0).all()
      assert rec['yaw'].dtype == np.float32
      np.testing.assert_allclose(rec['yaw'],
                                 [np.deg2rad(aflw21_folder['yaw'][k])],
                                 rtol=1e-6)
      np.testing.assert_allclose(rec['crop_transform'],
                                 np.diag([scale, scale, 1]), rtol=1e-6)
      seen = points[k][visible]
      np.testing.assert_allclose(rec['face_box'], np.concatenate(
          [seen.min(0), seen.max(0)]), rtol=1e-6)
      np.testing.assert_array_equal(rec['original_size'], [SIDE, SIDE])
      assert rec['identity'] == int(name[len('image'):-len('.jpg')])
      image = records.decode_jpeg(rec['image'])
      assert image.shape == (R, R, 3)
      small = cv2.resize(aflw21_folder['pictures'][name], (R, R),
                         interpolation=cv2.INTER_AREA)
      assert np.abs(image.astype(float) - small).mean() < 4


def test_given_crops_are_the_benchmarks_resized_crops(aflw21_folder,
                                                      aflw21_converted):
  """`given` crops are `jaxface eval`'s resize of a crop to the model's
  input (`recon_eval.resize_transform` and `warp_image`)."""
  from jaxface.eval import recon_eval  # pylint: disable=g-import-not-at-top
  _, out = aflw21_converted
  rec = next(iter(_records(out, 'train').values()))
  np.testing.assert_allclose(rec['crop_transform'],
                             recon_eval.resize_transform(SIDE, R), rtol=1e-6)
  name = rec['source'].split('/')[1] + '.jpg'
  picture = aflw21_folder['pictures'][name]
  expected = recon_eval.warp_image(picture, rec['crop_transform'], R)
  image = records.decode_jpeg(rec['image'])
  assert np.abs(image.astype(float) - expected).mean() < 2


def test_aflw21_box_crop_and_limit(aflw21_folder, tmp_path):
  out = tmp_path / 'box'
  conversion = landmarks2d.convert_landmarks2d(
      'aflw21', aflw21_folder['root'], out, resolution=R, crop='box',
      limit=2, progress=False)
  assert conversion.total == 2
  recs = _records(out, 'train')
  assert len(recs) == 2
  for source, rec in recs.items():
    k = aflw21_folder['names'].index(source.split('/')[1] + '.jpg')
    pts = aflw21_folder['points'][k].astype(np.float64)
    visible = ~np.isnan(pts).any(axis=1)
    transform, _ = render.prnet_crop(pts[visible], R)
    np.testing.assert_allclose(rec['crop_transform'], transform, rtol=1e-5,
                               atol=1e-4)
    inverse = np.linalg.inv(rec['crop_transform'].astype(np.float64))
    back = rec['points2d'][visible] @ inverse[:2, :2].T + inverse[:2, 2]
    np.testing.assert_allclose(back, pts[visible], atol=1e-3)


def test_aflw21_refuses_a_test_fraction_and_a_bad_root(aflw21_folder,
                                                       tmp_path):
  with pytest.raises(ValueError, match='held_out'):
    landmarks2d.convert_landmarks2d('aflw21', aflw21_folder['root'],
                                    tmp_path / 'o', test_fraction=0.1,
                                    progress=False)
  with pytest.raises(FileNotFoundError, match='is not a folder'):
    landmarks2d.convert_landmarks2d('aflw21', tmp_path / 'nowhere',
                                    tmp_path / 'o', progress=False)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='has no names.txt'):
    landmarks2d.convert_landmarks2d('aflw21', tmp_path / 'empty',
                                    tmp_path / 'o', progress=False)
  for bad in (dict(resolution=0), dict(crop='tight'), dict(limit=0)):
    with pytest.raises(ValueError):
      landmarks2d.convert_landmarks2d('aflw21', aflw21_folder['root'],
                                      tmp_path / 'o', progress=False, **bad)
  with pytest.raises(ValueError, match='--format'):
    landmarks2d.convert_landmarks2d('ibug', aflw21_folder['root'],
                                    tmp_path / 'o', progress=False)
  assert not (tmp_path / 'o').exists()


# ------------------------------------------------------------- pts folder


def _face_points(rng, height, width):
  """68 plausible 0-based points inside a box of the image."""
  centre = np.array([width / 2, height / 2]) + rng.uniform(-10, 10, 2)
  return centre + rng.uniform(-0.3, 0.3, (68, 2)) * min(height, width)


@pytest.fixture(scope='module')
def pts_folder(tmp_path_factory):
  """Good faces (jpg, png, a subfolder, a non-square photo), one malformed
  .pts, one with 21 points, one image without a .pts."""
  root = tmp_path_factory.mktemp('l2d') / 'faces'
  (root / 'sub' / 'deeper').mkdir(parents=True)
  rng = np.random.default_rng(2)
  good = {}
  for k, (rel, shape) in enumerate([('a.jpg', (160, 160)),
                                    ('b.png', (150, 200)),
                                    ('sub/c.jpg', (180, 140)),
                                    ('sub/deeper/d.JPG', (170, 170))]):
    picture = _picture(10 + k, *shape)
    path = root / rel
    if rel.endswith('.png'):
      assert cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    else:
      _write_jpeg(path, picture)
    points = _face_points(rng, *shape)
    (root / rel).with_suffix('.pts').write_text(_pts_text(points + 1))
    good[os.path.splitext(rel)[0]] = (points, shape)
  _write_jpeg(root / 'malformed.jpg', _picture(20, 100, 100))
  (root / 'malformed.pts').write_text(
      _pts_text(_face_points(rng, 100, 100) + 1).replace('{', '(', 1))
  _write_jpeg(root / 'sub' / 'aflw.jpg', _picture(21, 100, 100))
  (root / 'sub' / 'aflw.pts').write_text(
      _pts_text(rng.uniform(10, 90, (21, 2))))
  _write_jpeg(root / 'lonely.jpg', _picture(22, 100, 100))
  return dict(root=root, good=good)


def test_pts_folder_converts_and_skips_bad_annotations(pts_folder, tmp_path):
  root, out = pts_folder['root'], tmp_path / 'out'
  conversion = landmarks2d.convert_landmarks2d('pts', root, out,
                                               resolution=R, progress=False)
  assert conversion.ok and shards.check(str(out))['ok']
  info = shards.read_dataset_info(str(out))
  assert (info['source'], info['crop'], info['scheme']) == ('faces', 'box',
                                                            'ibug68')
  assert set(info['kinds']['recon']) == {'train'}  # no --test-fraction
  skipped = _skipped(out)
  assert set(skipped) == {'malformed.pts', 'sub/aflw.pts', 'lonely.pts'}
  assert 'malformed annotation' in skipped['malformed.pts']
  assert 'malformed.pts:3:' in skipped['malformed.pts']
  assert '21 points; the ibug68 scheme has 68' in skipped['sub/aflw.pts']
  assert 'no .pts annotation beside lonely.jpg' in skipped['lonely.pts']
  assert info['skipped'] == {'recon': {'train': 3}}

  recs = _records(out, 'train')
  assert sorted(recs) == sorted(f'faces/{k}' for k in pts_folder['good'])
  for key, (points, shape) in pts_folder['good'].items():
    rec = recs[f'faces/{key}']
    assert rec['scheme'] == 'ibug68' and 'yaw' not in rec
    assert rec['points_visible'].all() and rec['points2d'].shape == (68, 2)
    np.testing.assert_array_equal(rec['original_size'], shape)
    # The .pts values are 1-based: the record's are 0-based.
    transform, _ = render.prnet_crop(points, R)
    np.testing.assert_allclose(rec['crop_transform'], transform, rtol=1e-5,
                               atol=1e-3)
    np.testing.assert_allclose(rec['points2d'], render.apply_crop(
        transform, np.c_[points, np.zeros(68)])[:, :2], atol=1e-3)
    np.testing.assert_allclose(rec['face_box'], np.concatenate(
        [points.min(0), points.max(0)]), atol=1e-3)
    assert records.decode_jpeg(rec['image']).shape == (R, R, 3)


def test_a_folder_another_writer_holds_is_refused(pts_folder, tmp_path):
  out = tmp_path / 'out'
  with files.FolderLock(str(out), 'dataset'):
    with pytest.raises(files.FolderInUseError,
                       match=f'in use by process {os.getpid()}'):
      landmarks2d.convert_landmarks2d('pts', pts_folder['root'], out,
                                      resolution=R, progress=False)
  assert os.listdir(out) == [files.LOCK_NAME]


def test_pts_test_fraction_splits_by_relative_path(pts_folder, tmp_path):
  root = pts_folder['root']
  outs = []
  for name in ('one', 'two'):
    out = tmp_path / name
    landmarks2d.convert_landmarks2d('pts', root, out, resolution=R,
                                    test_fraction=0.5, crop='given',
                                    progress=False)
    outs.append(out)
  splits = {source: split for split in shards.read_dataset_info(
      str(outs[0]))['kinds']['recon'] for source in _records(outs[0], split)}
  assert sorted(splits) == sorted(f'faces/{k}' for k in pts_folder['good'])
  for source, split in splits.items():
    rel = source.split('/', 1)[1] + '.pts'
    assert split == ('test' if the300wlp.in_test_split(rel, 0.5)
                     else 'train')
  # Deterministic: the same files, the same bytes.
  info = [shards.read_dataset_info(str(o))['kinds'] for o in outs]
  assert info[0] == info[1]
  for entry in info[0]['recon'].values():
    for shard in entry['shards']:
      assert ((outs[0] / shard).read_bytes() == (outs[1] / shard).read_bytes())


def test_given_transform_centres_non_square_images():
  transform = landmarks2d.given_transform(100, 200, 64)  # h, w
  k = 63 / 199
  corners = np.array([[0, 0, 1], [199, 99, 1]], float) @ transform.T
  np.testing.assert_allclose(corners[:, :2], [[0, 31.5 - 99 * k / 2],
                                              [63, 31.5 + 99 * k / 2]])
  np.testing.assert_allclose(landmarks2d.given_transform(120, 120, 64),
                             np.diag([63 / 119, 63 / 119, 1]))


def test_pts_root_errors(tmp_path):
  with pytest.raises(ValueError, match='is not a folder'):
    landmarks2d.convert_landmarks2d('pts', tmp_path / 'nowhere',
                                    tmp_path / 'o', progress=False)
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / 'notes.txt').write_text('hi')
  with pytest.raises(ValueError, match='no images or .pts files'):
    landmarks2d.convert_landmarks2d('pts', tmp_path / 'empty',
                                    tmp_path / 'o', progress=False)
  with pytest.raises(ValueError, match='test-fraction'):
    landmarks2d.convert_landmarks2d('pts', tmp_path / 'empty',
                                    tmp_path / 'o', test_fraction=1.5,
                                    progress=False)


# -------------------------------------------------------------------- CLI


def test_cli_converts_refuses_to_overwrite_and_inspects(aflw21_folder,
                                                        pts_folder,
                                                        tmp_path, capsys):
  out = tmp_path / 'cli'
  args = ['data', 'convert-landmarks2d', '--format', 'pts', '--root',
          str(pts_folder['root']), '--out', str(out), '--resolution',
          str(R), '--workers', '2', '--test-fraction', '0.3']
  assert cli.main(args) == 0
  printed = capsys.readouterr().out
  assert 'faces -> ' in printed and 'skipped (3):' in printed
  assert 'sub/aflw.pts: SampleError: ' in printed
  assert shards.check(str(out))['ok']
  total = sum(e['count'] for e in shards.read_dataset_info(
      str(out))['kinds']['recon'].values())
  assert total == len(pts_folder['good'])

  assert cli.main(args) == 2
  assert '--overwrite' in capsys.readouterr().err
  assert cli.main(args + ['--overwrite', '--workers', '1']) == 0
  capsys.readouterr()

  png = tmp_path / 'grid.png'
  assert cli.main(['data', 'inspect', str(out), '--png', str(png)]) == 0
  assert cv2.imread(str(png)) is not None

  aflw_out = tmp_path / 'cli_aflw21'
  assert cli.main(['data', 'convert-landmarks2d', '--format', 'aflw21',
                   '--root', str(aflw21_folder['root']), '--out',
                   str(aflw_out), '--resolution', '48', '--workers',
                   '1']) == 0
  printed = capsys.readouterr().out
  assert 'not a multiple of 32' in printed and 'corrupt image' in printed
  assert cli.main(['data', 'inspect', str(aflw_out), '--png',
                   str(tmp_path / 'g2.png'), '--split', 'test']) == 0
  capsys.readouterr()

  assert cli.main(['data', 'convert-landmarks2d', '--format', 'aflw21',
                   '--root', str(tmp_path / 'nowhere'), '--out',
                   str(tmp_path / 'x')]) == 2
  assert 'AFLW-21' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli.main(['data', 'convert-landmarks2d', '--format', 'csv', '--root',
              '.', '--out', str(tmp_path / 'x')])


# ----------------------------------------------------- the real AFLW-21 ----


@pytest.mark.skipif(
    not os.path.isdir(aflw21.DEFAULT_DIR),
    reason=f'the AFLW-21 development folder {aflw21.DEFAULT_DIR} is absent '
    '(it is not part of jaxface)')
def test_real_aflw21_first_20(tmp_path):
  out = tmp_path / 'real'
  conversion = landmarks2d.convert_landmarks2d(
      'aflw21', aflw21.DEFAULT_DIR, out, resolution=96, limit=20,
      progress=False)
  assert conversion.total == 20 and shards.check(str(out))['ok']
  data = aflw21.load(aflw21.DEFAULT_DIR)
  scale = 95 / 119
  for split in ('train', 'test'):
    for source, rec in _records(out, split).items():
      name = source.split('/')[1] + '.jpg'
      k = data.names.index(name)
      assert k < 20
      assert split == ('test' if aflw21.held_out(name) else 'train')
      visible = ~np.isnan(data.points[k, :, 0])
      np.testing.assert_array_equal(rec['points_visible'], visible)
      np.testing.assert_allclose(rec['points2d'][visible],
                                 data.points[k][visible] * scale,
                                 rtol=1e-5, atol=1e-4)
      np.testing.assert_allclose(rec['yaw'][0],
                                 np.deg2rad(data.yaw_deg[k]), rtol=1e-5)
  info = json.loads((out / shards.DATASET_INFO).read_text())
  assert info['scheme'] == 'aflw21' and info['limit'] == 20
