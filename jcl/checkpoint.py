"""Checkpoints of a stream in progress (Orbax), for exact resumption.

One checkpoint holds the `(train_state, algo_state)` pytree (parameters,
optimizer state, buffers, Fisher, every RNG key: they all live there) and a
JSON record of the position in the stream (task, epoch, next chunk, or "task
done"), the accuracy matrices and history so far, and the config. The data
order is a pure function of `(seed, task, epoch)`, so a resumed run replays
exactly the chunks an uninterrupted one would have seen.

Integrity. Orbax writes each checkpoint `directory/<n>` to a temporary
folder and renames it when complete (synchronously: a failed write raises
here and leaves no thread behind). Then a manifest, `<n>/jcl_manifest.json`,
records the size and SHA-256 of every file of the checkpoint as read back
from disk (Orbax checks no checksum: a flipped bit in an array would load
silently), and only then are checkpoints beyond `max_to_keep` removed. A
restore checks the manifest before Orbax reads anything, then the stored
shapes and dtypes against the run's state (Orbax would restore another
shape, or cast another dtype, silently). A checkpoint that fails either
check is reported by name, with the file or the array at fault, and the
previous one is used. A checkpoint that cannot be written raises
`CheckpointError` naming the step and the folder; the older ones are kept.

Imports neither JAX nor Orbax until a `Checkpointer` is made.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import traceback
from typing import Any

import numpy as np

PyTree = Any

MANIFEST = 'jcl_manifest.json'
_MANIFEST_FORMAT = 'jcl checkpoint manifest v1'
_DELETING = '.jcl-deleting'  # a step being removed: renamed first, so removal is atomic
_ORBAX_TMP = '.orbax-checkpoint-tmp'  # Orbax's folder of a save in progress


class CheckpointError(RuntimeError):
  """A checkpoint cannot be written, or none of the checkpoints can be read."""


class CorruptCheckpoint(ValueError):
  """A checkpoint's files differ from its manifest (the file is named)."""


class IncompatibleCheckpoint(ValueError):
  """An intact checkpoint whose arrays do not fit the run's state."""


def describe_error(err: BaseException, where: str = '') -> str:
  """`Type: message` of `err` on one line, never empty: an exception without a
  message is described by where it was raised and `where` (the file or
  checkpoint it concerns)."""
  text = ' '.join(str(err).split())
  if not text:
    frames = traceback.extract_tb(err.__traceback__) if err.__traceback__ else []
    origin = f'raised at {_short_path(frames[-1].filename)}:{frames[-1].lineno}' if frames else ''
    text = ', '.join(p for p in ('no message', origin, where and f'reading {where}') if p)
  if len(text) > 400:  # the start says what failed, the end (the OS error) why
    text = text[:200] + ' ... ' + text[-195:]
  return f'{type(err).__name__}: {text}'


def write_failure(err: BaseException, directory: str, step: int | None) -> CheckpointError:
  """The error that ends a run whose checkpoint `step` could not be written."""
  what = 'a checkpoint' if step is None else f'checkpoint {step}'
  return CheckpointError(f'cannot write {what} in {directory}: {describe_error(err)}')


def _short_path(path: str) -> str:
  marker = f'site-packages{os.sep}'
  return path.split(marker, 1)[1] if marker in path else path


# -----------------------------------------------------------------------------
# Manifests.
# -----------------------------------------------------------------------------


def _files(root: str) -> list[str]:
  """Every file under `root` but the manifest, as sorted relative paths."""
  found = []
  for folder, _, names in os.walk(root):
    for name in names:
      relative = os.path.relpath(os.path.join(folder, name), root)
      if relative not in (MANIFEST, MANIFEST + '.tmp'):
        found.append(relative.replace(os.sep, '/'))
  return sorted(found)


def _digest(path: str) -> tuple[int, str]:
  """`(size, SHA-256)` of the file at `path`."""
  sha, size = hashlib.sha256(), 0
  with open(path, 'rb') as f:
    while block := f.read(1 << 20):
      sha.update(block)
      size += len(block)
  return size, sha.hexdigest()


def _table_digest(files: dict[str, Any]) -> str:
  return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def write_manifest(root: str) -> dict[str, Any]:
  """Writes `root/jcl_manifest.json` (size and SHA-256 of every file under
  `root`, read back) atomically and durably; returns its table of files.
  (Orbax writes the arrays with fsync; a metadata file lost to a power cut
  shows as a corrupt checkpoint, and the previous one is used.)"""
  files = {}
  for name in _files(root):
    size, sha = _digest(os.path.join(root, name))
    files[name] = {'bytes': size, 'sha256': sha}
  document = {'format': _MANIFEST_FORMAT, 'files': files, 'digest': _table_digest(files)}
  path = os.path.join(root, MANIFEST)
  with open(path + '.tmp', 'w') as f:
    json.dump(document, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(path + '.tmp', path)
  fsync_directory(root)
  return files


def read_manifest(root: str) -> dict[str, Any]:
  """The table of files of `root`'s manifest.

  Raises:
    CorruptCheckpoint: no manifest (the checkpoint was never finished) or a
      damaged one.
  """
  path = os.path.join(root, MANIFEST)
  if not os.path.exists(path):
    raise CorruptCheckpoint(f'{MANIFEST} is missing: the checkpoint was never finished')
  try:
    with open(path) as f:
      document = json.load(f)
    files = document['files']
    intact = document['format'] == _MANIFEST_FORMAT and document['digest'] == _table_digest(files)
  except Exception as err:  # noqa: BLE001 - any unreadable manifest is damaged
    raise CorruptCheckpoint(f'{MANIFEST} is unreadable ({describe_error(err)})') from err
  if not intact:
    raise CorruptCheckpoint(f'{MANIFEST} is damaged (its own digest does not match)')
  return files


def verify_manifest(root: str) -> None:
  """Checks every file under `root` against its manifest.

  Raises:
    CorruptCheckpoint: naming the first file missing, truncated, changed or
      not written with the checkpoint.
  """
  files = read_manifest(root)
  for name, expected in sorted(files.items()):
    path = os.path.join(root, name)
    try:
      size, sha = _digest(path)
    except FileNotFoundError:
      raise CorruptCheckpoint(f'{name} is missing') from None
    except OSError as err:
      raise CorruptCheckpoint(f'{name} cannot be read ({describe_error(err)})') from err
    if size != expected['bytes']:
      raise CorruptCheckpoint(f'{name} has {size} bytes, {expected["bytes"]} were written')
    if sha != expected['sha256']:
      raise CorruptCheckpoint(f'{name} changed after it was written (SHA-256 mismatch)')
  extra = sorted(set(_files(root)) - set(files))
  if extra:
    raise CorruptCheckpoint(f'{extra[0]} was not written with the checkpoint')


def fsync_directory(directory: str) -> None:
  """Makes renames in `directory` durable (where the platform allows it)."""
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


# -----------------------------------------------------------------------------
# The checkpointer.
# -----------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_abandoned_writes():
  """Orbax abandons the other writes of a save that fails: as they complete
  they report `RuntimeError: Event loop is closed`, and at exit each
  abandoned coroutine its own traceback (hundreds of lines that bury the
  error). Drops those reports, and only those, during a save and, once one
  has failed, from then on."""
  previous = sys.unraisablehook

  def hook(unraisable):
    code = getattr(unraisable.object, 'cr_code', None)
    if (
      isinstance(unraisable.exc_value, RuntimeError)
      and str(unraisable.exc_value) == 'Event loop is closed'
    ) or (code is not None and f'{os.sep}orbax{os.sep}' in code.co_filename):
      return
    previous(unraisable)

  sys.unraisablehook = hook
  yield
  if sys.unraisablehook is hook:  # the save went well: nothing is left behind
    sys.unraisablehook = previous


def _fill_empty(tree: PyTree) -> PyTree:
  """Orbax refuses zero-size arrays (e.g. a buffer's `[N, 0]` logits when none
  are stored): they are saved as a one-element stand-in."""
  import jax

  return jax.tree.map(lambda x: x if np.size(x) else np.zeros((1,), np.asarray(x).dtype), tree)


def _restore_empty(tree: PyTree, like: PyTree) -> PyTree:
  import jax
  import jax.numpy as jnp

  return jax.tree.map(
    lambda x, ref: x if np.size(ref) else jnp.zeros(np.shape(ref), ref.dtype), tree, like
  )


class Checkpointer:
  """Saves and restores `(state, record)` pairs under `directory`.

  Args:
    directory: where the numbered checkpoints go (created if missing).
    max_to_keep: how many recent finished checkpoints to keep (at least 2,
      so a corrupt latest one leaves a good one behind); older ones are
      removed once a new one is written and verified.
  """

  def __init__(self, directory: str, max_to_keep: int = 3):
    import orbax.checkpoint as ocp  # lazy: optional dependency (extra `checkpoint`)

    if max_to_keep < 2:
      raise ValueError(f'max_to_keep must be >= 2, got {max_to_keep}')
    self._ocp = ocp
    self.directory = os.path.abspath(directory)
    self.max_to_keep = max_to_keep
    try:
      self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
          max_to_keep=None,  # removal is ours, after the successor verifies
          enable_async_checkpointing=False,  # a failed write raises in `save`; no thread lingers
          lightweight_initialize=True,  # reads no checkpoint before its manifest is checked
        ),
        item_handlers={
          'state': ocp.StandardCheckpointHandler(),
          'record': ocp.JsonCheckpointHandler(),
        },
      )
    except Exception as err:  # noqa: BLE001 - e.g. the folder cannot be made
      raise CheckpointError(
        f'cannot keep checkpoints in {self.directory}: {describe_error(err)}'
      ) from err
    self._problems: dict[int, str | None] = {}  # step -> None (files intact) or what is wrong
    self._unusable: set[int] = set()  # found corrupt or unfit: never counted as kept

  def path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def all_steps(self) -> list[int]:
    """The numbers of the checkpoint folders, finished or not, ascending."""
    return sorted(
      int(name)
      for name in os.listdir(self.directory)
      if name.isdigit() and os.path.isdir(os.path.join(self.directory, name))
    )

  def save(self, state: PyTree, record: dict[str, Any]) -> int:
    """Writes the next checkpoint (numbered after every existing one, a
    corrupt one included), complete and verified on disk when this returns,
    then removes the finished ones beyond `max_to_keep`.

    Raises:
      CheckpointError: it could not be written (the step and folder named;
        nothing older was removed), or an old one could not be removed.
    """
    ocp = self._ocp
    step = None
    try:
      self._remove_leftovers()
      steps = self.all_steps()
      step = steps[-1] + 1 if steps else 1
      with _quiet_abandoned_writes():
        self._manager.save(
          step,
          args=ocp.args.Composite(
            state=ocp.args.StandardSave(_fill_empty(state)), record=ocp.args.JsonSave(record)
          ),
          force=True,
        )
        self._manager.wait_until_finished()
      written = write_manifest(self.path(step))
      if read_manifest(self.path(step)) != written:
        raise CorruptCheckpoint(f'{MANIFEST} reads back different from what was written')
    except CheckpointError:
      raise
    except Exception as err:  # noqa: BLE001 - any failed write ends the run, named
      raise write_failure(err, self.directory, step) from err
    self._problems[step] = None
    try:
      self._rotate()
    except OSError as err:
      raise CheckpointError(
        f'cannot remove old checkpoints in {self.directory}: {describe_error(err)}'
      ) from err
    return step

  def _remove_leftovers(self) -> None:
    """Removes what interrupted saves and removals left (never a checkpoint)."""
    for name in os.listdir(self.directory):
      if _ORBAX_TMP in name or name.endswith(_DELETING):
        self._remove(os.path.join(self.directory, name))

  def _remove(self, path: str) -> None:
    try:
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
      else:
        os.remove(path)
    except FileNotFoundError:
      pass
    except OSError as err:
      raise CheckpointError(f'cannot remove {path}: {describe_error(err)}') from err

  def _rotate(self) -> None:
    """Removes every checkpoint older than the `max_to_keep` newest finished
    ones (with a manifest, not found corrupt)."""
    steps = self.all_steps()
    finished = [
      s
      for s in steps
      if s not in self._unusable and os.path.exists(os.path.join(self.path(s), MANIFEST))
    ]
    kept = finished[-self.max_to_keep :]
    for step in steps:
      if step < kept[0]:
        doomed = self.path(step) + _DELETING
        try:
          os.rename(self.path(step), doomed)
        except OSError as err:
          raise CheckpointError(
            f'cannot remove old checkpoint {step} in {self.directory}: {describe_error(err)}'
          ) from err
        self._remove(doomed)
        self._problems.pop(step, None)
        self._unusable.discard(step)

  def _problem(self, step: int) -> str | None:
    """What is wrong with checkpoint `step`'s files (None: intact), checked once."""
    if step not in self._problems:
      try:
        verify_manifest(self.path(step))
        self._problems[step] = None
      except CorruptCheckpoint as err:
        self._problems[step] = str(err)
    return self._problems[step]

  def latest_record(self) -> dict[str, Any] | None:
    """The JSON record of the newest intact checkpoint whose record reads (no
    arrays are loaded), or None: to check a workdir's run before restoring it."""
    ocp = self._ocp
    for step in reversed(self.all_steps()):
      if self._problem(step) is not None:
        continue
      try:
        restored = self._manager.restore(
          step, args=ocp.args.Composite(record=ocp.args.JsonRestore())
        )
        return dict(restored['record'])
      except Exception:  # noqa: BLE001 - unreadable: `restore_latest` reports it
        continue
    return None

  def restore_latest(self, like: PyTree) -> tuple[int, PyTree, dict[str, Any]] | None:
    """The newest intact checkpoint that fits `like` as `(step, state,
    record)`, or None if there is none. `like` gives the state's structure,
    shapes and dtypes.

    Raises:
      CheckpointError: checkpoints exist but none can be used (each one's
        reason given).
    """
    import jax

    ocp = self._ocp
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _fill_empty(like))
    failures, misfits = [], 0
    for step in reversed(self.all_steps()):
      where = self.path(step)
      problem = self._problem(step)
      if problem is not None:
        failures.append(f'checkpoint {where} is corrupt ({problem})')
      else:
        try:
          self._check_fits(step, abstract)
          restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()
            ),
          )
          return step, _restore_empty(restored['state'], like), dict(restored['record'])
        except IncompatibleCheckpoint as err:
          misfits += 1
          failures.append(f'checkpoint {where} does not fit this run ({err})')
        except Exception as err:  # noqa: BLE001 - any unreadable checkpoint falls back
          failures.append(f'checkpoint {where} cannot be read ({describe_error(err, where)})')
      self._unusable.add(step)
      message = failures[-1] + '; trying the previous one'
      logging.warning(message)
      print(message)
    if failures:
      hint = (
        '\nthey hold the state of another model or algorithm: resume with the config (and code) '
        'that wrote them, or use a fresh workdir'
        if misfits
        else ''
      )
      raise CheckpointError(
        f'no usable checkpoint in {self.directory}:\n' + '\n'.join(failures) + hint
      )
    return None

  def _check_fits(self, step: int, abstract: PyTree) -> None:
    """Compares the stored arrays' names, shapes and dtypes with `abstract`'s.

    Raises:
      IncompatibleCheckpoint: naming up to four arrays that differ.
    """
    ocp = self._ocp
    metadata = self._manager.item_metadata(step)['state']
    stored = ocp.tree.to_flat_dict(getattr(metadata, 'tree', metadata))
    wanted = ocp.tree.to_flat_dict(abstract)
    lines = []
    for key in sorted(set(stored) | set(wanted), key=lambda k: tuple(map(str, k))):
      name = 'state.' + '.'.join(map(str, key))
      if key not in wanted:
        lines.append(f'{name} is in the checkpoint, not in this run')
      elif key not in stored:
        lines.append(f'{name} is not in the checkpoint')
      else:
        have = (tuple(stored[key].shape), np.dtype(stored[key].dtype))
        want = (tuple(wanted[key].shape), np.dtype(wanted[key].dtype))
        if have != want:
          lines.append(f'{name}: {have[0]} {have[1]} in the checkpoint, {want[0]} {want[1]} now')
    if lines:
      more = f'; and {len(lines) - 4} more' if len(lines) > 4 else ''
      raise IncompatibleCheckpoint('; '.join(lines[:4]) + more)

  def close(self) -> None:
    """Releases Orbax's resources; never raises (every save is complete when
    it returns, and a failure here must not hide the error being raised)."""
    try:
      self._manager.close()
    except Exception as err:  # noqa: BLE001
      logging.warning('closing the checkpoints in %s: %s', self.directory, describe_error(err))
