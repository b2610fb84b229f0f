"""Stable SGD (Mirzadeh et al. 2020, "Understanding the role of training
regimes in continual learning"), Sec. 4.

Not a new update rule but a training regime for plain (Naive) SGD that
widens the minima each task converges to and so lowers forgetting:

* dropout in the hidden layers (`dropout`), active in training steps only;
* a per-task learning-rate decay, task k at `max(lr * lr_decay**k, min_lr)`
  (the authors' `max(lr * gamma**task, 5e-5)` with 1-based tasks, i.e. their
  first task already trains at `lr * gamma`);
* small batches (`batch_size`).

`make` returns Naive's step; the spec's `regime` rewrites the run's model,
optimizer and loop configs (on both backends: `RunSpec.regime`). A model
without a `dropout` field is refused by `jcl.models.make_model`.
"""

from __future__ import annotations

from jcl import specs
from jcl.algorithms import base


def make(
  spec: specs.StableSGDSpec | None = None, context: base.Context | None = None
) -> base.Algorithm:
  del context  # nothing of the stream is needed
  return base.make(spec or specs.StableSGDSpec(), base.sgd_step())
