"""Experiment configs: loading config files and command-line overrides.

A config file is a python file with a `get_config()` that returns an
`ml_collections.ConfigDict`. A command line names it and overrides any of its
fields:

    jaxface train --config experiments/configs/prnet.py \\
        --config.optimizer.lr=1e-4 --config.model.width 0.5

    path, overrides = config_lib.parse_config_args(argv)
    config = config_lib.apply_overrides(config_lib.load_config(path),
                                        overrides)

An override `a.b.c=value` sets an existing field only (a misspelt key is an
error, with the closest existing key suggested), and its value is parsed by
the type of that field:

  bool         true / false / 1 / 0 / yes / no, any case;
  int          an integer literal ('1000', '-3', '1_000');
  float        a float or integer literal ('1e-4', '3', 'inf');
  str          the text as it is (no quotes needed: `model.head=voxel`);
  tuple, list  a python literal ('(1, 2)', '[0.5, 1]') or bare comma-separated
               items ('1,2'); items are parsed like the existing items (ints
               stay ints, floats accept ints); the container keeps its type;
  None         (a field whose default is None) a python literal, read with
               ast.literal_eval: '3', '0.5', "'voxel'", '(1, 2)', 'None'. A
               placeholder (`config_dict.placeholder(int)`) takes its type,
               or 'None'.

Every error is a `ConfigError` (a ValueError) that says what is wrong.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
import copy
import difflib
import importlib.util
import os
import sys

import ml_collections

_TRUE = ('true', '1', 'yes')
_FALSE = ('false', '0', 'no')


class ConfigError(ValueError):
  """A config file or a command-line override is wrong."""


def _keys_message(group: ml_collections.ConfigDict, prefix: str) -> str:
  keys = sorted(group.keys())
  where = f"'{prefix}'" if prefix else 'the top level'
  if not keys:
    return f'there are no keys at {where}'
  return f'the keys at {where} are: {", ".join(keys)}'


def _resolve(config: ml_collections.ConfigDict,
             key: str) -> tuple[ml_collections.ConfigDict, str]:
  """Returns (the group holding `key`, its last name); raises if absent."""
  parts = key.split('.')
  group = config
  for depth, name in enumerate(parts):
    prefix = '.'.join(parts[:depth])
    if name not in group.keys():
      message = (f"no key '{key}' in the config: "
                 f'{_keys_message(group, prefix)}')
      close = difflib.get_close_matches(name, list(group.keys()), n=1)
      if close:
        suggestion = '.'.join(parts[:depth] + [close[0]] + parts[depth + 1:])
        message += f"; did you mean '{suggestion}'?"
      raise ConfigError(message)
    if depth == len(parts) - 1:
      return group, name
    child = group[name]
    if not isinstance(child, ml_collections.ConfigDict):
      path = '.'.join(parts[:depth + 1])
      raise ConfigError(
          f"no key '{key}' in the config: '{path}' is a "
          f'{type(child).__name__} field, not a group of fields')
    group = child
  raise AssertionError('unreachable')


def _parse_bool(text: str) -> bool:
  lowered = text.strip().lower()
  if lowered in _TRUE:
    return True
  if lowered in _FALSE:
    return False
  raise ValueError(f'expected a bool ({"/".join(_TRUE + _FALSE)})')


def _parse_int(text: str) -> int:
  try:
    return int(text.strip())
  except ValueError:
    raise ValueError('expected an int') from None


def _parse_float(text: str) -> float:
  try:
    return float(text.strip())
  except ValueError:
    raise ValueError('expected a float') from None


def _parse_literal(text: str):
  try:
    return ast.literal_eval(text.strip())
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    raise ValueError(
        'expected a python literal (quote strings: "\'text\'")') from None


def _parse_scalar(text: str, kind: type):
  if kind is bool:
    return _parse_bool(text)
  if kind is int:
    return _parse_int(text)
  if kind is float:
    return _parse_float(text)
  if kind is str:
    return text
  raise ValueError(f'fields of type {kind.__name__} cannot be overridden')


def _item_type(items) -> type | None:
  """The common type of a sequence's items (float if ints and floats mix)."""
  kinds = {type(item) for item in items}
  if not kinds:
    return None
  if kinds == {int, float}:
    return float
  if len(kinds) == 1 and next(iter(kinds)) in (bool, int, float, str):
    return next(iter(kinds))
  return None


def _parse_sequence(text: str, container: type, current):
  """Parses a tuple or list like the existing value `current`."""
  item_type = _item_type(current or ())
  stripped = text.strip()
  if stripped[:1] in ('(', '['):
    value = _parse_literal(stripped)
    if not isinstance(value, (tuple, list)):
      raise ValueError(f'expected a {container.__name__}')
    items = list(value)
  elif not stripped:
    items = []
  else:
    pieces = [piece.strip() for piece in stripped.split(',')]
    if pieces[-1] == '':  # A trailing comma: '1,'.
      pieces = pieces[:-1]
    if item_type is not None:
      items = [_parse_scalar(piece, item_type) for piece in pieces]
    else:
      items = [_parse_literal(piece) for piece in pieces]
  if item_type is not None:
    checked = []
    for item in items:
      if item_type is float and type(item) in (int, float):
        checked.append(float(item))
      elif type(item) is item_type:
        checked.append(item)
      else:
        raise ValueError(f'expected a {container.__name__} of '
                         f'{item_type.__name__}, got the item {item!r}')
    items = checked
  elif not current:
    # An empty (or None) default: numbers, bools and strings are accepted.
    for item in items:
      if not isinstance(item, (bool, int, float, str)):
        raise ValueError(f'expected a {container.__name__} of numbers, got '
                         f'the item {item!r}')
  return container(items)


def _parse_value(text: str, kind: type, current):
  """Parses `text` for a field of type `kind` whose value is `current`."""
  if kind is type(None):
    return _parse_literal(text)
  if current is None and text.strip() == 'None':  # A placeholder's None.
    return None
  if kind in (tuple, list):
    return _parse_sequence(text, kind, current)
  return _parse_scalar(text, kind)


def _describe(kind: type, current) -> str:
  """Describes a field for error messages: "a float field, now 0.1"."""
  if kind is type(None):
    return 'a field whose default is None'
  return f'{_a(kind.__name__)} field, now {current!r}'


def _a(name: str) -> str:
  """'an int', 'a float'."""
  return f'{"an" if name[:1].lower() in "aeiou" else "a"} {name}'


def _split_override(override: str) -> tuple[str, str]:
  if not isinstance(override, str) or '=' not in override:
    raise ConfigError(
        f'malformed override {override!r}: expected KEY=VALUE, e.g. '
        "'optimizer.lr=1e-4'")
  key, value = override.split('=', 1)
  key = key.strip()
  if not key or any(not part for part in key.split('.')):
    raise ConfigError(
        f'malformed override {override!r}: the key {key!r} is not a dotted '
        "path of field names, e.g. 'optimizer.lr=1e-4'")
  return key, value


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[str]) -> ml_collections.ConfigDict:
  """Returns a copy of `config` with the `KEY=VALUE` overrides applied.

  The input config is not changed. Overrides apply in order (the last one of a
  key wins). Field references in the config are kept: overriding a field
  updates the fields that refer to it. A FrozenConfigDict gives a
  FrozenConfigDict back.

  Raises:
    ConfigError: a malformed override, a key that does not exist, or a value
      that does not parse as its field's type.
  """
  if isinstance(overrides, str):
    raise ConfigError(
        f'overrides must be a list of KEY=VALUE strings, got the string '
        f'{overrides!r}')
  frozen = isinstance(config, ml_collections.FrozenConfigDict)
  if frozen:
    new = ml_collections.ConfigDict(config)
  else:
    new = copy.deepcopy(config)
  for override in overrides:
    key, text = _split_override(override)
    group, name = _resolve(new, key)
    kind = group.get_type(name)
    current = group[name]
    if isinstance(current, ml_collections.ConfigDict):
      raise ConfigError(
          f"cannot set '{key}' to {text!r}: it is a group of fields "
          f'({", ".join(sorted(current.keys()))}); override its fields, e.g. '
          f"'{key}.{min(current.keys(), default='name')}=...'")
    try:
      value = _parse_value(text, kind, current)
    except ValueError as e:
      raise ConfigError(
          f"cannot set '{key}' ({_describe(kind, current)}) to {text!r}: {e}"
      ) from None
    try:
      group[name] = value
    except (TypeError, ValueError) as e:
      raise ConfigError(
          f"cannot set '{key}' ({_describe(kind, current)}) to {value!r}: {e}"
      ) from None
  return ml_collections.FrozenConfigDict(new) if frozen else new


def load_config(path: str) -> ml_collections.ConfigDict:
  """Imports the python config file `path` and returns its `get_config()`.

  The file is imported as a module of its own (it may import jaxface and other
  installed modules); it is registered in sys.modules only while it is
  imported and its get_config runs.

  Raises:
    ConfigError: the file does not exist, cannot be imported, has no
      get_config, or get_config raises or returns no ConfigDict.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    what = 'is a directory' if os.path.isdir(path) else 'does not exist'
    raise ConfigError(f'config file {path!r} {what}')
  stem = os.path.splitext(os.path.basename(path))[0]
  module_name = f'_jaxface_config_{stem}_{abs(hash(os.path.abspath(path)))}'
  spec = importlib.util.spec_from_file_location(module_name, path)
  if spec is None or spec.loader is None:
    raise ConfigError(
        f'config file {path!r} cannot be imported: it must be a python file '
        '(.py)')
  module = importlib.util.module_from_spec(spec)
  previous = sys.modules.get(module_name)
  sys.modules[module_name] = module
  try:
    try:
      spec.loader.exec_module(module)
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigError(
          f'config file {path!r} failed to import: {type(e).__name__}: {e}'
      ) from e
    get_config = getattr(module, 'get_config', None)
    if get_config is None:
      raise ConfigError(
          f'config file {path!r} has no get_config(): it must define '
          'get_config() returning an ml_collections.ConfigDict')
    if not callable(get_config):
      raise ConfigError(
          f'config file {path!r}: get_config is '
          f'{_a(type(get_config).__name__)}, not a function')
    try:
      config = get_config()
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigError(
          f'get_config() of config file {path!r} raised '
          f'{type(e).__name__}: {e}') from e
  finally:
    if previous is None:
      sys.modules.pop(module_name, None)
    else:
      sys.modules[module_name] = previous
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(
        f'get_config() of config file {path!r} returned '
        f'{_a(type(config).__name__)}, not an ml_collections.ConfigDict')
  return config


def parse_config_args(argv: Sequence[str]) -> tuple[str, list[str]]:
  """Splits command-line arguments into a config path and overrides.

  Accepts `--config PATH` or `--config=PATH` (exactly once), and any number of
  `--config.a.b=value` or `--config.a.b value`; the overrides come back as
  'a.b=value' strings for `apply_overrides`, in order.

  Args:
    argv: the arguments, without the program name.

  Raises:
    ConfigError: no --config, --config twice, an option without its value, or
      an argument that is neither.
  """
  path = None
  overrides = []
  args = list(argv)
  i = 0
  while i < len(args):
    arg = args[i]
    if arg == '--config' or arg.startswith('--config='):
      if arg == '--config':
        if i + 1 >= len(args) or args[i + 1].startswith('--'):
          raise ConfigError('--config needs a value: --config PATH')
        value = args[i + 1]
        i += 2
      else:
        value = arg[len('--config='):]
        i += 1
      if not value:
        raise ConfigError('--config needs a value: --config PATH')
      if path is not None:
        raise ConfigError(
            f'--config given twice ({path!r} and {value!r}); give it once')
      path = value
    elif arg.startswith('--config.'):
      body = arg[len('--config.'):]
      if '=' in body:
        override = body
        i += 1
      else:
        if i + 1 >= len(args) or args[i + 1].startswith('--'):
          raise ConfigError(
              f'{arg} needs a value: {arg}=VALUE or {arg} VALUE')
        override = f'{body}={args[i + 1]}'
        i += 2
      _split_override(override)  # Checks the key's form.
      overrides.append(override)
    else:
      raise ConfigError(
          f'unexpected argument {arg!r}: expected --config PATH and '
          '--config.KEY=VALUE overrides')
  if path is None:
    raise ConfigError('missing --config PATH (the python config file)')
  return path, overrides
