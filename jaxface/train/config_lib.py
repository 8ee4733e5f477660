"""Experiment configs: config files and command-line overrides.

A config file is a python file with a `get_config()` that returns an
`ml_collections.ConfigDict`. A command line names it and overrides any of its
fields:

    jaxface train --config experiments/configs/prnet.py \\
        --config.optimizer.lr=1e-4 --config.model.width 0.5

    config = config_lib.apply_overrides(
        config_lib.load_config(path), ['optimizer.lr=1e-4', 'model.width=0.5'])

Both are `ml_collections.config_flags` (on a private absl FlagValues, never
the global FLAGS): an override `a.b.c=value` sets an existing field only (a
misspelt key suggests the right one) and parses the value by the field's type
(bool: true/false/t/f/1/0; tuple: '(1, 2)' or '1,2'; str: the text as it is).
Every error is a `ConfigError` (a ValueError) with a one-line message.
"""

from __future__ import annotations

from collections.abc import Sequence
import copy
import dataclasses
import os
import sys
import warnings

from absl import flags
import ml_collections
from ml_collections import config_flags

from jaxface.data import augment

_NAME = 'config'
_ARGV0 = 'jaxface'


class ConfigError(ValueError):
  """A config file or a command-line override is wrong."""


def _root_cause(e: BaseException) -> BaseException:
  """The first exception of the chain: absl and config_flags re-raise."""
  while e.__cause__ or e.__context__:
    e = e.__cause__ or e.__context__
  return e


def _message(e: BaseException) -> str:
  """The message of `e` on one line."""
  while len(e.args) == 1 and isinstance(e.args[0], BaseException):
    e = e.args[0]  # ConfigDict raises AttributeError(KeyError(message)).
  if e.args and all(isinstance(arg, str) for arg in e.args):
    text = ': '.join(e.args)  # Not str(e): a KeyError's is a repr.
  else:
    text = str(e)
  return '; '.join(line.strip() for line in text.splitlines())


def load_config(path: str) -> ml_collections.ConfigDict:
  """Imports the python config file `path` and returns its `get_config()`.

  Raises:
    ConfigError: the file does not exist, cannot be imported, has no
      get_config, or get_config raises or returns no ConfigDict.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ConfigError(f'config file {path!r} does not exist (or is not a '
                      'file)')
  argv = [_ARGV0, f'--{_NAME}={path}']
  values = flags.FlagValues()
  config_flags.DEFINE_config_file(_NAME, None, flag_values=values,
                                  lock_config=False, sys_argv=argv)
  try:
    with warnings.catch_warnings():
      warnings.filterwarnings('ignore', 'the load_module', DeprecationWarning)
      values(argv)
  except Exception as e:  # pylint: disable=broad-except
    cause = _root_cause(e)
    raise ConfigError(f'config file {path!r} failed to load: '
                      f'{type(cause).__name__}: {_message(cause)}') from cause
  finally:
    # config_flags leaves the file's module in sys.modules, where loading the
    # next file would re-run into it and keep its old names.
    sys.modules.pop(f'{_NAME}_config', None)
  config = values[_NAME].value
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(
        f'get_config() of config file {path!r} returned a '
        f'{type(config).__name__}, not an ml_collections.ConfigDict')
  return config


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
  frozen = isinstance(config, ml_collections.FrozenConfigDict)
  new = ml_collections.ConfigDict(config) if frozen else copy.deepcopy(config)
  for override in overrides:
    _override(new, override)
  return ml_collections.FrozenConfigDict(new) if frozen else new


def _override(config: ml_collections.ConfigDict, override: str) -> None:
  """Sets one `KEY=VALUE` override in `config`, in place."""
  key, equals, value = override.partition('=')
  if not equals:
    raise ConfigError(f'malformed override {override!r}: expected KEY=VALUE, '
                      "e.g. 'optimizer.lr=1e-4'")
  # One FlagValues per override: a tuple flag given twice would append.
  argv = [_ARGV0, f'--{_NAME}.{override}']
  values = flags.FlagValues()
  try:  # Finds the field and defines its flag.
    config_flags.DEFINE_config_dict(_NAME, config, flag_values=values,
                                    lock_config=False, sys_argv=argv)
  except flags.Error as e:  # A field of a type it cannot parse.
    raise ConfigError(f'cannot set {key!r} to {value!r}: '
                      f'{str(e).partition(" Currently")[0]}') from None
  except (KeyError, AttributeError, ValueError) as e:
    raise ConfigError(f'no key {key!r} in the config: {_message(e)}') from None
  try:
    values(argv)
  except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as e:
    raise ConfigError(f'cannot set {key!r} to {value!r}: '
                      f'{_message(_root_cause(e))}') from None


# Keys added to experiments/configs/default.py after runs were first written,
# with the value the code used before each existed. A stored config (a
# checkpoint's, a shipped model's) gets the keys it lacks from here, so code
# reads every key directly, and a resume that keeps these values changes
# nothing.
ADDED_KEYS = {
    # A whole section (a key without a dot): added when absent.
    'evals': ml_collections.ConfigDict(),
    'model.head': 'prnet',
    'model.coords': False,
    'model.global_dim': 0,
    'model.skips': False,
    'model.lite': False,
    'model.standardize': False,
    'model.flip_average': False,
    'model.half_res_head': False,
    'model.half_res_stem': False,
    # `augment.AugmentConfig`'s defaults: what runs used before.
    'data.augmentation': ml_collections.ConfigDict({
        f.name: f.default for f in dataclasses.fields(augment.AugmentConfig)
        if f.name != 'enabled'}),
    'loss.z_weight': 1.0,
    'loss.mask': 'prnet',
    'train.profile_steps': (0, 0),
    'cycle.resnet_weight': 1.0,
    'cycle.landmark_weight': 1.0,
    'facegen.feature_norm': False,
    'facegen.condition': 'features',
    'facegen.code_every_stage': False,
}


def with_added_keys(config: ml_collections.ConfigDict
                    ) -> ml_collections.ConfigDict:
  """A copy of `config` with every key of `ADDED_KEYS` whose section it has
  (a prnet run has no `cycle` section) and whose key it lacks, at its value
  from before the key existed, and every whole section of `ADDED_KEYS` it
  lacks. A FrozenConfigDict gives one back."""
  frozen = isinstance(config, ml_collections.FrozenConfigDict)
  new = ml_collections.ConfigDict(config) if frozen else copy.deepcopy(config)
  for dotted, value in ADDED_KEYS.items():
    if '.' not in dotted:  # a whole top-level section
      if dotted not in new:
        with new.unlocked():
          new[dotted] = copy.deepcopy(value)
      continue
    section, key = dotted.rsplit('.', 1)
    if section in new and key not in new[section]:
      with new[section].unlocked():
        new[section][key] = copy.deepcopy(value)
  return ml_collections.FrozenConfigDict(new) if frozen else new
