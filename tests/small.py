"""The one table of small hyperparameters the tests build algorithms with.

Small memories, few random features, few glances: every algorithm builds and
steps in milliseconds on tiny streams (tests/algorithms/test_protocol.py,
tests/test_scenarios.py, the parity tests of tests/torch/). An algorithm
whose defaults are already small needs no row.
"""

from __future__ import annotations

from typing import Any

from jcl import specs

SMALL_HPARAMS: dict[str, dict[str, Any]] = {
  'ewc': dict(importance_samples=50),
  'mas': dict(importance_samples=50),
  'er': dict(memory_size=8, replay_batch_size=4),
  'er_ace': dict(memory_size=8, replay_batch_size=4),
  'der': dict(memory_size=8, replay_batch_size=4),
  'derpp': dict(memory_size=8, replay_batch_size=4),
  'agem': dict(memory_per_task=4, memory_batch_size=4),
  'gem': dict(memory_per_task=4),
  'lamaml': dict(memory_size=8, replay_batch_size=4, glances=2),
  'mcsgd': dict(memory_per_task=4, lmc_batch_size=4, lmc_line_samples=2),
  'kcl': dict(core_size=4, num_random_features=16),
  'mir': dict(memory_size=8, replay_batch_size=2, mir_candidates=4),
}


def small_hparams(name: str, **overrides: Any) -> dict[str, Any]:
  """The small hyperparameters of algorithm `name`, updated by `overrides`."""
  return {**SMALL_HPARAMS.get(name, {}), **overrides}


def small_spec(name: str, **overrides: Any) -> specs.AlgorithmSpec:
  """The spec of algorithm `name` with its small hyperparameters (and `overrides`)."""
  return specs.make_spec(name, **small_hparams(name, **overrides))
