"""Fixtures for the `jcl.models` tests.

Compiling is the slow part on CPU, so the numeric tests share a few small
canonical models, each initialized once per session (`init_variables` caches
its compiled function per model configuration and input shape), jit with
fast-compile options (the `jit` fixture), and shape-only checks use
`jax.eval_shape`, which compiles nothing.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import pytest

from jcl import models

# Shapes of one MNIST-like and one CIFAR-like input (NHWC, no batch axis).
INPUT_SHAPES = {'mnist': (28, 28, 1), 'cifar': (32, 32, 3)}

NUM_CLASSES = 4
NUM_HEADS = 3

# name -> (model, input shape): small multi-head models with dropout where
# the architecture has it.
CANONICAL = {
  'mlp': (
    models.MLP(widths=(32, 16), num_classes=NUM_CLASSES, num_heads=NUM_HEADS, dropout=0.5),
    (28, 28, 1),
  ),
  'cnn': (
    models.CNN(
      channels=(4, 8), hidden=16, num_classes=NUM_CLASSES, num_heads=NUM_HEADS, dropout=0.5
    ),
    (28, 28, 1),
  ),
  'resnet': (
    models.ResNet18Reduced(nf=4, num_classes=NUM_CLASSES, num_heads=NUM_HEADS),
    (16, 16, 3),
  ),
}


@pytest.fixture(params=sorted(INPUT_SHAPES))
def input_shape(request) -> tuple[int, ...]:
  """Shape of one MNIST-like or CIFAR-like input."""
  return INPUT_SHAPES[request.param]


def _make_batch(
  input_shape, batch: int = 4, num_tasks: int = 1, seed: int = 0
) -> tuple[jax.Array, jax.Array]:
  """Returns `x` `[batch, *input_shape]` float32 and `t` `[batch]` int32."""
  kx, kt = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(kx, (batch, *input_shape), jnp.float32)
  t = jax.random.randint(kt, (batch,), 0, num_tasks, jnp.int32)
  return x, t


def _abstract_variables(model, input_shape) -> Any:
  """Shapes/dtypes of `init_variables(model, ...)`, without compiling."""
  return jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0), input_shape))


# The tests run tiny models, so XLA's compile time dominates: compile without
# backend optimizations (several times faster to compile on CPU).
_FAST_COMPILE = {
  'xla_backend_optimization_level': 0,
  'xla_llvm_disable_expensive_passes': True,
}


@pytest.fixture
def jit():
  """`jax.jit` with fast-compile options (top-level jits only)."""
  if jax.default_backend() != 'cpu':
    return jax.jit
  return functools.partial(jax.jit, compiler_options=_FAST_COMPILE)


@pytest.fixture
def make_batch():
  """Returns `f(input_shape, batch=4, num_tasks=1, seed=0) -> (x, t)`."""
  return _make_batch


@pytest.fixture
def abstract_variables():
  """Returns `f(model, input_shape)`: `jax.eval_shape` of `init_variables`."""
  return _abstract_variables


@pytest.fixture(scope='session')
def canonical():
  """Returns `get(name) -> (model, input_shape, variables)` (cached)."""
  cache = {}

  def get(name):
    if name not in cache:
      model, shape = CANONICAL[name]
      cache[name] = (model, shape, models.init_variables(model, jax.random.key(0), shape))
    return cache[name]

  return get
