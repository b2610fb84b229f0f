"""Hyperparameter search driven by Optuna: every trial is one jcl run.

Optuna's sampler (TPE by default) proposes values for config paths, a trial
runs the config with them (`jcl.runs.run`; with several seeds their mean
is the score) and returns its summary metric. Workers share the study through Optuna's
storage, so any number of them, on one machine or many, cooperate without
a scheduler of ours:

  # One machine, 4 worker processes sharing a journal file in the workdir:
  python -m experiments.search --config=configs/ewc.py:permuted_mnist \
      --space='optimizer.learning_rate=loguniform(0.001,0.3);algo.ewc_lambda=loguniform(0.1,100)' \
      --trials=40 --workers=4 --workdir=/tmp/ewc_search

  # A cluster: one database every node reaches (any SQLAlchemy URL; create
  # the database once). Start the same command on every node, as many
  # times and whenever you like; each worker takes trials until the study
  # has --trials of them:
  python -m experiments.search --config=configs/ewc.py:permuted_mnist --space=... \
      --trials=200 --workers=1 --study=ewc_pm \
      --storage=postgresql://USER:PASSWORD@DB_HOST/optuna --workdir=/shared/ewc_search
  # (a journal file on a shared file system works too: --storage=/shared/ewc_search/optuna.log)
  # The best setting so far, written to WORKDIR/best.json, at any time:
  python -m experiments.search --config=... --space=... --study=ewc_pm --storage=... \
      --workdir=/shared/ewc_search --report_only

Search-space syntax (`;`-separated, or a mapping path -> the same strings
or `optuna.distributions` objects): `uniform(lo,hi)`, `loguniform(lo,hi)`,
`int(lo,hi)`, `logint(lo,hi)`, `choice(a,b,...)`. Any scalar config path can
be searched (`optimizer.learning_rate`, `algo.memory_size`,
`train.batch_size`...), since each trial is a separate run.

Each trial writes its run to `WORKDIR/trials/NNNN/results.json`; the
workdir's `best.json` holds the best trial's values, score and run
directory, and `trials.json` every trial.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from typing import Any, Mapping

import ml_collections

STUDY_NAME = 'jcl'
JOURNAL_FILE = 'optuna.log'
_DISTRIBUTION = re.compile(r'^\s*(uniform|loguniform|int|logint|choice)\s*\((.*)\)\s*$')


def _optuna():
  try:
    import optuna
  except ImportError as err:  # an optional dependency
    raise ImportError('jcl.search needs Optuna: pip install "jcl[search]"') from err
  return optuna


def parse_space(space: Any) -> dict[str, Any]:
  """`{path: optuna distribution}` from `'path=loguniform(1e-3,0.3);...'` or a mapping."""
  distributions = _optuna().distributions
  if isinstance(space, str):
    entries = {}
    for part in space.replace('\n', ';').split(';'):
      if part.strip():
        path, sep, text = part.partition('=')
        if not sep:
          raise ValueError(f'space: expected "path=distribution(...)" in {part!r}')
        entries[path.strip()] = text
    space = entries
  if not space:
    raise ValueError('space: nothing to search')
  out = {}
  for path, text in dict(space).items():
    if isinstance(text, distributions.BaseDistribution):
      out[path] = text
      continue
    match = _DISTRIBUTION.match(str(text))
    if not match:
      raise ValueError(
        f'space: cannot read {path}={text!r}; use uniform(lo,hi), '
        'loguniform(lo,hi), int(lo,hi), logint(lo,hi) or choice(a,b,...)'
      )
    kind, args = match.group(1), [a.strip() for a in match.group(2).split(',') if a.strip()]
    if kind == 'choice':
      out[path] = distributions.CategoricalDistribution([_literal(a) for a in args])
      continue
    if len(args) != 2:
      raise ValueError(f'space: {path}={text!r} needs two bounds')
    if kind in ('int', 'logint'):
      out[path] = distributions.IntDistribution(int(args[0]), int(args[1]), log=kind == 'logint')
    else:
      out[path] = distributions.FloatDistribution(
        float(args[0]), float(args[1]), log=kind == 'loguniform'
      )
  return out


def _literal(text: str) -> Any:
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  return {'True': True, 'False': False}.get(text, text)


def with_values(config, values: Mapping[str, Any]):
  """A copy of `config` with the dotted paths of `values` set.

  A path must name an existing field, except in `algo`, where any of the
  spec's hyperparameters may be set (the spec rejects unknown ones).
  """
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for path, value in values.items():
      *parents, field = path.split('.')
      node = config
      for name in parents:
        if name not in node:
          raise KeyError(f'search: the config has no section {path!r}')
        node = node[name]
      if field not in node and parents != ['algo']:
        raise KeyError(f'search: the config has no field {path!r}')
      try:
        node[field] = value
      except TypeError:  # e.g. an int field given a float: replace it untyped
        del node[field]
        node[field] = value
  return config


def storage_for(storage: str | None, workdir: str):
  """An Optuna storage: an RDB URL (`sqlite:///...`, `postgresql://...`,
  `mysql://...`) as is, else a journal file (default `WORKDIR/optuna.log`)."""
  optuna = _optuna()
  if storage and '://' in storage:
    return storage
  path = storage or os.path.join(workdir, JOURNAL_FILE)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))


def direction_of(metric: str) -> str:
  from jcl.run_spec import LOWER_IS_BETTER

  return 'minimize' if metric in LOWER_IS_BETTER else 'maximize'


def suggest(trial, path: str, distribution) -> Any:
  """The trial's value of `path` under `distribution` (Optuna's public `suggest_*`)."""
  distributions = _optuna().distributions
  if isinstance(distribution, distributions.CategoricalDistribution):
    return trial.suggest_categorical(path, distribution.choices)
  if isinstance(distribution, distributions.IntDistribution):
    return trial.suggest_int(
      path, distribution.low, distribution.high, log=distribution.log, step=distribution.step
    )
  return trial.suggest_float(
    path, distribution.low, distribution.high, log=distribution.log, step=distribution.step
  )


def _task_reporter(trial):
  """A `fit` callback reporting, after each task, the average accuracy over
  the tasks seen so far, so that a pruner can stop a hopeless trial."""
  import numpy as np
  from jcl import callbacks

  class ReportTasks(callbacks.Callback):
    def on_task_end(self, ctx):
      k = ctx.task
      trial.report(float(np.mean(ctx.accuracy_matrix[: k + 1, k])), step=k)
      if trial.should_prune():
        raise _optuna().TrialPruned(f'pruned after task {k}')

  return ReportTasks()


def objective(config, space: Mapping[str, Any], workdir: str, metric: str = 'acc'):
  """`trial -> score`: runs `config` with the trial's values in `workdir/trials/NNNN`."""
  from jcl import run_spec
  from jcl import runs

  def run_trial(trial) -> float:
    values = {path: suggest(trial, path, dist) for path, dist in space.items()}
    trial_config = with_values(config, values)
    trial_dir = os.path.join(workdir, 'trials', f'{trial.number:04d}')
    trial.set_user_attr('workdir', trial_dir)
    trial.set_user_attr('worker_pid', os.getpid())
    if run_spec.RunSpec.from_config(trial_config).replicated:
      result = runs.run(trial_config, trial_dir)
      row = result.best()
      summary, score = row['mean'], row['mean'][metric]
      trial.set_user_attr('std', row['std'].get(metric))
    else:
      result = runs.run(trial_config, trial_dir, extra_callbacks=[_task_reporter(trial)])
      summary, score = result.summary, result.summary[metric]
    trial.set_user_attr('summary', {k: float(v) for k, v in summary.items()})
    return float(score)

  return run_trial


def open_study(
  workdir: str,
  *,
  study_name: str = STUDY_NAME,
  storage: str | None = None,
  metric: str = 'acc',
  sampler_seed: int | None = None,
  pruner: str = 'none',
):
  """The study in the storage, created if new (TPE sampler; median pruner or none)."""
  optuna = _optuna()
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  return optuna.create_study(
    study_name=study_name,
    storage=storage_for(storage, workdir),
    load_if_exists=True,
    direction=direction_of(metric),
    sampler=optuna.samplers.TPESampler(seed=sampler_seed),
    pruner=optuna.pruners.MedianPruner() if pruner == 'median' else optuna.pruners.NopPruner(),
  )


def work(
  config,
  space,
  workdir: str,
  *,
  trials: int,
  study_name: str = STUDY_NAME,
  storage: str | None = None,
  metric: str = 'acc',
  sampler_seed: int | None = None,
  pruner: str = 'none',
  max_trials_here: int | None = None,
) -> None:
  """One worker: takes trials of the shared study until it holds `trials`
  (counting running ones) or this worker ran `max_trials_here`."""
  optuna = _optuna()
  space = parse_space(space)
  study = open_study(
    workdir,
    study_name=study_name,
    storage=storage,
    metric=metric,
    sampler_seed=sampler_seed,
    pruner=pruner,
  )
  states = tuple(optuna.trial.TrialState)
  limit = optuna.study.MaxTrialsCallback(trials, states=states)
  if len(study.get_trials(deepcopy=False, states=states)) >= trials:
    return
  study.optimize(
    objective(config, space, workdir, metric),
    n_trials=max_trials_here,
    callbacks=[limit],
    catch=(FloatingPointError,),
  )


def _work_from_file(path: str, index: int) -> None:
  """A worker process's entry point: the arguments `search` wrote to `path`."""
  with open(path) as f:
    args = json.load(f)
  work(
    ml_collections.ConfigDict(json.loads(args.pop('config'))),
    args.pop('space'),
    args.pop('workdir'),
    sampler_seed=args.pop('seed') + index,
    **args,
  )


def search(
  config,
  space,
  workdir: str,
  *,
  trials: int,
  workers: int = 1,
  study_name: str = STUDY_NAME,
  storage: str | None = None,
  metric: str = 'acc',
  seed: int = 0,
  pruner: str = 'none',
) -> dict[str, Any]:
  """Runs `trials` trials with `workers` local workers on a shared storage,
  then writes and returns the best (`report`).

  This process is worker 0; the others are fresh Python processes (`python
  -m jcl.search ARGS INDEX`): JAX does not survive a fork, and a spawned
  child would re-import the caller's main script.
  """
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  if not isinstance(space, str):
    space = {k: v if isinstance(v, str) else _distribution_text(v) for k, v in space.items()}
  # Fail here, not in the workers: the space's syntax and its config paths.
  with_values(config, {path: _some_value(d) for path, d in parse_space(space).items()})
  storage_arg = storage
  open_study(workdir, study_name=study_name, storage=storage, metric=metric)  # before the workers
  args_path = os.path.join(workdir, 'search_args.json')
  with open(args_path, 'w') as f:
    json.dump(
      {
        'config': config.to_json_best_effort(),
        'space': space,
        'workdir': workdir,
        'trials': trials,
        'study_name': study_name,
        'storage': storage_arg,
        'metric': metric,
        'seed': seed,
        'pruner': pruner,
        'max_trials_here': -(-trials // workers),
      },
      f,
      indent=1,
    )
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
  processes = [
    subprocess.Popen([sys.executable, '-m', 'jcl.search', args_path, str(i)], env=env)
    for i in range(1, workers)
  ]
  try:
    work(
      config,
      space,
      workdir,
      trials=trials,
      study_name=study_name,
      storage=storage_arg,
      metric=metric,
      sampler_seed=seed,
      pruner=pruner,
      max_trials_here=-(-trials // workers),
    )
  finally:
    failed = [code for code in (p.wait() for p in processes) if code]
  if failed:
    raise RuntimeError(f'{len(failed)} search worker(s) failed (exit codes {failed})')
  return report(workdir, study_name=study_name, storage=storage_arg, metric=metric)


def _some_value(distribution) -> Any:
  choices = getattr(distribution, 'choices', None)
  return choices[0] if choices else distribution.low


def _distribution_text(distribution) -> str:
  """The `parse_space` text of an Optuna distribution."""
  distributions = _optuna().distributions
  if isinstance(distribution, distributions.CategoricalDistribution):
    return 'choice(' + ','.join(str(c) for c in distribution.choices) + ')'
  kind = 'int' if isinstance(distribution, distributions.IntDistribution) else 'uniform'
  kind = {'int': 'logint', 'uniform': 'loguniform'}[kind] if distribution.log else kind
  return f'{kind}({distribution.low},{distribution.high})'


def report(
  workdir: str, *, study_name: str = STUDY_NAME, storage: str | None = None, metric: str = 'acc'
) -> dict[str, Any]:
  """Writes `WORKDIR/best.json` (the best trial) and `trials.json` (all trials)."""
  optuna = _optuna()
  study = optuna.load_study(study_name=study_name, storage=storage_for(storage, workdir))
  trials = [
    {
      'number': t.number,
      'state': t.state.name,
      'params': t.params,
      'value': t.value,
      **t.user_attrs,
    }
    for t in study.get_trials(deepcopy=False)
  ]
  complete = [
    t
    for t in trials
    if t['state'] == 'COMPLETE' and t['value'] is not None and math.isfinite(t['value'])
  ]
  if not complete:
    raise RuntimeError(f'no trial of study {study_name!r} completed')
  best = study.best_trial
  document = {
    'study': study_name,
    'metric': metric,
    'direction': direction_of(metric),
    'value': best.value,
    'params': best.params,
    'trial': best.number,
    'workdir': best.user_attrs.get('workdir'),
    'summary': best.user_attrs.get('summary'),
    'completed_trials': len(complete),
    'trials': len(trials),
  }
  for name, payload in (('best.json', document), ('trials.json', trials)):
    tmp = os.path.join(workdir, name + '.tmp')
    with open(tmp, 'w') as f:
      json.dump(payload, f, indent=1)
    os.replace(tmp, os.path.join(workdir, name))
  return document


if __name__ == '__main__':
  _work_from_file(sys.argv[1], int(sys.argv[2]))
