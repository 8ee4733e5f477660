"""`jaxface bench`: every requested measurement in the JSON, XLA's FLOPs
against counts from the architecture, and bad options refused at once.

No timing assertions: speed is measured by the benchmark, never by tests.
"""

import argparse
import collections
import json
import math
import os
import re

import flax.linen as nn
import jax
import numpy as np
import pytest
import shared

from jaxface import bench
from jaxface import cli
from jaxface.data import augment
from jaxface.data import device_augment
from jaxface.data import shards
from jaxface.data import synthetic
from jaxface.models import PRNet
from jaxface.models import layers
from jaxface.models import prnet
from jaxface.train import loop

TINY = ['--resolution', '32', '--width', '0.125', '--batch', '2',
        '--infer-batch', '2', '--repeats', '1', '--warmup', '0',
        '--records', '2']


@pytest.fixture(scope='module')
def result(tmp_path_factory):
  """The JSON of a whole run, and under 'counted' the kinds of program
  whose FLOPs it counted."""
  path = tmp_path_factory.mktemp('bench') / 'bench.json'
  # test_train's dataset, shared by the session (rendering one here would
  # start worker processes).
  data = shared.synthetic_dataset(tmp_path_factory, synthetic.SynthConfig(
      resolution=32, identities=(('train', 20), ('test', 5))),
                                  {'recon': {'train': 64, 'test': 16}})
  counted, xla_flops = [], bench.xla_flops

  def spy(stage):
    counted.append(type(stage).__name__)
    return xla_flops(stage)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(bench, 'xla_flops', spy)
    status = cli.main(['bench', '--what', 'train,infer,pipeline,synth', *TINY,
                       '--data', data, '--peak-flops', '1e12', '--json',
                       str(path)])
  assert status == 0
  with open(path) as f:
    return {**json.load(f), 'counted': counted}


def _positive(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow  # the whole benchmark, end to end
def test_every_measurement_has_positive_finite_figures(result):
  rows = {row['name']: row for row in result['measurements']}
  assert list(rows) == ['train_b2', 'forward_b2', 'reconstruct_b2',
                        'pipeline', 'synth']
  for row in rows.values():
    assert len(row['seconds']) == 1
    for key in ('median_s', 'min_s', 'max_s', 'images_per_s'):
      assert _positive(row[key]), (row['name'], key, row[key])
    assert row['min_s'] <= row['median_s'] <= row['max_s']
  for name in ('train_b2', 'forward_b2'):  # XLA's FLOPs, and the given peak
    for key in ('flops_per_image', 'peak_fraction', 'compile_s'):
      assert _positive(rows[name][key]), (name, key, rows[name][key])
  assert _positive(rows['train_b2']['init_s'])
  # The programs as lowered: a GPU's compiled ones leave cuDNN's
  # convolutions out of the count.
  assert result['counted'] == ['Lowered', 'Lowered']
  assert _positive(rows['pipeline']['vs_train'])
  assert result['peak_flops'] == 1e12
  assert result['machine']['jax'] == jax.__version__
  assert result['command'].startswith('jaxface bench --what '
                                      'train,infer,pipeline,synth ')


@pytest.mark.slow  # the whole benchmark, end to end
def test_train_step_counts_forward_and_backward(result):
  """The backward pass costs about twice the forward (convolutions' input
  and kernel gradients), plus training-mode BatchNorm and Adam."""
  rows = {row['name']: row for row in result['measurements']}
  ratio = rows['train_b2']['flops_per_image'] / rows['forward_b2'][
      'flops_per_image']
  assert 2.5 < ratio < 6, ratio


def test_prints_one_table_row_per_measurement(capsys):
  assert cli.main(['bench', '--what', 'synth', *TINY]) == 0
  out = capsys.readouterr().out
  rows = [line for line in out.splitlines() if line.startswith('| synth')]
  assert len(rows) == 1 and rows[0].endswith('| - | - |'), out
  assert 'command: jaxface bench --what synth --model prnet ' in out
  digest = re.search(r'sha256 of train records 0-15: ([0-9a-f]{64})', out)
  assert digest, out
  # The fingerprint is of the renders: a second run (other timing) prints
  # the same, another resolution another.
  assert cli.main(['bench', '--what', 'synth', *TINY]) == 0
  assert digest.group(0) in capsys.readouterr().out
  other = [*TINY]
  other[other.index('--resolution') + 1] = '64'
  assert cli.main(['bench', '--what', 'synth', *other]) == 0
  assert digest.group(1) not in capsys.readouterr().out


def test_synth_start_times_the_data_command_as_a_new_process(tmp_path,
                                                             monkeypatch):
  path = tmp_path / 'bench.json'
  assert cli.main(['bench', '--what', 'synth_start', *TINY, '--json',
                   str(path)]) == 0
  with open(path) as f:
    (row,) = json.load(f)['measurements']
  assert row['name'] == 'synth_start' and row['images'] == 2
  assert len(row['seconds']) == 1 and _positive(row['images_per_s'])
  # A failing command is reported with its error, not timed.
  monkeypatch.setattr(bench.sys, 'executable', '/bin/false')
  with pytest.raises(RuntimeError, match='jaxface data synth failed'):
    cli.main(['bench', '--what', 'synth_start', *TINY])


def _conv_pairs(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """(output, tap) pairs of a 'SAME' convolution along one axis that read
  an input element (padding left out), and the output size."""
  out = -(-size // stride)
  low = max((out - 1) * stride + kernel - size, 0) // 2
  pairs = sum(0 <= o * stride + t - low < size
              for o in range(out) for t in range(kernel))
  return pairs, out


def prnet_conv_flops(resolution: int, width: float, batch: int) -> int:
  """2 x the multiply-adds of PRNet's convolutions, from ENCODER, DECODER,
  the module docstring's blocks and the width rule."""
  def channels(c):
    return c if c == 3 else max(2, int(round(c * width / 2)) * 2)

  total = 0

  def conv(size, kernel, stride, cin, cout):
    nonlocal total
    pairs, out = _conv_pairs(size, kernel, stride)
    total += 2 * batch * pairs**2 * cin * cout
    return out

  size, c = resolution, channels(16)
  conv(size, 4, 1, 3, c)
  for features, stride in prnet.ENCODER:
    cout = channels(features)
    if stride != 1 or c != cout:
      conv(size, 1, stride, c, cout)  # the projection shortcut
    conv(size, 1, 1, c, cout // 2)
    out = conv(size, 4, stride, cout // 2, cout // 2)
    conv(out, 1, 1, cout // 2, cout)
    size, c = out, cout
  for features, stride in prnet.DECODER:
    cout = channels(features)
    if stride == 1:
      conv(size, 4, 1, c, cout)
    else:
      # Transposed, kernel 4, stride 2: out[2i] reads x[i - 1], x[i] and
      # out[2i + 1] reads x[i], x[i + 1]: 4 n - 2 pairs in range.
      total += 2 * batch * (4 * size - 2)**2 * c * cout
      size *= 2
    c = cout
  return total


def test_xla_flops_of_prnet_match_its_convolutions(monkeypatch):
  """XLA's count also holds BatchNorm, ReLU, the residual sums and the
  sub-pixel interleave: a few % at this size, never below the
  convolutions. With the CPU's stride-1 forms (`layers.conv_stride1`:
  more multiplications, done faster) it is higher; the plain
  convolutions are counted first. The program as lowered for a GPU (which
  the bench counts there: its compiled convolutions are cuDNN calls that
  XLA does not count) has the plain convolutions."""
  model = PRNet(width=0.25)
  images = np.zeros((2, 64, 64, 3), np.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)

  def flops(platform='cpu'):
    return bench.xla_flops(jax.jit(lambda v, x: model.apply(v, x)).trace(
        variables, images).lower(lowering_platforms=(platform,)))

  convolutions = prnet_conv_flops(64, 0.25, 2)
  assert 1.0 <= flops('cuda') / convolutions < 1.06, flops('cuda')
  with_forms = flops()
  monkeypatch.setattr(layers, 'conv_stride1', layers._direct_conv)  # pylint: disable=protected-access
  ratio = flops() / convolutions
  assert 1.0 <= ratio < 1.06, ratio
  # The blocks form does 2.25x (4x4 kernels) to 4x (3x3) the first
  # convolution's and the head's multiplications.
  assert 1.1 < with_forms / flops() < 2.0, with_forms / flops()


def test_xla_flops_of_one_convolution_in_closed_form():
  conv = nn.Conv(7, (3, 3), padding='VALID', use_bias=False)
  x = np.zeros((2, 10, 12, 5), np.float32)
  variables = conv.init(jax.random.key(0), x)
  lowered = jax.jit(conv.apply).lower(variables, x)
  expected = 2 * 2 * 8 * 10 * (3 * 3 * 5) * 7
  assert bench.xla_flops(lowered) == expected
  assert bench.xla_flops(lowered.compile()) == expected  # on the CPU


def test_peaks_by_device_kind():
  assert bench.peak_flops('NVIDIA H200', 'bfloat16')[0] == 989.4e12
  assert bench.peak_flops('NVIDIA H100 PCIe', 'bfloat16')[0] == 756.5e12
  assert bench.peak_flops('TPU v5 lite', 'bfloat16')[0] == 197e12
  assert bench.peak_flops('TPU v5', 'bfloat16')[0] == 459e12
  assert bench.peak_flops('TPU v4', 'float32')[0] is None
  assert bench.peak_flops('cpu', 'bfloat16')[0] is None
  assert bench.peak_flops('cpu', 'float32', 2e11) == (2e11, '--peak-flops')


_CPUINFO = """processor\t: 0
vendor_id\t: {vendor}
cpu family\t: {family}
model name\t: Some server CPU
cpu MHz\t\t: 2100.000
flags\t\t: fpu sse sse2 {extra} popcnt
"""


@pytest.mark.parametrize('vendor, family, extra, cores, expected', [
    ('GenuineIntel', 6, 'avx avx2 fma avx512f avx512bw', 2, 2 * 64 * 2.1e9),
    ('GenuineIntel', 6, 'avx avx2 fma', 4, 4 * 32 * 2.1e9),
    ('AuthenticAMD', 25, 'avx avx2 fma avx512f', 2, 2 * 32 * 2.1e9),  # Zen 4
    ('AuthenticAMD', 25, 'avx avx2 fma', 2, 2 * 32 * 2.1e9),  # Zen 3
    ('AuthenticAMD', 26, 'avx avx2 fma avx512f', 2, 2 * 64 * 2.1e9),  # Zen 5
    ('GenuineIntel', 6, 'avx avx2', 2, None),  # AVX2 without FMA
    ('GenuineIntel', 6, 'ssse3', 2, None),
])
def test_cpu_peak_from_cpuinfo(vendor, family, extra, cores, expected):
  peak, how = bench.cpu_peak_flops(
      _CPUINFO.format(vendor=vendor, family=family, extra=extra), cores)
  if expected is None:
    assert peak is None and how.startswith('unknown')
  else:
    assert peak == pytest.approx(expected)
    assert how.startswith(f'estimated: {cores} cores x ')
  assert bench.cpu_peak_flops('processor\t: 0\n', 2)[0] is None


@pytest.mark.parametrize('options, message', [
    (['--what', 'train,bogus'], "--what: unknown measurement(s) ['bogus']"),
    (['--what', ','], '--what: unknown measurement'),
    (['--batch', '0'], '--batch must be >= 1, got 0'),
    (['--batch', '4,0'], '--batch must be >= 1, got 0'),
    (['--batch', '4,'], '--batch must be comma-separated'),
    (['--batch', '4,8,4'], "--batch lists a value twice: '4,8,4'"),
    (['--override', 'data.global_batch_size=8'], 'give the batch with --batch'),
    (['--repeats', '0'], '--repeats must be >= 1, got 0'),
    (['--repeats', '-2'], '--repeats must be >= 1, got -2'),
    (['--steps', '0'], '--steps must be >= 1, got 0'),
    (['--infer-batch', '1,0'], '--infer-batch must be >= 1, got 0'),
    (['--infer-batch', '1,x'], '--infer-batch must be comma-separated'),
    (['--resolution', '48'], '--resolution must be a positive multiple of 32'),
    (['--warmup', '-1'], '--warmup must be >= 0'),
    (['--override', 'model.nope=1'], 'model.nope'),
    (['--override', 'model.width'], 'model.width'),
    (['--config', 'experiments/configs/facegen.py'],
     "task 'facegen'; the bench measures PRNet"),
    (['--config', 'no/such/config.py'], 'no/such/config.py'),
    (['--what', 'train,infer', '--pretrained', 'synthetic'],
     '--pretrained measures inference: use it with --what infer'),
    (['--what', 'infer', '--pretrained', 'no-such-model'], 'no-such-model'),
    (['--what', 'infer', '--pretrained', 'synthetic', '--resolution', '64'],
     "the shipped model 'synthetic' runs at 96"),
])
def test_bad_options_give_one_error_line(capsys, options, message):
  assert cli.main(['bench', *options]) == 2
  captured = capsys.readouterr()
  assert captured.out == ''
  assert captured.err.startswith('jaxface: error: ')
  assert captured.err.count('\n') == 1 and message in captured.err, (
      captured.err)


def test_json_into_a_folder_is_refused(tmp_path, capsys):
  assert cli.main(['bench', '--what', 'synth', '--json', str(tmp_path)]) == 2
  assert 'is a folder' in capsys.readouterr().err


def test_the_config_and_overrides_reach_the_measured_network():
  quickstart = os.path.join('experiments', 'configs', 'quickstart.py')
  config = bench.train_config(None, 'float32', 3, quickstart,
                              ['model.coords=false'])
  # The config's own width (0.25) unless --width; the override last.
  assert config.model.width == 0.25 and config.model.head == 'conv'
  assert config.model.coords is False and config.data.global_batch_size == 3
  assert bench.train_config(0.5, 'float32', 3, quickstart).model.width == 0.5
  assert bench.train_config(None, 'float32', 3).model.width == 1.0
  args = argparse.Namespace(
      what_list=['train'], model='prnet', width=0.25, resolution=64,
      batches=[3, 8], steps=1, infer_batches=[1], dtype='float32',
      repeats=1, warmup=0,
      records=2, workers=0, data=None, json=None, peak_flops=None,
      config=quickstart, override=['model.coords=false'], pretrained=None)
  assert bench.command(args).endswith(
      f'--config {quickstart} --override model.coords=false')
  assert ' --batch 3,8 ' in bench.command(args)


def test_each_batch_is_a_train_row_of_its_own(monkeypatch):
  # A list of batches times the step once per batch, each compiled for a
  # config of that batch; the pipeline's ratio is against the first.
  seen = []

  calls = []

  def fake_compiled_train_step(config, resolution):
    size = config.data.global_batch_size
    seen.append((size, resolution))
    step = jax.jit(lambda state, batch: (state + 1, batch.sum()))
    state, batch = jax.numpy.zeros(()), jax.numpy.ones((size,))
    compiled = step.lower(state, batch).compile()

    def counted(state, batch):
      calls.append(size)
      return compiled(state, batch)

    return bench.TrainStep(counted, state, batch, compile_s=0.5, init_s=0.25,
                           flops=10.0 * size)

  monkeypatch.setattr(bench, 'compiled_train_step', fake_compiled_train_step)
  monkeypatch.setattr(bench, '_pipeline_seconds',
                      lambda data, args: ([0.1], 2 * args.batches[0]))
  args = cli.build_parser().parse_args(
      ['bench', '--what', 'train,pipeline', '--batch', '3,8', '--resolution',
       '32', '--repeats', '2', '--warmup', '0', '--data', 'unused'])
  monkeypatch.setattr(shards, 'read_dataset_info',
                      lambda data: {'resolution': 32})
  bench.check_args(args)
  result = bench.benchmark(args)
  assert seen == [(3, 32), (8, 32)]
  rows = {row['name']: row for row in result['measurements']}
  assert list(rows) == ['train_b3', 'train_b8', 'pipeline']
  assert [rows[n]['images'] for n in ('train_b3', 'train_b8')] == [3, 8]
  assert rows['train_b8']['what'] == 'train step, batch 8'
  assert rows['train_b8']['flops_per_image'] == 10.0
  # Steps chained back to back: a repeat of 3 steps counts as 3 steps.
  args.steps = 3
  time_repeats = bench.time_repeats
  monkeypatch.setattr(bench, 'time_repeats', lambda fn, repeats, warmup: [
      6.0 for _ in time_repeats(fn, repeats, warmup)])
  calls.clear()
  row = bench.bench_train(args, None, 8)
  assert calls == [8] * 3 * (2 + 0)  # steps x (repeats + warmup)
  assert row['seconds'] == [2.0, 2.0] and row['images_per_s'] == 4.0
  assert row['images'] == 8 and row['flops_per_image'] == 10.0
  assert row['what'] == 'train step, batch 8 (3 back to back a repeat)'
  assert row['host_user_s'] >= 0 and row['host_system_s'] >= 0
  assert row['minor_faults'] >= 0
  assert ' --steps 3 ' in bench.command(args)
  assert rows['pipeline']['what'].endswith('batch 3')
  assert rows['pipeline']['vs_train'] == pytest.approx(
      rows['pipeline']['images_per_s'] / rows['train_b3']['images_per_s'])


def test_host_use_is_per_step():
  usage = collections.namedtuple('usage', 'ru_utime ru_stime ru_minflt')
  use = bench._host_use_per_step(usage(1.0, 0.5, 100), usage(3.0, 1.5, 700),  # pylint: disable=protected-access
                                 steps=4)
  assert use == {'host_user_s': 0.5, 'host_system_s': 0.25,
                 'minor_faults': 150}


def test_on_device_augmentation_is_timed_in_the_step(monkeypatch):
  on_device = []

  def fake_compiled_train_step(config, resolution):
    on_device.append(loop.augment_config(config).on_device)
    step = jax.jit(lambda state, batch: (state + 1, batch.sum()))
    state, batch = jax.numpy.zeros(()), jax.numpy.ones((3,))
    return bench.TrainStep(step.lower(state, batch).compile(), state, batch,
                           compile_s=0.5, init_s=0.25, flops=None)

  monkeypatch.setattr(bench, 'compiled_train_step', fake_compiled_train_step)
  args = cli.build_parser().parse_args(
      ['bench', '--what', 'train', '--batch', '3', '--resolution', '32',
       '--repeats', '1', '--warmup', '0', '--override',
       'data.augmentation.on_device=True'])
  bench.check_args(args)
  row = bench.bench_train(args, None, 3)
  assert on_device == [True]
  assert row['what'] == 'train step, batch 3, augmented in the step'
  # The batch such a step is compiled for: as the pipeline hands it on.
  batch = bench.random_batch(3, 32, augment.AugmentConfig(on_device=True))
  assert batch['image'].dtype == np.uint8
  assert batch['augment_matrix'].shape == (3, 2, 3)
  assert sorted(device_augment.apply(batch)) == sorted(
      bench.random_batch(3, 32))
  # The pipeline row says that it leaves the augmentation to the step.
  monkeypatch.setattr(bench, '_pipeline_seconds',
                      lambda data, args: ([0.1], 3))
  monkeypatch.setattr(shards, 'read_dataset_info',
                      lambda data: {'resolution': 32})
  args.data = 'unused'
  assert bench.bench_pipeline(args, None)['what'] == (
      'pipeline, 0 worker(s), batch 3, augmentation left to the step')


def test_a_real_step_with_on_device_augmentation_compiles_and_runs():
  quickstart = os.path.join('experiments', 'configs', 'quickstart.py')
  config = bench.train_config(0.125, 'float32', 2, quickstart, [
      'data.augment=True', 'data.augmentation.on_device=True'])
  step = bench.compiled_train_step(config, 32)
  # The donated state is updated in place (`optim.apply_gradients`).
  assert shared.copied_parameters(step.compiled.as_text()) == []
  assert step.batch['image'].dtype == np.uint8
  assert step.batch['augment_flip'].shape == (2,)
  _, metrics = step.compiled(step.state, step.batch)
  assert np.isfinite(float(metrics['loss']))


def test_a_shipped_model_is_measured_as_reconstruct_runs_it(tmp_path):
  path = tmp_path / 'bench.json'
  assert cli.main(['bench', '--what', 'infer', '--pretrained', 'synthetic',
                   '--infer-batch', '2', '--repeats', '1', '--warmup', '0',
                   '--json', str(path)]) == 0
  with open(path) as f:
    result = json.load(f)
  info = json.load(open(os.path.join(os.path.dirname(bench.__file__),
                                     'pretrained', 'synthetic',
                                     'model.json')))
  assert result['model'] == {'name': 'synthetic',
                             'width': info['architecture']['width'],
                             'resolution': info['resolution'],
                             'dtype': 'float32'}
  rows = {row['name']: row for row in result['measurements']}
  assert list(rows) == ['forward_b2', 'reconstruct_b2']
  # The shipped model averages each face with its mirror image.
  assert info['architecture']['flip_average']
  assert rows['forward_b2']['what'] == ('forward, batch 2 (and its mirror '
                                        'image)')
  assert all(_positive(row['images_per_s']) for row in rows.values())
  assert '--pretrained synthetic' in result['command']
  assert f'--resolution {info["resolution"]}' in result['command']
