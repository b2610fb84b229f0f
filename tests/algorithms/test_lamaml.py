"""Property tests of La-MAML, C-MAML and Sync-La-MAML (Gupta et al. 2020).

The three variants share one jitted step each (built once, below) and every
step sees batches of `B` samples, so the file compiles each function once,
with XLA's cheap compilation (these tiny programs run a few times:
compiling them dominates).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcl import algorithms
from jcl import specs
from jcl.algorithms import base
from jcl.algorithms import buffer as buffer_lib
from jcl.algorithms import lamaml
from jcl.types import Batch

from tests.algorithms.conftest import INPUT_DIM, NUM_CLASSES, random_batch, tiny_state

CONTEXT = algorithms.Context((INPUT_DIM,), NUM_CLASSES, num_tasks=2)
B = 6  # current batch size everywhere
WEIGHT_LR = 0.05  # the run's optimizer (SGD) for the synchronous variants
CLIP = 0.05  # small enough to clip every meta-gradient here
SPECS = {
  'lamaml': specs.LaMAMLSpec(
    memory_size=16,
    replay_batch_size=4,
    glances=1,
    alpha_init=0.15,
    alpha_lr=0.3,
    learn_lr=True,
    sync_update=False,
    grad_clip_norm=CLIP,
  ),
  'cmaml': specs.LaMAMLSpec(
    memory_size=16,
    replay_batch_size=4,
    glances=2,
    alpha_init=0.1,
    learn_lr=False,
    sync_update=True,
    grad_clip_norm=CLIP,
  ),
  'sync': specs.LaMAMLSpec(
    memory_size=16,
    replay_batch_size=4,
    glances=3,
    alpha_init=0.15,
    alpha_lr=0.1,
    learn_lr=True,
    sync_update=True,
    grad_clip_norm=CLIP,
    inner_grad_clip=0.05,
  ),
}
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}
jit = functools.partial(jax.jit, compiler_options=FAST_COMPILE)
_meta_gradients = jit(lamaml.meta_gradients, static_argnames=('spec', 'wrt_alpha'))


def meta_gradients(params, alpha, state, inner, meta, spec):
  """`((loss, aux), (g_theta, g_alpha))`, compiled once per gradient-relevant
  setting (the other spec fields do not enter `meta_gradients`)."""
  spec = specs.LaMAMLSpec(second_order=spec.second_order, inner_grad_clip=spec.inner_grad_clip)
  return _meta_gradients(params, alpha, state, inner, meta, None, spec)


@functools.lru_cache(maxsize=None)
def algorithm(name):
  algo = lamaml.make(SPECS[name], CONTEXT)
  return algo, jit(algo.step)


def start(name, seed=0):
  algo, step = algorithm(name)
  state = tiny_state(seed=seed, lr=WEIGHT_LR)
  algo_state = algo.init(state, None)
  state, algo_state = algo.begin_task(state, algo_state, 0)
  return step, state, algo_state


def identical_samples(seed):
  """A batch of B copies of one sample: every order and memory draw gives
  the same meta-loss, so a step can be recomputed by hand."""
  return jax.tree.map(lambda v: jnp.repeat(v, B, axis=0), random_batch(seed=seed, size=1))


def tree_allclose(a, b, **kwargs):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kwargs)


def flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def test_second_order_gradient_matches_finite_differences_and_first_order_differs():
  with jax.enable_x64(True):
    state = tiny_state(seed=1)
    to64 = lambda x: jnp.asarray(x, jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x
    params = jax.tree.map(to64, state.params)
    state = state.replace(params=params)
    rng = np.random.default_rng(0)
    alpha = jax.tree.map(lambda p: jnp.asarray(rng.uniform(0.2, 0.6, p.shape)), params)
    inner = jax.tree.map(to64, random_batch(seed=1, size=4))
    meta = jax.tree.map(to64, random_batch(seed=2, size=7))

    @jit
    def both(p, a):
      """The meta-loss and its second- and first-order gradients (one compilation)."""
      (loss, _), second = lamaml.meta_gradients(
        p, a, state, inner, meta, None, specs.LaMAMLSpec(second_order=True)
      )
      first = lamaml.meta_gradients(p, a, state, inner, meta, None, specs.LaMAMLSpec())[1]
      return loss, second, first

    _, second, first = both(params, alpha)
    assert flat(second[0]).dtype == np.float64

    def objective(shift):
      p, a = (jax.tree.map(lambda x, d: x + d, t, s) for t, s in zip((params, alpha), shift))
      return float(both(p, a)[0])

    eps = 1e-6
    for _ in range(3):
      direction = [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), t) for t in (params, alpha)
      ]
      scaled = lambda c: [jax.tree.map(lambda d: c * d, t) for t in direction]
      numeric = (objective(scaled(eps)) - objective(scaled(-eps))) / (2 * eps)
      along = lambda g: sum(float(base.tree_dot(gi, di)) for gi, di in zip(g, direction))
      np.testing.assert_allclose(along(second), numeric, rtol=1e-6, atol=1e-9)
      # The first-order gradient leaves out the inner steps' curvature.
      assert abs(along(first) - numeric) > 1e-3 * abs(numeric)
    for s, f in zip(second, first):
      assert np.linalg.norm(flat(s) - flat(f)) > 1e-2 * np.linalg.norm(flat(s))


def test_one_pass_first_order_gradient_equals_reverse_mode():
  """`first_order_meta_gradients` (accumulated in the forward scan) equals
  `jax.grad` of `meta_objective` with the inner gradients held constant,
  with padding and learning rates that relu cuts to 0 (float64)."""
  with jax.enable_x64(True):
    state = tiny_state(seed=5)
    to64 = lambda x: jnp.asarray(x, jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x
    state = state.replace(params=jax.tree.map(to64, state.params))
    rng = np.random.default_rng(5)
    alpha = jax.tree.map(lambda p: jnp.asarray(rng.uniform(-0.2, 0.6, p.shape)), state.params)
    inner = jax.tree.map(to64, random_batch(seed=6, size=5))
    inner = inner._replace(mask=inner.mask.at[2].set(0.0))
    meta = jax.tree.map(to64, random_batch(seed=7, size=6))
    spec = specs.LaMAMLSpec(inner_grad_clip=0.3)
    (loss, _), (g_theta, g_alpha) = jit(lamaml.first_order_meta_gradients, static_argnames='spec')(
      state.params, alpha, state, inner, meta, None, spec=spec
    )
    (want_loss, _), (w_theta, w_alpha) = jax.value_and_grad(
      lamaml.meta_objective, argnums=(0, 1), has_aux=True
    )(state.params, alpha, state, inner, meta, None, spec)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    np.testing.assert_allclose(flat(g_theta), flat(w_theta), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(flat(g_alpha), flat(w_alpha), rtol=1e-10, atol=1e-12)
    assert np.abs(flat(g_alpha)).max() > 0 and np.any(flat(g_alpha) == 0)


def test_first_order_meta_gradient_is_the_authors_loop():
  """The authors' `observe` for one glance: fast weights updated one sample
  at a time with constant (here clamped) gradients, the meta-loss averaged
  over the inner steps, gradients w.r.t. weights and learning rates."""
  state = tiny_state(seed=2)
  alpha = jax.tree.map(lambda p: 0.3 * jnp.ones_like(p), state.params)
  alpha = jax.tree.map(lambda a: a.at[..., 0].set(-0.1), alpha)  # relu cuts some rates to 0
  inner, meta = random_batch(seed=3, size=B), random_batch(seed=4, size=B)
  clamp = SPECS['sync'].inner_grad_clip

  def loss_at(p, batch):
    logits = state.apply_fn({'params': p}, batch.x, batch.t)
    return base.cross_entropy(logits, batch.y, batch.mask)

  @jit
  @functools.partial(jax.value_and_grad, argnums=(0, 1))
  def reference(p, a):
    fast, total = p, 0.0
    for i in range(B):
      sample = jax.tree.map(lambda v: v[i : i + 1], inner)
      g = jax.lax.stop_gradient(jax.grad(loss_at)(fast, sample))
      g = jax.tree.map(lambda v: jnp.clip(v, -clamp, clamp), g)
      fast = jax.tree.map(lambda w, lr, gi: w - jax.nn.relu(lr) * gi, fast, a, g)
      total = total + loss_at(fast, meta)
    return total / B

  want_loss, want = reference(state.params, alpha)
  (loss, _), got = meta_gradients(state.params, alpha, state, inner, meta, SPECS['sync'])
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  tree_allclose(got, want, rtol=1e-4, atol=1e-7)
  assert np.all(flat(got[1])[np.isclose(flat(alpha), -0.1)] == 0)  # relu'(alpha) = 0


def test_masked_samples_take_no_inner_step_and_add_no_meta_loss():
  """Padding anywhere in the batch, holding anything, changes nothing: the
  meta-loss and its gradients are those of the real samples in order."""
  state = tiny_state()
  alpha = jax.tree.map(lambda p: 0.2 * jnp.ones_like(p), state.params)
  batch, meta = random_batch(seed=5, size=B), random_batch(seed=6, size=B)
  real = np.array([0, 2, 3, 5])
  mask = np.zeros(B, np.float32)
  mask[real] = 1.0
  garbage = random_batch(seed=7, size=B)._replace(x=100.0 * jnp.ones((B, INPUT_DIM)))
  interleaved = Batch(
    *[
      jnp.where(jnp.reshape(mask > 0, (B,) + (1,) * (g.ndim - 1)), b, g)
      for b, g in zip(batch[:3], garbage[:3])
    ],
    jnp.asarray(mask),
  )
  at_end = Batch(
    *[jnp.concatenate([b[real], jnp.zeros_like(b[:2])]) for b in batch[:3]],
    jnp.asarray([1, 1, 1, 1, 0, 0], jnp.float32),
  )
  spec = specs.LaMAMLSpec()
  got = meta_gradients(state.params, alpha, state, interleaved, meta, spec)
  want = meta_gradients(state.params, alpha, state, at_end, meta, spec)
  np.testing.assert_allclose(got[0][0], want[0][0], rtol=1e-6)
  tree_allclose(got[1], want[1], rtol=1e-5, atol=1e-8)
  # ...and the real samples do count.
  fewer = at_end._replace(mask=jnp.asarray([1, 1, 1, 0, 0, 0], jnp.float32))
  other = meta_gradients(state.params, alpha, state, fewer, meta, spec)
  assert abs(float(other[0][0]) - float(want[0][0])) > 1e-4


@pytest.mark.parametrize('name', sorted(SPECS))
def test_learning_rates_step_first_then_weights_use_the_new_clipped_rates(name):
  """Per glance: `alpha <- alpha - eta * clip(g_alpha)` (learn_lr), then
  `theta <- theta - relu(alpha_new) * clip(g_theta)` (eq. 8); C-MAML and Sync
  take the run's SGD step `theta - lr * clip(g_theta)` instead."""
  spec = SPECS[name]
  step, state, algo_state = start(name)
  batch = identical_samples(seed=7)
  new_state, new_algo_state, metrics = step(state, batch, algo_state)

  def clipped(tree):  # torch.nn.utils.clip_grad_norm_, in NumPy
    norm = np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(tree)))
    return jax.tree.map(lambda g: g * min(1.0, CLIP / (norm + 1e-6)), tree), norm

  params, alpha = jax.device_get((state.params, algo_state.alpha))
  for _ in range(spec.glances):
    g_theta, g_alpha = jax.device_get(meta_gradients(params, alpha, state, batch, batch, spec)[1])
    g_theta, norm = clipped(g_theta)
    g_alpha, _ = clipped(g_alpha)
    assert norm > 2 * CLIP  # clipping is active
    if spec.learn_lr:
      alpha = jax.tree.map(lambda a, g: a - spec.alpha_lr * g, alpha, g_alpha)
    if spec.sync_update:
      params = jax.tree.map(lambda p, g: p - WEIGHT_LR * g, params, g_theta)
    else:
      params = jax.tree.map(lambda p, a, g: p - np.maximum(a, 0) * g, params, alpha, g_theta)
  tree_allclose(new_algo_state.alpha, alpha, rtol=1e-5, atol=1e-7)
  tree_allclose(new_state.params, params, rtol=1e-5, atol=1e-6)
  assert int(new_state.step) == 1  # one step per batch, not per glance
  if spec.learn_lr:
    assert not np.allclose(flat(new_algo_state.alpha), spec.alpha_init)
  else:  # C-MAML: fixed inner learning rate
    assert np.all(flat(new_algo_state.alpha) == np.float32(spec.alpha_init))
  assert np.isfinite(float(metrics['loss']))


def test_learning_rates_shrink_where_their_gradient_is_positive():
  """Positive `g_alpha` (the meta-gradient opposes the inner trajectory:
  interference) lowers a rate, negative (alignment) raises it, eq. 7. One
  glance, a fresh buffer: the meta-batch is the current batch."""
  spec = SPECS['lamaml']
  step, state, algo_state = start('lamaml', seed=3)
  batch = identical_samples(seed=8)
  g_alpha = meta_gradients(state.params, algo_state.alpha, state, batch, batch, spec)[1][1]
  _, new, _ = step(state, batch, algo_state)
  g, change = flat(g_alpha), flat(new.alpha) - flat(algo_state.alpha)
  assert (g > 1e-6).any() and (g < -1e-6).any()
  assert np.all(change[g > 1e-6] < 0) and np.all(change[g < -1e-6] > 0)
  assert np.all(change[g == 0] == 0)
  # learn_lr=False (C-MAML) leaves them alone.
  step, state, algo_state = start('cmaml', seed=3)
  _, same, _ = step(state, batch, algo_state)
  tree_allclose(same.alpha, algo_state.alpha, rtol=0, atol=0)


@pytest.mark.parametrize('name', sorted(SPECS))
def test_buffer_gets_each_real_sample_once_whatever_the_glances(name):
  step, state, algo_state = start(name)
  offered = []
  for k in range(3):
    ids = 1000.0 + B * k + np.arange(B)
    mask = np.ones(B, np.float32)
    mask[[1, 4]] = 0.0
    batch = random_batch(seed=10 + k, size=B)
    batch = batch._replace(x=batch.x.at[:, 0].set(ids), mask=jnp.asarray(mask))
    offered += list(ids[mask > 0])
    state, algo_state, metrics = step(state, batch, algo_state)
  buf = algo_state.buffer
  assert int(buf.seen) == 12 and int(buffer_lib.size(buf)) == 12
  stored = np.asarray(buf.x[np.asarray(buf.valid), 0])
  assert sorted(stored.tolist()) == sorted(offered)
  assert int(metrics['buffer_size']) == 12 and int(state.step) == 3


@pytest.mark.parametrize('name', sorted(SPECS))
def test_clipping_bounds_the_updates(name):
  spec = SPECS[name]
  step, state, algo_state = start(name)
  new_state, new_algo_state, metrics = step(state, random_batch(seed=11, size=B), algo_state)
  assert float(metrics['meta_grad_norm']) > 2 * CLIP  # the norm before clipping
  moved = np.linalg.norm(flat(new_state.params) - flat(state.params))
  lr_max = WEIGHT_LR if spec.sync_update else spec.alpha_init + spec.glances * spec.alpha_lr * CLIP
  assert 0 < moved <= spec.glances * lr_max * CLIP * (1 + 1e-4)
  alpha_moved = np.linalg.norm(flat(new_algo_state.alpha) - flat(algo_state.alpha))
  assert alpha_moved <= spec.glances * (spec.alpha_lr * CLIP if spec.learn_lr else 0.0) * (1 + 1e-4)


def test_clip_by_global_norm_is_torchs():
  tree, norm = lamaml.clip_by_global_norm({'a': jnp.array([3.0, 4.0])}, 1.0)
  np.testing.assert_allclose(norm, 5.0)
  np.testing.assert_allclose(tree['a'], np.array([3.0, 4.0]) / (5.0 + lamaml.CLIP_EPS), rtol=1e-6)
  same, _ = lamaml.clip_by_global_norm({'a': jnp.array([0.3, 0.4])}, 1.0)
  np.testing.assert_allclose(same['a'], [0.3, 0.4])


def test_memory_batch_is_drawn_with_replacement_from_the_stored_samples():
  empty = jax.device_get(buffer_lib.init(8, (INPUT_DIM,), num_classes=NUM_CLASSES))
  x, valid = np.zeros((8, INPUT_DIM), np.float32), np.zeros(8, bool)
  x[[1, 4, 6], 0], valid[[1, 4, 6]] = [1.0, 4.0, 6.0], True
  stored = empty._replace(x=x, valid=valid)
  sample = jit(jax.vmap(lamaml.sample_with_replacement, in_axes=(None, 0, None)), static_argnums=2)
  keys = jax.random.split(jax.random.PRNGKey(2), 400)
  assert float(jnp.sum(sample(empty, keys, 5).mask)) == 0
  drawn = sample(stored, keys, 5)
  assert np.all(np.asarray(drawn.mask).sum(1) == 3)  # min(size, stored) rows
  ids = np.asarray(drawn.x[..., 0])[np.asarray(drawn.mask) > 0]
  assert set(ids.tolist()) == {1.0, 4.0, 6.0}  # only valid slots
  first_three = np.asarray(drawn.x[:, :3, 0])
  assert np.mean([len(set(r)) < 3 for r in first_three]) > 0.5  # repeats (P = 7/9)
