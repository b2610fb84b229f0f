"""Every mode of the binary is a full run: seeds get checkpoints, writers per
replica, plots and a progress bar like a single run; logs carry the training
loss every epoch and every task's accuracy; the binary is quiet by default."""

import glob
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def binary(workdir, *flags):
  """The binary on 2 tasks of the bundled sample (300 samples a task, MLP 32)."""
  return subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.train',
      '--config=configs/ewc.py:permuted_mnist',
      f'--workdir={workdir}',
      '--config.benchmark.num_tasks=2',
      '--config.benchmark.samples_per_task=300',
      '--config.model.widths=(32,)',
      *flags,
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
  )


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def event_tags(directory):
  """`{kind: tags}` of the TensorBoard event files under `directory`."""
  accumulator = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')
  (path,) = glob.glob(os.path.join(directory, 'events.out.tfevents.*'))
  events = accumulator.EventAccumulator(path, size_guidance={'images': 0, 'scalars': 0})
  events.Reload()
  return events.Tags()


@pytest.mark.slow
def test_seeds_are_full_runs_with_writers_per_replica_checkpoints_and_plots(tmp_path):
  # 3 epochs of 3 chunks and `every_chunks=10`: the loss must still be written every epoch.
  out = binary(
    tmp_path,
    '--config.num_seeds=2',
    '--config.train.epochs=3',
    '--config.train.chunk_steps=10',
    '--config.log.every_chunks=10',
    '--config.log.loggers=console,jsonl,tensorboard',
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert '2 replicas (sequential)' in out.stdout and 'acc' in out.stdout
  results = json.loads((tmp_path / 'results.json').read_text())
  assert [r['seed'] for r in results['replicas']] == [0, 1]
  for replica in ('seed_0', 'seed_1'):
    folder = tmp_path / 'replicas' / replica
    assert sorted(os.listdir(folder / 'checkpoints'))  # a walk's own checkpoints
    records = read_jsonl(folder / 'metrics.jsonl')
    training = [r for r in records if 'loss' in r]
    assert [(r['task'], r['epoch']) for r in training] == [
      (t, e) for t in range(2) for e in range(3)
    ]
    evaluations = [r for r in records if 'eval/acc' in r]
    assert [r['task'] for r in evaluations] == [0, 1]
    assert {'eval/task_0/acc', 'eval/task_1/acc', 'eval/bwt'} <= set(evaluations[-1])
    tags = event_tags(folder / 'tensorboard')
    assert 'eval/accuracy_matrix_image' in tags['images']
    assert {'loss', 'eval/acc', 'eval/task_1/acc'} <= set(tags['scalars'])
  assert (tmp_path / 'accuracy_matrix.png').stat().st_size > 1000  # mean ± std over the seeds
  assert (tmp_path / 'task_accuracy.png').stat().st_size > 1000
  # Quiet by default: no INFO lines of absl / Orbax on stderr.
  assert not [line for line in out.stderr.splitlines() if line.startswith('I')], out.stderr[-2000:]


def test_verbosity_brings_the_info_logs_back(tmp_path):
  out = binary(tmp_path, '--verbosity=0', '--config.log.loggers=', '--config.log.plots=False')
  assert out.returncode == 0, out.stderr[-3000:]
  assert [line for line in out.stderr.splitlines() if line.startswith('I')]
  assert (
    'warnings only'
    in subprocess.run(
      [sys.executable, '-m', 'experiments.train', '--helpfull'],
      cwd=REPO,
      capture_output=True,
      text=True,
    ).stdout
  )
