"""The algorithms of `jcl.algorithms` in PyTorch, under the same names and
built from the same specs.

    algo = jcl.torch.algorithms.build(jcl.specs.EWCSpec(ewc_lambda=100.), context)
"""
from __future__ import annotations

import importlib
from typing import Any

import torch

from jcl import specs as specs_lib
from jcl.torch.algorithms import base
from jcl.torch.algorithms.base import Algorithm
from jcl.torch.algorithms.base import Context

# Algorithm name -> module; each module exports `make(spec, context=None)`.
MODULES = {
    'naive': 'jcl.torch.algorithms.naive',
    'joint': 'jcl.torch.algorithms.joint',
    'ewc': 'jcl.torch.algorithms.ewc',
    'si': 'jcl.torch.algorithms.si',
    'mas': 'jcl.torch.algorithms.mas',
    'lfl': 'jcl.torch.algorithms.lfl',
    'er': 'jcl.torch.algorithms.er',
    'der': 'jcl.torch.algorithms.der',
    'derpp': 'jcl.torch.algorithms.derpp',
    'agem': 'jcl.torch.algorithms.agem',
    'gem': 'jcl.torch.algorithms.gem',
    'lamaml': 'jcl.torch.algorithms.lamaml',
    'mcsgd': 'jcl.torch.algorithms.mcsgd',
    'stable_sgd': 'jcl.torch.algorithms.stable_sgd',
    'kcl': 'jcl.torch.algorithms.kcl',
    'pnn': 'jcl.torch.algorithms.pnn',
}


def names() -> list[str]:
  """Every algorithm with a PyTorch implementation."""
  return sorted(MODULES)


def module(name: str):
  if name not in MODULES:
    raise ValueError(f'no PyTorch implementation of algorithm {name!r}; '
                     f'known: {", ".join(names())}')
  return importlib.import_module(MODULES[name])


def build(spec: specs_lib.AlgorithmSpec, context: Context | None = None) -> Algorithm:
  """The PyTorch `Algorithm` of `spec` (`context` sizes the memories)."""
  return module(spec.name).make(spec, context=context)


def adapt_model(spec: specs_lib.AlgorithmSpec, model: torch.nn.Module,
                context: Context) -> torch.nn.Module:
  """The model an algorithm trains, built from the configured one (the
  counterpart of `jcl.algorithms.adapt_model`: PNN grows one column per task,
  KCL replaces the linear head by its kernel classifier). An algorithm module
  may define `adapt_model(spec, model, context)`; the default keeps `model`."""
  hook = getattr(module(spec.name), 'adapt_model', None)
  return hook(spec, model, context) if hook is not None else model


def adapt_regime(spec: specs_lib.AlgorithmSpec, model_config: dict[str, Any],
                 optimizer: specs_lib.OptimizerSpec, train_config: Any):
  """`(model_config, optimizer, train_config)` under the algorithm's training
  regime (`jcl.algorithms.adapt_regime`; Stable SGD's dropout, per-task
  learning-rate decay and batch size). The default returns them unchanged."""
  hook = getattr(module(spec.name), 'adapt_regime', None)
  if hook is None:
    return model_config, optimizer, train_config
  return hook(spec, model_config, optimizer, train_config)


__all__ = ['Algorithm', 'Context', 'MODULES', 'adapt_model', 'adapt_regime', 'base', 'build',
           'module', 'names']
