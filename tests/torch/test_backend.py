"""Properties of the PyTorch backend that need no JAX counterpart: keyed
randomness, GEM's exact dual solver, BatchNorm statistics of memory
gradients, determinism of `fit`, and `experiments/train.py --backend=torch`."""

import itertools
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from jcl import specs
from jcl.data import benchmarks
from jcl.torch import algorithms
from jcl.torch import fit as fit_lib
from jcl.torch import models
from jcl.torch import random as random_lib
from jcl.torch import train_state as ts_lib
from jcl.torch.algorithms import projection
from jcl.types import Batch

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_keys_draw_reproducibly_and_uniformly():
  source = random_lib.TorchRandom(seed=7)
  key = source.key(step=3, salt=1)
  maxval = torch.tensor([1, 2, 5, 1000])
  assert torch.equal(source.randint(key, maxval), random_lib.TorchRandom(7).randint(key, maxval))
  assert not torch.equal(source.bits31(source.key(3, 1), 64), source.bits31(source.key(3, 2), 64))
  assert not torch.equal(source.bits31(source.key(3, 1), 64), source.bits31(source.key(4, 1), 64))
  draws = torch.cat([source.randint(k, torch.full((100,), 10)) for k in source.split(key, 200)])
  assert draws.min() == 0 and draws.max() == 9
  counts = torch.bincount(draws, minlength=10).double()
  chi2 = float(((counts - 2000) ** 2 / 2000).sum())
  assert chi2 < 33.7  # 9 degrees of freedom, p = 1e-4
  bits = source.bits31(key, 1000)
  assert bits.min() >= 0 and bits.max() < 2**31


def _brute_force_dual(q, b, lower):
  """`argmin_{v >= lower} 1/2 v^T q v + b^T v` by enumerating the free sets."""
  best, best_value = None, np.inf
  n = len(b)
  for free in itertools.product([False, True], repeat=n):
    free = np.array(free)
    v = lower.copy()
    if free.any():
      rhs = -(b[free] + q[np.ix_(free, ~free)] @ lower[~free])
      v[free] = np.linalg.lstsq(q[np.ix_(free, free)], rhs, rcond=None)[0]
    if np.all(v >= lower - 1e-12):
      value = 0.5 * v @ q @ v + b @ v
      if value < best_value - 1e-12:
        best, best_value = v, value
  return best


@pytest.mark.parametrize('margin', [0.0, 0.5])
def test_gem_projection_is_the_exact_dual_solution(margin):
  rng = np.random.default_rng(0)
  for trial in range(20):
    rows = rng.normal(size=(4, 12))
    if trial % 3 == 0:  # linearly dependent constraints
      rows[3] = rows[0] + rows[1]
    g = rng.normal(size=12) - rows.mean(0) * 2  # usually conflicting
    grads = {
      'w': torch.tensor(g[:8].reshape(2, 4), dtype=torch.float32),
      'b': torch.tensor(g[8:], dtype=torch.float32),
    }
    memory = [
      {
        'w': torch.tensor(r[:8].reshape(2, 4), dtype=torch.float32),
        'b': torch.tensor(r[8:], dtype=torch.float32),
      }
      for r in rows
    ]
    g32 = np.concatenate([grads['w'].numpy().ravel(), grads['b'].numpy()]).astype(np.float64)
    rows32 = np.stack(
      [np.concatenate([m['w'].numpy().ravel(), m['b'].numpy()]) for m in memory]
    ).astype(np.float64)
    out = projection.gem_project(grads, memory, margin=margin)
    z = np.concatenate([out['w'].numpy().ravel(), out['b'].numpy()])
    if np.all(rows32 @ g32 >= 0):
      np.testing.assert_array_equal(z, g32.astype(np.float32))
      continue
    v = _brute_force_dual(rows32 @ rows32.T, rows32 @ g32, np.full(4, margin))
    expected = g32 + v @ rows32
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-5)
    assert np.all(rows32 @ z >= -1e-4 * np.linalg.norm(z))  # inside the cone


def test_agem_keeps_the_batch_statistics_not_the_memory_ones():
  model = models.make_model('resnet18_reduced', (8, 8, 3), nf=2, num_classes=4, seed=0)
  state = ts_lib.create_train_state(
    model, specs.OptimizerSpec(learning_rate=0.1), num_classes=4, seed=0
  )
  algo = algorithms.build(
    specs.AGEMSpec(memory_per_task=4, memory_batch_size=4), algorithms.Context((8, 8, 3), 4, 2)
  )
  algo_state = algo.init(state)
  gen = torch.Generator().manual_seed(0)
  batch = lambda task: Batch(
    torch.randn(4, 8, 8, 3, generator=gen) * (1 + 3 * task),
    torch.tensor([0, 1, 2, 3]),
    torch.full((4,), task),
    torch.ones(4),
  )
  state, algo_state = algo.begin_task(state, algo_state, 0)
  state, algo_state, _ = algo.step(state, batch(0), algo_state)
  state, algo_state = algo.begin_task(state, algo_state, 1)
  current = batch(1)
  _, expected = ts_lib.apply_model(state, current.x, current.t, train=True)
  state, algo_state, metrics = algo.step(state, current, algo_state)  # memory of task 0 used
  for name, value in state.model_state.items():
    torch.testing.assert_close(value, expected[name], rtol=0, atol=0)


def _small_run(seed):
  bench = benchmarks.split_mnist(2, scenario='class', source='sample', samples_per_task=60, seed=0)
  model = models.make_model('mlp', bench.input_shape, widths=(16,), num_classes=10, seed=seed)
  state = ts_lib.create_train_state(
    model, specs.OptimizerSpec(learning_rate=0.05), num_classes=10, seed=seed
  )
  algo = algorithms.build(
    specs.ERSpec(memory_size=20, replay_batch_size=5), algorithms.Context(bench.input_shape, 10, 2)
  )
  result = fit_lib.fit(algo, state, bench, fit_lib.TrainConfig(seed=seed, chunk_steps=4))
  return result


def test_fit_is_deterministic_given_the_seed():
  a, b, c = _small_run(0), _small_run(0), _small_run(1)
  np.testing.assert_array_equal(a.accuracy_matrix, b.accuracy_matrix)
  for (name, p), (_, q) in zip(a.train_state.params.items(), b.train_state.params.items()):
    assert torch.equal(p, q), name
  assert torch.equal(a.algo_state.buffer.x, b.algo_state.buffer.x)
  assert not torch.equal(a.algo_state.buffer.x, c.algo_state.buffer.x)


def test_train_binary_runs_a_config_on_torch(tmp_path):
  """`experiments/train.py --backend=torch` writes the `results.json` of the JAX runner."""
  out = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.train',
      '--config=configs/der.py:split_mnist_class,20',
      '--backend=torch',
      f'--workdir={tmp_path}',
      '--config.benchmark.num_tasks=2',
      '--config.benchmark.samples_per_task=100',
      '--config.log.progress=False',
      '--config.log.plots=False',
      '--config.log.loggers=jsonl',
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
    env={**os.environ, 'OMP_NUM_THREADS': '1'},
  )  # as conftest.py: no spinning threads
  assert out.returncode == 0, out.stderr[-3000:]
  with open(tmp_path / 'results.json') as f:
    document = json.load(f)
  assert sorted(document) == sorted(
    [
      'config',
      'environment',
      'task_il_accuracy_matrix',
      'accuracy_matrix',
      'initial_accuracy',
      'summary',
      'timings',
      'history',
      'benchmark',
      'scenario',
      'algorithm',
    ]
  )
  assert document['environment']['backend'] == 'torch'
  assert document['algorithm'] == specs.DERSpec(memory_size=20, alpha=0.2).to_dict()
  matrix = np.array(document['accuracy_matrix'], dtype=float)
  assert matrix[1, 1] > 0.6  # the second pair of digits is learnt (chance 0.25)
