"""Checkpoint integrity and bounded failures (`jcl.checkpoint`).

Every file of a checkpoint is checked against its manifest before Orbax
reads it: a flipped bit, a truncated, missing, replaced or extra file, or a
missing manifest is reported as corrupt, naming the file, and the previous
checkpoint is used. An intact checkpoint whose arrays do not fit the run is
reported array by array. A failed write ends the run with one line naming
the step and the folder, within seconds, and removes nothing older; old
checkpoints are removed only after their successor is verified.
"""

import contextlib
import errno
import os
import resource
import signal
import subprocess
import time

import numpy as np
import pytest

from jcl import callbacks as callbacks_lib
from jcl import checkpoint
from tests import kills


def state(seed):
  """A small `(train_state, algo_state)`-like pytree, random values (a flipped
  bit in one changes a number), a zero-size leaf as buffers have."""
  rng = np.random.default_rng(seed)
  return (
    {'w': rng.normal(size=(64, 32)).astype(np.float32), 'logits': np.zeros((0, 3), np.float32)},
    {'count': np.array(seed, np.int32), 'key': rng.integers(0, 2**31, 2).astype(np.uint32)},
  )


LIKE = state(0)


def saved(directory, count=2, max_to_keep=3):
  """`count` checkpoints of states 1..count in `directory`."""
  ckpt = checkpoint.Checkpointer(str(directory), max_to_keep=max_to_keep)
  for i in range(1, count + 1):
    assert ckpt.save(state(i), {'i': i}) == i
  ckpt.close()
  return str(directory)


def restore(directory):
  ckpt = checkpoint.Checkpointer(directory)
  try:
    return ckpt.restore_latest(LIKE)
  finally:
    ckpt.close()


def assert_state(restored, step):
  """`restored` is checkpoint `step` of `saved`, every array equal."""
  import jax

  got_step, got, record = restored
  assert (got_step, record) == (step, {'i': step})
  want = jax.tree.leaves(state(step))
  assert len(jax.tree.leaves(got)) == len(want)
  for a, b in zip(jax.tree.leaves(got), want):
    np.testing.assert_array_equal(np.asarray(a), b)


def largest_data_file(step_dir):
  folder = os.path.join(step_dir, 'state', 'ocdbt.process_0', 'd')
  return max((os.path.join(folder, n) for n in os.listdir(folder)), key=os.path.getsize)


def flip_bit(path, offset=None):
  data = bytearray(open(path, 'rb').read())
  data[len(data) // 2 if offset is None else offset] ^= 0x10
  with open(path, 'wb') as f:
    f.write(data)


FILE_KINDS = {
  'array data': largest_data_file,
  'array metadata': lambda d: os.path.join(d, 'state', '_METADATA'),
  'ocdbt manifest': lambda d: os.path.join(d, 'state', 'ocdbt.process_0', 'manifest.ocdbt'),
  'record': lambda d: os.path.join(d, 'record', 'metadata'),
  'checkpoint metadata': lambda d: os.path.join(d, '_CHECKPOINT_METADATA'),
  'jcl manifest': lambda d: os.path.join(d, checkpoint.MANIFEST),
}


@pytest.mark.parametrize('kind', list(FILE_KINDS))
def test_a_flipped_bit_in_any_file_is_named_and_the_previous_checkpoint_used(
  tmp_path, capsys, kind
):
  directory = saved(tmp_path)
  path = FILE_KINDS[kind](os.path.join(directory, '2'))
  flip_bit(path)
  ckpt = checkpoint.Checkpointer(directory)
  assert ckpt.latest_record() == {'i': 1}  # the record is not trusted either
  restored = ckpt.restore_latest(LIKE)
  assert_state(restored, 1)
  message = capsys.readouterr().out
  assert f'checkpoint {directory}/2 is corrupt (' in message
  assert os.path.relpath(path, os.path.join(directory, '2')) in message
  # The corrupt one is kept (evidence) until newer finished ones push it out.
  assert ckpt.save(state(3), {'i': 3}) == 3
  assert ckpt.all_steps() == [1, 2, 3]
  ckpt.close()


def truncate(path):
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


def overwrite(path):
  with open(path, 'wb') as f:
    f.write(b'garbage')


DAMAGE = {
  'truncated': (lambda d: truncate(largest_data_file(d)), 'bytes, {} were written'),
  'deleted': (lambda d: os.remove(largest_data_file(d)), 'is missing'),
  'garbage': (lambda d: overwrite(os.path.join(d, 'state', '_METADATA')), 'state/_METADATA'),
  'extra file': (
    lambda d: overwrite(os.path.join(d, 'state', 'd', 'stray')),
    'state/d/stray was not written with the checkpoint',
  ),
  'no manifest': (
    lambda d: os.remove(os.path.join(d, checkpoint.MANIFEST)),
    'jcl_manifest.json is missing: the checkpoint was never finished',
  ),
}


@pytest.mark.parametrize('damage', list(DAMAGE))
def test_damaged_files_are_named_and_the_previous_checkpoint_used(tmp_path, capsys, damage):
  directory = saved(tmp_path)
  spoil, reason = DAMAGE[damage]
  spoil(os.path.join(directory, '2'))
  assert_state(restore(directory), 1)
  message = capsys.readouterr().out
  assert f'checkpoint {directory}/2 is corrupt (' in message
  assert reason.split('{}')[-1] in message


def test_no_intact_checkpoint_is_an_error_naming_each(tmp_path):
  directory = saved(tmp_path)
  flip_bit(largest_data_file(os.path.join(directory, '1')))
  os.remove(os.path.join(directory, '2', checkpoint.MANIFEST))
  with pytest.raises(checkpoint.CheckpointError, match='no usable checkpoint') as error:
    restore(directory)
  assert f'{directory}/2 is corrupt (jcl_manifest.json is missing' in str(error.value)
  assert f'{directory}/1 is corrupt (state/ocdbt.process_0/d/' in str(error.value)


def test_leftovers_of_interrupted_saves_and_removals_are_ignored_then_removed(tmp_path):
  directory = saved(tmp_path)
  for leftover in ('3.orbax-checkpoint-tmp', '3.orbax-checkpoint-tmp-1712345678', '1.jcl-deleting'):
    os.makedirs(os.path.join(directory, leftover, 'state'))
    overwrite(os.path.join(directory, leftover, 'state', 'junk'))
  overwrite(os.path.join(directory, '2', checkpoint.MANIFEST + '.tmp'))  # a manifest half written
  ckpt = checkpoint.Checkpointer(directory)
  assert ckpt.all_steps() == [1, 2]
  assert_state(ckpt.restore_latest(LIKE), 2)
  assert ckpt.save(state(3), {'i': 3}) == 3
  assert sorted(os.listdir(directory)) == ['1', '2', '3']
  ckpt.close()


def test_arrays_that_do_not_fit_are_named(tmp_path, capsys):
  directory = saved(tmp_path)
  (train, algo) = state(0)
  narrower = ({**train, 'w': np.zeros((64, 16), np.float32)}, algo)
  other_dtype = (train, {**algo, 'count': np.array(0, np.int64)})
  other_tree = (train, {**algo, 'fisher': np.zeros(3, np.float32)})
  ckpt = checkpoint.Checkpointer(directory)
  for like, reason in [
    (narrower, 'state.0.w: (64, 32) float32 in the checkpoint, (64, 16) float32 now'),
    (other_dtype, 'state.1.count: () int32 in the checkpoint, () int64 now'),
    (other_tree, 'state.1.fisher is not in the checkpoint'),
  ]:
    with pytest.raises(checkpoint.CheckpointError) as error:
      ckpt.restore_latest(like)
    message = str(error.value)
    assert f'checkpoint {directory}/2 does not fit this run ({reason})' in message
    assert 'they hold the state of another model or algorithm' in message
  ckpt.close()


def test_a_reason_is_never_empty(tmp_path, monkeypatch, capsys):
  directory = saved(tmp_path)
  ckpt = checkpoint.Checkpointer(directory)

  def fails(*args, **kwargs):
    raise AssertionError()

  monkeypatch.setattr(ckpt._manager, 'restore', fails)
  with pytest.raises(checkpoint.CheckpointError) as error:
    ckpt.restore_latest(LIKE)
  assert f'checkpoint {directory}/2 cannot be read (AssertionError: no message, raised at ' in str(
    error.value
  )
  assert f'reading {directory}/2)' in str(error.value)
  assert checkpoint.describe_error(OSError()) == 'OSError: no message'
  assert checkpoint.describe_error(ValueError('a\n  b')) == 'ValueError: a b'


# -----------------------------------------------------------------------------
# Failed writes and rotation.
# -----------------------------------------------------------------------------


@contextlib.contextmanager
def rename_fails(monkeypatch):
  """Orbax's final rename of the checkpoint folder is refused."""
  rename = os.rename

  def failing(src, dst, *args, **kwargs):
    if os.path.basename(str(dst)).isdigit():
      raise PermissionError(errno.EPERM, 'Operation not permitted', str(src))
    return rename(src, dst, *args, **kwargs)

  monkeypatch.setattr(os, 'rename', failing)
  yield


@contextlib.contextmanager
def write_fails(monkeypatch):
  """A real I/O error inside Orbax's writer: files may not exceed 4 KiB."""
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
  try:
    yield
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@contextlib.contextmanager
def manifest_fails(monkeypatch):
  """Reading the files back for the manifest fails."""

  def failing(*args, **kwargs):
    raise OSError(errno.EIO, 'Input/output error')

  monkeypatch.setattr(checkpoint, '_digest', failing)
  yield


FAULTS = {
  'rename': (rename_fails, 'PermissionError: [Errno 1] Operation not permitted'),
  'write': (write_fails, 'File too large'),
  'manifest': (manifest_fails, 'OSError: [Errno 5] Input/output error'),
}


@pytest.mark.parametrize('fault', list(FAULTS))
def test_a_failed_write_is_one_clear_error_and_keeps_the_older_checkpoints(
  tmp_path, monkeypatch, fault
):
  directory = saved(tmp_path, count=3, max_to_keep=2)
  assert checkpoint.Checkpointer(directory).all_steps() == [2, 3]
  ckpt = checkpoint.Checkpointer(directory, max_to_keep=2)
  inject, reason = FAULTS[fault]
  with monkeypatch.context() as patch, inject(patch):
    with pytest.raises(checkpoint.CheckpointError) as error:
      ckpt.save(state(4), {'i': 4})
  message = str(error.value)
  assert message.startswith(f'cannot write checkpoint 4 in {directory}: ')
  assert reason in message and '\n' not in message
  # Nothing older was removed (the rotation comes after the new one
  # verifies), and the newest intact one is what a rerun gets.
  assert [s for s in ckpt.all_steps() if s < 4] == [2, 3]
  assert_state(restore(directory), 3)
  # Once the fault is gone the run goes on; the leftovers are cleaned up.
  step = ckpt.save(state(5), {'i': 5})  # 4 again, unless a folder 4 was left
  ckpt.close()
  assert not [n for n in os.listdir(directory) if not n.isdigit()]
  got_step, _, record = restore(directory)
  assert (got_step, record) == (step, {'i': 5})
  assert verified_steps(directory)[-2:] == [3, step]


def test_an_immutable_folder_is_one_clear_error(tmp_path):
  """The trial's case: `chattr +i` on the checkpoints folder (where the file
  system and privileges allow it)."""
  directory = saved(tmp_path)
  if subprocess.run(['chattr', '+i', directory], capture_output=True).returncode:
    pytest.skip('chattr +i is not available here')
  try:
    ckpt = checkpoint.Checkpointer(directory)
    with pytest.raises(
      checkpoint.CheckpointError, match=f'cannot write checkpoint 3 in {directory}'
    ):
      ckpt.save(state(3), {'i': 3})
    ckpt.close()
  finally:
    subprocess.run(['chattr', '-i', directory])
  assert_state(restore(directory), 2)


def verified_steps(directory):
  ckpt = checkpoint.Checkpointer(directory)
  steps = [s for s in ckpt.all_steps() if ckpt._problem(s) is None]
  ckpt.close()
  return steps


def test_rotation_keeps_max_to_keep_verified_checkpoints(tmp_path, monkeypatch):
  directory = str(tmp_path)
  ckpt = checkpoint.Checkpointer(directory, max_to_keep=2)
  for i in range(1, 5):
    ckpt.save(state(i), {'i': i})
    assert verified_steps(directory) == ckpt.all_steps() == list(range(max(1, i - 1), i + 1))
  # A corrupt newest one is found at restore, the previous one used: it does
  # not count as kept, so the two newest verified ones stay.
  flip_bit(largest_data_file(os.path.join(directory, '4')))
  ckpt = checkpoint.Checkpointer(directory, max_to_keep=2)
  assert_state(ckpt.restore_latest(LIKE), 3)
  ckpt.save(state(5), {'i': 5})
  assert verified_steps(directory) == [3, 5]
  ckpt.save(state(6), {'i': 6})
  assert ckpt.all_steps() == verified_steps(directory) == [5, 6]
  # A new one that cannot be finished removes nothing.
  monkeypatch.setattr(checkpoint, 'write_manifest', lambda root: 1 / 0)
  with pytest.raises(checkpoint.CheckpointError, match='ZeroDivisionError'):
    ckpt.save(state(7), {'i': 7})
  assert verified_steps(directory) == [5, 6]
  ckpt.close()


# -----------------------------------------------------------------------------
# Whole runs.
# -----------------------------------------------------------------------------


class FakeCheckpointer:
  directory = '/runs/a/checkpoints'


@pytest.mark.parametrize(
  'stored, expected',
  [
    (
      {'algo.name': 'derpp', 'algo.alpha': 0.1, 'model.widths': [256]},
      [
        'this workdir holds a run of derpp; this config is er',
        'algo.alpha: 0.1 in the checkpoint',
        "algo.name: 'derpp' in the checkpoint, 'er' now",
      ],
    ),
    (
      {'algo.name': 'er', 'model.widths': [100]},
      ['both are runs of er', 'model.widths: [100] in the checkpoint, [256] now'],
    ),
  ],
)
def test_a_checkpoint_of_another_run_names_both_algorithms_and_the_fields(stored, expected):
  callback = callbacks_lib.CheckpointCallback(
    FakeCheckpointer(), run_record={'algo.name': 'er', 'model.widths': [256]}
  )
  with pytest.raises(ValueError, match='different run configuration') as error:
    callback.check_run({'run': stored})
  for line in expected:
    assert line in str(error.value)


# The binary with its checkpoint folder refused to it, as `chattr +i` does
# (Orbax cannot make its temporary folder): an injected error, since root
# ignores permissions.
REFUSED = """
import os, runpy, sys
mkdir = os.mkdir
def refused(path, *args, **kwargs):
  if 'orbax-checkpoint-tmp' in os.fspath(path):
    raise PermissionError(1, 'Operation not permitted', os.fspath(path))
  return mkdir(path, *args, **kwargs)
os.mkdir = refused
runpy.run_module('experiments.train', run_name='__main__', alter_sys=True)
"""


def test_the_binary_ends_within_seconds_on_a_failed_write_and_keeps_its_checkpoints(tmp_path):
  """A save that fails ends the binary with the one-line error, non-zero,
  within seconds (Orbax's background threads once made it hang forever on a
  refused folder); the older checkpoints stay, and the next run goes on."""
  workdir = tmp_path / 'run'
  flags = [
    '--config=configs/quickstart.py',
    '--config.benchmark.num_tasks=2',
    '--config.benchmark.samples_per_task=600',
  ]
  cmd = kills.command(workdir, flags)
  proc = subprocess.Popen(cmd, cwd=kills.REPO, stdout=subprocess.DEVNULL)
  deadline = time.time() + 300
  while proc.poll() is None and kills.progress(workdir) < 2 and time.time() < deadline:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  directory = str(workdir / 'checkpoints')
  before = verified_steps(directory)
  assert before, 'no checkpoint before the kill'
  step = checkpoint.Checkpointer(directory).all_steps()[-1] + 1  # after an unfinished one too

  failures = {
    'refused folder': (
      [cmd[0], '-c', REFUSED, *cmd[3:]],
      'PermissionError: [Errno 1] Operation not permitted: '
      "'{directory}/{step}.orbax-checkpoint-tmp'",
    ),
    # A real I/O error inside Orbax's writer, as a full disk gives: files may
    # not exceed 64 KiB. (Orbax logs its own traceback of it first.)
    'file too large': (
      ['bash', '-c', 'ulimit -f 64 && exec "$@"', 'bash', *cmd],
      'ValueError: OUT_OF_RANGE: Error writing',
    ),
  }
  for name, (failing, reason) in failures.items():
    start = time.time()
    out = subprocess.run(failing, cwd=kills.REPO, capture_output=True, text=True, timeout=60)
    seconds = time.time() - start  # a few seconds of work; a hang times out
    last = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ''
    error = f'error: cannot write checkpoint {step} in {directory}: '
    assert out.returncode == 1 and last.startswith(error), (name, out.stderr[-3000:])
    assert last.startswith(error + reason.format(directory=directory, step=step)), name
    if name == 'refused folder':
      # One line, no traceback (an absl warning before it may say that the killed
      # run's last checkpoint was never finished, when the kill landed there).
      assert 'Traceback' not in out.stderr and out.stderr.count('error:') == 1
    else:
      assert 'File too large' in last and 'Event loop is closed' not in out.stderr
    assert seconds < 60, name
    assert verified_steps(directory)[: len(before)] == before, name
  done = subprocess.run(cmd, cwd=kills.REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'accuracy_matrix' in kills.results(workdir)
