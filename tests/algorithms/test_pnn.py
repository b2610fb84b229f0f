"""Property tests of PNN (Rusu et al. 2016): training task k leaves every other
column bit-identical under any optimizer, column k reads columns < k through
its lateral adapters (eq. 1-2) and nothing of later columns, and the network
grows by one column per task."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcl import algorithms
from jcl import models
from jcl import specs
from jcl import train_state as ts_lib
from jcl.algorithms import base
from jcl.algorithms import pnn
from jcl.models import progressive

from tests.algorithms.conftest import INPUT_DIM, NUM_CLASSES, random_batch, tiny_state

NUM_TASKS = 3
CONTEXT = algorithms.Context((INPUT_DIM,), NUM_CLASSES, NUM_TASKS)
MLP = models.MLP(widths=(8, 8), num_classes=NUM_CLASSES)
# Carried momentum / Adam moments and weight decay would move a parameter
# whose gradient is zero; reinit_per_task=False keeps them across tasks.
SGD_MOMENTUM_WD = specs.OptimizerSpec(
  'sgd', learning_rate=0.1, momentum=0.9, weight_decay=0.01, reinit_per_task=False
)
ADAM_WD = specs.OptimizerSpec('adam', learning_rate=0.01, weight_decay=0.01, reinit_per_task=False)


def progressive_state(adapter='linear', optimizer=SGD_MOMENTUM_WD, model=MLP, context=CONTEXT):
  spec = specs.PNNSpec(adapter=adapter)
  model = algorithms.adapt_model(spec, model, context)
  state = ts_lib.create_train_state(
    model, optimizer, jax.random.PRNGKey(0), context.input_shape, context.num_classes
  )
  return algorithms.build(spec, context), state


def leaves_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def column(tree, k):
  return tree[f'column_{k}']


def param_shapes(model, input_shape=(INPUT_DIM,)):
  """The parameter tree of `model` as shapes (nothing is computed)."""
  return jax.eval_shape(lambda: models.init_variables(model, jax.random.PRNGKey(0), input_shape))[
    'params'
  ]


@pytest.mark.parametrize(
  'adapter, optimizer',
  [('linear', SGD_MOMENTUM_WD), ('mlp', ADAM_WD)],
  ids=['linear-sgd_momentum_wd', 'mlp-adam_wd'],
)
def test_other_columns_stay_bit_identical_while_a_task_trains(adapter, optimizer):
  algo, state = progressive_state(adapter, optimizer)
  algo_state = algo.init(state, jax.random.PRNGKey(0))
  step = jax.jit(algo.step)
  probe = random_batch(seed=9, size=4).x
  outputs = jax.jit(
    lambda s, k: s.apply_fn({'params': s.params}, probe, jnp.full((4,), k, jnp.int32))
  )
  for task in range(NUM_TASKS):
    state, algo_state = algo.begin_task(state, algo_state, task)
    before = jax.device_get(state)
    logits_before = [outputs(state, k) for k in range(task)]
    for k in range(4):
      state, algo_state, metrics = step(
        state, random_batch(seed=10 * task + k, task=task), algo_state
      )
      assert np.isfinite(metrics['loss'])
    after = jax.device_get(state)
    for k in range(NUM_TASKS):
      same = leaves_equal(column(before.params, k), column(after.params, k))
      assert same == (k != task), (task, k)
      if k != task:  # the optimizer never saw the frozen columns either
        assert leaves_equal(
          [
            x
            for p, x in jax.tree_util.tree_flatten_with_path(before.opt_state)[0]
            if pnn.column_of(p) == k
          ],
          [
            x
            for p, x in jax.tree_util.tree_flatten_with_path(after.opt_state)[0]
            if pnn.column_of(p) == k
          ],
        )
    for k in range(task):  # earlier tasks' predictions are unchanged, bit for bit
      np.testing.assert_array_equal(outputs(state, k), logits_before[k])


def test_a_zero_gradient_alone_would_not_freeze_a_column():
  """Why the step restores frozen leaves: with momentum and weight decay, a
  zero gradient still moves column 0 while task 1 trains."""
  algo, state = progressive_state('linear', SGD_MOMENTUM_WD)
  algo_state = algo.init(state, None)

  @jax.jit
  def zero_gradient_step(state, batch):
    grads, _, aux, _ = base.loss_and_grads(state, batch, algo_state)
    return base.apply_update(state, pnn.active_only(grads, state.task), aux['model_state']), grads

  for task in (0, 1):
    state, algo_state = algo.begin_task(state, algo_state, task)
    before = jax.device_get(state.params)
    for k in range(2):
      state, grads = zero_gradient_step(state, random_batch(k, task=task))
  assert not leaves_equal(column(before, 0), column(state.params, 0))
  # Task 1's loss does reach column 0, through column 1's lateral connections.
  assert float(jnp.abs(column(grads, 0)['layers_0']['own']['kernel']).max()) > 0


def test_gradient_clipping_sees_only_the_trained_column():
  optimizer = specs.OptimizerSpec('sgd', learning_rate=1.0, grad_clip_norm=1e-3)
  algo, state = progressive_state('linear', optimizer)
  state, algo_state = algo.begin_task(state, algo.init(state, None), 1)
  new, _, _ = jax.jit(algo.step)(state, random_batch(task=1), algo_state)
  moved = jax.tree.map(lambda a, b: a - b, new.params, state.params)
  norm = np.sqrt(sum(float(jnp.sum(d**2)) for d in jax.tree.leaves(moved)))
  # The whole step goes to column 1: column 0's gradient (through the
  # lateral connections) is dropped before the global norm is taken.
  np.testing.assert_allclose(norm, 1e-3, rtol=1e-4)


def _perturb(params, path, scale=0.5):
  """`params` with the leaf at `path` (a tuple of keys) shifted by noise."""
  params = jax.tree.map(lambda x: x, params)  # a copy of the containers
  node = params
  for key in path[:-1]:
    node = node[key]
  leaf = node[path[-1]]
  node[path[-1]] = leaf + scale * jax.random.normal(jax.random.PRNGKey(1), leaf.shape)
  return params


@pytest.mark.parametrize('adapter', ['linear', 'mlp'])
def test_column_k_reads_earlier_columns_through_its_adapters_only(adapter):
  _, state = progressive_state(adapter)
  params = state.params
  x = random_batch(size=15).x
  t = jnp.arange(15, dtype=jnp.int32) % NUM_TASKS  # every column runs
  rows = [np.asarray(t) == k for k in range(NUM_TASKS)]
  logits = jax.jit(lambda p: state.apply_fn({'params': p}, x, t))
  out = logits(params)
  head = f'layers_{len(MLP.widths)}'

  # Later columns have no say in earlier tasks.
  later = logits(_perturb(params, ('column_2', 'layers_0', 'own', 'kernel')))
  np.testing.assert_array_equal(later[~rows[2]], out[~rows[2]])
  assert not np.allclose(later[rows[2]], out[rows[2]])

  # Column 0's hidden activations reach column 1 (whose own weights are untouched)...
  hidden = logits(_perturb(params, ('column_0', 'layers_0', 'own', 'kernel')))
  assert not np.allclose(hidden[rows[1]], out[rows[1]], atol=1e-4)
  # ...its head does not (outputs are not lateral inputs)...
  head_only = logits(_perturb(params, ('column_0', head, 'own', 'kernel')))
  np.testing.assert_array_equal(head_only[rows[1]], out[rows[1]])
  assert not np.allclose(head_only[rows[0]], out[rows[0]])
  # ...and without column 1's adapters column 0 has no say in task 1.
  is_lateral = lambda key: isinstance(key, str) and key.startswith(('lateral_', 'U'))
  cut = jax.tree_util.tree_map_with_path(
    lambda p, v: (
      jnp.zeros_like(v)
      if (pnn.column_of(p) == 1 and any(is_lateral(getattr(key, 'key', None)) for key in p))
      else v
    ),
    params,
  )
  cut_hidden = logits(_perturb(cut, ('column_0', 'layers_0', 'own', 'kernel')))
  np.testing.assert_array_equal(cut_hidden[rows[1]], logits(cut)[rows[1]])

  # A batch of one task runs only columns 0..k, to the same logits.
  apply = jax.jit(lambda x, t: state.apply_fn({'params': params}, x, t))
  for k in range(NUM_TASKS):
    alone = apply(x[rows[k]], t[rows[k]])
    np.testing.assert_allclose(alone, out[rows[k]], rtol=1e-6, atol=1e-6)


def test_cnn_columns_have_convolutional_adapters():
  cnn = models.CNN(channels=(2, 3), hidden=4, num_classes=NUM_CLASSES)
  model = progressive.progressive_version(cnn, 2, adapter='mlp')
  params = models.init_variables(model, jax.random.PRNGKey(0), (8, 8, 1))['params']
  conv = column(params, 1)['layers_1']
  assert conv['V']['kernel'].shape == (1, 1, 2, 3)  # 1x1: column 0's 2 channels onto 3
  assert conv['U']['kernel'].shape == (3, 3, 3, 3)
  assert models.count_params(column(params, 0)) == models.count_params(param_shapes(cnn, (8, 8, 1)))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 8, 8, 1)), jnp.float32)
  t = jnp.array([0, 1, 0, 1, 0, 1], jnp.int32)
  logits = jax.jit(lambda p: model.apply({'params': p}, x, t))
  out = logits(params)
  later = logits(_perturb(params, ('column_1', 'layers_0', 'own', 'kernel')))
  np.testing.assert_array_equal(later[::2], out[::2])  # task 0 ignores column 1
  first_conv = logits(_perturb(params, ('column_0', 'layers_0', 'own', 'kernel')))
  assert not np.allclose(first_conv[1::2], out[1::2], atol=1e-4)  # task 1 reads column 0


@pytest.mark.parametrize('adapter', ['linear', 'mlp'])
def test_forward_is_eq_1_and_eq_2(adapter):
  model = progressive.ProgressiveMLP(
    num_columns=2, widths=(5,), num_classes=NUM_CLASSES, adapter=adapter
  )
  x = np.random.default_rng(0).normal(size=(7, INPUT_DIM)).astype(np.float32)
  params = model.init(jax.random.PRNGKey(3), x, np.zeros(7, np.int32))['params']
  p = jax.tree.map(np.asarray, params)
  relu = lambda a: np.maximum(a, 0)
  dense = lambda d, h: h @ d['kernel'] + d.get('bias', 0)
  h0 = relu(dense(p['column_0']['layers_0']['own'], x))  # h_1^(0)
  h1 = relu(dense(p['column_1']['layers_0']['own'], x))  # h_1^(1)
  head = p['column_1']['layers_1']
  if adapter == 'linear':  # eq. 1: W h^(1) + U^(1:0) h^(0)
    expected = dense(head['own'], h1) + h0 @ head['lateral_0']['kernel']
  else:  # eq. 2: W h^(1) + U relu(V alpha h^(0))
    expected = (
      dense(head['own'], h1) + relu(dense(head['V'], head['alpha'] * h0)) @ head['U']['kernel']
    )
    assert 0 < head['alpha'] < 0.1  # a small random initial scale
  got = model.apply({'params': params}, x, np.ones(7, np.int32))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
    model.apply({'params': params}, x, np.zeros(7, np.int32)),
    dense(p['column_0']['layers_1']['own'], h0),
    rtol=1e-5,
    atol=1e-5,
  )


@pytest.mark.parametrize('adapter', ['linear', 'mlp'])
def test_each_column_adds_its_layers_and_adapters_from_every_earlier_column(adapter):
  num_tasks = 4
  params = param_shapes(
    algorithms.adapt_model(
      specs.PNNSpec(adapter=adapter), MLP, algorithms.Context((INPUT_DIM,), NUM_CLASSES, num_tasks)
    )
  )
  sizes = (INPUT_DIM, *MLP.widths, NUM_CLASSES)  # n_0 .. n_L
  own = sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
  assert own == models.count_params(param_shapes(MLP))  # a column is the MLP
  for k in range(num_tasks):
    lateral = 0
    for n_in, n_out in zip(sizes[1:-1], sizes[2:]):  # layers 2..L read layer i-1 of columns < k
      if k and adapter == 'linear':
        lateral += k * n_in * n_out  # U^(k:j), j < k
      elif k:
        lateral += 1 + (k * n_in * n_out + n_out) + n_out * n_out  # alpha, V (+bias), U
    assert models.count_params(column(params, k)) == own + lateral, k
  assert set(params) == {f'column_{k}' for k in range(num_tasks)}


def test_heads_per_column_multi_head_and_masked():
  multi = models.MLP(widths=(8,), num_classes=2, num_heads=NUM_TASKS)
  params = param_shapes(progressive.progressive_version(multi, NUM_TASKS))
  for k in range(NUM_TASKS):  # column k is task k's 2-unit head
    assert column(params, k)['layers_1']['own']['kernel'].shape == (8, 2)
  masked = progressive.progressive_version(
    models.MLP(widths=(8,), num_classes=NUM_CLASSES, task_classes=((0, 1), (1, 2), (2, 0))),
    NUM_TASKS,
  )
  x = random_batch(size=6).x
  t = jnp.array([0, 1, 2, 0, 1, 2], jnp.int32)
  logits = masked.apply(models.init_variables(masked, jax.random.PRNGKey(0), (INPUT_DIM,)), x, t)
  outside = np.array([2, 0, 1, 2, 0, 1])
  assert np.all(np.asarray(logits)[np.arange(6), outside] == models.MASK_VALUE)
  with pytest.raises(ValueError, match='num_heads must be 1'):
    progressive.progressive_version(models.MLP(widths=(8,), num_classes=2, num_heads=2), 3)


def test_plain_models_and_tasks_without_a_column_are_refused():
  algo = algorithms.build(specs.PNNSpec(), CONTEXT)
  with pytest.raises(ValueError, match='adapt_model'):
    algo.init(tiny_state(), None)
  with pytest.raises(ValueError, match='adapt_model'):
    algo.step(tiny_state(), random_batch(), base.EmptyState())
  with pytest.raises(ValueError, match='no progressive .column. version of ResNet18Reduced'):
    algorithms.adapt_model(specs.PNNSpec(), models.ResNet18Reduced(num_classes=10), CONTEXT)
  _, state = progressive_state()
  with pytest.raises(ValueError, match='task 3 has no column'):
    algo.begin_task(state, base.EmptyState(), NUM_TASKS)
  with pytest.raises(ValueError, match="'adapter'"):
    specs.PNNSpec(adapter='conv')
