"""Searches a config's hyperparameters with Optuna (see `jcl.search`).

  python -m experiments.search --config=configs/ewc.py:permuted_mnist \
      --space='optimizer.learning_rate=loguniform(0.001,0.3);algo.ewc_lambda=loguniform(0.1,100)' \
      --trials=40 --workers=4 --workdir=/tmp/ewc_search

  # On a cluster: the same command on every node, one shared storage.
  python -m experiments.search --config=... --space=... --trials=200 --workers=1 \
      --study=ewc_pm --storage=postgresql://USER:PASSWORD@DB_HOST/optuna --workdir=/shared/ewc

Every trial is a run in WORKDIR/trials/NNNN; WORKDIR/best.json holds the best
values and score, WORKDIR/trials.json every trial. `--report_only` rewrites
them from the storage without running trials.
"""

import json

from absl import app
from absl import flags

from jcl import cli
from jcl import runs
from jcl import search

_CONFIG = cli.DEFINE_config()
_SPACE = flags.DEFINE_string(
  'space', None, "Search space: 'path=loguniform(lo,hi);path=choice(a,b)'."
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory of the trials, best.json, the journal.')
_TRIALS = flags.DEFINE_integer('trials', 20, 'Trials of the study in all (every worker counts).')
_WORKERS = flags.DEFINE_integer('workers', 1, 'Worker processes started on this machine.')
_STUDY = flags.DEFINE_string('study', search.STUDY_NAME, 'Study name in the storage.')
_STORAGE = flags.DEFINE_string(
  'storage',
  None,
  'SQLAlchemy URL (sqlite:///, postgresql://, '
  'mysql://) or a journal file path; default WORKDIR/optuna.log.',
)
_METRIC = flags.DEFINE_string(
  'metric', 'acc', 'Summary metric to optimise (acc, bwt, forgetting...).'
)
_SEED = flags.DEFINE_integer('seed', 0, "Seed of the first worker's sampler (worker i: seed + i).")
_PRUNER = flags.DEFINE_enum(
  'pruner',
  'none',
  ['none', 'median'],
  'Stop trials whose accuracy after a task is below the median.',
)
_REPORT_ONLY = flags.DEFINE_bool('report_only', False, 'Only write best.json from the storage.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  runs.quiet_unless_asked()
  if _REPORT_ONLY.value:
    best = search.report(
      _WORKDIR.value, study_name=_STUDY.value, storage=_STORAGE.value, metric=_METRIC.value
    )
  else:
    if _CONFIG.value is None or not _SPACE.value:
      raise app.UsageError('--config and --space are required (unless --report_only)')
    best = search.search(
      _CONFIG.value,
      _SPACE.value,
      _WORKDIR.value,
      trials=_TRIALS.value,
      workers=_WORKERS.value,
      study_name=_STUDY.value,
      storage=_STORAGE.value,
      metric=_METRIC.value,
      seed=_SEED.value,
      pruner=_PRUNER.value,
    )
  print(
    json.dumps({k: best[k] for k in ('metric', 'value', 'params', 'trial', 'workdir')}, indent=1)
  )
  print(f'best setting written to {_WORKDIR.value}/best.json')


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  runs.document_verbosity()
  app.run(main)
