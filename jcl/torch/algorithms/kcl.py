"""Kernel Continual Learning, KCL (Derakhshani et al., ICML 2021), as `jcl.algorithms.kcl`.

A shared feature extractor `h(x)` (the configured model, features
L2-normalised) and, for every task `t`, a kernel ridge-regression classifier
on a coreset `C_t = (X_C, Y_C)` of the task's samples (eq. 4-5):

    alpha_t = (K(C_t, C_t) + lambda_t I)^-1 Y_C          [M, C]
    f_t(x)  = gamma_t K(x, C_t) alpha_t                   [C]

With `kernel='rff'` the kernel is made of variational random Fourier
features `psi(h) = sqrt(2 / D) cos(Omega h + b)` whose bases
`omega_d ~ N(mu, diag(sigma^2))` are inferred from the mean coreset feature
(posterior network) and regularised towards a prior inferred from the mean
batch feature (prior network); the loss is the negative ELBO (eq. 10),

    L = CE(f_t(x), y) + tau * KL(q(omega | C_t) || p(omega | x)),

with one draw of the bases per step. 'rbf' and 'linear' have no KL term.

The model is `KernelContinualModel` (`adapt_model` wraps the configured
network), parameter for parameter the flax one: `encoder.*`, `ridge [T]`,
`scale [T]` and (rff) the inference networks `posterior.dense_i`,
`prior.dense_i` (`weight [2, F, F]`: the mean and log-variance MLPs
stacked). The coresets are buffers `kcl_coreset.{x, y, valid}` and the fixed
phases and prediction-time noise `kcl_rff.{phases, noise}`, the flax
collections of the same names, so `jcl.torch.convert` moves a whole JAX model
over. Predictions (`model(x, t)`) use each sample's own task's classifier
with the fixed noise; a training step draws fresh noise.

The coreset of the task being trained is filled by class-balanced priority
sampling (`select_coreset`) as the JAX one, from the same random priorities
given the same `RandomSource` (`uniform`, from `bits31`, is
`jax.random.uniform` bit for bit under `tests.torch.helpers.JaxRandom`).
Each step computes the loss of the batch against the coreset as it stands,
then offers the batch to the coreset. The bases' noise of a step comes from
`bases_noise(train_state, shape)`, by default torch's generator (seeded by
`jcl.torch.fit`, like dropout); the parity test passes the JAX draws.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from jcl import specs
from jcl.torch import augment as augment_lib
from jcl.torch import models as models_lib
from jcl.torch import progressive
from jcl.torch import train_state as ts_lib
from jcl.torch.algorithms import base
from jcl.torch.random import Key, RandomSource
from jcl.types import Batch

CORESET = 'kcl_coreset'
RANDOM_FEATURES = 'kcl_rff'
# The effective ridge is |l_t| + RIDGE_FLOOR (the authors' `abs(lmd) + 0.01`).
RIDGE_FLOOR = 0.01
# The coreset priorities of step s are drawn after the update, from key(s + 1, 3),
# as the JAX step's (whose dropout and bases' noise use keys (s, 1), (s, 2)).
INSERT_SALT = 3
INFERENCE_LAYERS = 3

# `(train_state, shape) -> [D, F]` standard-normal noise of the step's bases.
NoiseFn = Callable[[ts_lib.TrainState, tuple[int, ...]], torch.Tensor]


# ----------------------------------------------------------------------------
# Kernels and kernel ridge regression (eq. 4-5).


def normalize_features(h: torch.Tensor) -> torch.Tensor:
  """Rows of `h` `[N, F]` scaled to unit L2 norm; (near-)zero rows are left as
  they are, with finite gradients."""
  norm_sq = torch.sum(h * h, dim=-1, keepdim=True)
  return h * torch.rsqrt(torch.where(norm_sq > 1e-24, norm_sq, torch.ones_like(norm_sq)))


def linear_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
  """`a b^T`: `[N, F] x [M, F] -> [N, M]`."""
  return a @ b.T


def rbf_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
  """`exp(-|a_i - b_j|^2 / 2)` `[N, M]` (unit bandwidth)."""
  sq = torch.sum(a * a, -1)[:, None] + torch.sum(b * b, -1)[None, :] - 2.0 * a @ b.T
  return torch.exp(-0.5 * torch.clamp(sq, min=0.0))


KERNELS = {'linear': linear_kernel, 'rbf': rbf_kernel}


def random_fourier_features(
  h: torch.Tensor, bases: torch.Tensor, phases: torch.Tensor
) -> torch.Tensor:
  """`psi(h) = sqrt(2 / D) cos(h Omega^T + b)` `[N, D]` of features `[N, F]`,
  bases `[D, F]` and phases `[D]`."""
  return math.sqrt(2.0 / bases.shape[0]) * torch.cos(h @ bases.T + phases)


def ridge_coefficients(
  support_kernel: torch.Tensor, targets: torch.Tensor, ridge: torch.Tensor
) -> torch.Tensor:
  """`alpha = (K + ridge I)^-1 Y` `[M, C]` (eq. 4), by Cholesky; the system is
  symmetrised first, as `jax.scipy.linalg.cho_factor` does."""
  eye = torch.eye(support_kernel.shape[0], dtype=support_kernel.dtype, device=support_kernel.device)
  system = support_kernel + ridge * eye
  factor = torch.linalg.cholesky(0.5 * (system + system.T))
  return torch.cholesky_solve(targets, factor)


def kl_diagonal_gaussians(mean_q, log_var_q, mean_p, log_var_p) -> torch.Tensor:
  """`KL(N(mean_q, exp(log_var_q)) || N(mean_p, exp(log_var_p)))`, summed over dimensions."""
  var_q, var_p = torch.exp(log_var_q), torch.exp(log_var_p)
  return 0.5 * torch.sum(log_var_p - log_var_q + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0)


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
  """Mean of the rows of `h` `[N, F]` where `mask` `[N]` is set (zeros if none is)."""
  weights = mask.to(h.dtype)
  return weights @ h / torch.clamp(torch.sum(weights), min=1.0)


def task_logits(
  kernel: str,
  query: torch.Tensor,
  support: torch.Tensor,
  support_y: torch.Tensor,
  support_valid: torch.Tensor,
  *,
  num_classes: int,
  ridge: torch.Tensor,
  scale: torch.Tensor,
  bases: torch.Tensor | None = None,
  phases: torch.Tensor | None = None,
) -> torch.Tensor:
  """Logits `[B, C]` of kernel ridge regression on a coreset,
  `gamma K(query, support) (K(support, support) + lambda I)^-1 Y`; empty slots
  (`support_valid == False`) take no part (see `jcl.algorithms.kcl.task_logits`)."""
  valid = support_valid.to(query.dtype)
  targets = F.one_hot(support_y.long(), num_classes).to(query.dtype) * valid[:, None]
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
# The amortised inference network of the bases' distribution.


class InferenceNet(nn.Module):
  """`h_mean [F] -> (mu, log sigma^2)`, each `[F]`: two MLPs `Dense(F), ELU,
  Dense(F), ELU, Dense(F)` (mean, log-variance) stacked on a leading axis of 2.

  Parameters `dense_i.weight [2, F, F]` (out, in) and `dense_i.bias [2, F]`.
  """

  def __init__(self, dim: int, generator: torch.Generator | None = None):
    super().__init__()
    for i in range(INFERENCE_LAYERS):
      layer = nn.Module()
      layer.weight = nn.Parameter(torch.empty(2, dim, dim))
      layer.bias = nn.Parameter(torch.zeros(2, dim))
      setattr(self, f'dense_{i}', layer)
    for i in range(INFERENCE_LAYERS):
      for h in range(2):
        models_lib.lecun_normal_(getattr(self, f'dense_{i}').weight[h], dim, generator)

  def forward(self, h_mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.stack([h_mean, h_mean])  # [2, F]
    for i in range(INFERENCE_LAYERS):
      layer = getattr(self, f'dense_{i}')
      out = torch.einsum('hf,hgf->hg', out, layer.weight) + layer.bias
      if i < INFERENCE_LAYERS - 1:
        out = F.elu(out)
    return out[0], out[1]


class _Buffers(nn.Module):
  """A holder of buffers (the flax collection of the same name)."""

  def __init__(self, **tensors: torch.Tensor):
    super().__init__()
    for name, value in tensors.items():
      self.register_buffer(name, value)


# ----------------------------------------------------------------------------
# The model.


class KernelContinualModel(nn.Module):
  """A shared feature extractor and one kernel classifier per task.

  Called like every jcl model, `model(x, t, train=False, return_features=False)`:
  logits `[B, C]` of each sample under its own task's classifier (its
  coreset re-encoded in eval mode, the fixed noise), or `(logits, features)`.
  `fit_terms` is the training forward pass.

  Args:
    encoder: the configured `jcl.torch.models` model; its `return_features`
      output is `h`.
    input_shape: one example's shape (the coresets').
    num_tasks: `T`, the number of coresets.
    num_classes: `C`, the output width.
    core_size: `M`, coreset slots per task.
    kernel: 'rff', 'rbf' or 'linear'.
    num_random_features: `D` (rff).
    ridge_lambda: initial `l_t`; the ridge is `|l_t| + RIDGE_FLOOR`.
    task_classes: per task, its output units (logits outside are masked), or None.
    generator: seeds the inference networks, phases and noise.
  """

  def __init__(
    self,
    encoder: nn.Module,
    input_shape: tuple[int, ...],
    num_tasks: int,
    num_classes: int,
    core_size: int,
    kernel: str = 'rff',
    num_random_features: int = 2048,
    ridge_lambda: float = 0.1,
    task_classes=None,
    generator: torch.Generator | None = None,
  ):
    super().__init__()
    self.encoder = encoder
    self.num_tasks, self.num_classes, self.core_size = num_tasks, num_classes, core_size
    self.kernel = kernel
    device = next(encoder.parameters()).device
    with torch.no_grad():
      _, probe = encoder(
        torch.zeros((1, *input_shape), device=device),
        torch.zeros((1,), dtype=torch.long, device=device),
        train=False,
        return_features=True,
      )
    dim = probe.shape[-1]
    self.ridge = nn.Parameter(torch.full((num_tasks,), float(ridge_lambda)))
    self.scale = nn.Parameter(torch.ones(num_tasks))
    setattr(
      self,
      CORESET,
      _Buffers(
        x=torch.zeros((num_tasks, core_size, *input_shape)),
        y=torch.zeros((num_tasks, core_size), dtype=torch.int32),
        valid=torch.zeros((num_tasks, core_size), dtype=torch.bool),
      ),
    )
    if kernel == 'rff':
      d = num_random_features
      self.posterior = InferenceNet(dim, generator)
      self.prior = InferenceNet(dim, generator)
      setattr(
        self,
        RANDOM_FEATURES,
        _Buffers(
          phases=2 * math.pi * torch.rand((d,), generator=generator),
          noise=torch.randn((d, dim), generator=generator),
        ),
      )
    self.task_classes = None
    if task_classes is not None:
      self.task_classes = tuple(tuple(int(c) for c in classes) for classes in task_classes)
      table = torch.zeros((len(task_classes), num_classes), dtype=torch.bool)
      for k, classes in enumerate(self.task_classes):
        table[k, list(classes)] = True
      self.register_buffer('class_table', table, persistent=False)
    self.to(device)

  @property
  def coreset(self) -> _Buffers:
    """The coresets: `x [T, M, *input_shape]`, `y [T, M]` int32, `valid [T, M]` bool."""
    return getattr(self, CORESET)

  @property
  def random_features(self) -> _Buffers:
    """`phases [D]` and the prediction-time noise `noise [D, F]` (rff)."""
    return getattr(self, RANDOM_FEATURES)

  def features(self, x: torch.Tensor, t: torch.Tensor, train: bool) -> torch.Tensor:
    """`h(x)` `[B, F]`, L2-normalised."""
    _, h = self.encoder(x, t, train=train, return_features=True)
    return normalize_features(h)

  def _classify(self, task: int, query, support, support_y, support_valid, noise):
    """Task `task`'s logits for `query`, and the posterior `(mu, log_var)` (rff)."""
    ridge = torch.abs(self.ridge[task]) + RIDGE_FLOOR
    posterior = bases = phases = None
    if self.kernel == 'rff':
      posterior = self.posterior(masked_mean(support, support_valid))
      mean, log_var = posterior
      bases = mean + torch.exp(0.5 * log_var) * noise
      phases = self.random_features.phases
    logits = task_logits(
      self.kernel,
      query,
      support,
      support_y,
      support_valid,
      num_classes=self.num_classes,
      ridge=ridge,
      scale=self.scale[task],
      bases=bases,
      phases=phases,
    )
    return logits, posterior

  def _mask(self, logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if self.task_classes is None:
      return logits
    return models_lib.mask_logits(logits, self.class_table[t.clamp(0, len(self.task_classes) - 1)])

  def _noise(self) -> torch.Tensor | None:
    return self.random_features.noise if self.kernel == 'rff' else None

  def forward(
    self,
    x: torch.Tensor,
    t: torch.Tensor | None = None,
    *,
    train: bool = False,
    return_features: bool = False,
  ):
    """Logits `[B, C]` of each sample under its own task's classifier (only the
    tasks present in the batch are computed)."""
    num_samples = x.shape[0]
    t = (
      torch.zeros((num_samples,), dtype=torch.long, device=x.device)
      if t is None
      else t.long().reshape(-1)
    )
    h = self.features(x, t, train)
    task_ids = t.clamp(0, self.num_tasks - 1)
    logits = torch.zeros((num_samples, self.num_classes), dtype=h.dtype, device=h.device)
    coreset = self.coreset
    for task in torch.unique(task_ids).tolist():
      rows = task_ids == task
      support_t = torch.full((self.core_size,), task, dtype=torch.long, device=x.device)
      support = self.features(coreset.x[task], support_t, False)
      logits[rows] = self._classify(
        task, h[rows], support, coreset.y[task], coreset.valid[task], self._noise()
      )[0]
    logits = self._mask(logits, t)
    return (logits, h) if return_features else logits

  def fit_terms(
    self,
    x: torch.Tensor,
    mask: torch.Tensor,
    task: int,
    *,
    train: bool = True,
    noise: torch.Tensor | None = None,
  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The training forward pass on a batch of task `task` (eq. 10).

    The batch `x` `[B, ...]` is the query set and the task's coreset (as it
    stands) the support set; both go through the extractor together.

    Args:
      x, mask: the batch's inputs and its real samples `[B]`.
      task: the task id.
      train: the extractor's mode (dropout, BatchNorm).
      noise: `[D, F]` standard-normal noise of the bases (rff; default the
        fixed prediction-time noise).
    Returns:
      `(logits [B, C], kl)`: the task's logits and
      `KL(q(omega | C_t) || p(omega | x))` over the real samples; `kl = 0`
      for 'rbf' and 'linear'.
    """
    coreset = self.coreset
    num_queries = x.shape[0]
    both = torch.cat([x, coreset.x[task].to(x.dtype)], dim=0)
    h = self.features(
      both, torch.full((both.shape[0],), task, dtype=torch.long, device=x.device), train
    )
    query, support = h[:num_queries], h[num_queries:]
    noise = self._noise() if noise is None else noise
    logits, posterior = self._classify(
      task, query, support, coreset.y[task], coreset.valid[task], noise
    )
    kl = torch.zeros((), dtype=h.dtype, device=h.device)
    if self.kernel == 'rff':
      prior = self.prior(masked_mean(query, mask > 0))
      kl = kl_diagonal_gaussians(*posterior, *prior)
    task_t = torch.full((num_queries,), task, dtype=torch.long, device=x.device)
    return self._mask(logits, task_t), kl


def adapt_model(
  spec: specs.KCLSpec, model: nn.Module, context: base.Context
) -> KernelContinualModel:
  """Wraps the configured model: its features feed the per-task kernel
  classifiers. The new weights (inference networks, phases, noise) are drawn
  from a generator seeded by `model`'s weights (so by the run's seed)."""
  head = getattr(model, 'head', None)
  return KernelContinualModel(
    model,
    tuple(context.input_shape),
    num_tasks=context.num_tasks,
    num_classes=context.num_classes,
    core_size=spec.core_size,
    kernel=spec.kernel,
    num_random_features=spec.num_random_features,
    ridge_lambda=spec.ridge_lambda,
    task_classes=getattr(head, 'task_classes', None),
    generator=progressive.generator_from_weights(model),
  )


# ----------------------------------------------------------------------------
# The coreset sampler and the algorithm.


class KCLState(NamedTuple):
  """`priority [M]`: the random priorities of the current task's coreset
  slots (`-1` for an empty slot)."""

  priority: torch.Tensor


def uniform(source: RandomSource, key: Key, num: int) -> torch.Tensor:
  """`[num]` float32 uniform on `[0, 1)` with 23 random bits: the top 23 of
  `bits31`, i.e. `jax.random.uniform(key, (num,))` for a source reproducing
  `jax.random.bits`."""
  return (source.bits31(key, num) >> 8).to(torch.float32) * (2.0**-23)


def select_coreset(
  labels: torch.Tensor, priority: torch.Tensor, valid: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
  """Class-balanced priority sampling: which `size` candidates to keep
  (`jcl.algorithms.kcl.select_coreset`).

  Candidate `i` has rank `r_i` = the number of valid candidates of its class
  with a higher priority (ties by index); the `size` valid candidates of
  smallest `(r_i, -priority_i)` are kept, in that order (ties by index, as
  `lax.top_k`).

  Returns:
    `(indices [size], kept [size] bool)`.
  """
  index = torch.arange(labels.shape[0], device=labels.device)
  ahead = (priority[None, :] > priority[:, None]) | (
    (priority[None, :] == priority[:, None]) & (index[None, :] < index[:, None])
  )
  same_class = (labels[None, :] == labels[:, None]) & valid[None, :]
  rank = torch.sum(ahead & same_class, dim=1)
  key = torch.where(valid, -rank.to(torch.float32) + priority, torch.full_like(priority, -math.inf))
  top, indices = torch.sort(key, descending=True, stable=True)
  return indices[:size], top[:size] > -math.inf


@torch.no_grad()
def offer_to_coreset(
  model: KernelContinualModel,
  priority: torch.Tensor,
  batch: Batch,
  task: int,
  source: RandomSource,
  key: Key,
) -> torch.Tensor:
  """Offers the real samples of `batch` to task `task`'s coreset (in place).

  Returns:
    the new priorities `[M]` of the task's slots.
  """
  coreset = model.coreset
  device = coreset.x.device
  candidates_x = torch.cat([coreset.x[task], batch.x.to(coreset.x.dtype)])
  candidates_y = torch.cat([coreset.y[task], batch.y.to(coreset.y.dtype)])
  candidates_valid = torch.cat([coreset.valid[task], batch.mask > 0])
  candidates_priority = torch.cat([priority, uniform(source, key, batch.y.shape[0]).to(device)])
  indices, kept = select_coreset(
    candidates_y, candidates_priority, candidates_valid, priority.shape[0]
  )
  coreset.x[task] = candidates_x[indices]
  coreset.y[task] = candidates_y[indices]
  coreset.valid[task] = kept
  return torch.where(kept, candidates_priority[indices], torch.full_like(priority, -1.0))


def _require_kcl_model(train_state) -> KernelContinualModel:
  if not isinstance(train_state.model, KernelContinualModel):
    raise ValueError(
      'kcl trains the model returned by jcl.torch.algorithms.adapt_model(spec, '
      'model, context) (a KernelContinualModel); build the train state from it'
    )
  return train_state.model


def _new_batch_stats(train_state) -> dict[str, torch.Tensor]:
  """The BatchNorm statistics of the last training forward (`apply_model`'s)."""
  stats = {}
  for name, layer in train_state.norm_layers:
    if layer.new_stats is not None:
      prefix = f'{name}.' if name else ''
      stats[prefix + 'running_mean'], stats[prefix + 'running_var'] = layer.new_stats
      layer.new_stats = None
  return stats


def standard_normal_noise(train_state: ts_lib.TrainState, shape: tuple[int, ...]) -> torch.Tensor:
  """The bases' noise of a step, from torch's generator (as dropout)."""
  return torch.randn(shape, device=train_state.device)


def make(
  spec: specs.KCLSpec | None = None,
  context: base.Context | None = None,
  *,
  bases_noise: NoiseFn = standard_normal_noise,
) -> base.Algorithm:
  """KCL; `bases_noise(train_state, (D, F))` draws each step's noise of the
  random bases (rff)."""
  del context  # the coresets' shapes are the model's (`adapt_model`)
  spec = spec or specs.KCLSpec()

  def empty(train_state) -> KCLState:
    return KCLState(
      priority=-torch.ones((spec.core_size,), dtype=torch.float32, device=train_state.device)
    )

  def init(train_state, rng=None):
    del rng
    return empty(train_state)

  def begin_task(train_state, state: KCLState, task_id):
    """Empties task `task_id`'s coreset slots."""
    model = _require_kcl_model(train_state)
    del state
    model.coreset.valid[int(task_id)] = False
    return train_state, empty(train_state)

  def step(train_state, batch: Batch, state: KCLState):
    model = _require_kcl_model(train_state)
    task = train_state.task
    noise = None
    if spec.kernel == 'rff':
      noise = bases_noise(train_state, tuple(model.random_features.noise.shape))
    x = augment_lib.training_inputs(train_state, batch.x)
    logits, kl = model.fit_terms(x, batch.mask, task, train=True, noise=noise)
    logits = base.masked_logits(logits, train_state.class_mask)
    cross_entropy = base.cross_entropy(logits, batch.y, batch.mask)
    loss = cross_entropy + spec.tau * kl
    grads = base.grad(loss, train_state)
    train_state = base.apply_update(train_state, grads, _new_batch_stats(train_state))
    priority = offer_to_coreset(
      model, state.priority, batch, task, train_state.rng, train_state.step_key(INSERT_SALT)
    )
    metrics = {
      'loss': loss.detach(),
      'cross_entropy': cross_entropy.detach(),
      'kl': kl.detach(),
      'accuracy': base.accuracy(logits.detach(), batch.y, batch.mask),
      'coreset_size': torch.sum(model.coreset.valid[task]).to(torch.int32),
    }
    return train_state, KCLState(priority), metrics

  return base.make(spec, step, init=init, begin_task=begin_task)
