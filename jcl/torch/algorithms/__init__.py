"""The algorithms of `jcl.algorithms` in PyTorch, under the same names and
built from the same specs.

    algo = jcl.torch.algorithms.build(jcl.specs.EWCSpec(ewc_lambda=100.), context)

As in `jcl.algorithms`, an algorithm is found by name: the registered spec
`name` is built by `jcl.torch.algorithms.<name>.make(spec, context=context)`,
and that module may define `adapt_model` (`jcl.registry`). Submodules are
imported when first used (PEP 562).
"""

from __future__ import annotations

from types import ModuleType


from jcl import registry
from jcl.torch.algorithms import base
from jcl.torch.algorithms.base import Algorithm
from jcl.types import Context

BACKEND = 'PyTorch'
_REGISTRY = registry.AlgorithmRegistry(__name__, BACKEND)

names = _REGISTRY.names
module = _REGISTRY.module
build = _REGISTRY.build
adapt_model = _REGISTRY.adapt_model


def __getattr__(name: str) -> ModuleType:
  """`jcl.torch.algorithms.<submodule>` (e.g. `ewc`, `buffer`), imported on first use."""
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
