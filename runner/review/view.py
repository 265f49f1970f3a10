"""What every review renderer shares: the one rule for safe text, cutting, and a record's parts.

Every string from a transcript is data, model output above all. Whatever a
renderer prints or writes passes through :func:`visible`, the one "safe to
print" rule of mtrun (``show``, ``diff``, Markdown, and the run's terminal
progress): control characters (ESC included), bidi controls, line
separators, lone surrogates and other invisible format characters become
escapes such as ``\\x1b``; every kind of space and the zero-width joiners of
emoji sequences stay as they are. :func:`cut` shortens long text, saying how
much was left out. The rest reads a record's parts as show and Markdown both
display them (its turns with their messages, facts, errors and checks).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from typing import Any

from runner.transcripts.fields import answer_index as answer_index  # the one rule, for diff
from runner.transcripts.fields import as_list as _list
from runner.transcripts.fields import as_number as _number
from runner.transcripts.fields import as_text as _text
from runner.transcripts.fields import is_int as _is_int
from runner.transcripts.fields import to_json
from runner.words import plural

_LAYOUT = frozenset("\n\t")
_NO_LAYOUT = str.maketrans("", "", "\n\t")
_NOT_ASCII = re.compile("[^\t\n\x20-\x7e]")  # what visible() looks at one by one
_CONTROLS = {
    multiline: {
        code: repr(chr(code))[1:-1]
        for code in (*range(0x20), *range(0x7F, 0xA0))
        if not (multiline and chr(code) in _LAYOUT)
    }
    for multiline in (False, True)
}
_JOINERS = frozenset("\u200c\u200d")
ARGUMENTS_PARSED = 1_000_000
"""Longest argument text parsed to be pretty-printed; longer text is shown as given."""


@dataclass(frozen=True)
class TurnView:
    """One turn of a record with its messages looked up."""

    number: int
    """1-based turn number."""
    turn: Mapping[str, Any]
    """The turn's record."""
    user: Mapping[str, Any] | None
    """Its user message, when ``message_index`` points at one."""
    answer: Mapping[str, Any] | None
    """The assistant message that answered it, if any."""
    steps: tuple[StepView, ...] = ()
    """Its tool exchange: the steps whose answer called tools, in order (none without tools)."""
    reasoning: tuple[tuple[str, str], ...] = ()
    """The answer's reasoning fields as (name, text), not yet escaped (:func:`answer_reasoning`)."""


@dataclass(frozen=True)
class CallView:
    """One tool call of a step, as text a renderer escapes."""

    call_id: str
    """The call's ``id`` (empty when missing)."""
    name: str
    """The function's name (empty when missing)."""
    arguments: str
    """The arguments pretty-printed when they are JSON, else as given."""
    is_json: bool = False
    """Whether ``arguments`` is JSON text."""


@dataclass(frozen=True)
class ResultView:
    """One tool message answering a call."""

    call_id: str
    """Its ``tool_call_id``."""
    name: str
    """The name of the call it answers, if known."""
    content: str | None
    """Its content as text."""


@dataclass(frozen=True)
class StepView:
    """One step of a turn whose answer called tools."""

    number: int
    """0-based step number."""
    message: Mapping[str, Any]
    """The assistant message carrying the calls."""
    calls: tuple[CallView, ...]
    """Its tool calls in order."""
    results: tuple[ResultView, ...]
    """The tool messages that follow it."""
    reasoning: tuple[tuple[str, str], ...]
    """The step's reasoning fields as (name, text), not yet escaped."""


def visible(text: str, *, multiline: bool = False) -> str:
    """``text`` with every character a terminal may act on written as a visible escape.

    With ``multiline`` newlines and tabs are kept (``\\r\\n`` becomes ``\\n``);
    without, they are escaped too, so the result is one line.
    """
    if multiline:
        text = text.replace("\r\n", "\n")
        if text.translate(_NO_LAYOUT).isprintable():
            return text
    elif text.isprintable():
        return text
    text = text.translate(_CONTROLS[multiline])  # the common escapes at C speed
    return _NOT_ASCII.sub(partial(_shown, multiline), text)


def _shown(multiline: bool, match: re.Match[str]) -> str:
    """One character :func:`visible` looks at: itself, or its escape."""
    ch = match.group()
    if (
        ch.isprintable()
        or (multiline and ch in _LAYOUT)
        or ch in _JOINERS
        or unicodedata.category(ch) == "Zs"
    ):
        return ch
    return repr(ch)[1:-1]


def cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]} … ({plural(len(text) - limit, 'more character')})"


def content_text(content: Any) -> str | None:
    """A message's content as text: parts joined by lines, other values as JSON; None stays."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                pieces.append(part["text"])
            elif isinstance(part, Mapping) and isinstance(part.get("image_url"), Mapping):
                url = _text(part["image_url"].get("url"))
                pieces.append(f"[image: {url[:80]}{'…' if len(url) > 80 else ''}]")
            else:
                pieces.append(_json(part))
        return "\n".join(pieces)
    return _json(content)


def view_of(record: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], list[TurnView]]:
    """The messages before the first turn (system prompt, history), and the turns."""
    messages = [
        m if isinstance(m, Mapping) else {"role": "?", "content": m}
        for m in _list(record.get("messages"))
    ]
    turns = [t for t in _list(record.get("turns")) if isinstance(t, Mapping)]
    views: list[TurnView] = []
    first = len(messages)
    for position, turn in enumerate(turns):
        index, at = turn.get("index"), turn.get("message_index")
        number = index + 1 if _is_int(index) and index >= 0 else position + 1
        user = answer = None
        steps: tuple[StepView, ...] = ()
        reasoning: tuple[tuple[str, str], ...] = ()
        if _is_int(at) and 0 <= at < len(messages):
            user, first = messages[at], min(first, at)
            steps = tuple(_steps(turn, messages, at))
            last = answer_index(turn)
            following = messages[last] if last is not None and at < last < len(messages) else {}
            if (
                turn.get("error") is None
                and following.get("role") == "assistant"
                and not calls_of(following)
            ):
                answer, reasoning = following, answer_reasoning(turn)
        views.append(TurnView(number, turn, user, answer, steps, reasoning))
    return messages[:first], views


def calls_of(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A message's tool calls that are objects (anything else in ``tool_calls`` is skipped)."""
    return [c for c in _list(message.get("tool_calls")) if isinstance(c, Mapping)]


def call_view(call: Mapping[str, Any]) -> CallView:
    """One tool call as text: its id, name and arguments (pretty when JSON)."""
    function = call.get("function")
    function = function if isinstance(function, Mapping) else {}
    raw = function.get("arguments")
    shown = arguments_text(raw)
    return CallView(_text(call.get("id")), _text(function.get("name")), shown, shown != raw)


def arguments_text(arguments: Any) -> str:
    """Arguments pretty-printed when they are JSON text; other text as given; values as JSON."""
    if not isinstance(arguments, str):
        return "" if arguments is None else _json(arguments)
    if len(arguments) > ARGUMENTS_PARSED:
        return arguments
    try:
        parsed = json.loads(arguments)
    except (ValueError, RecursionError):
        return arguments
    return _json(parsed) if isinstance(parsed, Mapping | list) else arguments


def tool_steps(turn: Mapping[str, Any], messages: Sequence[Any]) -> list[StepView]:
    """The steps of ``turn`` that called tools, read from a record's raw ``messages``."""
    at = turn.get("message_index")
    if not _is_int(at) or not 0 <= at < len(messages):
        return []
    shown = [m if isinstance(m, Mapping) else {"role": "?", "content": m} for m in messages]
    return list(_steps(turn, shown, at))


def _steps(
    turn: Mapping[str, Any], messages: Sequence[Mapping[str, Any]], at: int
) -> Iterator[StepView]:
    """The turn's steps that called tools; without ``steps``, the answer's calls if it has any."""
    records = [s for s in _list(turn.get("steps")) if isinstance(s, Mapping)]
    if not records:
        records = [{"step": 0, "message_index": at + 1}]
    for position, step in enumerate(records):
        where = step.get("message_index")
        if not _is_int(where) or not at < where < len(messages):
            continue
        message = messages[where]
        calls = calls_of(message)
        if message.get("role") != "assistant" or not calls:
            continue
        views = tuple(call_view(c) for c in calls)
        names = {c.call_id: c.name for c in views}
        results = []
        for reply in messages[where + 1 :]:
            if reply.get("role") != "tool":
                break
            call_id = _text(reply.get("tool_call_id"))
            content = content_text(reply.get("content"))
            results.append(ResultView(call_id, names.get(call_id, ""), content))
        number = step.get("step")
        number = number if _is_int(number) else position
        yield StepView(number, message, views, tuple(results), reasoning_of(step))


def answer_reasoning(turn: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The reasoning of a turn's answer: its ``reasoning``, else (older records) its last step's.

    A transcript written before turns had ``reasoning`` shows the answer's
    reasoning in ``extra``; those fields are not shown twice.
    """
    own = reasoning_of(turn)
    if own:
        return own
    steps = [s for s in _list(turn.get("steps")) if isinstance(s, Mapping)]
    shown = dict(turn_extras(turn))
    return tuple(f for f in reasoning_of(steps[-1]) if shown.get(f[0]) != f[1]) if steps else ()


def reasoning_of(step: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """A step's or turn's non-empty ``reasoning`` fields as (name, text), not yet escaped."""
    reasoning = step.get("reasoning")
    if not isinstance(reasoning, Mapping):
        return ()
    return tuple(
        (_text(key), value if isinstance(value, str) else _json(value))
        for key, value in reasoning.items()
        if value not in (None, "", [], {})
    )


def turn_facts(turn: Mapping[str, Any], model: str | None = None) -> list[str]:
    """Latency, tokens, retries, finish reason (and the answering model if not ``model``)."""
    facts = []
    latency = _number(turn.get("latency_ms"))
    if latency is not None:
        facts.append(f"latency {_ms(latency)}")
    if isinstance(usage := turn.get("usage"), Mapping):
        n = [usage.get(f"{kind}_tokens") for kind in ("prompt", "completion")]
        prompt, completion = (f"{v:,}" if _is_int(v) else "?" for v in n)
        facts.append(f"tokens {prompt} prompt / {completion} completion")
    attempts = [a for a in _list(turn.get("attempts")) if isinstance(a, Mapping)]
    if attempts:
        facts.append(_retries(attempts))
    if turn.get("finish_reason") is not None:
        facts.append(f"finish {visible(_text(turn['finish_reason']))}")
    answered_by = turn.get("model")
    if isinstance(answered_by, str) and model and answered_by != model:
        facts.append(f"answered by {visible(answered_by)}")
    return facts


def _retries(attempts: Sequence[Mapping[str, Any]]) -> str:
    """``no retries`` or, e.g., ``2 retries: http_429 (waited 2.1s), read_timeout``."""
    retried = [  # each step's attempts but its last (all but the last one without steps)
        a for a, after in pairwise(attempts) if a.get("step") == after.get("step")
    ]
    if not retried:
        return "no retries"
    outcomes = []
    for attempt in retried:
        text = visible(_text(attempt.get("outcome")) or "?")
        wait = _number(attempt.get("wait_s"))
        outcomes.append(text if wait is None else f"{text} (waited {wait:.1f}s)")
    return f"{plural(len(retried), 'retry', 'retries')}: {', '.join(outcomes)}"


def error_text(error: Any) -> str:
    """An error record on one line: ``kind (status N): message``."""
    if not isinstance(error, Mapping):
        return visible(_text(error)) or "unknown error"
    head = visible(_text(error.get("kind"))) or "error"
    if _is_int(error.get("status")):
        head += f" (status {error['status']})"
    message = visible(_text(error.get("message")))
    return f"{head}: {message}" if message else head


def check_name(check: Mapping[str, Any]) -> str:
    """A check's kind, with its scope unless that is the turn's own ``expect``."""
    name = visible(_text(check.get("kind"))) or "check"
    scope = _text(check.get("scope"))
    return f"{name} ({visible(scope)})" if scope and scope != "turn" else name


def turn_extras(turn: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The turn's non-empty ``extra`` fields as (name, text), not yet escaped.

    Fields its ``reasoning`` holds with the same value are left out: renderers
    show those as the answer's reasoning (:func:`answer_reasoning`).
    """
    extra = turn.get("extra")
    if not isinstance(extra, Mapping):
        return []
    reasoning = turn.get("reasoning")
    reasoning = reasoning if isinstance(reasoning, Mapping) else {}
    return [
        (_text(key), value if isinstance(value, str) else _json(value))
        for key, value in extra.items()
        if value not in (None, "", [], {}) and not (key in reasoning and reasoning[key] == value)
    ]


def stop_reason(record: Mapping[str, Any]) -> tuple[str, str] | None:
    """Where (`` at turn N`` or empty) and why the conversation failed or stopped, if it did."""
    error = record.get("error")
    if error is None:
        return None
    fields = error if isinstance(error, Mapping) else {}
    where = f" at turn {fields['turn'] + 1}" if _is_int(fields.get("turn")) else ""
    text = error_text(error)
    if fields.get("kind") == record.get("status"):  # not "interrupted: interrupted: ..."
        text = visible(_text(fields.get("message"))) or text
    return where, text


def field_text(value: Any) -> str:
    """A check's ``expected``/``seen``/``message`` on one line (non-strings as JSON)."""
    return visible(value if isinstance(value, str) else _json(value, indent=None))


def _ms(value: float) -> str:
    return (
        f"{value:.1f} ms"
        if value < 10
        else f"{value:.0f} ms"
        if value < 1000
        else f"{value / 1000:.1f} s"
    )


def _json(value: Any, indent: int | None = 2) -> str:
    return to_json(value, indent=indent)
