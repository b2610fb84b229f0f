"""An algorithm of your own: L2 anchoring, trained by jcl's loop (docs/own_algorithm.md).

  python examples/own_algorithm.py

The penalty `strength / 2 * ||theta - theta_prev||^2` pulls the parameters
towards those at the end of the previous task (the "L2" baseline of the EWC
paper: EWC with a Fisher of ones). A spec (hyperparameters, validated,
registered by name), a `make(spec, context)` that returns the `Algorithm`'s
pure functions, and `jcl.train.fit` to run it on 3 Permuted MNIST tasks from
the MNIST sample bundled with jcl, with naive fine-tuning for comparison.
About 15 s on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from jcl import algorithms, data, models, specs, train, train_state
from jcl.algorithms import base


@specs.register_spec
@dataclasses.dataclass(frozen=True)
class L2AnchorSpec(specs.AlgorithmSpec):
  """L2 anchoring to the previous task's parameters.

  Attributes:
    strength: the penalty's weight.
  """

  name: ClassVar[str] = 'l2_anchor'
  strength: float = 1.0

  def validate(self):
    self._non_negative('strength')  # a ValueError naming the field


class L2AnchorState(NamedTuple):
  """The algorithm state: fixed-shape arrays only (jit, scan, vmap)."""

  anchor: Any  # the parameters at the end of the previous task
  active: jax.Array  # 0.0 during the first task (no anchor yet), then 1.0


def make(spec: L2AnchorSpec | None = None, context: base.Context | None = None) -> base.Algorithm:
  """The algorithm of `spec` (`context`: the stream's shapes; nothing to size here)."""
  del context
  spec = spec or L2AnchorSpec()

  def init(train_state, rng):
    del rng
    return L2AnchorState(train_state.params, jnp.zeros((), jnp.float32))

  def penalty(params, state: L2AnchorState):
    squares = jax.tree.map(lambda p, a: jnp.sum(jnp.square(p - a)), params, state.anchor)
    return 0.5 * spec.strength * state.active * sum(jax.tree.leaves(squares))

  def end_task(train_state, state, task_data):
    del task_data  # None: the spec's `uses_task_data` is False
    return train_state, L2AnchorState(train_state.params, jnp.ones((), jnp.float32))

  # sgd_step: one optimizer step on the task loss plus `penalty(params, algo_state)`.
  return base.make(spec, base.sgd_step(penalty), init=init, end_task=end_task)


def run(algorithm: base.Algorithm, bench, seed: int = 0) -> train.FitResult:
  """`algorithm` on `bench` with jcl's loop (evaluation of every task after each)."""
  model = models.MLP(widths=(100, 100), num_classes=bench.num_classes)
  state = train_state.create_train_state(
    model,
    specs.OptimizerSpec(learning_rate=0.05),
    jax.random.PRNGKey(seed),
    bench.input_shape,
    bench.num_classes,
  )
  config = train.TrainConfig(epochs=1, batch_size=32, chunk_steps=50, seed=seed)
  return train.fit(algorithm, state, bench, config)


def main(num_tasks: int = 3, samples_per_task: int = 2000) -> dict[str, train.FitResult]:
  bench = data.make_benchmark(
    'permuted_mnist', num_tasks=num_tasks, samples_per_task=samples_per_task
  )
  spec = specs.make_spec('l2_anchor', strength=0.05)  # registered: found by name
  return {
    'naive': run(algorithms.naive.make(), bench),
    'l2_anchor': run(make(spec), bench),
  }


if __name__ == '__main__':
  for name, result in main().items():
    s = result.summary
    print(f'{name:10s} ACC {s["acc"]:.3f}  BWT {s["bwt"]:+.3f}  forgetting {s["forgetting"]:.3f}')
