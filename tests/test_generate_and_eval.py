"""`jaxface generate` and `jaxface eval` of the first seed's networks."""

import json
import os
import shutil

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import workdirs
from jaxface import cli
from jaxface.data import records
from jaxface.data import shards
from jaxface.data import synthetic
from jaxface.face import mesh_io
from jaxface.infer import detect
from jaxface.infer import generate
from jaxface.train import facegen
from jaxface.train import trained
import shared

SCALE = 4  # the 32 x 32 crops are written as 128 x 128 photos


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  return shared.synthetic_dataset(tmp_path_factory, synthetic.SynthConfig(
      resolution=32, identities=(('train', 6), ('test', 4))),
                                  {'multiview': {'train': 12, 'test': 10},
                                   'clips': {'train': 4, 'test': 6}})


@pytest.fixture(scope='module')
def workdirs_made(data, tmp_path_factory):
  root = tmp_path_factory.mktemp('workdirs')
  return {'uv': workdirs.facegen_workdir(str(root / 'uv'), data, 'uv'),
          'voxel': workdirs.facegen_workdir(str(root / 'voxel'), data,
                                            'voxel'),
          'landmarks': workdirs.facegen_workdir(str(root / 'landmarks'), data,
                                                'uv', 'landmarks'),
          'recon': workdirs.prnet_workdir(str(root / 'recon'), 32)}


@pytest.fixture(scope='module')
def photos(data, tmp_path_factory):
  """The three views of a test record as photos, and their boxes (JSON)."""
  root = tmp_path_factory.mktemp('photos')
  record = shards.RecordReader(data, 'multiview', 'test')[0]
  paths, boxes = {}, {}
  for k, view in enumerate(generate.VIEWS):
    rgb = records.decode_jpeg(record['images'][k])
    big = cv2.resize(rgb, (32 * SCALE, 32 * SCALE),
                     interpolation=cv2.INTER_CUBIC)
    path = str(root / f'{view}.png')
    assert cv2.imwrite(path, cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    paths[view] = path
    box = detect.box_from_landmarks(record['landmarks'][k][:, :2] * SCALE)
    boxes[f'{view}.png'] = [box.tolist()]
  with open(root / 'boxes.json', 'w') as f:
    json.dump(boxes, f)
  return paths, str(root / 'boxes.json'), record


def _generate_args(paths, boxes, workdirs_made, out, head='uv', num=3):
  return ['generate', '--front', paths['front'], '--left', paths['left'],
          '--right', paths['right'], '--workdir', workdirs_made[head],
          '--recon-workdir', workdirs_made['recon'], '--out', str(out),
          '--boxes', boxes, '--num', str(num)]


@pytest.mark.parametrize('head', ['uv', 'voxel'])
def test_generate_writes_a_mesh_per_seed(photos, workdirs_made, tmp_path,
                                         head):
  paths, boxes, _ = photos
  assert cli.main(_generate_args(paths, boxes, workdirs_made, tmp_path,
                                 head)) == 0
  with open(tmp_path / 'features.json') as f:
    info = json.load(f)
  assert len(info['features']) == 31 and info['seeds'] == [0, 1, 2]
  assert all(np.isfinite(v) for v in info['features'].values())
  meshes = []
  for s in info['seeds']:
    vertices, triangles, _ = mesh_io.read_obj(tmp_path / f'face_{s}.obj')
    assert len(vertices) > 10 and len(triangles) > 10
    meshes.append(vertices)
  if head == 'uv':  # a vertex per face-region texel: same count, new shape
    assert not np.allclose(meshes[0], meshes[1])
  picture = cv2.imread(str(tmp_path / 'faces.png'))
  assert picture.shape == (128, 128 * 6, 3)


@pytest.mark.parametrize('gan', ['uv', 'landmarks'])
def test_generate_conditions_on_the_features_of_the_three_views(
    photos, workdirs_made, tmp_path, monkeypatch, gan):
  # With the views' true landmarks in place of the reconstruction network's,
  # the features written are the record's, and the generated meshes are the
  # generator's output for them and the noise seeds.
  paths, boxes, record = photos
  order = {p: k for k, p in enumerate(paths.values())}

  def true_points(reconstructor, path, boxes):
    del reconstructor, boxes
    k = order[path]
    return {'landmarks': record['landmarks'][k] * SCALE,
            'extra': record['extra_points'][k] * SCALE,
            'box': np.zeros(4), 'crop': np.zeros((32, 32, 3), np.uint8)}

  monkeypatch.setattr(generate, '_view_points', true_points)
  assert cli.main(_generate_args(paths, boxes, workdirs_made, tmp_path,
                                 gan, num=2)) == 0
  with open(tmp_path / 'features.json') as f:
    written = np.array(list(json.load(f)['features'].values()))
  batch = {'landmarks': jnp.asarray(record['landmarks'])[None],
           'extra_points': jnp.asarray(record['extra_points'])[None]}
  want = np.asarray(facegen.batch_features(batch))[0]
  np.testing.assert_allclose(written, want, rtol=1e-4, atol=1e-5)
  model = trained.load(workdirs_made[gan])
  module, variables = trained.facegen(model)
  # The 'landmarks' condition's normalised landmarks ignore the photos'
  # scale: the record's own landmarks give it.
  cond = facegen.condition_of(jnp.asarray(want)[None], batch['landmarks'],
                              model.config.facegen.condition)
  assert cond.shape[1] == (31 if gan == 'uv' else 31 + 3 * 136)
  noise = jax.random.normal(jax.random.key(1), (module.noise_dim,))[None]
  face = np.asarray(module.apply(variables, cond, noise))[0]
  vertices, _, _ = mesh_io.read_obj(tmp_path / 'face_1.obj')
  np.testing.assert_allclose(
      vertices[:, 2], face[..., 2][generate_mask(face.shape[0])], atol=1e-3)


def generate_mask(resolution):
  from jaxface.face import model as model_lib  # pylint: disable=g-import-not-at-top
  return model_lib.face_region_mask(resolution)


def test_generate_without_a_face_is_a_clear_error(workdirs_made, tmp_path,
                                                  capsys):
  gray = str(tmp_path / 'gray.png')
  cv2.imwrite(gray, np.full((96, 96, 3), 128, np.uint8))
  code = cli.main(['generate', '--front', gray, '--left', gray, '--right',
                   gray, '--workdir', workdirs_made['uv'], '--recon-workdir',
                   workdirs_made['recon'], '--out', str(tmp_path / 'out')])
  assert code == 2
  assert 'no face found in' in capsys.readouterr().err


def test_eval_of_a_facegen_workdir(data, workdirs_made, tmp_path):
  out = tmp_path / 'report.json'
  assert cli.main(['eval', '--workdir', workdirs_made['uv'], '--data', data,
                   '--out', str(out), '--batch-size', '4', '--no-progress',
                   '--samples', '2']) == 0
  with open(out) as f:
    report = json.load(f)
  assert report['count'] == 10 and report['samples_per_record'] == 2
  gen = report['generation']
  assert gen['classifier'].startswith('jaxface identity classifier')
  assert 1.0 <= gen['inception_score'] and gen['frechet_distance'] >= 0
  # The true faces fit their own features far better than a random
  # generator's faces do.
  assert (report['geometric_error_true_face']['mean'] <
          report['geometric_error']['mean'])
  assert report['geometric_error']['count'] == 20
  assert os.path.exists(tmp_path / 'report.md')
  # The classifier was saved with the workdir and is reused.
  saved = os.path.join(workdirs_made['uv'], 'eval', 'classifier')
  assert os.path.exists(os.path.join(saved, 'classifier.json'))


def test_eval_of_a_landmarks_conditioned_workdir(data, workdirs_made,
                                                tmp_path):
  out = tmp_path / 'report.json'
  assert cli.main(['eval', '--workdir', workdirs_made['landmarks'], '--data',
                   data, '--out', str(out), '--batch-size', '4',
                   '--no-progress']) == 0
  with open(out) as f:
    report = json.load(f)
  assert report['count'] == 10 and report['position_error_mm']['mean'] > 0


def test_eval_of_a_voxel_facegen_workdir(data, workdirs_made, tmp_path):
  assert cli.main(['eval', '--workdir', workdirs_made['voxel'], '--data',
                   data, '--out', str(tmp_path), '--no-progress',
                   '--limit', '4']) == 0
  with open(tmp_path / 'report.json') as f:
    report = json.load(f)
  assert report['count'] == 4 and 0 <= report['iou']['mean'] <= 1
  assert 'skipped' in report['generation']


def test_eval_of_a_progression_workdir(data, tmp_path):
  from jaxface.data import pipeline  # pylint: disable=g-import-not-at-top
  from jaxface.train import config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.apply_overrides(config_lib.load_config(
      os.path.join(workdirs.REPO, 'experiments', 'configs',
                   'progression.py')), [f'data.dir={data}', 'model.hidden=16'])
  it = pipeline.make_iterator(data, pipeline.PipelineConfig(
      kind='clips', split='train', global_batch_size=2, shuffle=False,
      training=False))
  batch = jax.tree.map(jnp.asarray, next(it))
  it.close()
  workdirs.write_workdir(str(tmp_path / 'run'), config, 32, batch)
  assert cli.main(['eval', '--workdir', str(tmp_path / 'run'), '--data', data,
                   '--out', str(tmp_path / 'eval'), '--no-progress',
                   '--batch-size', '4']) == 0
  with open(tmp_path / 'eval' / 'report.json') as f:
    report = json.load(f)
  assert report['count'] == 6 and 0 <= report['accuracy'] <= 1
  assert sum(r['count'] for r in report['per_kind'].values()) == 6
  assert report['skipped_records'] == 0
  with open(tmp_path / 'eval' / 'report.md') as f:
    assert '6 records. 0 unreadable record(s) skipped.' in f.read()


def test_eval_refuses_a_dataset_of_another_resolution(workdirs_made,
                                                      tmp_path, capsys):
  other = str(tmp_path / 'data16')
  synthetic.synthesize(other, synthetic.SynthConfig(
      resolution=16, identities=(('train', 2), ('test', 2))),
                       {'multiview': {'train': 2, 'test': 2}}, progress=False)
  assert cli.main(['eval', '--workdir', workdirs_made['uv'], '--data', other,
                   '--no-progress']) == 2
  assert 'trained at 32x32' in capsys.readouterr().err
  assert cli.main(['eval', '--workdir', workdirs_made['uv'], '--data', other,
                   '--no-progress', '--flip-average']) == 2
  assert 'for reconstruction networks' in capsys.readouterr().err


def test_eval_refuses_canonical_maps_of_another_uv_layout(data, workdirs_made,
                                                          tmp_path):
  from jaxface.eval import gen_eval  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'uv')
  shutil.copytree(workdirs_made['uv'], workdir)
  model = trained.load(workdir)
  trained.write_model_info(workdir, model.task, model.resolution,
                           workdirs.made_up_layout())
  with pytest.raises(ValueError, match="in the 'procedural' UV layout; the "
                     "generator .* makes maps in the 'made_up' layout"):
    gen_eval.evaluate_facegen(workdir, data, progress=False)


def test_generate_checks_out_and_boxes(photos, workdirs_made, tmp_path,
                                       capsys):
  paths, boxes, _ = photos
  (tmp_path / 'file').write_text('a file')
  assert cli.main(_generate_args(paths, boxes, workdirs_made,
                                 tmp_path / 'file')) == 2
  assert 'is a file, not a folder' in capsys.readouterr().err
  # A link planted in --out is refused before any work, not written through.
  outside = tmp_path / 'outside.json'
  outside.write_text('precious')
  out = tmp_path / 'out'
  out.mkdir()
  os.symlink(outside, out / 'features.json')
  assert cli.main(_generate_args(paths, boxes, workdirs_made, out)) == 2
  assert 'is a link' in capsys.readouterr().err
  assert outside.read_text() == 'precious' and os.listdir(out) == [
      'features.json']
  # Boxes outside the photos are not used.
  far = tmp_path / 'far.json'
  far.write_text(json.dumps({os.path.basename(p): [[1000, 1000, 1100, 1100]]
                             for p in paths.values()}))
  assert cli.main(_generate_args(paths, str(far), workdirs_made,
                                 tmp_path / 'far')) == 2
  assert 'no usable box for' in capsys.readouterr().err


@pytest.mark.parametrize('out', ['file', 'file/report.json', 'eval.json'])
def test_eval_checks_out_before_measuring(data, workdirs_made, tmp_path,
                                         monkeypatch, capsys, out):
  from jaxface.eval import gen_eval  # pylint: disable=g-import-not-at-top

  def measure(*args, **kwargs):
    raise AssertionError('measured before checking --out')

  monkeypatch.setattr(gen_eval, 'evaluate_facegen', measure)
  (tmp_path / 'file').write_text('a file')
  (tmp_path / 'eval.json').mkdir()
  assert cli.main(['eval', '--workdir', workdirs_made['uv'], '--data', data,
                   '--out', str(tmp_path / out), '--no-progress']) == 2
  err = capsys.readouterr().err
  assert err.startswith(f'jaxface: error: --out {tmp_path / out}')
  assert ('is a folder' if out == 'eval.json' else 'is a file') in err
