"""Measured kinds: a length counted, or a fact the API reported with the answer.

``min_chars``, ``max_chars``, ``finish_reason``, ``max_latency_ms``, ``max_tokens``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from runner.checks.base import (
    CheckSpecError,
    Kind,
    Observation,
    Outcome,
    quoted,
    read_count,
    read_texts,
    wrong,
)
from runner.words import plural


def _chars(least: bool) -> Callable[[int, str, Observation], Outcome]:
    def check(limit: int, text: str, _: Observation) -> Outcome:
        if (len(text) < limit) if least else (len(text) > limit):
            bound = f"at least {limit} required" if least else f"at most {limit} allowed"
            return Outcome(f"{plural(len(text), 'character')}, {bound}")
        return Outcome()

    return check


def _describe_finish(arg: tuple[str, ...]) -> str:
    return f"finish_reason {arg[0]!r}" if len(arg) == 1 else f"finish_reason one of: {quoted(arg)}"


def _finish_reason(arg: tuple[str, ...], _text: str, seen: Observation) -> Outcome:
    reason = seen.finish_reason
    if reason is None:
        return Outcome("the API reported no finish_reason", "no finish_reason")
    if reason in arg:
        return Outcome("", f"finish_reason {reason!r}")
    return Outcome(f"finish_reason was {reason!r}", f"finish_reason {reason!r}")


def _parse_latency(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise wrong(field, "a number of milliseconds", value)
    if value <= 0:
        raise CheckSpecError(field, f"must be more than 0, got {value}")
    return value


def _whole_or_tenths(value: float) -> str:
    """A number of milliseconds as written in messages: ``120``, ``120.5``."""
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _latency(limit: float, _text: str, seen: Observation) -> Outcome:
    if seen.latency_ms is None:
        return Outcome("no latency was recorded", "latency unknown")
    took = f"{_whole_or_tenths(seen.latency_ms)} ms"
    if seen.latency_ms > limit:
        return Outcome(f"took {took}, at most {_whole_or_tenths(limit)} allowed", f"latency {took}")
    return Outcome("", f"latency {took}")


def _tokens(limit: int, _text: str, seen: Observation) -> Outcome:
    tokens = seen.completion_tokens
    if tokens is None:
        return Outcome("the API reported no completion tokens", "no usage reported")
    used = plural(tokens, "completion token")
    return Outcome(f"{used}, at most {limit} allowed" if tokens > limit else "", used)


KINDS: dict[str, Kind] = {
    "min_chars": Kind(read_count, lambda n: f"at least {plural(n, 'character')}", _chars(True)),
    "max_chars": Kind(read_count, lambda n: f"at most {plural(n, 'character')}", _chars(False)),
    "finish_reason": Kind(
        lambda value, field: read_texts(value, field, "a string or a list of strings"),
        _describe_finish,
        _finish_reason,
    ),
    "max_latency_ms": Kind(
        _parse_latency, lambda ms: f"latency at most {_whole_or_tenths(ms)} ms", _latency
    ),
    "max_tokens": Kind(read_count, lambda n: f"at most {plural(n, 'completion token')}", _tokens),
}
"""The measured kinds, in the order the spec lists them."""
