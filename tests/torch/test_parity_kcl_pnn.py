"""KCL and PNN give the same numbers on both backends.

From the same initial weights (the flax model's, converted), the same batches
(the first one partly padding) and the same random numbers (the JAX keys
through `helpers.JaxRandom`; KCL's per-step noise of the random bases, drawn
inside the JAX model from its 'rff' rng stream, is fed to the PyTorch step
through `kcl.make(..., bases_noise=...)`):

* PNN over 3 tasks: after every step the weights of every column agree to
  float32 rounding (rtol 1e-5, atol 1e-6), and every column but the one being
  trained, with its momentum / Adam buffers, stays bit-identical
  (`torch.equal`) under momentum and weight decay;
* KCL over 2 tasks, each kernel: after every step the weights (extractor,
  inference networks, ridge, scale), the coresets and their priorities agree
  (rtol 1e-5, atol 1e-6; coresets exactly), and after each task so do the
  predictions on test inputs of both tasks.

Dropout is off.
"""

import functools

import jax
import numpy as np
import pytest
import torch

from jcl import algorithms
from jcl import models
from jcl import specs
from jcl.algorithms import kcl as jax_kcl
from jcl.torch import algorithms as torch_algorithms
from jcl.torch import convert
from jcl.torch import models as torch_models
from jcl.torch import train_state as torch_train_state
from jcl.torch.algorithms import kcl as torch_kcl
from jcl.torch.algorithms import pnn as torch_pnn

from tests.small import small_spec
from tests.torch import helpers

FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}
BATCH = 6
KCL_COLLECTIONS = (torch_kcl.CORESET, torch_kcl.RANDOM_FEATURES)


def make_states(flax_model, torch_model, optimizer, input_shape, num_classes):
  """`(jax_state, torch_state)` of the same model: the flax initialization
  converted (params and the other collections), the same keys."""
  jax_state = helpers._create_train_state(
    flax_model, optimizer, jax.random.PRNGKey(0), tuple(input_shape), num_classes
  )
  torch_model.load_state_dict(
    convert.flax_to_torch({'params': jax_state.params, **jax_state.model_state})
  )
  torch_state = torch_train_state.create_train_state(
    torch_model, optimizer, num_classes=num_classes, rng=helpers.JaxRandom(jax_state.rng)
  )
  return jax_state, torch_state


def task_batch(seed, task, classes, input_shape, real=BATCH):
  """A batch of task `task` with labels among `classes`."""
  jax_batch, torch_batch = helpers.random_batch(
    seed, BATCH, input_shape, len(classes), task=task, real=real
  )
  labels = np.asarray(classes)[np.asarray(jax_batch.y)]
  return (
    jax_batch._replace(y=jax.numpy.asarray(labels, np.int32)),
    torch_batch._replace(y=torch.from_numpy(labels.astype(np.int32))),
  )


# ----------------------------------------------------------------------------
# PNN.

SGD_MOMENTUM_WD = specs.OptimizerSpec(
  learning_rate=0.1, momentum=0.9, weight_decay=0.01, reinit_per_task=False, grad_clip_norm=0.3
)
ADAM_WD = specs.OptimizerSpec('adam', learning_rate=0.01, weight_decay=0.01, reinit_per_task=False)
PNN_TASKS = 3
PNN_CASES = {
  # name: (model, fields, input shape, adapter, optimizer)
  'mlp_linear_sgd': (
    'mlp',
    dict(widths=(8, 8), num_classes=6, task_classes=((0, 1), (2, 3), (4, 5))),
    (6,),
    'linear',
    SGD_MOMENTUM_WD,
  ),
  'cnn_mlp_sgd': (
    'cnn',
    dict(channels=(2, 3), hidden=8, num_classes=2, num_heads=PNN_TASKS),
    (8, 8, 1),
    'mlp',
    SGD_MOMENTUM_WD,
  ),
  'mlp_mlp_adam': (
    'mlp',
    dict(widths=(8,), num_classes=2, num_heads=PNN_TASKS),
    (6,),
    'mlp',
    ADAM_WD,
  ),
}


def column_snapshot(torch_state, column):
  """Column `column`'s parameters and per-parameter optimizer buffers (copies)."""
  optimizer = torch_state.optimizer
  snapshot = {}
  for i, name in enumerate(torch_state.param_names):
    if torch_pnn.column_of(name) == column:
      snapshot[name] = torch_state.param_list[i].detach().clone()
      for field in ('trace', 'mu', 'nu'):
        if getattr(optimizer, field) is not None:
          snapshot[f'{name}/{field}'] = getattr(optimizer, field)[i].clone()
  return snapshot


def same_snapshot(a, b):
  return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize('case', sorted(PNN_CASES))
def test_pnn_same_weights_and_frozen_columns_bit_identical(case):
  model_name, fields, input_shape, adapter, optimizer = PNN_CASES[case]
  spec = specs.PNNSpec(adapter=adapter)
  num_classes = fields['num_classes']
  context = (input_shape, num_classes, PNN_TASKS)
  flax_model = algorithms.adapt_model(
    spec, models.make_model(model_name, **fields), algorithms.Context(*context)
  )
  torch_model = torch_algorithms.adapt_model(
    spec,
    torch_models.make_model(model_name, input_shape, **fields),
    torch_algorithms.Context(*context),
  )
  jax_ts, torch_ts = make_states(flax_model, torch_model, optimizer, input_shape, num_classes)
  jax_algo = algorithms.build(spec, algorithms.Context(*context))
  torch_algo = torch_algorithms.build(spec, torch_algorithms.Context(*context))
  step = jax.jit(jax_algo.step, compiler_options=FAST_COMPILE)
  jax_state, torch_state = jax_algo.init(jax_ts, None), torch_algo.init(torch_ts)
  final = {}
  for task in range(PNN_TASKS):
    jax_ts, jax_state = jax_algo.begin_task(jax_ts, jax_state, task)
    torch_ts, torch_state = torch_algo.begin_task(torch_ts, torch_state, task)
    before = [column_snapshot(torch_ts, k) for k in range(PNN_TASKS)]
    classes = (2 * task, 2 * task + 1) if num_classes == 6 else (0, 1)
    for k in range(3):
      jax_batch, torch_batch = task_batch(
        10 * task + k, task, classes, input_shape, real=4 if k == 0 else BATCH
      )
      jax_ts, jax_state, jax_metrics = step(jax_ts, jax_batch, jax_state)
      torch_ts, torch_state, torch_metrics = torch_algo.step(torch_ts, torch_batch, torch_state)
      what = f'{case} task {task} step {k}'
      helpers.assert_metrics_close(jax_metrics, torch_metrics, what)
      helpers.assert_states_close(jax_ts, torch_ts, what=what)
    for k in range(PNN_TASKS):
      after = column_snapshot(torch_ts, k)
      assert same_snapshot(before[k], after) == (k != task), f'{case} task {task} column {k}'
    final[task] = column_snapshot(torch_ts, task)
  for k in range(PNN_TASKS):  # each column as its own task left it, bit for bit
    assert same_snapshot(final[k], column_snapshot(torch_ts, k)), f'{case} column {k}'


def test_progressive_models_mirror_flax_layer_for_layer():
  """Same parameter names and shapes as the flax progressive model (1:1 through
  `convert`, both ways bit for bit), flax's initial distributions, and the
  initialization follows the configured model's (seeded) weights."""
  for name, fields, shape, adapter in (
    ('mlp', dict(widths=(5, 7), num_classes=3), (6,), 'linear'),
    ('cnn', dict(channels=(2, 3), hidden=4, num_classes=3), (9, 9, 1), 'mlp'),
  ):
    flax_model = algorithms.adapt_model(
      specs.PNNSpec(adapter=adapter),
      models.make_model(name, **fields),
      algorithms.Context(shape, 3, 3),
    )
    variables = models.init_variables(flax_model, jax.random.PRNGKey(0), shape)
    torch_model = torch_pnn.adapt_model(
      specs.PNNSpec(adapter=adapter),
      torch_models.make_model(name, shape, seed=0, **fields),
      torch_algorithms.Context(shape, 3, 3),
    )
    own = {k: v.shape for k, v in torch_model.state_dict().items()}
    converted = convert.flax_to_torch(variables)
    assert own == {k: v.shape for k, v in converted.items()}, (name, adapter)
    torch_model.load_state_dict(converted)
    back = convert.torch_to_flax(torch_model.state_dict())
    assert jax.tree.structure(back) == jax.tree.structure(variables)
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(back)):
      assert a.shape == b.shape and a.dtype == b.dtype
      np.testing.assert_array_equal(np.asarray(a), b)
  fresh = torch_pnn.adapt_model(
    specs.PNNSpec(adapter='mlp'),
    torch_models.make_model('mlp', (6,), widths=(64, 64), seed=0),
    torch_algorithms.Context((6,), 10, 4),
  )
  alphas = torch.stack([fresh.column(k).layer(i).alpha for k in (1, 2, 3) for i in (1, 2)])
  assert torch.all((alphas >= 0) & (alphas < 0.1)) and len(set(alphas.tolist())) == 6
  linear = torch_pnn.adapt_model(
    specs.PNNSpec(),
    torch_models.make_model('mlp', (6,), widths=(64, 64), seed=0),
    torch_algorithms.Context((6,), 10, 4),
  )
  own_std = float(linear.column(3).layers_1.own.weight.detach().std()) * 64**0.5
  lateral_std = float(linear.column(3).layers_1.lateral_0.weight.detach().std()) * 64**0.5
  assert abs(own_std - 1) < 0.1 and abs(lateral_std - 3**-0.5) < 0.06  # U^(k:j) scaled 1/sqrt(k)
  again = torch_pnn.adapt_model(
    specs.PNNSpec(),
    torch_models.make_model('mlp', (6,), widths=(64, 64), seed=0),
    torch_algorithms.Context((6,), 10, 4),
  )
  other = torch_pnn.adapt_model(
    specs.PNNSpec(),
    torch_models.make_model('mlp', (6,), widths=(64, 64), seed=1),
    torch_algorithms.Context((6,), 10, 4),
  )
  for key, value in linear.state_dict().items():
    assert torch.equal(value, again.state_dict()[key]), key
  assert not torch.equal(linear.column_2.layers_0.own.weight, other.column_2.layers_0.own.weight)


def test_pnn_and_kcl_refuse_a_plain_model():
  plain = torch_train_state.create_train_state(
    torch_models.make_model('mlp', (6,), widths=(4,)), specs.OptimizerSpec(), num_classes=10
  )
  with pytest.raises(ValueError, match='adapt_model'):
    torch_pnn.make(specs.PNNSpec()).init(plain)
  kcl = torch_kcl.make(specs.KCLSpec(core_size=4))
  _, batch = helpers.random_batch(0, 4, (6,), 10)
  with pytest.raises(ValueError, match='adapt_model'):
    kcl.step(plain, batch, kcl.init(plain))
  with pytest.raises(ValueError, match='no progressive .column. version of ResNet18Reduced'):
    torch_pnn.adapt_model(
      specs.PNNSpec(),
      torch_models.make_model('resnet18_reduced', (8, 8, 3), nf=2),
      torch_algorithms.Context((8, 8, 3), 10, 2),
    )
  state = torch_train_state.create_train_state(
    torch_pnn.adapt_model(specs.PNNSpec(), plain.model, torch_algorithms.Context((6,), 10, 2)),
    specs.OptimizerSpec(),
    num_classes=10,
  )
  with pytest.raises(ValueError, match='task 2 has no column'):
    torch_pnn.make(specs.PNNSpec()).begin_task(state, None, 2)


# ----------------------------------------------------------------------------
# KCL.

KCL_INPUT, KCL_CLASSES, KCL_TASKS = (6,), 4, 2
KCL_TASK_CLASSES = ((0, 1), (2, 3))


def jax_bases_noise(flax_model):
  """`bases_noise` for the PyTorch step: the noise the JAX step draws, i.e.
  `normal(make_rng('rff'))` of the model under the step's key `key(s, BASES_SALT)`."""

  @functools.partial(jax.jit, static_argnums=1)
  def draw(key, shape):
    return flax_model.apply(
      {},
      method=lambda module: jax.random.normal(module.make_rng(jax_kcl.BASES_RNG), shape),
      rngs={jax_kcl.BASES_RNG: key},
    )

  def bases_noise(torch_state, shape):
    return torch.from_numpy(np.array(draw(torch_state.step_key(jax_kcl.BASES_SALT), shape)))

  return bases_noise


def kcl_variables(torch_state):
  return convert.torch_to_flax(torch_state.model.state_dict(), KCL_COLLECTIONS)


@pytest.mark.parametrize('kernel', ['rff', 'rbf', 'linear'])
def test_kcl_same_weights_coresets_and_predictions(kernel):
  spec = small_spec('kcl', kernel=kernel, tau=0.5)  # core_size=4, num_random_features=16
  fields = dict(widths=(8,), num_classes=KCL_CLASSES, task_classes=KCL_TASK_CLASSES)
  context = (KCL_INPUT, KCL_CLASSES, KCL_TASKS)
  flax_model = algorithms.adapt_model(spec, models.MLP(**fields), algorithms.Context(*context))
  torch_model = torch_algorithms.adapt_model(
    spec, torch_models.MLP(KCL_INPUT, **fields), torch_algorithms.Context(*context)
  )
  optimizer = specs.OptimizerSpec(learning_rate=0.1, momentum=0.9, weight_decay=1e-3)
  jax_ts, torch_ts = make_states(flax_model, torch_model, optimizer, KCL_INPUT, KCL_CLASSES)
  jax_algo = algorithms.build(spec, algorithms.Context(*context))
  torch_algo = torch_kcl.make(
    spec, torch_algorithms.Context(*context), bases_noise=jax_bases_noise(flax_model)
  )
  step = jax.jit(jax_algo.step, compiler_options=FAST_COMPILE)
  predict = jax.jit(
    lambda s, x, t: s.apply_fn({'params': s.params, **s.model_state}, x, t),
    compiler_options=FAST_COMPILE,
  )
  jax_state, torch_state = jax_algo.init(jax_ts, None), torch_algo.init(torch_ts)
  probe = np.random.default_rng(99).normal(size=(8, *KCL_INPUT)).astype(np.float32)
  probe_t = np.arange(8, dtype=np.int32) % KCL_TASKS
  for task in range(KCL_TASKS):
    jax_ts, jax_state = jax_algo.begin_task(jax_ts, jax_state, task)
    torch_ts, torch_state = torch_algo.begin_task(torch_ts, torch_state, task)
    batches = [
      task_batch(
        10 * task + k, task, KCL_TASK_CLASSES[task], KCL_INPUT, real=4 if k == 0 else BATCH
      )
      for k in range(3)
    ]
    for k, (jax_batch, torch_batch) in enumerate(batches):
      jax_ts, jax_state, jax_metrics = step(jax_ts, jax_batch, jax_state)
      torch_ts, torch_state, torch_metrics = torch_algo.step(torch_ts, torch_batch, torch_state)
      what = f'{kernel} task {task} step {k}'
      helpers.assert_metrics_close(jax_metrics, torch_metrics, what)
      assert int(jax_ts.step) == torch_ts.step
      variables = kcl_variables(torch_ts)
      helpers.assert_trees_close(jax_ts.params, variables['params'], what=what)
      for name, value in jax_ts.model_state[jax_kcl.CORESET].items():
        np.testing.assert_array_equal(
          variables[jax_kcl.CORESET][name], value, err_msg=f'{what} coreset {name}'
        )
      np.testing.assert_array_equal(torch_state.priority.numpy(), jax_state.priority, err_msg=what)
    assert int(jax_metrics['coreset_size']) == spec.core_size
    if kernel == 'rff':
      assert float(jax_metrics['kl']) > 0
    jax_chunk, torch_chunk = helpers.stack(batches)
    jax_ts, jax_state = jax_algo.end_task(jax_ts, jax_state, jax_chunk)
    torch_ts, torch_state = torch_algo.end_task(torch_ts, torch_state, torch_chunk)
    expected = np.asarray(predict(jax_ts, probe, probe_t))
    with torch.no_grad():
      got = torch_ts.model(torch.from_numpy(probe), torch.from_numpy(probe_t)).numpy()
    np.testing.assert_allclose(
      got,
      expected,
      rtol=helpers.RTOL,
      atol=helpers.ATOL,
      err_msg=f'{kernel} predictions after task {task}',
    )
    trained = probe_t <= task
    own = np.stack([expected[b, KCL_TASK_CLASSES[probe_t[b]]] for b in range(8)])
    assert np.all(np.abs(own[trained]).max(-1) > 1e-3)  # the classifiers of trained tasks speak


def test_kcl_model_converts_one_to_one():
  """Every parameter and collection of the flax model has its PyTorch
  counterpart, and flax -> PyTorch -> flax is bit for bit."""
  spec = specs.KCLSpec(core_size=3, num_random_features=8)
  flax_model = algorithms.adapt_model(
    spec, models.MLP(widths=(5,), num_classes=3), algorithms.Context((4,), 3, 2)
  )
  variables = models.init_variables(flax_model, jax.random.PRNGKey(0), (4,))
  torch_model = torch_kcl.adapt_model(
    spec, torch_models.MLP((4,), widths=(5,), num_classes=3), torch_algorithms.Context((4,), 3, 2)
  )
  converted = convert.flax_to_torch(variables)
  assert {k: v.shape for k, v in torch_model.state_dict().items()} == {
    k: v.shape for k, v in converted.items()
  }
  torch_model.load_state_dict(converted)
  back = convert.torch_to_flax(torch_model.state_dict(), KCL_COLLECTIONS)
  assert jax.tree.structure(back) == jax.tree.structure(variables)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(back)):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), b)
