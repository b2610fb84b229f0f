"""Plots of continual-learning results: accuracy matrices and task curves.

Imports NumPy and the standard library only at module level; matplotlib (the
`plots` extra) is imported lazily, with the headless 'Agg' backend, inside the
functions that draw. So `import jcl.plots` works without matplotlib installed.

The input is the accuracy matrix `R` of `jcl.metrics` (fractions,
`R[i, j]` = accuracy on task i after training tasks 0..j, NaN or `None` for
columns not trained yet), or a run's `results.json` as written by
`jcl.experiment.write_results`. Every plot shows percent.

A `results.json` comes in two formats:

* a single run: top-level `accuracy_matrix`, `initial_accuracy`, `summary`
  (and `task_il_accuracy_matrix` for class-incremental streams);
* a replicated run (several seeds and/or a hyperparameter grid, from
  `jcl.replicas`): a `replicas` list (one entry per seed and setting, each
  with its own `accuracy_matrix`, ... and an `error` if it diverged) and a
  `table` with one row per setting, ranked best first.

`plot_results` writes, into the run directory:

* single run: `accuracy_matrix.png`, `task_accuracy.png` (and
  `task_il_accuracy_matrix.png`);
* replicated run with one setting (seeds only): the same names, drawn as the
  mean over the seeds with ± one std;
* replicated run with several settings: `accuracy_matrix_<k>.png`,
  `task_accuracy_<k>.png` (and `task_il_accuracy_matrix_<k>.png`) for the
  k-th ranked setting (k = its 1-based row in `table`, so the numbers stay
  the same when a setting is skipped), plus `settings.png` comparing the
  settings' average accuracy over seen tasks.

Diverged replicas (with an `error`) are left out of every mean; a setting
whose seeds all diverged gets no figures.

Typical use::

  from jcl import plots
  plots.plot_results('/tmp/run')  # accuracy_matrix.png, task_accuracy.png
  plots.compare_runs(['/tmp/ewc', '/tmp/er'], '/tmp/compare.png')
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Optional, Sequence

import numpy as np

ArrayLike = Any

__all__ = [
  'load_results',
  'is_replicated',
  'as_matrix',
  'seen_task_accuracy',
  'mean_std',
  'setting_name',
  'setting_statistics',
  'plot_accuracy_matrix',
  'plot_task_curves',
  'plot_task_curves_over_seeds',
  'plot_results',
  'compare_runs',
]

RESULTS_FILE = 'results.json'
_SHORT_NAMES = {'learning_rate': 'lr'}
_SUMMARY_KEYS = ('acc', 'bwt', 'fwt', 'forgetting')


def _pyplot():
  """Imports matplotlib with the headless Agg backend and returns pyplot."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(
      'jcl.plots needs matplotlib: pip install "jcl[plots]" (or pip install matplotlib).'
    ) from e
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  return plt


def as_matrix(R: ArrayLike) -> np.ndarray:
  """Converts an accuracy matrix (nested lists with `None`, or an array) to float.

  Args:
    R: `[T_eval, T_trained]` accuracy matrix; `None` entries become NaN.

  Returns:
    A 2-D float64 array.

  Raises:
    ValueError: if `R` is not a non-empty 2-D matrix of numbers.
  """
  try:
    if isinstance(R, np.ndarray):
      M = R.astype(np.float64)
    else:
      M = np.array([[np.nan if v is None else v for v in row] for row in R], dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f'accuracy matrix must be a 2-D matrix of numbers: {e}') from e
  if M.ndim != 2 or M.size == 0:
    raise ValueError(f'accuracy matrix must be a non-empty 2-D matrix, got shape {M.shape}')
  return M


def _as_vector(values: ArrayLike) -> np.ndarray:
  """`[n]` float64 array from a list with `None` (-> NaN) or an array."""
  if isinstance(values, np.ndarray):
    return values.astype(np.float64)
  return np.asarray([np.nan if v is None else v for v in values], np.float64)


def seen_task_accuracy(R: ArrayLike) -> np.ndarray:
  """The average accuracy over the tasks seen so far, after each trained task.

  `acc[j] = mean_{i <= j} R[i, j]`; `acc[-1]` is ACC (`jcl.metrics.average_accuracy`).

  Args:
    R: `[T_eval, T_trained]` accuracy matrix (fractions).

  Returns:
    `[k]` array, one entry per trained (not all-NaN) column.
  """
  M = as_matrix(R)
  out = []
  for j in range(M.shape[1]):
    seen = M[: min(j + 1, M.shape[0]), j]
    if not np.isfinite(seen).any():
      break
    out.append(float(np.nanmean(seen)))
  return np.asarray(out)


def mean_std(values: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
  """Mean and sample std (ddof=1) over the first axis, as `jcl.replicas.aggregate`.

  Args:
    values: `[n, ...]` (e.g. `[n_seeds, T, T]` accuracy matrices), n >= 1;
      NaN propagates (an untrained cell stays NaN).

  Returns:
    `(mean, std)`, each `[...]`; std is 0 (NaN where the mean is) for n = 1.
  """
  stack = np.asarray(values, np.float64)
  if stack.ndim < 1 or stack.shape[0] == 0:
    raise ValueError(f'mean_std needs at least one value along axis 0, got shape {stack.shape}')
  mean = stack.mean(axis=0)
  std = stack.std(axis=0, ddof=1) if stack.shape[0] > 1 else np.where(np.isnan(mean), np.nan, 0.0)
  return mean, std


def _save(fig, path: str) -> str:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fig.savefig(path, dpi=120, bbox_inches='tight')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  plt.close(fig)
  return path


def plot_accuracy_matrix(
  R: ArrayLike, path: str, title: Optional[str] = None, std: Optional[ArrayLike] = None
) -> str:
  """Draws the accuracy matrix as an annotated heatmap, in percent.

  Rows are "task i" (the evaluated task), columns "after task j"; every finite
  cell carries its value, NaN cells (not evaluated / not trained) are grey
  and blank. With `std` (e.g. `R` the mean over seeds), cells read
  "mean ± std" (up to 20 tasks; mean only up to 30; no text beyond).

  Args:
    R: `[T_eval, T_trained]` accuracy matrix (fractions, NaN/None allowed).
    path: the PNG to write (parent directories are created).
    title: optional figure title.
    std: optional `[T_eval, T_trained]` spread of `R` (fractions).

  Returns:
    `path`.
  """
  plt = _pyplot()
  M = 100.0 * as_matrix(R)
  S = None
  if std is not None:
    S = 100.0 * as_matrix(std)
    if S.shape != M.shape:
      raise ValueError(f'std has shape {S.shape}, expected {M.shape}')
  n_rows, n_cols = M.shape
  size = max(n_rows, n_cols)
  with_std = S is not None and size <= 20
  cell_w, cell_h = (1.05, 0.8) if with_std else (0.75, 0.6)
  fig, ax = plt.subplots(figsize=(1.0 + cell_w * n_cols + 1.5, 1.0 + cell_h * n_rows + 0.5))
  cmap = plt.get_cmap('viridis').with_extremes(bad='#d9d9d9')
  image = ax.imshow(np.ma.masked_invalid(M), cmap=cmap, vmin=0.0, vmax=100.0, aspect='auto')
  colorbar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03)
  colorbar.set_label('accuracy (%)' if S is None else 'mean accuracy (%)')
  if size <= 30:  # beyond, the cells are too small for text
    fontsize, fmt = (9, '{:.1f}') if size <= 10 else (8, '{:.0f}') if size <= 20 else (6, '{:.0f}')
    if with_std:
      fontsize -= 1
    for i in range(n_rows):
      for j in range(n_cols):
        v = M[i, j]
        if math.isfinite(v):
          text = fmt.format(v)
          if with_std and math.isfinite(S[i, j]):
            text += '\n± ' + fmt.format(S[i, j])
          ax.text(
            j,
            i,
            text,
            ha='center',
            va='center',
            fontsize=fontsize,
            color='black' if v > 60.0 else 'white',
          )
  step = max(1, size // 20)
  ax.set_xticks(range(0, n_cols, step))
  ax.set_xticklabels([str(j) for j in range(0, n_cols, step)])
  ax.set_yticks(range(0, n_rows, step))
  ax.set_yticklabels([str(i) for i in range(0, n_rows, step)])
  ax.set_xlabel('after training task j')
  ax.set_ylabel('evaluated task i')
  default = 'accuracy matrix R[i, j] (%)' if S is None else 'mean ± std accuracy R[i, j] (%)'
  ax.set_title(title or default)
  return _save(fig, path)


def _band(ax, x, mean, std, color, alpha):
  """Shades `mean ± std` where both are finite."""
  ok = np.isfinite(mean) & np.isfinite(std)
  if ok.any():
    ax.fill_between(
      x,
      np.where(ok, mean - std, 0.0),
      np.where(ok, mean + std, 0.0),
      where=ok,
      color=color,
      alpha=alpha,
      linewidth=0.0,
    )


def _draw_task_curves(
  M: np.ndarray,
  S: Optional[np.ndarray],
  seen: np.ndarray,
  seen_std: Optional[np.ndarray],
  path: str,
  title: str,
  init: Optional[np.ndarray],
  init_std: Optional[np.ndarray],
) -> str:
  """Draws task curves, all in percent: `M`, `S` `[T_eval, T_trained]` (S: std or None),
  `seen`, `seen_std` `[k]`, `init`, `init_std` `[T_eval]` or None."""
  plt = _pyplot()
  n_rows, n_cols = M.shape
  x = np.arange(1, n_cols + 1, dtype=np.float64)
  if init is not None:
    M = np.concatenate([init[:, None], M], axis=1)
    if S is not None:
      S = np.concatenate(
        [(np.zeros_like(init) if init_std is None else init_std)[:, None], S], axis=1
      )
    x = np.concatenate([[0.0], x])
  offset = 1 if init is not None else 0  # column index of "after task 0"

  fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(x) + 3.0), 4.5))
  colors = plt.get_cmap('tab10' if n_rows <= 10 else 'tab20' if n_rows <= 20 else 'viridis')
  for i in range(n_rows):
    color = colors(i % 20 if n_rows <= 20 else i / max(1, n_rows - 1))
    trained = offset + i  # column index where task i has just been trained
    before = slice(0, min(trained + 1, M.shape[1]))
    after = slice(trained, M.shape[1])
    if trained > 0:
      ax.plot(
        x[before],
        M[i, before],
        linestyle='--',
        color=color,
        alpha=0.6,
        linewidth=1.0,
        marker='.',
        markersize=4,
      )
      if S is not None:
        _band(ax, x[before], M[i, before], S[i, before], color, 0.07)
    ax.plot(
      x[after],
      M[i, after],
      linestyle='-',
      color=color,
      linewidth=1.5,
      marker='o',
      markersize=4,
      label=f'task {i}' if n_rows <= 20 else None,
    )
    if S is not None:
      _band(ax, x[after], M[i, after], S[i, after], color, 0.18)
  if seen.size:
    xs = x[offset : offset + seen.size]
    acc = (
      f'ACC {seen[-1]:.1f}%' if seen_std is None else (f'ACC {seen[-1]:.1f} ± {seen_std[-1]:.1f}%')
    )
    ax.plot(
      xs,
      seen,
      color='black',
      linewidth=3.0,
      marker='s',
      markersize=5,
      label=f'avg. seen tasks ({acc})',
    )
    if seen_std is not None:
      _band(ax, xs, seen, seen_std, 'black', 0.15)
  ax.set_xticks(x)
  ax.set_xticklabels(['init' if v == 0 else str(int(v)) for v in x])
  ax.set_xlim(x[0] - 0.3, x[-1] + 0.3)
  ax.set_ylim(0.0, 102.0)
  ax.set_xlabel('tasks trained')
  ax.set_ylabel('accuracy (%)')
  ax.grid(True, alpha=0.3)
  ax.set_title(title)
  ax.legend(loc='center left', bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
  return _save(fig, path)


def plot_task_curves(
  R: ArrayLike,
  path: str,
  title: Optional[str] = None,
  initial_accuracy: Optional[Sequence[float]] = None,
) -> str:
  """Draws each task's accuracy along the stream, and the seen-task average.

  The x axis is the number of tasks trained so far (column j of `R` is at
  x = j + 1; with `initial_accuracy`, x = 0 is the untrained model). Task i's
  line is solid from x = i + 1, where it was trained, and dashed (same color)
  before, i.e. for its evaluations before training. A thick black line is the
  average accuracy over the tasks seen so far (`seen_task_accuracy`).

  Args:
    R: `[T_eval, T_trained]` accuracy matrix (fractions, NaN/None allowed).
    path: the PNG to write (parent directories are created).
    title: optional figure title.
    initial_accuracy: optional `[T_eval]` accuracies of the untrained model.

  Returns:
    `path`.
  """
  M = as_matrix(R)
  init = None
  if initial_accuracy is not None:
    init = 100.0 * _as_vector(initial_accuracy)
    if init.shape != (M.shape[0],):
      raise ValueError(f'initial_accuracy has shape {init.shape}, expected ({M.shape[0]},)')
  return _draw_task_curves(
    100.0 * M,
    None,
    100.0 * seen_task_accuracy(M),
    None,
    path,
    title or 'accuracy per task (dashed: before the task is trained)',
    init,
    None,
  )


def _as_stack(matrices: ArrayLike) -> np.ndarray:
  """`[n, T_eval, T_trained]` float64 from a sequence of accuracy matrices (same shape)."""
  if isinstance(matrices, np.ndarray) and matrices.ndim == 3:
    stack = matrices.astype(np.float64)
  else:
    stack = [as_matrix(m) for m in matrices]
    if not stack:
      raise ValueError('need at least one accuracy matrix')
    shapes = {m.shape for m in stack}
    if len(shapes) > 1:
      raise ValueError(f'accuracy matrices of different shapes: {sorted(shapes)}')
    stack = np.stack(stack)
  if stack.shape[0] == 0 or stack[0].size == 0:
    raise ValueError(f'need at least one non-empty accuracy matrix, got shape {stack.shape}')
  return stack


def _seen_mean_std(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and std over seeds of the seen-task average curves of `[n, T, T]` -> `[k]` each."""
  curves = [seen_task_accuracy(m) for m in stack]
  k = min(c.size for c in curves)
  if k == 0:
    return np.zeros(0), np.zeros(0)
  return mean_std(np.stack([c[:k] for c in curves]))


def plot_task_curves_over_seeds(
  matrices: ArrayLike,
  path: str,
  title: Optional[str] = None,
  initial_accuracy: Optional[ArrayLike] = None,
) -> str:
  """`plot_task_curves` of several seeds: the mean as the line, ± one std shaded.

  The seen-task average (black) is the mean ± std over seeds of each seed's
  `seen_task_accuracy`.

  Args:
    matrices: `[n_seeds, T_eval, T_trained]` accuracy matrices (fractions, NaN/None allowed).
    path: the PNG to write (parent directories are created).
    title: optional figure title.
    initial_accuracy: optional `[n_seeds, T_eval]` accuracies of the untrained models.

  Returns:
    `path`.
  """
  stack = _as_stack(matrices)
  mean, std = mean_std(stack)
  init = init_std = None
  if initial_accuracy is not None:
    inits = np.stack([_as_vector(v) for v in initial_accuracy])
    if inits.shape != stack.shape[:2]:
      raise ValueError(f'initial_accuracy has shape {inits.shape}, expected {stack.shape[:2]}')
    init, init_std = mean_std(100.0 * inits)
  seen, seen_std = _seen_mean_std(stack)
  default = (
    f'accuracy per task, mean ± std over {stack.shape[0]} seeds '
    '(dashed: before the task is trained)'
  )
  return _draw_task_curves(
    100.0 * mean,
    100.0 * std,
    100.0 * seen,
    100.0 * seen_std,
    path,
    title or default,
    init,
    init_std,
  )


def is_replicated(document: dict[str, Any]) -> bool:
  """Whether a `results.json` document is a replicated run (has `replicas` or `table`)."""
  return isinstance(document, dict) and ('replicas' in document or 'table' in document)


def _validate_replicated(document: dict[str, Any], path: str) -> None:
  replicas = document.get('replicas')
  if not isinstance(replicas, list) or not replicas:
    raise ValueError(f'{path}: a replicated run needs a non-empty "replicas" list')
  shape = None
  for r, replica in enumerate(replicas):
    where = f'{path}: replicas[{r}]'
    if not isinstance(replica, dict) or 'accuracy_matrix' not in replica:
      raise ValueError(f'{where} has no "accuracy_matrix"')
    try:
      M = as_matrix(replica['accuracy_matrix'])
    except ValueError as e:
      raise ValueError(f'{where}: {e}') from e
    if shape is not None and M.shape != shape:
      raise ValueError(f'{where}: accuracy matrix of shape {M.shape}, replicas[0] has {shape}')
    shape = M.shape
    if not isinstance(replica.get('hparams', {}), dict):
      raise ValueError(f'{where}: "hparams" must be a mapping')
  table = document.get('table', [])
  if not isinstance(table, list) or not all(
    isinstance(row, dict) and isinstance(row.get('hparams', {}), dict) for row in table
  ):
    raise ValueError(f'{path}: "table" must be a list of rows with "hparams" mappings')


def _results_path(workdir: str) -> str:
  if workdir.endswith('.json') and os.path.isfile(workdir):
    return workdir
  return os.path.join(workdir, RESULTS_FILE)


def load_results(workdir: str) -> dict[str, Any]:
  """Reads and validates `workdir/results.json`, of a single or a replicated run.

  Args:
    workdir: a run directory (or the path of a results.json file itself).

  Returns:
    The parsed document: a single run has a valid top-level `accuracy_matrix`;
    a replicated run (`is_replicated`) a non-empty `replicas` list, each with a
    valid `accuracy_matrix` (all of one shape).

  Raises:
    FileNotFoundError: if the file does not exist.
    ValueError: naming the file, if it is not valid JSON or malformed.
  """
  path = _results_path(workdir)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no results file: {path}')
  try:
    with open(path) as f:
      document = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not valid JSON: {e}') from e
  if is_replicated(document):
    _validate_replicated(document, path)
    return document
  if not isinstance(document, dict) or 'accuracy_matrix' not in document:
    raise ValueError(f'{path} has no "accuracy_matrix"')
  try:
    as_matrix(document['accuracy_matrix'])
  except ValueError as e:
    raise ValueError(f'{path}: {e}') from e
  return document


def _run_label(document: dict[str, Any], fallback: str) -> str:
  config = document.get('config') or {}
  algo = (config.get('algo') or {}).get('name') if isinstance(config, dict) else None
  algo = algo or (document.get('algorithm') or {}).get('name')
  bench = (config.get('benchmark') or {}).get('name') if isinstance(config, dict) else None
  if not bench and isinstance(document.get('benchmark'), str):
    bench = document['benchmark']
  parts = [p for p in (algo, bench) if p]
  return ' / '.join(str(p) for p in parts) if parts else fallback


def _summary_line(document: dict[str, Any]) -> str:
  summary = document.get('summary') or {}
  parts = []
  for key in _SUMMARY_KEYS:
    v = summary.get(key)
    if isinstance(v, (int, float)) and math.isfinite(v):
      parts.append(
        f'{key.upper()} {100 * v:+.1f}' if key in ('bwt', 'fwt') else f'{key.upper()} {100 * v:.1f}'
      )
  return ', '.join(parts)


def _format_value(v: Any) -> str:
  return f'{v:g}' if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def setting_name(hparams: dict[str, Any]) -> str:
  """`'lr=0.01 ewc_lambda=1'` from `{'optimizer.learning_rate': 0.01, 'algo.ewc_lambda': 1.0}`.

  Keys are shortened to their last dotted part (`learning_rate` -> `lr`),
  unless two of them would then read the same; `''` without a grid.
  """
  short = [k.rsplit('.', 1)[-1] for k in hparams]
  short = [_SHORT_NAMES.get(k, k) for k in short]
  keys = short if len(set(short)) == len(short) else list(hparams)
  return ' '.join(f'{k}={_format_value(v)}' for k, v in zip(keys, hparams.values()))


def _hparams_key(hparams: dict[str, Any]) -> str:
  return json.dumps(hparams, sort_keys=True, default=str)


def _stats_of(replicas: list[dict[str, Any]], members: list[int]) -> dict[str, Any]:
  """Mean/std over the non-diverged `members` of a setting (arrays None when none is left)."""
  kept = [r for r in members if not replicas[r].get('error')]
  out = {
    'seeds': [replicas[r].get('seed') for r in kept],
    'diverged_seeds': [replicas[r].get('seed') for r in members if r not in kept],
    'replica_indices': kept,
  }
  none = dict.fromkeys(
    (
      'mean_accuracy_matrix',
      'std_accuracy_matrix',
      'seen_mean',
      'seen_std',
      'initial_mean',
      'initial_std',
      'initial_accuracy',
      'accuracy_matrices',
      'task_il_accuracy_matrices',
    )
  )
  if not kept:
    return {**out, **none, 'summary_mean': {}, 'summary_std': {}}
  stack = _as_stack([replicas[r]['accuracy_matrix'] for r in kept])
  mean, std = mean_std(stack)
  seen, seen_std = _seen_mean_std(stack)
  out.update(
    accuracy_matrices=stack,
    mean_accuracy_matrix=mean,
    std_accuracy_matrix=std,
    seen_mean=seen,
    seen_std=seen_std,
    initial_mean=None,
    initial_std=None,
    initial_accuracy=None,
    task_il_accuracy_matrices=None,
  )
  inits = [replicas[r].get('initial_accuracy') for r in kept]
  if all(v is not None and len(v) == stack.shape[1] for v in inits):
    out['initial_accuracy'] = np.stack([_as_vector(v) for v in inits])
    out['initial_mean'], out['initial_std'] = mean_std(out['initial_accuracy'])
  task_il = [replicas[r].get('task_il_accuracy_matrix') for r in kept]
  if all(m is not None for m in task_il):
    out['task_il_accuracy_matrices'] = _as_stack(task_il)
  summary_mean, summary_std = {}, {}
  for key in _SUMMARY_KEYS:
    values = [(replicas[r].get('summary') or {}).get(key) for r in kept]
    if values and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
      summary_mean[key], summary_std[key] = (float(a) for a in mean_std(values))
  out.update(summary_mean=summary_mean, summary_std=summary_std)
  return out


def setting_statistics(document: dict[str, Any]) -> list[dict[str, Any]]:
  """Per setting of a replicated run, mean and std over its non-diverged seeds.

  Settings come in `table` order (best first; settings missing from `table`
  after, in replica order); without a `table`, ranked by the mean final
  seen-task accuracy. Replicas with an `error` are left out of every mean;
  std is the sample std (ddof=1), 0 for one seed, as `jcl.replicas.aggregate`.

  Args:
    document: a replicated `results.json` (`load_results`).

  Returns:
    One dict per setting: `rank` (1-based), `hparams`, `name` (`setting_name`),
    `seeds` (kept), `diverged_seeds`, `replica_indices` (kept, into `replicas`);
    `accuracy_matrices` `[n, T, T]`, `mean_accuracy_matrix` / `std_accuracy_matrix`
    `[T, T]`, `seen_mean` / `seen_std` `[k]`, `initial_accuracy` `[n, T]`,
    `initial_mean` / `initial_std` `[T]`, `task_il_accuracy_matrices` `[n, T, T]`
    (fractions; None when absent or when every seed diverged); `summary_mean`,
    `summary_std` (ACC, BWT, FWT, forgetting where finite for every kept seed).
  """
  replicas = document['replicas']
  groups: dict[str, list[int]] = {}
  hparams_of: dict[str, dict[str, Any]] = {}
  for r, replica in enumerate(replicas):
    hparams = dict(replica.get('hparams') or {})
    key = _hparams_key(hparams)
    groups.setdefault(key, []).append(r)
    hparams_of.setdefault(key, hparams)
  table = document.get('table') or []
  order = []
  for row in table:
    key = _hparams_key(dict(row.get('hparams') or {}))
    if key in groups and key not in order:
      order.append(key)
  ranked_by_table = bool(order)
  order += [key for key in groups if key not in order]
  settings = [
    {
      'hparams': hparams_of[key],
      'name': setting_name(hparams_of[key]),
      **_stats_of(replicas, groups[key]),
    }
    for key in order
  ]
  if not ranked_by_table:

    def final(setting):
      seen = setting['seen_mean']
      return seen[-1] if seen is not None and seen.size else -math.inf

    settings.sort(key=lambda setting: -final(setting))
  for rank, setting in enumerate(settings, 1):
    setting['rank'] = rank
  return settings


def _pm_line(mean: dict[str, float], std: dict[str, float]) -> str:
  parts = []
  for key in _SUMMARY_KEYS:
    if key in mean:
      sign = '+' if key in ('bwt', 'fwt') else ''
      parts.append(f'{key.upper()} {100 * mean[key]:{sign}.1f} ± {100 * std[key]:.1f}')
  return ', '.join(parts)


def _seeds_note(setting: dict[str, Any]) -> str:
  n, d = len(setting['seeds']), len(setting['diverged_seeds'])
  note = f'{n} seed' + ('s' if n != 1 else '')
  if d:
    note += f' ({d} diverged seed{"s" if d != 1 else ""} left out)'
  return note


def _plot_replicated(document: dict[str, Any], workdir: str) -> list[str]:
  run = _run_label(document, os.path.basename(os.path.normpath(workdir)))
  settings = setting_statistics(document)
  several = len(settings) > 1
  paths = []
  for s in settings:
    if not s['seeds']:
      continue  # every seed diverged: nothing to draw
    tag = f'_{s["rank"]}' if several else ''
    head = f'{run}: {s["name"]}' if s['name'] else run
    seeds = _seeds_note(s)
    summary = _pm_line(s['summary_mean'], s['summary_std'])
    suffix = f'\n{summary}' if summary else ''
    paths.append(
      plot_accuracy_matrix(
        s['mean_accuracy_matrix'],
        os.path.join(workdir, f'accuracy_matrix{tag}.png'),
        title=f'{head}\nmean ± std accuracy R[i, j] (%) over {seeds}{suffix}',
        std=s['std_accuracy_matrix'],
      )
    )
    paths.append(
      plot_task_curves_over_seeds(
        s['accuracy_matrices'],
        os.path.join(workdir, f'task_accuracy{tag}.png'),
        title=f'{head}\naccuracy per task, mean ± std over {seeds}{suffix}',
        initial_accuracy=s['initial_accuracy'],
      )
    )
    if s['task_il_accuracy_matrices'] is not None:
      mean, std = mean_std(s['task_il_accuracy_matrices'])
      paths.append(
        plot_accuracy_matrix(
          mean,
          os.path.join(workdir, f'task_il_accuracy_matrix{tag}.png'),
          title=f'{head}\nmean ± std task-IL accuracy R[i, j] (%) over {seeds}',
          std=std,
        )
      )
  if several:
    alive = [s for s in settings if s['seeds'] and s['seen_mean'].size]
    curves = []
    for s in alive:
      m, sd = 100.0 * s['seen_mean'], 100.0 * s['seen_std']
      seeds = f'{len(s["seeds"])} seeds' + (
        f', {len(s["diverged_seeds"])} diverged' if s['diverged_seeds'] else ''
      )
      curves.append(
        (f'{s["rank"]}. {s["name"] or run}: ACC {m[-1]:.1f} ± {sd[-1]:.1f}% ({seeds})', m, sd)
      )
    if curves:
      skipped = len(settings) - len(alive)
      note = (
        f'\n({skipped} setting{"s" if skipped != 1 else ""} left out: every seed diverged)'
        if skipped
        else ''
      )
      paths.append(
        _plot_seen_curves(
          curves,
          os.path.join(workdir, 'settings.png'),
          f'{run}: average accuracy over seen tasks, mean ± std over seeds{note}',
        )
      )
  return paths


def plot_results(workdir: str) -> list[str]:
  """Draws the plots of a run from `workdir/results.json`, into `workdir`.

  A single run: `accuracy_matrix.png`, `task_accuracy.png` and, when the run
  has a task-incremental matrix, `task_il_accuracy_matrix.png`.

  A replicated run (`is_replicated`), per setting (mean ± std over its
  non-diverged seeds): the heatmap, the task curves with ± std bands and,
  for class-incremental runs, the task-IL heatmap; named as a single run's
  with one setting, else suffixed `_<k>` for the k-th ranked setting (1-based
  row of `table`: `accuracy_matrix_1.png`, ...). With several settings, also
  `settings.png`: each setting's average accuracy over seen tasks. A setting
  whose seeds all diverged gets no figures (its number is not reused).

  Args:
    workdir: the run directory.

  Returns:
    The paths written, setting by setting in rank order, `settings.png` last.

  Raises:
    FileNotFoundError: if `workdir/results.json` does not exist.
    ValueError: if it is malformed.
  """
  document = load_results(workdir)
  workdir = os.path.dirname(workdir) if workdir.endswith('.json') else workdir
  if is_replicated(document):
    return _plot_replicated(document, workdir)
  name = _run_label(document, os.path.basename(os.path.normpath(workdir)))
  summary = _summary_line(document)
  suffix = f'\n{summary}' if summary else ''
  initial = document.get('initial_accuracy')
  R = document['accuracy_matrix']
  if initial is not None and len(initial) != len(R):
    initial = None
  paths = [
    plot_accuracy_matrix(
      R, os.path.join(workdir, 'accuracy_matrix.png'), title=f'{name}: accuracy R[i, j] (%){suffix}'
    ),
    plot_task_curves(
      R,
      os.path.join(workdir, 'task_accuracy.png'),
      title=f'{name}: accuracy per task{suffix}',
      initial_accuracy=initial,
    ),
  ]
  task_il = document.get('task_il_accuracy_matrix')
  if task_il is not None:
    try:
      as_matrix(task_il)
    except ValueError as e:
      raise ValueError(
        f'{os.path.join(workdir, RESULTS_FILE)}: task_il_accuracy_matrix: {e}'
      ) from e
    paths.append(
      plot_accuracy_matrix(
        task_il,
        os.path.join(workdir, 'task_il_accuracy_matrix.png'),
        title=f'{name}: task-IL accuracy R[i, j] (%)',
      )
    )
  return paths


def _plot_seen_curves(
  curves: Sequence[tuple[str, np.ndarray, Optional[np.ndarray]]], path: str, title: str
) -> str:
  """One line per `(label, mean [k], std [k] or None)` (percent), std shaded."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7.5, 4.5))
  colors = plt.get_cmap('tab10')
  longest = 1
  for c, (label, seen, std) in enumerate(curves):
    if not seen.size:
      continue
    x = np.arange(1, seen.size + 1)
    longest = max(longest, seen.size)
    color = colors(c % 10)
    ax.plot(x, seen, marker='o', linewidth=2.0, markersize=4, color=color, label=label)
    if std is not None:
      _band(ax, x, seen, std, color, 0.18)
  step = max(1, longest // 20)
  ax.set_xticks(range(1, longest + 1, step))
  ax.set_xlim(0.7, longest + 0.3)
  ax.set_ylim(0.0, 102.0)
  ax.set_xlabel('tasks trained')
  ax.set_ylabel('average accuracy over seen tasks (%)')
  ax.grid(True, alpha=0.3)
  ax.set_title(title)
  ax.legend(loc='lower left', fontsize=8)
  return _save(fig, path)


def _best_setting(document: dict[str, Any]) -> Optional[dict[str, Any]]:
  """The best-ranked setting (`table[0]`) of a replicated run with a non-diverged seed."""
  for setting in setting_statistics(document):
    if setting['seeds'] and setting['seen_mean'].size:
      return setting
  return None


def compare_runs(workdirs: Sequence[str], path: str, labels: Optional[Sequence[str]] = None) -> str:
  """Draws the average accuracy over seen tasks after each task, for several runs.

  A replicated run contributes its best setting (`table[0]`; the next ranked
  one if all its seeds diverged) as its mean over seeds with a ± std band.

  Args:
    workdirs: run directories, each with a `results.json` (single or replicated).
    path: the PNG to write (parent directories are created).
    labels: optional legend labels, one per run; by default "algo / benchmark"
      from each run's config (or the directory name), plus the setting of a
      replicated run.

  Returns:
    `path`.

  Raises:
    FileNotFoundError, ValueError: as `load_results`, naming the bad file; and
      ValueError if `labels` does not match `workdirs`.
  """
  if not workdirs:
    raise ValueError('compare_runs needs at least one workdir')
  if labels is not None and len(labels) != len(workdirs):
    raise ValueError(f'{len(labels)} labels for {len(workdirs)} workdirs')
  documents = [load_results(w) for w in workdirs]
  best = [_best_setting(d) if is_replicated(d) else None for d in documents]
  if labels is None:
    labels = [
      _run_label(d, os.path.basename(os.path.normpath(w))) for d, w in zip(documents, workdirs)
    ]
    labels = [
      f'{label} [{b["name"]}]' if b is not None and b['name'] else label
      for label, b in zip(labels, best)
    ]
    if len(set(labels)) < len(labels):  # same algo/benchmark: tell the runs apart
      labels = [
        f'{label} ({os.path.basename(os.path.normpath(w))})' for label, w in zip(labels, workdirs)
      ]
  curves = []
  for document, setting, label in zip(documents, best, labels):
    if not is_replicated(document):
      seen = 100.0 * seen_task_accuracy(document['accuracy_matrix'])
      if seen.size:
        curves.append((f'{label}: ACC {seen[-1]:.1f}%', seen, None))
    elif setting is not None:
      seen, std = 100.0 * setting['seen_mean'], 100.0 * setting['seen_std']
      n = len(setting['seeds'])
      curves.append(
        (
          f'{label}: ACC {seen[-1]:.1f} ± {std[-1]:.1f}% ({n} seed{"s" if n != 1 else ""})',
          seen,
          std,
        )
      )
  return _plot_seen_curves(curves, path, 'average accuracy over seen tasks')
