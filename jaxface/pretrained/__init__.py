"""Export a trained PRNet workdir as a pretrained model shipped in the package.

  jaxface export --workdir runs/prnet --name synthetic [--out DIR]
  jaxface models

A shipped model is a folder `NAME/` in the models folder: this package's
folder (`jaxface/pretrained/`, installed with the package), or the folder
named by the environment variable JAXFACE_PRETRAINED_DIR when it is set.
It holds three files:

- `weights.npz`: the network's variables as float16 arrays (stored
  compressed), one per leaf, keyed by the leaf's path joined by '/'
  (`params/Conv_0/kernel`, `batch_stats/BatchNorm_0/mean`, ...). The loader
  casts them back to float32. The params are the run's EMA weights when it
  kept them.
- `model.json`: what rebuilds and checks the network: `network` ('PRNet'),
  `task` ('prnet': the reconstruction network, whatever the run's task),
  `source_task` (the run's: 'prnet' or 'cycle'), `resolution` (crop side,
  pixels), `architecture` (the run's `config.model`: width, bn_momentum,
  head, ...; `models.prnet.from_config` builds the network), `uv_layout`
  (`UVLayout.to_json`), `parameters` (count of the params' scalars),
  `weights` {file, sha256, bytes, dtype, arrays, ema}, `step`, `config`
  (the run's full config), `source` (workdir, export time, jaxface
  version) and `metrics` (`synthetic_nme` and the `synthetic_eval` that
  renders the set it was measured on; the trainer may add more).
- `MODEL_CARD.md`: a model card filled from the workdir (config, steps,
  wall time, training data), with TODO(trainer) placeholders for what only
  the trainer knows. The first paragraph after its title is the one-line
  summary `jaxface models` prints.

The three files together must stay under `MAX_BYTES` (8 MB): a full-width
PRNet (13.4 M parameters, about 25 MB as compressed float16) does not
fit; width 0.5 (3.3 M parameters, about 6.2 MB) does.

`jaxface.train.trained.load_pretrained(name)` reads a shipped model back as
a `TrainedModel`, like a workdir's, after checking the sha256 of its
weights; `jaxface reconstruct` and `jaxface generate` use the shipped
`synthetic` model when no workdir is given, and `--model NAME` picks a
shipped model in `reconstruct` and `eval`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import shutil
import tempfile
from typing import Any

import numpy as np

from jaxface import files

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
ENV_DIR = 'JAXFACE_PRETRAINED_DIR'
# The shipped model that `reconstruct` and `generate` use by default.
DEFAULT_MODEL = 'synthetic'
# Models this version of jaxface documents, and what each is: a missing one
# is reported as not exported yet (with the command), not as unknown.
KNOWN_MODELS = {
    'synthetic': 'a PRNet trained only on jaxface\'s synthetic data',
}
WEIGHTS_FILE = 'weights.npz'
INFO_FILE = 'model.json'
CARD_FILE = 'MODEL_CARD.md'
FORMAT = 'jaxface-pretrained'
VERSION = 1
MAX_BYTES = 8_000_000  # all three files together
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504
# The small synthetic set `export` measures the model on (metrics.synthetic_*).
SYNTHETIC_EVAL_COUNT = 64
SYNTHETIC_EVAL_SEED = 7
SYNTHETIC_EVAL_BATCH = 16
_NAME = re.compile(r'[a-z0-9][a-z0-9_-]{0,63}')


class PretrainedError(ValueError):
  """A shipped model that is unknown, missing files, or corrupt, or an
  export that cannot be shipped."""


# ------------------------------------------------------------- the folder --


def models_dir(directory: str | None = None) -> str:
  """The models folder: `directory`, else $JAXFACE_PRETRAINED_DIR, else the
  package's own `jaxface/pretrained/`."""
  return os.fspath(directory or os.environ.get(ENV_DIR) or PACKAGE_DIR)


def available(directory: str | None = None) -> list[str]:
  """Sorted names of the models in the models folder (subfolders with a
  model.json)."""
  root = models_dir(directory)
  if not os.path.isdir(root):
    return []
  return sorted(n for n in os.listdir(root) if not n.startswith(('.', '_'))
                and os.path.isfile(os.path.join(root, n, INFO_FILE)))


def check_name(name: str) -> str:
  """`name` if it can name a model folder; PretrainedError otherwise."""
  if not isinstance(name, str) or not _NAME.fullmatch(name):
    raise PretrainedError(
        f'bad model name {name!r}: use 1-64 lower-case letters, digits, '
        '"_" or "-", starting with a letter or digit')
  return name


def _export_hint(name: str) -> str:
  return (f'train a prnet (or cycle) run, then `jaxface export --workdir RUN '
          f'--name {name}`')


def model_dir(name: str, directory: str | None = None) -> str:
  """The folder of shipped model `name`, checked to hold its files.

  Raises:
    PretrainedError: a bad or unknown name (the message lists the models
      there are), or the folder lacks model.json or weights.npz (the
      message says how to make them).
  """
  check_name(name)
  root = models_dir(directory)
  folder = os.path.join(root, name)
  if not os.path.isdir(folder):
    names = available(directory)
    have = (f'the models there are: {", ".join(names)}' if names else
            'there are none')
    if name in KNOWN_MODELS:
      raise PretrainedError(
          f'the shipped model {name!r} ({KNOWN_MODELS[name]}) is not in '
          f'{root} ({have}). It has not been exported yet: '
          f'{_export_hint(name)}; or give a training workdir instead')
    raise PretrainedError(f'no shipped model {name!r} in {root}; {have} '
                          f'(`jaxface models` lists them)')
  for file in (INFO_FILE, WEIGHTS_FILE):
    if not os.path.isfile(os.path.join(folder, file)):
      raise PretrainedError(
          f'the shipped model {name!r} in {folder} has no {file}: export it '
          f'again with `jaxface export --workdir RUN --name {name} '
          '--overwrite`')
  return folder


def read_info(folder: str) -> dict:
  """A model folder's model.json, checked for the fields the loader needs.

  Raises:
    PretrainedError: unreadable, of another format or version, or missing
      a field.
  """
  path = os.path.join(folder, INFO_FILE)
  try:
    with open(path, encoding='utf-8') as f:
      info = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise PretrainedError(f'{path} is not readable JSON: {e}') from e
  if not isinstance(info, dict) or info.get('format') != FORMAT:
    raise PretrainedError(f'{path} is not a {FORMAT} model.json')
  if info.get('version') != VERSION:
    raise PretrainedError(f'{path} is version {info.get("version")!r} of the '
                          f'format; this jaxface reads version {VERSION}')
  needed = ('network', 'task', 'resolution', 'architecture', 'uv_layout',
            'parameters', 'weights', 'step', 'config')
  missing = [k for k in needed if k not in info]
  if missing or 'sha256' not in info.get('weights', {}):
    raise PretrainedError(f'{path} lacks {missing or ["weights.sha256"]}')
  return info


def read_variables(folder: str, info: dict) -> dict[str, Any]:
  """The variables of a model folder, float32, after checking the sha256 of
  weights.npz against model.json's and the parameter count.

  Returns:
    {'params': nested dict of float32 arrays, 'batch_stats': likewise}.

  Raises:
    PretrainedError: a sha256 mismatch (a corrupted or replaced file), an
      unreadable file or a wrong parameter count.
  """
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  path = os.path.join(folder, WEIGHTS_FILE)
  want, got = info['weights']['sha256'], files.sha256_of(path)
  if got != want:
    raise PretrainedError(
        f'{path} is corrupted or was replaced: its sha256 is {got}, '
        f'{INFO_FILE} says {want}. Export the model again (`jaxface export '
        f'--workdir RUN --name {os.path.basename(folder)} --overwrite`) or '
        'reinstall jaxface')
  try:
    with np.load(path, allow_pickle=False) as arrays:
      flat = {tuple(k.split('/')): arrays[k].astype(np.float32)
              for k in arrays.files}
  except (OSError, ValueError, EOFError) as e:
    raise PretrainedError(f'{path} is not a readable .npz: {e}') from e
  variables = traverse_util.unflatten_dict(flat)
  variables.setdefault('batch_stats', {})
  count = count_parameters(variables.get('params', {}))
  if count != info['parameters']:
    raise PretrainedError(f'{path} holds {count} parameters; {INFO_FILE} '
                          f'says {info["parameters"]}')
  return variables


def count_parameters(params) -> int:
  """Scalars in a tree of arrays."""
  import jax  # pylint: disable=g-import-not-at-top
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def summary_line(folder: str) -> str:
  """The card's one-line summary: the first paragraph after its title,
  joined into one line ('' without a card)."""
  path = os.path.join(folder, CARD_FILE)
  if not os.path.isfile(path):
    return ''
  with open(path, encoding='utf-8') as f:
    lines = f.read().splitlines()
  out = []
  for line in lines:
    text = line.strip()
    if text.startswith('#') or (not text and not out):
      continue
    if not text:
      break
    out.append(text.lstrip('> '))
  return ' '.join(out)


def format_models(directory: str | None = None) -> str:
  """What `jaxface models` prints: each model's name and card summary."""
  root = models_dir(directory)
  names = available(directory)
  if not names:
    return (f'no shipped models in {root}. The default model '
            f'{DEFAULT_MODEL!r} is made with: {_export_hint(DEFAULT_MODEL)}')
  width = max(len(n) for n in names)
  rows = [f'shipped models in {root}:']
  for name in names:
    summary = summary_line(os.path.join(root, name)) or '(no model card)'
    default = ' [default]' if name == DEFAULT_MODEL else ''
    rows.append(f'  {name:<{width}}  {summary}{default}')
  return '\n'.join(rows)


# ----------------------------------------------------------------- export --


def _write_weights(path: str, variables: dict) -> int:
  """Writes variables {'params', 'batch_stats'} as float16 to a compressed
  npz keyed by '/'-joined paths; returns the number of arrays.

  Raises:
    PretrainedError: a value beyond float16's range (+-65504) or not
      finite, or a key with '/' in it.
  """
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  flat = {}
  for key, value in traverse_util.flatten_dict(variables).items():
    if any('/' in str(k) for k in key):
      raise PretrainedError(f'cannot store variable {key}: "/" in a name')
    value = np.asarray(value, np.float32)
    name = '/'.join(str(k) for k in key)
    if not np.all(np.isfinite(value)):
      raise PretrainedError(f'variable {name} is not finite')
    if value.size and np.max(np.abs(value)) > FLOAT16_MAX:
      raise PretrainedError(
          f'variable {name} reaches {np.max(np.abs(value)):.4g}, beyond '
          f'float16\'s range (+-{FLOAT16_MAX:g}); it cannot ship as float16')
    flat[name] = value.astype(np.float16)
  np.savez_compressed(path, **flat)
  return len(flat)


def _json_config(config) -> dict:
  """A ConfigDict as plain JSON data."""
  return json.loads(config.to_json_best_effort())


def _read_json(path: str) -> dict | None:
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _training_data(config, group: str = 'data') -> dict | None:
  """The dataset.json of the training dataset (`group` 'data') or of the
  mixed-in 2D records ('mix'); None when there is none or it is not
  readable here."""
  from jaxface.data import shards  # pylint: disable=g-import-not-at-top
  data_dir = (config.get(group) or {}).get('dir') or ''
  if not data_dir:
    return None
  try:
    return shards.read_dataset_info(data_dir)
  except (shards.DatasetError, OSError):
    return None


def synthetic_eval_spec(resolution: int, count: int = SYNTHETIC_EVAL_COUNT,
                        seed: int = SYNTHETIC_EVAL_SEED,
                        crop_jitter: float = 0.1) -> dict:
  """How to render the small synthetic eval set of a model at `resolution`:
  `count` `recon` records of the 'test' split of
  `synthetic.SynthConfig.from_dict(synth_config)` (crops shifted as the
  training data's were: `crop_jitter`), measured by
  `recon_eval.evaluate_reconstruction` with `batch_size`; the metric is
  its report's nme_2d.mean."""
  from jaxface.data import synthetic  # pylint: disable=g-import-not-at-top
  config = synthetic.SynthConfig(resolution=int(resolution), seed=int(seed),
                                 identities=(('test', 200),),
                                 crop_jitter=float(crop_jitter))
  return {'kind': 'recon', 'split': 'test', 'count': int(count),
          'synth_config': dataclasses.asdict(config),
          'batch_size': SYNTHETIC_EVAL_BATCH,
          'metric': 'nme_2d.mean of `jaxface eval`: the 68-landmark 2D NME '
                    '(mean error / sqrt(w h) of the true landmarks\' box), '
                    'plain mean over the records'}


def synthetic_default_jitter() -> float:
  """The synthetic data's default crop shift (`SynthConfig.crop_jitter`)."""
  from jaxface.data import synthetic  # pylint: disable=g-import-not-at-top
  return synthetic.SynthConfig.crop_jitter


def render_synthetic_eval(spec: dict, out_dir: str) -> str:
  """Renders the eval set a `synthetic_eval_spec` describes into `out_dir`
  (a new dataset folder); returns it."""
  from jaxface.data import synthetic  # pylint: disable=g-import-not-at-top
  synthetic.synthesize(out_dir,
                       synthetic.SynthConfig.from_dict(spec['synth_config']),
                       {spec['kind']: {spec['split']: spec['count']}},
                       progress=False)
  return out_dir


def measure_synthetic(trained, spec: dict) -> dict:
  """The report of `trained` (a `TrainedModel`) on the set `spec` renders
  (`recon_eval.evaluate_reconstruction`'s report)."""
  from jaxface.eval import recon_eval  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory(prefix='jaxface-synth-eval-') as tmp:
    data = render_synthetic_eval(spec, os.path.join(tmp, 'data'))
    report, _ = recon_eval.evaluate_reconstruction(
        trained, data, spec['split'], spec['batch_size'], progress=False)
  return report


def _fmt(value, spec: str = '.4f', missing: str = 'unknown') -> str:
  return missing if value is None else format(value, spec)


# config.model's switches, as the card names them.
_CARD_OPTIONS = (('lite', 'one layer per resolution (`lite`)'),
                 ('skips', 'encoder skips (`skips`)'),
                 ('coords', 'coordinate channels (`coords`)'),
                 ('standardize', 'standardised inputs (`standardize`)'),
                 ('half_res_head', 'a half-resolution head '
                  '(`half_res_head`)'),
                 ('half_res_stem', 'a stride-2 stem (`half_res_stem`)'),
                 ('flip_average', 'predictions averaged with the mirror '
                  'image\'s (`flip_average`)'))


def _options(arch: dict) -> str:
  """'a, b, ' for the switches of config.model that are on ('' if none)."""
  return ''.join(f'{text}, ' for key, text in _CARD_OPTIONS if arch.get(key))


def _card(info: dict, summary: dict | None, data: dict | None,
          report: dict | None, mix: dict | None = None) -> str:
  """MODEL_CARD.md's text (see the module doc)."""
  arch, metrics = info['architecture'], info['metrics']
  layout = info['uv_layout']['name']
  r = info['resolution']
  nme = metrics.get('synthetic_nme')
  headline = (f'; 68-landmark NME {nme:.4f} on {metrics["synthetic_eval"]["count"]} '
              'synthetic faces it never saw' if nme is not None else '')
  source = (data or {}).get('source')
  trained_on = ('on jaxface\'s synthetic faces' if source == 'synthetic' else
                f'on {source} data' if source else
                '(training data: **TODO(trainer)**)')
  if mix:
    trained_on += (f' with real 2D landmarks of {mix.get("source")} mixed '
                   'in')
  lines = [
      f'# {info["name"]}', '',
      f'A PRNet (width {arch["width"]:g}, {r}x{r} crops, {layout} UV layout, '
      f'{info["parameters"]:,} parameters) trained by jaxface '
      f'{trained_on}{headline}.', '',
      '**TODO(trainer)**: one paragraph on what this model is for and how it '
      'was chosen.', '',
      '## Use', '',
      '```bash',
      f'jaxface reconstruct photos/ --model {info["name"]} --out recon/',
      f'jaxface eval --model {info["name"]} --data DATASET',
      '```', '',
      '```python',
      'from jaxface.train import trained',
      f'model = trained.load_pretrained({info["name"]!r})  # a TrainedModel',
      'module, variables = trained.prnet(model)',
      f'maps = module.apply(variables, images)  # (B, {r}, {r}, 3) in [0, 1] '
      f'-> (B, {r}, {r}, 3) crop pixels',
      '```', '',
      '## Model', '',
      f'- Network: PRNet (ResFCN256), width {arch["width"]:g}, '
      f'{arch.get("head", "prnet")} head, {_options(arch)}BatchNorm momentum '
      f'{arch["bn_momentum"]:g}; input {r}x{r}x3 RGB in [0, 1] (the '
      f'PRNet crop of a face); output the {r}x{r}x3 UV position map in crop '
      'pixels (x right, y down, z towards the viewer).',
      f'- UV layout: `{layout}` (landmarks and face region read off the map '
      'there).',
      f'- Parameters: {info["parameters"]:,}, stored as float16 in '
      f'`{WEIGHTS_FILE}` ({info["weights"]["bytes"] / 1e6:.2f} MB, sha256 '
      f'`{info["weights"]["sha256"][:16]}...`), float32 once loaded'
      + ('; the exponential moving average of the weights' if
         info['weights']['ema'] else '') + '.', '',
      '## Training', '',
      f'- Task: `{info["source_task"]}`; training steps: {info["step"]:,}'
      + (f' in {summary["wall_seconds"] / 3600:.2f} h '
         f'({summary.get("images_per_second", 0):.1f} images/s)'
         if summary and summary.get('wall_seconds') else '') + '.',
      f'- Exported from `{info["source"]["workdir"]}` on '
      f'{info["source"]["exported"]} with jaxface '
      f'{info["source"]["jaxface_version"]}.',
      '- **TODO(trainer)**: the hardware and the exact command.', '',
      '<details><summary>Config</summary>', '', '```json',
      json.dumps(info['config'], indent=2), '```', '', '</details>', '',
      '## Data', '',
  ]
  if data:
    counts = {kind: {split: e.get('count') for split, e in splits.items()}
              for kind, splits in data.get('kinds', {}).items()}
    lines += [f'- Source: `{data.get("source")}`, seed {data.get("seed")}, '
              f'{data.get("resolution")}x{data.get("resolution")}; records: '
              f'`{json.dumps(counts)}`'
              + (f'; identities `{json.dumps(data["identities"])}`'
                 if data.get('identities') else '') + '.']
  else:
    lines += ['- **TODO(trainer)**: the training data (its dataset.json was '
              'not readable at export).']
  if mix:
    counts = {split: e.get('count')
              for split, e in mix.get('kinds', {}).get('recon', {}).items()}
    lines += [f'- Mixed in (`config.mix`): 2D records of `{mix.get("source")}`'
              f' ({mix.get("input_format", "2D landmarks")}), '
              f'{mix.get("resolution")}x{mix.get("resolution")}, records '
              f'`{json.dumps(counts)}`; the training used split '
              f'`{info["config"]["mix"]["split"]}`. **Its licence applies to '
              'this model: TODO(trainer)**.']
  lines += ['', '## Metrics', '',
            '| metric | value | measured on |', '|---|---|---|']
  if nme is not None:
    spec = metrics['synthetic_eval']
    sc = spec['synth_config']
    where = (f'{spec["count"]} synthetic `{spec["kind"]}` faces, split '
             f'`{spec["split"]}`, seed {sc["seed"]}, {sc["resolution"]}x'
             f'{sc["resolution"]} (`model.json` metrics.synthetic_eval)')
    lines.append(f'| 68-landmark NME, 2D | {nme:.4f} | {where} |')
    if report:
      lines.append(f'| 68-landmark NME, 3D | '
                   f'{_fmt(report["nme_3d"]["mean"])} | same |')
      lines.append(f'| dense NME (face region) | '
                   f'{_fmt(report["dense_nme"]["mean"])} | same |')
      lines.append(f'| pose error (degrees, mean of yaw, pitch, roll) | '
                   f'{_fmt(report["pose_error"]["mean"], ".2f")} | same |')
  if summary and summary.get('eval'):
    lines.append(f'| training eval NME (last eval of the run) | '
                 f'{_fmt(summary["eval"].get("nme"))} | the run\'s eval '
                 'split |')
  lines += [
      '| **TODO(trainer)**: AFLW2000-3D NME 2D, mean of yaw bins | TODO | '
      f'`jaxface eval --model {info["name"]} --data AFLW2000` |',
      '| **TODO(trainer)**: more metrics | TODO | |', '',
      '## Limitations', '',
  ]
  if source == 'synthetic' and not mix:
    lines.append('- Trained only on procedurally rendered faces: expect a '
                 'domain gap on real photos (lighting, texture, hair, '
                 'occluders).')
  lines += ['- **TODO(trainer)**: known failure cases.', '']
  return '\n'.join(lines)


def export(workdir: str, name: str, out: str | None = None, *,
           step: int | None = None, overwrite: bool = False,
           eval_count: int = SYNTHETIC_EVAL_COUNT,
           eval_seed: int = SYNTHETIC_EVAL_SEED,
           max_bytes: int = MAX_BYTES) -> dict:
  """Writes a `prnet` or `cycle` workdir's network as shipped model `name`.

  The weights are the last (or `step`'s) checkpoint's PRNet params (its EMA
  weights when the run kept them) and batch_stats, stored as float16. The
  model is then loaded back from the new files and measured on
  `eval_count` synthetic faces rendered from `eval_seed`
  (`synthetic_eval_spec`); model.json records the NME, and the card the
  report. The folder is written beside the target and renamed into place
  only when complete.

  Args:
    workdir: a training workdir of task prnet or cycle.
    name: the model's name (`check_name`): the folder `out/name`.
    out: the models folder (default: `models_dir()`, the package's).
    step: the checkpoint (default: the last).
    overwrite: replace an existing model of that name.
    eval_count: faces of the synthetic measurement (0: none; metrics then
      hold no synthetic_nme).
    eval_seed: their seed; must differ from a synthetic training set's.
    max_bytes: the most the three files may weigh together.

  Returns:
    The model.json written.

  Raises:
    PretrainedError: a bad name, an existing model without `overwrite`, a
      workdir of another task, weights that do not fit float16, or files
      over `max_bytes` (nothing is written then).
    FileNotFoundError: not a workdir or no such checkpoint.
  """
  import jaxface  # pylint: disable=g-import-not-at-top
  from jaxface.train import trained as trained_lib  # pylint: disable=g-import-not-at-top
  check_name(name)
  if eval_count < 0:
    raise PretrainedError(f'the eval count must be >= 0, got {eval_count}')
  root = models_dir(out)
  target = os.path.join(root, name)
  if os.path.exists(target) and not overwrite:
    raise PretrainedError(f'{target} already exists; pass --overwrite to '
                          'replace it')
  run = trained_lib.load(workdir, step)
  if run.task not in trained_lib.RECONSTRUCTION_TASKS:
    raise PretrainedError(f'{workdir} trained task {run.task!r}; only a '
                          'reconstruction network (prnet or cycle) can ship')
  _, variables = trained_lib.prnet(run)
  data = _training_data(run.config)
  if (eval_count and data and data.get('source') == 'synthetic'
      and data.get('seed') == eval_seed):
    raise PretrainedError(
        f'the synthetic eval set would be rendered with the training data\'s '
        f'seed {eval_seed}; pass another --eval-seed')
  summary = _read_json(os.path.join(workdir, 'summary.json'))
  info: dict[str, Any] = {
      'format': FORMAT, 'version': VERSION, 'name': name,
      'network': 'PRNet', 'task': 'prnet', 'source_task': run.task,
      'resolution': run.resolution,
      'architecture': _json_config(run.config.model),
      'uv_layout': run.layout.to_json(),
      'parameters': count_parameters(variables['params']),
      'weights': {'file': WEIGHTS_FILE, 'dtype': 'float16',
                  'ema': bool(run.ema_params)},
      'step': run.step, 'config': _json_config(run.config),
      'source': {'workdir': os.path.abspath(workdir),
                 'exported': datetime.datetime.now(
                     datetime.timezone.utc).isoformat(timespec='seconds'),
                 'jaxface_version': jaxface.__version__},
      'metrics': {},
  }
  os.makedirs(root, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f'.export-{name}-', dir=root)
  try:
    folder = os.path.join(staging, name)
    os.makedirs(folder)
    weights = os.path.join(folder, WEIGHTS_FILE)
    info['weights']['arrays'] = _write_weights(weights, variables)
    info['weights']['bytes'] = os.path.getsize(weights)
    info['weights']['sha256'] = files.sha256_of(weights)
    if info['weights']['bytes'] > max_bytes:
      raise PretrainedError(
          f'the weights of {workdir} take {info["weights"]["bytes"] / 1e6:.1f}'
          f' MB as float16 ({info["parameters"]:,} parameters), over the '
          f'{max_bytes / 1e6:g} MB a shipped model may weigh; train a '
          'narrower PRNet (--config.model.width=0.5 fits)')
    files.write_json(os.path.join(folder, INFO_FILE), info)
    report = None
    if eval_count:
      spec = synthetic_eval_spec(
          run.resolution, eval_count, eval_seed,
          (data or {}).get('crop_jitter', synthetic_default_jitter()))
      print(f'measuring the exported weights on {eval_count} synthetic faces '
            f'(seed {eval_seed}) ...')
      report = measure_synthetic(trained_lib.load_pretrained(name, staging),
                                 spec)
      info['metrics'] = {'synthetic_nme': report['nme_2d']['mean'],
                         'synthetic_eval': spec}
      files.write_json(os.path.join(folder, INFO_FILE), info)
    with open(os.path.join(folder, CARD_FILE), 'w', encoding='utf-8') as f:
      f.write(_card(info, summary, data, report,
                    _training_data(run.config, 'mix')))
    total = sum(os.path.getsize(os.path.join(folder, n))
                for n in os.listdir(folder))
    if total > max_bytes:
      raise PretrainedError(f'the model\'s files take {total / 1e6:.2f} MB, '
                            f'over the {max_bytes / 1e6:g} MB limit')
    if os.path.exists(target):  # moved aside, removed with the staging
      os.replace(target, os.path.join(staging, '.replaced'))
    os.replace(folder, target)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return info


# ------------------------------------------------------------------- CLI ----


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--workdir', required=True,
                      help='workdir of a `jaxface train` run (prnet or cycle)')
  parser.add_argument('--name', required=True,
                      help=f'the model\'s name (e.g. {DEFAULT_MODEL}, the '
                      'default of reconstruct and generate)')
  parser.add_argument('--out', default=None,
                      help='the models folder to write NAME/ into (default: '
                      f'${ENV_DIR} if set, else the package\'s '
                      'jaxface/pretrained/)')
  parser.add_argument('--step', type=int, default=None,
                      help='checkpoint step (default: the last)')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace a model of that name')
  parser.add_argument('--eval-count', type=int, default=SYNTHETIC_EVAL_COUNT,
                      help='synthetic faces to measure the exported weights '
                      f'on (default {SYNTHETIC_EVAL_COUNT}; 0: skip)')
  parser.add_argument('--eval-seed', type=int, default=SYNTHETIC_EVAL_SEED,
                      help='seed of those faces (default '
                      f'{SYNTHETIC_EVAL_SEED})')


def run(args) -> int:
  """The `jaxface export` command; returns the exit status."""
  info = export(args.workdir, args.name, args.out, step=args.step,
                overwrite=args.overwrite, eval_count=args.eval_count,
                eval_seed=args.eval_seed)
  folder = os.path.join(models_dir(args.out), args.name)
  total = sum(os.path.getsize(os.path.join(folder, n))
              for n in os.listdir(folder))
  print(f'exported {args.workdir} (step {info["step"]}, '
        f'{info["parameters"]:,} parameters) as {args.name!r}: {folder} '
        f'({total / 1e6:.2f} MB)')
  nme = info['metrics'].get('synthetic_nme')
  if nme is not None:
    print(f'  68-landmark NME on {info["metrics"]["synthetic_eval"]["count"]}'
          f' synthetic faces: {nme:.4f}')
  print(f'  fill in the TODO(trainer) fields of {os.path.join(folder, CARD_FILE)}')
  return 0
