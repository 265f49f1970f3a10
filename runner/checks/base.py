"""What every check kind is made of, and the helpers the kinds share.

A :class:`Kind` parses its argument, describes it, and evaluates an
:class:`Observation` to an :class:`Outcome`; the ``read_*`` helpers read an
argument from spec data, :func:`excerpt` quotes the answer in results.

The kinds themselves live in the modules of their family (``text.py``,
``structured.py``, ``metrics.py``, ``judge.py``); ``kinds.py`` registers them.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

_SPACE = re.compile(r"\s+")


class CheckSpecError(Exception):
    """An ``expect`` value is invalid; ``field`` is the path of the offending value."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


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
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    """Every tool call the model made in this turn, in order, each as the API gave it
    (``{"id", "type", "function": {"name", "arguments"}}``; ``arguments`` is raw text)."""
    tools: tuple[Mapping[str, Any], ...] = ()
    """The tools declared to the model for this turn (OpenAI function definitions)."""


class Outcome(NamedTuple):
    """What went wrong ("" when nothing did), and what was seen.

    ``seen`` None means an excerpt of the answer, around index ``at`` if given.
    """

    message: str = ""
    seen: str | None = None
    at: int | None = None


class Kind(NamedTuple):
    """How one kind of check is parsed, described and evaluated."""

    parse: Callable[[Any, str], Any]
    """Spec argument and its field → the normalised argument; raises :class:`CheckSpecError`."""
    describe: Callable[[Any], str]
    """Normalised argument → what is expected, in words."""
    evaluate: Callable[[Any, str, Observation], Outcome]
    """Argument, answer text and observation → what went wrong, or nothing."""


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


# Reading a kind's argument ---------------------------------------------------


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


def wrong(field: str, expected: str, value: Any) -> CheckSpecError:
    """``expected ..., got ...`` at ``field``."""
    return CheckSpecError(field, f"expected {expected}, got {_got(value)}")


def hint(name: str, allowed: tuple[str, ...]) -> str:
    """``did you mean ...?`` when a close name exists, else the names allowed."""
    close = difflib.get_close_matches(name, allowed, n=1)
    return f"did you mean '{close[0]}'?" if close else f"expected one of: {', '.join(allowed)}"


def read_options(
    value: Mapping[Any, Any], field: str, allowed: tuple[str, ...], required: str | None = None
) -> bool:
    """Check a mapping argument's keys; its ``case_insensitive`` flag (default false)."""
    for key in value:
        if key not in allowed:
            raise CheckSpecError(f"{field}.{key}", f"unknown key; {hint(str(key), allowed)}")
    if required is not None and required not in value:
        raise CheckSpecError(field, f"missing required key '{required}'")
    flag = value.get("case_insensitive", False)
    if not isinstance(flag, bool):
        raise wrong(f"{field}.case_insensitive", "true or false", flag)
    return flag


def read_text(value: Any, field: str, expected: str = "a string", *, empty: bool = False) -> str:
    """A string argument; blank only when ``empty`` allows it."""
    if not isinstance(value, str):
        raise wrong(field, expected, value)
    if not empty and not value.strip():
        raise CheckSpecError(field, "must not be empty")
    return value


def read_texts(value: Any, field: str, expected: str) -> tuple[str, ...]:
    """A non-empty string, or a non-empty list of them."""
    if isinstance(value, str):
        return (read_text(value, field),)
    if not isinstance(value, list):
        raise wrong(field, expected, value)
    if not value:
        raise CheckSpecError(field, "must not be an empty list")
    return tuple(read_text(item, f"{field}[{i}]") for i, item in enumerate(value))


def read_count(value: Any, field: str) -> int:
    """A whole number, 0 or more."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong(field, "a whole number (0 or more)", value)
    if value < 0:
        raise CheckSpecError(field, f"must be 0 or more, got {value}")
    return value


def quoted(values: tuple[str, ...]) -> str:
    """The values as Python literals, comma-separated."""
    return ", ".join(repr(v) for v in values)
