"""Trains a continual-learning stream from an ml_collections config.

  python -m experiments.train --config=configs/quickstart.py --workdir=/tmp/jcl
  python -m experiments.train --config=configs/ewc.py:permuted_mnist \
      --config.algo.ewc_lambda=10 --workdir=/tmp/ewc
  python -m experiments.train --config=configs/ewc.py:permuted_mnist --config.num_seeds=3 \
      --workdir=/tmp/ewc_seeds
  python -m experiments.train --config=configs/er.py:split_mnist_class --backend=torch

Every mode (one run, seeds, a grid, either backend) is `jcl.runs.run`:
`--workdir` gets `results.json` (config, accuracy matrices, metrics,
timings), the writers' files, checkpoints and plots, and the same command
run again resumes where it stopped. Prints the accuracy matrix with ACC,
BWT, FWT and forgetting (mean ± std per setting for seeds and grids).

Quiet by default: the INFO logs of absl, Orbax and JAX are off unless
`--verbosity=0` (or higher) asks for them. A bad config or bad data (a
`ValueError`, e.g. `jcl.data.DataError`), or a checkpoint that cannot be
written (`jcl.checkpoint.CheckpointError`, its folder named), ends the run
with its message on stderr and exit status 1, without a traceback unless
`--verbosity` is given.

One run's batch split over several devices: `--config.train.data_parallel=N`
(-1: all; `jcl.parallel`). A multi-host job runs the same command on every
host with `--coordinator_address=HOST:PORT` (process 0's), `--num_processes`
and its own `--process_id`: `jax.distributed.initialize` is called with them
before anything else, the devices of every process form the mesh (seeds and
grids: `jcl.replicas`), and process 0 writes the files.
"""

from absl import app
from absl import flags

from jcl import cli
from jcl import runs

_CONFIG = cli.DEFINE_config()
_WORKDIR = flags.DEFINE_string(
  'workdir',
  None,
  'Directory for results.json, logs, checkpoints and plots; rerunning in it resumes the run.',
)
_BACKEND = flags.DEFINE_enum(
  'backend',
  'jax',
  sorted(runs.BACKENDS),
  'jax (jcl) or torch (jcl.torch: the same run on PyTorch).',
)
_COORDINATOR = flags.DEFINE_string(
  'coordinator_address',
  None,
  'Multi-host: HOST:PORT of process 0, where the processes meet (jax.distributed.initialize).',
)
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Multi-host: processes in the job.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Multi-host: this process, 0 .. N-1.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  runs.quiet_unless_asked()
  with runs.errors_reported():
    if any(f.value is not None for f in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID)):
      from jcl import parallel

      parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    result = runs.run(_CONFIG.value, _WORKDIR.value, backend=_BACKEND.value)
  print(runs.format_summary(result))
  if _WORKDIR.value:
    print(f'results in {_WORKDIR.value}/results.json')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  runs.document_verbosity()
  app.run(main)
