"""Naive fine-tuning: SGD on each task in turn, nothing against forgetting."""
from __future__ import annotations

from jcl import specs
from jcl.algorithms import base


def make(spec: specs.NaiveSpec | None = None) -> base.Algorithm:
  return base.make(spec or specs.NaiveSpec(), base.sgd_step())
