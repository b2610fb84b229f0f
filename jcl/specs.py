"""Algorithm and optimizer specifications: hyperparameters, paper defaults, checks.

One frozen dataclass per algorithm. A spec is plain data: it imports neither
JAX nor PyTorch, so both backends build the same algorithm from it. Every
spec validates itself on construction and raises a `ValueError` that names
the offending field.

  >>> spec = make_spec('ewc', ewc_lambda=100.0)
  >>> spec.name
  'ewc'
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Mapping

import numpy as np


def _check(condition: bool, spec_name: str, field: str, message: str) -> None:
  if not condition:
    raise ValueError(f'{spec_name}: invalid {field!r}: {message}')


def _finite(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# Algorithm name -> spec class, filled by `@register_spec` as the classes below
# are defined (and by any spec registered later, e.g. in a test).
SPECS: dict[str, type[AlgorithmSpec]] = {}


def register_spec(cls: type[AlgorithmSpec]) -> type[AlgorithmSpec]:
  """Adds a spec class to the registry (a class decorator).

  Its implementations are found by name: `jcl.algorithms.<cls.name>` and
  `jcl.torch.algorithms.<cls.name>`, each with a `make(spec, context=None)`.
  """
  if not cls.name:
    raise ValueError(f'{cls.__name__} has no name')
  if cls.name in SPECS and SPECS[cls.name] is not cls:
    raise ValueError(f'an algorithm named {cls.name!r} is already registered')
  SPECS[cls.name] = cls
  return cls


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
  """Base class: every spec has a registry `name` and validates itself.

  The class attributes and `end_task_samples` declare what the training loops
  of both backends must do for the method (no probing of the spec's fields).
  """

  name: ClassVar[str] = ''
  # Does the training stream of task k hold the data of tasks 0..k (Joint)?
  cumulative_data: ClassVar[bool] = False
  # The scenarios the method makes sense in ('task', 'domain', 'class').
  scenarios: ClassVar[tuple[str, ...]] = ('task', 'domain', 'class')
  # Does `end_task` read the finished task's data? The loop builds that data
  # (a padded copy of the task's training split) only then, else passes None.
  uses_task_data: ClassVar[bool] = False

  def __post_init__(self):
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)):
        _check(_finite(value), self.name, f.name, f'must be a finite number, got {value!r}')
    self.validate()

  def validate(self) -> None:
    """Checks field values; subclasses raise `ValueError` naming the field."""

  def _non_negative(self, *fields: str) -> None:
    for field in fields:
      value = getattr(self, field)
      _check(_finite(value) and value >= 0, self.name, field, f'must be >= 0, got {value!r}')

  def _positive(self, *fields: str) -> None:
    for field in fields:
      value = getattr(self, field)
      _check(_finite(value) and value > 0, self.name, field, f'must be > 0, got {value!r}')

  def _in_unit_interval(self, *fields: str) -> None:
    for field in fields:
      value = getattr(self, field)
      _check(
        _finite(value) and 0 <= value <= 1, self.name, field, f'must be in [0, 1], got {value!r}'
      )

  def regime(
    self, model_config: Mapping[str, Any], optimizer: OptimizerSpec, train_config: Any
  ) -> tuple[dict[str, Any], OptimizerSpec, Any]:
    """`(model_config, optimizer, train_config)` under the method's training
    regime, on both backends (`RunSpec.regime`); unchanged by default (Stable
    SGD sets dropout, the per-task learning-rate decay and the batch size)."""
    return dict(model_config), optimizer, train_config

  def end_task_samples(self, default: int | None) -> int | None:
    """How many of the task's training samples `end_task` gets (None = all);
    `default` is the loop's (`TrainConfig.importance_samples`)."""
    return default

  def to_dict(self) -> dict[str, Any]:
    return {'name': self.name, **dataclasses.asdict(self)}


@register_spec
@dataclasses.dataclass(frozen=True)
class NaiveSpec(AlgorithmSpec):
  """Fine-tuning: plain SGD on each task in turn (the lower bound)."""

  name: ClassVar[str] = 'naive'


@register_spec
@dataclasses.dataclass(frozen=True)
class JointSpec(AlgorithmSpec):
  """Joint training: task k trains on the union of tasks 0..k (the upper bound)."""

  name: ClassVar[str] = 'joint'
  cumulative_data: ClassVar[bool] = True


@register_spec
@dataclasses.dataclass(frozen=True)
class EWCSpec(AlgorithmSpec):
  """Elastic Weight Consolidation (Kirkpatrick et al. 2017), and online EWC.

  Penalty `ewc_lambda / 2 * sum_i F_i (theta_i - theta*_i)^2` (eq. 3).

  Attributes:
    ewc_lambda: strength of the penalty.
    online: online EWC (Schwarz et al. 2018, "Progress & Compress"): one
      running Fisher `F <- gamma * F + F_t`, anchored at the latest task's
      solution. Otherwise one penalty per past task (their sum is kept exactly
      as one quadratic, so the state has a fixed size).
    gamma: decay of the running Fisher in online mode (1 = no decay).
    fisher: 'empirical' (squared per-sample gradients of the log-likelihood
      of the true labels) or 'true' (expectation over the model's predictive
      distribution: `sum_c p_c (grad log p_c)^2`, exact, no sampling).
    importance_samples: samples of the task's training set used to estimate
      the Fisher (None = all).
  """

  name: ClassVar[str] = 'ewc'
  uses_task_data: ClassVar[bool] = True  # the Fisher is estimated on it
  ewc_lambda: float = 100.0
  online: bool = False
  gamma: float = 1.0
  fisher: str = 'empirical'
  importance_samples: int | None = None

  def validate(self):
    self._non_negative('ewc_lambda')
    self._in_unit_interval('gamma')
    _check(
      self.fisher in ('empirical', 'true'),
      self.name,
      'fisher',
      f"must be 'empirical' or 'true', got {self.fisher!r}",
    )
    _check(
      self.importance_samples is None
      or (isinstance(self.importance_samples, int) and self.importance_samples > 0),
      self.name,
      'importance_samples',
      f'must be None or > 0, got {self.importance_samples!r}',
    )

  def end_task_samples(self, default: int | None) -> int | None:
    """`importance_samples` when set, else the loop's `default`."""
    return default if self.importance_samples is None else self.importance_samples


@register_spec
@dataclasses.dataclass(frozen=True)
class SISpec(AlgorithmSpec):
  """Synaptic Intelligence (Zenke, Poole & Ganguli 2017).

  Importance `Omega += omega / (Delta^2 + xi)` at each task end (eq. 5), with
  the path integral `omega = -sum_steps g * delta_theta` of the unregularised
  loss gradient; penalty `si_lambda * sum Omega (theta - theta*)^2` (eq. 4,
  the paper's `c`).
  """

  name: ClassVar[str] = 'si'
  si_lambda: float = 0.1
  xi: float = 0.1

  def validate(self):
    self._non_negative('si_lambda')
    self._positive('xi')


@register_spec
@dataclasses.dataclass(frozen=True)
class MASSpec(AlgorithmSpec):
  """Memory Aware Synapses (Aljundi et al. 2018).

  Importance `Omega = 1/N sum_k |d ||f(x_k)||_2^2 / d theta|` (eq. 4), over
  the finished task's data, accumulated over tasks; penalty
  `mas_lambda * sum Omega (theta - theta*)^2` (eq. 3).
  """

  name: ClassVar[str] = 'mas'
  uses_task_data: ClassVar[bool] = True  # the importance is estimated on it
  mas_lambda: float = 1.0
  importance_samples: int | None = None

  def validate(self):
    self._non_negative('mas_lambda')
    _check(
      self.importance_samples is None or self.importance_samples > 0,
      self.name,
      'importance_samples',
      'must be None or > 0',
    )

  def end_task_samples(self, default: int | None) -> int | None:
    """`importance_samples` when set, else the loop's `default`."""
    return default if self.importance_samples is None else self.importance_samples


@register_spec
@dataclasses.dataclass(frozen=True)
class LFLSpec(AlgorithmSpec):
  """Less-Forgetful Learning (Jung et al., AAAI 2018; arXiv:1711.05959).

  The last layer is frozen after the first task (bit for bit), and the loss
  is `CE + lfl_lambda * L_e` with the paper's Euclidean loss
  `L_e = 1/2 ||h(x; theta) - h(x; theta_old)||_2^2` (batch mean) between the
  penultimate features, in evaluation mode, of the current model and of the
  model at the end of the previous task, on the current inputs.
  `lfl_lambda` is the paper's lambda_e (lambda_c = 1); with the 1/2 it means
  half what it did before (old 0.1 = new 0.2).
  """

  name: ClassVar[str] = 'lfl'
  lfl_lambda: float = 1.0

  def validate(self):
    self._non_negative('lfl_lambda')


# The replay buffer's insertion policies; `buffer.POLICIES` of each backend
# maps exactly these names to its implementation.
REPLAY_POLICIES = ('reservoir', 'class_balanced', 'per_task')


@register_spec
@dataclasses.dataclass(frozen=True)
class ERSpec(AlgorithmSpec):
  """Experience Replay (Chaudhry et al. 2019, "On tiny episodic memories").

  Every step trains on the current batch concatenated with `replay_batch_size`
  samples drawn from a buffer of `memory_size`, then offers the current batch
  to the buffer (reservoir sampling by default).
  """

  name: ClassVar[str] = 'er'
  memory_size: int = 200
  replay_batch_size: int = 10
  policy: str = 'reservoir'

  def validate(self):
    _check_replay(self)


def _check_replay(spec) -> None:
  for field in ('memory_size', 'replay_batch_size'):
    value = getattr(spec, field)
    _check(
      isinstance(value, int) and not isinstance(value, bool) and value >= 1,
      spec.name,
      field,
      f'must be an integer >= 1, got {value!r}',
    )
  if hasattr(spec, 'policy'):  # ER and ER-ACE choose their buffer's policy
    _check(
      spec.policy in REPLAY_POLICIES,
      spec.name,
      'policy',
      f'must be one of {REPLAY_POLICIES}, got {spec.policy!r}',
    )


@register_spec
@dataclasses.dataclass(frozen=True)
class DERSpec(AlgorithmSpec):
  """Dark Experience Replay (Buzzega et al. 2020), eq. 4.

  `loss = CE(current) + alpha * ||f(x') - z'||^2` on buffer samples `(x', z')`
  whose logits `z'` were stored when they entered the (reservoir) buffer.
  Defaults: the paper's Seq-MNIST setting with a buffer of 200.
  """

  name: ClassVar[str] = 'der'
  memory_size: int = 200
  replay_batch_size: int = 10
  alpha: float = 0.2

  def validate(self):
    _check_replay(self)
    self._non_negative('alpha')


@register_spec
@dataclasses.dataclass(frozen=True)
class DERPPSpec(AlgorithmSpec):
  """DER++ (Buzzega et al. 2020), eq. 6: DER plus `beta * CE(f(x''), y'')` on a
  second buffer sample with its stored labels."""

  name: ClassVar[str] = 'derpp'
  memory_size: int = 200
  replay_batch_size: int = 10
  alpha: float = 0.2
  beta: float = 1.0

  def validate(self):
    _check_replay(self)
    self._non_negative('alpha', 'beta')


@register_spec
@dataclasses.dataclass(frozen=True)
class AGEMSpec(AlgorithmSpec):
  """Averaged GEM (Chaudhry et al. 2019, "Efficient lifelong learning with A-GEM").

  The gradient is projected (eq. 11) when it conflicts with the gradient
  `g_ref` of `memory_batch_size` samples of the episodic memory of previous
  tasks (`memory_per_task` samples per task).
  """

  name: ClassVar[str] = 'agem'
  memory_per_task: int = 250
  memory_batch_size: int = 256

  def validate(self):
    for field in ('memory_per_task', 'memory_batch_size'):
      value = getattr(self, field)
      _check(
        isinstance(value, int) and value >= 1,
        self.name,
        field,
        f'must be an integer >= 1, got {value!r}',
      )


@register_spec
@dataclasses.dataclass(frozen=True)
class GEMSpec(AlgorithmSpec):
  """Gradient Episodic Memory (Lopez-Paz & Ranzato 2017).

  One constraint `<g, g_k> >= 0` per previous task k (gradient on its
  episodic memory of `memory_per_task` samples); a violating gradient is
  replaced by the closest one satisfying them all, through the dual QP
  (eq. 10-12) solved inside JAX. `margin` is the lower bound on the dual
  variables (`memory_strength` in the authors' code, 0.5 there; 0 is the
  paper's QP). `solver_iterations` bounds the active-set steps of the exact
  dual solver (None: `3 T + 10`, ample for T previous tasks).
  """

  name: ClassVar[str] = 'gem'
  memory_per_task: int = 256
  margin: float = 0.5
  solver_iterations: int | None = None

  def validate(self):
    _check(
      isinstance(self.memory_per_task, int) and self.memory_per_task >= 1,
      self.name,
      'memory_per_task',
      f'must be an integer >= 1, got {self.memory_per_task!r}',
    )
    self._non_negative('margin')
    _check(
      self.solver_iterations is None
      or (isinstance(self.solver_iterations, int) and self.solver_iterations >= 1),
      self.name,
      'solver_iterations',
      f'must be None or an integer >= 1, got {self.solver_iterations!r}',
    )


@register_spec
@dataclasses.dataclass(frozen=True)
class LaMAMLSpec(AlgorithmSpec):
  """La-MAML: look-ahead meta-learning (Gupta, Yadav & Paull 2020), Alg. 1-2.

  Per glance of each incoming batch: `k` single-sample inner SGD steps on
  the current batch with per-parameter learning rates `relu(alpha)` (eq. 4),
  then the meta-loss on current + replayed samples at the looked-ahead
  weights; the learning rates take an SGD step of `alpha_lr` on its gradient
  first, then the weights `theta -= relu(alpha) * g_meta` (asynchronous,
  eq. 11) or an optimizer step (`sync_update`). Variants:
  C-MAML = `sync_update=True, learn_lr=False`; Sync-La-MAML =
  `sync_update=True, learn_lr=True`.

  Attributes:
    memory_size: reservoir buffer size.
    replay_batch_size: replayed samples added to each meta-batch.
    glances: meta-updates per incoming batch (samples enter the buffer once,
      on the first glance).
    alpha_init: initial value of every learning rate.
    alpha_lr: learning rate of the learning rates (eta in the paper).
    learn_lr: update the learning rates (False: they stay at `alpha_init`).
    sync_update: weights take a step of the run's optimizer on the
      meta-gradient instead of `relu(alpha) * g`.
    second_order: differentiate through the inner updates (True) or treat
      the inner gradients as constants (first order, the authors' default).
    grad_clip_norm: clip the meta-gradients' global norm, separately for the
      weights and the learning rates (None: no clipping).
    inner_grad_clip: clamp each inner-gradient element to +-this (None: no
      clamp; the authors' code computes the clamp and discards it).
  """

  name: ClassVar[str] = 'lamaml'
  scenarios: ClassVar[tuple[str, ...]] = ('task', 'domain', 'class')
  memory_size: int = 200
  replay_batch_size: int = 10
  glances: int = 5
  alpha_init: float = 0.15
  alpha_lr: float = 0.3
  learn_lr: bool = True
  sync_update: bool = False
  second_order: bool = False
  grad_clip_norm: float | None = 2.0
  inner_grad_clip: float | None = None

  def validate(self):
    _check_replay(self)
    _check(
      isinstance(self.glances, int) and self.glances >= 1,
      self.name,
      'glances',
      f'must be an integer >= 1, got {self.glances!r}',
    )
    self._non_negative('alpha_init', 'alpha_lr')
    for field in ('grad_clip_norm', 'inner_grad_clip'):
      value = getattr(self, field)
      _check(
        value is None or (_finite(value) and value > 0),
        self.name,
        field,
        f'must be None or > 0, got {value!r}',
      )


@register_spec
@dataclasses.dataclass(frozen=True)
class MCSGDSpec(AlgorithmSpec):
  """Mode-Connectivity SGD (Mirzadeh et al. 2021, "Linear mode connectivity
  in multitask and continual learning"), Sec. 4.

  Each task trains continually from the previous MC-SGD solution `w_prev`
  to `w_task`; then, from `w_prev + lmc_init_position * (w_task - w_prev)`,
  `lmc_epochs` passes of SGD(`lmc_lr`, `lmc_momentum`) on batches of
  `lmc_batch_size` follow the gradient of the loss averaged over the
  `lmc_line_samples` points `tau = 1/n .. 1` of each segment `w_end + tau
  (w - w_end)` to `w_prev` and to `w_task` (the authors' grid of n + 1 points
  without its fixed end `tau = 0`, whose loss does not depend on w); the
  previous tasks' episodic memory on the first segment, the current task's
  `memory_per_task` memory samples on the second (jcl/algorithms/mcsgd.py).

  Attributes:
    memory_per_task: episodic-memory samples kept per task.
    lmc_lr: learning rate of the mode-connectivity phase.
    lmc_momentum: its SGD momentum.
    lmc_batch_size: samples per segment in each of its steps.
    lmc_init_position: where on the segment `w_prev -> w_task` it starts.
    lmc_line_samples: points evaluated (vmapped) on each segment.
    lmc_epochs: passes over the larger of the two segments' data.
  """

  name: ClassVar[str] = 'mcsgd'
  uses_task_data: ClassVar[bool] = True  # the task's memory is drawn from it
  memory_per_task: int = 100
  lmc_lr: float = 0.05
  lmc_momentum: float = 0.8
  lmc_batch_size: int = 64
  lmc_init_position: float = 0.1
  lmc_line_samples: int = 10
  lmc_epochs: int = 1

  def validate(self):
    for field in ('memory_per_task', 'lmc_batch_size', 'lmc_line_samples', 'lmc_epochs'):
      value = getattr(self, field)
      _check(
        isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        self.name,
        field,
        f'must be an integer >= 1, got {value!r}',
      )
    self._positive('lmc_lr')
    self._in_unit_interval('lmc_init_position')
    _check(
      _finite(self.lmc_momentum) and 0 <= self.lmc_momentum < 1,
      self.name,
      'lmc_momentum',
      f'must be in [0, 1), got {self.lmc_momentum!r}',
    )


@register_spec
@dataclasses.dataclass(frozen=True)
class StableSGDSpec(AlgorithmSpec):
  """Stable SGD (Mirzadeh et al. 2020, "Understanding the role of training
  regimes in continual learning"): Naive training under a regime of dropout,
  a per-task learning-rate decay and small batches (Sec. 4).

  Attributes:
    dropout: dropout rate of the model's hidden layers.
    lr_decay: the learning rate of task k is `lr * lr_decay**k`.
    min_lr: floor of the decayed learning rate.
    batch_size: training batch size.
  """

  name: ClassVar[str] = 'stable_sgd'
  dropout: float = 0.25
  lr_decay: float = 0.8
  min_lr: float = 0.0
  batch_size: int = 10

  def validate(self):
    _check(
      _finite(self.dropout) and 0 <= self.dropout < 1,
      self.name,
      'dropout',
      f'must be in [0, 1), got {self.dropout!r}',
    )
    _check(
      _finite(self.lr_decay) and 0 < self.lr_decay <= 1,
      self.name,
      'lr_decay',
      f'must be in (0, 1], got {self.lr_decay!r}',
    )
    self._non_negative('min_lr')
    _check(
      isinstance(self.batch_size, int) and self.batch_size >= 1,
      self.name,
      'batch_size',
      f'must be an integer >= 1, got {self.batch_size!r}',
    )

  def regime(
    self, model_config: Mapping[str, Any], optimizer: OptimizerSpec, train_config: Any
  ) -> tuple[dict[str, Any], OptimizerSpec, Any]:
    """`(model_config, optimizer, train_config)` under this regime: the model's
    `dropout`, the optimizer's `lr_decay` and `min_lr`, the loop's `batch_size`
    come from the spec, everything else is kept (`train_config` is the
    loop's `TrainConfig` dataclass)."""
    model_config = {**dict(model_config), 'dropout': self.dropout}
    optimizer = dataclasses.replace(optimizer, lr_decay=self.lr_decay, min_lr=self.min_lr)
    train_config = dataclasses.replace(train_config, batch_size=self.batch_size)
    return model_config, optimizer, train_config


KCL_KERNELS = ('rff', 'rbf', 'linear')


@register_spec
@dataclasses.dataclass(frozen=True)
class KCLSpec(AlgorithmSpec):
  """Kernel Continual Learning (Derakhshani et al. 2021).

  A task-specific kernel ridge-regression classifier on the shared feature
  extractor's features (eq. 4-5), fitted on a coreset of `core_size` samples
  per task kept for inference; with `kernel='rff'` the kernel comes from
  `num_random_features` variational random Fourier features whose posterior
  is inferred from the coreset, trained with the ELBO (eq. 10): the
  cross-entropy of the batch under the coreset classifier plus `tau` times
  KL(posterior from the coreset || prior from the batch), as in the
  authors' code (jcl/algorithms/kcl.py).

  Attributes:
    kernel: 'rff' (variational random Fourier features), 'rbf' (Gaussian,
      unit bandwidth on the normalised features) or 'linear'.
    core_size: coreset slots per task, shared equally by the task's classes
      (the authors' MNIST convention; 20 per class = 20 * classes).
    num_random_features: D, the number of random bases (rff only).
    ridge_lambda: initial ridge of every task's classifier; the ridge is
      learnt per task as `|l_t| + 0.01`, as in the authors' code.
    tau: weight of the KL term (rff only).
  """

  name: ClassVar[str] = 'kcl'
  scenarios: ClassVar[tuple[str, ...]] = ('task',)
  kernel: str = 'rff'
  core_size: int = 20
  num_random_features: int = 2048
  ridge_lambda: float = 0.1
  tau: float = 0.01

  def validate(self):
    _check(
      self.kernel in KCL_KERNELS,
      self.name,
      'kernel',
      f'must be one of {KCL_KERNELS}, got {self.kernel!r}',
    )
    for field in ('core_size', 'num_random_features'):
      value = getattr(self, field)
      _check(
        isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        self.name,
        field,
        f'must be an integer >= 1, got {value!r}',
      )
    self._positive('ridge_lambda')
    self._non_negative('tau')


@register_spec
@dataclasses.dataclass(frozen=True)
class PNNSpec(AlgorithmSpec):
  """Progressive Neural Networks (Rusu et al. 2016), eq. 1-2.

  One column per task; column k takes lateral inputs from the hidden layers
  of the frozen columns 0..k-1 (through `adapter='linear'` or the paper's
  non-linear 'mlp' adapters). Earlier columns never change.
  """

  name: ClassVar[str] = 'pnn'
  scenarios: ClassVar[tuple[str, ...]] = ('task',)
  adapter: str = 'linear'

  def validate(self):
    _check(
      self.adapter in ('linear', 'mlp'),
      self.name,
      'adapter',
      f"must be 'linear' or 'mlp', got {self.adapter!r}",
    )


@register_spec
@dataclasses.dataclass(frozen=True)
class RWalkSpec(AlgorithmSpec):
  """Riemannian Walk (Chaudhry et al. 2018), as Avalanche's `RWalkPlugin`.

  A running (EWC++) empirical Fisher `F <- ewc_alpha g^2 + (1 - ewc_alpha) F`
  of the mini-batch gradient (eq. 6), a path-integral score accumulated every
  `delta_t` steps with the Fisher-normalised denominator (eq. 7), merged per
  task and normalised to [0, 1]; penalty
  `ewc_lambda * sum (F + S) (theta - theta*)^2` (eq. 8). Defaults: Avalanche's
  (its Split MNIST task-IL baseline).
  """

  name: ClassVar[str] = 'rwalk'
  ewc_lambda: float = 0.1
  ewc_alpha: float = 0.9
  delta_t: int = 10

  def validate(self):
    self._non_negative('ewc_lambda')
    self._in_unit_interval('ewc_alpha')
    _check(
      isinstance(self.delta_t, int) and not isinstance(self.delta_t, bool) and self.delta_t >= 1,
      self.name,
      'delta_t',
      f'must be an integer >= 1, got {self.delta_t!r}',
    )


@register_spec
@dataclasses.dataclass(frozen=True)
class MIRSpec(AlgorithmSpec):
  """Maximally Interfered Retrieval (Aljundi et al. 2019), ER-MIR.

  A reservoir buffer of `memory_size`; each step draws `mir_candidates`
  memories, scores each by the increase of its loss under a virtual SGD step
  on the current batch, and replays the `replay_batch_size` highest with the
  current batch (as ER).
  """

  name: ClassVar[str] = 'mir'
  memory_size: int = 200
  replay_batch_size: int = 10
  mir_candidates: int = 50

  def validate(self):
    _check_replay(self)
    value = self.mir_candidates
    _check(
      isinstance(value, int) and not isinstance(value, bool) and value >= self.replay_batch_size,
      self.name,
      'mir_candidates',
      f'must be an integer >= replay_batch_size ({self.replay_batch_size}), got {value!r}',
    )


@register_spec
@dataclasses.dataclass(frozen=True)
class LwFSpec(AlgorithmSpec):
  """Learning without Forgetting (Li & Hoiem 2016), as Avalanche's `LwF` plugin.

  `loss = CE + alpha_k * KL(softmax(z_old / T) || softmax(z / T))` on the output
  units of the classes of the tasks before k (batch mean, no T^2 factor, as
  Avalanche), `z_old` the logits of the model kept at the previous `end_task`.
  Single-head (class- and domain-incremental) only: Avalanche distils each
  previous head of a multi-head model, which jcl's heads do not expose.

  Attributes:
    alpha: the distillation strength of each task: task k uses
      `alpha[min(k, len(alpha) - 1)]` (one value: a constant; a number is
      taken as one value). Avalanche's baselines on Split MNIST:
      (0, 0.5, 1.33, 2.25, 3.2).
    temperature: T of the softened softmaxes.
  """

  name: ClassVar[str] = 'lwf'
  scenarios: ClassVar[tuple[str, ...]] = ('domain', 'class')
  alpha: tuple[float, ...] = (1.0,)
  temperature: float = 2.0

  def __post_init__(self):
    alpha = self.alpha
    if isinstance(alpha, (list, tuple)):
      object.__setattr__(self, 'alpha', tuple(alpha))
    elif _finite(alpha):
      object.__setattr__(self, 'alpha', (alpha,))
    super().__post_init__()
    object.__setattr__(self, 'alpha', tuple(float(a) for a in self.alpha))

  def validate(self):
    _check(
      isinstance(self.alpha, tuple)
      and len(self.alpha) >= 1
      and all(_finite(a) and a >= 0 for a in self.alpha),
      self.name,
      'alpha',
      f'must be a number >= 0 or a non-empty sequence of them (one a task), got {self.alpha!r}',
    )
    self._positive('temperature')

  def alpha_for_task(self, task_id: int) -> float:
    """`alpha[min(task_id, len(alpha) - 1)]`."""
    return self.alpha[min(int(task_id), len(self.alpha) - 1)]


@register_spec
@dataclasses.dataclass(frozen=True)
class ERACESpec(AlgorithmSpec):
  """ER-ACE (Caccia et al. 2022, "New Insights on Reducing Abrupt
  Representation Change in Online CL"), as Mammoth's `er_ace`.

  Reservoir replay as ER, with the asymmetric cross-entropy: from the second
  task on, the current batch's cross-entropy masks the output units of the
  classes seen before that are not in the batch (Mammoth: units of the
  batch's classes and of classes >= the largest seen stay); the replayed
  batch (`replay_batch_size` samples of a buffer of `memory_size`) has its
  own cross-entropy over every unit the loop allows, added to it.
  """

  name: ClassVar[str] = 'er_ace'
  memory_size: int = 200
  replay_batch_size: int = 10
  policy: str = 'reservoir'

  def validate(self):
    _check_replay(self)


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """The training regime every algorithm gets.

  Attributes:
    name: 'sgd' or 'adam'.
    learning_rate: initial learning rate.
    momentum: SGD momentum (0 = none).
    weight_decay: L2 weight decay added to the gradient.
    lr_decay: multiplicative learning-rate decay per task: task k trains at
      `max(learning_rate * lr_decay**k, min_lr)` (Stable SGD, Mirzadeh 2020).
    min_lr: floor of the decayed learning rate.
    reinit_per_task: a fresh optimizer state (momentum, Adam moments) at
      the start of every task.
    grad_clip_norm: clip the gradient's global norm (None = no clipping).
  """

  name: str = 'sgd'
  learning_rate: float = 0.01
  momentum: float = 0.0
  weight_decay: float = 0.0
  lr_decay: float = 1.0
  min_lr: float = 0.0
  reinit_per_task: bool = True
  grad_clip_norm: float | None = None

  def __post_init__(self):
    spec = 'optimizer'
    _check(
      self.name in ('sgd', 'adam'), spec, 'name', f"must be 'sgd' or 'adam', got {self.name!r}"
    )
    _check(
      _finite(self.learning_rate) and self.learning_rate > 0,
      spec,
      'learning_rate',
      f'must be > 0, got {self.learning_rate!r}',
    )
    _check(
      _finite(self.momentum) and 0 <= self.momentum < 1,
      spec,
      'momentum',
      f'must be in [0, 1), got {self.momentum!r}',
    )
    _check(
      _finite(self.weight_decay) and self.weight_decay >= 0,
      spec,
      'weight_decay',
      f'must be >= 0, got {self.weight_decay!r}',
    )
    _check(
      _finite(self.lr_decay) and 0 < self.lr_decay <= 1,
      spec,
      'lr_decay',
      f'must be in (0, 1], got {self.lr_decay!r}',
    )
    _check(
      _finite(self.min_lr) and 0 <= self.min_lr <= self.learning_rate,
      spec,
      'min_lr',
      f'must be in [0, learning_rate], got {self.min_lr!r}',
    )
    _check(
      self.grad_clip_norm is None or (_finite(self.grad_clip_norm) and self.grad_clip_norm > 0),
      spec,
      'grad_clip_norm',
      f'must be None or > 0, got {self.grad_clip_norm!r}',
    )

  def decay_power(self, task_id: int) -> np.float32:
    """`lr_decay ** task_id` in float32 by square and multiply, as
    `lax.integer_pow` computes it: the same bits on every backend, and no
    compilation per task."""
    power, base, k = np.float32(1.0), np.float32(self.lr_decay), int(task_id)
    while k:
      if k & 1:
        power = power * base
      k >>= 1
      if k:
        base = base * base
    return power

  def learning_rate_for_task(self, task_id: int) -> np.float32:
    """`max(learning_rate * lr_decay**task_id, min_lr)` in float32: the
    learning rate of task `task_id` under the per-task decay."""
    lr = np.float32(self.learning_rate) * self.decay_power(task_id)
    return np.maximum(lr, np.float32(self.min_lr))

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def make_spec(name: str, **hyperparameters: Any) -> AlgorithmSpec:
  """Builds and validates the spec of algorithm `name`.

  Raises:
    ValueError: unknown algorithm, unknown hyperparameter, or a bad value.
  """
  if name not in SPECS:
    raise ValueError(f'unknown algorithm {name!r}; known: {", ".join(sorted(SPECS))}')
  cls = SPECS[name]
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(hyperparameters) - known)
  if unknown:
    raise ValueError(
      f'{name}: unknown hyperparameter(s) {unknown}; known: {sorted(known) or "none"}'
    )
  return cls(**hyperparameters)


def spec_from_config(config: Mapping[str, Any]) -> AlgorithmSpec:
  """`make_spec` from a mapping with a 'name' key (e.g. an ml_collections `config.algo`)."""
  config = dict(config)
  if 'name' not in config:
    raise ValueError("algorithm config needs a 'name'")
  return make_spec(config.pop('name'), **config)
