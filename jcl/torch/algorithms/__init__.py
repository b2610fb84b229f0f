"""The algorithms of `jcl.algorithms` in PyTorch, under the same names and
built from the same specs.

    algo = jcl.torch.algorithms.build(jcl.specs.EWCSpec(ewc_lambda=100.), context)
"""
from __future__ import annotations

import importlib

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


__all__ = ['Algorithm', 'Context', 'MODULES', 'base', 'build', 'module', 'names']
