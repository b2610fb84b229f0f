"""Joint training, the upper bound: task k trains on the union of tasks 0..k.

The step is plain SGD; `JointSpec.cumulative_data` makes `jcl.torch.fit.fit`
stream the concatenated training sets of the tasks seen so far.
"""

from __future__ import annotations

from jcl import specs
from jcl.torch.algorithms import base


def make(
  spec: specs.JointSpec | None = None, context: base.Context | None = None
) -> base.Algorithm:
  del context  # nothing of the stream is needed
  return base.make(spec or specs.JointSpec(), base.sgd_step())
