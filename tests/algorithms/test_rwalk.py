"""Property tests of RWalk: the running Fisher, the path-integral scores and their
per-task merge equal a step-by-step NumPy computation of the formulas of
Avalanche's `RWalkPlugin`; the scores move only every `delta_t` steps (on a
step counter that runs over tasks); the penalty anchors the parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jcl import specs
from jcl.algorithms import base
from jcl.algorithms import rwalk

from tests.algorithms.conftest import random_batch, tiny_state

LR, LAMBDA, ALPHA, DELTA_T = 0.1, 0.5, 0.9, 3
EPS = np.finfo(np.float32).eps
# XLA's cheap compilation: these tiny programs run a few times, compiling them dominates.
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def jit(fn):
  return jax.jit(fn, compiler_options=FAST_COMPILE)


def leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def stack(batches):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *batches)


def reference(state, tasks):
  """Avalanche's RWalkPlugin on SGD, in NumPy: per task, `(theta, F, S, Omega, theta*)`
  at its end and the task's `s` after each step."""
  theta, treedef = jax.tree.flatten(jax.tree.map(np.asarray, state.params))
  zeros = lambda: [np.zeros_like(p) for p in theta]
  gradient = jit(jax.grad(lambda p, b: base.task_loss(p, state.replace(params=p), b, None)[0]))
  fisher, merged, omega, anchor, n, out = None, None, None, None, 0, []
  for batches in tasks:
    loss, scores, at_checkpoint, history = zeros(), zeros(), [p.copy() for p in theta], []
    for batch in batches:
      g = leaves(gradient(jax.tree.unflatten(treedef, theta), batch))
      sq = [x * x for x in g]
      fisher = sq if fisher is None else [ALPHA * s + (1 - ALPHA) * f for s, f in zip(sq, fisher)]
      total = g
      if omega is not None:  # penalty LAMBDA * sum Omega (theta - theta*)^2
        total = [gi + LAMBDA * w * 2 * (p - a) for gi, w, p, a in zip(g, omega, theta, anchor)]
      new = [p - np.float32(LR) * t for p, t in zip(theta, total)]
      loss = [lo - gi * (b - a) for lo, gi, b, a in zip(loss, g, new, theta)]
      if (n + 1) % DELTA_T == 0:
        scores = [
          s + lo / (0.5 * f * (b - c) ** 2 + EPS)
          for s, lo, f, b, c in zip(scores, loss, fisher, new, at_checkpoint)
        ]
        loss, at_checkpoint = zeros(), [b.copy() for b in new]
      theta, n = new, n + 1
      history.append(scores)
    merged = scores if merged is None else [0.5 * (m + s) for m, s in zip(merged, scores)]
    max_f = max(f.max() for f in fisher)
    max_s = max(s.max() for s in merged)
    omega = [f / max_f + np.maximum(s, 0) / max_s for f, s in zip(fisher, merged)]
    anchor = [p.copy() for p in theta]
    out.append((theta, fisher, merged, omega, anchor, history))
  return out


def assert_leaves_close(actual, expected, what, rtol=1e-5, atol=1e-6):
  for k, (a, b) in enumerate(zip(leaves(actual), expected)):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f'{what} leaf {k}')


def test_fisher_scores_and_penalty_follow_the_reference():
  spec = specs.RWalkSpec(ewc_lambda=LAMBDA, ewc_alpha=ALPHA, delta_t=DELTA_T)
  algo = rwalk.make(spec)
  state = tiny_state(lr=LR)
  tasks = [[random_batch(seed=10 * k + i, task=k) for i in range(4)] for k in range(2)]
  expected = reference(state, tasks)
  algo_state = algo.init(state, None)
  step, end_task = jit(algo.step), jit(algo.end_task)
  n = 0
  for k, batches in enumerate(tasks):
    theta, fisher, merged, omega, anchor, history = expected[k]
    state, algo_state = algo.begin_task(state, algo_state, k)
    for i, batch in enumerate(batches):
      before = leaves(algo_state.checkpoint_scores)
      state, algo_state, metrics = step(state, batch, algo_state)
      after = leaves(algo_state.checkpoint_scores)
      moved = any(not np.array_equal(a, b) for a, b in zip(before, after))
      assert moved == ((n + 1) % DELTA_T == 0), f'step {n}: scores move every delta_t steps only'
      assert_leaves_close(algo_state.checkpoint_scores, history[i], f'task {k} step {i} s', 1e-4)
      assert (float(metrics['penalty']) > 0) == (k > 0 and i > 0)  # 0 before it moves
      n += 1
    assert int(algo_state.steps) == n
    assert_leaves_close(state.params, theta, f'task {k} theta')
    assert_leaves_close(algo_state.fisher, fisher, f'task {k} F')
    state, algo_state = end_task(state, algo_state, None)
    assert_leaves_close(algo_state.scores, merged, f'task {k} S', rtol=1e-4)
    assert_leaves_close(algo_state.penalty.importance, omega, f'task {k} Omega', rtol=1e-4)
    assert_leaves_close(algo_state.penalty.anchor, anchor, f'task {k} theta*')
    assert max(float(x.max()) for x in leaves(algo_state.penalty.importance)) <= 2.0
    assert all(not x.any() for x in leaves(algo_state.checkpoint_scores))  # s reset


def test_penalty_anchors_the_parameters():
  state = tiny_state(lr=LR)
  first = stack([random_batch(seed=i, task=0) for i in range(6)])
  second = stack([random_batch(seed=100 + i, task=1) for i in range(20)])

  def train(ewc_lambda):
    """`(distance to theta* after task 1, penalty at theta* at task 1's first step)`."""
    algo = rwalk.make(specs.RWalkSpec(ewc_lambda=ewc_lambda, delta_t=2))

    def scan(s, a, chunk):
      def body(carry, batch):
        return algo.step(carry[0], batch, carry[1])[:2], None

      return jax.lax.scan(body, (s, a), chunk)[0]

    def run(s):
      s, a = scan(*algo.begin_task(s, algo.init(s, None), 0), first)
      s, a = algo.end_task(s, a, None)
      anchor = s.params
      at_anchor = algo.step(s, jax.tree.map(lambda x: x[0], second), a)[2]['penalty']
      s, a = scan(*algo.begin_task(s, a, 1), second)
      pairs = zip(jax.tree.leaves(s.params), jax.tree.leaves(anchor))
      distance = sum(jnp.sum((p - q) ** 2) for p, q in pairs)
      return distance, at_anchor

    return [float(x) for x in jit(run)(state)]

  (free, _), (anchored, at_anchor) = train(0.0), train(2.0)
  assert at_anchor == 0.0  # zero where the parameters sit at the anchor
  assert anchored < 0.5 * free, (anchored, free)


@pytest.mark.parametrize(
  'kwargs, field',
  [
    (dict(ewc_lambda=-1.0), 'ewc_lambda'),
    (dict(ewc_alpha=1.5), 'ewc_alpha'),
    (dict(delta_t=0), 'delta_t'),
    (dict(delta_t=2.5), 'delta_t'),
    (dict(delta_t=True), 'delta_t'),
  ],
)
def test_spec_validation(kwargs, field):
  with pytest.raises(ValueError, match=f"rwalk: invalid '{field}'"):
    specs.make_spec('rwalk', **kwargs)
