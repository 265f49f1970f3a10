"""Expectations on answers: the ``expect:`` specs of conversation files, and their results.

A spec is plain data (the loader converts YAML first): a mapping of check kind
to argument, or a list of such mappings so a kind can repeat. Every kind is a
small parser (spec argument → normalised argument, raising
:class:`CheckSpecError`), a describer (argument → what is expected, in words)
and an evaluator (argument and :class:`Observation` → what went wrong, or
nothing), registered under the name used in YAML. ``judge`` checks are parsed
here but graded by ``judge.py``, which needs the API.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from runner.checks.safeschema import UnsafeSchema, checked_validator, pattern_problem

if TYPE_CHECKING:
    from jsonschema.protocols import Validator
# jsonschema itself is imported where a json_schema check needs it: it is a
# fifth of mtrun's start-up time, and most runs have no such check.

SCOPES = ("turn", "every_turn", "final")
"""Where a check came from: a turn's ``expect``, the conversation's, or ``expect_final``."""

_SPACE = re.compile(r"\s+")
_FENCE = re.compile(r"^[ \t]*```([^\n`]*)$", re.MULTILINE)
"""A fence line: three backticks at the start of a line, and the block's info string."""


class CheckSpecError(Exception):
    """An ``expect`` value is invalid; ``field`` is the path of the offending value."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


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
class Observation:
    """What a check can look at: one answer and the facts reported with it."""

    content: Any
    """The assistant message content: usually a string; None or a list of parts otherwise."""
    finish_reason: str | None
    """Why the model stopped, as the API said."""
    latency_ms: float | None
    """How long the successful request took."""
    completion_tokens: int | None
    """Tokens in the answer, when the API reported usage."""


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


@dataclass(frozen=True, slots=True)
class Schema:
    """Argument of ``json_schema``: the schema and its checked validator."""

    schema: dict[str, Any]
    validator: Validator = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Judge:
    """Argument of ``judge``: the rubric, and the judge model when the file names one."""

    rubric: str
    model: str | None = None


def parse_expect(value: Any, *, field: str, scope: str) -> tuple[Check, ...]:
    """The checks of one ``expect`` value; ``field`` prefixes the field of any error."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, not {scope!r}")
    if isinstance(value, Mapping):
        entries = [(field, value)]
    elif isinstance(value, list):
        entries = [(f"{field}[{i}]", item) for i, item in enumerate(value)]
    else:
        raise _wrong(field, "a mapping of checks or a list of mappings", value)
    if not value:
        raise CheckSpecError(field, "must not be empty; add a check such as 'contains: ...'")
    checks: list[Check] = []
    for entry_field, entry in entries:
        if not isinstance(entry, Mapping):
            raise _wrong(entry_field, "a mapping of checks such as 'contains: ...'", entry)
        if not entry:
            raise CheckSpecError(
                entry_field, "must not be empty; add a check such as 'contains: ...'"
            )
        for kind, arg in entry.items():
            kind_field = f"{entry_field}.{kind}"
            if kind not in _KINDS:
                raise CheckSpecError(kind_field, f"unknown check; {_hint(str(kind), KINDS)}")
            checks.append(Check(kind, _KINDS[kind].parse(arg, kind_field), scope))
    return tuple(checks)


def evaluate(check: Check, observation: Observation) -> CheckResult:
    """Whether one answer meets one (non-judge) expectation."""
    if check.kind == "judge":
        raise ValueError("judge checks are evaluated by the engine")
    if check.kind not in _KINDS:
        raise ValueError(f"unknown check kind {check.kind!r}")
    text = answer_text(observation.content)
    try:
        outcome = _KINDS[check.kind].evaluate(check.arg, text, observation)
    except Exception as exc:  # a bug in a check must fail that check, never lose the answer
        return check_error(check, excerpt(text), exc)
    return CheckResult(
        kind=check.kind,
        scope=check.scope,
        passed=not outcome.message,
        expected=check.describe(),
        seen=outcome.seen if outcome.seen is not None else excerpt(text, around=outcome.at),
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


def answer_text(content: Any) -> str:
    """The answer as text: a string as is, None as "", anything else as its JSON."""
    if content is None:
        return ""
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)


def excerpt(text: str, limit: int = 200, *, around: int | None = None) -> str:
    """``text`` with whitespace collapsed, cut to ``limit`` characters with "…".

    With ``around`` (an index into ``text``) the excerpt shows that region.
    """
    flat = _SPACE.sub(" ", text).strip()
    if len(flat) <= limit:
        return flat
    start = 0
    if around is not None:
        position = len(_SPACE.sub(" ", text[:around]).lstrip())
        start = max(0, min(position - limit // 4, len(flat) - (limit - 1)))
    if start == 0:
        return flat[: limit - 1].rstrip() + "…"
    if start + limit - 1 >= len(flat):
        return "…" + flat[start:].lstrip()
    return "…" + flat[start : start + limit - 2].strip() + "…"


def find_json(text: str) -> tuple[bool, Any]:
    """``(found, value)``: the answer parsed as JSON, else its first json or bare fenced block."""
    found, value, _ = _find_json(text)
    return found, value


# Shared helpers --------------------------------------------------------------


class _Outcome(NamedTuple):
    """What went wrong ("" when nothing did), and what was seen.

    ``seen`` None means an excerpt of the answer, around index ``at`` if given.
    """

    message: str = ""
    seen: str | None = None
    at: int | None = None


def _got(value: Any) -> str:
    """How a wrong value is named in messages, in YAML's words."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "an empty value"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "a mapping"


def _wrong(field: str, expected: str, value: Any) -> CheckSpecError:
    return CheckSpecError(field, f"expected {expected}, got {_got(value)}")


def _hint(name: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    return f"did you mean '{close[0]}'?" if close else f"expected one of: {', '.join(allowed)}"


def _options(
    value: Mapping[Any, Any], field: str, allowed: tuple[str, ...], required: str | None = None
) -> bool:
    """Check a mapping argument's keys; its ``case_insensitive`` flag (default false)."""
    for key in value:
        if key not in allowed:
            raise CheckSpecError(f"{field}.{key}", f"unknown key; {_hint(str(key), allowed)}")
    if required is not None and required not in value:
        raise CheckSpecError(field, f"missing required key '{required}'")
    flag = value.get("case_insensitive", False)
    if not isinstance(flag, bool):
        raise _wrong(f"{field}.case_insensitive", "true or false", flag)
    return flag


def _text(value: Any, field: str, expected: str = "a string", *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise _wrong(field, expected, value)
    if not empty and not value.strip():
        raise CheckSpecError(field, "must not be empty")
    return value


def _texts(value: Any, field: str, expected: str) -> tuple[str, ...]:
    """A non-empty string, or a non-empty list of them."""
    if isinstance(value, str):
        return (_text(value, field),)
    if not isinstance(value, list):
        raise _wrong(field, expected, value)
    if not value:
        raise CheckSpecError(field, "must not be an empty list")
    return tuple(_text(item, f"{field}[{i}]") for i, item in enumerate(value))


def _count(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong(field, "a whole number (0 or more)", value)
    if value < 0:
        raise CheckSpecError(field, f"must be 0 or more, got {value}")
    return value


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join(repr(v) for v in values)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


# contains, not_contains ------------------------------------------------------


def _parse_phrases(default_mode: str) -> Callable[[Any, str], Phrases]:
    def parse(value: Any, field: str) -> Phrases:
        expected = "a string, a list of strings, or a mapping with 'any' or 'all'"
        if not isinstance(value, Mapping):
            return Phrases(_texts(value, field, expected), default_mode)
        flag = _options(value, field, ("any", "all", "case_insensitive"))
        modes = [mode for mode in ("any", "all") if mode in value]
        if len(modes) != 1:
            raise CheckSpecError(field, "give exactly one of 'any' or 'all'")
        values = _texts(value[modes[0]], f"{field}.{modes[0]}", "a string or a list of strings")
        return Phrases(values, modes[0], flag)

    return parse


def _describe_phrases(negate: bool) -> Callable[[Phrases], str]:
    def describe(arg: Phrases) -> str:
        if len(arg.values) == 1:
            text = f"{'does not contain' if negate else 'contains'} {arg.values[0]!r}"
        elif negate:
            prefix = "contains none of" if arg.mode == "any" else "does not contain all of"
            text = f"{prefix}: {_quoted(arg.values)}"
        else:
            text = f"contains {arg.mode} of: {_quoted(arg.values)}"
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


def _contains(arg: Phrases, text: str, _: Observation) -> _Outcome:
    found, missing, at = _find_phrases(arg, text)
    if arg.mode == "all" and missing:
        return _Outcome(f"missing {_quoted(tuple(missing))}")
    if arg.mode == "any" and not found:
        return _Outcome(f"none of {_quoted(arg.values)} appears")
    return _Outcome(at=at)


def _not_contains(arg: Phrases, text: str, _: Observation) -> _Outcome:
    found, missing, at = _find_phrases(arg, text)
    if found and (arg.mode == "any" or not missing):
        return _Outcome(f"matched forbidden {_quoted(tuple(found))}", at=at)
    return _Outcome()


# matches, not_matches --------------------------------------------------------


def _parse_pattern(value: Any, field: str) -> re.Pattern[str]:
    flag, where = False, field
    if isinstance(value, Mapping):
        flag = _options(value, field, ("pattern", "case_insensitive"), "pattern")
        value, where = value["pattern"], f"{field}.pattern"
    source = _text(value, where, "a regular expression (a string) or a mapping with 'pattern'")
    problem = pattern_problem(source)
    if problem:
        raise CheckSpecError(where, problem)
    return re.compile(source, re.IGNORECASE if flag else 0)


def _slashed(pattern: re.Pattern[str]) -> str:
    return f"/{pattern.pattern}/" + ("i" if pattern.flags & re.IGNORECASE else "")


def _matches(arg: re.Pattern[str], text: str, _: Observation) -> _Outcome:
    found = arg.search(text)
    if found is None:
        return _Outcome(f"no match for {_slashed(arg)}")
    return _Outcome(at=found.start())


def _not_matches(arg: re.Pattern[str], text: str, _: Observation) -> _Outcome:
    found = arg.search(text)
    if found is None:
        return _Outcome()
    matched = excerpt(found.group(0), 80)
    return _Outcome(f"matched forbidden {matched!r}", at=found.start())


# equals ----------------------------------------------------------------------


def _parse_equals(value: Any, field: str) -> Equals:
    if isinstance(value, Mapping):
        flag = _options(value, field, ("value", "case_insensitive"), "value")
        return Equals(_text(value["value"], f"{field}.value", empty=True), flag)
    return Equals(_text(value, field, "a string or a mapping with 'value'", empty=True))


def _describe_equals(arg: Equals) -> str:
    return f"equals {arg.value!r}" + (" (case-insensitive)" if arg.case_insensitive else "")


def _equals(arg: Equals, text: str, _: Observation) -> _Outcome:
    want, got = arg.value.strip(), text.strip()
    if arg.case_insensitive:
        want, got = want.casefold(), got.casefold()
    return _Outcome() if want == got else _Outcome(f"differs from {arg.value.strip()!r}")


# is_json, json_schema --------------------------------------------------------


def _find_json(text: str) -> tuple[bool, Any, str]:
    """Like :func:`find_json`, with the reason when no JSON was found."""
    try:
        return True, json.loads(text), ""
    except (ValueError, RecursionError) as exc:
        problem = _json_problem(exc)
    block = _first_json_block(text)
    if block is None:
        return False, None, f"no JSON found: the answer is not JSON ({problem})"
    try:
        return True, json.loads(block), ""
    except (ValueError, RecursionError) as exc:
        problem = _json_problem(exc)
    return False, None, f"no JSON found: the first code block is not JSON ({problem})"


def _first_json_block(text: str) -> str | None:
    """The body of the first fenced block marked ``json`` or not marked at all."""
    fences = list(_FENCE.finditer(text))
    # strict=False: a last, unclosed fence opens no block.
    for opening, closing in zip(fences[::2], fences[1::2], strict=False):
        if opening.group(1).strip().lower() in ("", "json"):
            return text[opening.end() + 1 : closing.start()]
    return None


def _json_problem(exc: ValueError | RecursionError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "nested too deeply to read"
    return str(exc)


def _parse_is_json(value: Any, field: str) -> bool:
    if value is False:
        raise CheckSpecError(field, "false checks nothing; remove it instead")
    if value is not True:
        raise _wrong(field, "true", value)
    return True


def _is_json(_arg: bool, text: str, _: Observation) -> _Outcome:
    return _Outcome(_find_json(text)[2])


def _parse_schema(value: Any, field: str) -> Schema:
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import Draft202012Validator, validator_for

    if not isinstance(value, Mapping):
        raise _wrong(field, "a mapping (a JSON Schema)", value)
    cls: type[Validator] = Draft202012Validator
    if "$schema" in value:
        uri = _text(value["$schema"], f"{field}.$schema", "a metaschema URI (a string)")
        try:
            found = validator_for(value, default=cast(Any, None))
        except ValueError:  # not a URI at all, e.g. "http://["
            found = None
        if found is None:
            hint = f"use '{Draft202012Validator.META_SCHEMA['$id']}' or remove '$schema'"
            raise CheckSpecError(f"{field}.$schema", f"unknown metaschema '{uri}'; {hint}")
        cls = found
    schema = dict(value)
    try:
        validator = checked_validator(schema, cls)
    except SchemaError as exc:
        where = _field_path(field, exc.path)
        raise CheckSpecError(where, f"invalid JSON Schema: {excerpt(exc.message, 160)}") from None
    except UnsafeSchema as exc:
        raise CheckSpecError(_field_path(field, exc.path), exc.message) from None
    return Schema(schema, validator)


def _field_path(field: str, path: Iterable[str | int]) -> str:
    """``field`` followed by a schema path: ``.properties.a``, ``[0]``."""
    return field + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _json_schema(arg: Schema, text: str, _: Observation) -> _Outcome:
    from jsonschema.exceptions import best_match
    from referencing.exceptions import Unresolvable

    found, value, problem = _find_json(text)
    if not found:
        return _Outcome(problem)
    try:
        error = best_match(arg.validator.iter_errors(value))
    except Unresolvable as exc:
        return _Outcome(f"the schema has a $ref that cannot be resolved: {excerpt(str(exc), 120)}")
    except RecursionError:  # a recursive schema and an answer nested deeper than Python goes
        return _Outcome("the answer's JSON is nested too deeply to check against the schema")
    if error is None:
        return _Outcome()
    return _Outcome(
        f"does not match the schema at {error.json_path}: {excerpt(error.message, 120)}"
    )


# min_chars, max_chars, finish_reason, max_latency_ms, max_tokens -------------


def _chars(least: bool) -> Callable[[int, str, Observation], _Outcome]:
    def check(limit: int, text: str, _: Observation) -> _Outcome:
        if (len(text) < limit) if least else (len(text) > limit):
            bound = f"at least {limit} required" if least else f"at most {limit} allowed"
            return _Outcome(f"{_plural(len(text), 'character')}, {bound}")
        return _Outcome()

    return check


def _describe_finish(arg: tuple[str, ...]) -> str:
    return f"finish_reason {arg[0]!r}" if len(arg) == 1 else f"finish_reason one of: {_quoted(arg)}"


def _finish_reason(arg: tuple[str, ...], _text: str, seen: Observation) -> _Outcome:
    reason = seen.finish_reason
    if reason is None:
        return _Outcome("the API reported no finish_reason", "no finish_reason")
    if reason in arg:
        return _Outcome("", f"finish_reason {reason!r}")
    return _Outcome(f"finish_reason was {reason!r}", f"finish_reason {reason!r}")


def _parse_latency(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _wrong(field, "a number of milliseconds", value)
    if value <= 0:
        raise CheckSpecError(field, f"must be more than 0, got {value}")
    return value


def _latency(limit: float, _text: str, seen: Observation) -> _Outcome:
    if seen.latency_ms is None:
        return _Outcome("no latency was recorded", "latency unknown")
    took = f"{_number(seen.latency_ms)} ms"
    if seen.latency_ms > limit:
        return _Outcome(f"took {took}, at most {_number(limit)} allowed", f"latency {took}")
    return _Outcome("", f"latency {took}")


def _tokens(limit: int, _text: str, seen: Observation) -> _Outcome:
    tokens = seen.completion_tokens
    if tokens is None:
        return _Outcome("the API reported no completion tokens", "no usage reported")
    used = _plural(tokens, "completion token")
    return _Outcome(f"{used}, at most {limit} allowed" if tokens > limit else "", used)


# judge -----------------------------------------------------------------------


def _parse_judge(value: Any, field: str) -> Judge:
    if not isinstance(value, Mapping):
        return Judge(_text(value, field, "a rubric (a string) or a mapping with 'rubric'"))
    _options(value, field, ("rubric", "model"), "rubric")
    model = value.get("model")
    return Judge(
        _text(value["rubric"], f"{field}.rubric"),
        None if model is None else _text(model, f"{field}.model"),
    )


def _describe_judge(arg: Judge) -> str:
    model = f" (model {arg.model})" if arg.model else ""
    return f"judge: {excerpt(arg.rubric, 120)}{model}"


def _unevaluated(_arg: Any, _text: str, _: Observation) -> _Outcome:
    raise ValueError("judge checks are evaluated by the engine")


class _Kind(NamedTuple):
    """How one kind of check is parsed, described and evaluated."""

    parse: Callable[[Any, str], Any]
    describe: Callable[[Any], str]
    evaluate: Callable[[Any, str, Observation], _Outcome]


_KINDS: dict[str, _Kind] = {
    "contains": _Kind(_parse_phrases("all"), _describe_phrases(False), _contains),
    "not_contains": _Kind(_parse_phrases("any"), _describe_phrases(True), _not_contains),
    "matches": _Kind(_parse_pattern, lambda arg: f"matches {_slashed(arg)}", _matches),
    "not_matches": _Kind(
        _parse_pattern, lambda arg: f"does not match {_slashed(arg)}", _not_matches
    ),
    "equals": _Kind(_parse_equals, _describe_equals, _equals),
    "is_json": _Kind(_parse_is_json, lambda _: "is JSON", _is_json),
    "json_schema": _Kind(
        _parse_schema,
        lambda arg: f"matches JSON Schema {excerpt(json.dumps(arg.schema), 120)}",
        _json_schema,
    ),
    "min_chars": _Kind(_count, lambda n: f"at least {_plural(n, 'character')}", _chars(True)),
    "max_chars": _Kind(_count, lambda n: f"at most {_plural(n, 'character')}", _chars(False)),
    "finish_reason": _Kind(
        lambda value, field: _texts(value, field, "a string or a list of strings"),
        _describe_finish,
        _finish_reason,
    ),
    "max_latency_ms": _Kind(
        _parse_latency, lambda ms: f"latency at most {_number(ms)} ms", _latency
    ),
    "max_tokens": _Kind(_count, lambda n: f"at most {_plural(n, 'completion token')}", _tokens),
    "judge": _Kind(_parse_judge, _describe_judge, _unevaluated),
}
KINDS: tuple[str, ...] = tuple(_KINDS)
"""Every check's name in YAML, in the order the spec lists them."""
