"""Tests of jaxface.train.config_lib: config files, command-line overrides."""

from __future__ import annotations

import sys
import textwrap

import ml_collections
from ml_collections import config_dict
import pytest

from jaxface.train import config_lib
from jaxface.train.config_lib import ConfigError


def _config():
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.optimizer = ml_collections.ConfigDict(
      {'name': 'adam', 'lr': 1e-3, 'b1': 0.9})
  config.model = ml_collections.ConfigDict(
      {'width': 1.0, 'head': 'uv', 'depth': 3, 'blocks': (2, 2),
       'scales': [0.5, 1.0], 'tags': ('a', 'b')})
  config.data = ml_collections.ConfigDict(
      {'augment': True, 'limit': None,
       'batch': config_dict.placeholder(int)})
  return config


def test_overrides_parse_by_field_type():
  config = _config()
  new = config_lib.apply_overrides(config, [
      'optimizer.lr=1e-4', 'model.width=0.5', 'data.augment=False',
      'model.head=voxel', 'seed=42', 'model.blocks=(3, 4)',
      'model.scales=[0.25, 2]', 'data.limit=100', 'data.batch=32'])
  assert new.optimizer.lr == 1e-4 and isinstance(new.optimizer.lr, float)
  assert new.model.width == 0.5
  assert new.data.augment is False
  assert new.model.head == 'voxel'
  assert new.seed == 42 and isinstance(new.seed, int)
  assert new.model.blocks == (3, 4)
  assert new.model.scales == [0.25, 2.0]
  assert isinstance(new.model.scales[1], float)
  assert new.data.limit == 100
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


@pytest.mark.parametrize('text, value', [
    ('true', True), ('True', True), ('TRUE', True), ('1', True),
    ('yes', True), ('Yes', True), ('false', False), ('False', False),
    ('0', False), ('no', False), ('NO', False)])
def test_bool_spellings(text, value):
  new = config_lib.apply_overrides(_config(), [f'data.augment={text}'])
  assert new.data.augment is value


@pytest.mark.parametrize('text, value', [
    ('(5, 6)', (5, 6)), ('[5, 6]', (5, 6)), ('5,6', (5, 6)), ('5', (5,)),
    ('7,', (7,)), ('()', ())])
def test_tuple_forms(text, value):
  new = config_lib.apply_overrides(_config(), [f'model.blocks={text}'])
  assert new.model.blocks == value and isinstance(new.model.blocks, tuple)


def test_tuple_of_strings_and_float_items():
  new = config_lib.apply_overrides(
      _config(), ['model.tags=x,y,z', 'model.scales=1,2.5'])
  assert new.model.tags == ('x', 'y', 'z')
  assert new.model.scales == [1.0, 2.5]


@pytest.mark.parametrize('text, value', [
    ("'voxel'", 'voxel'), ('0.5', 0.5), ('(1, 2)', (1, 2)), ('None', None),
    ('True', True), ('[1, 2.5]', [1, 2.5])])
def test_none_field_takes_a_literal(text, value):
  new = config_lib.apply_overrides(_config(), [f'data.limit={text}'])
  assert new.data.limit == value
  assert type(new.data.limit) is type(value)


def test_none_field_takes_a_dict_literal_as_a_group():
  new = config_lib.apply_overrides(_config(), ["data.limit={'a': 1}"])
  assert new.data.limit.to_dict() == {'a': 1}


def test_placeholder_takes_its_type_or_none():
  new = config_lib.apply_overrides(_config(), ['data.batch=None'])
  assert new.data.batch is None
  with pytest.raises(ConfigError, match=r"'data.batch'.*int.*'x'.*an int"):
    config_lib.apply_overrides(_config(), ['data.batch=x'])


def test_string_values_are_kept_verbatim():
  new = config_lib.apply_overrides(
      _config(), ['model.head= a=b, c ', 'optimizer.name='])
  assert new.model.head == ' a=b, c '
  assert new.optimizer.name == ''


def test_last_override_wins_and_references_follow():
  config = _config()
  config.optimizer.peak = config.optimizer.get_ref('lr')
  new = config_lib.apply_overrides(
      config, ['optimizer.lr=0.1', 'optimizer.lr=0.2'])
  assert new.optimizer.lr == 0.2
  assert new.optimizer.peak == 0.2
  assert config.optimizer.peak == 1e-3


def test_frozen_config_gives_frozen_config():
  frozen = ml_collections.FrozenConfigDict(_config())
  new = config_lib.apply_overrides(frozen, ['seed=3'])
  assert isinstance(new, ml_collections.FrozenConfigDict)
  assert new.seed == 3 and frozen.seed == 0


def test_no_overrides_gives_an_equal_copy():
  config = _config()
  new = config_lib.apply_overrides(config, [])
  assert new.to_dict() == config.to_dict() and new is not config


def test_missing_key_names_path_lists_keys_and_suggests():
  with pytest.raises(ConfigError) as e:
    config_lib.apply_overrides(_config(), ['model.widht=0.5'])
  message = str(e.value)
  assert "'model.widht'" in message
  assert "the keys at 'model' are: blocks, depth, head, scales, tags, width" \
      in message
  assert "did you mean 'model.width'?" in message


def test_missing_top_level_key_suggests_full_path():
  with pytest.raises(ConfigError) as e:
    config_lib.apply_overrides(_config(), ['modle.width=0.5'])
  message = str(e.value)
  assert "no key 'modle.width'" in message
  assert 'the keys at the top level are: data, model, optimizer, seed' \
      in message
  assert "did you mean 'model.width'?" in message


def test_missing_key_without_close_match_has_no_suggestion():
  with pytest.raises(ConfigError) as e:
    config_lib.apply_overrides(_config(), ['optimizer.zzzzzz=1'])
  assert "no key 'optimizer.zzzzzz'" in str(e.value)
  assert 'did you mean' not in str(e.value)


def test_key_below_a_leaf_is_refused():
  with pytest.raises(ConfigError,
                     match=r"'optimizer.lr.x'.*'optimizer.lr' is a float "
                     r'field, not a group'):
    config_lib.apply_overrides(_config(), ['optimizer.lr.x=1'])


def test_group_cannot_be_set():
  with pytest.raises(ConfigError,
                     match=r"cannot set 'model' to '3': it is a group of "
                     r'fields \(blocks, .*\); override its fields'):
    config_lib.apply_overrides(_config(), ['model=3'])


@pytest.mark.parametrize('override, match', [
    ('seed=1.5', r"'seed' \(an int field, now 0\) to '1.5': expected an int"),
    ('seed=abc', r"'seed' \(an int field, now 0\) to 'abc': expected an int"),
    ('optimizer.lr=fast',
     r"'optimizer.lr' \(a float field, now 0.001\) to 'fast': expected a "
     r'float'),
    ('data.augment=maybe',
     r"'data.augment' \(a bool field, now True\) to 'maybe': expected a "
     r'bool \(true/1/yes/false/0/no\)'),
    ('model.blocks=(1.5, 2)',
     r"'model.blocks' \(a tuple field.*expected a tuple of int, got the "
     r'item 1.5'),
    ('model.blocks=1,x', r"'model.blocks'.*expected an int"),
    ('model.blocks=(1, 2', r"'model.blocks'.*expected a python literal"),
    ('model.blocks=[[1], 2]',
     r"'model.blocks'.*expected a tuple of int, got the item \[1\]"),
    ('data.limit=voxel',
     r"'data.limit' \(a field whose default is None\) to 'voxel': expected "
     r'a python literal'),
])
def test_value_that_does_not_parse_names_field_type_and_value(override,
                                                              match):
  with pytest.raises(ConfigError, match=match):
    config_lib.apply_overrides(_config(), [override])


@pytest.mark.parametrize('override, match', [
    ('optimizer.lr', r"malformed override 'optimizer.lr': expected "
     r'KEY=VALUE'),
    ('=3', r"malformed override '=3': the key '' is not a dotted path"),
    ('model..width=3', r"malformed override 'model..width=3'"),
    ('.seed=3', r"malformed override '.seed=3'"),
])
def test_malformed_override(override, match):
  with pytest.raises(ConfigError, match=match):
    config_lib.apply_overrides(_config(), [override])


def test_overrides_as_a_single_string_is_refused():
  with pytest.raises(ConfigError, match='list of KEY=VALUE strings'):
    config_lib.apply_overrides(_config(), 'seed=1')


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


def test_load_config_directory(tmp_path):
  with pytest.raises(ConfigError, match='is a directory'):
    config_lib.load_config(str(tmp_path))


def test_load_config_not_python(tmp_path):
  path = _write(tmp_path, 'lr: 0.1\n', name='exp.yaml')
  with pytest.raises(ConfigError, match=r"'.*exp.yaml' cannot be imported: "
                     r'it must be a python file'):
    config_lib.load_config(path)


def test_load_config_without_get_config(tmp_path):
  path = _write(tmp_path, 'CONFIG = 1\n')
  with pytest.raises(ConfigError, match=r"'.*exp.py' has no get_config\(\)"):
    config_lib.load_config(path)


def test_load_config_get_config_not_callable(tmp_path):
  path = _write(tmp_path, 'get_config = 3\n')
  with pytest.raises(ConfigError, match='get_config is an int, not a function'):
    config_lib.load_config(path)


def test_load_config_get_config_raises(tmp_path):
  path = _write(tmp_path, """
      def get_config():
        raise KeyError('no such preset')
      """)
  with pytest.raises(ConfigError,
                     match=r"get_config\(\) of config file '.*exp.py' raised "
                     r"KeyError: 'no such preset'") as e:
    config_lib.load_config(path)
  assert isinstance(e.value.__cause__, KeyError)


def test_load_config_import_fails(tmp_path):
  path = _write(tmp_path, 'import no_such_module_jaxface\n')
  with pytest.raises(ConfigError,
                     match=r"'.*exp.py' failed to import: "
                     r'ModuleNotFoundError'):
    config_lib.load_config(path)
  path = _write(tmp_path, 'def get_config(:\n', name='bad.py')
  with pytest.raises(ConfigError, match=r"'.*bad.py' failed to import: "
                     r'SyntaxError'):
    config_lib.load_config(path)


def test_load_config_wrong_return_type(tmp_path):
  path = _write(tmp_path, """
      def get_config():
        return {'lr': 0.1}
      """)
  with pytest.raises(ConfigError, match=r'returned a dict, not an '
                     r'ml_collections.ConfigDict'):
    config_lib.load_config(path)


# parse_config_args.


def test_parse_config_args_forms():
  path, overrides = config_lib.parse_config_args([
      '--config', 'exp.py', '--config.optimizer.lr=1e-4',
      '--config.model.width', '0.5', '--config.seed', '-3',
      '--config.model.head=a=b'])
  assert path == 'exp.py'
  assert overrides == ['optimizer.lr=1e-4', 'model.width=0.5', 'seed=-3',
                       'model.head=a=b']


def test_parse_config_args_equals_form_and_any_order():
  path, overrides = config_lib.parse_config_args(
      ['--config.seed=1', '--config=exp.py'])
  assert path == 'exp.py' and overrides == ['seed=1']


def test_parse_config_args_no_overrides():
  assert config_lib.parse_config_args(['--config', 'a.py']) == ('a.py', [])


@pytest.mark.parametrize('argv, match', [
    ([], r'missing --config PATH'),
    (['--config.seed=1'], r'missing --config PATH'),
    (['--config'], r'--config needs a value'),
    (['--config='], r'--config needs a value'),
    (['--config', '--config.seed=1'], r'--config needs a value'),
    (['--config', 'a.py', '--config', 'b.py'],
     r"--config given twice \('a.py' and 'b.py'\)"),
    (['--config', 'a.py', '--config.seed'],
     r'--config.seed needs a value: --config.seed=VALUE or --config.seed '
     r'VALUE'),
    (['--config', 'a.py', '--config.seed', '--config.lr=1'],
     r'--config.seed needs a value'),
    (['--config', 'a.py', '--workdir=/tmp'],
     r"unexpected argument '--workdir=/tmp'"),
    (['a.py'], r"unexpected argument 'a.py'"),
    (['--config', 'a.py', '--config.=3'], r"malformed override '=3'"),
    (['--config', 'a.py', '--config..x=3'], r"malformed override '.x=3'"),
])
def test_parse_config_args_errors(argv, match):
  with pytest.raises(ConfigError, match=match):
    config_lib.parse_config_args(argv)


def test_command_line_end_to_end(tmp_path):
  path = _write(tmp_path, """
      import ml_collections

      def get_config():
        return ml_collections.ConfigDict(
            {'optimizer': {'lr': 1e-3}, 'model': {'width': 1.0, 'head': 'uv'},
             'data': {'augment': True}})
      """)
  config_path, overrides = config_lib.parse_config_args([
      '--config', path, '--config.optimizer.lr=1e-4', '--config.model.width',
      '0.5', '--config.data.augment=no', '--config.model.head', 'voxel'])
  config = config_lib.apply_overrides(config_lib.load_config(config_path),
                                      overrides)
  assert config.to_dict() == {
      'optimizer': {'lr': 1e-4}, 'model': {'width': 0.5, 'head': 'voxel'},
      'data': {'augment': False}}
