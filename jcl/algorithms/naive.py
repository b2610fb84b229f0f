"""Naive fine-tuning: SGD on each task in turn, nothing against forgetting."""

from __future__ import annotations

from jcl import specs
from jcl.algorithms import base


def make(
  spec: specs.NaiveSpec | None = None, context: base.Context | None = None
) -> base.Algorithm:
  del context  # nothing of the stream is needed
  return base.make(spec or specs.NaiveSpec(), base.sgd_step())
