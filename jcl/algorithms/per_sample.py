"""Sums over samples of per-sample gradient powers, without per-sample gradients.

The importance passes (EWC's diagonal Fisher, MAS's importance) need, over
the N samples of a task and per parameter,

  S = sum_n sum_c w_{n,c} |d o_{n,c} / d theta|^p     (p = 2 or p = 1)

for per-sample objectives `o_{n,c}` (EWC empirical: `log p(y_n | x_n)`, one
c; true Fisher: `log p(c | x_n)` for every class, `w = p(c | x_n)`; MAS:
`||f(x_n)||^2`, p = 1). Vmapping a gradient over samples materializes a
`[B, parameters]` gradient and runs the network at batch 1. Here the model
runs once per batch, and every leaf module (one whose parameters are its
own) is replaced by the same computation whose backward pass returns, for
its parameters, the per-sample power sum instead of the gradient (the input
gradient, which carries the backward pass on, is the true one):

* `nn.Dense` on `[B, F]` inputs, in closed form: the per-sample kernel
  gradient is `x_n (outer) delta_n`, and `|x_n delta_n|^p = |x_n|^p |delta_n|^p`,
  so `S_kernel = |x|^p.T @ |delta|^p` and `S_bias = sum_n |delta_n|^p` (one
  matmul, nothing per sample);
* any other leaf module (convolutions, BatchNorm in evaluation mode, the
  task head, ...): the per-sample gradients of that layer alone (a vjp of
  the module on one sample, vmapped over groups of samples), raised to p and
  summed in a scan, so at most `group` per-sample layer gradients exist.

`sum_c w_{n,c} |g_{n,c}|^p` comes from scaling objective c by `w^(1/p)`
(`|w^(1/p) g|^p = w |g|^p`), one backward pass per c. Parameters outside
such modules (a module called twice, a parameter of a module that also has
children) get the per-sample vmap reference (`base.per_sample_mean`), which
the tests compare everything against.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jcl import train_state as ts_lib
from jcl.algorithms import base
from jcl.types import Batch

PyTree = Any
# `objective(logits [B, C], batch) -> (o [B, C'], w [B, C'])`: per-sample
# objectives `o` (differentiable in the logits) and their weights `w >= 0`.
Objective = Callable[[jax.Array, Batch], tuple[jax.Array, jax.Array]]


def _power(v: jax.Array, p: int) -> jax.Array:
  return jnp.square(v) if p == 2 else jnp.abs(v)


def _zero_cotangent(a):
  """The cotangent of a primal input that is not differentiated."""
  if jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact):
    return jnp.zeros_like(a)
  return np.zeros(np.shape(a), dtype=jax.dtypes.float0)


def _dense(p: int):
  """`x @ kernel + bias` whose backward gives the power sums of the parameters."""

  @jax.custom_vjp
  def dense(x, kernel, bias):
    return jnp.dot(x, kernel) + bias

  def forward(x, kernel, bias):
    return dense(x, kernel, bias), (x, kernel)

  def backward(residuals, g):
    x, kernel = residuals
    return (
      jnp.dot(g, kernel.T),
      jnp.dot(_power(x, p).T, _power(g, p)),
      jnp.sum(_power(g, p), axis=0),
    )

  dense.defvjp(forward, backward)
  return dense


def _sum_over_samples(fn, xs, group: int):
  """`sum_n fn(x_n)` (a pytree) over the leading axis of `xs`, `group`
  samples at a time (padding samples must give zeros)."""
  n = jax.tree.leaves(xs)[0].shape[0]
  group = max(1, min(group, n))
  pad = -n % group
  xs = jax.tree.map(lambda a: jnp.concatenate([a, jnp.zeros((pad,) + a.shape[1:], a.dtype)]), xs)
  xs = jax.tree.map(lambda a: a.reshape((-1, group) + a.shape[1:]), xs)
  first = jax.eval_shape(fn, jax.tree.map(lambda a: a[0, 0], xs))
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), first)

  def body(total, part):
    return jax.tree.map(lambda t, v: t + jnp.sum(v, axis=0), total, jax.vmap(fn)(part)), None

  return jax.lax.scan(body, zeros, xs)[0]


def _leaf_module(apply, p: int, group: int):
  """`apply(params, others, *args)` (a module alone) whose backward gives, for
  `params`, the sum over the batch axis of the args of the per-sample
  gradient powers; the float args get their true cotangents."""

  @jax.custom_vjp
  def call(params, others, args):
    return apply(params, others, *args)

  def forward(params, others, args):
    return call(params, others, args), (params, others, args)

  def backward(residuals, g):
    params, others, args = residuals
    float_args = [jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact) for a in args]
    _, vjp = jax.vjp(
      lambda *fa: apply(params, others, *_merge(args, fa, float_args)),
      *[a for a, f in zip(args, float_args) if f],
    )
    d_float = iter(vjp(g))
    d_args = tuple(next(d_float) if f else _zero_cotangent(a) for a, f in zip(args, float_args))

    def one(sample):
      sample_args, sample_g = sample
      _, vjp_params = jax.vjp(lambda q: apply(q, others, *[a[None] for a in sample_args]), params)
      return jax.tree.map(lambda v: _power(v, p), vjp_params(sample_g[None])[0])

    sums = _sum_over_samples(one, (args, g), group)
    return sums, jax.tree.map(_zero_cotangent, others), d_args

  call.defvjp(forward, backward)
  return call


def _merge(args, float_values, is_float):
  values = iter(float_values)
  return [next(values) if f else a for a, f in zip(args, is_float)]


def _is_leaf(module: nn.Module) -> bool:
  """A module whose parameters are all its own (no child holds any)."""
  params = module.variables.get('params', {})
  return bool(params) and all(
    not isinstance(v, dict) and not hasattr(v, 'items') for v in params.values()
  )


def _plain_dense(module: nn.Module, args, kwargs) -> bool:
  return (
    type(module) is nn.Dense
    and not kwargs
    and len(args) == 1
    and args[0].ndim == 2
    and module.use_bias
    and module.dtype is None
    and module.precision is None
    and module.dot_general is None
    and module.dot_general_cls is None
  )


def _leaf_calls(train_state: ts_lib.TrainState, batch: Batch) -> dict[tuple[str, ...], int]:
  """How many times the model's forward pass calls each leaf module."""
  counts: dict[tuple[str, ...], int] = {}

  def count(next_fun, args, kwargs, context):
    if context.method_name == '__call__' and _is_leaf(context.module):
      path = tuple(context.module.scope.path)
      counts[path] = counts.get(path, 0) + 1
    return next_fun(*args, **kwargs)

  def forward(params):
    with nn.intercept_methods(count):
      return ts_lib.apply_model(train_state, params, batch.x, batch.t, train=False)[0]

  jax.eval_shape(forward, train_state.params)
  return counts


def _run_with_power_sums(train_state, params, batch: Batch, p: int, group: int, covered):
  """The model's logits with every covered leaf module replaced (see module doc)."""
  dense = _dense(p)

  def intercept(next_fun, args, kwargs, context):
    module = context.module
    path = tuple(module.scope.path)
    if context.method_name != '__call__' or path not in covered:
      return next_fun(*args, **kwargs)
    own = dict(module.variables['params'])
    if _plain_dense(module, args, kwargs):
      return dense(args[0], own['kernel'], own['bias'])
    others = {k: v for k, v in module.variables.items() if k != 'params'}
    clone = module.clone(parent=None)

    def apply(q, rest, *a):
      return clone.apply({'params': q, **rest}, *a, **kwargs)

    return _leaf_module(apply, p, group)(own, others, tuple(args))

  with nn.intercept_methods(intercept):
    logits, _ = ts_lib.apply_model(train_state, params, batch.x, batch.t, train=False)
  return logits


def _covered_leaves(params: PyTree, covered) -> PyTree:
  """A bool pytree like `params`: leaves that belong to a covered leaf module."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  prefixes = {tuple(path) for path in covered}
  marks = []
  for key_path, _ in flat:
    names = tuple(str(getattr(k, 'key', k)) for k in key_path)
    marks.append(names[:-1] in prefixes)
  return jax.tree.unflatten(jax.tree.structure(params), marks)


def uncovered_parameters(train_state: ts_lib.TrainState, batch: Batch) -> list[str]:
  """The parameters (`'a/b/kernel'`) that no rule covers, which `power_sums`
  computes from per-sample gradients; `batch` is one batch `[B, ...]`."""
  calls = _leaf_calls(train_state, batch)
  is_covered = _covered_leaves(train_state.params, {path for path, n in calls.items() if n == 1})
  flat = jax.tree_util.tree_flatten_with_path(is_covered)[0]
  return ['/'.join(str(getattr(k, 'key', k)) for k in path) for path, ok in flat if not ok]


def power_sums(
  train_state: ts_lib.TrainState, data: Batch, objective: Objective, p: int, group: int = 32
) -> PyTree:
  """`1/N sum_n sum_c w_{n,c} |d o_{n,c} / d theta|^p` over the real samples of
  `data` `[K, B, ...]` (see the module docstring), a pytree like the params.

  Args:
    train_state: the model (evaluation mode: BatchNorm uses its statistics).
    data: the samples, a chunk `[K, B, ...]` with a mask.
    objective: `(logits [B, C], batch) -> (o [B, C'], w [B, C'])`.
    p: 2 (squares) or 1 (absolute values).
    group: samples whose per-layer gradients exist at once (modules other
      than 2-D `nn.Dense`).
  """
  if p not in (1, 2):
    raise ValueError(f'p must be 1 or 2, got {p!r}')
  first = jax.tree.map(lambda a: a[0], data)
  calls = _leaf_calls(train_state, first)
  covered = {path for path, n in calls.items() if n == 1}
  is_covered = _covered_leaves(train_state.params, covered)

  def batch_sums(batch: Batch):
    weight_of = lambda logits: objective(logits, batch)[1] * batch.mask[:, None]

    def scaled_objective(params, c):
      logits = _run_with_power_sums(train_state, params, batch, p, group, covered)
      o, _ = objective(logits, batch)
      w = jax.lax.stop_gradient(weight_of(logits))
      scale = jnp.sqrt(w) if p == 2 else w
      return jnp.sum(scale[:, c] * o[:, c])

    def objectives(params):  # only its shape is used: how many objectives c per sample
      logits, _ = ts_lib.apply_model(train_state, params, batch.x, batch.t, train=False)
      return objective(logits, batch)[0]

    outputs = jax.eval_shape(objectives, train_state.params).shape[-1]
    grads = jax.vmap(jax.grad(scaled_objective), in_axes=(None, 0))(
      train_state.params, jnp.arange(outputs)
    )
    return jax.tree.map(lambda g: jnp.sum(g, axis=0), grads)

  def add(carry, batch):
    total, count = carry
    sums = batch_sums(batch)
    return (jax.tree.map(jnp.add, total, sums), count + jnp.sum(batch.mask)), None

  zeros = jax.tree.map(jnp.zeros_like, train_state.params)
  (total, count), _ = jax.lax.scan(add, (zeros, jnp.zeros(())), data)
  mean = jax.tree.map(lambda v: v / jnp.maximum(count, 1.0), total)
  if all(jax.tree.leaves(is_covered)):
    return mean
  reference = reference_power_sums(train_state, data, objective, p)
  return jax.tree.map(lambda c, fast, ref: fast if c else ref, is_covered, mean, reference)


def reference_power_sums(
  train_state: ts_lib.TrainState, data: Batch, objective: Objective, p: int
) -> PyTree:
  """The same as `power_sums`, from per-sample gradients (`jax.vmap` over
  samples): the reference the tests compare with, and the route for
  parameters no rule covers."""

  def one(params, sample: Batch):
    def outputs(q):
      logits, _ = ts_lib.apply_model(train_state, q, sample.x, sample.t, train=False)
      return objective(logits, sample)

    o, w = outputs(params)
    w = jax.lax.stop_gradient(w[0])
    jac = jax.jacrev(lambda q: outputs(q)[0][0])(params)  # leaves [C', ...]
    return jax.tree.map(lambda j: jnp.tensordot(w, _power(j, p), axes=1), jac)

  return base.per_sample_mean(one, train_state.params, data)
