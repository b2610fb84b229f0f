"""Continual-learning metrics computed from an accuracy matrix.

Imports NumPy and the standard library only (never JAX), so the metrics can be
computed anywhere: inside a training script, in a notebook from saved JSONL
logs, or in a test.

Conventions
-----------
The central object is the *accuracy matrix* `R` with shape `[T_eval, T_trained]`
(usually square, `T x T`)::

  R[i, j] = accuracy on (the test set of) task i after training on tasks 0..j.

* Entries are **fractions in [0, 1]**, not percentages. Every metric returned
  here is in the same units (a fraction, or a difference of fractions); multiply
  by 100 to report percent as most papers do. `format_matrix` prints percent.
* Column j is filled right after training task j. All tasks (also the ones not
  trained yet) should be evaluated after every task, so that the entries below
  the diagonal (`i > j`) measure forward transfer.
* A *partially filled* matrix is allowed: columns of tasks not trained yet are
  all NaN, and must come after every trained column. Every function then uses
  the `k` trained columns only, i.e. the metrics of a partial matrix equal the
  metrics of its leading block `R[:k, :k]` ("the tasks seen so far").
* Entries below the diagonal (a task evaluated before it was trained) may also
  be NaN when unseen tasks were not evaluated; only `forward_transfer` needs
  them (the sub-diagonal `R[i, i - 1]`) and it raises if those are missing.
  Entries on or above the diagonal of a trained column must be finite.

Below, `T` is the number of trained tasks `k` and indices are 0-based, so
`R[i, T - 1]` is the final accuracy on task i.

Forward transfer in class-incremental learning
----------------------------------------------
FWT [GEM, Sec. 2] compares the accuracy on task i just before it is trained,
`R[i, i-1]`, with that of the randomly initialised model, `b[i]`; GEM notes
that positive FWT takes "zero-shot" learning (e.g. from the structure of the
task descriptors). In class-incremental learning it is undefined, and
`summarize(..., scenario='class')` reports it as NaN (`UNDEFINED` holds the
reason, which the run's console log prints):

* after task i-1, predictions choose among the classes seen so far, so task
  i's classes cannot be predicted and `R[i, i-1] = 0` by construction, while
  `b[i]` scores the untrained model on every output unit: the difference is
  `-b[i]` for every method (on Split MNIST class-IL, -16.2 points for Naive
  and for DER++ alike);
* evaluating task i before training it among the classes seen by then *and*
  its own (Mammoth's `evaluate` in `utils/training.py` does this:
  `outputs[:, :n_classes]` once task i is loaded, while its random baseline
  uses every unit) does not help: task i's output units have never had a gradient
  (unseen classes are masked out of the loss, or pushed down when they are
  not), so they never win. Measured on Split MNIST class-IL (real MNIST,
  `configs/{naive,derpp}.py:split_mnist_class`): `R[i, i-1] = 0.0` for
  every i with Naive and with DER++, and FWT = -24.25 points for both.

Task- and domain-incremental runs keep GEM's definition.

References:
  [GEM] Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual
    Learning", NeurIPS 2017.
  [RWalk] Chaudhry, Dokania, Ajanthan & Torr, "Riemannian Walk for Incremental
    Learning: Understanding Forgetting and Intransigence", ECCV 2018.
  [MER] Riemer et al., "Learning to Learn without Forgetting by Maximizing
    Transfer and Minimizing Interference", ICLR 2019.
  [La-MAML] Gupta, Yadav & Paull, "La-MAML: Look-ahead Meta Learning for
    Continual Learning", NeurIPS 2020.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

ArrayLike = Any

__all__ = [
  'empty_accuracy_matrix',
  'num_trained_tasks',
  'average_accuracy',
  'retained_accuracy',
  'backward_transfer',
  'bti',
  'forward_transfer',
  'forgetting',
  'average_forgetting',
  'max_forgetting',
  'intransigence',
  'average_intransigence',
  'learning_accuracy',
  'summarize',
  'undefined_metrics',
  'format_matrix',
  'UNDEFINED',
]

# Tolerance for accuracies that are fractions in [0, 1] up to rounding.
_RANGE_ATOL = 1e-6

# Per scenario, the `summarize` metrics it leaves undefined (NaN), with the reason.
UNDEFINED: dict[str, dict[str, str]] = {
  'class': {
    'fwt': (
      'FWT is undefined in class-incremental learning: before task i is trained its '
      'classes are not predicted (R[i, i-1] = 0 by construction; their output units are '
      'untrained), so R[i, i-1] - b[i] measures the random model, not transfer'
    ),
  },
}


# ---------------------------------------------------------------------------
# Validation helpers.
# ---------------------------------------------------------------------------


def _as_float_array(x: ArrayLike, name: str) -> np.ndarray:
  try:
    return np.array(x, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f'{name} must be a numeric array, got {x!r}.') from e


def _check_range(values: np.ndarray, name: str) -> None:
  finite = values[np.isfinite(values)]
  if finite.size and (finite.min() < -_RANGE_ATOL or finite.max() > 1 + _RANGE_ATOL):
    raise ValueError(
      f'{name} must hold accuracies as fractions in [0, 1], got values in '
      f'[{finite.min():g}, {finite.max():g}]. Divide percentages by 100.'
    )


def _validate(R: ArrayLike) -> tuple[np.ndarray, int]:
  """Checks an accuracy matrix; returns it as float64 and `k` trained columns.

  Args:
    R: `[T_eval, T_trained]` accuracy matrix (see the module docstring).

  Returns:
    `(R, k)`: `R` as a float64 array of the same shape, and the number `k >= 1`
    of trained (non all-NaN) leading columns.

  Raises:
    ValueError: if `R` is not 2-D, holds infinities, values outside [0, 1],
      has no trained column, an all-NaN column before a trained one, fewer
      rows than trained columns, or a NaN on/above the diagonal of a trained
      column.
  """
  R = _as_float_array(R, 'R')
  if R.ndim != 2:
    raise ValueError(
      'R must be a 2-D accuracy matrix [T_eval, T_trained] with R[i, j] the '
      f'accuracy on task i after training task j; got shape {R.shape}.'
    )
  if R.shape[0] == 0 or R.shape[1] == 0:
    raise ValueError(f'R must not be empty; got shape {R.shape}.')
  if np.isinf(R).any():
    i, j = np.argwhere(np.isinf(R))[0]
    raise ValueError(f'R must be finite or NaN; R[{i}, {j}] = {R[i, j]}.')
  _check_range(R, 'R')

  trained = ~np.isnan(R).all(axis=0)  # [T_trained]
  if not trained.any():
    raise ValueError('R has no trained column: every entry is NaN.')
  k = int(np.argmin(trained)) if not trained.all() else R.shape[1]
  if trained[k:].any():
    later = int(k + np.argmax(trained[k:]))
    raise ValueError(
      f'Column {k} of R is all NaN (not trained yet) but column {later} is '
      'filled; untrained columns must come after all trained ones.'
    )
  if R.shape[0] < k:
    raise ValueError(
      f'R has {k} trained columns but only {R.shape[0]} rows; every trained '
      'task must be evaluated (need T_eval >= number of trained tasks).'
    )
  # On and above the diagonal (task i already trained at column j >= i).
  seen = np.triu(np.ones((k, k), dtype=bool))
  missing = seen & np.isnan(R[:k, :k])
  if missing.any():
    i, j = np.argwhere(missing)[0]
    raise ValueError(
      f'R[{i}, {j}] is NaN, but task {i} was trained before column {j} was '
      'filled: every trained task must be evaluated after every trained '
      'task.'
    )
  return R, k


def _validate_vector(v: ArrayLike, R: np.ndarray, k: int, name: str, what: str) -> np.ndarray:
  """Checks a per-task vector `[T_eval]`; returns it as float64."""
  v = _as_float_array(v, name)
  if v.ndim != 1:
    raise ValueError(f'{name} must be a 1-D vector [T] of {what}; got shape {v.shape}.')
  if v.shape[0] != R.shape[0]:
    raise ValueError(
      f'{name} must have one entry per task (row of R): expected length '
      f'{R.shape[0]}, got {v.shape[0]}.'
    )
  if not np.isfinite(v[:k]).all():
    i = int(np.argmin(np.isfinite(v[:k])))
    raise ValueError(f'{name}[{i}] must be finite, got {v[i]}.')
  _check_range(v, name)
  return v


# ---------------------------------------------------------------------------
# Helpers to build and inspect accuracy matrices.
# ---------------------------------------------------------------------------


def empty_accuracy_matrix(num_tasks: int, num_eval_tasks: Optional[int] = None) -> np.ndarray:
  """Returns an all-NaN accuracy matrix to fill one column per trained task.

  Args:
    num_tasks: number of tasks that will be trained, `T_trained`.
    num_eval_tasks: number of evaluated tasks, `T_eval`; defaults to
      `num_tasks`.

  Returns:
    `[T_eval, T_trained]` float64 array of NaN. After training task j, write
    `R[:, j] = accuracies_on_every_task`.
  """
  if num_eval_tasks is None:
    num_eval_tasks = num_tasks
  if num_tasks < 1 or num_eval_tasks < 1:
    raise ValueError(
      f'num_tasks and num_eval_tasks must be >= 1, got {num_tasks} and {num_eval_tasks}.'
    )
  return np.full((num_eval_tasks, num_tasks), np.nan, dtype=np.float64)


def num_trained_tasks(R: ArrayLike) -> int:
  """Returns `k`, the number of trained (not all-NaN) leading columns of `R`.

  Args:
    R: `[T_eval, T_trained]` accuracy matrix, possibly partially filled.

  Returns:
    The number of trained tasks `k` with `1 <= k <= T_trained`.
  """
  return _validate(R)[1]


# ---------------------------------------------------------------------------
# Metrics.
# ---------------------------------------------------------------------------


def average_accuracy(R: ArrayLike) -> float:
  """Average accuracy (ACC) over the trained tasks after the last one [GEM].

  ACC = 1/T * sum_{i=0}^{T-1} R[i, T-1]

  Args:
    R: `[T_eval, T_trained]` accuracy matrix (fractions); with NaN columns for
      untrained tasks, `T` is the number of trained columns.

  Returns:
    ACC as a fraction in [0, 1].
  """
  R, k = _validate(R)
  return float(np.mean(R[:k, k - 1]))


def retained_accuracy(R: ArrayLike) -> float:
  """Retained accuracy (RA) [MER, La-MAML]; identical to ACC.

  RA = 1/T * sum_{i=0}^{T-1} R[i, T-1], the average accuracy over all trained
  tasks at the end of training (see `average_accuracy`).

  Args:
    R: `[T_eval, T_trained]` accuracy matrix (fractions).

  Returns:
    RA as a fraction in [0, 1].
  """
  return average_accuracy(R)


def backward_transfer(R: ArrayLike) -> float:
  """Backward transfer (BWT) [GEM]: the influence of later tasks on earlier.

  BWT = 1/(T-1) * sum_{i=0}^{T-2} (R[i, T-1] - R[i, i])

  Negative BWT is forgetting; positive BWT means learning new tasks improved
  old ones.

  Args:
    R: `[T_eval, T_trained]` accuracy matrix (fractions).

  Returns:
    BWT in [-1, 1] (a difference of fractions). With a single trained task there
    is nothing to forget and the (empty) mean is defined as 0.0.
  """
  R, k = _validate(R)
  if k < 2:
    return 0.0
  return float(np.mean(R[: k - 1, k - 1] - np.diag(R)[: k - 1]))


def bti(R: ArrayLike) -> float:
  """Backward transfer and interference (BTI) [MER, La-MAML].

  The average change in accuracy of each task from just after it was learnt to
  the end of training:

  BTI = 1/(T-1) * sum_{i=0}^{T-2} (R[i, T-1] - R[i, i])

  which equals `backward_transfer` (BWT). The papers report it in percent
  (`100 * bti(R)`); negative values are forgetting (interference).

  Args:
    R: `[T_eval, T_trained]` accuracy matrix (fractions).

  Returns:
    BTI in the units of `R` (a difference of fractions); 0.0 for one task.
  """
  return backward_transfer(R)


def forward_transfer(R: ArrayLike, b: ArrayLike) -> float:
  """Forward transfer (FWT) [GEM]: the influence of learnt tasks on new ones.

  FWT = 1/(T-1) * sum_{i=1}^{T-1} (R[i, i-1] - b[i])

  where `R[i, i-1]` is the accuracy on task i just before training it and
  `b[i]` that of the randomly initialised model. Undefined in
  class-incremental learning (see the module docstring; `summarize` then
  reports NaN).

  Args:
    R: `[T_eval, T_trained]` accuracy matrix (fractions); the sub-diagonal
      `R[i, i-1]` of the trained block must be filled.
    b: `[T_eval]` accuracies (fractions) of the randomly initialised model on
      each task.

  Returns:
    FWT in [-1, 1]; 0.0 when a single task is trained (empty mean).

  Raises:
    ValueError: on invalid inputs, or when some `R[i, i-1]` is NaN (task i was
      not evaluated before being trained).
  """
  R, k = _validate(R)
  b = _validate_vector(b, R, k, 'b', 'accuracies at random initialisation')
  if k < 2:
    return 0.0
  before = np.array([R[i, i - 1] for i in range(1, k)])
  if np.isnan(before).any():
    i = int(np.argmax(np.isnan(before))) + 1
    raise ValueError(
      f'R[{i}, {i - 1}] is NaN: forward transfer needs every task evaluated '
      'just before it is trained.'
    )
  return float(np.mean(before - b[1:k]))


def forgetting(R: ArrayLike) -> np.ndarray:
  """Per-task forgetting [RWalk].

  For each task i < T-1, the drop from its best accuracy while later tasks
  were trained (before the last one) to its final accuracy:

  f_i = max_{l in [i, T-2]} R[i, l] - R[i, T-1]

  The max starts at l = i (the accuracy before task i was trained is not
  knowledge that can be forgotten). f_i is negative when the final accuracy is
  higher than every earlier one.

  Args:
    R: `[T_eval, T_trained]` accuracy matrix (fractions).

  Returns:
    `[T-1]` float64 vector of f_i (empty for a single trained task).
  """
  R, k = _validate(R)
  if k < 2:
    return np.zeros((0,), dtype=np.float64)
  block = R[: k - 1, : k - 1]  # rows i < T-1, columns l <= T-2.
  seen = np.triu(np.ones_like(block, dtype=bool))  # l >= i.
  best = np.where(seen, block, -np.inf).max(axis=1)
  return best - R[: k - 1, k - 1]


def average_forgetting(R: ArrayLike) -> float:
  """Average forgetting [RWalk]: F = 1/(T-1) * sum_{i=0}^{T-2} f_i.

  See `forgetting` for f_i.

  Args:
    R: `[T_eval, T_trained]` accuracy matrix (fractions).

  Returns:
    F (a difference of fractions); 0.0 for a single trained task.
  """
  f = forgetting(R)
  return float(np.mean(f)) if f.size else 0.0


def max_forgetting(R: ArrayLike) -> float:
  """Maximum forgetting over tasks: max_{i < T-1} f_i (see `forgetting`).

  Args:
    R: `[T_eval, T_trained]` accuracy matrix (fractions).

  Returns:
    The largest per-task forgetting; 0.0 for a single trained task.
  """
  f = forgetting(R)
  return float(np.max(f)) if f.size else 0.0


def intransigence(R: ArrayLike, reference: ArrayLike) -> np.ndarray:
  """Per-task intransigence [RWalk]: the inability to learn new tasks.

  I_k = a*_k - R[k, k]

  where a*_k = `reference[k]` is the accuracy on task k of a reference model
  trained jointly (multi-task, i.i.d.) on tasks 0..k.

  Args:
    R: `[T_eval, T_trained]` accuracy matrix (fractions).
    reference: `[T_eval]` joint-training accuracies a*_k (fractions).

  Returns:
    `[T]` float64 vector of I_k for the trained tasks.
  """
  R, k = _validate(R)
  reference = _validate_vector(reference, R, k, 'reference', 'joint-training accuracies')
  return reference[:k] - np.diag(R)[:k]


def average_intransigence(R: ArrayLike, reference: ArrayLike) -> float:
  """Average intransigence [RWalk]: I = 1/T * sum_{k=0}^{T-1} I_k.

  See `intransigence` for I_k.

  Args:
    R: `[T_eval, T_trained]` accuracy matrix (fractions).
    reference: `[T_eval]` joint-training accuracies a*_k (fractions).

  Returns:
    I (a difference of fractions).
  """
  return float(np.mean(intransigence(R, reference)))


def learning_accuracy(R: ArrayLike) -> float:
  """Learning accuracy (LA) [MER, La-MAML]: accuracy just after learning.

  LA = 1/T * sum_{i=0}^{T-1} R[i, i]

  Args:
    R: `[T_eval, T_trained]` accuracy matrix (fractions).

  Returns:
    LA as a fraction in [0, 1].
  """
  R, k = _validate(R)
  return float(np.mean(np.diag(R)[:k]))


def undefined_metrics(scenario: Optional[str]) -> dict[str, str]:
  """`{metric: reason}` of the `summarize` metrics that `scenario` ('task',
  'domain', 'class' or None) leaves undefined: FWT in class-incremental learning.

  >>> list(undefined_metrics('class')), undefined_metrics('domain')
  (['fwt'], {})
  """
  return dict(UNDEFINED.get(scenario, {}))


def summarize(
  R: ArrayLike,
  b: Optional[ArrayLike] = None,
  reference: Optional[ArrayLike] = None,
  scenario: Optional[str] = None,
) -> dict[str, float]:
  """Computes every applicable metric of an accuracy matrix.

  Keys (all values are Python floats, in the units of `R`):

  * `'acc'`: `average_accuracy` (= RA).
  * `'learning_accuracy'`: `learning_accuracy` (LA).
  * `'bwt'`: `backward_transfer` (= BTI).
  * `'forgetting'`: `average_forgetting`.
  * `'max_forgetting'`: `max_forgetting`.
  * `'fwt'`: `forward_transfer`; only if `b` is given.
  * `'intransigence'`: `average_intransigence`; only if `reference` is given.

  With a single trained task, `'bwt'`, `'forgetting'`, `'max_forgetting'` and
  `'fwt'` are undefined (empty averages over previous tasks) and left out of the
  dict, rather than reported as a misleading 0. A metric that the scenario
  leaves undefined (`undefined_metrics`: FWT in class-incremental learning)
  is NaN.

  Args:
    R: `[T_eval, T_trained]` accuracy matrix (fractions), possibly partial.
    b: optional `[T_eval]` accuracies of the randomly initialised model.
    reference: optional `[T_eval]` joint-training accuracies a*_k.
    scenario: the stream's scenario ('task', 'domain', 'class'), or None.

  Returns:
    A dict from metric name to value.

  >>> R = [[0.9, 0.6], [0.1, 0.8]]      # task 0 forgets 0.3 while task 1 is learnt
  >>> s = summarize(R, b=[0.1, 0.1])
  >>> round(s['acc'], 4), round(s['bwt'], 4), round(s['forgetting'], 4), round(s['fwt'], 4)
  (0.7, -0.3, 0.3, 0.0)
  >>> summarize(R, b=[0.1, 0.1], scenario='class')['fwt']
  nan
  """
  R, k = _validate(R)
  out = {
    'acc': average_accuracy(R),
    'learning_accuracy': learning_accuracy(R),
  }
  if k >= 2:
    out['bwt'] = backward_transfer(R)
    out['forgetting'] = average_forgetting(R)
    out['max_forgetting'] = max_forgetting(R)
  if b is not None:
    fwt = forward_transfer(R, b)  # Validates b even for one task.
    if k >= 2:
      out['fwt'] = fwt
  if reference is not None:
    out['intransigence'] = average_intransigence(R, reference)
  for name in undefined_metrics(scenario):
    if name in out:
      out[name] = float('nan')
  return out


def format_matrix(R: ArrayLike, precision: int = 1, percent: bool = True) -> str:
  """Formats an accuracy matrix as a readable table for console printing.

  Rows are `task i` (the evaluated task), columns `after j` (the last trained
  task); NaN entries (not evaluated / not trained yet) are shown as `-`::

            after 0  after 1
    task 0     90.0     85.0
    task 1     10.0     95.0

  Args:
    R: `[T_eval, T_trained]` accuracy matrix (fractions). Only the shape is
      checked, so partial matrices print fine.
    precision: digits after the decimal point.
    percent: print `100 * R` (default) instead of the raw fractions.

  Returns:
    The table as a multi-line string (no trailing newline).
  """
  R = _as_float_array(R, 'R')
  if R.ndim != 2:
    raise ValueError(f'R must be a 2-D matrix; got shape {R.shape}.')
  if precision < 0:
    raise ValueError(f'precision must be >= 0, got {precision}.')
  values = R * 100.0 if percent else R
  cells = [['-' if np.isnan(v) else f'{v:.{precision}f}' for v in row] for row in values]
  row_labels = [f'task {i}' for i in range(R.shape[0])]
  col_labels = [f'after {j}' for j in range(R.shape[1])]
  label_width = max((len(s) for s in row_labels), default=0)
  widths = [max([len(col_labels[j])] + [len(row[j]) for row in cells]) for j in range(R.shape[1])]
  lines = [' ' * label_width + ''.join(f'  {c:>{w}}' for c, w in zip(col_labels, widths))]
  for label, row in zip(row_labels, cells):
    lines.append(f'{label:<{label_width}}' + ''.join(f'  {c:>{w}}' for c, w in zip(row, widths)))
  return '\n'.join(lines)
