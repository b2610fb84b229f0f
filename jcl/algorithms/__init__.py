"""Continual-learning algorithms, each a pure `Algorithm` built from its spec.

    algo = jcl.algorithms.ewc.make(jcl.specs.EWCSpec(ewc_lambda=100.))
    algo = jcl.algorithms.build(spec)          # any registered spec
"""
from __future__ import annotations

from typing import Callable

from jcl import specs as specs_lib
from jcl.algorithms import base
from jcl.algorithms import ewc
from jcl.algorithms import joint
from jcl.algorithms import lfl
from jcl.algorithms import mas
from jcl.algorithms import naive
from jcl.algorithms import regularization
from jcl.algorithms import si
from jcl.algorithms.base import Algorithm

BUILDERS: dict[str, Callable[..., Algorithm]] = {
    'naive': naive.make,
    'joint': joint.make,
    'ewc': ewc.make,
    'si': si.make,
    'mas': mas.make,
    'lfl': lfl.make,
}


def build(spec: specs_lib.AlgorithmSpec) -> Algorithm:
  """The JAX `Algorithm` of `spec`."""
  if spec.name not in BUILDERS:
    raise ValueError(f'no JAX implementation of algorithm {spec.name!r}; '
                     f'known: {", ".join(sorted(BUILDERS))}')
  return BUILDERS[spec.name](spec)


__all__ = ['Algorithm', 'BUILDERS', 'base', 'build', 'ewc', 'joint', 'lfl', 'mas', 'naive',
           'regularization', 'si']
