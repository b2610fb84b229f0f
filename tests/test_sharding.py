"""Replicas sharded over 4 forced CPU devices equal the unsharded run (jcl.replicas).

A multi-host job in miniature: two processes of 2 forced CPU devices each
(`--xla_force_host_platform_device_count`, read when JAX starts, hence
subprocesses), joined by `jax.distributed.initialize`, shard the replica axis
over 2 devices and the batch axis over 2; the result must equal the
unsharded vmapped run of this process.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One process of the job: argv = coordinator address, process id, workdir.
SCRIPT = r"""
import json, sys
import jax
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2,
                           process_id=int(sys.argv[2]))
import numpy as np
from jcl import replicas
from tests.test_sharding import sharding_config

assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 4, 2)

config = sharding_config()
shardings = {}
original_run_chunk = replicas.VmappedExecutor.run_chunk

def run_chunk(self, states, chunks):  # records where the state and the chunk's rows live
  leaf = jax.tree.leaves(states[0].params)[0]
  shardings['state'] = [str(getattr(leaf.sharding, 'spec', None)), len(leaf.sharding.device_set),
                        int(self.padded)]
  idx = self._rows(chunks)[0]
  if idx.ndim == 3:  # stacked rows [R, K, B]
    shardings['data'] = str(getattr(idx.sharding, 'spec', None))
  return original_run_chunk(self, states, chunks)

def facts(result):
  params = replicas.fetch(result.train_state.params)
  return {'accuracy': result.accuracy_matrices.tolist(), 'shardings': dict(shardings),
          'params': [np.asarray(leaf).tolist() for leaf in jax.tree.leaves(params)][:2],
          'replicas': [r.label() for r in result.replicas], 'devices': result.devices}

replicas.VmappedExecutor.run_chunk = run_chunk
# Replica axis over 2 devices, batch axis over 2.
result = replicas.run(config, sys.argv[3] if jax.process_index() == 0 else None, mode='vmap',
                      mesh=replicas.make_mesh(batch_shards=2))
print('REPORT ' + json.dumps(facts(result)))
"""


def sharding_config():
  """3 seeds x 3 learning rates = 9 replicas of naive fine-tuning (the bundled
  MNIST sample, 2 tasks of 200 samples, MLP 32, batch 10)."""
  from tests.test_replicas import small_config

  config = small_config(num_seeds=3, grid='optimizer.learning_rate=0.05,0.02,0.01')
  config.algo = dict(name='naive')
  return config


def report_of(stdout: str) -> dict:
  return json.loads(stdout.split('REPORT ', 1)[1])


def environment(devices: int) -> dict:
  return dict(
    os.environ,
    XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
    JAX_PLATFORMS='cpu',
    PYTHONPATH=REPO,
  )


def test_sharded_over_four_cpu_devices_of_two_processes_equals_unsharded(tmp_path):
  from jcl import replicas

  with socket.socket() as s:
    s.bind(('localhost', 0))
    coordinator = f'localhost:{s.getsockname()[1]}'
  logs = [(tmp_path / f'process{i}.out', tmp_path / f'process{i}.err') for i in range(2)]
  workers = []
  for i, (out_path, err_path) in enumerate(logs):  # files, not pipes: neither may block
    with open(out_path, 'w') as stdout, open(err_path, 'w') as stderr:
      workers.append(
        subprocess.Popen(
          [sys.executable, '-c', SCRIPT, coordinator, str(i), str(tmp_path / 'sharded')],
          cwd=REPO,
          env=environment(2),
          stdout=stdout,
          stderr=stderr,
        )
      )
  # Meanwhile, the unsharded run here (one device).
  unsharded = replicas.run(sharding_config(), mode='vmap', mesh=None)
  assert len(unsharded.devices) == 1
  accuracy = unsharded.accuracy_matrices
  assert np.ptp(accuracy[:, 0, 0]) > 0  # the replicas are different runs
  for worker, (out_path, err_path) in zip(workers, logs):
    assert worker.wait(timeout=600) == 0, err_path.read_text()[-3000:]
    sharded = report_of(out_path.read_text())
    # The 9 replicas (padded to 10) over 2 devices, each batch of 10 over 2
    # (the rows of each chunk, from which the batches are gathered on the devices).
    assert sharded['shardings'] == {
      'state': ["P('replica',)", 4, 10],
      'data': "P('replica', None, 'batch')",
    }
    assert len(sharded['devices']) == 4
    assert sharded['replicas'] == [r.label() for r in unsharded.replicas]
    # Same numbers up to float rounding (measured: equal accuracy matrices,
    # parameters within 1e-7; the split batch sums its gradient in another order).
    np.testing.assert_allclose(sharded['accuracy'], accuracy, atol=1e-3, rtol=0)
    for a, b in zip(sharded['params'], jax.tree.leaves(unsharded.train_state.params)):
      np.testing.assert_allclose(np.array(a), np.asarray(b), atol=1e-5, rtol=0)
  written = json.loads((tmp_path / 'sharded' / 'results.json').read_text())  # by process 0
  np.testing.assert_allclose(
    [r['accuracy_matrix'] for r in written['replicas']], accuracy, atol=1e-3
  )
