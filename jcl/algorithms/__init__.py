"""Continual-learning algorithms, each a pure `Algorithm` built from its spec.

    algo = jcl.algorithms.ewc.make(jcl.specs.EWCSpec(ewc_lambda=100.))
    algo = jcl.algorithms.build(spec)          # any registered spec
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from jcl import specs as specs_lib
from jcl.algorithms import agem
from jcl.algorithms import base
from jcl.algorithms import buffer
from jcl.algorithms import der
from jcl.algorithms import derpp
from jcl.algorithms import er
from jcl.algorithms import ewc
from jcl.algorithms import gem
from jcl.algorithms import joint
from jcl.algorithms import lfl
from jcl.algorithms import mas
from jcl.algorithms import naive
from jcl.algorithms import projection
from jcl.algorithms import regularization
from jcl.algorithms import si
from jcl.algorithms.base import Algorithm
from jcl.algorithms.base import Context

BUILDERS: dict[str, Callable[..., Algorithm]] = {
    'naive': naive.make,
    'joint': joint.make,
    'ewc': ewc.make,
    'si': si.make,
    'mas': mas.make,
    'lfl': lfl.make,
    'er': er.make,
    'der': der.make,
    'derpp': derpp.make,
    'agem': agem.make,
    'gem': gem.make,
}


# Algorithms added by name: their module is imported when first built, so a
# new method is one module plus one line here.
_LAZY_MODULES = {
    'lamaml': 'jcl.algorithms.lamaml',
    'mcsgd': 'jcl.algorithms.mcsgd',
    'stable_sgd': 'jcl.algorithms.stable_sgd',
    'kcl': 'jcl.algorithms.kcl',
    'pnn': 'jcl.algorithms.pnn',
}


def _module(name: str):
  return importlib.import_module(_LAZY_MODULES[name]) if name in _LAZY_MODULES else None


def names() -> list[str]:
  """Every algorithm with a JAX implementation."""
  return sorted({*BUILDERS, *_LAZY_MODULES})


def build(spec: specs_lib.AlgorithmSpec, context: Context | None = None) -> Algorithm:
  """The JAX `Algorithm` of `spec`.

  Args:
    spec: a registered spec.
    context: the stream's input shape, output width and number of tasks;
      needed by the methods with a memory (er, der, derpp, agem, gem, ...).
  """
  if spec.name in _LAZY_MODULES:
    return _module(spec.name).make(spec, context=context)
  if spec.name not in BUILDERS:
    raise ValueError(f'no JAX implementation of algorithm {spec.name!r}; '
                     f'known: {", ".join(names())}')
  return BUILDERS[spec.name](spec, context=context)


def adapt_model(spec: specs_lib.AlgorithmSpec, model: Any, context: Context) -> Any:
  """The model an algorithm trains, built from the configured one.

  Most algorithms train the model as configured; an algorithm module may
  define `adapt_model(spec, model, context)` to change it (PNN grows one
  column per task; KCL replaces the linear head by its kernel classifier).
  """
  hook = getattr(_module(spec.name), 'adapt_model', None)
  return hook(spec, model, context) if hook is not None else model


def adapt_regime(spec: specs_lib.AlgorithmSpec, model_config: dict[str, Any],
                 optimizer: specs_lib.OptimizerSpec, train_config: Any):
  """`(model_config, optimizer, train_config)` under the algorithm's training
  regime; an algorithm module may define `adapt_regime` with this signature
  (Stable SGD sets dropout, the per-task learning-rate decay and the batch
  size). The default returns them unchanged."""
  hook = getattr(_module(spec.name), 'adapt_regime', None)
  if hook is None:
    return model_config, optimizer, train_config
  return hook(spec, model_config, optimizer, train_config)


__all__ = ['Algorithm', 'BUILDERS', 'Context', 'adapt_model', 'adapt_regime', 'agem', 'base',
           'buffer', 'build', 'names', 'der', 'derpp',
           'er', 'ewc', 'gem', 'joint', 'lfl', 'mas', 'naive', 'projection', 'regularization', 'si']
