"""La-MAML, C-MAML and Sync-La-MAML (Gupta, Yadav & Paull 2020, Alg. 1-2).

Each incoming batch `b` of `k` samples gets `glances` meta-updates. A glance:

  1. draws a memory batch of `replay_batch_size` samples from a reservoir
     buffer (uniformly, with replacement, as the authors' code) and forms
     the meta-batch `b_m = memory + b`;
  2. from `theta_0 = theta` takes `k` single-sample inner SGD steps over the
     (reshuffled) current batch with per-parameter learning rates (eq. 4, 7)

         theta_{i+1} = theta_i - relu(alpha) * grad l(theta_i; b[i]);

  3. evaluates the meta-loss `L = 1/k sum_i L(theta_{i+1}; b_m)` (the
     authors' code averages the meta-batch loss after every inner step) and
     its gradient w.r.t. `theta` and `alpha` (eq. 7); first order treats the
     inner gradients as constants (alphas still get `-g_meta . g_traj`),
     `second_order` differentiates through them;
  4. clips both meta-gradients' global norms separately (`grad_clip_norm`),
     steps the learning rates `alpha <- alpha - alpha_lr * g_alpha`
     (`learn_lr`), then the weights with the *updated* rates (eq. 8)

         theta <- theta - relu(alpha) * g_theta          (La-MAML, asynchronous)

     or with the run's optimizer on `g_theta` (`sync_update`: C-MAML with a
     fixed `alpha`, Alg. 2, or Sync-La-MAML).

The current batch enters the buffer once, on the first glance, after that
glance's memory batch is drawn (as the authors' code); padding never does,
and padded samples take no inner step and add no meta-loss term. Insertion
is Vitter's reservoir (`buffer.add_reservoir`; the authors draw the slot
from `randint(0, n)`, one more value). With several epochs every epoch
offers its batches again (the authors' code offers only the first epoch's).

Cost: per glance one `lax.scan` over the `k` inner steps, each a
single-sample gradient plus the meta-batch loss at the new weights, and its
reverse pass (first order: `stop_gradient` on the inner gradients, so the
reverse pass only carries the identity path and `relu(alpha)`). On CPU this
sequential form is faster than vmapping the `k` meta-losses over stacked
weights, whose gradient sums over the stacked axis are slow XLA reductions.

BatchNorm (`model_state` non-empty): the single-sample inner steps run the
model in eval mode (running statistics; one sample has no batch
statistics), the meta-losses in training mode on the meta-batch; the
running statistics advance once per glance, by the meta-batch forward at
the last look-ahead weights `theta_k`. Dropout masks are drawn per glance.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jcl import specs
from jcl import train_state as ts_lib
from jcl.algorithms import base
from jcl.algorithms import buffer as buffer_lib
from jcl.algorithms.er import init_buffer, require_context
from jcl.types import Batch

PyTree = Any

GLANCE_SALT = 5
# Added to torch.nn.utils.clip_grad_norm_'s norm, as the authors' code.
CLIP_EPS = 1e-6


class LaMAMLState(NamedTuple):
  """`alpha`: per-parameter learning rates (a pytree like the params, eq. 7);
  `buffer`: the reservoir replay buffer."""

  alpha: PyTree
  buffer: buffer_lib.ReplayBuffer


def relu_tree(tree: PyTree) -> PyTree:
  return jax.tree.map(jax.nn.relu, tree)


def clip_by_global_norm(tree: PyTree, max_norm: float | None) -> tuple[PyTree, jax.Array]:
  """`tree * min(1, max_norm / (||tree|| + 1e-6))` (torch's `clip_grad_norm_`)
  and the norm before clipping."""
  norm = optax.tree.norm(tree)
  if max_norm is None:
    return tree, norm
  scale = jnp.minimum(1.0, max_norm / (norm + CLIP_EPS))
  return jax.tree.map(lambda g: g * scale, tree), norm


def sample_with_replacement(buffer: buffer_lib.ReplayBuffer, rng: jax.Array, size: int) -> Batch:
  """`size` rows drawn uniformly with replacement among the valid slots.

  As the authors' `getBatch`: `min(size, stored)` draws, repeats allowed;
  the remaining rows have mask 0 (all of them while the buffer is empty).
  """
  scores = jnp.where(buffer.valid, 0.0, -jnp.inf)
  idx = jax.random.categorical(rng, scores, shape=(size,))
  mask = jnp.arange(size) < jnp.minimum(buffer_lib.size(buffer), size)
  return Batch(buffer.x[idx], buffer.y[idx], buffer.t[idx], mask.astype(jnp.float32))


def _has_batch_stats(train_state: ts_lib.TrainState) -> bool:
  return bool(jax.tree.leaves(train_state.model_state))


def _logits(params, train_state, batch: Batch, rng, *, train: bool):
  outputs, model_state = ts_lib.apply_model(
    train_state, params, batch.x, batch.t, train=train, rng=rng
  )
  return base.masked_logits(outputs, train_state.class_mask), model_state


def _loss_fns(train_state: ts_lib.TrainState, meta: Batch, rng: jax.Array, spec: specs.LaMAMLSpec):
  """`inner_grad(fast, sample)`: the (clamped) single-sample gradient of an
  inner step; `meta_loss(fast) -> (loss, model_state)` on the meta-batch."""
  inner_train_mode = not _has_batch_stats(train_state)

  def inner_grad(fast, sample: Batch):
    one = Batch(sample.x[None], sample.y[None], sample.t[None], jnp.ones((1,), jnp.float32))

    def loss(p):
      logits, _ = _logits(p, train_state, one, rng, train=inner_train_mode)
      return base.cross_entropy(logits, one.y, one.mask)

    grads = jax.grad(loss)(fast)
    if spec.inner_grad_clip is not None:
      clamp = spec.inner_grad_clip
      grads = jax.tree.map(lambda g: jnp.clip(g, -clamp, clamp), grads)
    return grads

  def meta_loss(fast):
    logits, model_state = _logits(fast, train_state, meta, rng, train=True)
    return base.cross_entropy(logits, meta.y, meta.mask), model_state

  return inner_grad, meta_loss


def meta_objective(
  params: PyTree,
  alpha: PyTree,
  train_state: ts_lib.TrainState,
  inner: Batch,
  meta: Batch,
  rng: jax.Array,
  spec: specs.LaMAMLSpec,
):
  """The meta-loss `1/k sum_i L(theta_i; b_m)` over the real inner steps (eq. 5, 7).

  `theta_i = theta_{i-1} - relu(alpha) * grad l(theta_{i-1}; b[i])` (eq. 4);
  with `spec.second_order` False the inner gradients are constants
  (`stop_gradient`), so `jax.grad` of this function is the first-order
  meta-gradient.

  Args:
    params, alpha: `theta_0` and the learning rates.
    train_state: model, model state, class mask.
    inner: the current batch `[k, ...]` in inner-step order; a sample with
      mask 0 takes no step and adds no term.
    meta: the meta-batch (memory + current) `[M, ...]`.
    rng: dropout key.
    spec: `second_order`, `inner_grad_clip`.
  Returns:
    `(loss, aux)`: aux holds `model_state` (BatchNorm statistics of the
    meta-batch forward at `theta_k`).
  """
  inner_grad, meta_loss = _loss_fns(train_state, meta, rng, spec)
  lrs = relu_tree(alpha)

  def body(carry, sample):
    fast, loss_sum, _ = carry
    grads = inner_grad(fast, sample)
    if not spec.second_order:
      grads = jax.lax.stop_gradient(grads)
    fast = jax.tree.map(lambda p, lr, g: p - sample.mask * lr * g, fast, lrs, grads)
    loss, model_state = meta_loss(fast)
    return (fast, loss_sum + sample.mask * loss, model_state), None

  (_, loss_sum, model_state), _ = jax.lax.scan(
    body, (params, jnp.zeros(()), train_state.model_state), inner
  )
  return loss_sum / jnp.maximum(jnp.sum(inner.mask), 1.0), {'model_state': model_state}


def first_order_meta_gradients(
  params: PyTree,
  alpha: PyTree,
  train_state: ts_lib.TrainState,
  inner: Batch,
  meta: Batch,
  rng: jax.Array,
  spec: specs.LaMAMLSpec,
  *,
  wrt_alpha: bool = True,
):
  """The first-order gradients of `meta_objective` in one forward scan.

  With the inner gradients `g_j` constant, `theta_i = theta_0 - relu(alpha) *
  C_i` with `C_i = sum_{j<=i} m_j g_j`, so (n = number of real inner steps)

    d/d theta_0 = 1/n sum_i m_i grad L(theta_i)
    d/d alpha   = -relu'(alpha) * 1/n sum_i m_i C_i * grad L(theta_i)

  accumulated step by step: the same numbers as reverse mode through the
  scan, without storing the k fast-weight copies and running a backward loop
  over them. Returns `((loss, aux), (g_theta, g_alpha))`, `g_alpha` None
  (and not accumulated) when `wrt_alpha` is False.
  """
  inner_grad, meta_loss = _loss_fns(train_state, meta, rng, spec)
  lrs = relu_tree(alpha)
  zeros = jax.tree.map(jnp.zeros_like, params)

  def body(carry, sample):
    fast, cumulative, g_theta, g_alpha, loss_sum, _ = carry
    grads = inner_grad(fast, sample)
    if wrt_alpha:
      cumulative = jax.tree.map(lambda c, g: c + sample.mask * g, cumulative, grads)
    fast = jax.tree.map(lambda p, lr, g: p - sample.mask * lr * g, fast, lrs, grads)
    (loss, model_state), meta_grads = jax.value_and_grad(meta_loss, has_aux=True)(fast)
    g_theta = jax.tree.map(lambda a, g: a + sample.mask * g, g_theta, meta_grads)
    if wrt_alpha:
      g_alpha = jax.tree.map(
        lambda a, c, g: a + sample.mask * c * g, g_alpha, cumulative, meta_grads
      )
    return (fast, cumulative, g_theta, g_alpha, loss_sum + sample.mask * loss, model_state), None

  init = (params, zeros, zeros, zeros, jnp.zeros(()), train_state.model_state)
  (_, _, g_theta, g_alpha, loss_sum, model_state), _ = jax.lax.scan(body, init, inner)
  n = jnp.maximum(jnp.sum(inner.mask), 1.0)
  g_theta = jax.tree.map(lambda g: g / n, g_theta)
  g_alpha = (
    jax.tree.map(lambda a, g: -jnp.where(a > 0, g, 0.0) / n, alpha, g_alpha) if wrt_alpha else None
  )
  return (loss_sum / n, {'model_state': model_state}), (g_theta, g_alpha)


def meta_gradients(
  params: PyTree,
  alpha: PyTree,
  train_state: ts_lib.TrainState,
  inner: Batch,
  meta: Batch,
  rng: jax.Array,
  spec: specs.LaMAMLSpec,
  *,
  wrt_alpha: bool = True,
):
  """`((loss, aux), (g_theta, g_alpha))` of `meta_objective`; `g_alpha` is
  None when `wrt_alpha` is False (fixed learning rates need none). First
  order runs `first_order_meta_gradients`; second order differentiates
  through the inner steps in reverse mode."""
  if not spec.second_order:
    return first_order_meta_gradients(
      params, alpha, train_state, inner, meta, rng, spec, wrt_alpha=wrt_alpha
    )
  argnums = (0, 1) if wrt_alpha else 0
  (loss, aux), grads = jax.value_and_grad(meta_objective, argnums=argnums, has_aux=True)(
    params, alpha, train_state, inner, meta, rng, spec
  )
  return (loss, aux), (grads if wrt_alpha else (grads, None))


def make(
  spec: specs.LaMAMLSpec | None = None, context: base.Context | None = None
) -> base.Algorithm:
  """La-MAML (or C-MAML / Sync-La-MAML, by `spec`) as an `Algorithm`; the
  context sizes the replay buffer."""
  spec = spec or specs.LaMAMLSpec()
  context = require_context(context, 'lamaml')

  def init(train_state, rng):
    del rng
    alpha = jax.tree.map(lambda p: jnp.full_like(p, spec.alpha_init), train_state.params)
    return LaMAMLState(alpha, init_buffer(spec, context))

  def step(train_state, batch: Batch, state: LaMAMLState):
    key = train_state.step_rng(GLANCE_SALT)
    num_samples = batch.y.shape[0]
    # Prequential accuracy: the incoming batch before any update on it.
    logits, _ = _logits(train_state.params, train_state, batch, None, train=False)
    accuracy = base.accuracy(logits, batch.y, batch.mask)

    def glance(carry, index):
      params, opt_state, alpha, buffer, model_state = carry
      k_perm, k_memory, k_insert, k_dropout = jax.random.split(jax.random.fold_in(key, index), 4)
      order = jax.random.permutation(k_perm, num_samples)
      current = jax.tree.map(lambda a: a[order], batch)
      memory = sample_with_replacement(buffer, k_memory, spec.replay_batch_size)
      buffer = jax.lax.cond(
        index == 0,
        lambda b: buffer_lib.add(b, current, k_insert, policy='reservoir'),
        lambda b: b,
        buffer,
      )
      ts = train_state.replace(params=params, model_state=model_state)
      (loss, aux), (g_theta, g_alpha) = meta_gradients(
        params,
        alpha,
        ts,
        current,
        base.concat_batches(memory, current),
        k_dropout,
        spec,
        wrt_alpha=spec.learn_lr,
      )
      g_theta, theta_norm = clip_by_global_norm(g_theta, spec.grad_clip_norm)
      metrics = {'loss': loss, 'meta_grad_norm': theta_norm}
      if spec.learn_lr:
        g_alpha, alpha_norm = clip_by_global_norm(g_alpha, spec.grad_clip_norm)
        alpha = jax.tree.map(lambda a, g: a - spec.alpha_lr * g, alpha, g_alpha)
        metrics['alpha_grad_norm'] = alpha_norm
      if spec.sync_update:
        updates, opt_state = train_state.tx.update(g_theta, opt_state, params)
        params = optax.apply_updates(params, updates)
      else:
        params = jax.tree.map(lambda p, a, g: p - jax.nn.relu(a) * g, params, alpha, g_theta)
      return (params, opt_state, alpha, buffer, aux['model_state']), metrics

    carry = (
      train_state.params,
      train_state.opt_state,
      state.alpha,
      state.buffer,
      train_state.model_state,
    )
    (params, opt_state, alpha, buffer, model_state), per_glance = jax.lax.scan(
      glance, carry, jnp.arange(spec.glances)
    )
    new_state = train_state.replace(
      step=train_state.step + 1, params=params, opt_state=opt_state, model_state=model_state
    )
    alphas = jnp.concatenate([a.ravel() for a in jax.tree.leaves(alpha)])
    metrics = {k: jnp.mean(v) for k, v in per_glance.items()}
    metrics.update(
      accuracy=accuracy,
      alpha_mean=jnp.mean(alphas),
      alpha_zero_fraction=jnp.mean((alphas <= 0).astype(jnp.float32)),
      buffer_size=buffer_lib.size(buffer),
    )
    return new_state, LaMAMLState(alpha, buffer), metrics

  return base.make(spec, step, init=init)
