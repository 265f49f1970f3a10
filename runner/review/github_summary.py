"""The GitHub job summary: Markdown of a run's totals and failures, or of a diff's regressions.

GitHub renders a step's summary file as GitHub-flavoured Markdown, HTML
included, so text from a transcript is never written as Markdown: every
such value is a code span (:func:`code`), whose content GitHub shows as it
is (no links, images, HTML or entities), with control characters and line
breaks made visible and pipes escaped so a table cell stays one cell.
:func:`fit` keeps the summary under the size GitHub accepts for a step,
cutting it at a line with a line saying so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from runner.review.diff_model import RunDiff
from runner.review.github import (
    Location,
    error_message,
    failed_checks,
    failed_turn,
    located,
)
from runner.review.view import cut, visible
from runner.transcripts.fields import as_text
from runner.transcripts.status import Status
from runner.transcripts.totals import totals
from runner.words import plural

SUMMARY_LIMIT = 1024 * 1024
"""Bytes GitHub accepts in one step's summary file (1 MiB); a larger one is dropped whole."""
EXCERPT_CHARS = 120
"""Longest excerpt of what was seen, in a table cell."""
ROWS_SHOWN = 500
"""Most rows of failures in one table; a line counts the rest."""
_TICKS = re.compile("`+")


def code(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` as an inline code span safe in a table cell (empty text: nothing)."""
    shown = visible(cut(text, limit)).replace("|", "\\|")
    if not shown:
        return ""
    fence = "`" * (max((len(m) for m in _TICKS.findall(shown)), default=0) + 1)
    pad = " " if shown[0] in "` " or shown[-1] in "` " else ""
    return f"{fence}{pad}{shown}{pad}{fence}"


def _where(location: Location, turn: int | None) -> str:
    line = location.at(turn)
    return code(f"{location.file}:{line}" if location.file and line else location.file, 200)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows[:ROWS_SHOWN]]
    if len(rows) > ROWS_SHOWN:
        lines += ["", f"… and {plural(len(rows) - ROWS_SHOWN, 'more row')} (see the transcript)."]
    return lines


def run_summary(
    records: Sequence[Mapping[str, Any]],
    locations: Mapping[str, Location],
    *,
    title: str,
    not_started: int = 0,
) -> str:
    """The Markdown summary of a run's records: totals, then a table of what failed."""
    counts = {status: 0 for status in Status.ALL}
    turns = 0
    for record in records:
        status = as_text(record.get("status"))
        counts[status] = counts.get(status, 0) + 1
        turns += totals(record).turns
    parts = [Status.counted(counts[s], s) for s in Status.ALL if counts[s]]
    if not_started:
        parts.append(f"{not_started:,} not started")
    failed = counts[Status.FAILED] + counts[Status.CHECKS_FAILED] + counts[Status.INTERRUPTED]
    mark = "❌" if failed or not_started else "✅"
    lines = [
        f"## {mark} mtrun: {code(title, 200)}",
        "",
        f"**{plural(len(records) + not_started, 'conversation')}**: "
        f"{', '.join(parts) or 'none'} · {plural(turns, 'turn')} answered",
    ]
    rows = _failure_rows(records, locations)
    if rows:
        lines += ["", *_table(("conversation", "where", "turn", "what failed", "seen"), rows)]
    return "\n".join(lines) + "\n"


def _failure_rows(
    records: Sequence[Mapping[str, Any]], locations: Mapping[str, Location]
) -> list[list[str]]:
    rows: list[list[str]] = []
    for record in records:
        where, name = located(record, locations), code(as_text(record.get("id")), 200)
        status = record.get("status")
        if status == Status.CHECKS_FAILED:
            for turn, check in failed_checks(record):
                what = f"{code(as_text(check.get('kind')))}: {code(as_text(check.get('message')))}"
                seen = code(as_text(check.get("seen")))
                rows.append([name, _where(where, turn), str(turn + 1), what, seen])
        elif status in (Status.FAILED, Status.INTERRUPTED):
            stopped = failed_turn(record)
            what = f"{as_text(status)}: {code(error_message(record))}"
            number = str(stopped + 1) if stopped is not None else ""
            rows.append([name, _where(where, stopped), number, what, ""])
    return rows


def diff_summary(diff: RunDiff, locations: Mapping[str, Location], *, title: str) -> str:
    """The Markdown summary of ``mtrun diff``: its counts, then a table of regressions."""
    s = diff.summary
    bad = s.regressed + s.removed
    lines = [
        f"## {'❌' if bad else '✅'} mtrun diff: {code(title, 200)}",
        "",
        f"**{s.regressed} regressed**, {s.removed} removed, {s.fixed} fixed, "
        f"{s.changed} changed, {s.added} added, {s.same} same",
    ]
    rows: list[list[str]] = []
    for conversation in diff.conversations:
        if conversation.outcome != "regressed":
            continue
        where = locations.get(conversation.id) or Location(conversation.source)
        name = code(conversation.id, 200)
        flipped = [c for c in conversation.checks if c.change == "regressed"]
        for check in flipped:
            what = f"{code(check.kind)} regressed: {code(as_text(check.message))}"
            turn = check.turn
            rows.append([name, _where(where, turn), str(turn + 1), what, code(as_text(check.seen))])
        if not flipped:
            error = conversation.new_error or {}
            what = f"{conversation.base_status} → {conversation.new_status}"
            message = code(as_text(error.get("message")))
            rows.append(
                [name, _where(where, None), "", what + (f": {message}" if message else ""), ""]
            )
    for removed in diff.removed:
        where = locations.get(removed.id) or Location(removed.source)
        rows.append(
            [code(removed.id, 200), _where(where, None), "", "missing from the new run", ""]
        )
    if rows:
        lines += ["", *_table(("conversation", "where", "turn", "what", "seen in new"), rows)]
    return "\n".join(lines) + "\n"


def fit(markdown: str, budget: int) -> str:
    """``markdown`` in at most ``budget`` UTF-8 bytes: cut at a line, with a line saying so.

    Empty when not even the note fits (the file already holds nearly 1 MiB).
    """
    data = markdown.encode("utf-8")
    if len(data) <= budget:
        return markdown
    note = (
        f"\n\n_The summary was cut here to stay under GitHub's {SUMMARY_LIMIT // 1024} KiB "
        "per step; the transcript and the JUnit report have everything._\n"
    )
    room = budget - len(note.encode("utf-8"))
    if room < 0:
        return ""
    head = data[:room]
    end = head.rfind(b"\n")
    kept = head[: end if end >= 0 else 0].decode("utf-8", errors="ignore")
    return kept + note
