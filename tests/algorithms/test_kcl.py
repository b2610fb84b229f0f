"""Kernel Continual Learning: kernel ridge regression, random features, the
KL term, per-task coresets and the model's per-task predictions."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcl import algorithms
from jcl import models
from jcl import specs
from jcl import train_state as ts_lib
from jcl.algorithms import kcl
from jcl.types import Batch

from tests.algorithms.conftest import INPUT_DIM, MODEL, NUM_CLASSES, random_batch, tiny_state

CONTEXT = algorithms.Context((INPUT_DIM,), NUM_CLASSES, num_tasks=2)


def kcl_state(kernel='rff', core_size=6, **spec_fields):
  spec = specs.KCLSpec(kernel=kernel, core_size=core_size, num_random_features=32, **spec_fields)
  model = algorithms.adapt_model(spec, MODEL, CONTEXT)
  return spec, algorithms.build(spec, CONTEXT), tiny_state(model=model)


@pytest.fixture(scope='module')
def rff_run():
  """One rff KCL (core_size 6, tau 0.5) and its jitted step, shared by the tests."""
  _, algo, state = kcl_state(core_size=6, tau=0.5)
  return algo, jax.jit(algo.step), state


def fill_coreset(state, task, seed):
  """Task `task`'s slots filled with random samples."""
  rng = np.random.default_rng(seed)
  coreset = dict(state.model_state[kcl.CORESET])
  slots = coreset['valid'].shape[1]
  coreset['x'] = coreset['x'].at[task].set(rng.normal(size=(slots, INPUT_DIM)).astype(np.float32))
  coreset['y'] = coreset['y'].at[task].set(np.arange(slots) % NUM_CLASSES)
  coreset['valid'] = coreset['valid'].at[task].set(True)
  return state.replace(model_state={**state.model_state, kcl.CORESET: coreset})


@jax.jit
def predict(state, x, t):
  return state.apply_fn({'params': state.params, **state.model_state}, x, t)


# ----------------------------------------------------------------------------
# Kernels, ridge regression, KL (eq. 4-10).


def test_kernel_ridge_with_linear_kernel_is_primal_ridge_regression():
  """Dual solution `Q X^T (X X^T + lambda I)^-1 Y` == primal ridge
  `argmin |X w - Y|^2 + lambda |w|^2` (by lstsq), and tends to interpolation."""
  rng = np.random.default_rng(0)
  support, queries = rng.normal(size=(8, 12)), rng.normal(size=(5, 12))
  labels = rng.integers(0, 3, 8)
  targets = np.eye(3)[labels]
  for ridge in (1e-3, 0.5, 10.0):
    logits = kcl.task_logits(
      'linear',
      jnp.asarray(queries, jnp.float32),
      jnp.asarray(support, jnp.float32),
      jnp.asarray(labels),
      jnp.ones(8, bool),
      num_classes=3,
      ridge=ridge,
      scale=1.0,
    )
    augmented = np.concatenate([support, np.sqrt(ridge) * np.eye(12)])
    w = np.linalg.lstsq(augmented, np.concatenate([targets, np.zeros((12, 3))]), rcond=None)[0]
    np.testing.assert_allclose(logits, queries @ w, rtol=2e-3, atol=2e-4)
  # Small ridge, fewer support points than dimensions: the support is fitted exactly.
  fitted = kcl.task_logits(
    'linear',
    jnp.asarray(support, jnp.float32),
    jnp.asarray(support, jnp.float32),
    jnp.asarray(labels),
    jnp.ones(8, bool),
    num_classes=3,
    ridge=1e-4,
    scale=1.0,
  )
  np.testing.assert_allclose(fitted, targets, atol=1e-2)


def test_ridge_coefficients_solve_the_regularised_system():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(6, 4))
  kernel, targets = a @ a.T, rng.normal(size=(6, 2))
  alpha = kcl.ridge_coefficients(
    jnp.asarray(kernel, jnp.float32), jnp.asarray(targets, jnp.float32), 0.3
  )
  expected = np.linalg.lstsq(kernel + 0.3 * np.eye(6), targets, rcond=None)[0]
  np.testing.assert_allclose(alpha, expected, rtol=1e-4, atol=1e-5)


def test_empty_slots_take_no_part():
  rng = np.random.default_rng(2)
  support, queries = rng.normal(size=(5, 4)), rng.normal(size=(3, 4))
  labels = rng.integers(0, 3, 5)
  bases, phases = rng.normal(size=(64, 4)), rng.uniform(0, 2 * np.pi, 64)
  padded = np.concatenate([support, 100 * rng.normal(size=(3, 4))])
  padded_labels = np.concatenate([labels, [2, 2, 2]])
  valid = np.array([True] * 5 + [False] * 3)
  for kernel in ('rff', 'rbf', 'linear'):
    kw = dict(
      num_classes=3,
      ridge=0.1,
      scale=2.0,
      bases=jnp.asarray(bases, jnp.float32),
      phases=jnp.asarray(phases, jnp.float32),
    )
    full = kcl.task_logits(
      kernel,
      jnp.asarray(queries, jnp.float32),
      jnp.asarray(support, jnp.float32),
      jnp.asarray(labels),
      jnp.ones(5, bool),
      **kw,
    )
    masked = kcl.task_logits(
      kernel,
      jnp.asarray(queries, jnp.float32),
      jnp.asarray(padded, jnp.float32),
      jnp.asarray(padded_labels),
      jnp.asarray(valid),
      **kw,
    )
    np.testing.assert_allclose(masked, full, rtol=1e-4, atol=1e-5, err_msg=kernel)


def test_normalised_features_have_finite_gradients_at_zero_rows():
  """Empty coreset slots (zero inputs) may have all-zero features."""
  h = jnp.array([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]])
  np.testing.assert_allclose(kcl.normalize_features(h), [[0, 0, 0], [0.6, 0.8, 0]], atol=1e-7)
  grad = jax.grad(lambda h: jnp.sum(kcl.normalize_features(h) * jnp.arange(6.0).reshape(2, 3)))(h)
  assert np.all(np.isfinite(grad))


def test_rbf_kernel_is_positive_semidefinite():
  h = kcl.normalize_features(
    jnp.asarray(np.random.default_rng(3).normal(size=(40, 10)), jnp.float32)
  )
  gram = np.asarray(kcl.rbf_kernel(h, h), np.float64)
  np.testing.assert_allclose(np.diag(gram), 1.0, atol=1e-6)
  np.testing.assert_allclose(gram, gram.T, atol=1e-6)
  assert np.linalg.eigvalsh(gram).min() > -1e-5


def test_random_fourier_features_approximate_the_rbf_kernel():
  """With standard-normal bases (the prior's mean 0, variance 1), `psi^T psi`
  estimates `exp(-|a - b|^2 / 2)`; the error falls like `1 / sqrt(D)`."""
  h = kcl.normalize_features(
    jnp.asarray(np.random.default_rng(4).normal(size=(30, 8)), jnp.float32)
  )
  exact = kcl.rbf_kernel(h, h)
  errors = []
  rng = np.random.default_rng(5)
  for d in (16, 256, 8192):
    bases = rng.normal(size=(d, 8)).astype(np.float32)
    phases = rng.uniform(0, 2 * np.pi, d).astype(np.float32)
    psi = kcl.random_fourier_features(h, bases, phases)
    errors.append(float(jnp.max(jnp.abs(psi @ psi.T - exact))))
  assert errors[0] > errors[1] > errors[2], errors
  assert errors[2] < 0.06, errors


def test_kl_of_diagonal_gaussians():
  mean, log_var = jnp.array([0.3, -1.0, 2.0]), jnp.array([0.1, -0.5, 0.0])
  assert float(kcl.kl_diagonal_gaussians(mean, log_var, mean, log_var)) == pytest.approx(
    0.0, abs=1e-6
  )
  # KL(N(0, 1) || N(1, 4)) = log 2 + (1 + 1) / 8 - 1/2, per dimension.
  kl = kcl.kl_diagonal_gaussians(jnp.zeros(2), jnp.zeros(2), jnp.ones(2), jnp.full(2, jnp.log(4.0)))
  assert float(kl) == pytest.approx(2 * (np.log(2) + 0.25 - 0.5), rel=1e-5)
  assert float(kcl.kl_diagonal_gaussians(mean, log_var, mean + 0.1, log_var)) > 0


# ----------------------------------------------------------------------------
# The model: per-task classifiers on stored coresets.


def test_prediction_uses_only_the_own_tasks_coreset():
  _, _, state = kcl_state()
  state = fill_coreset(fill_coreset(state, 0, seed=10), 1, seed=11)
  x = jnp.asarray(np.random.default_rng(12).normal(size=(6, INPUT_DIM)), jnp.float32)
  t = jnp.array([0, 1, 0, 1, 1, 0], jnp.int32)
  mixed = predict(state, x, t)
  # A mixed batch gives each sample its own task's classifier.
  for task in (0, 1):
    alone = predict(state, x, jnp.full((6,), task, jnp.int32))
    np.testing.assert_allclose(mixed[t == task], alone[t == task], rtol=1e-5, atol=1e-6)
  # Replacing task 1's coreset leaves task 0's predictions as they were...
  changed = fill_coreset(state, 1, seed=99)
  after = predict(changed, x, t)
  np.testing.assert_allclose(after[t == 0], mixed[t == 0], rtol=1e-6, atol=1e-7)
  assert np.abs(np.asarray(after[t == 1] - mixed[t == 1])).max() > 1e-3
  # ...and task 0's classifier follows its own coreset.
  changed0 = fill_coreset(state, 0, seed=98)
  assert np.abs(np.asarray(predict(changed0, x, t)[t == 0] - mixed[t == 0])).max() > 1e-3


def test_eval_prediction_equals_the_training_forward_in_eval_mode():
  _, _, state = kcl_state()
  state = fill_coreset(state, 1, seed=13)
  x = jnp.asarray(np.random.default_rng(14).normal(size=(6, INPUT_DIM)), jnp.float32)
  variables = {'params': state.params, **state.model_state}
  logits, kl = jax.jit(
    functools.partial(state.apply_fn, train=False, method=kcl.KernelContinualModel.fit_terms)
  )(variables, x, jnp.ones(6), 1)
  np.testing.assert_allclose(
    logits, predict(state, x, jnp.ones(6, jnp.int32)), rtol=1e-5, atol=1e-6
  )
  assert float(kl) >= 0


def test_task_classes_mask_the_logits():
  spec = specs.KCLSpec(kernel='rbf', core_size=4)
  encoder = models.MLP(widths=(8,), num_classes=4, task_classes=((0, 1), (2, 3)))
  context = algorithms.Context((INPUT_DIM,), 4, num_tasks=2)
  state = ts_lib.create_train_state(
    algorithms.adapt_model(spec, encoder, context),
    specs.OptimizerSpec(),
    jax.random.PRNGKey(0),
    (INPUT_DIM,),
    4,
  )
  logits = predict(state, jnp.ones((2, INPUT_DIM)), jnp.array([0, 1], jnp.int32))
  assert np.all(np.asarray(logits)[0, 2:] < -1e8) and np.all(np.asarray(logits)[1, :2] < -1e8)


# ----------------------------------------------------------------------------
# The algorithm: coreset sampling, loss, protocol.


def two_class_batch(seed, task, classes, size=8):
  rng = np.random.default_rng(seed)
  return Batch(
    jnp.asarray(rng.normal(size=(size, INPUT_DIM)) + 10 * (task + 1), jnp.float32),
    jnp.asarray(rng.choice(classes, size), jnp.int32),
    jnp.full((size,), task, jnp.int32),
    jnp.ones((size,), jnp.float32),
  )


def test_select_coreset_is_class_balanced_and_streaming_equals_global():
  rng = np.random.default_rng(6)
  labels = jnp.asarray(rng.choice(3, 60, p=[0.6, 0.35, 0.05]), jnp.int32)
  priority = jnp.asarray(rng.uniform(size=60), jnp.float32)
  valid = jnp.asarray(rng.uniform(size=60) > 0.1)
  size = 12
  indices, kept = jax.jit(kcl.select_coreset, static_argnums=3)(labels, priority, valid, size)
  chosen = np.asarray(indices)[np.asarray(kept)]
  assert kept.all() and np.asarray(valid)[chosen].all()
  # Round-robin over classes: the rare class gives all it has, the others share the rest...
  counts = np.bincount(np.asarray(labels)[chosen], minlength=3)
  rare = int(np.sum(np.asarray(valid) & (np.asarray(labels) == 2)))
  assert counts[2] == min(rare, 4) and abs(counts[0] - counts[1]) <= 1 and counts.sum() == size
  # ...and each class gives its highest priorities.
  for c in range(3):
    pool = np.flatnonzero(np.asarray(valid) & (np.asarray(labels) == c))
    best = pool[np.argsort(-np.asarray(priority)[pool])][: counts[c]]
    assert set(best) == set(chosen[np.asarray(labels)[chosen] == c])
  # Offered in batches of 7, the kept set is the same as choosing among all at once.
  select = jax.jit(kcl.select_coreset, static_argnums=3)
  kept_ids = np.full(size, -1)
  for start in range(0, 60, 7):
    new = np.arange(start, start + 7)
    ids = np.concatenate([kept_ids, np.where(new < 60, new, -1)])
    safe = np.maximum(ids, 0)
    idx, ok = select(labels[safe], priority[safe], valid[safe] & (ids >= 0), size)
    kept_ids = np.where(ok, ids[np.asarray(idx)], -1)
  assert set(kept_ids[kept_ids >= 0]) == set(chosen)


def test_coreset_is_class_balanced_per_task_and_frozen_after_its_task(rff_run):
  algo, step, state = rff_run
  algo_state = algo.init(state, jax.random.PRNGKey(0))
  state, algo_state = algo.begin_task(state, algo_state, 0)
  for k in range(5):
    state, algo_state, metrics = step(state, two_class_batch(k, 0, [0, 2]), algo_state)
  coreset = jax.device_get(state.model_state[kcl.CORESET])
  assert int(metrics['coreset_size']) == 6 and coreset['valid'][0].all()
  assert not coreset['valid'][1].any()
  assert sorted(np.bincount(coreset['y'][0], minlength=3).tolist()) == [0, 3, 3]
  assert np.all(coreset['x'][0] > 5)  # task 0's inputs (shifted by 10)
  state, algo_state = algo.begin_task(state, algo_state, 1)
  for k in range(5):
    state, algo_state, _ = step(state, two_class_batch(10 + k, 1, [1, 2]), algo_state)
  after = jax.device_get(state.model_state[kcl.CORESET])
  for name in ('x', 'y', 'valid'):
    np.testing.assert_array_equal(after[name][0], coreset[name][0])  # task 0's slots never change
  assert after['valid'][1].all() and np.all(after['x'][1] > 15)
  assert sorted(np.bincount(after['y'][1], minlength=3).tolist()) == [0, 3, 3]


def test_loss_is_cross_entropy_plus_tau_kl_and_deterministic(rff_run):
  algo, step, state = rff_run
  runs = []
  for _ in range(2):
    s, a = algo.begin_task(state, algo.init(state, jax.random.PRNGKey(0)), 0)
    for k in range(3):
      s, a, metrics = step(s, random_batch(seed=k), a)
    runs.append((metrics, s.params, s.model_state))
  metrics = runs[0][0]
  assert float(metrics['kl']) > 0
  assert float(metrics['loss']) == pytest.approx(
    float(metrics['cross_entropy']) + 0.5 * float(metrics['kl']), rel=1e-5
  )
  for a, b in zip(jax.tree.leaves(runs[0]), jax.tree.leaves(runs[1])):
    np.testing.assert_array_equal(a, b)
  # Without random features there is no KL term.
  _, _, linear = kcl_state(kernel='linear')
  _, kl = linear.apply_fn(
    {'params': linear.params, **linear.model_state},
    random_batch().x,
    jnp.ones(8),
    0,
    method=kcl.KernelContinualModel.fit_terms,
  )
  assert float(kl) == 0.0


def test_the_step_needs_the_adapted_model():
  algo = algorithms.build(specs.KCLSpec(core_size=4), CONTEXT)
  state = tiny_state()
  with pytest.raises(ValueError, match='adapt_model'):
    algo.step(state, random_batch(), algo.init(state, jax.random.PRNGKey(0)))
