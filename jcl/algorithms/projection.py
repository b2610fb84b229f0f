"""Gradient projections of A-GEM and GEM, in pure JAX.

A-GEM (Chaudhry et al. 2019, eq. 11) projects the current gradient `g` onto
the half-space of the reference gradient `g_ref` (the gradient on a replayed
memory batch) when they conflict:

    g~ = g - (g . g_ref / g_ref . g_ref) g_ref   if g . g_ref < 0,   else g.

GEM (Lopez-Paz & Ranzato 2017, eqs. 10-12) keeps one constraint per previous
task k, `<z, G_k> >= 0` with `G_k` the gradient on task k's episodic memory,
and projects `g` onto that polyhedral cone:

    primal (eq. 10):  min_z 1/2 ||g - z||^2   s.t.  G z >= 0,
    dual   (eq. 11):  min_v 1/2 v^T G G^T v + g^T G^T v   s.t.  v >= 0,
    recovery (eq. 12): z = G^T v + g.

GEM's code solves the dual with `quadprog` on `P = G G^T + 1e-3 I` and bound
`v >= memory_strength` (the `margin` here; 0 is the paper's QP), and only
when some constraint is violated. The dual is a T-dimensional non-negative
least-squares problem (`min_v 1/2 ||G^T v + g||^2`), which `gem_dual_solve`
solves exactly by an active-set method (Lawson & Hanson 1974, in the Gram
form of Bro & de Jong 1997) with a fixed iteration budget; see its
docstring for the numerics.

Every function is pure, jit-able and vmap-able: fixed shapes, a fixed
number of `lax.fori_loop` iterations and no Python branching on values.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

PyTree = Any

_HIGHEST = lax.Precision.HIGHEST
# In units of the solver dtype's epsilon (1.2e-6 in float32):
# * added to the (unit) diagonal of each active-set system, so that its
#   Cholesky factor exists even for (nearly) dependent constraints; the
#   iterative refinement then removes its bias on all but those near-null
#   directions, whose effect on z is at the rounding level;
# * a constraint enters the active set when violated by more than this times
#   the largest |<G_k / ||G_k||, g>|: above the rounding noise of <G_k, z>.
_JITTER_EPS = 10.0
_ENTER_TOL_EPS = 10.0
_REFINEMENT_STEPS = 4


def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.matmul(a, b, precision=_HIGHEST)


def _compute_dtype(*arrays: jax.Array) -> jnp.dtype:
  return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def _tree_vdot(a: PyTree, b: PyTree, dtype) -> jax.Array:
  leaves = jax.tree.leaves(
    jax.tree.map(
      lambda x, y: jnp.vdot(x.astype(dtype).ravel(), y.astype(dtype).ravel(), precision=_HIGHEST),
      a,
      b,
    )
  )
  return sum(leaves, jnp.zeros((), dtype))


# ----------------------------------------------------------------------------- A-GEM


@jax.jit
def agem_project(g: jax.Array, g_ref: jax.Array) -> jax.Array:
  """A-GEM's projection (Chaudhry et al. 2019, eq. 11).

      g~ = g - (g . g_ref / g_ref . g_ref) g_ref   if g . g_ref < 0,   else g,

  the closest vector to `g` with `g~ . g_ref >= 0` (on the boundary
  `g~ . g_ref = 0` when projected).

  Args:
    g: the current gradient, `[P]`.
    g_ref: the reference gradient on the memory batch, `[P]`.

  Returns:
    `[P]`, `g` itself (bit-for-bit) when `g . g_ref >= 0`, including when
    `g_ref = 0`. Dot products are taken in (at least) float32.
  """
  dtype = _compute_dtype(g, g_ref)
  dot = jnp.vdot(g.astype(dtype), g_ref.astype(dtype), precision=_HIGHEST)
  ref_sq = jnp.vdot(g_ref.astype(dtype), g_ref.astype(dtype), precision=_HIGHEST)
  coef = dot / jnp.where(ref_sq > 0, ref_sq, 1.0)  # dot < 0 implies ref_sq > 0
  projected = (g.astype(dtype) - coef * g_ref.astype(dtype)).astype(g.dtype)
  return jnp.where(dot < 0, projected, g)


@jax.jit
def tree_agem_project(g_tree: PyTree, g_ref_tree: PyTree) -> PyTree:
  """`agem_project` on gradients given as pytrees of the same structure.

  The dot products are summed over the leaves, so no flat copy is made;
  the result equals `unravel(agem_project(ravel(g), ravel(g_ref)))`.
  """
  dtype = jnp.result_type(jnp.float32, *jax.tree.leaves(g_tree), *jax.tree.leaves(g_ref_tree))
  dot = _tree_vdot(g_tree, g_ref_tree, dtype)
  ref_sq = _tree_vdot(g_ref_tree, g_ref_tree, dtype)
  coef = dot / jnp.where(ref_sq > 0, ref_sq, 1.0)
  conflict = dot < 0

  def project(x, r):
    return jnp.where(conflict, (x.astype(dtype) - coef * r.astype(dtype)).astype(x.dtype), x)

  return jax.tree.map(project, g_tree, g_ref_tree)


# ----------------------------------------------------------------------------- GEM


def _lawson_hanson(q: jax.Array, b: jax.Array, free: jax.Array, iterations: int):
  """`min_u 1/2 u^T q u + b^T u` s.t. `u >= 0`, over the `free` coordinates.

  Lawson-Hanson's active-set method on the normal equations: `passive` is
  the set of coordinates allowed to be positive; each step solves the
  unconstrained problem on `passive`, and either accepts it and frees the
  coordinate whose constraint is most violated, or (when the solution leaves
  `u >= 0`) moves towards it until a coordinate hits 0 and drops that one.
  Every iterate is feasible, and the dual objective decreases. A coordinate
  whose freeing does not give it a positive value (float32 noise on a nearly
  dependent constraint) is reverted and blocked until the next progress step,
  which prevents cycling.

  Args:
    q: `[T, T]` symmetric PSD with unit diagonal on `free` (0 elsewhere).
    b: `[T]`, 0 off `free`.
    free: `[T]` bool.
    iterations: number of steps (each one `[T, T]` Cholesky factorization).

  Returns:
    `(u [T], steps)`: the solution (0 off `free`) and the number of steps
    after which the state stopped changing (a fixed point of the step: more
    iterations would return the same `u`), for measuring convergence.
  """
  num = q.shape[-1]
  dtype = q.dtype
  eps = jnp.finfo(dtype).eps
  jitter = _JITTER_EPS * eps
  enter_tol = _ENTER_TOL_EPS * eps * jnp.max(jnp.abs(b))

  def solve(passive):
    """argmin on `passive` of the objective, unconstrained, 0 elsewhere."""
    both = passive[:, None] & passive[None, :]
    q_pp = jnp.where(both, q, 0.0)
    rhs = jnp.where(passive, -b, 0.0)
    system = q_pp + jnp.diag(jnp.where(passive, jitter, 1.0).astype(dtype))
    # system = L L^T; with W = L^-1 (one triangular solve), system^-1 r = W^T W r.
    chol = jnp.linalg.cholesky(system)
    w = lax.linalg.triangular_solve(chol, jnp.eye(num, dtype=dtype), left_side=True, lower=True)
    apply_inverse = lambda r: _dot(w.T, _dot(w, r))
    s = apply_inverse(rhs)
    for _ in range(_REFINEMENT_STEPS):  # iterative refinement towards q_pp^-1 rhs
      s = s + apply_inverse(rhs - _dot(q_pp, s) - jnp.where(passive, 0.0, s))
    return jnp.where(passive, s, 0.0)

  def body(i, carry):
    u, passive, last, blocked, steps = carry
    s = solve(passive)
    finite = jnp.all(jnp.isfinite(s))
    has_last = last >= 0
    last_idx = jnp.maximum(last, 0)

    # (a) the coordinate freed last step did not become positive: revert, block it.
    revert = has_last & (~finite | (s[last_idx] <= 0))
    # (b) s is feasible: accept it, free the most violated coordinate.
    accept = ~revert & finite & jnp.all(jnp.where(passive, s > 0, True))
    violation = -(_dot(q, s) + b)
    candidates = free & ~passive & ~blocked
    score = jnp.where(candidates, violation, -jnp.inf)
    k = jnp.argmax(score)
    enter = score[k] > enter_tol
    # (c) otherwise step from u towards s until the first coordinate hits 0.
    backtrack = ~revert & ~accept & finite
    ratio = jnp.where(passive & (s <= 0), u / jnp.where(u - s > 0, u - s, 1.0), jnp.inf)
    j = jnp.argmin(ratio)
    alpha = jnp.clip(ratio[j], 0.0, 1.0)
    u_bt = u + alpha * (s - u)
    passive_bt = (passive & (u_bt > 0)).at[j].set(False)
    u_bt = jnp.where(passive_bt, u_bt, 0.0)

    new_u = jnp.where(accept, s, jnp.where(backtrack, u_bt, u))
    new_passive = jnp.where(
      accept,
      passive.at[k].set(passive[k] | enter),
      jnp.where(backtrack, passive_bt, jnp.where(revert, passive.at[last_idx].set(False), passive)),
    )
    new_last = jnp.where(accept & enter, k, -1)
    progress = (accept & has_last) | backtrack
    new_blocked = jnp.where(
      revert, blocked.at[last_idx].set(True), jnp.where(progress, jnp.zeros_like(blocked), blocked)
    )
    changed = (
      jnp.any(new_u != u)
      | jnp.any(new_passive != passive)
      | (new_last != last)
      | jnp.any(new_blocked != blocked)
    )
    steps = jnp.where(changed, i + 1, steps)
    return new_u, new_passive, new_last, new_blocked, steps

  zeros = jnp.zeros((num,), dtype)
  no = jnp.zeros((num,), bool)
  init = (zeros, no, jnp.asarray(-1), no, jnp.asarray(0))
  u, _, _, _, steps = lax.fori_loop(0, iterations, body, init)
  return u, steps


def default_iterations(num_constraints: int) -> int:
  """The default step budget of `gem_dual_solve` for `T` constraints: `3 T + 10`.

  The active-set method needs one step per constraint it makes active plus
  one per backtrack or rejected constraint; on the tests' problems with
  T = 20 (conflicting, nearly parallel, linearly dependent, duplicated rows)
  it reached its fixed point within 23 steps.
  """
  return 3 * num_constraints + 10


@functools.partial(jax.jit, static_argnames=('iterations',))
def _gem_dual_solve(gram, linear, active, margin, iterations, ridge):
  num = gram.shape[-1]
  iterations = default_iterations(num) if iterations is None else iterations
  dtype = _compute_dtype(gram, linear)
  gram = gram.astype(dtype)
  linear = linear.astype(dtype)
  active = active.astype(bool)
  both = active[:, None] & active[None, :]
  q = jnp.where(both, 0.5 * (gram + gram.T), 0.0)
  q = q + jnp.diag(jnp.where(active, ridge, 0.0).astype(dtype))
  lower = jnp.where(active, margin, 0.0).astype(dtype)
  # v = lower + u, u >= 0:  1/2 u^T q u + (linear + q lower)^T u + const.
  b = jnp.where(active, linear + _dot(q, lower), 0.0)
  diag = jnp.diagonal(q)
  # A zero row (G_k = 0) constrains nothing: its v_k stays at the bound.
  free = active & (diag > 0)
  # Jacobi scaling u = d u~ (unit diagonal): the problem of normalized rows G_k / ||G_k||.
  d = jnp.where(free, lax.rsqrt(jnp.where(free, diag, 1.0)), 0.0)
  u_scaled, steps = _lawson_hanson(q * d[:, None] * d[None, :], b * d, free, iterations)
  return lower + d * u_scaled, steps


@functools.partial(jax.jit, static_argnames=('iterations',))
def gem_dual_solve(
  gram: jax.Array,
  linear: jax.Array,
  active: jax.Array,
  *,
  margin: float | jax.Array = 0.0,
  iterations: int | None = None,
  ridge: float | jax.Array = 0.0,
) -> jax.Array:
  """Solves GEM's dual QP (eq. 11) on the active constraints.

      min_v 1/2 v^T (Q + ridge I) v + c^T v   s.t.  v_k >= margin  (k active),

  with `Q = G G^T` and `c = G g`; inactive coordinates are fixed at 0.
  With `ridge = 0` this is the non-negative least-squares problem
  `min_v 1/2 ||G^T v + g||^2`, whose minimizers give the unique projection
  `z = G^T v + g` (eq. 12) even when `Q` is singular.

  Solver: Lawson-Hanson's active-set method on `v - margin >= 0`, after a
  Jacobi scaling to unit diagonal (so rows of very different norms are
  treated alike), with a fixed budget of `iterations` steps (default
  `3 T + 10`). It is exact up to rounding once the active set is found, which
  takes about one step per active constraint, whatever the conditioning
  (projected gradient or coordinate descent slow down as 1 / (1 - cos^2) for
  nearly parallel task gradients). Each step solves the active block by
  Cholesky with a `10 eps` jitter on the unit diagonal plus 4 steps of
  iterative refinement, so dependent constraints need no ridge. Unlike
  GEM's code the default ridge is 0: the exact QP. `ridge=1e-3` reproduces
  GEM's `P + 1e-3 I`, which relaxes constraint k to `<z, G_k> >= -ridge v_k`.

  Accuracy in float32 (`z` vs a float64 oracle, relative to `||g||`, T <= 20):
  < 1e-6 for random, conflicting, linearly dependent and duplicated task
  gradients; up to ~2e-4 for task gradients at angles down to 1e-4 rad,
  which float32 `G G^T` cannot resolve (with float64 inputs ~1e-12): even
  there `<z, G_k> >= -1e-6 ||z|| ||G_k||` and `||z - g||` is optimal to 1e-6.

  Args:
    gram: `[T, T]`, `G G^T` (symmetrized here).
    linear: `[T]`, `G g`.
    active: `[T]` bool, the constraints to enforce.
    margin: lower bound of the active `v_k` (GEM's `memory_strength`), >= 0.
    iterations: static number of active-set steps; `None` for `3 T + 10`.
    ridge: added to the diagonal of `Q` on active rows, in `Q`'s units.

  Returns:
    `v`, `[T]`: `>= margin` on active rows, 0 on inactive ones.
  """
  return _gem_dual_solve(gram, linear, active, margin, iterations, ridge)[0]


@functools.partial(jax.jit, static_argnames=('iterations',))
def gem_project(
  g: jax.Array,
  memory_grads: jax.Array,
  active: jax.Array,
  *,
  margin: float | jax.Array = 0.0,
  iterations: int | None = None,
  ridge: float | jax.Array = 0.0,
) -> jax.Array:
  """GEM's gradient projection (Lopez-Paz & Ranzato 2017, eqs. 10-12).

  When some active constraint is violated (`<g, G_k> < 0`), returns

      z = G^T v + g,   v = argmin_{v >= margin} 1/2 v^T G G^T v + (G g)^T v,

  which for `margin = 0` is the closest vector to `g` with `<z, G_k> >= 0`
  for every active k; a margin > 0 (GEM's `memory_strength`) pushes `z`
  further into the cone (it is the projection of `g + margin sum_k G_k`).
  Otherwise returns `g` unchanged, as GEM's code does.

  Args:
    g: the current gradient, `[P]`.
    memory_grads: `[T, P]`, row k the gradient on task k's episodic memory.
    active: `[T]` bool, which rows are constraints (previous tasks with a
      memory); the other rows are ignored, whatever their values (they are
      zeroed first, which costs one `[T, P]` temporary).
    margin: lower bound of the dual variables, >= 0.
    iterations: static budget of the dual solver; `None` for `3 T + 10`.
    ridge: GEM code's `eps` (it uses 1e-3), 0 for the exact QP; see
      `gem_dual_solve`.

  Returns:
    The projected gradient, `[P]`, of `g`'s dtype. Products with
    `memory_grads` are taken at float32 (or higher) with HIGHEST precision.
  """
  dtype = _compute_dtype(g, memory_grads)
  gc = g.astype(dtype)
  active = active.astype(bool)
  grads = jnp.where(active[:, None], memory_grads.astype(dtype), 0.0)  # even NaN rows drop out
  gram = _dot(grads, grads.T)
  linear = _dot(grads, gc)
  v = gem_dual_solve(gram, linear, active, margin=margin, iterations=iterations, ridge=ridge)
  projected = (gc + _dot(v, grads)).astype(g.dtype)
  return jnp.where(jnp.any(active & (linear < 0)), projected, g)


@functools.partial(jax.jit, static_argnames=('iterations',))
def tree_gem_project(
  g_tree: PyTree,
  memory_grads_tree: PyTree,
  active: jax.Array,
  *,
  margin: float | jax.Array = 0.0,
  iterations: int | None = None,
  ridge: float | jax.Array = 0.0,
) -> PyTree:
  """`gem_project` on gradients given as pytrees.

  Args:
    g_tree: the current gradient, a pytree of arrays.
    memory_grads_tree: the same structure, each leaf with a leading `[T]`
      axis: the T tasks' memory gradients.
    active: `[T]` bool.
    margin, iterations, ridge: as in `gem_project`.

  Returns:
    The projected gradient, structured like `g_tree`. The Gram matrix and
    products are summed leaf by leaf, so no `[T, P]` flat copy of the
    memory gradients is made; the result equals `gem_project` on the
    raveled (`jax.flatten_util.ravel_pytree`) gradients up to rounding.
  """
  leaves = jax.tree.leaves(g_tree) + jax.tree.leaves(memory_grads_tree)
  dtype = jnp.result_type(jnp.float32, *leaves)
  active = active.astype(bool)
  rows = jax.tree.map(
    lambda x, m: jnp.where(active[:, None], m.astype(dtype).reshape(m.shape[0], x.size), 0.0),
    g_tree,
    memory_grads_tree,
  )
  flat_g = jax.tree.map(lambda x: x.astype(dtype).ravel(), g_tree)
  gram = sum(jax.tree.leaves(jax.tree.map(lambda m: _dot(m, m.T), rows)))
  linear = sum(jax.tree.leaves(jax.tree.map(_dot, rows, flat_g)))
  v = gem_dual_solve(gram, linear, active, margin=margin, iterations=iterations, ridge=ridge)
  violated = jnp.any(active & (linear < 0))

  def project(x, m):
    return jnp.where(violated, (x.astype(dtype) + _dot(v, m).reshape(x.shape)).astype(x.dtype), x)

  return jax.tree.map(project, g_tree, rows)
