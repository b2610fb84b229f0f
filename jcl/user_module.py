"""Your own model and data from a Python file (`config.user_module`).

A file exporting either function or both:

    def model_fn(benchmark):   # -> a flax module, called as jcl's models are
      return MyNet(num_classes=benchmark.num_classes)

    def data_fn(seed):         # -> a `jcl.data.Benchmark`
      return jcl.data.make_benchmark('split_mnist', seed=seed, num_tasks=5)

runs with `--config.user_module=my_module.py`: `model_fn` replaces the
config's model section, `data_fn` its benchmark section (a config file can
name itself: `config.user_module = __file__`). The module is called like
jcl's models, `module.apply(variables, x, t, train=..., return_features=...)`
with `x [B, *input_shape]` float32 and `t [B]` int32 task ids, and returns
logits `[B, benchmark.num_classes]` (with `return_features=True`,
`(logits, features)`: algorithms such as LFL read the features). The file
is imported once per process; what it exports is checked with errors that
name it. JAX backend only.

Imports neither JAX nor PyTorch (the checks of the model import flax).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import os
import sys
from types import ModuleType
from typing import Any

from jcl.run_spec import BenchmarkSpec

# The model and benchmark name of a user module's `model_fn` / `data_fn`.
NAME = 'user_module'
EXPORTS = {'model_fn': 'benchmark', 'data_fn': 'seed'}
_LOADED: dict[str, ModuleType] = {}


def _fail(path: str, message: str):
  raise ValueError(f'user_module {path}: {message}')


def load(path: str) -> ModuleType:
  """The module of the file `path`, imported once per process.

  Raises:
    ValueError: no such `.py` file, or importing it failed (the error named).
  """
  path = os.path.abspath(path)
  if path in _LOADED:
    return _LOADED[path]
  if not path.endswith('.py'):
    _fail(path, 'must be a Python file (.py)')
  if not os.path.isfile(path):
    _fail(path, 'no such file')
  name = f'jcl_user_module_{hashlib.sha1(path.encode()).hexdigest()[:10]}'
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module  # flax's dataclasses look their module up
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except  # the user's code
    del sys.modules[name]
    _fail(path, f'importing it failed: {type(e).__name__}: {e}')
  _LOADED[path] = module
  return module


def exports(path: str) -> tuple[str, ...]:
  """Which of `model_fn`, `data_fn` the file defines (at least one), each
  checked to be a function of one argument."""
  module = load(path)
  found = tuple(name for name in EXPORTS if hasattr(module, name))
  if not found:
    _fail(path, 'defines neither model_fn(benchmark) nor data_fn(seed)')
  for name in found:
    fn = getattr(module, name)
    try:
      inspect.signature(fn).bind(None)
    except TypeError:
      _fail(path, f'{name} must be a function of one argument ({EXPORTS[name]}), got {fn!r}')
    except ValueError:  # a callable without a signature: called as is
      pass
  return found


def benchmark(path: str, seed: int):
  """`data_fn(seed)`, checked to be a `jcl.data.Benchmark`."""
  from jcl.data import benchmarks

  value = load(path).data_fn(seed)
  if not isinstance(value, benchmarks.Benchmark):
    _fail(path, f'data_fn(seed) must return a jcl.data.Benchmark, got {type(value).__name__}')
  return value


def model(path: str, benchmark_: Any, **fields: Any):
  """`model_fn(benchmark)`, checked to be a flax module that maps inputs
  `[B, *input_shape]` and task ids `[B]` to logits `[B, num_classes]`."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  if fields:
    _fail(
      path,
      f'model_fn(benchmark) takes no model fields, got {sorted(fields)} (an algorithm '
      "regime's, e.g. Stable SGD's dropout: set it in your module)",
    )
  module = load(path).model_fn(benchmark_)
  if not isinstance(module, nn.Module):
    _fail(path, f'model_fn(benchmark) must return a flax.linen.Module, got {type(module).__name__}')
  shape = (2, *benchmark_.input_shape)

  def apply(x, t):
    variables = module.init({'params': jax.random.PRNGKey(0)}, x, t)
    return module.apply(variables, x, t, train=False, return_features=False)

  try:
    logits = jax.eval_shape(
      apply, jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct((2,), jnp.int32)
    )
  except Exception as e:  # pylint: disable=broad-except  # the user's code
    _fail(
      path,
      f'model_fn(benchmark) gave a module that fails on inputs {list(shape)} float32 and task '
      f'ids [2] int32, called as (x, t, train=False, return_features=False): '
      f'{type(e).__name__}: {e}',
    )
  want = (2, benchmark_.num_classes)
  if getattr(logits, 'shape', None) != want:
    got = getattr(logits, 'shape', type(logits).__name__)
    _fail(
      path,
      f'the module of model_fn(benchmark) returns {got} on inputs {list(shape)}; '
      f'logits {list(want)} expected (benchmark.num_classes = {want[1]})',
    )
  return module


@dataclasses.dataclass(frozen=True)
class UserBenchmarkSpec(BenchmarkSpec):
  """The benchmark of a user module's `data_fn(seed)`: `name` is `NAME`,
  `options` `{'path': file}`."""

  def __post_init__(self):
    if self.name != NAME or set(self.options) != {'path'}:
      raise ValueError(f"benchmark: a user module's benchmark is {NAME!r} with a 'path'")

  def build(self, seed: int):
    return benchmark(self.options['path'], seed)
