"""Both backends find the same algorithms by name, from the same specs.

Every registered algorithm builds on JAX and PyTorch from its small
hyperparameters (`tests.small`), both backends share one `Context` and one
table of replay policies, and on PyTorch too `end_task` reads the task's data
exactly when the spec's `uses_task_data` says so.
"""

import dataclasses
from typing import ClassVar

import jax
import numpy as np
import pytest
import torch

from jcl import algorithms
from jcl import models
from jcl import specs
from jcl import train_state as jax_ts_lib
from jcl import types
from jcl.algorithms import buffer as jax_buffer
from jcl.torch import algorithms as torch_algorithms
from jcl.torch import models as torch_models
from jcl.torch import train_state as torch_ts_lib
from jcl.torch.algorithms import base as torch_base
from jcl.torch.algorithms import buffer as torch_buffer

from tests.small import SMALL_HPARAMS, small_spec
from tests.torch import helpers

INPUT_SHAPE, NUM_CLASSES, BATCH = (6,), 3, 8
CONTEXT = types.Context(INPUT_SHAPE, NUM_CLASSES, num_tasks=2)
NAMES = algorithms.names()


def test_both_backends_have_every_registered_algorithm():
  defined = {
    cls.name
    for cls in vars(specs).values()
    if isinstance(cls, type)
    and issubclass(cls, specs.AlgorithmSpec)
    and cls is not specs.AlgorithmSpec
  }
  assert defined <= set(NAMES)
  assert torch_algorithms.names() == NAMES
  assert set(SMALL_HPARAMS) <= set(specs.SPECS) and set(SMALL_HPARAMS) <= set(NAMES)


@pytest.mark.parametrize('name', NAMES)
def test_every_algorithm_builds_on_both_backends(name):
  spec = small_spec(name)
  jax_algo = algorithms.build(spec, CONTEXT)
  torch_algo = torch_algorithms.build(spec, CONTEXT)
  assert jax_algo.spec == torch_algo.spec == spec
  flax_model = algorithms.adapt_model(
    spec, models.MLP(widths=(8,), num_classes=NUM_CLASSES), CONTEXT
  )
  jax_ts = jax_ts_lib.create_train_state(
    flax_model, specs.OptimizerSpec(), jax.random.PRNGKey(0), INPUT_SHAPE, NUM_CLASSES
  )
  jax_algo.init(jax_ts, jax.random.PRNGKey(0))
  torch_algo.init(torch_state(spec))


def test_one_context_and_one_policy_table():
  assert (
    algorithms.Context
    is algorithms.base.Context
    is torch_algorithms.Context
    is torch_base.Context
    is types.Context
  )
  assert tuple(jax_buffer.POLICIES) == tuple(torch_buffer.POLICIES) == specs.REPLAY_POLICIES


def test_submodules_and_unknown_algorithms():
  assert torch_algorithms.ewc.make is torch_algorithms.module('ewc').make
  assert torch_algorithms.buffer is torch_buffer

  @dataclasses.dataclass(frozen=True)
  class Unimplemented(specs.AlgorithmSpec):
    name: ClassVar[str] = 'test_torch_unimplemented'

  with pytest.raises(
    ValueError,
    match=r'no PyTorch implementation of algorithm '
    r"'test_torch_unimplemented'; known: agem, der",
  ):
    torch_algorithms.build(Unimplemented())
  with pytest.raises(ValueError, match='unknown buffer policy'):
    torch_buffer.add(None, None, None, None, policy='fifo')


def torch_state(spec):
  torch.manual_seed(0)
  model = torch_models.make_model('mlp', INPUT_SHAPE, num_classes=NUM_CLASSES, widths=(8,), seed=0)
  model = torch_algorithms.adapt_model(spec, model, CONTEXT)
  return torch_ts_lib.create_train_state(
    model, specs.OptimizerSpec(learning_rate=0.1), num_classes=NUM_CLASSES
  )


def after_one_step(name):
  """`(algo, train_state, algo_state)` after one step of task 0 (PyTorch)."""
  spec = small_spec(name)
  algo = torch_algorithms.build(spec, CONTEXT)
  state = torch_state(spec)
  algo_state = algo.init(state)
  state, algo_state = algo.begin_task(state, algo_state, 0)
  batch = helpers.random_batch(0, BATCH, INPUT_SHAPE, NUM_CLASSES)[1]
  state, algo_state, _ = algo.step(state, batch, algo_state)
  return algo, state, algo_state


def chunk(seed):
  return helpers.stack(
    [helpers.random_batch(10 * seed + k, BATCH, INPUT_SHAPE, NUM_CLASSES) for k in range(3)]
  )[1]


def leaves(tree) -> list[np.ndarray]:
  """Every tensor and number of a PyTorch (train or algorithm) state, in order."""
  if isinstance(tree, torch_ts_lib.TrainState):
    optimizer = tree.optimizer
    return leaves(
      [
        tree.model.state_dict(),
        tree.step,
        tree.task,
        optimizer.learning_rate,
        optimizer.count,
        optimizer.trace,
        optimizer.mu,
        optimizer.nu,
      ]
    )
  if isinstance(tree, torch.Tensor):
    return [tree.detach().cpu().numpy().copy()]
  if dataclasses.is_dataclass(tree):
    return leaves([getattr(tree, f.name) for f in dataclasses.fields(tree)])
  if isinstance(tree, dict):
    return [leaf for key in sorted(tree) for leaf in leaves(tree[key])]
  if isinstance(tree, (list, tuple)):
    return [leaf for item in tree for leaf in leaves(item)]
  return [] if tree is None else [np.asarray(tree)]


@pytest.mark.parametrize('name', NAMES)
def test_end_task_reads_the_task_data_iff_the_spec_says_so(name):
  """As tests/algorithms/test_protocol.py, on PyTorch (whose `end_task`
  updates the states in place: each run starts from a fresh copy)."""
  uses_data = specs.SPECS[name].uses_task_data
  algo, state, algo_state = after_one_step(name)
  with_data = leaves(algo.end_task(state, algo_state, chunk(1)))
  algo, state, algo_state = after_one_step(name)
  other = leaves(algo.end_task(state, algo_state, chunk(2) if uses_data else None))
  assert len(other) == len(with_data)
  same = [a.shape == b.shape and np.array_equal(a, b) for a, b in zip(with_data, other)]
  if uses_data:
    assert not all(same), f'{name}: end_task does not depend on its data'
  else:
    assert all(same), f'{name}: end_task reads its data but uses_task_data is False'
