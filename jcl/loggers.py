"""Metric writers: a small clu-style `MetricWriter` interface, one class per backend.

A writer receives scalars, images and texts at a step, and the run's config
once (`write_hparams`). This module imports NumPy and the standard library only;
third-party packages (tensorboardX, wandb, tqdm, pillow) are imported lazily,
when a writer that needs them is built or used. JAX arrays and other
array-likes are converted through `np.asarray`; never JAX itself.

Typical use::

  writer = make_writer('console,jsonl,tensorboard', workdir, hparams=flat_config)
  writer.write_scalars(step, {'loss': loss, 'accuracy': acc})
  writer.write_images(step, {'accuracy_matrix': accuracy_matrix_image(R)})
  writer.write_texts(step, {'accuracy_matrix': metrics.format_matrix(R)})
  writer.close()

Backends (names for `make_writer`):

* 'console': `ConsoleWriter`, prints scalars and texts.
* 'jsonl': `JsonlWriter`, `metrics.jsonl`, `texts.jsonl`, `hparams.json`.
* 'csv': `CsvWriter`, `metrics.csv` (scalars only).
* 'tensorboard': `TensorBoardWriter` (tensorboardX; no TensorFlow).
* 'wandb': `WandbWriter` (Weights & Biases; offline by default).

More backends implement `MetricWriter` (subclassing `BaseWriter` gives no-op
defaults) and are made available to `make_writer` with `register_writer`.
Install the optional packages with `pip install 'jcl[loggers]'`.
"""

from __future__ import annotations

import csv
import html
import importlib
import json
import logging
import math
import os
import sys
import time
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence, Union, runtime_checkable

import numpy as np

__all__ = [
  'MetricWriter',
  'BaseWriter',
  'ConsoleWriter',
  'JsonlWriter',
  'CsvWriter',
  'TensorBoardWriter',
  'WandbWriter',
  'MultiWriter',
  'accuracy_matrix_image',
  'register_writer',
  'available_writers',
  'make_writer',
  'ProgressBar',
]

PathLike = Union[str, os.PathLike]

_log = logging.getLogger(__name__)


@runtime_checkable
class MetricWriter(Protocol):
  """What every writer implements (cf. clu's `metric_writers.MetricWriter`)."""

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """Writes scalar values (loss, accuracy, ...) at a step."""

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """Writes images at a step: each `[H, W, 3]` uint8 (or float in [0, 1], or
    `[H, W]` grayscale)."""

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    """Writes texts (e.g. a formatted accuracy matrix) at a step."""

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """Writes the run's config: a flat mapping of dotted paths to scalars /
    strings, e.g. `{'optimizer.lr': 0.1, 'method': 'ewc'}`."""

  def flush(self) -> None:
    """Makes everything written so far durable / visible."""

  def close(self) -> None:
    """Flushes and releases resources; the writer is not used afterwards."""


class _ContextManagerMixin:
  """`with writer: ...` closes the writer on exit."""

  def __enter__(self):
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


class BaseWriter(_ContextManagerMixin):
  """A `MetricWriter` whose methods all do nothing; backends override some."""

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    pass

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    pass

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    pass

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    pass

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


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


def _item(v: Any) -> Any:
  """Unwraps NumPy scalars and 0-d array-likes (JAX included) to Python."""
  if hasattr(v, '__array__') and np.ndim(v) == 0:
    v = np.asarray(v).item()
  return v


def _scalar_value(v: Any) -> Union[int, float, Any]:
  """Converts a scalar to `int` or `float` (bools to 0 / 1; NaN, inf kept).

  Non-numeric values are returned as converted by `_to_python`.
  """
  v = _item(v)
  if isinstance(v, bool):
    return int(v)
  if isinstance(v, (int, float)):
    return v
  return _to_python(v)


def _hparam_value(v: Any) -> Union[bool, int, float, str]:
  """A config value as `bool` / `int` / `float` / `str` (anything else: `str`)."""
  v = _item(v)
  return v if isinstance(v, (bool, int, float, str)) else str(v)


def _format_value(v: Any, precision: int) -> str:
  """Formats one scalar for the console: ints as ints, floats with `g`."""
  v = _item(v)
  if isinstance(v, bool):
    return str(v)
  if isinstance(v, int):
    return str(v)
  if isinstance(v, float):
    return f'{v:.{precision}g}'
  return str(v)


def _as_rgb_uint8(image: Any) -> np.ndarray:
  """`[H, W, 3]` / `[H, W, 1]` / `[H, W]`, uint8 or float in [0, 1] -> `[H, W, 3]` uint8."""
  array = np.asarray(image)
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  if array.ndim == 2:
    array = np.stack([array] * 3, axis=-1)
  if array.ndim != 3 or array.shape[-1] != 3:
    raise ValueError(f'Expected an image [H, W, 3] or [H, W], got shape {array.shape}.')
  if array.dtype == np.uint8:
    return array
  if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.floating):
    array = np.round(np.clip(np.nan_to_num(array.astype(np.float64)), 0.0, 1.0) * 255)
  return np.clip(array, 0, 255).astype(np.uint8)


def _import_optional(module: str, who: str, package: Optional[str] = None, extra: str = 'loggers'):
  """Imports an optional dependency, or raises an ImportError naming the pip extra."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise ImportError(
      f'{who} needs the {module!r} package, which is not installed. Install the '
      f"optional dependencies with: pip install 'jcl[{extra}]' "
      f'(or: pip install {package or module}).'
    ) from e


# ---------------------------------------------------------------------------
# Accuracy matrix as an image.
# ---------------------------------------------------------------------------

# Viridis at 0, 1/4, 1/2, 3/4, 1: dark purple -> yellow, luminance increasing.
_COLORMAP = np.array(
  [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)
_NAN_COLOR = (128, 128, 128)
_GRID_COLOR = (255, 255, 255)


def accuracy_matrix_image(matrix: Any, cell: int = 24) -> np.ndarray:
  """Renders an accuracy matrix as a heatmap, NumPy only.

  Args:
    matrix: `[T, T]` accuracies (fractions in [0, 1]; NaN = not trained yet),
      row i = task i evaluated, column j = after training task j. Any
      `[R, C]` works.
    cell: side of one cell in pixels (>= 2).

  Returns:
    `[T * cell, T * cell, 3]` uint8: low values dark, high bright (viridis),
    NaN cells mid-gray, a 1-pixel white line between cells.
  """
  m = np.asarray(matrix, dtype=np.float64)
  if m.ndim != 2:
    raise ValueError(f'Expected a [T, T] matrix, got shape {m.shape}.')
  if cell < 2:
    raise ValueError(f'cell must be >= 2, got {cell}.')
  nan = np.isnan(m)
  x = np.clip(np.where(nan, 0.0, m), 0.0, 1.0) * (len(_COLORMAP) - 1)
  lo = np.minimum(np.floor(x).astype(int), len(_COLORMAP) - 2)
  frac = (x - lo)[..., None]
  colors = (1 - frac) * _COLORMAP[lo] + frac * _COLORMAP[lo + 1]
  colors = np.round(colors).astype(np.uint8)
  colors[nan] = _NAN_COLOR
  image = np.repeat(np.repeat(colors, cell, axis=0), cell, axis=1)
  image[cell::cell, :] = _GRID_COLOR
  image[:, cell::cell] = _GRID_COLOR
  return image


# ---------------------------------------------------------------------------
# Writers.
# ---------------------------------------------------------------------------


class ConsoleWriter(BaseWriter):
  """Prints scalars as one line and texts as blocks; ignores images and hparams.

  Output::

    [step 120] loss=0.4312 accuracy=0.91
    [step 120] accuracy_matrix:
    <text>

  Attributes:
    print_fn: called with each line / block to print (default `print`).
    precision: significant digits of float scalars.
  """

  def __init__(self, print_fn: Callable[[str], Any] = print, precision: int = 4):
    self.print_fn = print_fn
    self.precision = precision

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if scalars:
      parts = [f'{k}={_format_value(v, self.precision)}' for k, v in scalars.items()]
      self.print_fn(' '.join([f'[step {step}]'] + parts))

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    for name, text in texts.items():
      self.print_fn(f'[step {step}] {name}:\n{text}')


class JsonlWriter(BaseWriter):
  """Writes JSON files under `workdir`; ignores images.

  * `metrics.jsonl`: one `{"step", "time", **scalars}` line per `write_scalars`.
  * `texts.jsonl`: one `{"step", "time", "name", "text"}` line per text.
  * `hparams.json`: the hparams mapping, overwritten by each `write_hparams`.

  NumPy / JAX values become Python numbers and NaN / inf `null`, so the files
  are strict JSON; `time` is `time.time()`. The `.jsonl` files are opened
  lazily in append mode, so a resumed run continues them. Read them back with
  `[json.loads(line) for line in open(path)]`.
  """

  METRICS_FILENAME = 'metrics.jsonl'
  TEXTS_FILENAME = 'texts.jsonl'
  HPARAMS_FILENAME = 'hparams.json'
  RESERVED = ('step', 'time')

  def __init__(self, workdir: PathLike):
    self.workdir = os.fspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    self.metrics_path = os.path.join(self.workdir, self.METRICS_FILENAME)
    self.texts_path = os.path.join(self.workdir, self.TEXTS_FILENAME)
    self.hparams_path = os.path.join(self.workdir, self.HPARAMS_FILENAME)
    self._files: dict[str, Any] = {}
    self._closed = False

  def _check_open(self) -> None:
    if self._closed:
      raise ValueError(f'JsonlWriter({self.workdir!r}) is closed.')

  def _append(self, path: str, record: Mapping[str, Any]) -> None:
    self._check_open()
    f = self._files.get(path)
    if f is None:
      f = self._files[path] = open(path, 'a', encoding='utf-8')
    f.write(json.dumps(_to_python(record), allow_nan=False, default=str) + '\n')

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    reserved = set(self.RESERVED) & set(scalars)
    if reserved:
      raise ValueError(f'Scalar names {sorted(reserved)} are reserved by JsonlWriter.')
    self._append(self.metrics_path, {'step': int(step), 'time': time.time(), **scalars})

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    for name, text in texts.items():
      self._append(
        self.texts_path,
        {'step': int(step), 'time': time.time(), 'name': str(name), 'text': str(text)},
      )

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    self._check_open()
    text = json.dumps(_to_python(dict(hparams)), indent=2, allow_nan=False, default=str)
    tmp_path = self.hparams_path + '.tmp'
    with open(tmp_path, 'w', encoding='utf-8') as f:
      f.write(text + '\n')
    os.replace(tmp_path, self.hparams_path)  # Atomic: never a half-written file.

  def flush(self) -> None:
    for f in self._files.values():
      f.flush()

  def close(self) -> None:
    for f in self._files.values():
      f.close()
    self._files.clear()
    self._closed = True


class CsvWriter(BaseWriter):
  """Writes scalars to `workdir/metrics.csv`, one row per `write_scalars`.

  Columns are `step`, `time`, then every scalar name in the order first seen.
  Missing scalars, NaN and None are empty cells; infinities `inf` / `-inf`.
  When a call brings a new name, the file is rewritten once with the extended
  header (earlier rows get empty cells), so it is always one valid CSV for
  `csv.DictReader`. An existing file is continued. Images, texts and hparams
  are ignored.
  """

  FILENAME = 'metrics.csv'
  RESERVED = ('step', 'time')

  def __init__(self, workdir: PathLike):
    self.workdir = os.fspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    self.path = os.path.join(self.workdir, self.FILENAME)
    self.fieldnames: list[str] = list(self.RESERVED)
    if os.path.exists(self.path) and os.path.getsize(self.path) > 0:
      with open(self.path, newline='', encoding='utf-8') as f:
        header = next(csv.reader(f), None)
      if header:
        self.fieldnames = list(header)
    self._file = None
    self._writer = None
    self._closed = False

  @staticmethod
  def _cell(v: Any) -> Any:
    v = _scalar_value(v)
    if v is None or (isinstance(v, float) and math.isnan(v)):
      return ''
    return repr(v) if isinstance(v, float) else v  # repr round-trips; 'inf' / '-inf'.

  def _open(self) -> None:
    new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
    self._file = open(self.path, 'a', newline='', encoding='utf-8')
    self._writer = csv.DictWriter(self._file, fieldnames=self.fieldnames, restval='')
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
      raise ValueError(f'CsvWriter({self.workdir!r}) is closed.')
    reserved = set(self.RESERVED) & set(scalars)
    if reserved:
      raise ValueError(f'Scalar names {sorted(reserved)} are reserved by CsvWriter.')
    known = set(self.fieldnames)
    new_keys = [str(k) for k in scalars if str(k) not in known]
    if new_keys:
      self._extend_header(new_keys)
    if self._file is None:
      self._open()
    row = {'step': int(step), 'time': repr(time.time())}
    row.update({str(k): self._cell(v) for k, v in scalars.items()})
    self._writer.writerow(row)

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    self._file = self._writer = None
    self._closed = True


def _markdown_table(hparams: Mapping[str, Any]) -> str:
  """`| name | value |` Markdown table of a flat mapping."""

  def cell(x: Any) -> str:
    return str(x).replace('|', '\\|')

  lines = ['| name | value |', '|---|---|']
  lines += [f'| {cell(k)} | {cell(v)} |' for k, v in hparams.items()]
  return '\n'.join(lines)


class TensorBoardWriter(BaseWriter):
  """Writes TensorBoard event files to `logdir` with tensorboardX (no TensorFlow).

  * Scalars: `add_scalar` (non-numeric values are skipped).
  * Images: `add_image(..., dataformats='HWC')` (Images tab; needs pillow).
  * Texts: `add_text`, as a preformatted block (each line indented by four
    spaces, a Markdown code block) so tables keep their alignment in the Text
    tab, like W&B's `<pre>`.
  * Hparams: the HParams plugin's session-start summary, in this run's
    directory (`add_hparams` would make a separate run, and needs metrics).
    With no experiment summary, TensorBoard's HParams tab builds the table
    from all runs: one row per run, its config values, and its scalars as
    metric columns. Also a `| name | value |` Markdown table under the tag
    'hparams' in the Text tab.

  View with `tensorboard --logdir <logdir>`.
  """

  def __init__(self, logdir: PathLike, flush_secs: int = 30):
    tensorboardx = _import_optional('tensorboardX', 'TensorBoardWriter')
    self._hparams_summaries = importlib.import_module('tensorboardX.summary').hparams
    self.logdir = os.fspath(logdir)
    os.makedirs(self.logdir, exist_ok=True)
    self._writer = tensorboardx.SummaryWriter(logdir=self.logdir, flush_secs=flush_secs)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    for name, value in scalars.items():
      value = _scalar_value(value)
      if isinstance(value, (int, float)):
        self._writer.add_scalar(str(name), float(value), int(step))

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    if images:
      _import_optional('PIL', 'TensorBoardWriter.write_images', 'pillow', 'images')
    for name, image in images.items():
      self._writer.add_image(str(name), _as_rgb_uint8(image), int(step), dataformats='HWC')

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    for name, text in texts.items():
      block = '\n'.join('    ' + line for line in str(text).splitlines())
      self._writer.add_text(str(name), block, int(step))

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    values = {str(k): _hparam_value(v) for k, v in hparams.items()}
    _, session_start, _ = self._hparams_summaries(values, {})
    self._writer._get_file_writer().add_summary(session_start)  # pylint: disable=protected-access
    self._writer.add_text('hparams', _markdown_table(values))

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class WandbWriter(BaseWriter):
  """Logs to Weights & Biases; offline (no network) unless told otherwise.

  The run is `wandb.init(project=, name=, group=, dir=workdir, config=,
  mode=mode or $WANDB_MODE or 'offline')`; offline runs land in
  `workdir/wandb/offline-run-*` (upload later with `wandb sync`).

  * Scalars: `run.log(scalars, step=step)`. W&B needs non-decreasing steps and
    drops scalars logged at an earlier step (with a warning).
  * Images (`wandb.Image`, needs pillow) and texts (`wandb.Html('<pre>...')`):
    logged at `step`, or at the latest step seen if `step` is earlier, so they
    are never dropped.
  * W&B has one namespace per step: an image and a text of the same name at
    the same step replace each other (a warning says so); use distinct names.
  * Hparams: `run.config.update(hparams, allow_val_change=True)`.
  * `close()` finishes the run.

  Attributes:
    run: the `wandb` run object.
    mode: 'offline', 'online' or 'disabled'.
  """

  def __init__(
    self,
    workdir: Optional[PathLike] = None,
    project: str = 'jcl',
    name: Optional[str] = None,
    group: Optional[str] = None,
    mode: Optional[str] = None,
    config: Optional[Mapping[str, Any]] = None,
  ):
    self._wandb = _import_optional('wandb', 'WandbWriter')
    workdir = None if workdir is None else os.fspath(workdir)
    if workdir is not None:
      os.makedirs(workdir, exist_ok=True)
    self.mode = mode or os.environ.get('WANDB_MODE', 'offline')
    self.run = self._wandb.init(
      project=project,
      name=name,
      group=group,
      dir=workdir,
      mode=self.mode,
      config=None if config is None else _to_python(dict(config)),
    )
    self._last_step = 0
    self._step_keys: set[str] = set()  # Keys logged at `_last_step`.
    self._closed = False

  def _log(self, data: Mapping[str, Any], step: int, catch_up: bool = False) -> None:
    step = max(int(step), self._last_step) if catch_up else int(step)
    if step > self._last_step:
      self._last_step, self._step_keys = step, set()
    if step == self._last_step:
      clash = self._step_keys & set(data)
      if clash:
        _log.warning(
          'W&B: %s logged again at step %d; the new value replaces the old one.',
          sorted(clash),
          step,
        )
      self._step_keys |= set(data)
    self.run.log(dict(data), step=step)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    self._log({str(k): _scalar_value(v) for k, v in scalars.items()}, step)

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    if images:
      _import_optional('PIL', 'WandbWriter.write_images', 'pillow', 'images')
      self._log(
        {str(k): self._wandb.Image(_as_rgb_uint8(v)) for k, v in images.items()},
        step,
        catch_up=True,
      )

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    if texts:
      self._log(
        {
          str(k): self._wandb.Html(f'<pre>{html.escape(str(v))}</pre>', data_is_not_path=True)
          for k, v in texts.items()
        },
        step,
        catch_up=True,
      )

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    self.run.config.update(_to_python(dict(hparams)), allow_val_change=True)

  def close(self) -> None:
    if not self._closed:
      self._closed = True
      self.run.finish()


class MultiWriter(BaseWriter):
  """Fans every call out to several writers, in order."""

  def __init__(self, writers: Sequence[MetricWriter]):
    self.writers: tuple[MetricWriter, ...] = tuple(writers)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    for w in self.writers:
      w.write_scalars(step, scalars)

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    for w in self.writers:
      w.write_images(step, images)

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    for w in self.writers:
      w.write_texts(step, texts)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    for w in self.writers:
      w.write_hparams(hparams)

  def flush(self) -> None:
    for w in self.writers:
      w.flush()

  def close(self) -> None:
    for w in self.writers:
      w.close()


# ---------------------------------------------------------------------------
# Registry and factory.
# ---------------------------------------------------------------------------

# A factory is called as `factory(workdir, run_name=, group=, project=,
# hparams=)` (`workdir` a str, or None) and returns a `MetricWriter`.
WriterFactory = Callable[..., MetricWriter]

# name -> (factory, needs_workdir).
_FACTORIES: dict[str, tuple[WriterFactory, bool]] = {}


def register_writer(
  name: str, factory: WriterFactory, *, needs_workdir: bool = False, overwrite: bool = False
) -> None:
  """Makes a backend available to `make_writer` under `name`.

  Args:
    name: the name used in `make_writer(names, ...)`.
    factory: `factory(workdir, *, run_name, group, project, hparams) ->
      MetricWriter`; take `**kwargs` to ignore what it does not use. Import
      heavy dependencies inside it.
    needs_workdir: the backend writes files: `make_writer` skips it when it
      has no workdir.
    overwrite: allow replacing an existing registration.
  """
  if name in _FACTORIES and not overwrite:
    raise ValueError(f'A writer named {name!r} is already registered.')
  _FACTORIES[name] = (factory, needs_workdir)


def available_writers() -> tuple[str, ...]:
  """Returns the sorted names accepted by `make_writer`."""
  return tuple(sorted(_FACTORIES))


def _make_wandb(
  workdir: Optional[str],
  *,
  run_name: Optional[str],
  group: Optional[str],
  project: str,
  hparams: Optional[Mapping[str, Any]],
) -> MetricWriter:
  return WandbWriter(workdir, project=project, name=run_name, group=group, config=hparams)


register_writer('console', lambda workdir, **_: ConsoleWriter())
register_writer('jsonl', lambda workdir, **_: JsonlWriter(workdir), needs_workdir=True)
register_writer('csv', lambda workdir, **_: CsvWriter(workdir), needs_workdir=True)
register_writer(
  'tensorboard',
  lambda workdir, **_: TensorBoardWriter(os.path.join(workdir, 'tensorboard')),
  needs_workdir=True,
)
register_writer('wandb', _make_wandb)


def make_writer(
  names: Union[str, Sequence[str]],
  workdir: Optional[PathLike] = None,
  *,
  run_name: Optional[str] = None,
  group: Optional[str] = None,
  project: str = 'jcl',
  hparams: Optional[Mapping[str, Any]] = None,
) -> MetricWriter:
  """Builds a writer from backend names.

  Args:
    names: backend names, a sequence or a comma-separated string; entries may
      be comma-joined themselves (`('console,tensorboard', 'jsonl')`) and empty
      entries are ignored.
    workdir: directory of the file backends: 'jsonl' and 'csv' write there,
      'tensorboard' to `workdir/tensorboard`, 'wandb' its run directory under
      `workdir/wandb`. Without it the file backends are skipped (a warning).
    run_name, group, project: the W&B run's name, group and project.
    hparams: the run's flat config; W&B gets it as `config`, and
      `write_hparams(hparams)` is called once on the new writer.

  Returns:
    The single writer, or a `MultiWriter` over them (empty if none).

  Raises:
    ValueError: for unknown or repeated names (listing the valid ones).
    ImportError: when a backend's package is missing (naming the pip extra).
  """
  if isinstance(names, str):
    names = [names]
  names = [n.strip() for entry in names for n in str(entry).split(',') if n.strip()]
  unknown = [n for n in names if n not in _FACTORIES]
  if unknown:
    raise ValueError(f'Unknown writer name(s) {unknown}; available: {list(available_writers())}.')
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise ValueError(f'Writer name(s) {repeated} given more than once.')
  if workdir is None:
    skipped = [n for n in names if _FACTORIES[n][1]]
    if skipped:
      _log.warning('No workdir: skipping the file writer(s) %s.', skipped)
    names = [n for n in names if n not in skipped]
  else:
    workdir = os.fspath(workdir)
  built: list[MetricWriter] = []
  try:
    for n in names:
      built.append(
        _FACTORIES[n][0](workdir, run_name=run_name, group=group, project=project, hparams=hparams)
      )
    writer = built[0] if len(built) == 1 else MultiWriter(built)
    if hparams is not None:
      writer.write_hparams(hparams)
  except BaseException:
    for w in built:  # Do not leak open files / runs on failure.
      w.close()
    raise
  return writer


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

  def __init__(
    self,
    total: Optional[int] = None,
    desc: Optional[str] = None,
    enabled: bool = True,
    force: bool = False,
    **tqdm_kwargs,
  ):
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
