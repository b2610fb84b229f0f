"""Continual-learning algorithms, each a pure `Algorithm` built from its spec.

    algo = jcl.algorithms.ewc.make(jcl.specs.EWCSpec(ewc_lambda=100.))
    algo = jcl.algorithms.build(spec, context)   # any registered spec

An algorithm is found by name: the spec registered as `name` (see
`jcl.specs.register_spec`) is built by `jcl.algorithms.<name>.make(spec,
context=context)`; that module may also define `adapt_model`
(`jcl.registry`). Adding a method is one module here (and one under
`jcl.torch.algorithms`) plus one spec. The submodules are imported when first
used (`jcl.algorithms.ewc` imports `jcl/algorithms/ewc.py`, PEP 562).
"""

from __future__ import annotations

from types import ModuleType

from jcl import registry
from jcl.algorithms import base
from jcl.algorithms.base import Algorithm
from jcl.types import Context

BACKEND = 'JAX'
_REGISTRY = registry.AlgorithmRegistry(__name__, BACKEND)

names = _REGISTRY.names
module = _REGISTRY.module
build = _REGISTRY.build
adapt_model = _REGISTRY.adapt_model


def __getattr__(name: str) -> ModuleType:
  """`jcl.algorithms.<submodule>` (e.g. `ewc`, `buffer`), imported on first use."""
  return _REGISTRY.submodule(name)


__all__ = [
  'Algorithm',
  'Context',
  'adapt_model',
  'base',
  'build',
  'module',
  'names',
]
