"""Kernel Continual Learning, KCL (Derakhshani et al., ICML 2021).

A shared feature extractor `h(x)` (the configured model without its head,
features L2-normalised) and, for every task `t`, a kernel ridge-regression
classifier fitted on a small coreset `C_t = (X_C, Y_C)` of the task's
samples, `Y_C` one-hot (eq. 4-5):

    alpha_t = (K(C_t, C_t) + lambda_t I)^-1 Y_C          [M, C]
    f_t(x)  = gamma_t K(x, C_t) alpha_t                   [C]

The classifiers have no weights of their own: a task's predictions depend
only on the shared extractor and that task's coreset, so training later
tasks cannot overwrite them (nothing is replayed). With `kernel='rff'` the
kernel is made of variational random Fourier features,

    psi(h) = sqrt(2 / D) cos(Omega h + b),   K(x, x') = psi(h(x))^T psi(h(x')),

whose `D` bases `omega_d ~ N(mu, diag(sigma^2))` (rows of `Omega`) are
inferred by an amortised network from the mean coreset feature,
`q(omega | C_t)`, and regularised towards a prior inferred the same way (by
a second network) from the mean feature of the training batch,
`p(omega | x)`. The loss is the negative ELBO (eq. 10), estimated with one
sample of the bases per step:

    L = CE(f_t(x), y) + tau * KL(q(omega | C_t) || p(omega | x)).

`kernel='rbf'` (`exp(-|h - h'|^2 / 2)`, the kernel the standard-normal RFF
estimate) and `'linear'` (`h^T h'`) skip the random features and the KL.

Where things live (the design, with the choices made):

* The model is `KernelContinualModel` (`adapt_model` wraps the configured
  network): its params are the extractor's (its unused head included), the
  two amortised inference networks (rff only) and the per-task ridge
  `lambda_t = |l_t| + 0.01` and scale `gamma_t` (learnt, as in the authors'
  code; their per-task additive bias is left out: a shift of every logit
  changes neither the softmax nor the prediction).
* The coresets are model state: the collection `'kcl_coreset'` holds
  `x [T, M, *input_shape]`, `y [T, M]` and `valid [T, M]`, so
  `apply_fn(variables, x, t)` (what `jcl.train` evaluates) predicts each
  sample with its own task's classifier, re-encoding that task's coreset
  with the current extractor as the authors do; only the tasks present in
  a batch are computed. The collection `'kcl_rff'` holds the fixed phases
  `b ~ U[0, 2 pi)` and the fixed noise `eps [D, F]` that draws the bases
  `mu + sigma * eps` at prediction time (deterministic predictions; the
  authors draw fresh bases per test batch). Training draws fresh noise
  each step.
* The coreset of the task being trained is filled from its stream by
  class-balanced priority sampling (`select_coreset`): `M = core_size`
  slots per task; every offered sample draws a uniform priority and the
  coreset holds, round-robin over the classes, each class's
  highest-priority samples: a uniform sample of each class's stream, the
  classes sharing the slots equally. This is the streaming counterpart of
  the authors' selection (a class-balanced uniform sample drawn from the
  training set before training; `core_size` per task on MNIST, i.e.
  `core_size / classes` per class). Each step first computes the loss of
  the batch against the coreset as it stands (the batch is the query set,
  the coreset the support set: in the first epoch they never overlap),
  then offers the batch to the coreset. `algo_state` holds the slots'
  priorities; `begin_task` empties the task's slots, and the slots of
  finished tasks never change again.

Task-incremental only: predictions need the task id. A task with
`task_classes` (masked single head) predicts among its own classes.

Other differences from the authors' code (mmderakhshani/KCL): features are
L2-normalised per sample (their ResNets'; their MLP min-max scales by the
whole batch, which makes a prediction depend on the rest of its batch);
each task is evaluated with its own ridge and scale (their evaluation reads
the current task's); with several epochs a sample offered again draws a new
priority and may be stored twice.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jcl import augment as augment_lib
from jcl import specs
from jcl.algorithms import base
from jcl.models import heads
from jcl.models import initializers

CORESET = 'kcl_coreset'
RANDOM_FEATURES = 'kcl_rff'
BASES_RNG = 'rff'  # rng stream of the bases' noise in training
# The effective ridge is |l_t| + RIDGE_FLOOR (the authors' `abs(lmd) + 0.01`).
RIDGE_FLOOR = 0.01
DROPOUT_SALT, BASES_SALT, INSERT_SALT = 1, 2, 3

PyTree = Any


# ----------------------------------------------------------------------------
# Kernels and kernel ridge regression (eq. 4-5).


def normalize_features(h: jax.Array) -> jax.Array:
  """Rows of `h` `[N, F]` scaled to unit L2 norm; (near-)zero rows, e.g. empty
  coreset slots, are left as they are, with finite gradients."""
  norm_sq = jnp.sum(h * h, axis=-1, keepdims=True)
  return h * jax.lax.rsqrt(jnp.where(norm_sq > 1e-24, norm_sq, 1.0))


def linear_kernel(a: jax.Array, b: jax.Array) -> jax.Array:
  """`a b^T`: `[N, F] x [M, F] -> [N, M]`."""
  return a @ b.T


def rbf_kernel(a: jax.Array, b: jax.Array) -> jax.Array:
  """`exp(-|a_i - b_j|^2 / 2)` `[N, M]`: the Gaussian kernel of unit bandwidth,
  the one random Fourier features with standard-normal bases estimate."""
  sq = jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :] - 2.0 * a @ b.T
  return jnp.exp(-0.5 * jnp.maximum(sq, 0.0))


KERNELS = {'linear': linear_kernel, 'rbf': rbf_kernel}


def random_fourier_features(h: jax.Array, bases: jax.Array, phases: jax.Array) -> jax.Array:
  """`psi(h) = sqrt(2 / D) cos(h Omega^T + b)` (Rahimi & Recht 2007).

  Args:
    h: `[N, F]` features.
    bases: `[D, F]` bases `omega_d`.
    phases: `[D]` phases `b_d`.
  Returns:
    `[N, D]`; `psi(a)^T psi(b)` estimates `E_omega cos(omega^T (a - b))`, the
    Gaussian kernel `exp(-|a - b|^2 / 2)` when `omega ~ N(0, I)`.
  """
  num_features = bases.shape[0]
  return math.sqrt(2.0 / num_features) * jnp.cos(h @ bases.T + phases)


def ridge_coefficients(
  support_kernel: jax.Array, targets: jax.Array, ridge: jax.Array
) -> jax.Array:
  """`alpha = (K + ridge I)^-1 Y` (eq. 4), by Cholesky.

  Args:
    support_kernel: `[M, M]` positive semi-definite.
    targets: `[M, C]`.
    ridge: positive scalar.
  Returns:
    `[M, C]`.
  """
  system = support_kernel + ridge * jnp.eye(support_kernel.shape[0], dtype=support_kernel.dtype)
  factor = jax.scipy.linalg.cho_factor(system, lower=True)
  return jax.scipy.linalg.cho_solve(factor, targets)


def kl_diagonal_gaussians(
  mean_q: jax.Array, log_var_q: jax.Array, mean_p: jax.Array, log_var_p: jax.Array
) -> jax.Array:
  """`KL(N(mean_q, exp(log_var_q)) || N(mean_p, exp(log_var_p)))`, summed over dimensions."""
  var_q, var_p = jnp.exp(log_var_q), jnp.exp(log_var_p)
  return 0.5 * jnp.sum(log_var_p - log_var_q + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0)


def masked_mean(h: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of the rows of `h` `[N, F]` where `mask` `[N]` is set (zeros if none is)."""
  weights = mask.astype(h.dtype)
  return weights @ h / jnp.maximum(jnp.sum(weights), 1.0)


# ----------------------------------------------------------------------------
# The amortised inference network of the bases' distribution.

INFERENCE_LAYERS = 3


@functools.partial(jax.jit, static_argnums=1)
def init_inference_net(rng: jax.Array, dim: int) -> PyTree:
  """Parameters of the amortised network `h_mean [F] -> (mu, log sigma^2) [F]`.

  As the authors': two separate MLPs, for the mean and the log-variance,
  each `Dense(F), ELU, Dense(F), ELU, Dense(F)`; their layers are stacked
  (leading axis 2: mean, log-variance) and applied as one batched MLP.
  (Jitted: one compilation, where an eager init compiles every call.)
  """
  layers = {}
  for i, layer_rng in enumerate(jax.random.split(rng, INFERENCE_LAYERS)):
    kernels = [initializers.DENSE_KERNEL_INIT(k, (dim, dim)) for k in jax.random.split(layer_rng)]
    layers[f'dense_{i}'] = {
      'kernel': jnp.stack(kernels),
      'bias': jnp.stack([initializers.BIAS_INIT(layer_rng, (dim,))] * 2),
    }
  return layers


def apply_inference_net(params: PyTree, h_mean: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`(mu, log_var)`, each `[F]`, of the bases inferred from a mean feature `[F]`."""
  out = jnp.stack([h_mean, h_mean])  # [2, F]: the mean and log-variance networks' inputs
  for i in range(INFERENCE_LAYERS):
    layer = params[f'dense_{i}']
    out = jnp.einsum('hf,hfg->hg', out, layer['kernel']) + layer['bias']
    if i < INFERENCE_LAYERS - 1:
      out = nn.elu(out)
  return out[0], out[1]


# ----------------------------------------------------------------------------
# One task's classifier.


def task_logits(
  kernel: str,
  query: jax.Array,
  support: jax.Array,
  support_y: jax.Array,
  support_valid: jax.Array,
  *,
  num_classes: int,
  ridge: jax.Array,
  scale: jax.Array,
  bases: jax.Array | None = None,
  phases: jax.Array | None = None,
) -> jax.Array:
  """Kernel ridge regression on a coreset, applied to queries (eq. 4-5).

  Args:
    kernel: 'rff', 'rbf' or 'linear'.
    query: `[B, F]` query features.
    support: `[M, F]` coreset features; rows with `support_valid == False`
      are empty slots and take no part (their kernel rows and targets are 0,
      so their coefficients are 0).
    support_y: `[M]` int labels.
    support_valid: `[M]` bool.
    num_classes: `C`, width of the one-hot targets.
    ridge: the ridge `lambda > 0`.
    scale: the logit scale `gamma`.
    bases, phases: `[D, F]` and `[D]`, for 'rff'.
  Returns:
    logits `[B, C]`: `gamma K(query, support) (K(support, support) + lambda I)^-1 Y`.
  """
  valid = support_valid.astype(query.dtype)
  targets = jax.nn.one_hot(support_y, num_classes, dtype=query.dtype) * valid[:, None]
  if kernel == 'rff':
    support_psi = random_fourier_features(support, bases, phases) * valid[:, None]
    query_psi = random_fourier_features(query, bases, phases)
    support_kernel, cross_kernel = support_psi @ support_psi.T, query_psi @ support_psi.T
  else:
    kernel_fn = KERNELS[kernel]
    support_kernel = kernel_fn(support, support) * valid[:, None] * valid[None, :]
    cross_kernel = kernel_fn(query, support) * valid[None, :]
  alpha = ridge_coefficients(support_kernel, targets, ridge)
  return scale * (cross_kernel @ alpha)


# ----------------------------------------------------------------------------
# The model.


class KernelContinualModel(nn.Module):
  """A shared feature extractor and one kernel classifier per task.

  Called like every jcl model, `apply(variables, x, t, train=False,
  return_features=False)`: logits `[B, C]` of each sample under its task's
  classifier (re-encoding that task's coreset, in eval mode), or
  `(logits, features)`. `fit_terms` is the training forward pass.

  Attributes:
    encoder: the configured jcl model; its `return_features` output is `h`.
    num_tasks: `T`, the number of coresets.
    num_classes: `C`, the output width.
    core_size: `M`, coreset slots per task.
    kernel: 'rff', 'rbf' or 'linear'.
    num_random_features: `D` (rff).
    ridge_lambda: initial `l_t`; the ridge is `|l_t| + RIDGE_FLOOR`.
    task_classes: per task, its output units (logits outside them are
      masked), or None.
  """

  encoder: nn.Module
  num_tasks: int
  num_classes: int
  core_size: int
  kernel: str = 'rff'
  num_random_features: int = 2048
  ridge_lambda: float = 0.1
  task_classes: heads.TaskClasses = None

  def features(self, x: jax.Array, t: jax.Array, train: bool) -> jax.Array:
    """`h(x)` `[B, F]`, L2-normalised, from the extractor (direct call)."""
    _, h = self.encoder(x, t, train=train, return_features=True)
    return normalize_features(h)

  def _create_variables(self, input_shape: tuple[int, ...], dim: int) -> None:
    """Creates the head's parameters and state (at init; a no-op afterwards)."""
    shape = (self.num_tasks, self.core_size)
    self.variable(CORESET, 'x', jnp.zeros, (*shape, *input_shape), jnp.float32)
    self.variable(CORESET, 'y', jnp.zeros, shape, jnp.int32)
    self.variable(CORESET, 'valid', jnp.zeros, shape, jnp.bool_)
    self.param('ridge', nn.initializers.constant(self.ridge_lambda), (self.num_tasks,))
    self.param('scale', nn.initializers.ones, (self.num_tasks,))
    if self.kernel == 'rff':
      d = self.num_random_features
      self.param('posterior', init_inference_net, dim)
      self.param('prior', init_inference_net, dim)
      self.variable(
        RANDOM_FEATURES,
        'phases',
        lambda: jax.random.uniform(self.make_rng('params'), (d,), maxval=2 * jnp.pi),
      )
      self.variable(
        RANDOM_FEATURES, 'noise', lambda: jax.random.normal(self.make_rng('params'), (d, dim))
      )

  def _head(self) -> dict[str, Any]:
    """The head's variables: `coreset`, `ridge`, `scale` and, for rff,
    `posterior`, `prior`, `phases`, `noise`."""
    v = {
      'coreset': {k: self.get_variable(CORESET, k) for k in ('x', 'y', 'valid')},
      'ridge': self.get_variable('params', 'ridge'),
      'scale': self.get_variable('params', 'scale'),
    }
    if self.kernel == 'rff':
      v.update({k: self.get_variable('params', k) for k in ('posterior', 'prior')})
      v.update({k: self.get_variable(RANDOM_FEATURES, k) for k in ('phases', 'noise')})
    return v

  def _classify(
    self, v: dict[str, Any], task, query, support, support_y, support_valid, noise
  ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """Task `task`'s logits for `query`, and the posterior `(mu, log_var)` (rff)."""
    ridge = jnp.abs(v['ridge'][task]) + RIDGE_FLOOR
    posterior = bases = None
    if self.kernel == 'rff':
      posterior = apply_inference_net(v['posterior'], masked_mean(support, support_valid))
      mean, log_var = posterior
      bases = mean + jnp.exp(0.5 * log_var) * noise
    logits = task_logits(
      self.kernel,
      query,
      support,
      support_y,
      support_valid,
      num_classes=self.num_classes,
      ridge=ridge,
      scale=v['scale'][task],
      bases=bases,
      phases=v.get('phases'),
    )
    return logits, posterior

  def _mask(self, logits: jax.Array, t: jax.Array) -> jax.Array:
    if self.task_classes is None:
      return logits
    table = jnp.asarray(heads.task_class_table(self.task_classes, self.num_classes))
    return heads.mask_logits(logits, table[t])

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    t: jax.Array | None = None,
    *,
    train: bool = False,
    return_features: bool = False,
  ):
    """Logits `[B, C]` of each sample under its own task's classifier."""
    t = jnp.zeros((x.shape[0],), jnp.int32) if t is None else t.astype(jnp.int32)
    h = self.features(x, t, train)
    self._create_variables(x.shape[1:], h.shape[-1])
    v = self._head()
    if self.is_initializing():
      logits = jnp.zeros((x.shape[0], self.num_classes), h.dtype)
    else:
      encoder, encoder_variables = self.encoder.unbind()
      coreset = v['coreset']

      def logits_of(task):
        def compute(_):
          _, support = encoder.apply(
            encoder_variables,
            coreset['x'][task],
            jnp.full((self.core_size,), task, jnp.int32),
            train=False,
            return_features=True,
          )
          return self._classify(
            v,
            task,
            h,
            normalize_features(support),
            coreset['y'][task],
            coreset['valid'][task],
            v.get('noise'),
          )[0]

        # Only the tasks present in the batch are computed.
        return jax.lax.cond(
          jnp.any(t == task),
          compute,
          lambda _: jnp.zeros((x.shape[0], self.num_classes), h.dtype),
          None,
        )

      per_task = jax.lax.map(logits_of, jnp.arange(self.num_tasks))  # [T, B, C]
      logits = per_task[jnp.clip(t, 0, self.num_tasks - 1), jnp.arange(x.shape[0])]
    logits = self._mask(logits, t)
    return (logits, h) if return_features else logits

  def fit_terms(self, x: jax.Array, mask: jax.Array, task: jax.Array, *, train: bool = True):
    """The training forward pass on a batch of task `task` (eq. 10).

    The batch `x` `[B, ...]` is the query set and the task's coreset (as it
    stands) the support set; both go through the extractor together, in
    training mode. The bases' noise is drawn from the rng stream 'rff' when
    given (else the fixed noise).

    Returns:
      `(logits [B, C], kl)`: the task's logits for the batch and
      `KL(q(omega | C_t) || p(omega | x))` over the real samples (`mask`);
      `kl = 0` for 'rbf' and 'linear'.
    """
    task = jnp.asarray(task, jnp.int32)
    num_queries = x.shape[0]
    v = self._head()
    coreset = {name: array[task] for name, array in v['coreset'].items()}
    both = jnp.concatenate([x, coreset['x']], axis=0)
    h = self.features(both, jnp.full((both.shape[0],), task), train)
    query, support = h[:num_queries], h[num_queries:]
    noise = v.get('noise')
    if self.kernel == 'rff' and self.has_rng(BASES_RNG):
      noise = jax.random.normal(self.make_rng(BASES_RNG), noise.shape, noise.dtype)
    logits, posterior = self._classify(
      v, task, query, support, coreset['y'], coreset['valid'], noise
    )
    kl = jnp.zeros((), h.dtype)
    if self.kernel == 'rff':
      prior = apply_inference_net(v['prior'], masked_mean(query, mask > 0))
      kl = kl_diagonal_gaussians(*posterior, *prior)
    return self._mask(logits, task), kl


def adapt_model(
  spec: specs.KCLSpec, model: nn.Module, context: base.Context
) -> KernelContinualModel:
  """Wraps the configured model: its features feed the per-task kernel classifiers."""
  return KernelContinualModel(
    encoder=model,
    num_tasks=context.num_tasks,
    num_classes=context.num_classes,
    core_size=spec.core_size,
    kernel=spec.kernel,
    num_random_features=spec.num_random_features,
    ridge_lambda=spec.ridge_lambda,
    task_classes=getattr(model, 'task_classes', None),
  )


# ----------------------------------------------------------------------------
# The coreset sampler and the algorithm.


class KCLState(NamedTuple):
  """`priority [M]`: the random priorities of the current task's coreset
  slots (`-1` for an empty slot)."""

  priority: jax.Array


def select_coreset(
  labels: jax.Array, priority: jax.Array, valid: jax.Array, size: int
) -> tuple[jax.Array, jax.Array]:
  """Class-balanced priority sampling: which `size` candidates to keep.

  Every candidate carries a uniform random priority in `[0, 1)`. Within its
  class, candidate `i` has rank `r_i` = the number of valid candidates of the
  class with a higher priority (ties broken by index). The `size` valid
  candidates of smallest `(r_i, -priority_i)` are kept: round-robin over the
  classes, each class giving its highest-priority samples. Applied to the
  coreset plus each new batch, the coreset is at every step exactly the
  selection over everything offered so far: per class a uniform sample of
  its stream (bottom-k sampling), class sizes within one of each other
  unless a class has too few samples.

  Args:
    labels: `[N]` int class of each candidate.
    priority: `[N]` float in `[0, 1)`.
    valid: `[N]` bool.
    size: slots to fill (static), `<= N`.
  Returns:
    `(indices [size], kept [size] bool)`: the candidates to store, in slot
    order, and whether slot holds a sample (False when fewer than `size`
    candidates are valid).
  """
  n = labels.shape[0]
  index = jnp.arange(n)
  ahead = (priority[None, :] > priority[:, None]) | (
    (priority[None, :] == priority[:, None]) & (index[None, :] < index[:, None])
  )
  same_class = (labels[None, :] == labels[:, None]) & valid[None, :]
  rank = jnp.sum(ahead & same_class, axis=1)
  key = jnp.where(valid, -rank.astype(jnp.float32) + priority, -jnp.inf)
  top, indices = jax.lax.top_k(key, size)
  return indices, top > -jnp.inf


def offer_to_coreset(
  coreset: dict[str, jax.Array], priority: jax.Array, batch, task, rng: jax.Array
) -> tuple[dict[str, jax.Array], jax.Array]:
  """Offers the real samples of `batch` to task `task`'s coreset (`select_coreset`).

  Args:
    coreset: the `'kcl_coreset'` collection (`x [T, M, ...]`, `y`, `valid`).
    priority: `[M]` the priorities of task `task`'s slots.
    batch: a `Batch`.
    task: int or traced int32 scalar.
    rng: a PRNG key (the batch's priorities).
  Returns:
    `(coreset, priority)`, with only task `task`'s slots changed.
  """
  slots = priority.shape[0]
  candidates = {
    'x': jnp.concatenate([coreset['x'][task], batch.x.astype(coreset['x'].dtype)]),
    'y': jnp.concatenate([coreset['y'][task], batch.y.astype(jnp.int32)]),
    'valid': jnp.concatenate([coreset['valid'][task], batch.mask > 0]),
    'priority': jnp.concatenate([priority, jax.random.uniform(rng, batch.y.shape)]),
  }
  indices, kept = select_coreset(
    candidates['y'], candidates['priority'], candidates['valid'], slots
  )
  coreset = {
    'x': coreset['x'].at[task].set(candidates['x'][indices]),
    'y': coreset['y'].at[task].set(candidates['y'][indices]),
    'valid': coreset['valid'].at[task].set(kept),
  }
  return coreset, jnp.where(kept, candidates['priority'][indices], -1.0)


def _require_kcl_model(train_state) -> None:
  if not isinstance(getattr(train_state.apply_fn, '__self__', None), KernelContinualModel):
    raise ValueError(
      'kcl trains the model returned by jcl.algorithms.adapt_model(spec, model, '
      'context) (a KernelContinualModel); build the train state from it'
    )


def make(spec: specs.KCLSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  del context  # the coresets' shapes are the model's (`adapt_model`)
  spec = spec or specs.KCLSpec()

  empty = KCLState(priority=-jnp.ones((spec.core_size,), jnp.float32))

  def init(train_state, rng):
    del train_state, rng
    return empty

  def begin_task(train_state, state: KCLState, task_id):
    """Empties task `task_id`'s coreset slots."""
    _require_kcl_model(train_state)
    model_state = dict(train_state.model_state)
    coreset = dict(model_state[CORESET])
    coreset['valid'] = coreset['valid'].at[task_id].set(False)
    model_state[CORESET] = coreset
    del state
    return train_state.replace(model_state=model_state), empty

  def step(train_state, batch, state: KCLState):
    _require_kcl_model(train_state)
    task = train_state.task
    mutable = [c for c in train_state.model_state if c not in (CORESET, RANDOM_FEATURES)]
    rngs = {
      'dropout': train_state.step_rng(DROPOUT_SALT),
      BASES_RNG: train_state.step_rng(BASES_SALT),
    }

    def loss_fn(params):
      variables = {'params': params, **train_state.model_state}
      out = train_state.apply_fn(
        variables,
        augment_lib.training_inputs(train_state.augment, batch.x, rngs['dropout']),
        batch.mask,
        task,
        train=True,
        method=KernelContinualModel.fit_terms,
        rngs=rngs,
        mutable=mutable or False,
      )
      (logits, kl), updates = out if mutable else (out, {})
      logits = base.masked_logits(logits, train_state.class_mask)
      cross_entropy = base.cross_entropy(logits, batch.y, batch.mask)
      return cross_entropy + spec.tau * kl, (logits, kl, cross_entropy, updates)

    (loss, (logits, kl, cross_entropy, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      train_state.params
    )
    train_state = base.apply_update(train_state, grads, {**train_state.model_state, **updates})
    coreset, priority = offer_to_coreset(
      train_state.model_state[CORESET],
      state.priority,
      batch,
      task,
      train_state.step_rng(INSERT_SALT),
    )
    train_state = train_state.replace(model_state={**train_state.model_state, CORESET: coreset})
    metrics = {
      'loss': loss,
      'cross_entropy': cross_entropy,
      'kl': kl,
      'accuracy': base.accuracy(logits, batch.y, batch.mask),
      'coreset_size': jnp.sum(coreset['valid'][task], dtype=jnp.int32),
    }
    return train_state, KCLState(priority), metrics

  return base.make(spec, step, init=init, begin_task=begin_task)
