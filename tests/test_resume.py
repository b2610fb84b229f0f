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

from jcl import checkpoint
from jcl import experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(workdir, run_flags):
  """The binary on the bundled sample: 1200 samples a task, chunks of 10
  batches, a checkpoint after every chunk, so a kill can land mid-chunk,
  between chunks, in `end_task`, in evaluation or while saving."""
  return [sys.executable, '-m', 'experiments.train', f'--workdir={workdir}',
          *run_flags, '--config.benchmark.samples_per_task=1200', '--config.train.epochs=1',
          '--config.train.batch_size=10', '--config.train.chunk_steps=10',
          '--config.checkpoint.every_chunks=1', '--config.log.progress=False',
          '--config.log.plots=False']


def final_state(workdir):
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'))
  step = ckpt.all_steps()[-1]
  restored = ckpt._manager.restore(step)  # raw arrays, no template needed
  ckpt.close()
  return restored


def results(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


@pytest.mark.slow
@pytest.mark.parametrize('algo_flags', [
    ['--config=configs/quickstart.py', '--config.benchmark.num_tasks=3',
     '--config.algo.ewc_lambda=10'],
    ['--config=configs/er.py:split_mnist_class,200', '--config.benchmark.num_tasks=5'],
], ids=['ewc', 'er'])
def test_sigkill_at_random_points_then_resume_is_exact(tmp_path, algo_flags):
  reference = tmp_path / 'reference'
  out = subprocess.run(command(reference, algo_flags), cwd=REPO, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]

  interrupted = tmp_path / 'interrupted'
  rng = random.Random(len(algo_flags))
  kills = 0
  for attempt in range(8):
    log = tmp_path / f'attempt{attempt}.log'  # a file, not a pipe: a full pipe would block the run
    proc = subprocess.Popen(command(interrupted, algo_flags), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=open(log, 'w'))
    try:
      proc.wait(timeout=rng.uniform(4.0, 9.0) if kills < 3 else 600)
    except subprocess.TimeoutExpired:
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      kills += 1
      continue
    assert proc.returncode == 0, log.read_text()[-2000:]
    break
  assert kills >= 1, 'the run finished before it could be killed; lower the delays'

  want, got = results(reference), results(interrupted)
  assert got['accuracy_matrix'] == want['accuracy_matrix']
  a, b = final_state(reference), final_state(interrupted)
  leaves_a, leaves_b = jax.tree.leaves(a['state']), jax.tree.leaves(b['state'])
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


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
  for x, y in zip(jax.tree.leaves(resumed.train_state.params), jax.tree.leaves(full.train_state.params)):
    np.testing.assert_array_equal(x, y)


def test_resume_with_a_different_config_is_refused(tmp_path):
  config = small_config()
  experiment.run(config, str(tmp_path))
  other = small_config()
  other.optimizer.learning_rate = 0.5
  with pytest.raises(ValueError, match='different run configuration'):
    experiment.run(other, str(tmp_path))
