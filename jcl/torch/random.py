"""Counter-based randomness for the PyTorch backend, injectable for parity tests.

The JAX algorithms draw from keys `fold_in(fold_in(rng, step), salt)`, so a
step's random numbers depend only on the seed, the step and the purpose
(`salt`). The PyTorch backend keeps that structure: an algorithm asks its
`RandomSource` for `key(step, salt)`, may `split` it, and draws with
`randint` / `bits31`. The default `TorchRandom` seeds a `torch.Generator`
from the key; a test can pass a source that reproduces `jax.random`, so the
buffer of a replay method makes exactly the choices of the JAX one.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch

Key = Any

_MASK64 = (1 << 64) - 1


class RandomSource(Protocol):
  """Where the algorithms' random numbers come from.

  `key(step, salt)` is the counterpart of `TrainState.step_rng(salt)` of the
  JAX backend; `randint` and `bits31` those of `jax.random.randint(key,
  maxval.shape, 0, maxval)` and `jax.random.bits(key, (n,)) >> 1`.
  """

  def key(self, step: int, salt: int = 0) -> Key: ...

  def split(self, key: Key, num: int) -> Sequence[Key]: ...

  def fold_in(self, key: Key, data: int) -> Key: ...

  def randint(self, key: Key, maxval: torch.Tensor) -> torch.Tensor:
    """int64 uniform on `[0, maxval)` elementwise (`maxval >= 1`), shaped like `maxval`."""

  def bits31(self, key: Key, num: int) -> torch.Tensor:
    """`[num]` int64 uniform on `[0, 2^31)`."""

  def permutation(self, key: Key, num: int) -> torch.Tensor:
    """A random permutation of `range(num)` (`jax.random.permutation`)."""

  def categorical(self, key: Key, logits: torch.Tensor, num: int) -> torch.Tensor:
    """`[num]` draws with replacement from `softmax(logits)` (`jax.random.categorical`);
    zeros when every logit is `-inf`."""


def _mix(state: int, value: int) -> int:
  """splitmix64 step: a well-mixed 64-bit state from `state` and `value`."""
  z = (state + 0x9E3779B97F4A7C15 + (value & _MASK64)) & _MASK64
  z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
  z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
  return z ^ (z >> 31)


class TorchRandom:
  """The default source: a key is a tuple of ints, hashed into a generator seed.

  Args:
    seed: the run's seed.
    device: where the drawn tensors live.
  """

  def __init__(self, seed: int = 0, device: torch.device | str | None = None):
    self.seed = int(seed)
    self.device = torch.device(device) if device is not None else torch.device('cpu')

  def key(self, step: int, salt: int = 0) -> tuple[int, ...]:
    return (self.seed, int(step), int(salt))

  def split(self, key: tuple[int, ...], num: int) -> list[tuple[int, ...]]:
    return [(*key, -1, i) for i in range(num)]

  def fold_in(self, key: tuple[int, ...], data: int) -> tuple[int, ...]:
    return (*key, -2, int(data))

  def _generator(self, key: tuple[int, ...]) -> torch.Generator:
    state = 0
    for value in key:
      state = _mix(state, value)
    generator = torch.Generator(device=self.device)
    generator.manual_seed(state & ((1 << 63) - 1))
    return generator

  def randint(self, key, maxval: torch.Tensor) -> torch.Tensor:
    maxval = torch.as_tensor(maxval, device=self.device)
    u = torch.rand(
      maxval.shape, generator=self._generator(key), dtype=torch.float64, device=self.device
    )
    return torch.minimum(torch.floor(u * maxval).long(), maxval.long() - 1).clamp_min(0)

  def bits31(self, key, num: int) -> torch.Tensor:
    return torch.randint(
      0, 1 << 31, (num,), generator=self._generator(key), dtype=torch.int64, device=self.device
    )

  def permutation(self, key, num: int) -> torch.Tensor:
    return torch.randperm(num, generator=self._generator(key), device=self.device)

  def categorical(self, key, logits: torch.Tensor, num: int) -> torch.Tensor:
    if not bool(torch.any(torch.isfinite(logits))):
      return torch.zeros(num, dtype=torch.int64, device=self.device)
    probs = torch.softmax(logits.double(), -1)
    return torch.multinomial(probs, num, replacement=True, generator=self._generator(key))
