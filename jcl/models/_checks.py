"""Argument checks shared by the model definitions (private)."""

from __future__ import annotations

import numbers
from typing import Any, Sequence


def check_positive_int(field: str, value: Any) -> int:
  """Returns `value` as an int; ValueError naming `field` unless it is >= 1."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
    raise ValueError(f'{field} must be a positive int, got {value!r}.')
  return int(value)


def check_positive_ints(field: str, values: Any, allow_empty: bool = True) -> tuple[int, ...]:
  """Returns `values` as a tuple of ints, each >= 1 (ValueError otherwise)."""
  if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
    raise ValueError(f'{field} must be a sequence of positive ints, got {values!r}.')
  if not allow_empty and not values:
    raise ValueError(f'{field} must not be empty.')
  for v in values:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
      raise ValueError(f'{field} must be a sequence of positive ints, got {values!r}.')
  return tuple(int(v) for v in values)


def check_rate(field: str, value: Any) -> float:
  """Returns `value` as a float in [0, 1) (ValueError naming `field`)."""
  if (
    isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) < 1.0
  ):
    raise ValueError(f'{field} must be a float in [0, 1), got {value!r}.')
  return float(value)
