"""Text kinds: ``contains``, ``not_contains``, ``matches``, ``not_matches``, ``equals``.

Each looks at the answer as text (:func:`~runner.checks.base.answer_text`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from runner.checks.base import (
    CheckSpecError,
    Kind,
    Observation,
    Outcome,
    excerpt,
    quoted,
    read_options,
    read_text,
    read_texts,
)
from runner.checks.safeschema import pattern_problem


@dataclass(frozen=True, slots=True)
class Phrases:
    """Argument of ``contains`` and ``not_contains``."""

    values: tuple[str, ...]
    mode: str
    """``any`` or ``all``."""
    case_insensitive: bool = False


@dataclass(frozen=True, slots=True)
class Equals:
    """Argument of ``equals``."""

    value: str
    case_insensitive: bool = False


# contains, not_contains ------------------------------------------------------


def _parse_phrases(default_mode: str) -> Callable[[Any, str], Phrases]:
    def parse(value: Any, field: str) -> Phrases:
        expected = "a string, a list of strings, or a mapping with 'any' or 'all'"
        if not isinstance(value, Mapping):
            return Phrases(read_texts(value, field, expected), default_mode)
        flag = read_options(value, field, ("any", "all", "case_insensitive"))
        modes = [mode for mode in ("any", "all") if mode in value]
        if len(modes) != 1:
            raise CheckSpecError(field, "give exactly one of 'any' or 'all'")
        values = read_texts(value[modes[0]], f"{field}.{modes[0]}", "a string or a list of strings")
        return Phrases(values, modes[0], flag)

    return parse


def _describe_phrases(negate: bool) -> Callable[[Phrases], str]:
    def describe(arg: Phrases) -> str:
        if len(arg.values) == 1:
            text = f"{'does not contain' if negate else 'contains'} {arg.values[0]!r}"
        elif negate:
            prefix = "contains none of" if arg.mode == "any" else "does not contain all of"
            text = f"{prefix}: {quoted(arg.values)}"
        else:
            text = f"contains {arg.mode} of: {quoted(arg.values)}"
        return text + (" (case-insensitive)" if arg.case_insensitive else "")

    return describe


def _find_phrases(arg: Phrases, text: str) -> tuple[list[str], list[str], int | None]:
    """The phrases found and missing, and where the first found one starts."""
    haystack = text.casefold() if arg.case_insensitive else text
    found: list[str] = []
    missing: list[str] = []
    first: int | None = None
    for phrase in arg.values:
        index = haystack.find(phrase.casefold() if arg.case_insensitive else phrase)
        (found if index >= 0 else missing).append(phrase)
        if index >= 0 and (first is None or index < first):
            first = index
    return found, missing, first


def _contains(arg: Phrases, text: str, _: Observation) -> Outcome:
    found, missing, at = _find_phrases(arg, text)
    if arg.mode == "all" and missing:
        return Outcome(f"missing {quoted(tuple(missing))}")
    if arg.mode == "any" and not found:
        return Outcome(f"none of {quoted(arg.values)} appears")
    return Outcome(at=at)


def _not_contains(arg: Phrases, text: str, _: Observation) -> Outcome:
    found, missing, at = _find_phrases(arg, text)
    if found and (arg.mode == "any" or not missing):
        return Outcome(f"matched forbidden {quoted(tuple(found))}", at=at)
    return Outcome()


# matches, not_matches --------------------------------------------------------


def _parse_pattern(value: Any, field: str) -> re.Pattern[str]:
    flag, where = False, field
    if isinstance(value, Mapping):
        flag = read_options(value, field, ("pattern", "case_insensitive"), "pattern")
        value, where = value["pattern"], f"{field}.pattern"
    source = read_text(value, where, "a regular expression (a string) or a mapping with 'pattern'")
    problem = pattern_problem(source)
    if problem:
        raise CheckSpecError(where, problem)
    return re.compile(source, re.IGNORECASE if flag else 0)


def _slashed(pattern: re.Pattern[str]) -> str:
    return f"/{pattern.pattern}/" + ("i" if pattern.flags & re.IGNORECASE else "")


def _matches(arg: re.Pattern[str], text: str, _: Observation) -> Outcome:
    found = arg.search(text)
    if found is None:
        return Outcome(f"no match for {_slashed(arg)}")
    return Outcome(at=found.start())


def _not_matches(arg: re.Pattern[str], text: str, _: Observation) -> Outcome:
    found = arg.search(text)
    if found is None:
        return Outcome()
    matched = excerpt(found.group(0), 80)
    return Outcome(f"matched forbidden {matched!r}", at=found.start())


# equals ----------------------------------------------------------------------


def _parse_equals(value: Any, field: str) -> Equals:
    if isinstance(value, Mapping):
        flag = read_options(value, field, ("value", "case_insensitive"), "value")
        return Equals(read_text(value["value"], f"{field}.value", empty=True), flag)
    return Equals(read_text(value, field, "a string or a mapping with 'value'", empty=True))


def _describe_equals(arg: Equals) -> str:
    return f"equals {arg.value!r}" + (" (case-insensitive)" if arg.case_insensitive else "")


def _equals(arg: Equals, text: str, _: Observation) -> Outcome:
    want, got = arg.value.strip(), text.strip()
    if arg.case_insensitive:
        want, got = want.casefold(), got.casefold()
    return Outcome() if want == got else Outcome(f"differs from {arg.value.strip()!r}")


KINDS: dict[str, Kind] = {
    "contains": Kind(_parse_phrases("all"), _describe_phrases(False), _contains),
    "not_contains": Kind(_parse_phrases("any"), _describe_phrases(True), _not_contains),
    "matches": Kind(_parse_pattern, lambda arg: f"matches {_slashed(arg)}", _matches),
    "not_matches": Kind(
        _parse_pattern, lambda arg: f"does not match {_slashed(arg)}", _not_matches
    ),
    "equals": Kind(_parse_equals, _describe_equals, _equals),
}
"""The text kinds, in the order the spec lists them."""
