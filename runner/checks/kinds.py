"""Expectations on answers: the ``expect:`` specs of conversation files, and their results.

A spec is plain data (the loader converts YAML first): a mapping of check kind
to argument, or a list of such mappings so a kind can repeat. Every kind is a
:class:`~runner.checks.base.Kind` (a parser, a describer, an evaluator)
registered here under the name used in YAML; the kinds themselves live in the
module of their family. ``judge`` checks are parsed here but graded by the run
layer (``runner/run/judging.py``), which needs the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.checks import judge, metrics, structured, text, tools
from runner.checks.base import (
    CheckSpecError,
    Kind,
    Observation,
    answer_text,
    excerpt,
    hint,
    wrong,
)

__all__ = [
    "KINDS",
    "SCOPES",
    "Check",
    "CheckResult",
    "CheckSpecError",
    "Observation",
    "answer_text",
    "check_error",
    "evaluate",
    "excerpt",
    "parse_expect",
]

SCOPES = ("turn", "every_turn", "final")
"""Where a check came from: a turn's ``expect``, the conversation's, or ``expect_final``."""

_KINDS: dict[str, Kind] = {
    **text.KINDS,
    **structured.KINDS,
    **metrics.KINDS,
    **tools.KINDS,
    **judge.KINDS,
}
KINDS: tuple[str, ...] = tuple(_KINDS)
"""Every check's name in YAML, in the order the spec lists them."""


@dataclass(frozen=True, slots=True)
class Check:
    """One expectation on an answer."""

    kind: str
    """The check's name in YAML, one of :data:`KINDS`."""
    arg: Any
    """The normalised argument (a small frozen dataclass, number, tuple or True)."""
    scope: str
    """``turn``, ``every_turn`` or ``final``: see :data:`SCOPES`."""

    def describe(self) -> str:
        """What the check expects, in words."""
        return _KINDS[self.kind].describe(self.arg)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check on one answer, as recorded in transcripts."""

    kind: str
    """The check's kind."""
    scope: str
    """The check's scope."""
    passed: bool
    """Whether the expectation held."""
    expected: str
    """What was expected, in words (:meth:`Check.describe`)."""
    seen: str
    """A short excerpt of what was seen: the answer, or the number checked."""
    message: str
    """Empty when passed; otherwise one line saying what went wrong."""
    details: dict[str, Any] | None = None
    """Extra data, such as the judge's request and verdict."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON form kept in a turn's ``checks``."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "scope": self.scope,
            "passed": self.passed,
            "expected": self.expected,
            "seen": self.seen,
            "message": self.message,
        }
        if self.details is not None:
            out["details"] = self.details
        return out


def parse_expect(value: Any, *, field: str, scope: str) -> tuple[Check, ...]:
    """The checks of one ``expect`` value; ``field`` prefixes the field of any error."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, not {scope!r}")
    if isinstance(value, Mapping):
        entries = [(field, value)]
    elif isinstance(value, list):
        entries = [(f"{field}[{i}]", item) for i, item in enumerate(value)]
    else:
        raise wrong(field, "a mapping of checks or a list of mappings", value)
    if not value:
        raise CheckSpecError(field, "must not be empty; add a check such as 'contains: ...'")
    checks: list[Check] = []
    for entry_field, entry in entries:
        if not isinstance(entry, Mapping):
            raise wrong(entry_field, "a mapping of checks such as 'contains: ...'", entry)
        if not entry:
            raise CheckSpecError(
                entry_field, "must not be empty; add a check such as 'contains: ...'"
            )
        for kind, arg in entry.items():
            kind_field = f"{entry_field}.{kind}"
            if kind not in _KINDS:
                raise CheckSpecError(kind_field, f"unknown check; {hint(str(kind), KINDS)}")
            checks.append(Check(kind, _KINDS[kind].parse(arg, kind_field), scope))
    return tuple(checks)


def evaluate(check: Check, observation: Observation) -> CheckResult:
    """Whether one answer meets one (non-judge) expectation."""
    if check.kind == "judge":
        raise ValueError("judge checks are evaluated by the engine")
    if check.kind not in _KINDS:
        raise ValueError(f"unknown check kind {check.kind!r}")
    answer = answer_text(observation.content)
    try:
        outcome = _KINDS[check.kind].evaluate(check.arg, answer, observation)
    except Exception as exc:  # a bug in a check must fail that check, never lose the answer
        return check_error(check, excerpt(answer), exc)
    return CheckResult(
        kind=check.kind,
        scope=check.scope,
        passed=not outcome.message,
        expected=check.describe(),
        seen=outcome.seen if outcome.seen is not None else excerpt(answer, around=outcome.at),
        message=outcome.message,
    )


def check_error(check: Check, seen: str, exc: BaseException) -> CheckResult:
    """The failed result of a check that raised: recorded like any failure, with the error.

    Why a check raised is a bug in mtrun, so the message asks for a report;
    the answer it was checking is kept like any other.
    """
    error = f"{type(exc).__name__}: {excerpt(str(exc), 160)}".rstrip(": ")
    return CheckResult(
        kind=check.kind,
        scope=check.scope,
        passed=False,
        expected=check.describe(),
        seen=seen,
        message=f"the check could not run ({error}); this is a bug in mtrun, please report it",
        details={"error": error},
    )
