"""Reviewing a transcript in the terminal: what ``mtrun show`` prints.

Records are read defensively: rendering never raises on a record that has
``id``, ``status`` and ``messages``, whatever optional field is missing. Every
string from a record is data, model output above all, and passes through
:func:`runner.review.view.visible`, the one rule for safe text; content keeps
its newlines and tabs (``\\r\\n`` becomes ``\\n``). The only escape sequences
in the output are the SGR colours added with ``color=True``. What show and
Markdown both read from a record is in :mod:`runner.review.view`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import partial
from itertools import chain
from typing import Any

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

FAILED_STATUSES = frozenset({Status.FAILED, Status.CHECKS_FAILED, Status.INTERRUPTED})
"""Statuses ``--failed`` selects (besides records with a failed check)."""

INDENT, CONTINUATION = "    ", "  ↪ "  # content; the rest of a code line cut to fit
MIN_TEXT_WIDTH = 20  # the narrowest column content is wrapped to, whatever ``width``

_BOLD, _DIM, _GREEN, _ALARM, _WARN, _TOOL = "1", "2", "32", "1;31", "1;33", "1;34"
_STATUS = {
    Status.COMPLETED: "1;32",
    Status.CHECKS_FAILED: _WARN,
    Status.INTERRUPTED: _WARN,
    Status.FAILED: _ALARM,
}
_ROLE_STYLE = {"user": "1;36", "assistant": "1;35", "tool": _TOOL}
_Paint = Callable[[str, str], str]
_LIST_ITEM = re.compile(r"\s*(?:(?:[-*+]|\d{1,3}[.)])\s+)?")
_SPACES = frozenset("\t\n\x0b\x0c\r ")  # what textwrap splits words at
_WORDS = re.compile("([\t\n\x0b\x0c\r ]+)")


@dataclass(frozen=True)
class Selection:
    """Which conversations (and which turn) ``mtrun show`` displays."""

    ids: tuple[str, ...] = ()
    """Globs (fnmatch, case-sensitive) matched against the id or the ``--repeat`` group."""
    statuses: tuple[str, ...] = ()
    """Keep only these statuses; empty keeps all."""
    failed_only: bool = False
    """Keep only failed, checks_failed or interrupted records, or any with a failed check."""
    turn: int | None = None
    """1-based turn number: keep only records that have this turn (and show only it)."""


def select(records: Iterable[Mapping[str, Any]], selection: Selection) -> list[Mapping[str, Any]]:
    """The records ``selection`` keeps, in their order."""
    _check_turn(selection.turn)
    return [record for record in records if _selected(record, selection)]


def render_records(
    records: Iterable[Mapping[str, Any]], *, color: bool, width: int = 100, turn: int | None = None
) -> Iterator[str]:
    """Lines (without newlines) showing each record, produced lazily for a pager."""
    _check_turn(turn)
    paint = partial(_paint, color)
    return chain.from_iterable(
        _conversation(r, paint, width, turn, first=n == 0) for n, r in enumerate(records)
    )


def summary_line(records: Sequence[Mapping[str, Any]]) -> str:
    """One line of counts: conversations by status, answered turns and tokens."""
    counts: dict[str, int] = {}
    turns = tokens = 0
    for record in records:
        status = _text(record.get("status"))
        counts[status] = counts.get(status, 0) + 1
        counted = totals(record)
        turns += counted.turns
        tokens += counted.total_tokens
    known = [s for s in Status.ALL if s in counts]
    order = known + sorted(s for s in counts if s not in Status.ALL)
    by_status = ", ".join(f"{counts[s]:,} {visible(s) or '(no status)'}" for s in order)
    head = plural(len(records), "conversation")
    head += f": {by_status}" if by_status else ""
    return f"{head}; {plural(turns, 'turn')}; {plural(tokens, 'token')}"


def _paint(color: bool, text: str, style: str) -> str:
    return f"\x1b[{style}m{text}\x1b[0m" if color and style and text else text


def _conversation(
    record: Mapping[str, Any], paint: _Paint, width: int, only: int | None, *, first: bool
) -> Iterator[str]:
    if not first:
        yield ""
    status = _text(record.get("status"))
    model = _text(record.get("model"))
    head = [paint(visible(_text(record.get("id"))) or "?", _BOLD)]
    head.append(paint(visible(status) or "(no status)", _STATUS.get(status, "")))
    if model:
        head.append(f"model {visible(model)}")
    if record.get("source"):
        head.append(f"source {visible(_text(record['source']))}")
    if record.get("group") is not None:
        repeat, group = visible(_text(record.get("repeat"))), visible(_text(record["group"]))
        head.append(f"repeat {repeat} of {group}")
    yield "━━ " + " · ".join(head)
    counted = totals(record)
    answered, tokens, retries = counted.turns, counted.total_tokens, counted.retries
    stats = [f"{plural(answered, 'turn')} answered", plural(tokens, "token")]
    stats.append(plural(retries, "retry", "retries"))
    stats += [visible(_text(record[k])) for k in ("base_url", "started_at") if record.get(k)]
    yield paint("   " + " · ".join(stats), _DIM)
    prefix, turns = view_of(record)
    for message in prefix if only is None else ():
        yield ""
        history = "" if message.get("role") == "system" else " · history"
        yield from _message(message, paint, width, history)
    if only is not None:
        turns = [t for t in turns if t.number == only]
    if not turns and only is not None:
        yield ""
        yield paint(f"{INDENT}(no turn {only} in this conversation)", _DIM)
    for turn in turns:
        yield ""
        yield from _turn(turn, model, paint, width)
    stopped = stop_reason(record) if only is None else None
    if stopped is not None:
        style = _WARN if status == Status.INTERRUPTED else _ALARM
        yield ""
        yield paint(f"✗ {visible(status) or 'error'}{stopped[0]}: {stopped[1]}", style)


def _turn(view: TurnView, model: str, paint: _Paint, width: int) -> Iterator[str]:
    turn = view.turn
    if view.user is not None:
        yield from _message(view.user, paint, width, f" · turn {view.number}")
    else:
        yield paint(f"▌ user · turn {view.number}", _ROLE_STYLE["user"])
        yield paint(f"{INDENT}(message not in the transcript)", _DIM)
    for name, text in turn_extras(turn):
        yield ""
        yield from _block(paint(f"▌ assistant · {visible(name)}", _DIM), text, paint, width)
    for step in view.steps:
        yield from _step(step, paint, width)
    if view.answer is not None:
        yield from _reasoning(view.reasoning, paint, width)
        yield ""
        yield from _message(view.answer, paint, width, "")
    yield from (paint(line, _DIM) for line in _facts(turn_facts(turn, model), width))
    for check in _list(turn.get("checks")):
        if isinstance(check, Mapping):
            yield from _check(check, paint, width)
    if turn.get("error") is not None:
        failed = f"turn {view.number} failed: {error_text(turn['error'])}"
        yield from (paint(line, _ALARM) for line in _field("  ✗ ", failed, width))


def _step(step: StepView, paint: _Paint, width: int) -> Iterator[str]:
    """A step that called tools: its reasoning, its calls with their arguments, their results."""
    yield from _reasoning(step.reasoning, paint, width)
    yield ""
    count = len(step.calls)
    label = f"▌ assistant · step {step.number + 1} · {count} tool call{'' if count == 1 else 's'}"
    yield paint(label, _ROLE_STYLE["assistant"])
    text = content_text(step.message.get("content"))
    if text:
        yield from _wrap(visible(text, multiline=True), width)
    yield from _calls(step.calls, width)
    for result in step.results:
        yield ""
        label = f"▌ tool · {_call_label(result.name, result.call_id)}"
        yield from _block(paint(label, _TOOL), result.content, paint, width)


def _calls(calls: Sequence[CallView], width: int) -> Iterator[str]:
    """Each tool call: its name and id, then its arguments (pretty when JSON)."""
    for call in calls:
        yield f"  → {_call_label(call.name, call.call_id)}"
        if call.arguments:
            yield from _wrap(visible(call.arguments, multiline=True), width)


def _call_label(name: str, call_id: str) -> str:
    """``name (call id)`` made visible; ``?`` for a missing name."""
    shown = visible(name) or "?"
    return f"{shown} ({visible(call_id)})" if call_id else shown


def _reasoning(fields: Sequence[tuple[str, str]], paint: _Paint, width: int) -> Iterator[str]:
    """Reasoning fields as dimmed blocks labelled with the field they arrived in."""
    for name, text in fields:
        yield ""
        yield paint(f"▌ reasoning · {visible(name)}", _DIM)
        yield from (paint(line, _DIM) for line in _wrap(visible(text, multiline=True), width))


def _check(check: Mapping[str, Any], paint: _Paint, width: int) -> Iterator[str]:
    expected = field_text(check.get("expected"))
    if check.get("passed") is True:
        lines = _field("  ✓ PASS ", f"{check_name(check)}: {expected}", width)
        yield lines[0].replace("✓ PASS", paint("✓ PASS", _GREEN), 1)
        yield from lines[1:]
        return
    message = field_text(check.get("message")) or "failed"
    for line in _field("  ✗ FAIL ", f"{check_name(check)}: {message}", width):
        yield paint(line, _ALARM)
    yield from _field("      expected: ", expected, width)
    yield from _field("      seen:     ", field_text(check.get("seen")), width)


def _field(label: str, text: str, width: int) -> list[str]:
    room, hang = max(width, len(label) + MIN_TEXT_WIDTH), " " * len(label)
    return wrap(text, room, initial=label, subsequent=hang) or [label.rstrip()]


def _facts(facts: list[str], width: int) -> list[str]:
    """Facts joined by `` · ``, a line broken only between two facts."""
    lines = ["  » " + facts[0]] if facts else []
    for fact in facts[1:]:
        if len(lines[-1]) + 3 + len(fact) <= width:
            lines[-1] += " · " + fact
        else:
            lines.append(INDENT + fact)
    return lines


def _message(message: Mapping[str, Any], paint: _Paint, width: int, suffix: str) -> Iterator[str]:
    role = _text(message.get("role"))
    label = f"▌ {visible(role) or '?'}"
    if message.get("name") is not None:
        label += f" ({visible(_text(message['name']))})"
    label = paint(label + suffix, _ROLE_STYLE.get(role, _BOLD))
    calls = [call_view(c) for c in calls_of(message)]  # a pre-filled tool exchange
    text = content_text(message.get("content"))
    yield from [label] if calls and not text else _block(label, text, paint, width)
    yield from _calls(calls, width)


def _block(label: str, text: str | None, paint: _Paint, width: int) -> Iterator[str]:
    yield label
    if not text:
        yield paint(INDENT + ("(no content)" if text is None else "(empty)"), _DIM)
        return
    yield from _wrap(visible(text, multiline=True), width)


def _wrap(text: str, width: int) -> Iterator[str]:
    """Content lines indented; prose wrapped at words, code lines only cut when too long."""
    room = max(width - len(INDENT), MIN_TEXT_WIDTH)
    in_code = False
    for line in text.split("\n"):
        fence = line.lstrip().startswith(("```", "~~~"))
        in_code ^= fence
        wide = line.expandtabs(8)
        if not line:
            yield ""
        elif len(wide) <= room:
            yield INDENT + line
        elif in_code or fence:
            for start in range(0, len(wide), room):
                yield (INDENT if start == 0 else CONTINUATION) + wide[start : start + room]
        else:
            lead = _LIST_ITEM.match(wide)
            hang = lead.end() if lead and lead.end() <= room // 2 else 0
            pieces = wrap(wide, room, subsequent=" " * hang)
            yield from (INDENT + piece for piece in pieces or [""])


def wrap(text: str, width: int, *, initial: str = "", subsequent: str = "") -> list[str]:
    """``text`` filled into lines of at most ``width``, in time linear in its length.

    The lines :func:`textwrap.wrap` gives with ``break_on_hyphens=False`` for
    text without newlines or tabs: words split at ASCII whitespace, which is
    kept between words and dropped at line ends and at the start of every
    line but the first; a word longer than a line is cut to fill it.
    textwrap copies the rest of an over-long word for every line it cuts
    from it, so one 30 MB line took minutes; here a line is an index range
    into ``text``, and each chunk is visited a bounded number of times.
    """
    lengths = [n for n in map(len, _WORDS.split(text)) if n]  # words and runs of spaces
    lines: list[str] = []
    count, n, position = len(lengths), 0, 0  # chunks; the next one, where its unread part starts
    left = lengths[0] if lengths else 0  # what is unread of chunk n
    while n < count:
        indent = subsequent if lines else initial
        room = width - len(indent)
        if lines and text[position] in _SPACES:  # leading whitespace goes
            position, n = position + left, n + 1
            left = lengths[n] if n < count else 0
            continue
        start, used, last = position, 0, -1  # last: where the line's last piece starts
        while n < count and used + left <= room:
            last, used, position, n = position, used + left, position + left, n + 1
            left = lengths[n] if n < count else 0
        if n < count and left > room:  # an over-long chunk: cut it to fill the line
            take = 1 if room < 1 else room - used
            last = position if take else len(text)  # textwrap keeps a line it filled exactly
            position, left = position + take, left - take
        end = last if 0 <= last < position and text[last] in _SPACES else position
        if end > start:
            lines.append(indent + text[start:end])
    return lines


def _check_turn(turn: int | None) -> None:
    if turn is not None and turn < 1:
        raise ValueError(f"turn numbers start at 1, not {turn}")


def _selected(record: Mapping[str, Any], selection: Selection) -> bool:
    status = _text(record.get("status"))
    names = {_text(record.get("id")), _text(record.get("group") or record.get("id"))}
    turns = view_of(record)[1]
    failed = status in FAILED_STATUSES or any(
        isinstance(c, Mapping) and c.get("passed") is not True
        for t in turns
        for c in _list(t.turn.get("checks"))
    )
    return (
        (not selection.ids or any(fnmatchcase(n, p) for n in names for p in selection.ids))
        and (not selection.statuses or status in selection.statuses)
        and (not selection.failed_only or failed)
        and (selection.turn is None or any(t.number == selection.turn for t in turns))
    )
