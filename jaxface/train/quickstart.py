"""`jaxface quickstart`: synthetic data, a small PRNet, an evaluation, a mesh.

Generates the built-in synthetic dataset in WORKDIR/data if it is not
there, trains experiments/configs/quickstart.py in WORKDIR/run, evaluates
it on the held-out synthetic split against the best constant prediction
(the mean face fitted to the crop), and writes a mesh of one test face.
"""

from __future__ import annotations

import os

import numpy as np

from jaxface import files
from jaxface.data import shards

QUICKSTART_COUNTS = {'recon': {'train': 6000, 'test': 256}}
# Identities of the training and held-out faces (disjoint).
QUICKSTART_IDENTITIES = (('train', 3000), ('test', 100))
# Crops centred on the landmarks: where the face sits in a jittered crop
# is what a PRNet learns last (experiments/diagnostics/prnet_learning.py),
# beyond a few minutes of CPU training.
QUICKSTART_CROP_JITTER = 0.0


def config_path() -> str:
  here = os.path.dirname(os.path.abspath(__file__))
  return os.path.join(os.path.dirname(os.path.dirname(here)), 'experiments',
                      'configs', 'quickstart.py')


def ensure_data(data: str, resolution: int, workers: int) -> None:
  """Makes the quickstart's synthetic dataset unless it is already there."""
  from jaxface.data import synthetic  # pylint: disable=g-import-not-at-top
  if os.path.exists(os.path.join(data, shards.DATASET_INFO)):
    info = shards.read_dataset_info(data)
    if info.get('made_by') != 'quickstart':
      raise FileExistsError(
          f'{data} holds a dataset that quickstart did not make; choose '
          'another --workdir')
    counts = {kind: {split: info['kinds'].get(kind, {}).get(split, {}).get(
        'count') for split in splits} for kind, splits in
              QUICKSTART_COUNTS.items()}
    if (info.get('generator_version') == synthetic.GENERATOR_VERSION and
        info.get('resolution') == resolution and
        info.get('crop_jitter') == QUICKSTART_CROP_JITTER and
        counts == QUICKSTART_COUNTS and
        info.get('identities') == dict(QUICKSTART_IDENTITIES)):
      print(f'using the synthetic dataset in {data}')
      return
  config = synthetic.SynthConfig(resolution=resolution,
                                 identities=QUICKSTART_IDENTITIES,
                                 crop_jitter=QUICKSTART_CROP_JITTER)
  print(f'rendering the synthetic dataset into {data} ...')
  synthetic.synthesize(data, config, QUICKSTART_COUNTS, workers=workers,
                       overwrite=True, extra_info={'made_by': 'quickstart'})


def write_test_mesh(run_dir: str, data: str, resolution: int) -> str:
  """Reconstructs one test face with the trained model; writes an OBJ."""
  from jaxface.data import records  # pylint: disable=g-import-not-at-top
  from jaxface.face import mesh_io  # pylint: disable=g-import-not-at-top
  from jaxface.models import prnet  # pylint: disable=g-import-not-at-top
  from jaxface.train import trained as trained_lib  # pylint: disable=g-import-not-at-top
  trained = trained_lib.load(run_dir)
  module, variables = trained_lib.prnet(trained)
  with shards.RecordReader(data, 'recon', 'test') as reader:
    record = reader[0]
  pixels = records.decode_jpeg(record['image'])
  pred = np.asarray(prnet.predict(module, variables,
                                  records.to_unit_float(pixels)[None],
                                  trained.layout.landmark_uv)[0])[0]
  mask = trained.layout.face_region(resolution)
  vertices, triangles, colours = mesh_io.position_map_to_mesh(
      pred, mask, pixels)
  path = os.path.join(run_dir, 'test_face.obj')
  mesh_io.write_obj(path, vertices, triangles, colours)
  return path


def check_arguments(workdir: str, resolution: int) -> None:
  """Raises unless the workdir can be written and PRNet takes crops of side
  `resolution` (a positive multiple of 32): before anything is rendered."""
  from jaxface.models import prnet  # pylint: disable=g-import-not-at-top
  prnet.check_resolution(resolution, '--resolution')
  files.check_output_folder(workdir, '--workdir')


def run(workdir: str, resolution: int, workers: int, overrides=()) -> dict:
  from jaxface.train import config_lib  # pylint: disable=g-import-not-at-top
  from jaxface.train import loop  # pylint: disable=g-import-not-at-top
  check_arguments(workdir, resolution)
  data = os.path.join(workdir, 'data')
  run_dir = os.path.join(workdir, 'run')
  config = config_lib.load_config(config_path())
  config = config_lib.apply_overrides(
      config, [f'data.dir={data}', *overrides])
  ensure_data(data, resolution, workers)
  summary = loop.run(config, run_dir)
  if not summary.get('stopped_by'):  # a stopped run has no final model
    summary['mesh'] = write_test_mesh(run_dir, data, resolution)
  return summary
