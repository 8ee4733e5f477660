"""Folders that the pytest-xdist workers of one test session share.

xdist runs a module's tests on whichever workers are free, and each worker
builds the module's fixtures again. For a fixture that trains (the ablation
runner's study), the second worker should wait for the first and reuse
what it wrote: `shared_folder` yields the session's folder of that name
under an exclusive lock (`fcntl.flock`), so one worker at a time builds or
reads it. Without xdist the folder is the session's own.
`synthetic_dataset` renders a synthetic dataset once per session, for
every module and worker that asks for the same config and counts.
`copied_parameters` reads a compiled module's parameter copies, for the
tests of in-place updates.
"""

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import pathlib
import re


@contextlib.contextmanager
def shared_folder(tmp_path_factory, name: str):
  """Yields `pathlib.Path` of the folder `name` shared by this session's
  workers, created if absent, while holding its lock."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent  # the session's base, above each worker's own
  folder = pathlib.Path(root) / name
  with open(pathlib.Path(root) / f'{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      folder.mkdir(exist_ok=True)
      yield folder
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def synthetic_dataset(tmp_path_factory, config, counts: dict) -> str:
  """The path of the synthetic dataset of `config` (a `SynthConfig`) and
  `counts` ({kind: {split: n}}), rendered once per session and shared by
  the xdist workers. Read it only: a test that changes a dataset renders
  its own."""
  from jaxface.data import synthetic  # pylint: disable=g-import-not-at-top
  key = hashlib.sha256(json.dumps(
      [dataclasses.asdict(config), counts], sort_keys=True).encode()
                       ).hexdigest()[:16]
  with shared_folder(tmp_path_factory, f'synthetic_{key}') as folder:
    out = folder / 'data'
    if not (out / 'dataset.json').exists():  # written last: complete
      synthetic.synthesize(str(out), config, counts, progress=False)
    return str(out)


def guard_retraces(monkeypatch) -> None:
  """Makes each run of the test fail on a retrace: every task that
  `loop.make_task` builds gets train and eval steps that may be traced once
  (`chex.assert_max_traces`). A retrace (a shape, dtype, weak type or
  sharding that changes between calls) costs a compile each time. The
  counts start again with each task, as a new process's would."""
  import chex  # pylint: disable=g-import-not-at-top
  from jaxface.train import loop  # pylint: disable=g-import-not-at-top
  make_task = loop.make_task

  def guarded(*args, **kwargs):
    chex.clear_trace_counter()
    task = make_task(*args, **kwargs)
    task.train_step = chex.assert_max_traces(task.train_step, n=1)
    task.eval_step = chex.assert_max_traces(task.eval_step, n=1)
    return task

  monkeypatch.setattr(loop, 'make_task', guarded)


def copied_parameters(compiled_hlo: str) -> list[str]:
  """The entry parameters, scalars aside, that a compiled module (its
  `as_text()`) copies whole: e.g. donated ones that XLA could not update in
  place."""
  entry = compiled_hlo[compiled_hlo.index('\nENTRY'):]
  entry = entry[:entry.index('\n}')]
  parameters = set(re.findall(r'^\s*%(\S+) = \w+\[[^\]]+\]\S* parameter\(',
                              entry, re.M))
  return sorted(name for name in re.findall(r' copy\(%([^)\s,]+)\)', entry)
                if name in parameters)
