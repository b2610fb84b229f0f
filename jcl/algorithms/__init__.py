"""Continual-learning algorithms, each a pure `Algorithm` built from its spec.

    algo = jcl.algorithms.ewc.make(jcl.specs.EWCSpec(ewc_lambda=100.))
    algo = jcl.algorithms.build(spec)          # any registered spec
"""
from __future__ import annotations

from typing import Callable

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


def build(spec: specs_lib.AlgorithmSpec, context: Context | None = None) -> Algorithm:
  """The JAX `Algorithm` of `spec`.

  Args:
    spec: a registered spec.
    context: the stream's input shape, output width and number of tasks;
      needed by the methods with a memory (er, der, derpp, agem, gem).
  """
  if spec.name not in BUILDERS:
    raise ValueError(f'no JAX implementation of algorithm {spec.name!r}; '
                     f'known: {", ".join(sorted(BUILDERS))}')
  return BUILDERS[spec.name](spec, context=context)


__all__ = ['Algorithm', 'BUILDERS', 'Context', 'agem', 'base', 'buffer', 'build', 'der', 'derpp',
           'er', 'ewc', 'gem', 'joint', 'lfl', 'mas', 'naive', 'projection', 'regularization', 'si']
