"""The importance passes without per-sample gradients (jcl.algorithms.per_sample)
equal the per-sample (vmap) reference to float32 rounding: every model
family (MLP, multi-head MLP, CNN, reduced ResNet with BatchNorm statistics,
a progressive network), the empirical and the true Fisher and MAS."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcl import models
from jcl import specs
from jcl import train as train_lib
from jcl import train_state as ts_lib
from jcl.algorithms import ewc
from jcl.algorithms import mas
from jcl.algorithms import per_sample
from jcl.data import benchmarks
from jcl.models import progressive
from jcl.types import Batch

MODELS = {
  'mlp': ('mlp', dict(widths=(32, 16))),
  'mlp_multi_head': ('mlp', dict(widths=(16,), num_heads=5)),
  'cnn': ('cnn', dict(channels=(4, 8), hidden=16)),
  'resnet18_reduced': ('resnet18_reduced', dict(nf=4)),
  'pnn_mlp': ('pnn', dict(widths=(16,))),
}


def setup(name):
  """A model of `name` on task 1 of task-IL Split MNIST (the bundled sample),
  class mask on task 1, BatchNorm statistics away from their init, and the
  task's 60 samples as a padded chunk of batches of 16 (the last one part padding)."""
  bench = benchmarks.make_benchmark(
    'split_mnist', num_tasks=5, scenario='task', multi_head=True, samples_per_task=60
  )
  model_name, kwargs = MODELS[name]
  if model_name == 'pnn':
    model = progressive.progressive_version(
      models.make_model('mlp', num_classes=2, **kwargs), 5, 'linear'
    )
  else:
    kwargs = {**kwargs, 'num_heads': kwargs.get('num_heads', 1)}
    model = models.make_model(model_name, num_classes=2, **kwargs)
  state = ts_lib.create_train_state(
    model, specs.OptimizerSpec(), jax.random.PRNGKey(0), bench.input_shape, 2
  )
  if state.model_state:  # BatchNorm: statistics that are not 0 / 1
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 1000))
    stats = jax.tree.map(
      lambda v: v + 0.5 * jax.random.uniform(next(keys), v.shape), state.model_state
    )
    state = state.replace(model_state=stats)
  state = state.replace(class_mask=jnp.array([True, True]), task=jnp.int32(1))
  return state, train_lib.task_data(bench.tasks[1].train, 16)


@pytest.mark.parametrize('kind', ['empirical', 'true'])
@pytest.mark.parametrize('name', sorted(MODELS))
def test_fisher_equals_the_per_sample_reference(name, kind):
  state, data = setup(name)
  fast = jax.jit(ewc.fisher_diagonal, static_argnums=2)(state, data, kind)
  reference = jax.jit(ewc.reference_fisher_diagonal, static_argnums=2)(state, data, kind)
  for got, want in zip(jax.tree.leaves(fast), jax.tree.leaves(reference)):
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6 * float(jnp.max(want)) + 1e-12)
  assert max(float(jnp.max(v)) for v in jax.tree.leaves(fast)) > 0


@pytest.mark.parametrize('name', sorted(MODELS))
def test_mas_importance_equals_the_per_sample_reference(name):
  state, data = setup(name)
  fast = jax.jit(mas.mas_importance)(state, data)
  reference = jax.jit(mas.reference_mas_importance)(state, data)
  for got, want in zip(jax.tree.leaves(fast), jax.tree.leaves(reference)):
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6 * float(jnp.max(want)) + 1e-12)


@pytest.mark.parametrize('name', ['mlp', 'mlp_multi_head', 'cnn', 'resnet18_reduced'])
def test_the_model_families_need_no_per_sample_fallback(name):
  state, data = setup(name)
  uncovered = per_sample.uncovered_parameters(state, jax.tree.map(lambda a: a[0], data))
  assert uncovered == []


def test_dense_layers_take_the_closed_form():
  """The Dense layers' sums are one matmul of `|x|^p` and `|delta|^p`: the lowered
  pass holds no per-sample tensor of a Dense kernel's size `[B, 784, 32]` (the
  reference does)."""
  state, data = setup('mlp')
  objective = ewc.fisher_objective(state, 'empirical')
  per_sample_kernels = 'x'.join(map(str, (16, *state.params['Dense_0']['kernel'].shape))) + 'x'

  def lowered(fn):
    return jax.jit(lambda s, d: fn(s, d, objective, 2)).lower(state, data).as_text()

  assert per_sample_kernels in lowered(per_sample.reference_power_sums)
  assert per_sample_kernels not in lowered(per_sample.power_sums)


def test_padding_samples_count_for_nothing():
  state, data = setup('cnn')
  real = int(data.mask.sum())
  assert real < data.mask.size  # the chunk is padded
  first = Batch(*(a.reshape((-1,) + a.shape[2:])[:real] for a in data))
  single = jax.tree.map(lambda a: a[None], first)
  np.testing.assert_allclose(
    jax.tree.leaves(ewc.fisher_diagonal(state, data))[0],
    jax.tree.leaves(ewc.fisher_diagonal(state, single))[0],
    rtol=2e-5,
    atol=1e-9,
  )
