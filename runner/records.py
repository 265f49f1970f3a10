"""Reading transcript records back: tolerant accessors for fields that may be missing.

Records come from files, possibly from interrupted runs, older versions or
hand edits, so every reader (diff, report, show, JUnit) takes optional fields
through these instead of trusting their types.
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard


def as_list(value: Any) -> list[Any]:
    """``value`` as a list; anything that is not a list or tuple is empty."""
    return list(value) if isinstance(value, list | tuple) else []


def as_text(value: Any) -> str:
    """``value`` as text; None is empty."""
    return "" if value is None else value if isinstance(value, str) else str(value)


def is_int(value: Any) -> TypeGuard[int]:
    """Whether ``value`` is an int (a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def as_int(value: Any) -> int:
    """``value`` if it is an int, else 0."""
    return value if is_int(value) else 0


def as_number(value: Any) -> float | None:
    """``value`` as a finite float, or None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
