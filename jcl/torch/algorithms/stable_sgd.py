"""Stable SGD (Mirzadeh et al. 2020, "Understanding the role of training
regimes in continual learning"), Sec. 4, as `jcl.algorithms.stable_sgd`.

Naive SGD under a regime that widens the minima each task converges to:
dropout in the hidden layers (training steps only), a per-task learning-rate
decay `max(lr * lr_decay**k, min_lr)` for task k (applied by
`jcl.torch.train_state.begin_task`) and small batches. `make` returns Naive's
step; the spec's `regime` (`specs.StableSGDSpec.regime`, one function for
both backends) rewrites the run's model, optimizer and loop configs.
"""

from __future__ import annotations

from jcl import specs
from jcl.torch.algorithms import base


def make(
  spec: specs.StableSGDSpec | None = None, context: base.Context | None = None
) -> base.Algorithm:
  del context  # nothing of the stream is needed
  return base.make(spec or specs.StableSGDSpec(), base.sgd_step())
