"""The terminal report of a :class:`~runner.review.diff_model.RunDiff`: what ``mtrun diff`` prints.

Regressions first, then removed, fixed, changed and added conversations,
then a summary line. Every string from a record goes through
:func:`runner.review.view.visible`, so the report is safe to print; answers
that differ are shown as unified diffs cut to :data:`DIFF_LINES` lines.
Turns are numbered from 1, like every other mtrun message.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from runner.review.diff_model import (
    AnswerChange,
    CheckChange,
    ConversationDiff,
    ConversationRef,
    PromptChange,
    RunDiff,
    TokenDelta,
    ToolChange,
    TurnDiff,
)
from runner.review.view import cut, visible
from runner.transcripts.fields import as_text as _text
from runner.transcripts.fields import is_int as _is_int
from runner.transcripts.fields import to_json
from runner.transcripts.status import Status
from runner.words import plural

DIFF_LINES = 200
"""Most lines of one answer's unified diff shown in the text report."""
LINE_CHARS = 1_000
"""Longest line of a diff shown in the text report."""
EXCERPT_CHARS = 300
"""Longest excerpt of a check's expected, seen or message in the text report."""

_RED, _GREEN, _CYAN, _BOLD, _RESET = "\x1b[31m", "\x1b[32m", "\x1b[36m", "\x1b[1m", "\x1b[0m"


def render_text(diff: RunDiff, *, color: bool = False, context: int = 3) -> str:
    """A terminal report: regressions, fixes, other changes, added and removed, then a summary.

    Model output is escaped (control characters become ``\\x1b``-style text),
    so the report is safe to print; ``color`` adds ANSI colors of its own.
    ``context`` is the number of unchanged lines shown around each change.
    """
    if context < 0:
        raise ValueError(f"context must be 0 or more, not {context}")
    lines: list[tuple[str, str]] = []
    _outcome_lines(lines, diff, "regressed", "Regressed", context)
    _ref_lines(lines, "Removed", diff.removed, "-", note=", missing from new: regressions")
    _outcome_lines(lines, diff, "fixed", "Fixed", context)
    _outcome_lines(lines, diff, "changed", "Changed", context)
    _ref_lines(lines, "Added", diff.added, "+")
    if not lines:
        lines.append(("No differences.", ""))
    s = diff.summary
    lines.append(
        (
            f"summary: {s.same} same, {s.changed} changed, {s.regressed} regressed, "
            f"{s.fixed} fixed, {s.added} added, {s.removed} removed",
            _BOLD,
        )
    )
    return "\n".join(f"{style}{text}{_RESET}" if color and style else text for text, style in lines)


def _outcome_lines(
    lines: list[tuple[str, str]], diff: RunDiff, outcome: str, title: str, context: int
) -> None:
    members = [c for c in diff.conversations if c.outcome == outcome]
    if members:
        lines.append((f"{title} ({len(members)})", _BOLD))
        for conversation in members:
            lines.append(("", ""))
            lines.extend(_conversation_lines(conversation, context))
        lines.append(("", ""))


def _ref_lines(
    lines: list[tuple[str, str]],
    title: str,
    refs: Sequence[ConversationRef],
    sign: str,
    *,
    note: str = "",
) -> None:
    if refs:
        lines.append((f"{title} ({len(refs)}{note})", _BOLD))
        lines.extend(
            (f"  {sign} {visible(r.id)} ({visible(r.source)}): {visible(r.status)}", "")
            for r in refs
        )
        lines.append(("", ""))


def _conversation_lines(c: ConversationDiff, context: int) -> Iterator[tuple[str, str]]:
    yield visible(c.id) + (f" ({visible(c.source)})" if c.source else ""), _BOLD
    if c.base_status != c.new_status:
        why = _error_text(c.new_error) if c.new_status != Status.COMPLETED else ""
        yield f"  status: {visible(c.base_status)} -> {visible(c.new_status)}{why}", ""
    if c.base_model != c.new_model:
        yield f"  model: {visible(c.base_model)} -> {visible(c.new_model)}", ""
    labels = {
        "regressed": "check pass -> fail",
        "fixed": "check fail -> pass",
        "added": "check added",
        "removed": "check removed",
    }
    for change in ("regressed", "fixed", "added", "removed"):
        for check in (k for k in c.checks if k.change == change):
            yield f"  {labels[change]}: {_check_text(check)}", ""
            if change == "regressed" and check.seen is not None:
                yield f"    seen: {_excerpt(check.seen)}", ""
    if c.first_divergence is not None:
        where = next(t for t in c.turns if t.index == c.first_divergence)
        why = ", where the prompt changed" if where.prompt is not None else ""
        yield f"  answers diverge at turn {c.first_divergence + 1}{why}", ""
    for turn in c.turns:
        if turn.prompt is not None:
            yield from _prompt_lines(turn, turn.prompt, context)
        if turn.tools is not None:
            yield from _tool_lines(turn, turn.tools)
        if turn.answer is not None:
            yield from _answer_lines(turn, turn.answer, context)
    yield f"  {_numbers_text(c.tokens, c.latency_ms, detailed=True)}", ""


def _prompt_lines(turn: TurnDiff, prompt: PromptChange, context: int) -> Iterator[tuple[str, str]]:
    yield f"  turn {turn.index + 1}: the prompt changed", _BOLD
    yield from _diff_lines(prompt.base, prompt.new, context)


def _tool_lines(turn: TurnDiff, change: ToolChange) -> Iterator[tuple[str, str]]:
    what = "tool calls changed"
    if change.base_steps != change.new_steps:
        what += f" ({change.base_steps} -> {plural(change.new_steps, 'step')} with calls)"
    yield f"  turn {turn.index + 1} step {change.step + 1}: {what}", _BOLD
    for label, calls, style in (
        ("base", change.base_calls, _RED),
        ("new", change.new_calls, _GREEN),
    ):
        if calls is None:
            yield f"    {label}: (no such step)", style
        elif not calls:
            yield f"    {label}: (no calls)", style
        for call in calls or ():
            arguments = (
                call.arguments if isinstance(call.arguments, str) else to_json(call.arguments)
            )
            name = visible(call.name) or "?"
            yield f"    {label}: {name} {visible(cut(arguments, EXCERPT_CHARS))}", style


def _answer_lines(turn: TurnDiff, answer: AnswerChange, context: int) -> Iterator[tuple[str, str]]:
    if answer.base is None:
        what = "answered in new only"
    elif answer.new is None:
        what = "no answer in new"
    else:
        what = f"answer changed, similarity {answer.similarity:.3f}"
        if answer.similarity_method != "chars":
            what += f" ({answer.similarity_method})"
    yield f"  turn {turn.index + 1}: {what}; {_numbers_text(turn.tokens, turn.latency_ms)}", ""
    yield from _diff_lines(answer.base, answer.new, context)


def _diff_lines(base: str | None, new: str | None, context: int) -> Iterator[tuple[str, str]]:
    """A unified diff of two texts, escaped, cut to :data:`DIFF_LINES` lines."""
    diff = list(
        difflib.unified_diff(_split(base), _split(new), "base", "new", n=context, lineterm="")
    )
    for line in diff[:DIFF_LINES]:
        style = ""
        if line.startswith(("---", "+++")):
            style = _BOLD
        elif line.startswith("@@"):
            style = _CYAN
        elif line.startswith("-"):
            style = _RED
        elif line.startswith("+"):
            style = _GREEN
        yield f"    {visible(cut(line, LINE_CHARS), multiline=True)}", style
    if len(diff) > DIFF_LINES:
        yield f"    … {plural(len(diff) - DIFF_LINES, 'more line')}", ""


def _split(text: str | None) -> list[str]:
    """Lines split on newline only, so other separators stay visible once escaped."""
    return [] if text is None else text.split("\n")


def _check_text(check: CheckChange) -> str:
    head = f"turn {check.turn + 1} {visible(check.kind) or 'check'}"
    if check.scope is not None:
        scope = check.scope if isinstance(check.scope, str) else _excerpt(check.scope)
        head += f" ({visible(scope)})"
    if check.expected is not None:
        head += f", expected {_excerpt(check.expected)}"
    if check.change in ("added", "removed"):
        passed = check.new_passed if check.change == "added" else check.base_passed
        head += ", passed" if passed else ", failed"
    return f"{head}: {visible(cut(check.message, EXCERPT_CHARS))}" if check.message else head


def _error_text(error: Mapping[str, Any] | None) -> str:
    if not error:
        return ""
    parts = []
    if _is_int(error.get("turn")):
        parts.append(f"turn {error['turn'] + 1}")
    parts.extend(_text(error.get(key)) for key in ("kind", "message") if error.get(key))
    return f" ({visible(': '.join(parts))})" if parts else ""


def _numbers_text(tokens: TokenDelta, latency_ms: float | None, *, detailed: bool = False) -> str:
    if tokens.total_tokens is None:
        text = "tokens n/a"
    elif detailed:
        text = (
            f"tokens {tokens.total_tokens:+d} (prompt {tokens.prompt_tokens:+d}, "
            f"completion {tokens.completion_tokens:+d})"
        )
    else:
        text = f"tokens {tokens.total_tokens:+d}"
    latency = "n/a" if latency_ms is None else f"{latency_ms:+.1f} ms"
    return f"{text}, latency {latency}"


def _excerpt(value: Any) -> str:
    """A value on one line: strings quoted as JSON, cut to :data:`EXCERPT_CHARS`."""
    return visible(cut(to_json(value), EXCERPT_CHARS))
