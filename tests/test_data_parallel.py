"""One run's batch split over 4 forced CPU devices equals the one-device run (jcl.parallel).

`--xla_force_host_platform_device_count=4` is read when JAX starts, so the
4-device runs happen in one subprocess (`SCRIPT`, run once for the module),
which reports JSON; the tests check the report. The argument checks run here.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jcl import parallel
from jcl import run_spec
from jcl.run_spec import RunSpec, TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 16  # 4 samples a device

# The split batch sums its gradient in another order (4 partial sums
# all-reduced, not one sum), so the numbers are equal up to float rounding,
# not bit for bit; measured: parameters and ER's buffer within 6e-8, equal
# accuracy matrices.
PARAM_ATOL = 1e-5
ACCURACY_ATOL = 1e-3  # one test sample of a task's 1000


def dp_config(algo: str = 'naive', data_parallel: int = 1, **train):
  """`algo` on 2-task Permuted MNIST (the bundled sample, 200 samples a task),
  MLP 32, batch 16 in chunks of 5 steps, on `data_parallel` devices."""
  from configs import quickstart

  config = quickstart.get_config()
  config.benchmark.num_tasks = 2
  config.benchmark.samples_per_task = 200
  config.model.widths = (32,)
  config.algo = (
    dict(name='er', memory_size=20, replay_batch_size=8) if algo == 'er' else {'name': algo}
  )
  config.train.epochs = 1
  config.train.batch_size = BATCH
  config.train.chunk_steps = 5
  config.train.data_parallel = data_parallel
  for key, value in train.items():
    config.train[key] = value
  config.log.progress = False
  config.log.loggers = ()
  config.log.plots = False
  config.checkpoint.enabled = False
  return config


# The 4-device process: argv = a folder for its checkpoints and states.
SCRIPT = r"""
import json, sys
import jax
import numpy as np
from jcl import callbacks, experiment, train
from tests.test_data_parallel import dp_config

assert jax.device_count() == 4, jax.devices()
report, hlo = {}, {}
folder = sys.argv[1]
workdir = folder + '/run'
from tests.test_data_parallel import leaves


# What the first data-parallel chunk is given and how it compiles.
original = train.JaxExecutor.run_chunk
chunks_run = [0]


def run_chunk(self, states, chunks):
  chunks_run[0] += 1
  if self.mesh is not None and not hlo:
    (chunk,) = chunks
    states, data = self._replicated(states), self._placed[1]
    idx, mask = self._rows(chunk.idx, chunk.mask)
    compiled = self.program.run_chunk.lower(
      *states, data, idx, mask, self.hp, skip_padding=chunk.padding_steps, mesh=self.mesh
    ).compile()
    params_out = jax.tree.leaves(compiled.output_shardings[0].params)
    hlo.update(
      mesh=dict(self.mesh.shape),
      data=[data.x.sharding.is_fully_replicated, len(data.x.sharding.device_set)],
      rows=[
        idx.sharding.spec == jax.sharding.PartitionSpec(None, 'data'),
        list(idx.addressable_shards[0].data.shape),
        list(idx.shape),
      ],
      params_out=[s.is_fully_replicated for s in params_out],
      text=compiled.as_text(),
    )
  return original(self, states, chunks)


train.JaxExecutor.run_chunk = run_chunk

# A stateless method and one with a buffer (the 1-device runs: the test's process).
results = {}
for algo in ('naive', 'er'):
  chunks_run[0] = 0
  result = results[algo] = experiment.run(dp_config(algo, 4))
  report[algo] = {
    'accuracy': result.accuracy_matrix.tolist(),
    'initial': result.initial_accuracy.tolist(),
  }
  np.savez(f'{folder}/{algo}.npz', *leaves(result))
full_chunks = chunks_run[0]
report['hlo'] = hlo


# Checkpointed on 4 devices, stopped in task 1, resumed on 4.
class Crash(Exception):
  pass


class CrashInTask1(callbacks.Callback):
  def on_chunk_end(self, ctx):
    if ctx.task == 1 and ctx.chunk == 1:
      raise Crash()


config = dp_config('er', 4)
config.checkpoint.enabled = True
config.checkpoint.every_chunks = 1
try:
  experiment.run(config, workdir, extra_callbacks=[CrashInTask1()])
  raise AssertionError('no crash')
except Crash:
  pass
chunks_run[0] = 0
resumed = experiment.run(config, workdir)
full = results['er']
report['resume'] = {
  'chunks_run': [chunks_run[0], full_chunks],
  'samples_seen': [resumed.timings['samples_seen'], full.timings['samples_seen']],
  'equal': bool(np.array_equal(resumed.accuracy_matrix, full.accuracy_matrix)) and all(
    np.array_equal(a, b) for a, b in zip(leaves(resumed), leaves(full))),
}

# Seeds vmapped: each replica's batch over 2 devices, the 2 replicas over the other 2.
config = dp_config('naive', 2)
config.num_seeds = 2
spec = experiment.RunSpec.from_config(config)
executor = experiment.vmapped(spec, spec.replica_list(), 'auto', {})[0]
report['vmapped_mesh'] = dict(executor.mesh.shape)
config.replicas.batch_shards = 4
try:
  experiment.vmapped(experiment.RunSpec.from_config(config), spec.replica_list(), 'auto', {})
except ValueError as error:
  report['vmapped_conflict'] = str(error)
print('REPORT ' + json.dumps(report))
"""


def leaves(result):
  """The parameters and the algorithm's state of a run, as float64 arrays."""
  tree = (result.train_state.params, result.algo_state)
  return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope='module')
def report(tmp_path_factory):
  """The 4-device process's report, and meanwhile the 1-device runs here
  (`report['one'][algo]`: `FitResult`, `report['four_leaves'][algo]`)."""
  from jcl import experiment

  folder = tmp_path_factory.mktemp('data_parallel')
  env = dict(
    os.environ,
    XLA_FLAGS='--xla_force_host_platform_device_count=4',
    JAX_PLATFORMS='cpu',
    PYTHONPATH=REPO,
  )
  with open(folder / 'out', 'w') as stdout, open(folder / 'err', 'w') as stderr:
    worker = subprocess.Popen(
      [sys.executable, '-c', SCRIPT, str(folder)], cwd=REPO, env=env, stdout=stdout, stderr=stderr
    )
  # Meanwhile (compilation is mostly one core), the 1-device runs here.
  one = {algo: experiment.run(dp_config(algo, 1)) for algo in ('naive', 'er')}
  assert worker.wait(timeout=600) == 0, (folder / 'err').read_text()[-4000:]
  report = json.loads((folder / 'out').read_text().split('REPORT ', 1)[1])
  report['one'] = one
  report['four_leaves'] = {}
  for algo in one:
    with np.load(folder / f'{algo}.npz') as arrays:
      report['four_leaves'][algo] = [arrays[f'arr_{i}'] for i in range(len(arrays.files))]
  return report


@pytest.mark.parametrize('algo', ['naive', 'er'])
def test_four_devices_equal_one_device(report, algo):
  four, one = report[algo], report['one'][algo]
  trained, untrained = np.diag(four['accuracy']), np.array(four['initial'])
  assert np.all(trained > untrained + 0.3)  # it learned each task
  np.testing.assert_allclose(four['accuracy'], one.accuracy_matrix, atol=ACCURACY_ATOL, rtol=0)
  # Parameters and the algorithm's state (ER: the buffer, its counters).
  four_leaves, one_leaves = report['four_leaves'][algo], leaves(one)
  assert len(four_leaves) == len(one_leaves) >= (4 if algo == 'naive' else 8)
  for a, b in zip(four_leaves, one_leaves):
    np.testing.assert_allclose(a, b, atol=PARAM_ATOL, rtol=0)


def test_the_chunk_splits_the_batch_over_the_devices(report):
  hlo = report['hlo']
  assert hlo['mesh'] == {'data': 4}
  assert hlo['data'] == [True, 4]  # the staged task split: a copy on every device
  # The chunk's row numbers [K, B]: a quarter of each batch on each device.
  split, shard, whole = hlo['rows']
  assert split and shard == [whole[0], BATCH // 4]
  assert all(hlo['params_out'])  # the parameters come back replicated
  text = hlo['text']
  # The partitioned program: each device's first layer sees BATCH / 4 samples,
  # never the whole batch, and the gradients are all-reduced.
  assert f'f32[{BATCH // 4},32]' in text and f'f32[{BATCH},32]' not in text
  assert 'all-reduce' in text


def test_checkpointed_on_four_devices_resumes_on_four(report):
  resume = report['resume']
  resumed_chunks, full_chunks = resume['chunks_run']
  assert 0 < resumed_chunks < full_chunks / 2  # it went on in task 1, from the checkpoint
  samples, full_samples = resume['samples_seen']
  assert samples == full_samples
  assert resume['equal']  # bit for bit: the same program on the same devices


def test_vmapped_seeds_split_their_batch_on_a_2d_mesh(report):
  assert report['vmapped_mesh'] == {'replica': 2, 'batch': 2}
  assert 'both split the vmapped replicas' in report['vmapped_conflict']


def test_bad_data_parallel_is_named():
  for values, message in [
    (dict(data_parallel=4, batch_size=10), 'train.batch_size=10 does not divide over 4 devices'),
    (dict(data_parallel=3, batch_size=12), 'train.eval_batch_size=1000 does not divide'),
    (dict(data_parallel=-2), "invalid 'data_parallel': must be an integer >= -1"),
    (dict(data_parallel='all'), "invalid 'data_parallel': must be an integer >= -1"),
  ]:
    with pytest.raises(ValueError, match=message):
      TrainConfig(**values)
  with pytest.raises(ValueError, match='asks for 8 devices, 4 present'):
    parallel.num_devices(8, 4)
  with pytest.raises(ValueError, match='train.batch_size=10 does not divide over 4'):
    parallel.num_devices(-1, 4, {'train.batch_size': 10})
  with pytest.raises(ValueError, match='a job of 2 processes splits the batch over all 8'):
    parallel.num_devices(4, 8, processes=2)
  assert parallel.num_devices(0, 4) == parallel.num_devices(1, 4) == 1
  # More devices than this process has, before anything is trained.
  n = jax.device_count() + 1
  config = TrainConfig(data_parallel=n, batch_size=10 * n, eval_batch_size=100 * n)
  with pytest.raises(ValueError, match=f'asks for {n} devices, {n - 1} present'):
    parallel.data_mesh(config)


def test_the_record_leaves_out_the_device_count():
  records = [RunSpec.from_config(dp_config(data_parallel=n)).record() for n in (1, 4, -1)]
  assert records[0] == records[1] == records[2]
  assert 'train.data_parallel' not in records[0] and 'train.batch_size' in records[0]
  assert run_spec.record_differences(records[1], records[0]) == []


def test_the_torch_backend_refuses_data_parallel():
  pytest.importorskip('torch')
  from jcl import runs

  with pytest.raises(ValueError, match='the torch backend trains on one device'):
    runs.run(dp_config(data_parallel=2), backend='torch')


def test_multi_host_arguments(monkeypatch):
  assert parallel.check_distributed() is None
  args = parallel.check_distributed('10.1.2.3:8476', 4, 3)
  assert (args.coordinator_address, args.num_processes, args.process_id) == ('10.1.2.3:8476', 4, 3)
  for given, message in [
    (('10.1.2.3:8476', 4, None), 'missing: --process_id'),
    ((None, None, 0), 'missing: --coordinator_address, --num_processes'),
    (('10.1.2.3', 4, 0), 'must be HOST:PORT'),
    (('10.1.2.3:99999', 4, 0), 'must be HOST:PORT'),
    (('10.1.2.3:8476', 0, 0), '--num_processes must be an integer >= 1'),
    (('10.1.2.3:8476', 4, 4), r'--process_id must be in \[0, 4\)'),
  ]:
    with pytest.raises(ValueError, match=message):
      parallel.check_distributed(*given)
  # The flags reach `jax.distributed.initialize` (a real job needs several hosts).
  calls = []
  monkeypatch.setattr(jax.distributed, 'is_initialized', lambda: False)
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kwargs: calls.append(kwargs))
  assert parallel.initialize_distributed('10.1.2.3:8476', 4, 3)
  assert calls == [dict(coordinator_address='10.1.2.3:8476', num_processes=4, process_id=3)]
  assert not parallel.initialize_distributed()
