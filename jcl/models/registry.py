"""Model registry (`make_model`) and initialization helpers."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jcl.models.cnn import CNN
from jcl.models.mlp import MLP
from jcl.models.resnet import ResNet18Reduced

_REGISTRY: dict[str, type[nn.Module]] = {
  'mlp': MLP,
  'cnn': CNN,
  'resnet18_reduced': ResNet18Reduced,
}


def model_names() -> tuple[str, ...]:
  """Names accepted by `make_model`, sorted."""
  return tuple(sorted(_REGISTRY))


def register_model(name: str, cls: type[nn.Module]) -> None:
  """Adds a model class under `name` (ValueError if the name is taken).

  `cls` must be a `nn.Module` whose `__call__(x, t, *, train, return_features)`
  follows the convention of the built-in models.
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f'name must be a non-empty str, got {name!r}.')
  if name in _REGISTRY:
    raise ValueError(f'A model named {name!r} is already registered.')
  if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
    raise ValueError(f'cls must be a flax.linen.Module subclass, got {cls!r}.')
  _REGISTRY[name] = cls


def _fields(cls: type[nn.Module]) -> tuple[str, ...]:
  return tuple(
    f.name for f in dataclasses.fields(cls) if f.init and f.name not in ('parent', 'name')
  )


def make_model(name: str, **kwargs: Any) -> nn.Module:
  """Builds a registered model from its name and constructor fields.

  Args:
    name: one of `model_names()`: 'mlp', 'cnn', 'resnet18_reduced'.
    **kwargs: fields of the model class, e.g. `widths=(256, 256)`,
      `num_classes=10`, `num_heads=5`, `task_classes=[[0, 1], [2, 3]]`,
      `dropout=0.2`, `nf=20`. Lists are normalized to tuples.

  Returns:
    The (unbound) `nn.Module`.

  Raises:
    ValueError: for an unknown name (listing the valid ones), an unknown
      field, or an invalid value (naming the field).
  """
  if name not in _REGISTRY:
    raise ValueError(f'Unknown model {name!r}; valid names: {", ".join(model_names())}.')
  cls = _REGISTRY[name]
  fields = _fields(cls)
  unknown = sorted(set(kwargs) - set(fields))
  if unknown:
    raise ValueError(
      f'Unknown field(s) {unknown} for model {name!r}; valid fields: {", ".join(fields)}.'
    )
  return cls(**kwargs)


def _init(model: nn.Module, rng: jax.Array, input_shape: tuple[int, ...]) -> dict[str, Any]:
  x = jnp.zeros((1, *input_shape), jnp.float32)
  t = jnp.zeros((1,), jnp.int32)
  return dict(model.init({'params': rng}, x, t, train=False))


# Initialization runs once, so its compile time matters more than its run
# time; on CPU, XLA's backend optimizations make compiling the init of a
# ResNet several times slower (e.g. ~18 s instead of ~3 s), so they are off.
_FAST_COMPILE_OPTIONS = {
  'xla_backend_optimization_level': 0,
  'xla_llvm_disable_expensive_passes': True,
}
_jitted_init = jax.jit(_init, static_argnums=(0, 2))
_jitted_init_cpu = jax.jit(_init, static_argnums=(0, 2), compiler_options=_FAST_COMPILE_OPTIONS)


def init_variables(model: nn.Module, rng: jax.Array, input_shape: Sequence[int]) -> dict[str, Any]:
  """Initializes `model` on a dummy batch of one sample.

  Calls `model.init` with `x = zeros([1, *input_shape])` float32 and
  `t = zeros([1])` int32 in eval mode. The call is jitted (compiled once per
  model configuration and input shape, which is much faster than flax's
  op-by-op initialization) and pure, so it can also be used inside `jax.jit`
  or `jax.vmap` over `rng` to build a stack of parameter sets.

  On CPU, a top-level call is compiled without XLA's backend optimizations
  (several times faster to compile); the values then equal those of
  `model.init` up to float32 rounding (~1e-8), not bit for bit.

  Args:
    model: a model following the `(x, t, *, train, return_features)`
      convention.
    rng: PRNG key for the parameters.
    input_shape: shape of one input, e.g. `(28, 28, 1)` or `(784,)`.

  Returns:
    The variables dict: `{'params': ...}` plus `{'batch_stats': ...}` for
    models with BatchNorm.
  """
  input_shape = tuple(int(d) for d in input_shape)
  try:
    hash(model)
  except TypeError:  # A custom model with unhashable fields: no jit cache.
    return _init(model, rng, input_shape)
  if jax.default_backend() == 'cpu':
    try:
      return _jitted_init_cpu(model, rng, input_shape)
    except ValueError as e:
      # Inside an outer `jax.jit`, which compiles with its own options.
      if 'compiler_options' not in str(e):
        raise
  return _jitted_init(model, rng, input_shape)


def count_params(tree: Any) -> int:
  """Total number of scalars in a pytree (e.g. `variables['params']`)."""
  return int(sum(np.prod(np.shape(leaf)) for leaf in jax.tree.leaves(tree)))
