"""Continual-learning algorithms, each a pure `Algorithm` built from its spec.

    algo = jcl.algorithms.ewc.make(jcl.specs.EWCSpec(ewc_lambda=100.))
    algo = jcl.algorithms.build(spec, context)   # any registered spec

An algorithm is found by name: the spec registered as `name` (see
`jcl.specs.register_spec`) is built by `jcl.algorithms.<name>.make(spec,
context=context)`; that module may also define `adapt_model` and
`adapt_regime`. Adding a method is one module here (and one under
`jcl.torch.algorithms`) plus one spec. The submodules are imported when first
used (`jcl.algorithms.ewc` imports `jcl/algorithms/ewc.py`, PEP 562).
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any

from jcl import specs as specs_lib
from jcl.algorithms import base
from jcl.algorithms.base import Algorithm
from jcl.types import Context

BACKEND = 'JAX'


def _has_module(name: str) -> bool:
  return name.isidentifier() and importlib.util.find_spec(f'{__name__}.{name}') is not None


def names() -> list[str]:
  """Every registered algorithm with a JAX implementation (a module of that name)."""
  return sorted(name for name in specs_lib.SPECS if _has_module(name))


def module(name: str) -> ModuleType:
  """The module `jcl.algorithms.<name>` of a registered algorithm.

  Raises:
    ValueError: no such algorithm on this backend.
  """
  if name not in specs_lib.SPECS or not _has_module(name):
    raise ValueError(
      f'no {BACKEND} implementation of algorithm {name!r}; known: {", ".join(names())}'
    )
  return importlib.import_module(f'{__name__}.{name}')


def _hook(spec: specs_lib.AlgorithmSpec, hook: str):
  """The module's `hook` function, None when it (or the module) has none."""
  if not _has_module(spec.name):
    return None
  return getattr(importlib.import_module(f'{__name__}.{spec.name}'), hook, None)


def build(spec: specs_lib.AlgorithmSpec, context: Context | None = None) -> Algorithm:
  """The JAX `Algorithm` of `spec`: `jcl.algorithms.<spec.name>.make(spec, context=context)`.

  Args:
    spec: a registered spec.
    context: the stream's input shape, output width and number of tasks;
      needed by the methods with a memory (er, der, derpp, agem, gem, ...).
  """
  return module(spec.name).make(spec, context=context)


def adapt_model(spec: specs_lib.AlgorithmSpec, model: Any, context: Context) -> Any:
  """The model an algorithm trains, built from the configured one.

  Most algorithms train the model as configured; an algorithm module may
  define `adapt_model(spec, model, context)` to change it (PNN grows one
  column per task; KCL replaces the linear head by its kernel classifier).
  """
  hook = _hook(spec, 'adapt_model')
  return hook(spec, model, context) if hook is not None else model


def adapt_regime(
  spec: specs_lib.AlgorithmSpec,
  model_config: dict[str, Any],
  optimizer: specs_lib.OptimizerSpec,
  train_config: Any,
):
  """`(model_config, optimizer, train_config)` under the algorithm's training
  regime; an algorithm module may define `adapt_regime` with this signature
  (Stable SGD sets dropout, the per-task learning-rate decay and the batch
  size). The default returns them unchanged."""
  hook = _hook(spec, 'adapt_regime')
  if hook is None:
    return model_config, optimizer, train_config
  return hook(spec, model_config, optimizer, train_config)


def __getattr__(name: str) -> ModuleType:
  """`jcl.algorithms.<submodule>` (e.g. `ewc`, `buffer`), imported on first use."""
  if not name.startswith('__') and _has_module(name):
    return importlib.import_module(f'{__name__}.{name}')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = [
  'Algorithm',
  'Context',
  'adapt_model',
  'adapt_regime',
  'base',
  'build',
  'module',
  'names',
]
