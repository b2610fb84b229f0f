"""The experiment binary killed and resumed: its command on the bundled
sample, SIGKILLs at random moments, and the bit-for-bit comparison of the
final states and accuracy matrices with an uninterrupted run (used by
tests/test_reliability.py and tests/test_checkpoint_integrity.py)."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from jcl import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(workdir, run_flags):
  """The binary on the bundled sample: 1200 samples a task (unless the flags
  say otherwise), chunks of 10 batches, a checkpoint after every chunk, so a
  kill can land mid-chunk, between chunks, in `end_task`, in evaluation or
  while saving."""
  config, *overrides = run_flags  # --config= comes first
  return [
    sys.executable,
    '-m',
    'experiments.train',
    f'--workdir={workdir}',
    config,
    '--config.benchmark.samples_per_task=1200',
    *overrides,
    '--config.train.epochs=1',
    '--config.train.batch_size=10',
    '--config.train.chunk_steps=10',
    '--config.checkpoint.every_chunks=1',
    '--config.log.progress=False',
    '--config.log.plots=False',
  ]


def final_state(checkpoint_dir):
  """The newest Orbax checkpoint's raw arrays and record (its files checked)."""
  ckpt = checkpoint.Checkpointer(checkpoint_dir)
  step = ckpt.all_steps()[-1]
  checkpoint.verify_manifest(ckpt.path(step))
  restored = ckpt._manager.restore(step)  # raw arrays, no template needed
  ckpt.close()
  return restored


def final_torch_state(checkpoint_dir):
  """The newest `jcl.torch.checkpoint` file's model, optimizer and algorithm
  state as a list of arrays."""
  import torch
  from jcl.torch import checkpoint as torch_checkpoint

  ckpt = torch_checkpoint.Checkpointer(checkpoint_dir)
  payload = ckpt._payload(ckpt.path(ckpt.all_steps()[-1]))
  leaves = [payload['model'][k] for k in sorted(payload['model'])]
  leaves += torch_checkpoint.flatten(payload['optimizer']) + list(payload['algo_state'])
  return [np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v) for v in leaves]


def checkpoint_dirs(workdir):
  """Every checkpoints folder of a run (one, or one per replica), sorted."""
  return sorted(
    root for root, dirs, _ in os.walk(workdir) if os.path.basename(root) == 'checkpoints'
  )


def progress(workdir):
  """Checkpoints written so far (the sum of each folder's newest step number;
  Orbax folders `N`, torch files `checkpoint_N.pt`)."""
  total = 0
  for directory in checkpoint_dirs(workdir):
    names = [name.removeprefix('checkpoint_').removesuffix('.pt') for name in os.listdir(directory)]
    total += max((int(name) for name in names if name.isdigit()), default=0)
  return total


def results(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def matrices(document):
  """The accuracy matrix of each replica (one for a single run)."""
  if 'replicas' in document:
    return [r['accuracy_matrix'] for r in document['replicas']]
  return [document['accuracy_matrix']]


def run_with_kills(cmd, workdir, log_dir, rng, kills=3):
  """Runs `cmd` again and again in `workdir`, SIGKILLing it `kills` times at
  random moments once it has made progress (0-2 new checkpoints, then up to
  half a second: mid-chunk, mid-save, in end_task or evaluation), then lets
  it finish. Returns the number of kills."""
  done = 0
  for attempt in range(kills + 3):
    before = progress(workdir)
    log = log_dir / f'attempt{attempt}.log'  # a file, not a pipe: a full pipe would block
    with open(log, 'w') as stderr:
      proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
    if done < kills:
      wanted = before + rng.randint(1, 3)
      deadline = time.time() + 300
      while proc.poll() is None and progress(workdir) < wanted and time.time() < deadline:
        time.sleep(0.02)
      time.sleep(rng.uniform(0.0, 0.5))
      if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done += 1
        continue
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    return done
  raise AssertionError('the run did not finish')


def assert_same_run(reference, interrupted):
  """Equal accuracy matrices in results.json and bit-identical final states
  in every checkpoints folder."""
  assert matrices(results(interrupted)) == matrices(results(reference))
  dirs_a, dirs_b = checkpoint_dirs(reference), checkpoint_dirs(interrupted)
  assert [os.path.relpath(d, reference) for d in dirs_a] == [
    os.path.relpath(d, interrupted) for d in dirs_b
  ] and dirs_a
  for a, b in zip(dirs_a, dirs_b):
    if any(name.endswith('.pt') for name in os.listdir(a)):
      leaves_a, leaves_b = final_torch_state(a), final_torch_state(b)
    else:
      leaves_a = jax.tree.leaves(final_state(a)['state'])
      leaves_b = jax.tree.leaves(final_state(b)['state'])
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
