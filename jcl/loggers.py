"""Metric loggers: a small writer interface and console / JSONL backends.

The interface follows clu's `MetricWriter`: a logger receives scalars at a
step (`write_scalars`) and, occasionally, tables such as the accuracy matrix
after each task (`write_table`). Imports NumPy and the standard library only
(tqdm lazily, for `ProgressBar`); never JAX. JAX arrays and other array-likes
are converted through `np.asarray`.

Typical use::

  logger = make_loggers(['console', 'jsonl'], workdir)
  logger.write_scalars(step, {'loss': loss, 'acc': acc})
  logger.write_table('accuracy_matrix', R, step=task)
  logger.close()

Extension point: more backends implement the `Logger` protocol and are made
available to `make_loggers` with `register_logger`. Built in, besides
'console' and 'jsonl':

* 'csv': `CsvLogger` (standard library only).
* 'tensorboard': `TensorBoardLogger` (tensorboardX; no TensorFlow).
* 'wandb': `WandbLogger` (Weights & Biases; offline by default).
* 'comet': `CometLogger` (comet_ml).

Third-party packages are imported lazily, when such a logger is built; install
them with `pip install 'jcl[loggers]'`.
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from typing import (Any, Callable, Mapping, Optional, Protocol, Sequence,
                    Union, runtime_checkable)

import numpy as np

from jcl import metrics as metrics_lib

__all__ = [
    'Logger',
    'ConsoleLogger',
    'JsonlLogger',
    'MultiLogger',
    'CsvLogger',
    'TensorBoardLogger',
    'WandbLogger',
    'CometLogger',
    'ProgressBar',
    'register_logger',
    'available_loggers',
    'make_loggers',
]

PathLike = Union[str, os.PathLike]
Table = Union[Mapping[str, Any], Sequence[Any], np.ndarray]


@runtime_checkable
class Logger(Protocol):
  """What every logger implements (cf. clu's `MetricWriter`)."""

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """Writes scalar values (loss, accuracy, ...) at a step."""

  def write_table(self, name: str, table: Table,
                  step: Optional[int] = None) -> None:
    """Writes a table: a mapping, or a (nested) sequence / array such as the
    `[T_eval, T_trained]` accuracy matrix after a task."""

  def flush(self) -> None:
    """Makes everything written so far durable / visible."""

  def close(self) -> None:
    """Flushes and releases resources; the logger is not used afterwards."""


class _ContextManagerMixin:
  """`with logger: ...` closes the logger on exit."""

  def __enter__(self):
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


# ---------------------------------------------------------------------------
# Value conversion.
# ---------------------------------------------------------------------------


def _to_python(x: Any) -> Any:
  """Converts NumPy (and other array-like) values to JSON-able Python values.

  NumPy scalars become `float` / `int` / `bool`; arrays become nested lists;
  mappings and sequences are converted recursively; non-finite floats (NaN,
  +-inf) become `None` so that the output is strict JSON (`null`).
  """
  if x is None or isinstance(x, (bool, str)):
    return x
  if isinstance(x, np.bool_):
    return bool(x)
  if isinstance(x, (int, np.integer)):
    return int(x)
  if isinstance(x, (float, np.floating)):
    x = float(x)
    return x if math.isfinite(x) else None
  if isinstance(x, Mapping):
    return {str(k): _to_python(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_to_python(v) for v in x]
  if isinstance(x, np.ndarray) or hasattr(x, '__array__'):
    return _to_python(np.asarray(x).tolist())
  return x


def _format_value(v: Any, precision: int) -> str:
  """Formats one scalar for the console: ints as ints, floats with `g`."""
  if hasattr(v, '__array__') and not isinstance(v, np.generic):
    array = np.asarray(v)
    if array.ndim == 0:
      v = array.item()
  if isinstance(v, (bool, np.bool_)):
    return str(bool(v))
  if isinstance(v, (int, np.integer)):
    return str(int(v))
  if isinstance(v, (float, np.floating)):
    return f'{float(v):.{precision}g}'
  return str(v)


# ---------------------------------------------------------------------------
# Loggers.
# ---------------------------------------------------------------------------


class ConsoleLogger(_ContextManagerMixin):
  """Prints scalars as one compact line and tables as readable text.

  Example output::

    [step 120] loss=0.4312 acc=0.91
    [step 2] accuracy_matrix:
            after 0  after 1  after 2
    task 0     95.0     90.0     85.0
    ...

  Attributes:
    print_fn: called with each line to print (default `print`).
    every: scalars are printed only at steps with `step % every == 0`; tables
      are always printed.
    precision: significant digits of float scalars.
  """

  def __init__(self, print_fn: Callable[[str], Any] = print, every: int = 1,
               precision: int = 4):
    if every < 1:
      raise ValueError(f'every must be >= 1, got {every}.')
    self.print_fn = print_fn
    self.every = every
    self.precision = precision

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if step % self.every:
      return
    parts = [f'{k}={_format_value(v, self.precision)}'
             for k, v in scalars.items()]
    self.print_fn(' '.join([f'[step {step}]'] + parts))

  def write_table(self, name: str, table: Table,
                  step: Optional[int] = None) -> None:
    header = f'{name}:' if step is None else f'[step {step}] {name}:'
    self.print_fn(header + '\n' + self._format_table(table))

  def _format_table(self, table: Table) -> str:
    if isinstance(table, Mapping):
      return '\n'.join(f'  {k}: {_format_value(v, self.precision)}'
                       for k, v in table.items())
    try:
      array = np.asarray(table, dtype=np.float64)
    except (TypeError, ValueError):
      array = None
    if array is not None and array.ndim == 2:
      return metrics_lib.format_matrix(array)  # Accuracy matrix, in percent.
    if array is not None and array.ndim <= 1:
      return '  ' + ' '.join(
          _format_value(v, self.precision) for v in np.atleast_1d(array))
    return '\n'.join(f'  {row}' for row in table)

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


class JsonlLogger(_ContextManagerMixin):
  """Appends JSON lines to `workdir/metrics.jsonl` and `workdir/tables.jsonl`.

  * `write_scalars(step, scalars)` appends `{"step": step, "time": t,
    **scalars}` to `metrics.jsonl` (`t` = `time.time()`).
  * `write_table(name, table, step)` appends `{"name": name, "step": step,
    "time": t, "table": table}` to `tables.jsonl`.

  NumPy scalars become Python numbers, arrays nested lists (`.tolist()`), and
  non-finite floats (NaN, e.g. untrained columns of the accuracy matrix)
  `null`, so the files are strict JSON. Files are opened lazily in append mode,
  so a restarted run continues the same files. Read them back with
  `[json.loads(line) for line in open(path)]`.
  """

  METRICS_FILENAME = 'metrics.jsonl'
  TABLES_FILENAME = 'tables.jsonl'

  def __init__(self, workdir: PathLike):
    self.workdir = os.fspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    self.metrics_path = os.path.join(self.workdir, self.METRICS_FILENAME)
    self.tables_path = os.path.join(self.workdir, self.TABLES_FILENAME)
    self._files: dict[str, Any] = {}
    self._closed = False

  def _write(self, path: str, record: Mapping[str, Any]) -> None:
    if self._closed:
      raise ValueError(f'JsonlLogger({self.workdir!r}) is closed.')
    f = self._files.get(path)
    if f is None:
      f = self._files[path] = open(path, 'a', encoding='utf-8')
    f.write(json.dumps(_to_python(record), allow_nan=False) + '\n')

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    reserved = {'step', 'time'} & set(scalars)
    if reserved:
      raise ValueError(f'Scalar names {sorted(reserved)} are reserved by '
                       'JsonlLogger.')
    self._write(self.metrics_path,
                {'step': int(step), 'time': time.time(), **scalars})

  def write_table(self, name: str, table: Table,
                  step: Optional[int] = None) -> None:
    self._write(self.tables_path, {
        'name': name,
        'step': None if step is None else int(step),
        'time': time.time(),
        'table': table,
    })

  def flush(self) -> None:
    for f in self._files.values():
      f.flush()

  def close(self) -> None:
    for f in self._files.values():
      f.close()
    self._files.clear()
    self._closed = True


class MultiLogger(_ContextManagerMixin):
  """Fans every call out to several loggers, in order."""

  def __init__(self, loggers: Sequence[Logger]):
    self.loggers: tuple[Logger, ...] = tuple(loggers)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    for logger in self.loggers:
      logger.write_scalars(step, scalars)

  def write_table(self, name: str, table: Table,
                  step: Optional[int] = None) -> None:
    for logger in self.loggers:
      logger.write_table(name, table, step=step)

  def flush(self) -> None:
    for logger in self.loggers:
      logger.flush()

  def close(self) -> None:
    for logger in self.loggers:
      logger.close()


# ---------------------------------------------------------------------------
# Helpers for the optional backends.
# ---------------------------------------------------------------------------


def _import_optional(module: str, logger_name: str):
  """Imports an optional dependency, or raises a helpful ImportError."""
  import importlib  # pylint: disable=g-import-not-at-top
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise ImportError(
        f'{logger_name} needs the {module!r} package, which is not installed. '
        f"Install the logger extras with: pip install 'jcl[loggers]' "
        f'(or: pip install {module}).') from e


def _scalar_value(v: Any) -> Union[int, float, Any]:
  """Converts a scalar (Python / NumPy / JAX, 0-d array) to `int` or `float`.

  NaN and infinities are kept as floats; non-numeric values are returned as
  converted by `_to_python`.
  """
  if hasattr(v, '__array__') and not isinstance(v, np.generic):
    array = np.asarray(v)
    if array.ndim == 0:
      v = array.item()
  if isinstance(v, (bool, np.bool_)):
    return int(bool(v))
  if isinstance(v, (int, np.integer)):
    return int(v)
  if isinstance(v, (float, np.floating)):
    return float(v)
  return _to_python(v)


def _table_rows(table: Table) -> tuple[list[str], list[list[Any]]]:
  """Turns a table into `(columns, rows)` of Python values (NaN -> None).

  * A mapping gives columns `['key', 'value']`, one row per item.
  * A 2-D array (e.g. the `[T_eval, T_trained]` accuracy matrix) gives columns
    `['task', 'after 0', 'after 1', ...]` and rows `['task i', R[i, 0], ...]`
    with values in percent (x100), as `metrics.format_matrix` prints them.
  * A 1-D array gives columns `['0', '1', ...]` and one row.
  * Anything else gives a single column 'value', one row per element.
  """
  if isinstance(table, Mapping):
    return ['key', 'value'], [[str(k), _to_python(v)]
                              for k, v in table.items()]
  try:
    array = np.asarray(table, dtype=np.float64)
  except (TypeError, ValueError):
    array = None
  if array is not None and array.ndim == 2:
    columns = ['task'] + [f'after {j}' for j in range(array.shape[1])]
    rows = [[f'task {i}'] + _to_python(100.0 * array[i])
            for i in range(array.shape[0])]
    return columns, rows
  if array is not None and array.ndim <= 1:
    values = _to_python(np.atleast_1d(array))
    return [str(j) for j in range(len(values))], [values]
  return ['value'], [[_to_python(row)] for row in table]


def _format_cell(v: Any) -> str:
  if v is None:
    return ''
  if isinstance(v, float):
    return f'{v:.1f}' if abs(v) >= 1 or v == 0 else f'{v:.4g}'
  return str(v)


def _markdown_table(table: Table) -> str:
  """Formats a table as a Markdown table (matrices in percent, NaN blank)."""
  columns, rows = _table_rows(table)
  lines = ['| ' + ' | '.join(columns) + ' |',
           '|' + '|'.join('---' for _ in columns) + '|']
  for row in rows:
    lines.append('| ' + ' | '.join(_format_cell(v) for v in row) + ' |')
  return '\n'.join(lines)


# ---------------------------------------------------------------------------
# CSV.
# ---------------------------------------------------------------------------


class CsvLogger(_ContextManagerMixin):
  """Writes scalars to `workdir/metrics.csv`, one row per `write_scalars`.

  Columns are `step`, `time`, then every scalar name in the order first seen
  (the union of all keys so far). Scalars missing from a row, NaN and None are
  written as empty cells; infinities as `inf` / `-inf`. When a call brings a
  new key, the whole file is rewritten once with the extended header (the old
  rows get empty cells in the new columns), so the file is always a single
  valid CSV readable with `csv.DictReader`. Rewrites only happen when the key
  set grows, which in practice is a handful of times per run.

  An existing `metrics.csv` is continued (its header and rows kept), like
  `JsonlLogger`. Tables are not representable in this flat format and are
  written to `workdir/tables.jsonl` (one JSON object per table, as in
  `JsonlLogger`).
  """

  FILENAME = 'metrics.csv'
  TABLES_FILENAME = 'tables.jsonl'
  RESERVED = ('step', 'time')

  def __init__(self, workdir: PathLike):
    self.workdir = os.fspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    self.path = os.path.join(self.workdir, self.FILENAME)
    self.tables_path = os.path.join(self.workdir, self.TABLES_FILENAME)
    self.fieldnames: list[str] = list(self.RESERVED)
    if os.path.exists(self.path) and os.path.getsize(self.path) > 0:
      with open(self.path, newline='', encoding='utf-8') as f:
        header = next(csv.reader(f), None)
      if header:
        self.fieldnames = list(header)
    self._file = None
    self._writer = None
    self._tables_file = None
    self._closed = False

  @staticmethod
  def _cell(v: Any) -> Any:
    v = _scalar_value(v)
    if v is None:
      return ''
    if isinstance(v, float):
      if math.isnan(v):
        return ''
      return repr(v)  # Round-trips exactly; 'inf' / '-inf' for infinities.
    return v

  def _open(self) -> None:
    new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
    self._file = open(self.path, 'a', newline='', encoding='utf-8')
    self._writer = csv.DictWriter(self._file, fieldnames=self.fieldnames,
                                  restval='')
    if new:
      self._writer.writeheader()

  def _extend_header(self, new_keys: Sequence[str]) -> None:
    """Rewrites the file with `new_keys` appended to the header."""
    if self._file is not None:
      self._file.close()
      self._file = self._writer = None
    rows = []
    if os.path.exists(self.path):
      with open(self.path, newline='', encoding='utf-8') as f:
        rows = list(csv.DictReader(f))
    self.fieldnames = self.fieldnames + list(new_keys)
    tmp_path = self.path + '.tmp'
    with open(tmp_path, 'w', newline='', encoding='utf-8') as f:
      writer = csv.DictWriter(f, fieldnames=self.fieldnames, restval='')
      writer.writeheader()
      writer.writerows(rows)
    os.replace(tmp_path, self.path)  # Atomic: never a half-written file.

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._closed:
      raise ValueError(f'CsvLogger({self.workdir!r}) is closed.')
    reserved = set(self.RESERVED) & set(scalars)
    if reserved:
      raise ValueError(f'Scalar names {sorted(reserved)} are reserved by '
                       'CsvLogger.')
    known = set(self.fieldnames)
    new_keys = [str(k) for k in scalars if str(k) not in known]
    if new_keys:
      self._extend_header(new_keys)
    if self._file is None:
      self._open()
    row = {'step': int(step), 'time': repr(time.time())}
    row.update({str(k): self._cell(v) for k, v in scalars.items()})
    self._writer.writerow(row)

  def write_table(self, name: str, table: Table,
                  step: Optional[int] = None) -> None:
    if self._closed:
      raise ValueError(f'CsvLogger({self.workdir!r}) is closed.')
    if self._tables_file is None:
      self._tables_file = open(self.tables_path, 'a', encoding='utf-8')
    record = {'name': name, 'step': None if step is None else int(step),
              'time': time.time(), 'table': table}
    self._tables_file.write(
        json.dumps(_to_python(record), allow_nan=False) + '\n')

  def flush(self) -> None:
    for f in (self._file, self._tables_file):
      if f is not None:
        f.flush()

  def close(self) -> None:
    for f in (self._file, self._tables_file):
      if f is not None:
        f.close()
    self._file = self._writer = self._tables_file = None
    self._closed = True


# ---------------------------------------------------------------------------
# TensorBoard (tensorboardX: no TensorFlow needed).
# ---------------------------------------------------------------------------


class TensorBoardLogger(_ContextManagerMixin):
  """Writes TensorBoard event files under `workdir/tensorboard`.

  Uses tensorboardX's `SummaryWriter` (no TensorFlow). Scalars go through
  `add_scalar(name, value, step)` (non-numeric values are skipped); tables
  through `add_text(name, markdown, step)`, a Markdown table (accuracy matrices
  in percent, NaN cells blank) that TensorBoard's Text tab renders. View with
  `tensorboard --logdir workdir/tensorboard`.
  """

  SUBDIR = 'tensorboard'

  def __init__(self, workdir: PathLike, flush_secs: int = 30, **writer_kwargs):
    tensorboardx = _import_optional('tensorboardX', 'TensorBoardLogger')
    self.logdir = os.path.join(os.fspath(workdir), self.SUBDIR)
    os.makedirs(self.logdir, exist_ok=True)
    self._writer = tensorboardx.SummaryWriter(
        logdir=self.logdir, flush_secs=flush_secs, **writer_kwargs)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    for k, v in scalars.items():
      v = _scalar_value(v)
      if isinstance(v, (int, float)):
        self._writer.add_scalar(str(k), float(v), int(step))

  def write_table(self, name: str, table: Table,
                  step: Optional[int] = None) -> None:
    self._writer.add_text(name, _markdown_table(table),
                          None if step is None else int(step))

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


# ---------------------------------------------------------------------------
# Weights & Biases.
# ---------------------------------------------------------------------------


class WandbLogger(_ContextManagerMixin):
  """Logs to Weights & Biases; offline (no network) unless told otherwise.

  The run is created with `wandb.init(dir=workdir, project=project,
  mode=mode or $WANDB_MODE or 'offline', config=config)`; offline runs land in
  `workdir/wandb/offline-run-*` and can be uploaded later with `wandb sync`.

  * Scalars: `run.log(scalars, step=step)`. W&B needs non-decreasing steps;
    it drops (with a warning) data logged at an earlier step.
  * Tables: a `wandb.Table` (accuracy matrices in percent, NaN as None). W&B
    steps are training steps while a table's `step` is often a task index, so
    a table is attached to the latest scalar step (never going back in time),
    and its own `step`, if given, is logged alongside as `'{name}/step'`.
  * `close()` finishes the run.

  Attributes:
    run: the `wandb` run object.
  """

  def __init__(self, workdir: Optional[PathLike] = None, project: str = 'jcl',
               mode: Optional[str] = None,
               config: Optional[Mapping[str, Any]] = None, **init_kwargs):
    self._wandb = _import_optional('wandb', 'WandbLogger')
    self.workdir = None if workdir is None else os.fspath(workdir)
    if self.workdir is not None:
      os.makedirs(self.workdir, exist_ok=True)
    self.mode = mode or os.environ.get('WANDB_MODE', 'offline')
    self.run = self._wandb.init(
        dir=self.workdir, project=project, mode=self.mode,
        config=None if config is None else _to_python(dict(config)),
        **init_kwargs)
    self._last_step: Optional[int] = None
    self._closed = False

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    step = int(step)
    self.run.log({str(k): _scalar_value(v) for k, v in scalars.items()},
                 step=step)
    self._last_step = step if self._last_step is None else max(
        self._last_step, step)

  def write_table(self, name: str, table: Table,
                  step: Optional[int] = None) -> None:
    columns, rows = _table_rows(table)
    data: dict[str, Any] = {
        name: self._wandb.Table(columns=columns, data=rows)}
    if step is not None:
      data[f'{name}/step'] = int(step)
    if self._last_step is None:
      self.run.log(data)
    else:
      self.run.log(data, step=self._last_step)

  def flush(self) -> None:
    pass  # wandb streams data in the background; `close` finishes the run.

  def close(self) -> None:
    if not self._closed:
      self._closed = True
      self.run.finish()


# ---------------------------------------------------------------------------
# Comet.
# ---------------------------------------------------------------------------


class CometLogger(_ContextManagerMixin):
  """Logs to Comet (`comet_ml`), imported only when this logger is built.

  Online by default (needs `COMET_API_KEY`); with `offline=True` an
  `OfflineExperiment` writes its archive under `workdir/comet`. Scalars go
  through `log_metrics(scalars, step=step)`; tables through `log_table` as a
  CSV (`{name}.csv`, matrices in percent); `close()` ends the experiment.
  """

  def __init__(self, workdir: Optional[PathLike] = None,
               project_name: Optional[str] = 'jcl', offline: bool = False,
               **experiment_kwargs):
    comet_ml = _import_optional('comet_ml', 'CometLogger')
    if offline:
      if workdir is None:
        raise ValueError('An offline CometLogger needs a workdir.')
      directory = os.path.join(os.fspath(workdir), 'comet')
      os.makedirs(directory, exist_ok=True)
      self.experiment = comet_ml.OfflineExperiment(
          project_name=project_name, offline_directory=directory,
          **experiment_kwargs)
    else:
      self.experiment = comet_ml.Experiment(project_name=project_name,
                                            **experiment_kwargs)
    self._closed = False

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    self.experiment.log_metrics(
        {str(k): _scalar_value(v) for k, v in scalars.items()},
        step=int(step))

  def write_table(self, name: str, table: Table,
                  step: Optional[int] = None) -> None:
    columns, rows = _table_rows(table)
    self.experiment.log_table(f'{name}.csv', tabular_data=rows,
                              headers=columns,
                              **({} if step is None else {'step': int(step)}))

  def flush(self) -> None:
    pass

  def close(self) -> None:
    if not self._closed:
      self._closed = True
      self.experiment.end()


# ---------------------------------------------------------------------------
# Registry: the extension point for more backends.
# ---------------------------------------------------------------------------

# name -> factory(workdir) returning a Logger. `workdir` may be None.
_FACTORIES: dict[str, Callable[[Optional[PathLike]], Logger]] = {}


def register_logger(name: str,
                    factory: Callable[[Optional[PathLike]], Logger],
                    overwrite: bool = False) -> None:
  """Makes a logger backend available to `make_loggers` under `name`.

  This is how TensorBoard / W&B backends plug in: implement the `Logger`
  protocol (importing the heavy dependency lazily inside the factory) and
  register a `factory(workdir) -> Logger`.

  Args:
    name: the name used in `make_loggers(names, ...)`.
    factory: called with the `workdir` (possibly None) to build the logger.
    overwrite: allow replacing an existing registration.
  """
  if name in _FACTORIES and not overwrite:
    raise ValueError(f'A logger named {name!r} is already registered.')
  _FACTORIES[name] = factory


def available_loggers() -> tuple[str, ...]:
  """Returns the sorted names accepted by `make_loggers`."""
  return tuple(sorted(_FACTORIES))


def _make_jsonl(workdir: Optional[PathLike]) -> Logger:
  if workdir is None:
    raise ValueError("The 'jsonl' logger needs a workdir.")
  return JsonlLogger(workdir)


def _needs_workdir(name: str, cls):
  def factory(workdir: Optional[PathLike]) -> Logger:
    if workdir is None:
      raise ValueError(f'The {name!r} logger needs a workdir.')
    return cls(workdir)
  return factory


register_logger('console', lambda workdir: ConsoleLogger())
register_logger('jsonl', _make_jsonl)
register_logger('csv', _needs_workdir('csv', CsvLogger))
register_logger('tensorboard', _needs_workdir('tensorboard',
                                              TensorBoardLogger))
register_logger('wandb', lambda workdir: WandbLogger(workdir))
register_logger('comet', lambda workdir: CometLogger(workdir))


def make_loggers(names: Union[str, Sequence[str]],
                 workdir: Optional[PathLike] = None) -> MultiLogger:
  """Builds a `MultiLogger` from backend names.

  Args:
    names: backend names, e.g. `['console', 'jsonl']`; a single string may be
      comma-separated (`'console,jsonl'`), convenient for command-line flags.
    workdir: directory for file-based backends ('jsonl', 'csv',
      'tensorboard'; 'wandb' puts its run directory there).

  Returns:
    A `MultiLogger` over the requested loggers (empty if `names` is empty).

  Raises:
    ValueError: for unknown or duplicated names, listing the valid ones.
    ImportError: when an optional backend's package is missing (the message
      says to `pip install 'jcl[loggers]'`).
  """
  if isinstance(names, str):
    names = [n.strip() for n in names.split(',') if n.strip()]
  names = list(names)
  unknown = [n for n in names if n not in _FACTORIES]
  if unknown:
    raise ValueError(f'Unknown logger name(s) {unknown}; valid names are '
                     f'{list(available_loggers())}.')
  duplicated = sorted({n for n in names if names.count(n) > 1})
  if duplicated:
    raise ValueError(f'Logger name(s) {duplicated} given more than once.')
  built: list[Logger] = []
  try:
    for n in names:
      built.append(_FACTORIES[n](workdir))
  except BaseException:
    for logger in built:  # Do not leak open files / runs on failure.
      logger.close()
    raise
  return MultiLogger(built)


# ---------------------------------------------------------------------------
# Progress bar.
# ---------------------------------------------------------------------------


def _stdout_is_tty() -> bool:
  try:
    return bool(sys.stdout.isatty())
  except (AttributeError, ValueError):  # No stdout, or a closed one.
    return False


class ProgressBar(_ContextManagerMixin):
  """A thin wrapper over `tqdm` that can be switched off cleanly.

  The bar is disabled (every method is a no-op and tqdm is not even imported)
  when `enabled=False`, or when stdout is not a TTY and `force=False`, so that
  CI logs and redirected output stay clean.

  Args:
    total: expected number of iterations (None if unknown).
    desc: a prefix for the bar.
    enabled: set False to disable the bar.
    force: show the bar even when stdout is not a TTY.
    **tqdm_kwargs: passed on to `tqdm.tqdm` (e.g. `file=`, `leave=`).
  """

  def __init__(self, total: Optional[int] = None, desc: Optional[str] = None,
               enabled: bool = True, force: bool = False, **tqdm_kwargs):
    self.enabled = bool(enabled) and (force or _stdout_is_tty())
    self._bar = None
    if self.enabled:
      from tqdm import tqdm  # Lazy: only needed when the bar is shown.
      self._bar = tqdm(total=total, desc=desc, **tqdm_kwargs)

  def update(self, n: int = 1) -> None:
    if self._bar is not None:
      self._bar.update(n)

  def set_postfix(self, values: Mapping[str, Any]) -> None:
    if self._bar is not None:
      self._bar.set_postfix({k: _to_python(v) for k, v in values.items()})

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
