"""Property tests of EWC, online EWC, SI and MAS (what each paper claims; LFL: test_lfl.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from jcl import algorithms
from jcl import specs
from jcl.algorithms import base
from jcl.algorithms import ewc
from jcl.algorithms import mas
from jcl.algorithms import regularization as reg
from jcl.algorithms import si
from jcl.types import Batch

from tests.algorithms.conftest import random_batch, random_chunk, tiny_state


def tree_allclose(a, b, **kw):
  return all(np.allclose(x, y, **kw) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ---------------------------------------------------------------- EWC ------


def test_ewc_penalty_is_zero_at_anchor_and_quadratic_in_distance(state):
  params = state.params
  fisher = jax.tree.map(lambda p: jnp.abs(p) + 0.5, params)
  pen_state = reg.QuadraticPenaltyState(fisher, params)
  coefficient = 3.0 / 2
  assert float(reg.quadratic_penalty(params, pen_state, coefficient)) == 0.0
  direction = jax.tree.map(lambda p: jnp.ones_like(p) * 0.1, params)
  moved = lambda s: jax.tree.map(lambda p, d: p + s * d, params, direction)
  p1 = float(reg.quadratic_penalty(moved(1.0), pen_state, coefficient))
  p2 = float(reg.quadratic_penalty(moved(2.0), pen_state, coefficient))
  expected = coefficient * sum(float(jnp.sum(f * 0.01)) for f in jax.tree.leaves(fisher))
  np.testing.assert_allclose(p1, expected, rtol=1e-5)
  np.testing.assert_allclose(p2, 4 * p1, rtol=1e-5)  # quadratic in the distance
  doubled = reg.QuadraticPenaltyState(jax.tree.map(lambda f: 2 * f, fisher), params)
  np.testing.assert_allclose(
    float(reg.quadratic_penalty(moved(1.0), doubled, coefficient)), 2 * p1, rtol=1e-5
  )  # linear in the Fisher weights


def test_empirical_fisher_matches_per_sample_loop(state):
  chunk = random_chunk(seed=1, steps=2, size=5)
  fisher = ewc.fisher_diagonal(state, chunk, 'empirical')
  expected = jax.tree.map(jnp.zeros_like, state.params)
  n = 0
  for k in range(2):
    for b in range(5):
      x, y, t = chunk.x[k, b : b + 1], int(chunk.y[k, b]), chunk.t[k, b : b + 1]
      g = jax.grad(lambda p: jax.nn.log_softmax(state.apply_fn({'params': p}, x, t))[0, y])(
        state.params
      )
      expected = jax.tree.map(lambda e, gi: e + gi**2, expected, g)
      n += 1
  assert tree_allclose(fisher, jax.tree.map(lambda e: e / n, expected), rtol=1e-4, atol=1e-7)


def test_true_fisher_is_expectation_over_model_predictions(state):
  chunk = random_chunk(seed=2, steps=1, size=4)
  fisher = ewc.fisher_diagonal(state, chunk, 'true')
  expected = jax.tree.map(jnp.zeros_like, state.params)
  for b in range(4):
    x, t = chunk.x[0, b : b + 1], chunk.t[0, b : b + 1]
    logp = lambda p, c: jax.nn.log_softmax(state.apply_fn({'params': p}, x, t))[0, c]
    probs = jnp.exp(jax.nn.log_softmax(state.apply_fn({'params': state.params}, x, t))[0])
    for c in range(3):
      g = jax.grad(logp)(state.params, c)
      expected = jax.tree.map(lambda e, gi: e + probs[c] * gi**2 / 4, expected, g)
  assert tree_allclose(fisher, expected, rtol=1e-4, atol=1e-7)


def test_padding_samples_do_not_enter_the_fisher(state):
  chunk = random_chunk(seed=3, steps=1, size=6)
  masked = chunk._replace(mask=chunk.mask.at[0, 3:].set(0.0))
  first_three = Batch(chunk.x[:, :3], chunk.y[:, :3], chunk.t[:, :3], chunk.mask[:, :3])
  assert tree_allclose(
    ewc.fisher_diagonal(state, masked),
    ewc.fisher_diagonal(state, first_three),
    rtol=1e-5,
    atol=1e-8,
  )


def test_separate_ewc_gradient_equals_sum_of_per_task_penalties(state):
  params = state.params
  rng = np.random.default_rng(0)
  rand = lambda: jax.tree.map(lambda p: jnp.asarray(rng.random(p.shape), jnp.float32), params)
  fishers, anchors = [rand(), rand(), rand()], [rand(), rand(), rand()]
  pen_state = reg.init_penalty(params)
  for f, a in zip(fishers, anchors):
    pen_state = reg.consolidate(pen_state, f, a, mode='sum')
  point = rand()
  separate = lambda p: sum(
    reg.quadratic_penalty(p, reg.QuadraticPenaltyState(f, a), 0.5) for f, a in zip(fishers, anchors)
  )
  combined = lambda p: reg.quadratic_penalty(p, pen_state, 0.5)
  assert tree_allclose(jax.grad(combined)(point), jax.grad(separate)(point), rtol=1e-4, atol=1e-6)


def test_online_ewc_decays_fisher_and_moves_anchor(state):
  algo = ewc.make(specs.EWCSpec(ewc_lambda=1.0, online=True, gamma=0.5))
  algo_state = algo.init(state, jax.random.PRNGKey(0))
  chunk = random_chunk(seed=4)
  _, s1 = algo.end_task(state, algo_state, chunk)
  f1 = ewc.fisher_diagonal(state, chunk)
  moved = state.replace(params=jax.tree.map(lambda p: p + 0.1, state.params))
  _, s2 = algo.end_task(moved, s1, chunk)
  f2 = ewc.fisher_diagonal(moved, chunk)
  assert tree_allclose(s2.importance, jax.tree.map(lambda a, b: 0.5 * a + b, f1, f2), rtol=1e-5)
  assert tree_allclose(s2.anchor, moved.params)


def test_ewc_step_pulls_back_towards_anchor(state):
  algo = ewc.make(specs.EWCSpec(ewc_lambda=20.0))
  algo_state = algo.init(state, jax.random.PRNGKey(0))
  _, algo_state = algo.end_task(state, algo_state, random_chunk(seed=5))
  naive = algorithms.naive.make()
  batch = random_batch(seed=6)
  far = state.replace(params=jax.tree.map(lambda p: p + 0.05, state.params))
  ewc_next, _, m = algo.step(far, batch, algo_state)
  naive_next, _, _ = naive.step(far, batch, None)
  dist = lambda s: sum(
    float(jnp.sum((a - b) ** 2))
    for a, b in zip(jax.tree.leaves(s.params), jax.tree.leaves(state.params))
  )
  assert float(m['penalty']) > 0
  assert dist(ewc_next) < dist(naive_next)


# ----------------------------------------------------------------- SI ------


def quadratic_loss(curvature, optimum):
  """L(theta) = 1/2 sum h (theta - theta0)^2 over every parameter (no data)."""

  def loss_fn(params, train_state, batch, rng):
    del train_state, batch, rng
    terms = jax.tree.map(lambda p: 0.5 * curvature * jnp.sum((p - optimum) ** 2), params)
    return sum(jax.tree.leaves(terms)), {}

  return loss_fn


def test_si_importance_matches_hand_computation_on_a_quadratic():
  # Gradient descent on L = h/2 (w - w0)^2 from w = a: every step
  # w_{k+1} - w0 = r (w_k - w0) with r = 1 - lr h, so the path integral is
  # omega = sum_k lr g_k^2 = lr h^2 d0^2 (1 - r^(2n)) / (1 - r^2), d0 = a - w0,
  # the total displacement is Delta = d0 (r^n - 1), and Omega = omega / (Delta^2 + xi).
  h, w0, lr, n, xi = 2.0, 0.3, 0.1, 7, 0.1
  state = tiny_state(lr=lr)
  algo = si.make(specs.SISpec(si_lambda=1.0, xi=xi), loss_fn=quadratic_loss(h, w0))
  algo_state = algo.init(state, jax.random.PRNGKey(0))
  step = jax.jit(algo.step)
  start = state.params
  for _ in range(n):
    state, algo_state, _ = step(state, random_batch(), algo_state)
  _, algo_state = algo.end_task(state, algo_state, random_chunk())
  r = 1 - lr * h

  def expected(a):
    d0 = a - w0
    omega = lr * h**2 * d0**2 * (1 - r ** (2 * n)) / (1 - r**2)
    return omega / ((d0 * (r**n - 1)) ** 2 + xi)

  want = jax.tree.map(lambda a: expected(np.asarray(a, np.float64)), start)
  assert tree_allclose(algo_state.penalty.importance, want, rtol=1e-3, atol=1e-6)
  assert tree_allclose(algo_state.penalty.anchor, state.params)
  assert all(float(jnp.max(jnp.abs(w))) == 0 for w in jax.tree.leaves(algo_state.path_integral))
  assert any(float(jnp.max(w)) > 0 for w in jax.tree.leaves(algo_state.penalty.importance))


def test_si_path_integral_uses_unregularised_gradient():
  # In a second task the penalty pulls the weights, but omega must only count
  # -g_task * delta, with g_task the gradient of the task loss alone.
  state = tiny_state(lr=0.05)
  algo = si.make(specs.SISpec(si_lambda=5.0))
  algo_state = algo.init(state, jax.random.PRNGKey(0))
  for k in range(5):
    state, algo_state, _ = algo.step(state, random_batch(seed=k), algo_state)
  _, algo_state = algo.end_task(state, algo_state, random_chunk())
  batch = random_batch(seed=99)
  g_task = jax.grad(lambda p: base.task_loss(p, state, batch, state.step_rng())[0])(state.params)
  new_state, new_algo_state, _ = algo.step(state, batch, algo_state)
  delta = jax.tree.map(jnp.subtract, new_state.params, state.params)
  assert tree_allclose(
    new_algo_state.path_integral,
    jax.tree.map(lambda g, d: -g * d, g_task, delta),
    rtol=1e-4,
    atol=1e-9,
  )


# ---------------------------------------------------------------- MAS ------


def test_mas_importance_is_mean_abs_gradient_of_squared_output_norm(state):
  chunk = random_chunk(seed=7, steps=2, size=3)
  importance = mas.mas_importance(state, chunk)
  expected = jax.tree.map(jnp.zeros_like, state.params)
  for k in range(2):
    for b in range(3):
      x, t = chunk.x[k, b : b + 1], chunk.t[k, b : b + 1]
      g = jax.grad(lambda p: jnp.sum(state.apply_fn({'params': p}, x, t) ** 2))(state.params)
      expected = jax.tree.map(lambda e, gi: e + jnp.abs(gi) / 6, expected, g)
  assert tree_allclose(importance, expected, rtol=1e-4, atol=1e-7)


def test_mas_accumulates_importance_and_anchors_latest_solution(state):
  algo = mas.make(specs.MASSpec(mas_lambda=1.0))
  algo_state = algo.init(state, jax.random.PRNGKey(0))
  chunk = random_chunk(seed=8)
  _, s1 = algo.end_task(state, algo_state, chunk)
  moved = state.replace(params=jax.tree.map(lambda p: p * 1.1, state.params))
  _, s2 = algo.end_task(moved, s1, chunk)
  want = jax.tree.map(jnp.add, mas.mas_importance(state, chunk), mas.mas_importance(moved, chunk))
  assert tree_allclose(s2.importance, want, rtol=1e-5)
  assert tree_allclose(s2.anchor, moved.params)
