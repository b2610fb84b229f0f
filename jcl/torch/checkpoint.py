"""Checkpoints of a PyTorch run in progress, for exact resumption.

The counterpart of `jcl.checkpoint` (same `Checkpointer` interface, used by
`jcl.callbacks.CheckpointCallback`), without JAX or Orbax. Checkpoint `n`
is one file `directory/checkpoint_<n>.pt`: a header line, the SHA-256 of
the rest (torch's zip reader checks no CRC, so a flipped byte in a tensor
would otherwise load silently) and a `torch.save` payload holding

* the train state: the model's parameters and buffers (`state_dict`), the
  optimizer's buffers, learning rate and count, the class mask, step and
  task. Its `RandomSource` draws from `key(step, salt)` and holds nothing
  but the seed, so the step counter is all of its state;
* the algo_state, flattened (NamedTuples, dataclasses, dicts, lists of
  tensors and numbers) and rebuilt on the structure of the state given to
  `restore_latest`;
* torch's global generator states (CPU, and the CUDA device's), from which
  dropout draws: `jcl.torch.fit` seeds them per run, so a restored run
  draws the masks an uninterrupted one would have drawn;
* the JSON record (position in the stream, accuracy matrices, history,
  config), as a JSON string.

Each file is written to a temporary file in the same folder, flushed to disk
and renamed (`os.replace`), so a crash never leaves a half-written
checkpoint; it is read back and its checksum checked before older ones
beyond `max_to_keep` are removed. A checkpoint that cannot be written raises
`CheckpointError` naming the step and the folder (the older ones are kept).
A checkpoint that is corrupt or does not fit the state is reported by name
and the previous one is used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import tempfile
from typing import Any

import torch

from jcl.checkpoint import CheckpointError, describe_error, fsync_directory, write_failure

_NAME = re.compile(r'^checkpoint_(\d+)\.pt$')
_MAGIC = b'jcl.torch checkpoint v1\n'
_LEAF_TYPES = (torch.Tensor, int, float, bool, str, type(None))


class _Corrupt(ValueError):
  """The file is not the one written (bad header or checksum)."""


def _children(node) -> list | None:
  """The children of a container node in a fixed order, or None for a leaf."""
  if isinstance(node, tuple) and hasattr(node, '_fields'):  # NamedTuple
    return list(node)
  if dataclasses.is_dataclass(node) and not isinstance(node, type):
    return [getattr(node, f.name) for f in dataclasses.fields(node)]
  if isinstance(node, dict):
    return [node[k] for k in sorted(node)]
  if isinstance(node, (list, tuple)):
    return list(node)
  if isinstance(node, _LEAF_TYPES):
    return None
  raise TypeError(f'cannot checkpoint a {type(node).__name__} in the algo_state')


def flatten(tree) -> list:
  """The leaves of `tree` (tensors, numbers, strings, None), depth first."""
  children = _children(tree)
  if children is None:
    return [tree]
  return [leaf for child in children for leaf in flatten(child)]


def unflatten(like, leaves: list):
  """`like`'s structure with `leaves` (as many as `flatten(like)`) in place of its own."""
  leaves = iter(leaves)

  def build(node):
    children = _children(node)
    if children is None:
      return next(leaves)
    built = [build(child) for child in children]
    if isinstance(node, tuple) and hasattr(node, '_fields'):
      return type(node)(*built)
    if dataclasses.is_dataclass(node):
      return dataclasses.replace(
        node, **{f.name: v for f, v in zip(dataclasses.fields(node), built)}
      )
    if isinstance(node, dict):
      return type(node)(zip(sorted(node), built))
    return type(node)(built)

  return build(like)


def _restore_leaves(saved: list, like: list, what: str) -> list:
  """`saved` checked against `like` leaf by leaf (tensors: shape and dtype,
  moved to `like`'s device; others: type)."""
  if len(saved) != len(like):
    raise ValueError(f'{what}: {len(saved)} values saved, the state has {len(like)}')
  restored = []
  for i, (value, template) in enumerate(zip(saved, like)):
    if isinstance(template, torch.Tensor):
      if (
        not isinstance(value, torch.Tensor)
        or value.shape != template.shape
        or value.dtype != template.dtype
      ):
        got = (
          f'{tuple(value.shape)} {value.dtype}'
          if isinstance(value, torch.Tensor)
          else type(value).__name__
        )
        raise ValueError(
          f'{what}[{i}]: saved {got}, the state has {tuple(template.shape)} {template.dtype}'
        )
      value = value.to(template.device)
    elif type(value) is not type(template):
      raise ValueError(
        f'{what}[{i}]: saved a {type(value).__name__}, the state has a {type(template).__name__}'
      )
    restored.append(value)
  return restored


def _optimizer_leaves(optimizer) -> list:
  return [optimizer.learning_rate, optimizer.count, optimizer.trace, optimizer.mu, optimizer.nu]


def _rng_states(device: torch.device) -> dict[str, torch.Tensor]:
  states = {'cpu': torch.get_rng_state()}
  if device.type == 'cuda':
    states['cuda'] = torch.cuda.get_rng_state(device)
  return states


class Checkpointer:
  """Saves and restores `(state, record)` pairs under `directory`, where
  `state` is `(train_state, algo_state)` of `jcl.torch`.

  Args:
    directory: where the numbered checkpoints go (created if missing).
    max_to_keep: how many recent checkpoints to keep (at least 2, so a
      corrupt latest one leaves a good one behind).
  """

  def __init__(self, directory: str, max_to_keep: int = 3):
    if max_to_keep < 2:
      raise ValueError(f'max_to_keep must be >= 2, got {max_to_keep}')
    self.directory = os.path.abspath(directory)
    self.max_to_keep = max_to_keep
    self._bad: set[int] = set()  # steps found corrupt or unfit: never counted as kept
    try:
      os.makedirs(self.directory, exist_ok=True)
    except OSError as err:
      raise CheckpointError(
        f'cannot keep checkpoints in {self.directory}: {describe_error(err)}'
      ) from err

  def path(self, step: int) -> str:
    return os.path.join(self.directory, f'checkpoint_{step}.pt')

  def all_steps(self) -> list[int]:
    return sorted(int(m.group(1)) for m in map(_NAME.match, os.listdir(self.directory)) if m)

  def save(self, state: tuple[Any, Any], record: dict[str, Any]) -> int:
    """Writes the next checkpoint (numbered after every existing one, a
    corrupt one included), complete on disk and read back when this returns,
    then removes the oldest beyond `max_to_keep`.

    Raises:
      CheckpointError: it could not be written (the step and folder named;
        nothing older was removed), or an old one could not be removed.
    """
    train_state, algo_state = state
    payload = {
      'model': train_state.model.state_dict(),
      'optimizer': _optimizer_leaves(train_state.optimizer),
      'class_mask': train_state.class_mask,
      'step': int(train_state.step),
      'task': int(train_state.task),
      'algo_state': flatten(algo_state),
      'torch_rng': _rng_states(train_state.device),
      'record': json.dumps(record),
    }
    step = tmp = None
    try:
      self._remove_leftovers()
      steps = self.all_steps()
      step = steps[-1] + 1 if steps else 1
      buffer = io.BytesIO()
      torch.save(payload, buffer)
      data = buffer.getvalue()
      fd, tmp = tempfile.mkstemp(prefix=f'.checkpoint_{step}.', suffix='.tmp', dir=self.directory)
      with os.fdopen(fd, 'wb') as f:
        f.write(_MAGIC + hashlib.sha256(data).hexdigest().encode() + b'\n')
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, self.path(step))
      tmp = None
      fsync_directory(self.directory)
      self._read_verified(self.path(step))  # read back before anything older goes
    except CheckpointError:
      raise
    except Exception as err:  # noqa: BLE001 - any failed write ends the run, named
      raise write_failure(err, self.directory, step) from err
    finally:
      if tmp is not None:
        with contextlib.suppress(OSError):
          os.remove(tmp)
    self._bad.discard(step)
    try:
      kept = [s for s in self.all_steps() if s not in self._bad][-self.max_to_keep :]
      for old in self.all_steps():
        if old < kept[0]:
          self._remove(self.path(old))
    except OSError as err:
      raise CheckpointError(
        f'cannot remove old checkpoints in {self.directory}: {describe_error(err)}'
      ) from err
    return step

  def _remove_leftovers(self) -> None:
    """Removes the temporary files of interrupted saves (never a checkpoint)."""
    for name in os.listdir(self.directory):
      if name.startswith('.checkpoint_') and name.endswith('.tmp'):
        self._remove(os.path.join(self.directory, name))

  def _remove(self, path: str) -> None:
    try:
      os.remove(path)
    except FileNotFoundError:
      pass
    except OSError as err:
      raise CheckpointError(f'cannot remove {path}: {describe_error(err)}') from err

  def restore_latest(
    self, like: tuple[Any, Any]
  ) -> tuple[int, tuple[Any, Any], dict[str, Any]] | None:
    """The newest intact checkpoint that fits `like` as `(step,
    (train_state, algo_state), record)`, or None if there is none. `like` is
    the run's freshly built `(train_state, algo_state)`: the model and
    optimizer are loaded into it in place, the algo_state is rebuilt on its
    structure, and torch's global generators are set to their saved states.

    Raises:
      CheckpointError: checkpoints exist but none can be used (each one's
        reason given).
    """
    failures, misfits = [], 0
    for step in reversed(self.all_steps()):
      path = self.path(step)
      try:
        payload = self._payload(path)
      except Exception as err:  # noqa: BLE001 - any unreadable checkpoint falls back
        reason = str(err) if isinstance(err, _Corrupt) else describe_error(err, path)
        failures.append(f'checkpoint {path} is corrupt ({reason})')
      else:
        try:
          return step, *self._restore(payload, like)
        except ValueError as err:
          misfits += 1
          failures.append(f'checkpoint {path} does not fit this run ({describe_error(err, path)})')
        except Exception as err:  # noqa: BLE001
          failures.append(f'checkpoint {path} cannot be read ({describe_error(err, path)})')
      self._bad.add(step)
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

  def latest_record(self) -> dict[str, Any] | None:
    """The JSON record of the newest readable checkpoint, or None (to check
    a workdir's run before restoring it)."""
    for step in reversed(self.all_steps()):
      try:
        return json.loads(self._payload(self.path(step))['record'])
      except Exception:  # noqa: BLE001 - unreadable: `restore_latest` reports it
        continue
    return None

  def _read_verified(self, path: str) -> bytes:
    """The payload bytes of the file at `path`, its header and checksum checked.

    Raises:
      _Corrupt: the file is not the one written.
    """
    with open(path, 'rb') as f:
      if f.read(len(_MAGIC)) != _MAGIC:
        raise _Corrupt('not a jcl.torch checkpoint (bad header)')
      digest = f.readline().strip().decode('ascii', 'replace')
      data = f.read()
    if hashlib.sha256(data).hexdigest() != digest:
      raise _Corrupt('checksum mismatch: the file was damaged after it was written')
    return data

  def _payload(self, path: str) -> dict[str, Any]:
    data = self._read_verified(path)
    return torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)

  def _restore(self, payload: dict[str, Any], like: tuple[Any, Any]):
    train_state, algo_state = like
    record = json.loads(payload['record'])
    # Everything is read and checked before anything in `like` changes.
    model = train_state.model.state_dict()
    if sorted(payload['model']) != sorted(model):
      raise ValueError(f'the model has {sorted(model)}, the checkpoint {sorted(payload["model"])}')
    names = sorted(model)
    model_values = _restore_leaves(
      [payload['model'][n] for n in names], [model[n] for n in names], 'model'
    )
    optimizer = unflatten(
      _optimizer_leaves(train_state.optimizer),
      _restore_leaves(
        flatten(payload['optimizer']),
        flatten(_optimizer_leaves(train_state.optimizer)),
        'optimizer',
      ),
    )
    (class_mask,) = _restore_leaves([payload['class_mask']], [train_state.class_mask], 'class_mask')
    like_leaves = flatten(algo_state)
    algo_state = unflatten(
      algo_state, _restore_leaves(payload['algo_state'], like_leaves, 'algo_state')
    )
    rng = payload['torch_rng']

    train_state.model.load_state_dict(dict(zip(names, model_values)))
    opt = train_state.optimizer
    opt.learning_rate, opt.count, opt.trace, opt.mu, opt.nu = optimizer
    torch.set_rng_state(rng['cpu'])
    if 'cuda' in rng and train_state.device.type == 'cuda':
      torch.cuda.set_rng_state(rng['cuda'], train_state.device)
    train_state = train_state.replace(
      class_mask=class_mask, step=payload['step'], task=payload['task']
    )
    return (train_state, algo_state), record

  def close(self) -> None:
    """Nothing to release: every save is complete when it returns."""
