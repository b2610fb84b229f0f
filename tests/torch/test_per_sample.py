"""The importance passes of the PyTorch backend without per-sample gradients
(jcl.torch.algorithms.per_sample) equal the per-sample (vmap) reference to
float32 rounding: MLP, multi-head MLP, masked head, CNN and reduced ResNet
(BatchNorm statistics away from their init; convolutions take the reference
route), the empirical and the true Fisher and MAS."""

import numpy as np
import pytest
import torch

from jcl import specs
from jcl.data import benchmarks
from jcl.torch import fit
from jcl.torch import models
from jcl.torch import train_state as ts_lib
from jcl.torch.algorithms import ewc
from jcl.torch.algorithms import mas
from jcl.torch.algorithms import per_sample
from jcl.types import Batch

MODELS = {
  'mlp': ('mlp', dict(widths=(32, 16))),
  'mlp_multi_head': ('mlp', dict(widths=(16,), num_heads=5)),
  'mlp_masked_head': ('mlp', dict(widths=(16,), task_classes=((0,), (0, 1), (1,), (0,), (1,)))),
  'cnn': ('cnn', dict(channels=(4, 8), hidden=16)),
  'resnet18_reduced': ('resnet18_reduced', dict(nf=4)),
}
CLOSED_FORM = ('mlp', 'mlp_multi_head', 'mlp_masked_head')


def setup(name):
  """A model of `name` on task 1 of task-IL Split MNIST (the bundled sample),
  BatchNorm statistics away from their init, and the task's 60 samples as a
  padded chunk of batches of 16 (the last one part padding)."""
  bench = benchmarks.make_benchmark(
    'split_mnist', num_tasks=5, scenario='task', multi_head=True, samples_per_task=60
  )
  model_name, kwargs = MODELS[name]
  model = models.make_model(model_name, bench.input_shape, num_classes=2, seed=0, **kwargs)
  generator = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, models.BatchNorm):
        module.running_mean.add_(0.5 * torch.rand(module.running_mean.shape, generator=generator))
        module.running_var.add_(0.5 * torch.rand(module.running_var.shape, generator=generator))
  state = ts_lib.create_train_state(model, specs.OptimizerSpec(), num_classes=2)
  state.task = 1
  return state, fit.task_data(bench.tasks[1].train, 16)


def assert_close(fast, reference):
  assert sorted(fast) == sorted(reference)
  for name, want in reference.items():
    np.testing.assert_allclose(
      fast[name].numpy(),
      want.numpy(),
      rtol=2e-5,
      atol=1e-6 * float(want.max()) + 1e-12,
      err_msg=name,
    )
  assert max(float(v.max()) for v in fast.values()) > 0


@pytest.mark.parametrize('kind', ['empirical', 'true'])
@pytest.mark.parametrize('name', sorted(MODELS))
def test_fisher_equals_the_per_sample_reference(name, kind):
  state, data = setup(name)
  assert_close(
    ewc.fisher_diagonal(state, data, kind), ewc.reference_fisher_diagonal(state, data, kind)
  )


@pytest.mark.parametrize('name', ['mlp', 'mlp_multi_head', 'cnn'])
def test_mas_importance_equals_the_per_sample_reference(name):
  state, data = setup(name)
  assert_close(mas.mas_importance(state, data), mas.reference_mas_importance(state, data))


@pytest.mark.parametrize('name', CLOSED_FORM)
def test_linear_layers_take_the_closed_form(name, monkeypatch):
  """Every parameter of an MLP comes from the closed form: the per-sample
  route is never taken, and the layers are themselves again afterwards."""
  state, data = setup(name)
  before = state.model(data.x[0], data.t[0])

  def no_reference(*args):
    raise AssertionError('the per-sample reference was used')

  monkeypatch.setattr(per_sample, 'reference_power_sums', no_reference)
  monkeypatch.setattr(torch.func, 'vmap', no_reference)
  ewc.fisher_diagonal(state, data, 'true')
  mas.mas_importance(state, data)
  assert torch.equal(state.model(data.x[0], data.t[0]), before)
  assert all('forward' not in vars(m) and 'linear' not in vars(m) for m in state.model.modules())


class SharedLayer(torch.nn.Module):
  """An MLP whose `Dense_1` is called twice (weights shared between the calls)."""

  def __init__(self):
    super().__init__()
    self.Dense_0, self.Dense_1 = torch.nn.Linear(784, 16), torch.nn.Linear(16, 16)
    self.head = models.TaskHead(16, 2)
    models.init_weights(self, torch.Generator().manual_seed(0))

  def forward(self, x, t=None, *, train=False, return_features=False):
    h = torch.relu(self.Dense_0(x.reshape(x.shape[0], -1)))
    h = torch.relu(self.Dense_1(torch.relu(self.Dense_1(h))))
    logits = self.head(h, t)
    return (logits, h) if return_features else logits


def test_a_layer_called_twice_takes_the_reference():
  """Weights used twice have no closed form: those come from the reference."""
  _, data = setup('mlp')
  state = ts_lib.create_train_state(SharedLayer(), specs.OptimizerSpec(), num_classes=2)
  assert_close(ewc.fisher_diagonal(state, data), ewc.reference_fisher_diagonal(state, data))


def test_padding_samples_count_for_nothing():
  state, data = setup('mlp')
  real = int(data.mask.sum())
  assert real < data.mask.numel()  # the chunk is padded
  flat = Batch(*(a.reshape((-1,) + a.shape[2:])[:real] for a in data))
  single = Batch(*(a[None] for a in flat))
  for got, want in zip(
    ewc.fisher_diagonal(state, data).values(), ewc.fisher_diagonal(state, single).values()
  ):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-5, atol=1e-9)
