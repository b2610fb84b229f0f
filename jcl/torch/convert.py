"""Parameters between the flax models of `jcl.models` and `jcl.torch.models`.

    state_dict = flax_to_torch(variables)            # {'params': ..., 'batch_stats': ...}
    torch_model.load_state_dict(state_dict)
    variables = torch_to_flax(torch_model.state_dict())

The mapping is by name and needs no JAX (leaves go through NumPy, so JAX
arrays are accepted as they are and NumPy arrays come back):

* module paths: flax `a/b` is PyTorch `a.b`, and flax's `layer{s}_{b}` (a
  ResNet stage's block) is `layer{s}.{b}`;
* `kernel` -> `weight`: Dense `[in, out]` -> `[out, in]`, Conv
  `[kh, kw, in, out]` -> `[out, in, kh, kw]`; BatchNorm `scale` -> `weight`;
  `bias` -> `bias`;
* `batch_stats` `mean`, `var` -> buffers `running_mean`, `running_var`;
* a stack of Dense kernels `[H, in, out]` (KCL's inference networks) ->
  `[H, out, in]`;
* parameters at the root of the tree (KCL's `ridge`, `scale`) and leaves
  named in `VERBATIM_LEAVES` (the progressive adapters' `alpha`) keep their
  name and value;
* any other collection (KCL's `kcl_coreset`, `kcl_rff`) -> buffers named
  `collection.path.leaf`, values as they are; `torch_to_flax` puts them
  back when told the collections' names.

Both directions are exact (transposes only), so flax -> PyTorch -> flax is
bit for bit.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np
import torch

_BLOCK = re.compile(r'^(layer\d+)_(\d+)$')
_BLOCK_TORCH = re.compile(r'^layer\d+$')
# Leaves moved under their own name (a progressive MLP adapter's scale).
VERBATIM_LEAVES = ('alpha',)


def _torch_path(flax_path: tuple[str, ...]) -> list[str]:
  parts = []
  for name in flax_path:
    match = _BLOCK.match(name)
    parts.extend(match.groups() if match else (name,))
  return parts


def _flax_path(torch_parts: list[str]) -> list[str]:
  path, i = [], 0
  while i < len(torch_parts):
    name = torch_parts[i]
    if _BLOCK_TORCH.match(name) and i + 1 < len(torch_parts) and torch_parts[i + 1].isdigit():
      path.append(f'{name}_{torch_parts[i + 1]}')
      i += 2
    else:
      path.append(name)
      i += 1
  return path


def _leaves(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()):
  for name, value in tree.items():
    if isinstance(value, Mapping):
      yield from _leaves(value, prefix + (name,))
    else:
      yield prefix + (name,), value


def _kernel_to_weight(kernel: np.ndarray) -> np.ndarray:
  if kernel.ndim == 2:
    return kernel.T
  if kernel.ndim == 3:  # a stack of Dense kernels [H, in, out]
    return kernel.transpose(0, 2, 1)
  if kernel.ndim == 4:
    return kernel.transpose(3, 2, 0, 1)
  raise ValueError(f'unexpected kernel of shape {kernel.shape}')


def _weight_to_kernel(weight: np.ndarray) -> np.ndarray:
  if weight.ndim == 2:
    return weight.T
  if weight.ndim == 3:
    return weight.transpose(0, 2, 1)
  if weight.ndim == 4:
    return weight.transpose(2, 3, 1, 0)
  raise ValueError(f'unexpected weight of shape {weight.shape}')


def flax_to_torch(variables: Mapping[str, Any]) -> dict[str, torch.Tensor]:
  """A `state_dict` for the `jcl.torch.models` counterpart of a flax model.

  Args:
    variables: `{'params': ..., 'batch_stats': ...}` (batch_stats only for
      models with BatchNorm, other collections for models that keep them),
      or just the params tree.
  Returns:
    `{name: tensor}` (contiguous copies), loadable with
    `model.load_state_dict(state_dict)`.
  """
  if 'params' not in variables:
    variables = {'params': variables}
  state_dict = {}
  for path, value in _leaves(variables['params']):
    value = np.asarray(value)
    *module, leaf = path
    if not module or leaf in VERBATIM_LEAVES:
      name = leaf
    elif leaf == 'kernel':
      name, value = 'weight', _kernel_to_weight(value)
    elif leaf == 'scale':
      name = 'weight'
    elif leaf == 'bias':
      name = 'bias'
    else:
      raise ValueError(f'unknown flax parameter {"/".join(path)}')
    state_dict['.'.join(_torch_path(module) + [name])] = torch.from_numpy(
      np.array(value, copy=True)
    )
  for path, value in _leaves(variables.get('batch_stats', {})):
    *module, leaf = path
    name = {'mean': 'running_mean', 'var': 'running_var'}[leaf]
    state_dict['.'.join(_torch_path(module) + [name])] = torch.from_numpy(
      np.array(value, copy=True)
    )
  for collection, tree in variables.items():
    if collection in ('params', 'batch_stats'):
      continue
    for path, value in _leaves(tree):
      state_dict['.'.join((collection, *path))] = torch.from_numpy(np.array(value, copy=True))
  return state_dict


def torch_to_flax(
  state_dict: Mapping[str, torch.Tensor], collections: tuple[str, ...] = ()
) -> dict[str, dict]:
  """The flax variables of a `jcl.torch.models` state dict (NumPy leaves).

  Args:
    state_dict: the PyTorch model's `state_dict()`.
    collections: names of flax collections other than params and
      batch_stats kept as buffers `collection.path.leaf` (e.g. KCL's).
  Returns:
    `{'params': ...}`, plus `'batch_stats'` when the model has BatchNorm and
    the named `collections`; nested dicts keyed like the flax model's.
  """
  variables: dict[str, dict] = {'params': {}}
  for key, tensor in state_dict.items():
    value = tensor.detach().cpu().numpy()
    first, *rest = key.split('.')
    if first in collections:
      node = variables.setdefault(first, {})
      for part in rest[:-1]:
        node = node.setdefault(part, {})
      node[rest[-1]] = np.array(value, order='C')
      continue
    *module, name = key.split('.')
    module = _flax_path(module)
    if not module or name in VERBATIM_LEAVES:
      collection, leaf = 'params', name
    elif name in ('running_mean', 'running_var'):
      collection, leaf = 'batch_stats', {'running_mean': 'mean', 'running_var': 'var'}[name]
    elif name == 'weight' and value.ndim == 1:
      collection, leaf = 'params', 'scale'
    elif name == 'weight':
      collection, leaf, value = 'params', 'kernel', _weight_to_kernel(value)
    elif name == 'bias':
      collection, leaf = 'params', 'bias'
    elif name == 'num_batches_tracked':
      continue
    else:
      raise ValueError(f'unknown parameter {key}')
    node = variables.setdefault(collection, {})
    for part in module:
      node = node.setdefault(part, {})
    node[leaf] = np.array(value, order='C')  # (keeps 0-d leaves 0-d)
  return variables
