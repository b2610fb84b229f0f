"""Exact resumption: runs killed with SIGKILL at random moments and restarted
end with the same parameters and accuracy matrix as an uninterrupted run;
a corrupt latest checkpoint is reported and the one before it is used."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jcl import callbacks as jcl_callbacks
from jcl import checkpoint
from jcl import experiment

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
  ckpt = checkpoint.Checkpointer(checkpoint_dir)
  step = ckpt.all_steps()[-1]
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


@pytest.mark.slow
@pytest.mark.parametrize(
  'algo_flags',
  [
    [
      '--config=configs/quickstart.py',
      '--config.benchmark.num_tasks=3',
      '--config.algo.ewc_lambda=10',
    ],
    ['--config=configs/er.py:split_mnist_class,200', '--config.benchmark.num_tasks=5'],
    # Seeds (sequential on this CPU: one checkpoints folder per replica) and a
    # grid vmapped in one program (one checkpoints folder of stacked states).
    [
      '--config=configs/quickstart.py',
      '--config.benchmark.num_tasks=2',
      '--config.benchmark.samples_per_task=600',
      '--config.num_seeds=3',
    ],
    [
      '--config=configs/quickstart.py',
      '--config.benchmark.num_tasks=2',
      '--config.benchmark.samples_per_task=600',
      '--config.replicas.mode=vmap',
      '--config.grid=optimizer.learning_rate=0.05,0.02;algo.ewc_lambda=10,1',
    ],
    # The PyTorch backend, two seeds (one after the other), dropout drawn from
    # torch's generator (its state is in the checkpoints).
    [
      '--config=configs/er.py:split_mnist_class,200',
      '--backend=torch',
      '--config.benchmark.num_tasks=2',
      '--config.benchmark.samples_per_task=1000',
      '--config.num_seeds=2',
      '--config.model.dropout=0.2',
    ],
  ],
  ids=['ewc', 'er', 'ewc_3_seeds', 'ewc_2x2_grid_vmap', 'torch_er_2_seeds'],
)
def test_sigkill_at_random_points_then_resume_is_exact(tmp_path, algo_flags):
  reference = tmp_path / 'reference'
  out = subprocess.run(
    command(reference, algo_flags), cwd=REPO, capture_output=True, text=True, timeout=600
  )
  assert out.returncode == 0, out.stderr[-2000:]
  interrupted = tmp_path / 'interrupted'
  kills = run_with_kills(
    command(interrupted, algo_flags), interrupted, tmp_path, random.Random(' '.join(algo_flags))
  )
  assert kills >= 1, 'the run finished before it could be killed'
  assert_same_run(reference, interrupted)


def small_config():
  from configs import quickstart

  config = quickstart.get_config()
  config.benchmark.num_tasks = 3
  config.benchmark.samples_per_task = 300
  config.train.epochs = 1
  config.algo = dict(name='er', memory_size=50, replay_batch_size=10)
  config.log.progress = False
  config.log.loggers = ()
  config.log.plots = False
  return config


def test_corrupt_latest_checkpoint_is_reported_and_previous_used(tmp_path, capsys):
  config = small_config()
  full = experiment.run(config, str(tmp_path / 'full'))
  workdir = tmp_path / 'run'
  experiment.run(config, str(workdir))
  ckpt_dir = workdir / 'checkpoints'
  steps = sorted(int(p) for p in os.listdir(ckpt_dir) if p.isdigit())
  assert len(steps) == 3  # one per task
  # Corrupt the newest checkpoint's arrays, then rerun: it must say which
  # checkpoint is bad, resume from the one before (after task 1), and end
  # with the same numbers.
  for root, _, files in os.walk(ckpt_dir / str(steps[-1]) / 'state'):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'garbage')
  resumed = experiment.run(config, str(workdir))
  message = capsys.readouterr().out
  assert f'checkpoint {ckpt_dir / str(steps[-1])} is corrupt' in message
  np.testing.assert_array_equal(resumed.accuracy_matrix, full.accuracy_matrix)
  for x, y in zip(
    jax.tree.leaves(resumed.train_state.params), jax.tree.leaves(full.train_state.params)
  ):
    np.testing.assert_array_equal(x, y)


def test_resume_with_a_different_config_is_refused_naming_the_fields(tmp_path):
  config = small_config()
  config.checkpoint.every_chunks = 1

  class Crash(Exception):
    pass

  class CrashInTask1(jcl_callbacks.Callback):
    def on_chunk_end(self, ctx):
      if ctx.task == 1:
        raise Crash()

  with pytest.raises(Crash):
    experiment.run(config, str(tmp_path), extra_callbacks=[CrashInTask1()])
  other = small_config()
  other.checkpoint.every_chunks = 1
  other.optimizer.learning_rate = 0.5
  other.algo = dict(name='er', memory_size=60, replay_batch_size=10)
  with pytest.raises(ValueError, match='different run configuration') as error:
    experiment.run(other, str(tmp_path))
  message = str(error.value)
  assert 'optimizer.learning_rate: 0.05 in the checkpoint, 0.5 now' in message
  assert 'algo.memory_size: 50 in the checkpoint, 60 now' in message
  assert 'seed' not in message.replace('(seed', '')  # only the fields that differ
  # Presentation (writers, progress bar, plots) and the checkpoint cadence do
  # not decide the numbers: changing them resumes the run.
  same = small_config()
  same.log.loggers = ('jsonl', 'csv')
  same.log.plots = True
  same.checkpoint.every_chunks = 2
  resumed = experiment.run(same, str(tmp_path))
  np.testing.assert_array_equal(
    resumed.accuracy_matrix, experiment.run(small_config()).accuracy_matrix
  )


def test_rerunning_a_finished_run_says_so_and_keeps_its_results(tmp_path, capsys):
  config = small_config()
  first = experiment.run(config, str(tmp_path))
  written = (tmp_path / 'results.json').read_bytes()
  capsys.readouterr()
  again = experiment.run(config, str(tmp_path))
  assert 'this run has already finished' in capsys.readouterr().out
  assert again.already_finished and not first.already_finished
  assert (tmp_path / 'results.json').read_bytes() == written
  np.testing.assert_array_equal(again.accuracy_matrix, first.accuracy_matrix)
  assert again.timings['samples_seen'] == first.timings['samples_seen']
  assert again.timings['train_seconds'] == pytest.approx(first.timings['train_seconds'])
  for x, y in zip(
    jax.tree.leaves(again.train_state.params), jax.tree.leaves(first.train_state.params)
  ):
    np.testing.assert_array_equal(x, y)
