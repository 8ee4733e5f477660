"""The synthetic dataset: determinism, the CLI, and bad inputs."""

import json
import os

import numpy as np
import pytest

from jaxface import cli
from jaxface import files
from jaxface.data import records
from jaxface.data import shards
from jaxface.data import synthetic
from jaxface.face import model as model_lib

CONFIG = synthetic.SynthConfig(resolution=32, identities=(('train', 5),
                                                          ('test', 3)),
                               clip_length=4)
COUNTS = {'recon': {'train': 5, 'test': 2}, 'multiview': {'train': 2},
          'clips': {'train': 3}}


def _all_bytes(directory):
  info = shards.read_dataset_info(directory)
  out = {}
  for kind, splits in info['kinds'].items():
    for split in splits:
      with shards.RecordReader(directory, kind, split) as reader:
        out[kind, split] = [reader.read_bytes(i) for i in range(len(reader))]
  return out


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('synth') / 'data')
  synthetic.synthesize(out, CONFIG, COUNTS, shard_size=3, progress=False)
  return out


def test_dataset_json_and_counts(dataset):
  info = shards.read_dataset_info(dataset)
  assert info['source'] == 'synthetic' and info['seed'] == 0
  assert info['resolution'] == 32
  assert info['kinds']['recon']['train']['count'] == 5
  assert len(info['kinds']['recon']['train']['shards']) == 2  # 3 + 2
  assert info['kinds']['clips']['train']['count'] == 3
  report = shards.check(dataset)
  assert report['ok'] and not report['problems']
  assert not [f for f in os.listdir(dataset)
              if f.startswith('.') and f != files.LOCK_NAME]


def test_same_seed_gives_byte_identical_records_with_any_workers(
    dataset, tmp_path):
  again = str(tmp_path / 'again')
  synthetic.synthesize(again, CONFIG, COUNTS, shard_size=2, workers=2,
                       progress=False)
  assert _all_bytes(again) == _all_bytes(dataset)
  other = str(tmp_path / 'other_seed')
  synthetic.synthesize(other, synthetic.SynthConfig(
      resolution=32, seed=1, identities=CONFIG.identities, clip_length=4),
                       {'recon': {'train': 2}}, progress=False)
  assert (_all_bytes(other)['recon', 'train'][0] !=
          _all_bytes(dataset)['recon', 'train'][0])


def test_records_have_the_promised_contents(dataset):
  with shards.RecordReader(dataset, 'recon', 'test') as reader:
    rec = reader[0]
  assert records.decode_jpeg(rec['image']).shape == (32, 32, 3)
  assert rec['identity'] >= 5  # test identities come after train ones
  with shards.RecordReader(dataset, 'multiview', 'train') as reader:
    mv = reader[0]
  yaws = np.rad2deg(mv['poses'][:, 1])
  assert abs(yaws[0]) <= 10 and yaws[1] < -50 and yaws[2] > 50
  with shards.RecordReader(dataset, 'clips', 'train') as reader:
    clips = [reader[i] for i in range(len(reader))]
  for clip in clips:
    assert len(clip['frames']) == 4
    assert (clip['label'] == 1) == (clip['corruption'] == 0)
    if records.CORRUPTIONS[clip['corruption']] == 'identity_switch':
      assert len(set(clip['identities'].tolist())) == 2
    else:
      assert len(set(clip['identities'].tolist())) == 1


def _write_with_garbage(directory):
  """A dataset whose recon/train shard holds 2 good records and garbage."""
  os.makedirs(directory)
  gen = synthetic.Generator(CONFIG)
  name = shards.shard_name('recon', 'train', 0, 1)
  with shards.ShardWriter(os.path.join(directory, name)) as writer:
    writer.write(records.serialize('recon', gen.recon('train', 0)))
    writer.write(b'\x00garbage, not a record')
    writer.write(records.serialize('recon', gen.recon('train', 1)))
  shards.write_dataset_info(directory, {
      'source': 'test', 'seed': 0, 'resolution': 32,
      'kinds': {'recon': {'train': {'count': 3, 'shards': [name]}}}})


def test_inspect_reports_a_corrupted_record_and_draws_the_rest(tmp_path,
                                                              capsys):
  data = str(tmp_path / 'bad')
  _write_with_garbage(data)
  png = str(tmp_path / 'grid.png')
  code = cli.main(['data', 'inspect', data, '--png', png])
  out = capsys.readouterr().out
  assert code == 1  # problems found: non-zero, but no crash
  assert '1 problem' in out and 'record 1' in out and 'corrupted' in out
  assert 'checked 3, bad 1' in out
  assert os.path.getsize(png) > 0


def test_inspect_of_a_good_dataset(dataset, tmp_path, capsys):
  png = str(tmp_path / 'clips.png')
  assert cli.main(['data', 'inspect', dataset, '--kind', 'clips',
                   '--png', png]) == 0
  out = capsys.readouterr().out
  assert 'recon/train: 5 records in 2 shard(s); checked 5, bad 0' in out
  assert 'multiview record (schema version 1)' in out
  assert os.path.getsize(png) > 0


def test_cli_synth_and_refusal_to_overwrite(tmp_path, capsys):
  out = str(tmp_path / 'cli')
  args = ['data', 'synth', '--out', out, '--num-train', '2', '--num-test',
          '1', '--resolution', '24', '--workers', '1']
  assert cli.main(args) == 0
  before = _all_bytes(out)
  assert cli.main(args) == 2
  assert '--overwrite' in capsys.readouterr().err
  assert _all_bytes(out) == before  # nothing lost
  assert cli.main(args + ['--overwrite', '--seed', '3']) == 0
  assert _all_bytes(out) != before
  names = os.listdir(out)
  assert sorted(names) == [files.LOCK_NAME, 'dataset.json', shards.shard_name(
      'recon', 'test', 0, 1), shards.shard_name('recon', 'train', 0, 1)]


@pytest.mark.parametrize('scale_jitter', [None, '0'])
def test_cli_crop_jitter_zero_centres_the_crops(tmp_path, scale_jitter):
  out = str(tmp_path / 'centred')
  args = ['data', 'synth', '--out', out, '--num-train', '6', '--num-test',
          '1', '--resolution', '32', '--workers', '1', '--crop-jitter', '0']
  if scale_jitter is not None:
    args += ['--crop-scale-jitter', scale_jitter]
  assert cli.main(args) == 0
  info = shards.read_dataset_info(out)
  assert info['crop_jitter'] == 0.0
  assert info['crop_scale_jitter'] == (0.1 if scale_jitter is None else 0.0)
  assert info['roll_deg'] == [12.0, 40.0]  # the default photo roll
  assert info['shape_mean'] == dict(model_lib.ADULT_SHAPE_MEAN) != {}
  assert info['generator_version'] == synthetic.GENERATOR_VERSION
  sides = []
  with shards.RecordReader(out, 'recon', 'train') as reader:
    for k in range(len(reader)):
      xy = np.asarray(reader[k]['landmarks'])[:, :2]
      centre = (xy.min(0) + xy.max(0)) / 2
      # PRNet's crop centres the landmarks' box: pixel (R - 1) / 2.
      np.testing.assert_allclose(centre, 15.5, atol=1e-3)
      sides.append(np.sum(xy.max(0) - xy.min(0)) / 2)
  if scale_jitter is None:  # sides of 31 / (1.5 U(0.9, 1.1)) pixels
    assert np.ptp(sides) > 0.1
    assert all(31 / 1.65 - 1e-3 < s < 31 / 1.35 + 1e-3 for s in sides)
  else:  # the crop's side is 1.5 x the box's mean side: (R - 1) / 1.5
    np.testing.assert_allclose(sides, 31 / 1.5, atol=1e-3)


def test_cli_roll_deg_and_shape_mean_reach_the_renderer(tmp_path):
  out = str(tmp_path / 'v2')
  assert cli.main(['data', 'synth', '--out', out, '--num-train', '2',
                   '--num-test', '0', '--resolution', '32', '--workers', '1',
                   '--roll-deg', '7,30', '--shape-mean', 'none']) == 0
  info = shards.read_dataset_info(out)
  assert info['roll_deg'] == [7.0, 30.0]
  assert info['shape_mean'] == {}
  # The records hold the identities drawn around the face model's mean.
  gen = synthetic.Generator(synthetic.SynthConfig(
      resolution=32, shape_mean=(), roll_deg=(7.0, 30.0)))
  with shards.RecordReader(out, 'recon', 'train') as reader:
    record = reader[0]
  expected = gen.make('recon', 'train', 0)
  np.testing.assert_array_equal(record['shape_coeffs'],
                                expected['shape_coeffs'])
  out = str(tmp_path / 'custom')
  assert cli.main(['data', 'synth', '--out', out, '--num-train', '1',
                   '--num-test', '0', '--resolution', '32', '--workers', '1',
                   '--shape-mean', 'chin=1.5,nose_length=-1']) == 0
  assert shards.read_dataset_info(out)['shape_mean'] == {
      'chin': 1.5, 'nose_length': -1.0}


@pytest.mark.parametrize('bad, message', [
    (['--num-train', '-1'], '--num-train'),
    (['--resolution', '8'], '--resolution'),
    (['--workers', '0'], '--workers'),
    (['--clip-length', '1'], '--clip-length'),
    (['--crop-jitter', '0.5'], '--crop-jitter'),
    (['--crop-jitter', 'nan'], '--crop-jitter'),
    (['--crop-scale-jitter', '0.5'], '--crop-scale-jitter'),
    (['--crop-scale-jitter', 'nan'], '--crop-scale-jitter'),
    (['--roll-deg', '12'], '--roll-deg'),
    (['--roll-deg', 'a,b'], '--roll-deg'),
    (['--roll-deg', '60,40'], '--roll-deg'),
    (['--roll-deg', 'nan,40'], '--roll-deg'),
    (['--shape-mean', 'adults'], '--shape-mean'),
    (['--shape-mean', 'face_width'], '--shape-mean'),
    (['--shape-mean', 'ear_size=1'], 'unknown shape component'),
    (['--shape-mean', 'chin=nan'], '--shape-mean'),
    (['--shape-mean', 'chin=40'], 'standard deviations'),
])
def test_cli_rejects_bad_arguments(tmp_path, capsys, bad, message):
  code = cli.main(['data', 'synth', '--out', str(tmp_path / 'x')] + bad)
  assert code == 2
  assert message in capsys.readouterr().err
  assert not os.path.exists(tmp_path / 'x' / 'dataset.json')


def test_inspect_of_a_missing_or_foreign_directory(tmp_path, capsys):
  assert cli.main(['data', 'inspect', str(tmp_path / 'nope')]) == 2
  assert 'does not exist' in capsys.readouterr().err
  (tmp_path / 'dataset.json').write_text(json.dumps({'format': 'other'}))
  assert cli.main(['data', 'inspect', str(tmp_path)]) == 2
  assert 'not a jaxface records dataset' in capsys.readouterr().err


def test_geometric_features_of_a_rendered_multiview_face(dataset):
  from jaxface.face import features  # pylint: disable=g-import-not-at-top
  with shards.RecordReader(dataset, 'multiview', 'train') as reader:
    mv = reader[0]
  views = []
  for k in range(3):
    views += [mv['landmarks'][k], mv['extra_points'][k]]
  named = features.geometric_feature_dict(*views)
  vec = np.asarray(features.geometric_features(*views))
  assert vec.shape == (features.NUM_FEATURES,) and np.all(np.isfinite(vec))
  # Every region of every view has an area (none is degenerate on a face).
  for name in features.FEATURE_NAMES:
    assert float(named[name]) > 1e-4, name
  # Left/right symmetry: mirrored central distances agree within 25 % (the
  # ears are not compared: the front view's up to 10 degrees of yaw
  # foreshortens one ear's 2D distance far more than the other's).
  ratio = float(named['eye_mouth_left']) / float(named['eye_mouth_right'])
  assert 0.75 < ratio < 1.33, ratio


def test_quickstart_never_replaces_a_dataset_it_did_not_make(tmp_path,
                                                             capsys):
  data = tmp_path / 'data'
  synthetic.synthesize(str(data), CONFIG, {'recon': {'train': 1}},
                       progress=False)
  before = _all_bytes(str(data))
  assert cli.main(['quickstart', '--workdir', str(tmp_path),
                   '--workers', '1']) == 2
  assert 'did not make' in capsys.readouterr().err
  assert _all_bytes(str(data)) == before


def _corner_roughness(image: np.ndarray) -> float:
  """Mean |second difference| of the top-left 8x8 corner, 0-255 units."""
  corner = image[:8, :8].astype(np.float64)
  return float(np.abs(np.diff(corner, 2, axis=0)).mean() +
               np.abs(np.diff(corner, 2, axis=1)).mean())


def test_each_part_of_the_renderer_can_be_left_out():
  for part in synthetic.REALISM_PARTS:
    generator = synthetic.Generator(synthetic.SynthConfig(
        resolution=32, leave_out=(part,)))
    a, b = generator.recon('train', 3), generator.recon('train', 3)
    assert a['image'] == b['image'], part  # deterministic per seed
    assert np.isfinite(a['position_map']).all() and a['landmarks'].shape == (
        68, 3), part
  # Without scene backgrounds, camera noise, occluders and dressing, the
  # crop's corner is smooth colour noise; with them it is not.
  bare = synthetic.Generator(synthetic.SynthConfig(
      resolution=64, leave_out=('background', 'camera', 'occluders',
                                'dressing')))
  smooth = [_corner_roughness(records.decode_jpeg(bare.recon('train', i)[
      'image'])) for i in range(6)]
  rough = [_corner_roughness(records.decode_jpeg(synthetic.Generator(
      synthetic.SynthConfig(resolution=64)).recon('train', i)['image']))
           for i in range(6)]
  assert np.median(smooth) < 0.5 * np.median(rough), (smooth, rough)
  # From JSON (a list), as a dataset's or a model's spec stores it.
  assert synthetic.SynthConfig(leave_out=['pose']) == synthetic.SynthConfig(
      leave_out=('pose',))
  hash(synthetic.SynthConfig(leave_out=['pose']))
  with pytest.raises(ValueError, match=r"unknown part\(s\) \['hair'\]"):
    synthetic.SynthConfig(leave_out=('hair',))


def test_cli_leave_out_is_recorded_and_checked(tmp_path, capsys):
  out = str(tmp_path / 'bare')
  assert cli.main(['data', 'synth', '--out', out, '--num-train', '2',
                   '--num-test', '1', '--resolution', '32', '--workers', '1',
                   '--leave-out', 'light, pose']) == 0
  assert shards.read_dataset_info(out)['leave_out'] == ['light', 'pose']
  assert cli.main(['data', 'synth', '--out', str(tmp_path / 'x'),
                   '--leave-out', 'shadows']) == 2
  assert "unknown part(s) ['shadows']" in capsys.readouterr().err
