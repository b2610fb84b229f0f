"""A-GEM and GEM projections against float64 NumPy oracles.

GEM's oracle enumerates every subset S of the active constraints, projects g
onto {z : G_S z = 0} and keeps the closest feasible result: the exact
projection onto the cone (it is the projection onto the face of the binding
constraints). For T = 20 (2^20 subsets) a float64 Lawson-Hanson oracle is
used, certified by the KKT conditions. Inputs are rounded to float32 first,
so the oracles solve exactly the problem the library sees.
"""

import itertools

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np
import pytest

from jcl.algorithms import projection as pj

# Measured maxima of ||z - z*|| / ||g|| (float32 library vs float64 oracle,
# 512 problems per kind): < 1e-6 for random, conflicting, linearly dependent
# and duplicated rows (1.5e-6 for dependent rows at T = 20); up to ~2e-4 with
# nearly parallel rows (angles down to 1e-4 rad, which float32 G G^T cannot
# resolve; with float64 inputs the error is ~1e-12, so it is not the solver),
# while the constraints and the distance ||z - g|| still hold to ~1e-6.
TOL = 1e-5  # relative error vs the oracle, well-conditioned problems
CONSTRAINT_TOL = 1e-5  # <z, G_k> >= -CONSTRAINT_TOL ||G_k|| ||g||
PARALLEL_TOL = 2e-3  # relative error vs the oracle, nearly parallel rows


# ----------------------------------------------------------------------------- oracles


def brute_force_projection(g, grads, active):
  """min ||z - g|| s.t. <z, G_k> >= 0 (k active), by enumerating active sets."""
  g = np.asarray(g, np.float64)
  grads = np.asarray(grads, np.float64)
  rows = [k for k in range(len(grads)) if active[k] and np.any(grads[k])]
  norms = np.linalg.norm(grads[rows], axis=1) if rows else np.zeros(0)
  best, best_dist = None, np.inf
  for r in range(len(rows) + 1):
    for subset in itertools.combinations(rows, r):
      z = g.copy()
      if subset:
        a = grads[list(subset)]
        z = g - a.T @ (np.linalg.pinv(a @ a.T, rcond=1e-12, hermitian=True) @ (a @ g))
      if rows and np.any(grads[rows] @ z < -1e-9 * norms * np.linalg.norm(g)):
        continue
      dist = np.linalg.norm(z - g)
      if dist < best_dist:
        best, best_dist = z, dist
  return best


def nnls_projection(g, grads, active):
  """The same projection by float64 Lawson-Hanson on the dual, KKT-certified."""
  g = np.asarray(g, np.float64)
  grads = np.asarray(grads, np.float64)
  idx = np.flatnonzero(active)
  a = grads[idx]
  q, b = a @ a.T, a @ g
  n = len(idx)
  u, passive = np.zeros(n), np.zeros(n, bool)
  tol = 1e-13 * np.sqrt(np.max(np.diag(q), initial=0.0)) * np.linalg.norm(g)
  for _ in range(10 * n + 10):
    w = -(q @ u + b)
    if not np.any(~passive & (w > tol)):
      break
    passive[np.argmax(np.where(~passive, w, -np.inf))] = True
    while True:
      s = np.zeros(n)
      s[passive] = np.linalg.lstsq(q[np.ix_(passive, passive)], -b[passive], rcond=None)[0]
      if np.all(s[passive] > 0):
        u = s
        break
      neg = passive & (s <= 0)
      alpha = np.min(u[neg] / (u[neg] - s[neg]))
      u = u + alpha * (s - u)
      passive &= u > 1e-15
      u[~passive] = 0.0
  z = g + a.T @ u
  scale = np.linalg.norm(a, axis=1) * np.linalg.norm(g)
  assert np.all(u >= 0)  # dual feasible
  assert np.all(a @ z >= -1e-9 * scale)  # primal feasible
  assert np.all(np.abs(u * (a @ z)) <= 1e-9 * scale * (u + 1))  # complementary
  return z


def oracle(g, grads, active, margin=0.0, solver=brute_force_projection):
  """GEM's output: g when no active constraint is violated, else the projection
  of g + margin sum_k G_k (the dual with v >= margin) onto the cone."""
  g64 = np.asarray(g, np.float64)
  grads64 = np.asarray(grads, np.float64)
  active = np.asarray(active, bool)
  if not np.any(active & (grads64 @ g64 < 0)):
    return g64
  return solver(g64 + margin * grads64[active].sum(0), grads64, active)


def rel_err(z, ref, g):
  return np.linalg.norm(np.asarray(z, np.float64) - ref) / np.linalg.norm(np.asarray(g, np.float64))


def min_constraint(z, grads, active, g):
  """min over active k of <z, G_k> / (||G_k|| ||g||) (positive when all hold)."""
  z, grads, g = (np.asarray(x, np.float64) for x in (z, grads, g))
  norms = np.linalg.norm(grads, axis=-1)
  vals = (grads @ z) / (np.where(norms > 0, norms, 1.0) * np.linalg.norm(g))
  return np.min(np.where(np.asarray(active, bool), vals, np.inf), initial=np.inf)


# ----------------------------------------------------------------------------- problems

# XLA compiles the solver's loop in ~1 s, so the tests share two shapes:
# single problems [T_MAX, P_MAX] and batches of BATCH of them (smaller problems
# are padded with zero columns and inactive rows); margin and ridge are traced.
T_MAX, P_MAX, BATCH = 6, 50, 128


def random_problem(rng, kind, num_tasks, dim):
  grads = rng.normal(size=(num_tasks, dim))
  g = rng.normal(size=dim)
  if kind == 'conflict':  # most constraints violated
    g = -grads.mean(0) * rng.uniform(1, 4) + 0.3 * rng.normal(size=dim)
  elif kind == 'parallel':  # rows at angles 1e-4 .. 1e-1 rad from a common direction
    base = rng.normal(size=dim)
    grads = base + 10 ** rng.uniform(-4, -1) * rng.normal(size=(num_tasks, dim))
    g = -base * rng.uniform(0.5, 2) + rng.normal(size=dim)
  elif kind == 'dependent':  # rows beyond the first k are combinations of them,
    k = max(1, num_tasks // 2)  # exactly, even in float32 (small dyadic values)
    grads = np.round(grads * 16) / 16
    grads[k:] = rng.integers(-2, 3, size=(num_tasks - k, k)) @ grads[:k]
    g = -grads.mean(0) * 3 + rng.normal(size=dim)
  elif kind == 'duplicate':
    k = (num_tasks + 1) // 2
    grads[k:] = grads[: num_tasks - k]
    g = -grads.mean(0) * 3 + rng.normal(size=dim)
  active = rng.random(num_tasks) < 0.8
  return np.float32(g), np.float32(grads), active


def padded_batch(seed, kind, count=BATCH, t_max=T_MAX, p_max=P_MAX):
  """`count` problems of random sizes, padded to one shape by zero columns and
  inactive rows (neither changes the projection), so one compile serves all."""
  rng = np.random.default_rng(seed)
  problems, gs, grads, actives = [], [], [], []
  for _ in range(count):
    num_tasks, dim = rng.integers(1, t_max + 1), rng.integers(5, p_max + 1)
    g, gr, act = random_problem(rng, kind, num_tasks, dim)
    problems.append((g, gr, act))
    gs.append(np.pad(g, (0, p_max - dim)))
    grads.append(np.pad(gr, ((0, t_max - num_tasks), (0, p_max - dim))))
    actives.append(np.pad(act, (0, t_max - num_tasks)))
  return problems, np.stack(gs), np.stack(grads), np.stack(actives)


batched_gem = jax.jit(
  jax.vmap(
    lambda g, grads, active, margin, ridge: pj.gem_project(
      g, grads, active, margin=margin, ridge=ridge
    ),
    in_axes=(0, 0, 0, None, None),
  )
)


def unpad(z, g):
  return np.asarray(z)[: len(g)]


# ----------------------------------------------------------------------------- A-GEM


def test_agem_never_conflicts_and_matches_formula():
  rng = np.random.default_rng(0)
  n, dim = 400, 30
  ref = rng.normal(size=(n, dim)) * 10 ** rng.uniform(-3, 3, size=(n, 1))
  g = rng.normal(size=(n, dim))
  conflicting = np.arange(n) % 2 == 0  # half of them strongly against g_ref
  g[conflicting] -= 3 * ref[conflicting] / np.linalg.norm(ref[conflicting], axis=1, keepdims=True)
  g, ref = np.float32(g), np.float32(ref)
  z = np.asarray(jax.jit(jax.vmap(pj.agem_project))(g, ref))

  g64, ref64 = g.astype(np.float64), ref.astype(np.float64)
  dots = np.sum(g64 * ref64, 1)
  assert np.sum(dots < 0) > n // 2 - 10
  # float64 eq. 11
  expected = np.where((dots < 0)[:, None], g64 - (dots / np.sum(ref64**2, 1))[:, None] * ref64, g64)
  scale = np.linalg.norm(g64, axis=1) * np.linalg.norm(ref64, axis=1)
  assert np.all(np.sum(z * ref64, 1) >= -1e-6 * scale)
  np.testing.assert_array_less(
    np.linalg.norm(z - expected, axis=1), 1e-6 * np.linalg.norm(g64, axis=1)
  )
  # bit-for-bit g when there is no conflict
  np.testing.assert_array_equal(z[dots >= 0], g[dots >= 0])
  # projected ones lie on the boundary, and z - g is a multiple of g_ref (closest point)
  proj = dots < 0
  assert np.all(np.abs(np.sum(z[proj] * ref64[proj], 1)) <= 1e-6 * scale[proj])
  step = z[proj] - g64[proj]
  cos = np.sum(step * ref64[proj], 1) / (
    np.linalg.norm(step, axis=1) * np.linalg.norm(ref64[proj], axis=1)
  )
  np.testing.assert_allclose(cos, 1.0, atol=1e-5)


def test_agem_edge_cases():
  g = jnp.array([1.0, -2.0, 3.0])
  np.testing.assert_array_equal(pj.agem_project(g, jnp.zeros(3)), g)  # g_ref = 0
  np.testing.assert_array_equal(pj.agem_project(g, jnp.array([2.0, 1.0, 0.0])), g)  # orthogonal
  np.testing.assert_array_equal(pj.agem_project(jnp.zeros(3), g), jnp.zeros(3))
  z = pj.agem_project(g, -g)  # exactly opposite: projects to 0
  np.testing.assert_allclose(z, 0.0, atol=1e-6)
  half = pj.agem_project(g.astype(jnp.bfloat16), -g.astype(jnp.bfloat16))
  assert half.dtype == jnp.bfloat16


def test_tree_agem_matches_flat():
  rng = np.random.default_rng(1)
  tree = {
    'w': rng.normal(size=(3, 4)),
    'b': rng.normal(size=(4,)),
    'c': [rng.normal(size=(2, 2, 2))],
  }
  ref = jax.tree.map(lambda x: -x + 0.1 * rng.normal(size=x.shape), tree)
  tree, ref = jax.tree.map(np.float32, tree), jax.tree.map(np.float32, ref)
  flat, unravel = ravel_pytree(tree)
  flat_ref, _ = ravel_pytree(ref)
  expected = unravel(pj.agem_project(flat, flat_ref))
  out = jax.jit(pj.tree_agem_project)(tree, ref)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), out, expected)
  same = pj.tree_agem_project(tree, tree)  # no conflict: unchanged
  jax.tree.map(np.testing.assert_array_equal, same, tree)


# ----------------------------------------------------------------------------- GEM


@pytest.mark.parametrize('kind', ['random', 'conflict', 'dependent', 'duplicate'])
def test_gem_matches_brute_force(kind):
  problems, gs, grads, actives = padded_batch(10 + len(kind), kind)
  zs = batched_gem(gs, grads, actives, 0.0, 0.0)
  errors, projected = [], 0
  for (g, gr, act), z in zip(problems, zs):
    z = unpad(z, g)
    errors.append(rel_err(z, oracle(g, gr, act), g))
    assert min_constraint(z, gr, act, g) >= -CONSTRAINT_TOL
    projected += not np.array_equal(z, g)
  assert max(errors) < TOL, max(errors)
  assert projected > 30  # the cases do exercise the projection


def test_gem_nearly_parallel_rows():
  problems, gs, grads, actives = padded_batch(3, 'parallel')
  zs = batched_gem(gs, grads, actives, 0.0, 0.0)
  errors = []
  for (g, gr, act), z in zip(problems, zs):
    z = unpad(z, g)
    ref = oracle(g, gr, act)
    errors.append(rel_err(z, ref, g))
    assert min_constraint(z, gr, act, g) >= -CONSTRAINT_TOL
    # as close to g as the exact projection, up to rounding
    g64 = g.astype(np.float64)
    excess = (np.linalg.norm(z - g64) - np.linalg.norm(ref - g64)) / np.linalg.norm(g64)
    assert abs(excess) < TOL
  assert max(errors) < PARALLEL_TOL, max(errors)
  assert np.median(errors) < TOL


def test_nnls_oracle_agrees_with_brute_force():
  problems, *_ = padded_batch(4, 'conflict', 40)
  problems += padded_batch(5, 'dependent', 40)[0]
  for g, gr, act in problems:
    a = oracle(g, gr, act)
    b = oracle(g, gr, act, solver=nnls_projection)
    assert rel_err(a, b, g) < 1e-9


TWENTY = 20

twenty_tasks = jax.jit(
  jax.vmap(
    lambda g, grads, active: (
      pj.gem_project(g, grads, active),
      pj._gem_dual_solve(grads @ grads.T, grads @ g, active, 0.0, None, 0.0)[1],
    )
  )
)


@pytest.mark.parametrize('kind', ['conflict', 'parallel', 'dependent', 'duplicate'])
def test_gem_twenty_tasks_converges(kind):
  """T = 20 within the default budget of 3 T + 10 = 70 steps.

  `steps` is the last step that changed the solver's state: from there on the
  state is a fixed point, so a larger budget would return the same result.
  """
  rng = np.random.default_rng(20 + len(kind))
  problems = [random_problem(rng, kind, TWENTY, 300) for _ in range(16)]
  gs, grads, actives = (np.stack(x) for x in zip(*problems))
  zs, steps = twenty_tasks(gs, grads, actives)
  assert int(np.max(steps)) <= 2 * TWENTY < pj.default_iterations(TWENTY), np.max(steps)
  tol = PARALLEL_TOL if kind == 'parallel' else TOL
  for (g, gr, act), z in zip(problems, np.asarray(zs)):
    assert rel_err(z, oracle(g, gr, act, solver=nnls_projection), g) < tol
    assert min_constraint(z, gr, act, g) >= -CONSTRAINT_TOL


def single_problem(seed):
  rng = np.random.default_rng(seed)
  g = np.float32(rng.normal(size=P_MAX))
  return g, np.float32(rng.normal(size=(T_MAX, P_MAX))), rng


def test_gem_unchanged_without_violation():
  g, grads, _ = single_problem(6)
  grads *= np.sign(grads @ g)[:, None]  # every <g, G_k> > 0
  active = np.array([True, True, False, True, True, True])
  for margin in (0.0, 0.5):
    np.testing.assert_array_equal(pj.gem_project(g, grads, active, margin=margin), g)
  # a violated row that is inactive does not count either
  grads[2] = -3 * g
  np.testing.assert_array_equal(pj.gem_project(g, grads, active), g)
  np.testing.assert_array_equal(pj.gem_project(g, grads, np.zeros(T_MAX, bool)), g)


def test_gem_ignores_inactive_rows():
  g, grads, rng = single_problem(7)
  grads[0] = -g + 0.2 * rng.normal(size=P_MAX)  # violated, active
  active = np.array([True, True, False, False, False, False])
  base = pj.gem_project(g, grads, active)
  assert not np.array_equal(base, g)
  assert rel_err(base, oracle(g, grads[:2], active[:2]), g) < TOL
  huge = grads.copy()
  huge[2] = -1e4 * g  # hugely conflicting, but inactive
  huge[3:] = 1e4 * rng.normal(size=(T_MAX - 3, P_MAX))
  np.testing.assert_array_equal(pj.gem_project(g, huge, active), base)
  v = pj.gem_dual_solve(huge @ huge.T, huge @ g, active)
  np.testing.assert_array_equal(v[2:], 0.0)
  huge[4], huge[5, 0] = np.nan, np.inf  # e.g. gradients on an empty memory
  np.testing.assert_array_equal(pj.gem_project(g, huge, active), base)


def test_gem_zero_rows():
  g, grads, _ = single_problem(8)
  grads[:] = 0.0
  grads[1, 0] = 1.0
  g[0] = -1.0
  z = np.asarray(pj.gem_project(g, grads, np.ones(T_MAX, bool)))  # only <z, e_0> >= 0 binds
  np.testing.assert_allclose(z, np.concatenate([[0.0], g[1:]]), atol=1e-7)
  np.testing.assert_array_equal(pj.gem_project(g, np.zeros_like(grads), np.ones(T_MAX, bool)), g)


def test_gem_margin_like_gems_code():
  """v >= margin (GEM's memory_strength): z = G^T v + g is the projection of
  g + margin sum_k G_k, which pushes weakly bound constraints into the interior."""
  # One constraint, closed form v = max(margin, -<g, G> / ||G||^2) = max(margin, 1).
  g, grads, _ = single_problem(9)
  grads[:] = 0.0
  grads[0, 1] = 1.0
  g[1] = -1.0
  active = np.arange(T_MAX) == 0
  for margin, v in [(0.0, 1.0), (0.5, 1.0), (2.0, 2.0)]:
    z = np.asarray(pj.gem_project(g, grads, active, margin=margin))
    np.testing.assert_allclose(z, g + v * grads[0], atol=1e-6)
    assert z[1] == pytest.approx(v - 1.0)  # interior (> 0) once the margin binds

  problems, gs, grads, actives = padded_batch(8, 'conflict')
  margin = 0.5
  zs = batched_gem(gs, grads, actives, margin, 0.0)
  vs = jax.jit(jax.vmap(lambda g, gr, a: pj.gem_dual_solve(gr @ gr.T, gr @ g, a, margin=margin)))(
    gs, grads, actives
  )
  for (g, gr, act), z, v in zip(problems, zs, np.asarray(vs)):
    z = unpad(z, g)
    assert rel_err(z, oracle(g, gr, act, margin=margin), g) < TOL
    assert min_constraint(z, gr, act, g) >= -CONSTRAINT_TOL
    if np.any(act & (gr @ g < 0)):
      v = v[: len(act)]
      assert np.all(v[act] >= margin) and np.all(v[~act] == 0)
      np.testing.assert_allclose(z, g + v @ gr, atol=1e-5 * np.linalg.norm(g))


def test_gem_ridge_is_gems_regularized_qp():
  """`ridge` adds r I to G G^T: the projection with G' = [G, sqrt(r) I], g' = [g, 0],
  i.e. constraint k relaxed to <z, G_k> >= -r v_k. Its distance from the exact QP
  is measured too (GEM's code uses r = 1e-3)."""
  problems, gs, grads, actives = padded_batch(9, 'conflict')
  ridge = 1e-3
  zs = batched_gem(gs, grads, actives, 0.0, ridge)
  deviation = []
  for (g, gr, act), z in zip(problems, zs):
    z = unpad(z, g)
    t = len(act)
    aug_grads = np.concatenate([gr.astype(np.float64), np.sqrt(ridge) * np.eye(t)], 1)
    aug_g = np.concatenate([g.astype(np.float64), np.zeros(t)])
    expected = oracle(aug_g, aug_grads, act)[: len(g)] if np.any(act & (gr @ g < 0)) else g
    assert rel_err(z, expected, g) < TOL
    deviation.append(rel_err(z, oracle(g, gr, act), g))
  # ||G_k||^2 ~ P ~ 5..50: a 1e-3 ridge moves z by up to ~1e-3 ||g||, well above rounding
  assert 1e-6 < max(deviation) < 1e-2, max(deviation)  # measured 7e-4


def test_jit_vmap_and_tree():
  problems, gs, grads, actives = padded_batch(11, 'conflict')
  batched = batched_gem(gs, grads, actives, 0.0, 0.0)
  for i in range(3):
    np.testing.assert_allclose(pj.gem_project(gs[i], grads[i], actives[i]), batched[i], atol=1e-6)

  rng = np.random.default_rng(12)  # P_MAX = 50 parameters
  tree = {'w': rng.normal(size=(8, 5)), 'b': rng.normal(size=(6,)), 'h': [rng.normal(size=(2, 2))]}
  tree = jax.tree.map(np.float32, tree)
  mem = jax.tree.map(
    lambda x: np.float32(-x[None] + 0.5 * rng.normal(size=(T_MAX,) + x.shape)), tree
  )
  active = jnp.array([True, True, False, True, True, False])
  flat, unravel = ravel_pytree(tree)
  flat_mem = jax.vmap(lambda m: ravel_pytree(m)[0])(mem)
  expected = unravel(pj.gem_project(flat, flat_mem, active, margin=0.1))
  out = jax.jit(lambda t, m, a: pj.tree_gem_project(t, m, a, margin=0.1))(tree, mem, active)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), out, expected)
  assert jax.tree.structure(out) == jax.tree.structure(tree)
