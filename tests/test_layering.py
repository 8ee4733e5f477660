"""The packages' one-way layering: data_pipelines depends on jaxface."""

import ast
import importlib.metadata
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _imported_modules(path: pathlib.Path) -> set[str]:
  """Every module an `import` or `from ... import` in `path` names."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module)
  return names


def test_jaxface_never_imports_data_pipelines_or_experiments():
  offenders = {
      str(path.relative_to(ROOT)): sorted(
          name for name in _imported_modules(path)
          if name.split('.')[0] in ('data_pipelines', 'experiments'))
      for path in sorted((ROOT / 'jaxface').rglob('*.py'))}
  assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_sees_imports_inside_functions(tmp_path):
  source = tmp_path / 'lazy.py'
  source.write_text('def f():\n  from data_pipelines import the300wlp\n'
                    '  import experiments.configs\n')
  assert _imported_modules(source) == {'data_pipelines',
                                       'experiments.configs'}


@pytest.mark.parametrize('command', ['convert-300wlp', 'convert-aflw2000',
                                     'convert-landmarks2d'])
def test_every_data_convert_command_has_an_installed_converter(command):
  found = importlib.metadata.entry_points(group='jaxface.converters',
                                          name=command)
  assert len(found) == 1, 'reinstall: pip install -e .'
  converter = next(iter(found)).load()
  assert converter.__module__.startswith('data_pipelines.')
  assert callable(converter)
