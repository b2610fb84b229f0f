"""Model-update sessions: learn new tasks later, from the state saved by earlier ones.

A user trains on tasks 0..k, goes away, and comes back with the data of a
new task (what Renate offers PyTorch users). The state directory holds
everything needed to go on exactly as if the stream had never stopped:

  STATE_DIR/session.json    the config, the data of every task learned so
                            far (for re-evaluation), the accuracy matrix
  STATE_DIR/checkpoints/    Orbax checkpoints of (train_state, algo_state):
                            parameters, optimizer state, replay buffers,
                            Fisher, learned learning rates, RNG keys

  jcl.session.update('/models/digits', ['npz:/data/task0.npz'], config)   # first session
  jcl.session.update('/models/digits', ['npz:/data/task3.npz'])           # any later one

Tasks 0..2 in one session and task 3 in a second end with the same
parameters and accuracy matrix as tasks 0..3 in one session: each task's
data order, `end_task` sample and evaluation depend only on (seed, task),
and the algorithm state is sized for `config.session.max_tasks` tasks from
the start. A session killed midway is resumed by running it again with the
same data (checkpoints every `config.checkpoint.every_chunks` chunks).

Task data (`--data` of `experiments/update.py`):
  npz:PATH[?classes=0,1]             an NPZ with x_train, y_train, x_test, y_test
  tfds:NAME[?data_dir=D&classes=...]  a prepared TFDS dataset (`tfds.data_source`)
`classes` keeps only those labels (e.g. one Split-MNIST task from all of MNIST).

The `session` section of the config: `num_classes` (output units),
`max_tasks` (capacity of per-task memories and heads), `scenario` ('domain',
'class', or 'task' with one head per task), `normalize` (standardize with the
dataset's constants; otherwise pixels / 255).
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence
from urllib import parse

import ml_collections
import numpy as np

from jcl import algorithms
from jcl import callbacks as callbacks_lib
from jcl import evaluation
from jcl import experiment
from jcl import loop
from jcl import models
from jcl import run_spec
from jcl import runs
from jcl import train as train_lib
from jcl.data import sources
from jcl.data import transforms
from jcl.data.benchmarks import Benchmark, Task, TaskSplit
from jcl.data.views import InputView

SESSION_FILE = 'session.json'
SCENARIOS = ('domain', 'class', 'task')


class SessionError(ValueError):
  """A state directory or task data that a session cannot use."""


def parse_data(spec: str) -> tuple[str, str, dict[str, str]]:
  """`'npz:/a/b.npz?classes=0,1'` -> `('npz', '/a/b.npz', {'classes': '0,1'})`."""
  kind, sep, rest = spec.partition(':')
  if not sep or kind not in ('npz', 'tfds'):
    if spec.endswith('.npz'):
      kind, rest = 'npz', spec
    else:
      raise SessionError(
        f'task data {spec!r}: expected npz:PATH or tfds:NAME (optionally followed by ?classes=0,1)'
      )
  target, _, query = rest.partition('?')
  options = dict(parse.parse_qsl(query, strict_parsing=bool(query)))
  unknown = sorted(set(options) - {'classes', 'data_dir'})
  if unknown:
    raise SessionError(f'task data {spec!r}: unknown option(s) {unknown}; known: classes, data_dir')
  if kind == 'npz':
    target = os.path.abspath(target)
  return kind, target, options


def load_task(spec: str, task_id: int, *, normalize: bool = True) -> tuple[Task, int]:
  """The task described by `spec`, as task `task_id`; also the dataset's class count.

  Raises:
    SessionError / DataError: the data cannot be read (the message names it).
  """
  kind, target, options = parse_data(spec)
  if kind == 'npz':
    dataset = sources.load_npz(target)
  else:
    dataset = sources.load_tfds(target, options.get('data_dir'))
  x_train, y_train, x_test, y_test = (
    dataset.x_train,
    dataset.y_train,
    dataset.x_test,
    dataset.y_test,
  )
  if 'classes' in options:
    keep = [int(c) for c in options['classes'].split(',')]
    train_idx, test_idx = np.isin(y_train, keep), np.isin(y_test, keep)
    if not train_idx.any() or not test_idx.any():
      raise SessionError(f'task data {spec!r}: no examples of classes {keep}')
    x_train, y_train, x_test, y_test = (
      x_train[train_idx],
      y_train[train_idx],
      x_test[test_idx],
      y_test[test_idx],
    )
  mean = std = None
  if normalize:
    mean, std = transforms.normalization_constants(
      sources.canonical_name(dataset.name), dataset.x_train, dataset.pixel_max
    )
  view = InputView.make(dataset.pixel_max, mean, std, dataset.input_shape[-1])
  split = lambda x, y: TaskSplit(
    x, np.arange(len(y)), np.asarray(y, np.int32), np.full(len(y), task_id, np.int32), view
  )
  classes = tuple(int(c) for c in np.unique(y_train))
  return (
    Task(task_id, classes, split(x_train, y_train), None, split(x_test, y_test)),
    dataset.num_classes,
  )


def session_benchmark(data: Sequence[str], session_config) -> Benchmark:
  """The stream of every task in `data`, in order, with the session's output space."""
  scenario = session_config.get('scenario', 'domain')
  if scenario not in SCENARIOS:
    raise SessionError(f"session: invalid 'scenario': must be one of {SCENARIOS}, got {scenario!r}")
  num_classes, max_tasks = int(session_config['num_classes']), int(session_config['max_tasks'])
  if len(data) > max_tasks:
    raise SessionError(
      f'session: {len(data)} tasks exceed max_tasks={max_tasks}; the state '
      'was sized for at most that many'
    )
  tasks = []
  for task_id, spec in enumerate(data):
    task, dataset_classes = load_task(
      spec, task_id, normalize=session_config.get('normalize', True)
    )
    if max(task.classes) >= num_classes:
      raise SessionError(
        f'task data {spec!r}: labels up to {max(task.classes)} do not fit the '
        f"model's {num_classes} output units (session.num_classes)"
      )
    tasks.append(task)
  shapes = {t.train.images.shape[1:] for t in tasks}
  if len(shapes) > 1:
    raise SessionError(f'task inputs have different shapes {sorted(shapes)}: {list(data)}')
  return Benchmark(
    name='session',
    scenario=scenario,
    tasks=tuple(tasks),
    num_classes=num_classes,
    num_heads=max_tasks if scenario == 'task' else 1,
    input_shape=tuple(shapes.pop()),
    task_classes=tuple(t.classes for t in tasks),
    info={'data': list(data)},
  )


def _read_session(state_dir: str) -> dict[str, Any] | None:
  path = os.path.join(state_dir, SESSION_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as err:
    raise SessionError(f'{path}: unreadable session file ({err})') from err


def _write_session(state_dir: str, document: dict[str, Any]) -> None:
  path = os.path.join(state_dir, SESSION_FILE)
  with open(path + '.tmp', 'w') as f:
    json.dump(document, f, indent=1)
  os.replace(path + '.tmp', path)


class _EvaluateNewTasks(callbacks_lib.Callback):
  """After a restore, what an uninterrupted stream would have measured on the
  tasks added since: the untrained model's accuracy (recomputed from the
  seed) and that of the restored model, i.e. just before they are trained
  (so FWT is defined for them too)."""

  def __init__(self, initial: np.ndarray):
    self.initial = initial

  def on_fit_begin(self, ctx):
    ctx.initial_accuracy = np.where(
      np.isnan(ctx.initial_accuracy), self.initial, ctx.initial_accuracy
    )
    position = ctx.resume_position or {}
    if position.get('phase') == 'task_done':
      last = position['task']
      column, given_task = loop.timed_evaluation(
        ctx, loop.prediction_class_mask(ctx.benchmark, last)
      )
      column = column[0]
      new = np.isnan(ctx.accuracy_matrix[:, last])
      ctx.accuracy_matrix[new, last] = column[new]
      if ctx.task_il_matrix is not None:
        ctx.task_il_matrix[new, last] = given_task[0][new]


class _SessionCheckpoint(callbacks_lib.CheckpointCallback):
  """Checkpoints whose matrices grow with the stream: a record written when
  the session knew k tasks is padded (NaN) to the tasks known now, and its
  stream is not finished any more when new tasks came."""

  def apply_record(self, ctx, record):
    n = ctx.num_tasks
    pad = lambda m: (
      None
      if m is None
      else [[*(row + [None] * (n - len(row)))] for row in m] + [[None] * n] * (n - len(m))
    )
    record = {
      **record,
      'finished': record.get('finished') and len(record['accuracy_matrices'][0]) == n,
      'accuracy_matrices': [pad(m) for m in record['accuracy_matrices']],
      'task_il_accuracy_matrices': (
        None
        if record.get('task_il_accuracy_matrices') is None
        else [pad(m) for m in record['task_il_accuracy_matrices']]
      ),
      'initial_accuracies': [
        list(a) + [float('nan')] * (n - len(a)) for a in record['initial_accuracies']
      ],
    }
    ctx.apply_record(record)


def update(
  state_dir: str,
  data: Sequence[str],
  config=None,
  *,
  callbacks: Sequence[callbacks_lib.Callback] = (),
) -> train_lib.FitResult:
  """Learns the tasks in `data` after those already in `state_dir`, and saves the new state.

  Args:
    state_dir: the session's directory (created by the first session).
    data: task data specs, one per new task, in order (see module docstring).
    config: the experiment config with a `session` section; needed by the
      first session only (later ones use the stored config; passing a
      different one is an error).
    callbacks: extra `jcl.callbacks.Callback`s.

  Returns:
    The `FitResult` over every task learned so far (matrix `[T, T]`; rows of
    tasks added later are NaN in the columns of earlier sessions).
  """
  if not data:
    raise SessionError('an update needs the data of at least one new task')
  state_dir = os.path.abspath(state_dir)
  document = _read_session(state_dir)
  if document is None:
    if config is None:
      raise SessionError(f'{state_dir} holds no session; the first session needs a config')
    if 'session' not in config:
      raise SessionError("the config has no 'session' section (num_classes, max_tasks, scenario)")
    document = {'config': runs.config_json(config), 'tasks': [], 'pending': []}
  else:
    stored = ml_collections.ConfigDict(document['config'])
    if config is not None and runs.config_json(config) != document['config']:
      raise SessionError(
        f'{state_dir} was created with a different config; leave --config out '
        'to continue its stream'
      )
    config = stored
  pending = document.get('pending') or []
  if pending and list(pending) != [str(d) for d in data]:
    raise SessionError(
      f'an interrupted update of {pending} is pending in {state_dir}; run it '
      'again with the same data to finish it first'
    )
  data = [str(d) for d in data]
  all_data = document['tasks'] + data
  benchmark = session_benchmark(all_data, config.session)  # checks every file before training
  os.makedirs(state_dir, exist_ok=True)
  _write_session(state_dir, {**document, 'pending': data})

  spec = run_spec.RunSpec.from_config(config)
  if benchmark.scenario not in spec.algorithm.scenarios:
    raise SessionError(
      f'{spec.algorithm.name} does not apply to {benchmark.scenario}-incremental learning'
    )
  context = algorithms.Context.of(benchmark, num_tasks=int(config.session.max_tasks))
  model_config, optimizer, train_config = spec.regime()
  model_kwargs = dict(model_config)
  model = algorithms.adapt_model(
    spec.algorithm,
    models.make_model(
      model_kwargs.pop('name'),
      num_classes=benchmark.num_classes,
      num_heads=benchmark.num_heads,
      **model_kwargs,
    ),
    context,
  )
  state, algo_rng = experiment.initial_state(spec.seed, model, optimizer, train_config, benchmark)
  initial, _ = evaluation.evaluate_benchmark(state, benchmark, 'test', train_config.eval_batch_size)

  from jcl import checkpoint  # Orbax

  checkpointer = checkpoint.Checkpointer(
    os.path.join(state_dir, 'checkpoints'), max_to_keep=spec.checkpoint.max_to_keep
  )
  checkpoint_cb = _SessionCheckpoint(
    checkpointer, every_chunks=spec.checkpoint.every_chunks, run_record=spec.record()
  )
  try:
    result = train_lib.fit(
      algorithms.build(spec.algorithm, context),
      state,
      benchmark,
      train_config,
      rng=algo_rng,
      checkpoint=checkpoint_cb,
      callbacks=[_EvaluateNewTasks(initial), *callbacks],
    )
  finally:
    checkpointer.close()
  _write_session(
    state_dir,
    {
      'config': document['config'],
      'tasks': all_data,
      'pending': [],
      'accuracy_matrix': result.to_json()['accuracy_matrix'],
      'summary': result.summary,
    },
  )
  experiment.write_results(
    state_dir,
    config,
    {
      **result.to_json(),
      'benchmark': 'session',
      'scenario': benchmark.scenario,
      'algorithm': spec.algorithm.to_dict(),
      'tasks': all_data,
    },
  )
  return result
