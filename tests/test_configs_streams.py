"""The image streams of configs/streams.py (Seq-CIFAR-10, Seq-TinyImageNet, Split
CIFAR-100): every config that takes a stream builds its RunSpec on each, the protocols
are the sources', and short runs on fake CIFAR files go through the binary."""

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import streams
from jcl.run_spec import RunSpec
from tests.data.test_cifar import write_cifar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = (
  'naive',
  'joint',
  'ewc',
  'online_ewc',
  'si',
  'mas',
  'lfl',
  'er',
  'der',
  'derpp',
  'agem',
  'gem',
)


def spec_of(method, arg):
  return RunSpec.from_config(importlib.import_module(f'configs.{method}').get_config(arg))


@pytest.mark.parametrize('stream', sorted(streams.STREAMS))
@pytest.mark.parametrize('method', METHODS)
def test_every_config_builds_its_run_spec(method, stream):
  spec = spec_of(method, stream)
  regime = streams.STREAMS[stream]
  assert spec.benchmark.name == regime.benchmark['name']
  assert spec.benchmark.options['num_tasks'] == regime.benchmark['num_tasks']
  assert spec.model.name == 'resnet18_reduced' and spec.model.options == {'nf': regime.model['nf']}
  assert (spec.train.batch_size, spec.train.epochs) == (regime.batch_size, regime.epochs)
  assert spec.optimizer.name == 'sgd' and spec.optimizer.momentum == 0.0


def test_protocols():
  c10 = spec_of('derpp', 'seq_cifar10,500')  # Mammoth best_args, seq-cifar10, derpp, 500
  assert c10.benchmark.options['scenario'] == 'class' and not c10.train.mask_unseen_classes
  assert c10.model.options['nf'] == 64 and c10.optimizer.learning_rate == 0.03
  assert (c10.algorithm.memory_size, c10.algorithm.replay_batch_size) == (500, 32)
  assert (c10.algorithm.alpha, c10.algorithm.beta) == (0.2, 0.5)
  tiny = spec_of('er', 'seq_tinyimagenet,500')
  assert tiny.benchmark.name == 'split_tinyimagenet' and tiny.train.epochs == 100
  assert tiny.optimizer.learning_rate == 0.03
  c100 = spec_of('agem', 'split_cifar100')  # A-GEM: 13 memories a class, memory batch 256
  options = c100.benchmark.options
  assert options['scenario'] == 'task' and options['multi_head'] and options['num_tasks'] == 20
  assert options['class_order'] == 'random' and options['val_fraction'] == 0.2
  assert c100.model.options['nf'] == 20 and c100.train.epochs == 1
  assert (c100.algorithm.memory_per_task, c100.algorithm.memory_batch_size) == (65, 256)
  assert spec_of('agem', 'seq_cifar10,500').algorithm.memory_per_task == 100  # 500 / 5 tasks
  assert spec_of('gem', 'split_cifar100').algorithm.memory_per_task == 256


def test_memory_argument_errors():
  with pytest.raises(ValueError, match='naive has no replay memory'):
    streams.method_config('naive', 'seq_cifar10', 200)
  with pytest.raises(ValueError, match='less than one sample for each task'):
    spec_of('gem', 'seq_tinyimagenet,5')
  with pytest.raises(ValueError, match='fixed memory per task'):
    spec_of('agem', 'permuted_mnist_online,200')


def train(tmp_path, config, *flags):
  """Runs `experiments.train`; returns results.json."""
  workdir = tmp_path / 'work'
  command = [sys.executable, '-m', 'experiments.train', f'--config={config}', *flags]
  command += [
    '--config.model.nf=4',  # a small ResNet: the run checks the path, not the numbers
    '--config.log.progress=False',
    '--config.log.plots=False',
    '--config.checkpoint.enabled=False',
    f'--workdir={workdir}',
  ]
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(workdir / 'results.json') as f:
    return json.load(f)


def test_seq_cifar10_binary_on_fake_files(tmp_path):
  folder, _ = write_cifar(tmp_path / 'data', 'cifar10', per_class=4, test_per_class=2)
  results = train(
    tmp_path,
    'configs/er.py:seq_cifar10,20',
    f'--config.benchmark.path={folder}',
    '--config.benchmark.samples_per_task=8',
    '--config.train.epochs=1',
    '--config.train.eval_batch_size=4',
  )
  assert np.asarray(results['accuracy_matrix']).shape == (5, 5)
  assert results['config']['benchmark']['name'] == 'split_cifar10'


def test_split_cifar100_binary_on_fake_files(tmp_path):
  data_dir = tmp_path / 'data'  # the folder the binary version was unpacked into
  write_cifar(data_dir, 'cifar100', binary=True, per_class=5, test_per_class=1)
  results = train(
    tmp_path,
    'configs/naive.py:split_cifar100',
    f'--config.benchmark.path={data_dir}',
    '--config.train.eval_batch_size=5',
  )
  assert np.asarray(results['accuracy_matrix']).shape == (20, 20)


def test_seq_tinyimagenet_builds_from_folder(tmp_path):
  from tests.data.test_data_sources import write_tiny_imagenet

  wnids = [f'n{i:08d}' for i in range(200)]
  write_tiny_imagenet(tmp_path / 'tiny-imagenet-200', wnids=wnids, n_train=1, n_val=1, size=64)
  config = importlib.import_module('configs.naive').get_config('seq_tinyimagenet')
  config.benchmark.path = str(tmp_path)
  bench = RunSpec.from_config(config).build_benchmark()
  assert bench.num_tasks == 10 and bench.input_shape == (64, 64, 3)
  assert [len(t.classes) for t in bench.tasks] == [20] * 10


MNIST_STREAMS = (
  'permuted_mnist',
  'rotated_mnist',
  'split_mnist',
  'split_mnist_class',
  'permuted_mnist_online',
)


@pytest.mark.parametrize('stream', MNIST_STREAMS)
@pytest.mark.parametrize(
  'name', ['naive', 'joint', 'ewc', 'online_ewc', 'si', 'mas', 'lfl', 'er', 'der', 'derpp']
)
def test_every_config_takes_every_mnist_stream(name, stream):
  """The README's promise: every config with every MNIST stream."""
  import importlib

  from jcl.run_spec import RunSpec

  config = importlib.import_module(f'configs.{name}').get_config(stream)
  spec = RunSpec.from_config(config)
  assert spec.algorithm.name == {'online_ewc': 'ewc'}.get(name, name)
