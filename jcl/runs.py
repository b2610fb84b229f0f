"""One run of a config, in every mode and on either backend: `run(config, workdir)`.

  result = jcl.runs.run(config, '/tmp/ewc')                    # one run
  result = jcl.runs.run(config_with_num_seeds_5, '/tmp/ewc')   # seeds / a grid
  result = jcl.runs.run(config, '/tmp/ewc', backend='torch')   # PyTorch

The config becomes a `jcl.run_spec.RunSpec` here, once; then every mode
goes through the same walk (`jcl.loop.walk`) with the same callbacks:
evaluation, metric writers (one per replica), the progress bar, the user's
callbacks and checkpoints, and ends with the same `results.json`, plots and
console summary. Only the executor differs:

* one run: the backend's executor (`jcl.train.JaxExecutor`,
  `jcl.torch.fit.TorchExecutor`);
* seeds / grid settings, `replicas.mode='vmap'`: all replicas in one walk of
  `jcl.replicas.VmappedExecutor` (JAX), checkpoints in `WORKDIR/checkpoints`;
* seeds / grid settings, 'sequential': one walk per replica, sharing the
  compiled programs (JAX), checkpoints in `WORKDIR/replicas/<replica>/`.

With a workdir a run writes `results.json`, the writers' files (per replica
under `WORKDIR/replicas/<replica>/` for seeds and grids), checkpoints and
plots. Running the same command again resumes from the newest checkpoint;
rerunning a finished run says so and leaves `results.json` as it was.

A backend is a module with `name`, `prepare(spec)`, `environment()`,
`checkpointer(directory, max_to_keep)`, `replica_mode(mode)`,
`build(spec, shared, hp)`, `executor(parts, hp, shared)`,
`init_algo_state(parts, hp, shared)`, `stack_states(states)`, `is_writer()`,
`devices(mesh)` and, for the vmap mode, `vmapped(spec, replicas, mesh,
shared)` (see `jcl.experiment`).

Imports neither JAX nor PyTorch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import math
import os
import sys
import time
from typing import Any, Mapping, Sequence

import numpy as np

from jcl import callbacks as callbacks_lib
from jcl import loggers as loggers_lib
from jcl import loop
from jcl import metrics as metrics_lib
from jcl.loop import FitResult, NonFiniteLossError, nan_to_none
from jcl.run_spec import LOWER_IS_BETTER, Replica, RunSpec

RESULTS_FILE = 'results.json'
BACKENDS = {'jax': 'jcl.experiment', 'torch': 'jcl.torch.experiment'}


def backend_module(name: str):
  """The backend module of `name` ('jax' or 'torch')."""
  if name not in BACKENDS:
    raise ValueError(f'unknown backend {name!r}; known: {", ".join(BACKENDS)}')
  return importlib.import_module(BACKENDS[name])


# -----------------------------------------------------------------------------
# Results of seeds and grids.
# -----------------------------------------------------------------------------


@dataclasses.dataclass
class ReplicasResult:
  """What a run of several replicas measured, replica by replica and per setting.

  Attributes:
    replicas: the R replicas, setting-major then seed.
    accuracy_matrices: `[R, T, T]`, `R[r, i, j]` accuracy on task i after task j.
    initial_accuracy: `[R, T]`, the untrained models.
    task_il_accuracy_matrices: `[R, T, T]` for class-incremental streams, else None.
    summaries: per replica, ACC, BWT, FWT, forgetting, ... (fractions).
    histories: per replica, the per-chunk mean training metrics.
    errors: per replica, its first non-finite training metric, else None.
    table: per setting, ranked best first: `hparams`, `seeds`, `mean`,
      `std` (sample, ddof=1; 0 for one seed) of every summary metric and of
      the accuracy matrix.
    train_state, algo_state: the final states, stacked `[R, ...]` (JAX) or a
      list (PyTorch).
    mode: 'vmap' or 'sequential'; timings: seconds of the whole run.
    replica_timings: per replica, its share of the timings (its own seconds
      in sequential mode, the program's divided by R in vmap mode).
    already_finished: a rerun of a finished run (nothing trained).
  """

  replicas: list[Replica]
  accuracy_matrices: np.ndarray
  initial_accuracy: np.ndarray
  task_il_accuracy_matrices: np.ndarray | None
  summaries: list[dict[str, float]]
  histories: list[list[dict[str, Any]]]
  errors: list[str | None]
  table: list[dict[str, Any]]
  train_state: Any
  algo_state: Any
  mode: str
  timings: dict[str, float]
  devices: list[str] = dataclasses.field(default_factory=list)
  replica_timings: list[dict[str, float]] = dataclasses.field(default_factory=list)
  already_finished: bool = False

  def fit_result(self, index: int, pick=None) -> FitResult:
    """Replica `index` as the `FitResult` of a single run (`pick(tree, index)`
    takes its states out of the stacked ones)."""
    pick = pick or (lambda tree, i: tree[i] if isinstance(tree, list) else tree)
    task_il = (
      None if self.task_il_accuracy_matrices is None else self.task_il_accuracy_matrices[index]
    )
    timings = self.replica_timings[index] if self.replica_timings else dict(self.timings)
    return FitResult(
      pick(self.train_state, index),
      pick(self.algo_state, index),
      self.accuracy_matrices[index],
      self.initial_accuracy[index],
      self.summaries[index],
      self.histories[index],
      dict(timings),
      task_il,
    )

  def best(self) -> dict[str, Any]:
    """The best setting: the first row of `table`."""
    return self.table[0]

  def to_json(self) -> dict[str, Any]:
    runs = []
    for r, replica in enumerate(self.replicas):
      entry = {
        'seed': replica.seed,
        'hparams': dict(replica.hparams),
        'label': replica.label(),
        'accuracy_matrix': nan_to_none(self.accuracy_matrices[r]),
        'initial_accuracy': np.asarray(self.initial_accuracy[r]).tolist(),
        'summary': self.summaries[r],
      }
      if self.task_il_accuracy_matrices is not None:
        entry['task_il_accuracy_matrix'] = nan_to_none(self.task_il_accuracy_matrices[r])
      if self.errors[r]:
        entry['error'] = self.errors[r]
      runs.append(entry)
    table = [
      dict(
        row,
        mean_accuracy_matrix=nan_to_none(row['mean_accuracy_matrix']),
        std_accuracy_matrix=nan_to_none(row['std_accuracy_matrix']),
      )
      for row in self.table
    ]
    return {
      'mode': self.mode,
      'devices': self.devices,
      'replicas': runs,
      'table': table,
      'best': table[0],
      'timings': self.timings,
      'replica_timings': self.replica_timings,
    }


def aggregate(
  replicas: Sequence[Replica],
  summaries: Sequence[dict[str, float]],
  accuracy_matrices: np.ndarray,
  rank_by: str = 'acc',
) -> list[dict[str, Any]]:
  """Per setting: mean and sample std over seeds of every metric, best first by `rank_by`.

  A setting with a diverged seed (NaN metric) ranks last.
  """
  groups: dict[tuple, list[int]] = {}
  for r, replica in enumerate(replicas):
    groups.setdefault(tuple(replica.hparams.items()), []).append(r)
  rows = []
  for key, members in groups.items():
    names = sorted(set().union(*(summaries[r] for r in members)))
    values = {
      k: np.array([summaries[r].get(k, np.nan) for r in members], np.float64) for k in names
    }
    rows.append(
      {
        'hparams': dict(key),
        'seeds': [replicas[r].seed for r in members],
        'mean': {k: float(np.mean(v)) for k, v in values.items()},
        'std': {k: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()},
        'mean_accuracy_matrix': np.mean(accuracy_matrices[members], axis=0),
        'std_accuracy_matrix': (
          np.std(accuracy_matrices[members], axis=0, ddof=1)
          if len(members) > 1
          else np.zeros_like(accuracy_matrices[0])
        ),
      }
    )
  sign = 1.0 if rank_by in LOWER_IS_BETTER else -1.0

  def score(row):
    value = row['mean'].get(rank_by, np.nan)
    return (math.isnan(value), sign * value if not math.isnan(value) else 0.0)

  return sorted(rows, key=score)


# -----------------------------------------------------------------------------
# Files.
# -----------------------------------------------------------------------------


def json_default(value):
  """JSON for NumPy scalars and arrays and dataclasses; `str` otherwise."""
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  if dataclasses.is_dataclass(value):
    return dataclasses.asdict(value)
  return str(value)


def config_json(config) -> Any:
  """A config (ConfigDict, mapping or `RunSpec`) as JSON-able data."""
  if isinstance(config, RunSpec):
    return config.config
  if hasattr(config, 'to_json_best_effort'):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(dict(config), default=json_default))


def write_results(
  workdir: str, config, payload: Mapping[str, Any], environment: Mapping[str, Any]
) -> str:
  """Atomically writes `workdir/results.json` (a crash never leaves half a
  file): the config, the backend's `environment`, then `payload`."""
  path = os.path.join(workdir, RESULTS_FILE)
  document = {'config': config_json(config), 'environment': dict(environment), **payload}
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(document, f, indent=1, default=json_default)
  os.replace(tmp, path)
  return path


def draw_plots(workdir: str) -> list[str]:
  """The plots of `workdir/results.json` as PNGs in `workdir` (skipped, with a
  message, when matplotlib is not installed)."""
  from jcl import plots

  try:
    return plots.plot_results(workdir)
  except ImportError as err:
    print(f'plots skipped: {err}')
    return []


def format_summary(result) -> str:
  """The accuracy matrix and headline metrics of a run (`FitResult`) or the
  ranked settings of a replicated run (`ReplicasResult`), for the console."""
  if isinstance(result, ReplicasResult):
    return _format_replicas(result)
  s = result.summary
  lines = [
    'accuracy matrix R[i, j] (%, task i after training task j):',
    metrics_lib.format_matrix(result.accuracy_matrix),
  ]
  parts = [
    f'{k.upper()} n/a'
    if math.isnan(s[k])  # undefined (class-incremental FWT; jcl.metrics says why)
    else f'{k.upper()} {100 * s[k]:+.2f}'
    if k in ('bwt', 'fwt')
    else f'{k} {100 * s[k]:.2f}'
    for k in ('acc', 'bwt', 'fwt', 'forgetting')
    if k in s
  ]
  lines.append(' | '.join(parts))
  t = result.timings
  lines.append(
    f'train {t["train_seconds"]:.1f}s ({t["train_samples_per_second"]:.0f} samples/s), '
    f'eval {t["eval_seconds"]:.1f}s, compile {t.get("compile_seconds", 0.0):.1f}s'
  )
  return '\n'.join(lines)


def _format_replicas(result: ReplicasResult, rank_by: str = 'acc') -> str:
  keys = ('acc', 'bwt', 'fwt', 'forgetting')
  lines = [f'{len(result.replicas)} replicas ({result.mode}), ranked by {rank_by}:']
  for rank, row in enumerate(result.table, 1):
    setting = ' '.join(f'{k}={v:g}' for k, v in row['hparams'].items()) or '(config)'
    cells = [
      f'{k} {100 * row["mean"][k]:.2f} ± {100 * row["std"][k]:.2f}'
      for k in keys
      if k in row['mean']
    ]
    lines.append(f'{rank:>2}. {setting} [{len(row["seeds"])} seeds]: ' + ' | '.join(cells))
  for error in (e for e in result.errors if e):
    lines.append(f'failed: {error}')
  lines.append('mean accuracy matrix of the best setting (%):')
  lines.append(metrics_lib.format_matrix(result.table[0]['mean_accuracy_matrix']))
  t = result.timings
  lines.append(
    f'train {t["train_seconds"]:.1f}s, eval {t["eval_seconds"]:.1f}s, '
    f'compile {t.get("compile_seconds", 0.0):.1f}s, wall {t["wall_seconds"]:.1f}s'
  )
  return '\n'.join(lines)


# -----------------------------------------------------------------------------
# The run.
# -----------------------------------------------------------------------------

VERBOSITY_HELP = ' (default in jcl binaries: warnings only; 0 or more shows INFO logs)'


@contextlib.contextmanager
def errors_reported():
  """In an absl binary: a bad config or bad data (a `ValueError`, e.g.
  `jcl.data.DataError`) or a checkpoint that cannot be written
  (`jcl.checkpoint.CheckpointError`) ends the process with one line,
  `error: ...`, on stderr and exit status 1; with `--verbosity` given, the
  error is raised with its traceback."""
  from absl import flags

  from jcl.checkpoint import CheckpointError

  try:
    yield
  except (ValueError, CheckpointError) as error:
    if flags.FLAGS['verbosity'].present:
      raise
    print(f'error: {error}', file=sys.stderr)
    if type(error) is ValueError:  # not one of jcl's own, which name their problem
      print('(pass --verbosity=0 for the traceback)', file=sys.stderr)
    sys.exit(1)


def quiet_unless_asked() -> None:
  """In an absl binary: absl (and Orbax, JAX, which log through it) write
  warnings only, unless `--verbosity` was given on the command line."""
  from absl import flags
  from absl import logging

  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


def document_verbosity() -> None:
  """Says in `--help` that the binary is quiet by default."""
  from absl import flags

  if VERBOSITY_HELP not in flags.FLAGS['verbosity'].help:
    flags.FLAGS['verbosity'].help += VERBOSITY_HELP


def run(
  config,
  workdir: str | None = None,
  *,
  backend: str = 'jax',
  extra_callbacks=(),
  mode: str | None = None,
  mesh: Any = 'auto',
  device: Any = None,
  as_replicas: bool = False,
):
  """Runs `config` (an ml_collections config or a `RunSpec`) in the mode it asks for.

  Args:
    config: the experiment config.
    workdir: where results, logs, checkpoints and plots go (None: nothing
      is written).
    backend: 'jax' or 'torch'.
    extra_callbacks: user `jcl.callbacks.Callback`s, run after the
      evaluation and before the checkpoint.
    mode: overrides `config.replicas.mode` for seeds and grids.
    mesh: the device mesh of the vmap mode ('auto': all devices).
    device: the torch device (torch backend).
    as_replicas: run even a single seed as replicas (a `ReplicasResult`).

  Returns:
    A `FitResult` for one run, a `ReplicasResult` for seeds and grids.

  Raises:
    ValueError: a bad config (the field is named).
    NonFiniteLossError: the run (every replica) diverged; what was measured
      is in results.json.
  """
  spec = RunSpec.from_config(config)
  impl = backend_module(backend)
  impl.prepare(spec)
  if workdir:
    os.makedirs(workdir, exist_ok=True)
  shared: dict[str, Any] = {'device': device}
  if spec.replicated or as_replicas:
    return _run_replicas(spec, workdir, impl, extra_callbacks, mode, mesh, shared)
  t_start = time.perf_counter()
  result, parts = _walk_one(
    spec, None, workdir, impl, extra_callbacks, label='', files=workdir, shared=shared
  )
  result.timings['wall_seconds'] = time.perf_counter() - t_start
  if workdir and impl.is_writer():
    path = os.path.join(workdir, RESULTS_FILE)
    if result.already_finished and os.path.exists(path):
      print(f'{workdir}: this run has already finished; {path} is left as it was')
      return result
    write_results(
      workdir, spec, {**result.to_json(), **_facts(spec, parts.benchmark)}, impl.environment()
    )
    if spec.log.plots:
      draw_plots(workdir)
  return result


def _facts(spec: RunSpec, benchmark) -> dict[str, Any]:
  """What results.json says of the stream and the algorithm."""
  return {
    'benchmark': benchmark.name,
    'scenario': benchmark.scenario,
    'algorithm': spec.algorithm.to_dict(),
  }


def _run_name(spec: RunSpec, workdir: str | None) -> str:
  return spec.log.run_name or (os.path.basename(os.path.normpath(workdir)) if workdir else 'jcl')


def _writer(spec: RunSpec, files: str | None, run_name: str, group: str | None, record):
  return loggers_lib.make_writer(
    [n for n in spec.log.loggers if files or n in ('console', 'wandb')],
    files,
    run_name=run_name,
    group=group,
    project=spec.log.project,
    hparams=record,
  )


def _checkpointing(spec: RunSpec, impl, directory: str | None, record):
  """`(checkpointer, CheckpointCallback)` in `directory`, or `(None, None)`."""
  if not directory or not spec.checkpoint.enabled:
    return None, None
  checkpointer = impl.checkpointer(
    os.path.join(directory, 'checkpoints'), spec.checkpoint.max_to_keep
  )
  return checkpointer, callbacks_lib.CheckpointCallback(
    checkpointer, every_chunks=spec.checkpoint.every_chunks, run_record=record
  )


def _callbacks(spec: RunSpec, writers, label: str, extra_callbacks, checkpoint_cb) -> list:
  """A run's callbacks: evaluation, the writers (one per replica of the walk),
  the progress bar, the user's, the checkpoint."""
  return callbacks_lib.in_run_order(
    [
      callbacks_lib.LoggingCallback(writers, every_chunks=spec.log.every_chunks),
      callbacks_lib.ProgressCallback(enabled=spec.log.progress, desc=label),
      *extra_callbacks,
    ],
    checkpoint=checkpoint_cb,
  )


def _walk_one(
  spec: RunSpec,
  replica: Replica | None,
  workdir: str | None,
  impl,
  extra_callbacks,
  *,
  label: str,
  files: str | None,
  shared: dict[str, Any],
  group: str | None = None,
):
  """The walk of a single run, or of `replica` of a run of seeds / a grid
  (sequential mode): `(FitResult, parts)`; writers and checkpoints in `files`."""
  parts = impl.build(spec, shared=shared, replica=replica)
  own = spec.for_replica(replica) if replica is not None else spec
  record = own.record()
  writer = _writer(
    spec, files, f'{_run_name(spec, workdir)}{"/" + label if label else ""}', group, record
  )
  checkpointer, checkpoint_cb = _checkpointing(spec, impl, files, record)
  callbacks = _callbacks(spec, [writer], label, extra_callbacks, checkpoint_cb)
  stream = loop.Stream.single(parts.benchmark, parts.train_config, spec.algorithm, label)
  executor = impl.executor(parts, shared=shared)
  try:
    with impl.seeded(parts):
      ctx = loop.walk(
        executor, stream, callbacks, parts.train_state, impl.init_algo_state(parts, shared=shared)
      )
  except NonFiniteLossError as err:
    if workdir and not label and impl.is_writer():
      write_results(
        workdir,
        spec,
        {
          'error': str(err),
          'accuracy_matrix': nan_to_none(err.context.accuracy_matrices[0]),
          'history': err.context.histories[0],
        },
        impl.environment(),
      )
    raise
  finally:
    writer.close()
    if checkpointer is not None:
      checkpointer.close()
  return FitResult.from_context(ctx), parts


def _replica_files(workdir: str | None, replica: Replica) -> str | None:
  return os.path.join(workdir, 'replicas', replica.dirname()) if workdir else None


def _replica_share(key: str, value, replicas: int):
  """One replica's share of a timing of a vmapped walk: times and samples
  divided by the replicas; a moment (`first_chunk_seconds`, None when this
  process ran no chunk, e.g. resumed after the last one) and rates as they are."""
  if value is None or key == 'first_chunk_seconds':
    return value
  return value / replicas if key.endswith('seconds') or key == 'samples_seen' else value


def _run_replicas(
  spec: RunSpec, workdir: str | None, impl, extra_callbacks, mode, mesh, shared: dict[str, Any]
):
  t_start = time.perf_counter()
  mode = impl.replica_mode(mode or spec.replicas.mode)
  replicas = spec.replica_list()
  run_name = _run_name(spec, workdir)
  if mode == 'vmap':
    outcome = _run_vmapped(spec, workdir, impl, extra_callbacks, replicas, mesh, run_name, shared)
  else:
    outcome = _run_sequential(spec, workdir, impl, extra_callbacks, replicas, run_name, shared)
  results, states, errors, finished, benchmark, devices = outcome
  acc = np.stack([r.accuracy_matrix for r in results])
  initial = np.stack([r.initial_accuracy for r in results])
  task_il = (
    None
    if results[0].task_il_accuracy_matrix is None
    else np.stack([r.task_il_accuracy_matrix for r in results])
  )
  summaries = [r.summary for r in results]
  seconds = {
    k: sum(r.timings[k] for r in results) if mode == 'sequential' else results[0].timings[k]
    for k in ('train_seconds', 'eval_seconds', 'compile_seconds', 'samples_seen')
  }
  seconds['train_samples_per_second'] = seconds['samples_seen'] / max(
    seconds['train_seconds'], 1e-9
  )
  seconds['wall_seconds'] = time.perf_counter() - t_start
  replica_timings = (
    [r.timings for r in results]
    if mode == 'sequential'
    else [
      {k: _replica_share(k, v, len(results)) for k, v in results[0].timings.items()}
      for _ in results
    ]
  )
  result = ReplicasResult(
    replicas=replicas,
    accuracy_matrices=acc,
    initial_accuracy=initial,
    task_il_accuracy_matrices=task_il,
    summaries=summaries,
    histories=[r.history for r in results],
    errors=errors,
    table=aggregate(replicas, summaries, acc, spec.replicas.rank_by),
    train_state=states[0],
    algo_state=states[1],
    mode=mode,
    timings=seconds,
    devices=devices,
    replica_timings=replica_timings,
    already_finished=finished,
  )
  if workdir and impl.is_writer():
    path = os.path.join(workdir, RESULTS_FILE)
    if finished and os.path.exists(path):
      print(f'{workdir}: this run has already finished; {path} is left as it was')
    else:
      write_results(
        workdir, spec, {**result.to_json(), **_facts(spec, benchmark)}, impl.environment()
      )
      if spec.log.plots:
        draw_plots(workdir)
  if all(errors):
    raise NonFiniteLossError('every replica diverged:\n' + '\n'.join(errors))
  return result


def _run_sequential(spec, workdir, impl, extra_callbacks, replicas, run_name, shared):
  """One walk per replica, one after the other (a diverged one is recorded)."""
  results, states, errors, finished = [], [], [], True
  benchmark = None
  for replica in replicas:
    label = replica.label()
    try:
      result, parts = _walk_one(
        spec,
        replica,
        workdir,
        impl,
        extra_callbacks,
        label=label,
        files=_replica_files(workdir, replica),
        shared=shared,
        group=run_name,
      )
      errors.append(None)
      states.append((result.train_state, result.algo_state))
      finished = finished and result.already_finished
      benchmark = parts.benchmark
    except NonFiniteLossError as err:
      ctx = err.context
      print(f'{label}: {err}')
      result = FitResult.from_context(ctx)
      benchmark = ctx.benchmark
      errors.append(str(err))
      states.append((ctx.train_state, ctx.algo_state))
      finished = False
    results.append(result)
  train_states, algo_states = (
    impl.stack_states([s[0] for s in states]),
    impl.stack_states([s[1] for s in states]),
  )
  return (results, (train_states, algo_states), errors, finished, benchmark, impl.devices(None))


def _run_vmapped(spec, workdir, impl, extra_callbacks, replicas, mesh, run_name, shared):
  """Every replica in one walk of the backend's vmapped executor."""
  executor, stream, train_state, algo_state = impl.vmapped(spec, replicas, mesh, shared)
  writers, checkpointer = [], None
  record = spec.record(mode='vmap')
  try:
    for replica in replicas:
      replica_spec = spec.for_replica(replica)
      writers.append(
        _writer(
          spec,
          _replica_files(workdir, replica),
          f'{run_name}/{replica.label()}',
          run_name,
          replica_spec.record(),
        )
      )
    checkpointer, checkpoint_cb = _checkpointing(spec, impl, workdir, record)
    callbacks = _callbacks(spec, writers, '', extra_callbacks, checkpoint_cb)
    try:
      ctx = loop.walk(executor, stream, callbacks, train_state, algo_state)
    except NonFiniteLossError as err:
      ctx = err.context
  finally:
    for writer in writers:
      writer.close()
    if checkpointer is not None:
      checkpointer.close()
  train_state, algo_state = executor.replica_states((ctx.train_state, ctx.algo_state))
  results = [
    FitResult.from_context(ctx, r, train_state=None, algo_state=None) for r in range(len(replicas))
  ]
  return (
    results,
    (train_state, algo_state),
    list(ctx.errors),
    ctx.finished,
    stream.benchmark,
    impl.devices(getattr(executor, 'mesh', None)),
  )
