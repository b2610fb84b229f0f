"""Plots of continual-learning results: accuracy matrices and task curves.

Imports NumPy and the standard library only at module level; matplotlib (the
`plots` extra) is imported lazily, with the headless 'Agg' backend, inside the
functions that draw. So `import jcl.plots` works without matplotlib installed.

The input is the accuracy matrix `R` of `jcl.metrics` (fractions,
`R[i, j]` = accuracy on task i after training tasks 0..j, NaN or `None` for
columns not trained yet), or a run's `results.json` as written by
`jcl.experiment.write_results`. Every plot shows percent.

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
    'as_matrix',
    'seen_task_accuracy',
    'plot_accuracy_matrix',
    'plot_task_curves',
    'plot_results',
    'compare_runs',
]

RESULTS_FILE = 'results.json'


def _pyplot():
  """Imports matplotlib with the headless Agg backend and returns pyplot."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError('jcl.plots needs matplotlib: pip install "jcl[plots]" '
                      '(or pip install matplotlib).') from e
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
    seen = M[:min(j + 1, M.shape[0]), j]
    if not np.isfinite(seen).any():
      break
    out.append(float(np.nanmean(seen)))
  return np.asarray(out)


def _save(fig, path: str) -> str:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fig.savefig(path, dpi=120, bbox_inches='tight')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  plt.close(fig)
  return path


def plot_accuracy_matrix(R: ArrayLike, path: str, title: Optional[str] = None) -> str:
  """Draws the accuracy matrix as an annotated heatmap, in percent.

  Rows are "task i" (the evaluated task), columns "after task j"; every finite
  cell carries its value, NaN cells (not evaluated / not trained) are grey
  and blank.

  Args:
    R: `[T_eval, T_trained]` accuracy matrix (fractions, NaN/None allowed).
    path: the PNG to write (parent directories are created).
    title: optional figure title.

  Returns:
    `path`.
  """
  plt = _pyplot()
  M = 100.0 * as_matrix(R)
  n_rows, n_cols = M.shape
  size = max(n_rows, n_cols)
  fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n_cols + 1.5, 1.0 + 0.6 * n_rows + 0.5))
  cmap = plt.get_cmap('viridis').with_extremes(bad='#d9d9d9')
  image = ax.imshow(np.ma.masked_invalid(M), cmap=cmap, vmin=0.0, vmax=100.0, aspect='auto')
  colorbar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03)
  colorbar.set_label('accuracy (%)')
  if size <= 30:   # beyond, the cells are too small for text
    fontsize, fmt = (9, '{:.1f}') if size <= 10 else (8, '{:.0f}') if size <= 20 else (6, '{:.0f}')
    for i in range(n_rows):
      for j in range(n_cols):
        v = M[i, j]
        if math.isfinite(v):
          ax.text(j, i, fmt.format(v), ha='center', va='center', fontsize=fontsize,
                  color='black' if v > 60.0 else 'white')
  step = max(1, size // 20)
  ax.set_xticks(range(0, n_cols, step))
  ax.set_xticklabels([str(j) for j in range(0, n_cols, step)])
  ax.set_yticks(range(0, n_rows, step))
  ax.set_yticklabels([str(i) for i in range(0, n_rows, step)])
  ax.set_xlabel('after training task j')
  ax.set_ylabel('evaluated task i')
  ax.set_title(title or 'accuracy matrix R[i, j] (%)')
  return _save(fig, path)


def plot_task_curves(R: ArrayLike, path: str, title: Optional[str] = None,
                     initial_accuracy: Optional[Sequence[float]] = None) -> str:
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
  plt = _pyplot()
  M = 100.0 * as_matrix(R)
  n_rows, n_cols = M.shape
  x = np.arange(1, n_cols + 1, dtype=np.float64)
  if initial_accuracy is not None:
    init = 100.0 * np.asarray([np.nan if v is None else v for v in initial_accuracy], np.float64)
    if init.shape != (n_rows,):
      raise ValueError(f'initial_accuracy has shape {init.shape}, expected ({n_rows},)')
    M = np.concatenate([init[:, None], M], axis=1)
    x = np.concatenate([[0.0], x])
  offset = 1 if initial_accuracy is not None else 0   # column index of "after task 0"

  fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(x) + 3.0), 4.5))
  colors = plt.get_cmap('tab10' if n_rows <= 10 else 'tab20' if n_rows <= 20 else 'viridis')
  for i in range(n_rows):
    color = colors(i % 20 if n_rows <= 20 else i / max(1, n_rows - 1))
    trained = offset + i   # column index where task i has just been trained
    before = slice(0, min(trained + 1, M.shape[1]))
    after = slice(trained, M.shape[1])
    if trained > 0:
      ax.plot(x[before], M[i, before], linestyle='--', color=color, alpha=0.6, linewidth=1.0,
              marker='.', markersize=4)
    ax.plot(x[after], M[i, after], linestyle='-', color=color, linewidth=1.5, marker='o',
            markersize=4, label=f'task {i}' if n_rows <= 20 else None)
  seen = 100.0 * seen_task_accuracy(R)
  if seen.size:
    ax.plot(x[offset:offset + seen.size], seen, color='black', linewidth=3.0, marker='s',
            markersize=5, label=f'avg. seen tasks (ACC {seen[-1]:.1f}%)')
  ax.set_xticks(x)
  ax.set_xticklabels(['init' if v == 0 else str(int(v)) for v in x])
  ax.set_xlim(x[0] - 0.3, x[-1] + 0.3)
  ax.set_ylim(0.0, 102.0)
  ax.set_xlabel('tasks trained')
  ax.set_ylabel('accuracy (%)')
  ax.grid(True, alpha=0.3)
  ax.set_title(title or 'accuracy per task (dashed: before the task is trained)')
  ax.legend(loc='center left', bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
  return _save(fig, path)


def load_results(workdir: str) -> dict[str, Any]:
  """Reads and validates `workdir/results.json`.

  Args:
    workdir: a run directory (or the path of a results.json file itself).

  Returns:
    The parsed document; it has at least a valid `accuracy_matrix`.

  Raises:
    FileNotFoundError: if the file does not exist.
    ValueError: if it is not valid JSON or has no usable `accuracy_matrix`.
  """
  path = workdir if workdir.endswith('.json') and os.path.isfile(workdir) else os.path.join(
      workdir, RESULTS_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no results file: {path}')
  try:
    with open(path) as f:
      document = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not valid JSON: {e}') from e
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
  parts = [p for p in (algo, bench) if p]
  return ' / '.join(str(p) for p in parts) if parts else fallback


def _summary_line(document: dict[str, Any]) -> str:
  summary = document.get('summary') or {}
  parts = []
  for key in ('acc', 'bwt', 'fwt', 'forgetting'):
    v = summary.get(key)
    if isinstance(v, (int, float)) and math.isfinite(v):
      parts.append(f'{key.upper()} {100 * v:+.1f}' if key in ('bwt', 'fwt')
                   else f'{key.upper()} {100 * v:.1f}')
  return ', '.join(parts)


def plot_results(workdir: str) -> list[str]:
  """Draws the plots of a run from `workdir/results.json`, into `workdir`.

  Writes `accuracy_matrix.png`, `task_accuracy.png` and, when the run has a
  task-incremental matrix, `task_il_accuracy_matrix.png`.

  Args:
    workdir: the run directory.

  Returns:
    The paths written.

  Raises:
    FileNotFoundError: if `workdir/results.json` does not exist.
    ValueError: if it is malformed.
  """
  document = load_results(workdir)
  workdir = os.path.dirname(workdir) if workdir.endswith('.json') else workdir
  name = _run_label(document, os.path.basename(os.path.normpath(workdir)))
  summary = _summary_line(document)
  suffix = f'\n{summary}' if summary else ''
  initial = document.get('initial_accuracy')
  R = document['accuracy_matrix']
  if initial is not None and len(initial) != len(R):
    initial = None
  paths = [
      plot_accuracy_matrix(R, os.path.join(workdir, 'accuracy_matrix.png'),
                           title=f'{name}: accuracy R[i, j] (%){suffix}'),
      plot_task_curves(R, os.path.join(workdir, 'task_accuracy.png'),
                       title=f'{name}: accuracy per task{suffix}', initial_accuracy=initial),
  ]
  task_il = document.get('task_il_accuracy_matrix')
  if task_il is not None:
    try:
      as_matrix(task_il)
    except ValueError as e:
      raise ValueError(f'{os.path.join(workdir, RESULTS_FILE)}: task_il_accuracy_matrix: {e}') from e
    paths.append(plot_accuracy_matrix(task_il, os.path.join(workdir, 'task_il_accuracy_matrix.png'),
                                      title=f'{name}: task-IL accuracy R[i, j] (%)'))
  return paths


def compare_runs(workdirs: Sequence[str], path: str,
                 labels: Optional[Sequence[str]] = None) -> str:
  """Draws the average accuracy over seen tasks after each task, for several runs.

  Args:
    workdirs: run directories, each with a `results.json`.
    path: the PNG to write (parent directories are created).
    labels: optional legend labels, one per run; by default "algo / benchmark"
      from each run's config (or the directory name).

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
  if labels is None:
    labels = [_run_label(d, os.path.basename(os.path.normpath(w)))
              for d, w in zip(documents, workdirs)]
    if len(set(labels)) < len(labels):   # same algo/benchmark: tell the runs apart
      labels = [f'{label} ({os.path.basename(os.path.normpath(w))})'
                for label, w in zip(labels, workdirs)]
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7.5, 4.5))
  longest = 1
  for document, label in zip(documents, labels):
    seen = 100.0 * seen_task_accuracy(document['accuracy_matrix'])
    if not seen.size:
      continue
    x = np.arange(1, seen.size + 1)
    longest = max(longest, seen.size)
    ax.plot(x, seen, marker='o', linewidth=2.0, markersize=4,
            label=f'{label}: ACC {seen[-1]:.1f}%')
  step = max(1, longest // 20)
  ax.set_xticks(range(1, longest + 1, step))
  ax.set_xlim(0.7, longest + 0.3)
  ax.set_ylim(0.0, 102.0)
  ax.set_xlabel('tasks trained')
  ax.set_ylabel('average accuracy over seen tasks (%)')
  ax.grid(True, alpha=0.3)
  ax.set_title('average accuracy over seen tasks')
  ax.legend(loc='lower left', fontsize=8)
  return _save(fig, path)
