"""Shared pieces of the parity tests: the same model, state, batches and random
numbers on both backends.

`JaxRandom` is a `jcl.torch.random.RandomSource` that draws with `jax.random`
from the JAX train state's keys, so a PyTorch replay buffer makes exactly
the choices of the JAX one (the randomness is fed in from outside).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import torch

from jcl import models
from jcl import specs
from jcl import train_state as jax_ts
from jcl.torch import convert
from jcl.torch import models as torch_models
from jcl.torch import train_state as torch_ts
from jcl.types import Batch

RTOL, ATOL = 1e-5, 1e-6


@jax.jit
def _step_key(base_key, step, salt):
  return jax.random.fold_in(jax.random.fold_in(base_key, step), salt)


@jax.jit
def _randint(key, maxval):
  return jax.random.randint(key, maxval.shape, 0, maxval)


@functools.partial(jax.jit, static_argnums=1)
def _bits31(key, num):
  return (jax.random.bits(key, (num,), jnp.uint32) >> 1).astype(jnp.int32)


_split = jax.jit(jax.random.split, static_argnums=1)
_permutation = jax.jit(jax.random.permutation, static_argnums=1)


@functools.partial(jax.jit, static_argnums=2)
def _categorical(key, logits, num):
  return jax.random.categorical(key, logits, shape=(num,))


class JaxRandom:
  """`jax.random` behind the `RandomSource` interface: `key(step, salt)` is the
  JAX state's `step_rng(salt)` at that step, and the draws are those of
  `jcl.algorithms.buffer` (`randint(key, maxval.shape, 0, maxval)`,
  `bits(key, (n,)) >> 1`)."""

  def __init__(self, base_key):
    self.base_key = base_key

  def key(self, step, salt=0):
    return _step_key(self.base_key, step, salt)

  def split(self, key, num):
    return list(_split(key, num))

  def randint(self, key, maxval):
    maxval = jnp.asarray(maxval.cpu().numpy(), jnp.int32)
    return torch.from_numpy(np.array(_randint(key, maxval))).long()

  def bits31(self, key, num):
    return torch.from_numpy(np.array(_bits31(key, num))).long()

  def fold_in(self, key, data):
    return jax.random.fold_in(key, data)

  def permutation(self, key, num):
    return torch.from_numpy(np.array(_permutation(key, num))).long()

  def categorical(self, key, logits, num):
    logits = jnp.asarray(logits.cpu().numpy())
    return torch.from_numpy(np.array(_categorical(key, logits, num))).long()


# `jcl.train_state.create_train_state`, compiled (flax's op-by-op init of a
# ResNet takes tens of seconds on a loaded CPU), with XLA's cheap compilation.
_create_train_state = jax.jit(
  jax_ts.create_train_state,
  static_argnums=(0, 1, 3, 4),
  compiler_options={'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True},
)


def make_states(
  model_name='mlp', input_shape=(6,), num_classes=4, optimizer=None, seed=0, **model_fields
):
  """`(jax_state, torch_state)`: the same model, weights, optimizer and random keys."""
  optimizer = optimizer or specs.OptimizerSpec(learning_rate=0.1)
  flax_model = models.make_model(model_name, num_classes=num_classes, **model_fields)
  jax_state = _create_train_state(
    flax_model, optimizer, jax.random.PRNGKey(seed), tuple(input_shape), num_classes
  )
  torch_model = torch_models.make_model(
    model_name, input_shape, num_classes=num_classes, **model_fields
  )
  torch_model.load_state_dict(
    convert.flax_to_torch({'params': jax_state.params, **jax_state.model_state})
  )
  torch_state = torch_ts.create_train_state(
    torch_model, optimizer, num_classes=num_classes, rng=JaxRandom(jax_state.rng)
  )
  return jax_state, torch_state


def random_batch(seed, size, input_shape, num_classes, task=0, real=None):
  """A batch as `(jax Batch, torch Batch)`; `real` samples have mask 1 (default all)."""
  rng = np.random.default_rng(seed)
  real = size if real is None else real
  x = rng.normal(size=(size, *input_shape)).astype(np.float32)
  y = rng.integers(0, num_classes, size).astype(np.int32)
  t = np.full(size, task, np.int32)
  mask = (np.arange(size) < real).astype(np.float32)
  return Batch(*map(jnp.asarray, (x, y, t, mask))), Batch(*map(torch.from_numpy, (x, y, t, mask)))


def stack(batches):
  """A chunk `[K, B, ...]` from a list of `(jax, torch)` batch pairs."""
  jax_chunk = Batch(*[jnp.stack(parts) for parts in zip(*[b[0] for b in batches])])
  torch_chunk = Batch(*[torch.stack(parts) for parts in zip(*[b[1] for b in batches])])
  return jax_chunk, torch_chunk


def torch_variables(torch_state):
  """The PyTorch model's weights in flax's layout (NumPy)."""
  return convert.torch_to_flax(torch_state.model.state_dict())


def jax_variables(jax_state):
  return {'params': jax_state.params, **jax_state.model_state}


def assert_trees_close(jax_tree, torch_tree, rtol=RTOL, atol=ATOL, what=''):
  jax_leaves = jax.tree_util.tree_leaves_with_path(jax_tree)
  torch_leaves = jax.tree_util.tree_leaves_with_path(torch_tree)
  assert [p for p, _ in jax_leaves] == [p for p, _ in torch_leaves], what
  for (path, a), (_, b) in zip(jax_leaves, torch_leaves):
    np.testing.assert_allclose(
      np.asarray(b),
      np.asarray(a),
      rtol=rtol,
      atol=atol,
      err_msg=f'{what} {jax.tree_util.keystr(path)}',
    )


def assert_states_close(jax_state, torch_state, rtol=RTOL, atol=ATOL, what='params'):
  """Weights (and BatchNorm statistics) of both backends agree."""
  assert int(jax_state.step) == torch_state.step
  assert_trees_close(jax_variables(jax_state), torch_variables(torch_state), rtol, atol, what)


def assert_metrics_close(jax_metrics, torch_metrics, what=''):
  """The same metric names on both backends, each value close (`what` names the step)."""
  assert sorted(torch_metrics) == sorted(jax_metrics), what
  for key, value in jax_metrics.items():
    np.testing.assert_allclose(
      float(torch_metrics[key]), float(value), rtol=RTOL, atol=ATOL, err_msg=f'{what} {key}'
    )


def as_numpy(x):
  return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
