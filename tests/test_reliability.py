"""Reliability: runs SIGKILLed at random moments (mid-chunk, mid-save, in
`end_task` or evaluation) and resumed end bit-identical to an uninterrupted
run: single runs, seeds one after the other, a grid vmapped in one program,
and the PyTorch backend.

By default one trial per case, killed 3 times. More trials (each a fresh run
killed once or twice, compared with the same uninterrupted run) with

  JCL_RELIABILITY_TRIALS=20 .venv/bin/pytest -m reliability tests/test_reliability.py -s

which prints a tally per case.
"""

import os
import random
import shutil
import subprocess

import pytest

from tests import kills

TRIALS = int(os.environ.get('JCL_RELIABILITY_TRIALS', '1'))

CASES = {
  'ewc': [
    '--config=configs/quickstart.py',
    '--config.benchmark.num_tasks=3',
    '--config.algo.ewc_lambda=10',
  ],
  'er': ['--config=configs/er.py:split_mnist_class,200', '--config.benchmark.num_tasks=5'],
  # Seeds (sequential on this CPU: one checkpoints folder per replica) and a
  # grid vmapped in one program (one checkpoints folder of stacked states).
  'ewc_3_seeds': [
    '--config=configs/quickstart.py',
    '--config.benchmark.num_tasks=2',
    '--config.benchmark.samples_per_task=600',
    '--config.num_seeds=3',
  ],
  'ewc_2x2_grid_vmap': [
    '--config=configs/quickstart.py',
    '--config.benchmark.num_tasks=2',
    '--config.benchmark.samples_per_task=600',
    '--config.replicas.mode=vmap',
    '--config.grid=optimizer.learning_rate=0.05,0.02;algo.ewc_lambda=10,1',
  ],
  # The PyTorch backend, two seeds (one after the other), dropout drawn from
  # torch's generator (its state is in the checkpoints).
  'torch_er_2_seeds': [
    '--config=configs/er.py:split_mnist_class,200',
    '--backend=torch',
    '--config.benchmark.num_tasks=2',
    '--config.benchmark.samples_per_task=1000',
    '--config.num_seeds=2',
    '--config.model.dropout=0.2',
  ],
}


@pytest.mark.slow
@pytest.mark.reliability
@pytest.mark.parametrize('case', list(CASES))
def test_sigkill_at_random_points_then_resume_is_exact(tmp_path, case):
  flags = CASES[case]
  reference = tmp_path / 'reference'
  out = subprocess.run(
    kills.command(reference, flags), cwd=kills.REPO, capture_output=True, text=True, timeout=600
  )
  assert out.returncode == 0, out.stderr[-2000:]
  rng = random.Random(' '.join(flags) + os.environ.get('JCL_RELIABILITY_SEED', ''))
  identical, killed, failures = 0, 0, []
  for trial in range(TRIALS):
    workdir, logs = tmp_path / f'trial{trial}', tmp_path / f'logs{trial}'
    logs.mkdir()
    wanted = 3 if TRIALS == 1 else rng.randint(1, 2)
    done = kills.run_with_kills(kills.command(workdir, flags), workdir, logs, rng, kills=wanted)
    assert done >= 1, 'the run finished before it could be killed'
    killed += done
    try:
      kills.assert_same_run(reference, workdir)
      identical += 1
      shutil.rmtree(workdir)
    except AssertionError as err:
      failures.append(f'trial {trial} ({done} kills, kept in {workdir}): {err}')
  print(f'\n{case}: {identical}/{TRIALS} bit-identical after {killed} kills')
  assert not failures, '\n'.join(failures)
