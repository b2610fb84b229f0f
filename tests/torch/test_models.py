"""The PyTorch models compute what the flax ones compute, and the converters
move weights between them exactly."""

import functools
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

from jcl import models
from jcl.torch import convert
from jcl.torch import models as torch_models
from jcl.torch import train_state as torch_ts
from jcl import specs

CASES = {
  # name: (model, fields, input shape)
  'mlp_single_head': ('mlp', dict(widths=(16, 8), num_classes=4, activation='gelu'), (6,)),
  'mlp_multi_head': ('mlp', dict(widths=(16,), num_classes=3, num_heads=2), (5, 5, 1)),
  'cnn_masked_head': (
    'cnn',
    dict(channels=(4, 8), hidden=16, num_classes=4, task_classes=((0, 1), (2, 3))),
    (9, 9, 1),
  ),
  'resnet18_reduced': ('resnet18_reduced', dict(nf=4, num_classes=5), (12, 12, 3)),
}


@functools.lru_cache(maxsize=None)
def _flax(case):
  name, fields, shape = CASES[case]
  flax_model = models.make_model(name, **fields)
  return flax_model, models.init_variables(flax_model, jax.random.PRNGKey(0), shape)


def _pair(case):
  name, fields, shape = CASES[case]
  flax_model, variables = _flax(case)
  torch_model = torch_models.make_model(name, shape, **fields)
  torch_model.load_state_dict(convert.flax_to_torch(variables))
  return flax_model, variables, torch_model, shape


@pytest.mark.parametrize('case', sorted(CASES))
def test_flax_to_torch_to_flax_is_bit_identical(case):
  _, variables, torch_model, _ = _pair(case)
  back = convert.torch_to_flax(torch_model.state_dict())
  assert jax.tree.structure(back) == jax.tree.structure(variables)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(back)):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), b)
  # ...and the PyTorch side loads what it saved, unchanged.
  again = convert.flax_to_torch(back)
  for key, value in torch_model.state_dict().items():
    assert torch.equal(again[key], value), key


@pytest.mark.parametrize(
  'case, train', [(case, False) for case in sorted(CASES)] + [('resnet18_reduced', True)]
)  # train mode differs only with BatchNorm
def test_outputs_and_features_agree(case, train):
  flax_model, variables, torch_model, shape = _pair(case)
  rng = np.random.default_rng(1)
  x = rng.normal(size=(8, *shape)).astype(np.float32)
  t = rng.integers(0, 2, 8).astype(np.int32)
  if train and 'batch_stats' in variables:
    (logits, features), new_vars = flax_model.apply(
      variables, x, t, train=True, return_features=True, mutable=['batch_stats']
    )
  else:
    logits, features = flax_model.apply(variables, x, t, train=train, return_features=True)
    new_vars = {}
  state = torch_ts.create_train_state(
    torch_model, specs.OptimizerSpec(), num_classes=flax_model.num_classes
  )
  (t_logits, t_features), t_model_state = torch_ts.apply_model(
    state, torch.from_numpy(x), torch.from_numpy(t), train=train, return_features=True
  )
  scale = max(1.0, float(np.abs(logits).max()))
  np.testing.assert_allclose(t_logits.detach().numpy(), logits, rtol=1e-5, atol=1e-5 * scale)
  np.testing.assert_allclose(t_features.detach().numpy(), features, rtol=1e-5, atol=1e-5)
  if new_vars:  # BatchNorm: the updated running statistics, not yet written
    expected = convert.flax_to_torch({'params': variables['params'], **new_vars})
    for key, value in t_model_state.items():
      np.testing.assert_allclose(value.numpy(), expected[key].numpy(), rtol=1e-5, atol=1e-6)
      assert not torch.equal(value, torch_model.state_dict()[key])


def test_masked_and_multi_head_logits():
  _, _, mlp, _ = _pair('mlp_multi_head')
  x = torch.randn(4, 5, 5, 1)
  hidden = mlp.Dense_0(x.reshape(4, -1)).relu()
  heads = torch.nn.functional.linear(hidden, mlp.head.weight, mlp.head.bias).reshape(4, 2, 3)
  t = torch.tensor([0, 1, 1, 0])
  torch.testing.assert_close(mlp(x, t), heads[torch.arange(4), t])
  _, _, cnn, _ = _pair('cnn_masked_head')
  logits = cnn(torch.randn(2, 9, 9, 1), torch.tensor([0, 1]))
  assert torch.all(logits[0, 2:] == torch_models.MASK_VALUE)
  assert torch.all(logits[1, :2] == torch_models.MASK_VALUE)
  assert torch.all(logits[0, :2] > torch_models.MASK_VALUE)


def test_torch_initialization_is_flax_lecun_normal_and_seeded():
  a = torch_models.make_model('mlp', (784,), widths=(256,), seed=3)
  b = torch_models.make_model('mlp', (784,), widths=(256,), seed=3)
  for (_, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
    assert torch.equal(p, q)
  w = a.Dense_0.weight.detach()
  assert abs(float(w.std()) * 784**0.5 - 1.0) < 0.05  # variance 1 / fan_in
  assert float(w.abs().max()) <= 2 / 784**0.5 / 0.8796 + 1e-6  # truncated at 2 std
  assert torch.all(a.Dense_0.bias == 0)


def test_the_torch_backend_imports_no_jax():
  code = (
    'import sys\n'
    'import jcl.specs, jcl.data, jcl.metrics, jcl.loop, jcl.callbacks, jcl.runs\n'
    'loaded = lambda *names: [m for m in sys.modules if m.split(".")[0] in names]\n'
    'assert not loaded("jax", "flax", "optax", "torch"), loaded("jax", "flax", "optax", "torch")\n'
    'import jcl.torch.fit, jcl.torch.experiment, jcl.torch.algorithms as a\n'
    'for name in a.names(): a.module(name)\n'
    'assert not loaded("jax", "flax", "optax"), loaded("jax", "flax", "optax")\n'
  )
  subprocess.run([sys.executable, '-c', code], check=True)


@pytest.mark.parametrize(
  'name, fields, shape',
  [
    ('mlp', dict(widths=(32, 32), dropout=0.5), (6,)),
    ('cnn', dict(channels=(4,), hidden=32, dropout=0.5), (8, 8, 1)),
  ],
)
def test_dropout_only_in_training_mode(name, fields, shape):
  flax_model = models.make_model(name, num_classes=3, **fields)
  variables = models.init_variables(flax_model, jax.random.PRNGKey(0), shape)
  torch_model = torch_models.make_model(name, shape, num_classes=3, **fields)
  torch_model.load_state_dict(convert.flax_to_torch(variables))
  x = np.random.default_rng(0).normal(size=(4, *shape)).astype(np.float32)
  eval_logits = torch_model(torch.from_numpy(x), train=False)
  np.testing.assert_allclose(
    eval_logits.detach().numpy(), flax_model.apply(variables, x), rtol=1e-5, atol=1e-6
  )
  torch.manual_seed(0)
  first, second = (
    torch_model(torch.from_numpy(x), train=True),
    torch_model(torch.from_numpy(x), train=True),
  )
  assert not torch.allclose(first, second)
  assert not torch.allclose(first, eval_logits)
