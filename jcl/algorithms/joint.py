"""Joint training, the upper bound: task k trains on the union of tasks 0..k.

The step is plain SGD; what makes it Joint is the data. `JointSpec` sets
`cumulative_data`, and `jcl.train.fit` then streams the concatenated
training sets of all tasks seen so far.
"""

from __future__ import annotations

from jcl import specs
from jcl.algorithms import base


def make(
  spec: specs.JointSpec | None = None, context: base.Context | None = None
) -> base.Algorithm:
  del context  # nothing of the stream is needed
  return base.make(spec or specs.JointSpec(), base.sgd_step())
