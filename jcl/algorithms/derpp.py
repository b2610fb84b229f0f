"""DER++ (Buzzega et al. 2020, eq. 6): DER plus replayed labels. See `der`."""

from __future__ import annotations

from jcl import specs
from jcl.algorithms import base
from jcl.algorithms.der import make_der


def make(
  spec: specs.DERPPSpec | None = None, context: base.Context | None = None
) -> base.Algorithm:
  return make_der(spec or specs.DERPPSpec(), context)
