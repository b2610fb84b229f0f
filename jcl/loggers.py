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

Extension point: more backends (TensorBoard, W&B, ...) implement the `Logger`
protocol and are made available to `make_loggers` with `register_logger`.
"""
from __future__ import annotations

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


register_logger('console', lambda workdir: ConsoleLogger())
register_logger('jsonl', _make_jsonl)


def make_loggers(names: Union[str, Sequence[str]],
                 workdir: Optional[PathLike] = None) -> MultiLogger:
  """Builds a `MultiLogger` from backend names.

  Args:
    names: backend names, e.g. `['console', 'jsonl']`; a single string may be
      comma-separated (`'console,jsonl'`), convenient for command-line flags.
    workdir: directory for file-based backends ('jsonl').

  Returns:
    A `MultiLogger` over the requested loggers (empty if `names` is empty).

  Raises:
    ValueError: for unknown or duplicated names, listing the valid ones.
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
  return MultiLogger([_FACTORIES[n](workdir) for n in names])


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
