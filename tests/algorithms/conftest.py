"""Tiny models and batches for the algorithms' property tests."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcl import models
from jcl import specs
from jcl import train_state as ts_lib
from jcl.types import Batch

INPUT_DIM, NUM_CLASSES = 6, 3


MODEL = models.MLP(widths=(8,), num_classes=NUM_CLASSES)


def tiny_state(seed=0, lr=0.1, momentum=0.0, model=MODEL):
  """States sharing `model` (and equal optimizer specs) stack into one pytree."""
  return ts_lib.create_train_state(
    model,
    specs.OptimizerSpec(learning_rate=lr, momentum=momentum),
    jax.random.PRNGKey(seed),
    (INPUT_DIM,),
    NUM_CLASSES,
  )


def random_batch(seed=0, size=8, task=0):
  rng = np.random.default_rng(seed)
  return Batch(
    jnp.asarray(rng.normal(size=(size, INPUT_DIM)), jnp.float32),
    jnp.asarray(rng.integers(0, NUM_CLASSES, size), jnp.int32),
    jnp.full((size,), task, jnp.int32),
    jnp.ones((size,), jnp.float32),
  )


def random_chunk(seed=0, steps=3, size=8, task=0):
  batches = [random_batch(seed * 100 + k, size, task) for k in range(steps)]
  return Batch(*[jnp.stack(xs) for xs in zip(*batches)])


@pytest.fixture
def state():
  return tiny_state()
