"""Value checks shared by every config reader: each raises :class:`ConfigError` naming the
dotted key and the bad value, so that all messages have one shape. Nothing here imports
Hydra or OmegaConf: networks and agents use these helpers too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A configuration value is of the wrong type or impossible; the message names the key."""


def check_int(key: str, value: Any, *, minimum: int | None = None) -> int:
    """Require an int (not a bool) ≥ ``minimum``; return it."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{key}: expected an int, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key}: must be >= {minimum}, got {value}")
    return value


def check_positive(key: str, value: Any, *, allow_zero: bool = False) -> float:
    """Require a finite real number > 0 (≥ 0 with ``allow_zero``); return it as float.

    Example: ``check_positive("agent.lr", lr)`` → ``agent.lr: must be > 0, got -0.001``.
    """
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key}: must be {'>=' if allow_zero else '>'} 0, got {value}")
    return float(value)


def check_range(key: str, value: Any, low: float, high: float, *, inclusive: bool = True) -> float:
    """Require ``low ≤ value ≤ high`` (strict with ``inclusive=False``); return it as float."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    ok = low <= value <= high if inclusive else low < value < high
    if not ok:
        brackets = "[]" if inclusive else "()"
        raise ConfigError(f"{key}: must be in {brackets[0]}{low}, {high}{brackets[1]}, got {value}")
    return float(value)


def check_choice(key: str, value: Any, choices: Iterable[Any]) -> Any:
    """Require ``value in choices``; return it."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{key}: unknown value {value!r}; choose one of {choices}")
    return value
