"""Bad command-line inputs give one `jaxface: error:` line and exit 2, and
are caught before any work: `data inspect --png`, `train` and `quickstart`.
(`reconstruct`, `generate` and `eval` are tested with their other tests.)"""

import os

import pytest

from jaxface import cli
from jaxface import files
from jaxface.data import synthetic
import shared
import workdirs


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  return shared.synthetic_dataset(tmp_path_factory, synthetic.SynthConfig(
      resolution=32, identities=(('train', 2), ('test', 1))),
                                  {'recon': {'train': 2, 'test': 1}})


@pytest.fixture
def no_rendering(monkeypatch):
  """Makes rendering a dataset fail the test."""

  def synthesize(*args, **kwargs):
    raise AssertionError('rendered before checking the arguments')

  monkeypatch.setattr(synthetic, 'synthesize', synthesize)


def _error(capsys) -> str:
  err = capsys.readouterr().err
  assert err.startswith('jaxface: error: ') and err.count('\n') == 1, err
  return err


@pytest.mark.parametrize('name, message', [
    ('folder', 'is a folder; give a file name ending in .png'),
    ('grid.jpg', 'must be a file name ending in .png'),
    ('grid', 'must be a file name ending in .png'),
    ('file/grid.png', 'its folder'),
])
def test_inspect_png_must_name_a_png_file(dataset, tmp_path, capsys, name,
                                          message):
  (tmp_path / 'folder').mkdir()
  (tmp_path / 'file').write_text('a file')
  png = str(tmp_path / name)
  assert cli.main(['data', 'inspect', dataset, '--png', png]) == 2
  err = _error(capsys)
  assert f'--png {png}' in err and message in err


def test_train_workdir_that_is_a_file(dataset, tmp_path, capsys):
  workdir = tmp_path / 'run'
  workdir.write_text('a file')
  assert cli.main(['train', '--config', workdirs.QUICK, '--workdir',
                   str(workdir), f'--config.data.dir={dataset}']) == 2
  assert (f'--workdir {workdir} is a file, not a folder') in _error(capsys)
  assert workdir.read_text() == 'a file'


def test_quickstart_checks_before_rendering(tmp_path, capsys, no_rendering):
  workdir = tmp_path / 'qs'
  assert cli.main(['quickstart', '--workdir', str(workdir), '--resolution',
                   '63', '--workers', '1']) == 2
  assert '--resolution must be a positive multiple of 32' in _error(capsys)
  assert not workdir.exists()
  workdir.write_text('a file')
  assert cli.main(['quickstart', '--workdir', str(workdir), '--workers',
                   '1']) == 2
  assert f'--workdir {workdir} is a file, not a folder' in _error(capsys)


def test_quickstart_data_is_reused_only_when_it_is_the_current_recipe(
    tmp_path, monkeypatch, capsys):
  from jaxface.train import quickstart  # pylint: disable=g-import-not-at-top
  from jaxface.data import shards  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(quickstart, 'QUICKSTART_COUNTS',
                      {'recon': {'train': 3, 'test': 1}})
  monkeypatch.setattr(quickstart, 'QUICKSTART_IDENTITIES',
                      (('train', 2), ('test', 1)))
  data = str(tmp_path / 'data')
  quickstart.ensure_data(data, 32, workers=1)
  assert 'rendering' in capsys.readouterr().out
  quickstart.ensure_data(data, 32, workers=1)
  assert 'using the synthetic dataset' in capsys.readouterr().out
  # A quickstart dataset of an older recipe (other counts) is made again.
  monkeypatch.setattr(quickstart, 'QUICKSTART_COUNTS',
                      {'recon': {'train': 4, 'test': 1}})
  quickstart.ensure_data(data, 32, workers=1)
  assert 'rendering' in capsys.readouterr().out
  info = shards.read_dataset_info(data)
  assert info['kinds']['recon']['train']['count'] == 4
  monkeypatch.setattr(quickstart, 'QUICKSTART_IDENTITIES',
                      (('train', 3), ('test', 1)))
  quickstart.ensure_data(data, 32, workers=1)
  assert 'rendering' in capsys.readouterr().out
  assert shards.read_dataset_info(data)['identities'] == {'train': 3,
                                                          'test': 1}
  # Data of an older renderer is made again.
  from jaxface.data import synthetic  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(synthetic, 'GENERATOR_VERSION',
                      synthetic.GENERATOR_VERSION + 1)
  quickstart.ensure_data(data, 32, workers=1)
  assert 'rendering' in capsys.readouterr().out
  assert (shards.read_dataset_info(data)['generator_version']
          == synthetic.GENERATOR_VERSION)


def test_check_output_folder(tmp_path):
  files.check_output_folder(str(tmp_path / 'new' / 'deeper'), '--out')
  assert not (tmp_path / 'new').exists()  # nothing is made
  (tmp_path / 'file').write_text('a file')
  with pytest.raises(NotADirectoryError, match='is a file, not a folder'):
    files.check_output_folder(str(tmp_path / 'file'), '--out')
  with pytest.raises(NotADirectoryError, match='cannot be made: .* is a file'):
    files.check_output_folder(str(tmp_path / 'file' / 'x'), '--out')
  os.symlink(tmp_path / 'gone', tmp_path / 'dangling')
  with pytest.raises(NotADirectoryError, match='is not a folder'):
    files.check_output_folder(str(tmp_path / 'dangling'), '--out')


def test_training_error_is_one_line(monkeypatch, tmp_path, capsys):
  from jaxface.train import loop  # pylint: disable=g-import-not-at-top

  def train(*args, **kwargs):
    raise loop.TrainingError('step 4: the loss is nan; stopping')

  monkeypatch.setattr(loop, 'run', train)
  assert cli.main(['train', '--config', workdirs.QUICK, '--workdir',
                   str(tmp_path / 'run')]) == 2
  assert 'step 4: the loss is nan' in _error(capsys)


def test_other_exceptions_keep_their_traceback(monkeypatch, tmp_path):
  def synthesize(*args, **kwargs):
    raise KeyError('a bug, not a bad input')

  monkeypatch.setattr(synthetic, 'synthesize', synthesize)
  with pytest.raises(KeyError, match='a bug'):
    cli.main(['data', 'synth', '--out', str(tmp_path / 'd'), '--kinds',
              'recon', '--num-train', '1', '--num-test', '0'])


def test_making_data_does_not_import_jax(tmp_path):
  # Importing JAX costs a second or more per process; making synthetic data
  # does not need it (nor do its spawned workers, which import the same).
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ('import sys; from jaxface import cli; '
          f'status = cli.main(["data", "synth", "--out", {str(tmp_path / "d")!r}, '
          '"--kinds", "recon", "--resolution", "32", "--num-train", "2", '
          '"--num-test", "0", "--workers", "1"]); '
          'print(status, "jax" in sys.modules, "flax" in sys.modules)')
  out = subprocess.run([sys.executable, '-c', code], check=True,
                       capture_output=True, text=True).stdout
  assert out.split()[-3:] == ['0', 'False', 'False'], out


def test_module_commands_load_their_options_only_when_run(capsys):
  with pytest.raises(SystemExit) as info:
    cli.main(['--help'])
  assert info.value.code == 0
  listing = capsys.readouterr().out
  for name, _, _ in cli.MODULE_COMMANDS:
    assert name in listing
  with pytest.raises(SystemExit) as info:
    cli.main(['bench', '--help'])
  assert info.value.code == 0
  assert '--infer-batch' in capsys.readouterr().out
  # Another command's parser has bench's name but not its options.
  parser = cli.build_parser('eval')
  with pytest.raises(SystemExit):
    parser.parse_args(['bench', '--infer-batch', '1'])
  assert 'unrecognized arguments: --infer-batch' in capsys.readouterr().err
