"""Checkpoints of a stream in progress (Orbax), for exact resumption.

One checkpoint holds the `(train_state, algo_state)` pytree (parameters,
optimizer state, buffers, Fisher, every RNG key: they all live there) and a
JSON record of the position in the stream (task, epoch, next chunk, or "task
done"), the accuracy matrices and history so far, and the config. The data
order is a pure function of `(seed, task, epoch)`, so a resumed run replays
exactly the chunks an uninterrupted one would have seen.

Orbax writes each checkpoint to a temporary folder and renames it when
complete, so a crash never leaves a half-written one. A checkpoint that
cannot be read is reported by name and the previous one is used.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


def _fill_empty(tree: PyTree) -> PyTree:
  """Orbax refuses zero-size arrays (e.g. a buffer's `[N, 0]` logits when none
  are stored): they are saved as a one-element stand-in."""
  return jax.tree.map(lambda x: x if np.size(x) else np.zeros((1,), np.asarray(x).dtype), tree)


def _restore_empty(tree: PyTree, like: PyTree) -> PyTree:
  return jax.tree.map(
    lambda x, ref: x if np.size(ref) else jnp.zeros(np.shape(ref), ref.dtype), tree, like
  )


class CheckpointError(RuntimeError):
  """No usable checkpoint could be read."""


class Checkpointer:
  """Saves and restores `(state, record)` pairs under `directory`.

  Args:
    directory: where the numbered checkpoints go (created if missing).
    max_to_keep: how many recent checkpoints to keep (at least 2, so a
      corrupt latest one leaves a good one behind).
  """

  def __init__(self, directory: str, max_to_keep: int = 3):
    import orbax.checkpoint as ocp  # lazy: optional dependency (extra `checkpoint`)

    if max_to_keep < 2:
      raise ValueError(f'max_to_keep must be >= 2, got {max_to_keep}')
    self._ocp = ocp
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
      self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep)
    )

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, state: PyTree, record: dict[str, Any]) -> int:
    """Writes the next checkpoint (numbered after every existing one, a
    corrupt one included) and waits until it is complete on disk."""
    ocp = self._ocp
    steps = self.all_steps()
    step = steps[-1] + 1 if steps else 1
    self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(_fill_empty(state)), record=ocp.args.JsonSave(record)
      ),
      force=True,
    )
    self._manager.wait_until_finished()
    return step

  def latest_record(self) -> dict[str, Any] | None:
    """The JSON record of the newest checkpoint whose record reads (no arrays
    are loaded), or None: to check a workdir's run before restoring it."""
    ocp = self._ocp
    for step in reversed(self.all_steps()):
      try:
        restored = self._manager.restore(
          step, args=ocp.args.Composite(record=ocp.args.JsonRestore())
        )
        return dict(restored['record'])
      except Exception:  # noqa: BLE001 - unreadable: `restore_latest` reports it
        continue
    return None

  def restore_latest(self, like: PyTree) -> tuple[int, PyTree, dict[str, Any]] | None:
    """The newest readable checkpoint as `(step, state, record)`, or None if
    there is none. `like` gives the state's structure, shapes and dtypes.

    Raises:
      CheckpointError: checkpoints exist but none can be read.
    """
    ocp = self._ocp
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _fill_empty(like))
    failures = []
    for step in reversed(self.all_steps()):
      try:
        restored = self._manager.restore(
          step,
          args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()
          ),
        )
        return step, _restore_empty(restored['state'], like), dict(restored['record'])
      except Exception as err:  # noqa: BLE001 - any unreadable checkpoint falls back
        message = (
          f'checkpoint {os.path.join(self.directory, str(step))} is corrupt or '
          f'incompatible ({type(err).__name__}: {str(err)[:200]}); trying the previous one'
        )
        logging.warning(message)
        print(message)
        failures.append(message)
    if failures:
      raise CheckpointError(
        'no readable checkpoint in ' + self.directory + ':\n' + '\n'.join(failures)
      )
    return None

  def close(self) -> None:
    self._manager.close()
