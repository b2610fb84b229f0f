"""Parameter initializers used by every model in `jcl.models`, in one place.

These are flax's defaults (LeCun-normal kernels, zero biases). A later
PyTorch-parity backend can swap them here (e.g. PyTorch's
`kaiming_uniform(a=sqrt(5))` for `nn.Linear` / `nn.Conv2d`) without touching
the model definitions.
"""

from __future__ import annotations

import flax.linen as nn

# Kernels of `nn.Dense` layers (hidden layers and heads): `[F_in, F_out]`.
DENSE_KERNEL_INIT = nn.initializers.lecun_normal()
# Kernels of `nn.Conv` layers: `[kh, kw, C_in, C_out]`.
CONV_KERNEL_INIT = nn.initializers.lecun_normal()
# Biases of dense and conv layers: `[F_out]`.
BIAS_INIT = nn.initializers.zeros_init()
# BatchNorm affine parameters.
BN_SCALE_INIT = nn.initializers.ones_init()
BN_BIAS_INIT = nn.initializers.zeros_init()
