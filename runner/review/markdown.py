"""Transcripts as Markdown, to paste into a pull request or an issue: ``mtrun export --format md``.

Every string in a record is untrusted, model output above all, and may hold
Markdown, HTML, backticks, fences, ``@mentions`` or ``#123`` references. None
of it is ever Markdown here:

- message content goes into a fenced code block whose fence is one backtick
  longer than the longest run of backticks in the content (at least three),
  so no line of the content can close it;
- every other string from the record (id, model, source, check excerpts,
  error messages) goes into an inline code span delimited the same way, so
  it cannot add HTML, links, mentions or emphasis;
- the only text outside code is written here: labels, numbers, and the
  title, whose Markdown and HTML characters are escaped.

Control characters, bidi controls and lone surrogates are made visible with
:func:`runner.review.view.visible` as in the terminal, so reading the file with
``cat`` is safe too and no reviewer is shown text reordered by bidi controls.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from runner.review.show import summary_line
from runner.review.view import (
    CallView,
    StepView,
    TurnView,
    call_view,
    calls_of,
    check_name,
    content_text,
    error_text,
    field_text,
    stop_reason,
    turn_extras,
    turn_facts,
    view_of,
    visible,
)
from runner.transcripts.fields import as_list as _list
from runner.transcripts.fields import as_text as _text
from runner.transcripts.status import Status
from runner.transcripts.totals import totals
from runner.words import plural

STATUS_MARKS = {
    Status.COMPLETED: "✅",
    Status.CHECKS_FAILED: "⚠️",
    Status.FAILED: "❌",
    Status.INTERRUPTED: "⏸️",
}
"""The mark shown before each known status."""

_BACKTICKS = re.compile("`+")
_MARKUP = re.compile(r"([\\`*_\[\]#!|~])")
_ROLE_NAME = re.compile(r"[a-z][a-z_]{0,30}")


def render_markdown(records: Iterable[Mapping[str, Any]], *, title: str | None = None) -> str:
    """A Markdown document: an optional title, a summary, then one section per conversation."""
    records = list(records)
    lines: list[str] = []
    if title:
        lines += [f"# {escape_text(title)}", ""]
    lines += [escape_text(summary_line(records)), ""]
    for record in records:
        lines.extend(_conversation(record))
    return "\n".join(lines).rstrip("\n") + "\n"


def fenced(text: str, info: str = "text") -> str:
    """``text`` in a fenced code block no line of it can close."""
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def code(text: str) -> str:
    """``text`` (made one line) as an inline code span it cannot break out of."""
    text = visible(text)
    if not text.strip():
        return "*(empty)*"
    ticks = "`" * (max((len(run) for run in _BACKTICKS.findall(text)), default=0) + 1)
    pad = " " if text[0] in "` " or text[-1] in "` " else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def escape_text(text: str) -> str:
    """``text`` (made one line) as plain Markdown text: punctuation escaped, no HTML."""
    text = _MARKUP.sub(r"\\\1", visible(text))
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _conversation(record: Mapping[str, Any]) -> Iterator[str]:
    status = _text(record.get("status"))
    model, source = record.get("model"), record.get("source")
    counted = totals(record)
    answered, tokens, retries = counted.turns, counted.total_tokens, counted.retries
    facts = [f"{STATUS_MARKS[status]} **{status}**" if status in STATUS_MARKS else code(status)]
    facts += [f"model {code(_text(model))}"] if model else []
    facts += [f"source {code(_text(source))}"] if source else []
    if record.get("group") is not None:
        facts.append(
            f"repeat {code(_text(record.get('repeat')))} of {code(_text(record['group']))}"
        )
    facts.append(f"{plural(answered, 'turn')} answered")
    facts.append(plural(tokens, "token"))
    if retries:
        facts.append(plural(retries, "retry", "retries"))
    yield f"## {code(_text(record.get('id')) or '?')}"
    yield ""
    yield " · ".join(facts)
    yield ""
    prefix, turns = view_of(record)
    for message in prefix:
        history = "" if message.get("role") == "system" else " (history)"
        yield from _message(message, history)
    for turn in turns:
        yield from _turn(turn, _text(model))
    stopped = stop_reason(record)
    if stopped is not None:
        label = status.replace("_", " ").capitalize() if status in STATUS_MARKS else "Stopped"
        mark = STATUS_MARKS.get(status, "❌")
        yield f"> {mark} **{label}{stopped[0]}:** {code(stopped[1])}"
        yield ""


def _turn(view: TurnView, model: str) -> Iterator[str]:
    if view.user is not None:
        yield from _message(view.user, f" · turn {view.number}")
    else:
        yield f"**User** · turn {view.number}: *(message not in the transcript)*"
        yield ""
    for name, text in turn_extras(view.turn):
        yield f"**Assistant** ({code(name)})"
        yield ""
        yield fenced(visible(text, multiline=True))
        yield ""
    for step in view.steps:
        yield from _step(step)
    if view.answer is not None:
        yield from _reasoning(view.reasoning)
        yield from _message(view.answer, "")
    facts = turn_facts(view.turn, model)
    if facts:
        yield f"*Turn {view.number}:* {code(' · '.join(facts))}"
        yield ""
    checks = [c for c in _list(view.turn.get("checks")) if isinstance(c, Mapping)]
    for check in checks:
        expected = f"expected {code(field_text(check.get('expected')))}"
        if check.get("passed") is True:
            yield f"- ✅ {code(check_name(check))} {expected}"
        else:
            message = field_text(check.get("message")) or "failed"
            seen = code(field_text(check.get("seen")))
            yield f"- ❌ {code(check_name(check))} {code(message)}; {expected}, seen {seen}"
    if checks:
        yield ""
    if view.turn.get("error") is not None:
        yield f"> ❌ **Turn {view.number} failed:** {code(error_text(view.turn['error']))}"
        yield ""


def _step(step: StepView) -> Iterator[str]:
    """A step that called tools: reasoning, the calls with their arguments, their results."""
    yield from _reasoning(step.reasoning)
    count = len(step.calls)
    yield f"**Assistant** · step {step.number + 1} · {count} tool call{'' if count == 1 else 's'}"
    yield ""
    text = content_text(step.message.get("content"))
    if text:
        yield fenced(visible(text, multiline=True))
        yield ""
    yield from _calls(step.calls)
    for result in step.results:
        yield f"**Tool** · result of {_call_label(result.name, result.call_id)}"
        yield ""
        if result.content is None or result.content == "":
            yield "*(no content)*" if result.content is None else "*(empty)*"
        else:
            yield fenced(visible(result.content, multiline=True))
        yield ""


def _calls(calls: Sequence[CallView]) -> Iterator[str]:
    """Each tool call as a list item: its name and id, its arguments fenced below."""
    for call in calls:
        yield f"- call {_call_label(call.name, call.call_id)}"
        yield ""
        yield _indented(
            fenced(visible(call.arguments, multiline=True), "json" if call.is_json else "text")
        )
        yield ""


def _call_label(name: str, call_id: str) -> str:
    """A call's name and id as code spans."""
    shown = code(name) if name else "*(no name)*"
    return f"{shown} ({code(call_id)})" if call_id else shown


def _indented(block: str) -> str:
    """A block indented to belong to the list item above it."""
    return "\n".join("  " + line if line else line for line in block.split("\n"))


def _reasoning(fields: Sequence[tuple[str, str]]) -> Iterator[str]:
    """Reasoning as a fenced block labelled with the field it arrived in (never HTML)."""
    for name, text in fields:
        yield f"*Reasoning* ({code(name)})"
        yield ""
        yield fenced(visible(text, multiline=True), "reasoning")
        yield ""


def _message(message: Mapping[str, Any], suffix: str) -> Iterator[str]:
    role = _text(message.get("role"))
    label = f"**{role.capitalize()}**" if _ROLE_NAME.fullmatch(role) else code(role or "?")
    if message.get("name") is not None:
        label += f" ({code(_text(message['name']))})"
    yield label + suffix
    yield ""
    text = content_text(message.get("content"))
    calls = [call_view(c) for c in calls_of(message)]  # a pre-filled tool exchange
    if text is None or text == "":
        yield from [] if calls else ["*(no content)*" if text is None else "*(empty)*", ""]
    else:
        yield fenced(visible(text, multiline=True))
        yield ""
    yield from _calls(calls)
