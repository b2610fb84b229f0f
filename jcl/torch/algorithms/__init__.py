"""The algorithms of `jcl.algorithms` in PyTorch, under the same names and
built from the same specs.

    algo = jcl.torch.algorithms.build(jcl.specs.EWCSpec(ewc_lambda=100.), context)

As in `jcl.algorithms`, an algorithm is found by name: the registered spec
`name` is built by `jcl.torch.algorithms.<name>.make(spec, context=context)`,
and that module may define `adapt_model` / `adapt_regime`. Submodules are
imported when first used (PEP 562).
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any

import torch

from jcl import specs as specs_lib
from jcl.torch.algorithms import base
from jcl.torch.algorithms.base import Algorithm
from jcl.types import Context

BACKEND = 'PyTorch'


def _has_module(name: str) -> bool:
  return name.isidentifier() and importlib.util.find_spec(f'{__name__}.{name}') is not None


def names() -> list[str]:
  """Every registered algorithm with a PyTorch implementation (a module of that name)."""
  return sorted(name for name in specs_lib.SPECS if _has_module(name))


def module(name: str) -> ModuleType:
  """The module `jcl.torch.algorithms.<name>` of a registered algorithm.

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
  """The PyTorch `Algorithm` of `spec` (`context` sizes the memories)."""
  return module(spec.name).make(spec, context=context)


def adapt_model(
  spec: specs_lib.AlgorithmSpec, model: torch.nn.Module, context: Context
) -> torch.nn.Module:
  """The model an algorithm trains, built from the configured one (the
  counterpart of `jcl.algorithms.adapt_model`: PNN grows one column per task,
  KCL replaces the linear head by its kernel classifier). An algorithm module
  may define `adapt_model(spec, model, context)`; the default keeps `model`."""
  hook = _hook(spec, 'adapt_model')
  return hook(spec, model, context) if hook is not None else model


def adapt_regime(
  spec: specs_lib.AlgorithmSpec,
  model_config: dict[str, Any],
  optimizer: specs_lib.OptimizerSpec,
  train_config: Any,
):
  """`(model_config, optimizer, train_config)` under the algorithm's training
  regime (`jcl.algorithms.adapt_regime`; Stable SGD's dropout, per-task
  learning-rate decay and batch size). The default returns them unchanged."""
  hook = _hook(spec, 'adapt_regime')
  if hook is None:
    return model_config, optimizer, train_config
  return hook(spec, model_config, optimizer, train_config)


def __getattr__(name: str) -> ModuleType:
  """`jcl.torch.algorithms.<submodule>` (e.g. `ewc`, `buffer`), imported on first use."""
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
