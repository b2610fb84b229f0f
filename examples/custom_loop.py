"""jcl's step functions in a loop of your own: EWC on 3-task Permuted MNIST.

  python examples/custom_loop.py

Everything `jcl.train.fit` and the `jcl train` binary do for you, by hand: a
benchmark (the real-MNIST sample bundled with jcl, offline), a model, a train
state, an algorithm; per task `begin_task`, epochs of fixed-shape chunks
`[K, B, ...]` run by one jit-compiled `lax.scan` of `algo.step`
(`jcl.train.run_chunk_fn`: the padding batches at the end of an epoch leave
the states untouched), `end_task` on the task's data, and the accuracy on
every task after each. About 20 s on 2 CPU cores.
"""

import jax
import numpy as np

from jcl import algorithms, data, evaluation, metrics, models, specs, train, train_state

BATCH, CHUNK_STEPS, EPOCHS = 32, 16, 1


def main(num_tasks: int = 3, samples_per_task: int = 2000, seed: int = 0) -> np.ndarray:
  """Trains and returns the accuracy matrix `R[i, j]` (task i after task j)."""
  bench = data.make_benchmark(
    'permuted_mnist', num_tasks=num_tasks, samples_per_task=samples_per_task, seed=seed
  )
  model = models.MLP(widths=(100, 100), num_classes=bench.num_classes)
  init_rng, algo_rng = jax.random.split(jax.random.PRNGKey(seed))
  state = train_state.create_train_state(
    model, specs.OptimizerSpec(learning_rate=0.05), init_rng, bench.input_shape, bench.num_classes
  )
  algo = algorithms.ewc.make(specs.EWCSpec(ewc_lambda=10.0))
  algo_state = algo.init(state, algo_rng)

  # `algo.step(state, batch, algo_state)` is pure: scan it over a chunk of K
  # batches in one compiled program (or jit it alone, or vmap it over seeds).
  run_chunk = jax.jit(train.run_chunk_fn(algo.step))
  end_task = jax.jit(algo.end_task)
  rng = np.random.default_rng(seed)
  accuracy = np.zeros((bench.num_tasks, bench.num_tasks))
  for task in bench.tasks:
    state, algo_state = algo.begin_task(state, algo_state, task.id)
    for _ in range(EPOCHS):
      # jcl.types.Batch chunks: x [K, B, 28, 28, 1], y / t / mask [K, B] (mask 0: padding).
      for chunk in data.epoch_chunks(
        task.train, batch_size=BATCH, chunk_steps=CHUNK_STEPS, rng=rng
      ):
        state, algo_state, step_metrics, valid = run_chunk(state, algo_state, chunk)
      loss = float(np.mean(np.asarray(step_metrics['loss'])[np.asarray(valid)]))
      print(f'task {task.id}: last chunk loss {loss:.3f}')
    # The finished task's training data as one padded chunk (EWC's Fisher reads it).
    task_data = train.task_data(task.train, batch_size=256)
    state, algo_state = end_task(state, algo_state, task_data)
    accuracy[:, task.id] = evaluation.evaluate_benchmark(state, bench)[0]
  return accuracy


if __name__ == '__main__':
  matrix = main()
  print('accuracy matrix R[i, j] (task i after training task j):')
  print(np.array2string(matrix, precision=3))
  summary = metrics.summarize(matrix)
  print(f'ACC {summary["acc"]:.3f}  BWT {summary["bwt"]:+.3f}')
