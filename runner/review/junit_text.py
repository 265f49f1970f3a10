"""The texts inside a JUnit testcase: failed checks, and the compact transcript of ``<system-out>``.

Plain text, bounded in size (each excerpt cut with :func:`runner.review.view.cut`);
:mod:`runner.review.junit` places it in elements and removes what XML forbids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from runner.review.view import CallView, call_view, calls_of, cut
from runner.transcripts.fields import as_list as _list
from runner.transcripts.fields import as_text as _text
from runner.transcripts.fields import is_int, to_json
from runner.words import plural

EXCERPT_CHARS = 500
"""Longest excerpt of one message in ``<system-out>``."""
SEEN_CHARS = 2000
"""Longest excerpt of a check's ``seen`` text in a failure's body."""
ATTRIBUTE_CHARS = 1000
"""Longest ``message`` attribute; the full text is in the element's body."""
SYSTEM_OUT_CHARS = 20_000
"""Rough bound of one testcase's ``<system-out>``."""


def failed_checks_text(failed_checks: Sequence[tuple[int, Mapping[str, Any]]]) -> str:
    """Every failed check, counted, for the body of the testcase's one element; or ""."""
    if not failed_checks:
        return ""
    count = len(failed_checks)
    head = f"{plural(count, 'check')} failed:"
    return "\n\n".join([head, *(check_body(n, c) for n, c in failed_checks)])


def check_line(number: int, check: Mapping[str, Any]) -> str:
    """One failed check on one line: ``turn N: kind: message``."""
    kind = _text(check.get("kind")) or "check"
    return f"turn {number}: {kind}: {_text(check.get('message')) or 'failed'}"


def check_body(number: int, check: Mapping[str, Any]) -> str:
    """The readable text of one failed check."""
    scope = _text(check.get("scope"))
    kind = _text(check.get("kind")) or "check"
    head = f"turn {number}: {kind}" + (f" (scope: {scope})" if scope else "")
    lines = [head]
    for label, key, limit in (
        ("message", "message", ATTRIBUTE_CHARS),
        ("expected", "expected", ATTRIBUTE_CHARS),
        ("seen", "seen", SEEN_CHARS),
    ):
        value = _text(check.get(key))
        if value:
            lines.append(indented(f"{label + ':':<10}{cut(value, limit)}", 10))
    return "\n".join(lines)


def transcript(record: Mapping[str, Any]) -> str:
    (
        """A compact, bounded transcript: a header line, then one ``role: content`` per message.

    An assistant message's tool calls follow it, one ``calls NAME ARGUMENTS [ID]``
    line each; a tool message names the call it answers.
    """
        ""
    )
    head = f"conversation {_text(record.get('id'))}"
    if record.get("repeat") is not None:
        head += f" (repeat {_text(record.get('repeat'))} of {_text(record.get('group'))})"
    if record.get("source"):
        head += f" from {_text(record.get('source'))}"
    if record.get("model"):
        head += f", model {_text(record.get('model'))}"
    head += f", status {_text(record.get('status'))}"
    lines = [head]
    size = len(head)
    messages = _list(record.get("messages"))
    steps, names = _steps_by_message(record), _call_names(messages)
    for shown, message in enumerate(messages):
        if size > SYSTEM_OUT_CHARS:
            more = plural(len(messages) - shown, "more message")
            lines.append(f"… {more}; see the transcript file")
            break
        if not isinstance(message, Mapping):
            continue
        line = indented(_message_line(message, steps.get(shown), names), 2)
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


def _message_line(message: Mapping[str, Any], step: int | None, names: dict[str, str]) -> str:
    """One message: ``role: content``; an assistant's tool calls and a tool's call on their own."""
    role = _text(message.get("role")) or "?"
    text = cut(content_of(message.get("content")), EXCERPT_CHARS)
    calls = calls_of(message)
    if role == "tool":
        call_id = _text(message.get("tool_call_id"))
        name = names.get(call_id, "")
        return f"tool {name + ' ' if name else ''}[{call_id}]: {text}"
    if not calls:
        return f"{role}: {text}"
    head = f"{role}{'' if step is None else f' (step {step + 1})'}: {text}"
    return "\n".join([head, *(f"  calls {_call_line(call_view(c), c)}" for c in calls)])


def _call_line(call: CallView, raw: Mapping[str, Any]) -> str:
    function = raw.get("function")
    arguments = function.get("arguments") if isinstance(function, Mapping) else None
    shown = arguments if isinstance(arguments, str) else to_json(arguments)
    return f"{call.name or '?'} {cut(shown, EXCERPT_CHARS)} [{call.call_id}]"


def _steps_by_message(record: Mapping[str, Any]) -> dict[int, int]:
    """Which step each step's assistant message is (by position in ``messages``)."""
    out: dict[int, int] = {}
    for turn in _list(record.get("turns")):
        steps = _list(turn.get("steps")) if isinstance(turn, Mapping) else []
        for position, step in enumerate(steps):
            where = step.get("message_index") if isinstance(step, Mapping) else None
            if is_int(where):
                number = step.get("step")
                out[where] = number if is_int(number) else position
    return out


def _call_names(messages: Sequence[Any]) -> dict[str, str]:
    """Tool names by call id, from every assistant message's calls."""
    names: dict[str, str] = {}
    for message in messages:
        if isinstance(message, Mapping):
            for c in calls_of(message):
                view = call_view(c)
                names.setdefault(view.call_id, view.name)
    return names


def content_of(content: Any) -> str:
    """The text of a message's content: a string, content parts, or none."""
    if content is None:
        return "(no content)"
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, Mapping):
                parts.append(f"[{_text(part.get('type')) or 'part'}]")
        return " ".join(parts)
    return _text(content)


def indented(text: str, width: int) -> str:
    """Continuation lines of ``text`` indented by ``width`` spaces."""
    return text.replace("\r\n", "\n").replace("\n", "\n" + " " * width)
