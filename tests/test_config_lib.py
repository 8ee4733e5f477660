"""Tests of jaxface.train.config_lib: config files, command-line overrides."""

from __future__ import annotations

import sys
import textwrap

import ml_collections
from ml_collections import config_dict
import pytest

from jaxface import cli
from jaxface.train import config_lib
from jaxface.train.config_lib import ConfigError


def _config():
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.optimizer = ml_collections.ConfigDict(
      {'name': 'adam', 'lr': 1e-3, 'b1': 0.9})
  config.model = ml_collections.ConfigDict(
      {'width': 1.0, 'head': 'uv', 'depth': 3, 'blocks': (2, 2),
       'ratios': (0.5, 1.5), 'scales': [0.5, 1.0]})
  config.data = ml_collections.ConfigDict(
      {'augment': True, 'limit': None,
       'batch': config_dict.placeholder(int)})
  return config


def test_overrides_parse_by_field_type():
  config = _config()
  new = config_lib.apply_overrides(config, [
      'optimizer.lr=1e-4', 'model.width=0.5', 'data.augment=false',
      'model.head=voxel', 'seed=42', 'model.blocks=(3, 4)',
      'model.ratios=0.8,1.0', 'data.batch=32'])
  assert new.optimizer.lr == 1e-4 and isinstance(new.optimizer.lr, float)
  assert new.model.width == 0.5
  assert new.data.augment is False
  assert new.model.head == 'voxel'
  assert new.seed == 42 and isinstance(new.seed, int)
  assert new.model.blocks == (3, 4)
  assert new.model.ratios == (0.8, 1.0)
  assert new.data.batch == 32


def test_input_config_is_not_changed():
  config = _config()
  before = config.to_dict()
  new = config_lib.apply_overrides(config, ['optimizer.lr=0.5', 'seed=1'])
  assert config.to_dict() == before
  assert new is not config and new.optimizer is not config.optimizer
  assert new.optimizer.lr == 0.5


def test_int_literal_for_float_field_stays_float():
  new = config_lib.apply_overrides(_config(), ['model.width=2'])
  assert new.model.width == 2.0 and isinstance(new.model.width, float)


def test_string_values_are_kept_verbatim():
  new = config_lib.apply_overrides(
      _config(), ['model.head= a=b, c ', 'optimizer.name='])
  assert new.model.head == ' a=b, c '
  assert new.optimizer.name == ''


def test_last_override_wins_and_references_follow():
  config = _config()
  config.optimizer.peak = config.optimizer.get_ref('lr')
  new = config_lib.apply_overrides(
      config, ['optimizer.lr=0.1', 'optimizer.lr=0.2', 'model.blocks=(5, 6)',
               'model.blocks=7,8'])
  assert new.optimizer.lr == 0.2
  assert new.optimizer.peak == 0.2
  assert config.optimizer.peak == 1e-3
  assert new.model.blocks == (7, 8)  # not (5, 6, 7, 8)


def test_frozen_config_gives_frozen_config():
  frozen = ml_collections.FrozenConfigDict(_config())
  new = config_lib.apply_overrides(frozen, ['seed=3'])
  assert isinstance(new, ml_collections.FrozenConfigDict)
  assert new.seed == 3 and frozen.seed == 0


def test_no_overrides_gives_an_equal_copy():
  config = _config()
  new = config_lib.apply_overrides(config, [])
  assert new.to_dict() == config.to_dict() and new is not config


@pytest.mark.parametrize('override, match', [
    ('model.widht=0.5', r"""no key 'model.widht' in the config: 'widht'; """
     r'Did you mean "width" instead of "widht"\?$'),
    ('modle.width=0.5', r"""no key 'modle.width' in the config: 'modle'; """
     r'Did you mean "model" instead of "modle"\?$'),
    ('optimizer.zzzzzz=1', r"^no key 'optimizer.zzzzzz' in the config: "
     r"'zzzzzz'$"),
    ('optimizer.lr.x=1', r"no key 'optimizer.lr.x' in the config: .*float"),
])
def test_missing_key_names_it_and_suggests(override, match):
  with pytest.raises(ConfigError, match=match):
    config_lib.apply_overrides(_config(), [override])


@pytest.mark.parametrize('override, match', [
    ('seed=1.5', r"cannot set 'seed' to '1.5': .*int.*'1.5'"),
    ('seed=abc', r"cannot set 'seed' to 'abc': .*int.*'abc'"),
    ('optimizer.lr=fast', r"cannot set 'optimizer.lr' to 'fast': .*float"),
    ('data.augment=yes', r"cannot set 'data.augment' to 'yes': .*boolean"),
    ('model.blocks=(1, 2', r"cannot set 'model.blocks' to '\(1, 2': "),
    ('model=3', r"cannot set 'model' to '3': .*ConfigDict"),
    ('data.limit=3', r"cannot set 'data.limit' to '3': .*NoneType.* not "
     r'supported for overriding\.$'),
    ('model.scales=1,2', r"cannot set 'model.scales' to '1,2': .*list"),
])
def test_value_that_does_not_parse_names_key_value_and_type(override, match):
  with pytest.raises(ConfigError, match=match) as e:
    config_lib.apply_overrides(_config(), [override])
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('overrides', [['optimizer.lr'], 'seed=1'])
def test_malformed_override(overrides):
  with pytest.raises(ConfigError, match=r'malformed override .*expected '
                     'KEY=VALUE'):
    config_lib.apply_overrides(_config(), overrides)


def test_config_error_is_a_value_error():
  assert issubclass(ConfigError, ValueError)


# load_config.


def _write(tmp_path, text, name='exp.py'):
  path = tmp_path / name
  path.write_text(textwrap.dedent(text))
  return str(path)


def test_load_config(tmp_path):
  path = _write(tmp_path, """
      import ml_collections

      def get_config():
        config = ml_collections.ConfigDict()
        config.lr = 0.1
        config.model = ml_collections.ConfigDict({'width': 0.5})
        return config
      """)
  modules = set(sys.modules)
  config = config_lib.load_config(path)
  assert config.lr == 0.1 and config.model.width == 0.5
  assert set(sys.modules) == modules  # The config module is not left behind.


def test_load_config_with_dataclass_and_helper_import(tmp_path):
  path = _write(tmp_path, """
      from __future__ import annotations
      import dataclasses
      import ml_collections
      from jaxface.train import optim

      @dataclasses.dataclass
      class Size:
        width: float = 1.0

      def get_config():
        config = ml_collections.ConfigDict()
        config.optimizer = optim.default_optimizer_config()
        config.width = Size().width
        return config
      """)
  config = config_lib.load_config(path)
  assert config.optimizer.name == 'adam' and config.width == 1.0


def test_load_config_missing_file(tmp_path):
  path = str(tmp_path / 'nope.py')
  with pytest.raises(ConfigError, match=f"config file '{path}' does not "
                     'exist'):
    config_lib.load_config(path)
  with pytest.raises(ConfigError, match='does not exist'):
    config_lib.load_config(str(tmp_path))  # a directory


def test_load_config_without_get_config_after_another_file(tmp_path):
  config_lib.load_config(_write(tmp_path, """
      import ml_collections

      def get_config():
        return ml_collections.ConfigDict({'lr': 0.1})
      """, name='first.py'))
  path = _write(tmp_path, 'CONFIG = 1\n')
  with pytest.raises(ConfigError, match=r"'.*exp.py' failed to load: "
                     r'AttributeError: .*get_config'):
    config_lib.load_config(path)


def test_load_config_get_config_not_callable(tmp_path):
  path = _write(tmp_path, 'get_config = 3\n')
  with pytest.raises(ConfigError, match="TypeError: 'int' object is not "
                     'callable'):
    config_lib.load_config(path)


@pytest.mark.parametrize('error', ["KeyError('no such preset')",
                                   "ValueError('no such preset')"])
def test_load_config_get_config_raises(tmp_path, error):
  path = _write(tmp_path, f"""
      def get_config():
        raise {error}
      """)
  kind = error.split('(')[0]
  with pytest.raises(ConfigError,
                     match=rf"^config file '.*exp.py' failed to load: "
                     rf'{kind}: no such preset$') as e:
    config_lib.load_config(path)
  assert type(e.value.__cause__).__name__ == kind


@pytest.mark.parametrize('text, match', [
    ('import no_such_module_jaxface\n', 'ModuleNotFoundError'),
    ('def get_config(:\n', 'SyntaxError'),
    ('data:\n  lr: 0.1\n', 'SyntaxError'),  # not python: YAML
])
def test_load_config_import_fails(tmp_path, text, match):
  path = _write(tmp_path, text)
  with pytest.raises(ConfigError, match=rf"'.*exp.py' failed to load: "
                     rf'{match}'):
    config_lib.load_config(path)


def test_load_config_wrong_return_type(tmp_path):
  path = _write(tmp_path, """
      def get_config():
        return {'lr': 0.1}
      """)
  with pytest.raises(ConfigError, match=r'returned a dict, not an '
                     r'ml_collections.ConfigDict'):
    config_lib.load_config(path)


# The command line.


def test_command_line_end_to_end(tmp_path):
  path = _write(tmp_path, """
      import ml_collections

      def get_config():
        return ml_collections.ConfigDict(
            {'optimizer': {'lr': 1e-3}, 'model': {'width': 1.0, 'head': 'uv'},
             'data': {'augment': True}, 'seed': 0})
      """)
  parser = cli.build_parser()
  args, extra = parser.parse_known_args([
      'train', '--config', path, '--workdir', str(tmp_path),
      '--config.optimizer.lr=1e-4', '--config.model.width', '0.5',
      '--config.data.augment', 'false', '--config.model.head=a=b',
      '--config.seed', '-3'])
  overrides = cli._config_overrides(parser, extra)
  assert overrides == ['optimizer.lr=1e-4', 'model.width=0.5',
                       'data.augment=false', 'model.head=a=b', 'seed=-3']
  config = config_lib.apply_overrides(config_lib.load_config(args.config),
                                      overrides)
  assert config.to_dict() == {
      'optimizer': {'lr': 1e-4}, 'model': {'width': 0.5, 'head': 'a=b'},
      'data': {'augment': False}, 'seed': -3}


@pytest.mark.parametrize('extra, message', [
    (['--config.seed'], '--config.seed needs a value'),
    (['--workdirx=/tmp'], "unrecognized argument '--workdirx=/tmp'"),
    (['a.py'], "unrecognized argument 'a.py'"),
])
def test_command_line_errors(capsys, extra, message):
  with pytest.raises(SystemExit) as e:
    cli._config_overrides(cli.build_parser(), extra)
  assert e.value.code == 2 and message in capsys.readouterr().err


def test_train_refuses_a_bad_override_in_one_line(tmp_path, capsys):
  assert cli.main([
      'train', '--config', _write(tmp_path, """
          import ml_collections

          def get_config():
            return ml_collections.ConfigDict({'optimizer': {'lr': 1e-3}})
          """), '--workdir', str(tmp_path / 'w'),
      '--config.optimiser.lr=1']) == 2
  err = capsys.readouterr().err
  assert err.startswith("jaxface: error: no key 'optimiser.lr'") and \
      err.count('\n') == 1, err
  assert 'Did you mean "optimizer"' in err


def test_a_stored_config_gets_the_keys_added_since_with_their_old_values():
  stored = ml_collections.ConfigDict(
      {'model': {'width': 0.25}, 'loss': {'z_weight': 0.1},
       'train': {'num_steps': 10}})
  filled = config_lib.with_added_keys(stored)
  assert filled.model.head == 'prnet' and filled.model.coords is False
  assert filled.model.global_dim == 0
  assert filled.loss.z_weight == 0.1  # present: kept
  assert filled.loss.mask == 'prnet'
  assert tuple(filled.train.profile_steps) == (0, 0)
  # A task's section is not added; `evals`, a section of every run, is (no
  # evaluators: what such a run measured).
  assert 'cycle' not in filled and 'facegen' not in filled
  assert 'evals' in filled and not filled.evals and 'evals' not in stored
  assert 'head' not in stored.model  # a copy
  frozen = config_lib.with_added_keys(ml_collections.FrozenConfigDict(stored))
  assert isinstance(frozen, ml_collections.FrozenConfigDict)
  assert frozen.model.head == 'prnet'


def test_every_added_key_is_a_key_of_an_experiment_config():
  import glob  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  keys = set()
  for path in glob.glob(os.path.join(here, 'experiments', 'configs', '*.py')):
    if os.path.basename(path) in ('__init__.py', 'default.py'):
      continue
    config = config_lib.load_config(path)
    keys |= {f'{s}.{k}' for s in config.keys()
             if isinstance(config[s], ml_collections.ConfigDict)
             for k in config[s].keys()}
    keys |= {s for s in config.keys()
             if isinstance(config[s], ml_collections.ConfigDict)}
  assert set(config_lib.ADDED_KEYS) <= keys, (
      set(config_lib.ADDED_KEYS) - keys)
