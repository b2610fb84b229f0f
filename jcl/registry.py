"""Algorithms found by module name, the same way on both backends.

The spec registered as `name` (`jcl.specs.register_spec`) is implemented on a
backend by the module `<package>.<name>` (`jcl.algorithms.ewc`,
`jcl.torch.algorithms.ewc`), whose `make(spec, context=None)` builds the
`Algorithm`; that module may also define `adapt_model(spec, model, context)`
(PNN grows one column per task; KCL swaps the head for its kernel
classifier). A training regime (Stable SGD's dropout, learning-rate decay and
batch size) is the spec's own `regime`, the same on both backends.

Imports neither JAX nor PyTorch.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any

from jcl import specs as specs_lib
from jcl.types import Context


class AlgorithmRegistry:
  """The algorithms of one backend package (`package`, named `backend` in messages)."""

  def __init__(self, package: str, backend: str):
    self.package, self.backend = package, backend

  def has_module(self, name: str) -> bool:
    return name.isidentifier() and importlib.util.find_spec(f'{self.package}.{name}') is not None

  def names(self) -> list[str]:
    """Every registered algorithm with a module of its name on this backend."""
    return sorted(name for name in specs_lib.SPECS if self.has_module(name))

  def module(self, name: str) -> ModuleType:
    """The module of a registered algorithm.

    Raises:
      ValueError: no such algorithm on this backend.
    """
    if name not in specs_lib.SPECS or not self.has_module(name):
      raise ValueError(
        f'no {self.backend} implementation of algorithm {name!r}; known: {", ".join(self.names())}'
      )
    return importlib.import_module(f'{self.package}.{name}')

  def build(self, spec: specs_lib.AlgorithmSpec, context: Context | None = None):
    """The `Algorithm` of `spec`: `<package>.<spec.name>.make(spec, context=context)`.

    `context` (the stream's input shape, output width and number of tasks)
    sizes the memories of the methods that have one (er, der, agem, ...).
    """
    return self.module(spec.name).make(spec, context=context)

  def adapt_model(self, spec: specs_lib.AlgorithmSpec, model: Any, context: Context) -> Any:
    """The model the algorithm trains, built from the configured one: the
    module's `adapt_model(spec, model, context)` when it has one, else `model`."""
    if not self.has_module(spec.name):
      return model
    hook = getattr(importlib.import_module(f'{self.package}.{spec.name}'), 'adapt_model', None)
    return hook(spec, model, context) if hook is not None else model

  def submodule(self, name: str) -> ModuleType:
    """`<package>.<name>` (e.g. `ewc`, `buffer`), for the package's PEP 562 `__getattr__`."""
    if not name.startswith('__') and self.has_module(name):
      return importlib.import_module(f'{self.package}.{name}')
    raise AttributeError(f'module {self.package!r} has no attribute {name!r}')
