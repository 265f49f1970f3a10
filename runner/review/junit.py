"""JUnit XML reports of a run, for CI systems that render test results.

GitHub Actions reporters (dorny/test-reporter, mikepenz/action-junit-report),
GitLab (``artifacts:reports:junit``) and Jenkins (the ``junit`` step) read the
same loose "JUnit XML" dialect. The report follows its common core::

    <testsuites name tests failures errors skipped time>
      <testsuite name=SOURCE tests failures errors skipped time timestamp>
        <testcase name=ID classname=SOURCE.DOTTED time>
          <error/> | <failure/>... | <skipped/>     (none when it passed)
          <system-out>compact transcript</system-out>

One ``<testsuite>`` per conversation file (the records' ``source``, in
first-seen order) and one ``<testcase>`` per transcript record; a conversation
run several times (``--repeat``) gives one testcase per run (``greeting#2``).
Given the run's ``batch`` (``--junit`` does), every conversation of it that has
no record gets a testcase too: a run stopped early by ``--budget-tokens`` or an
exhausted quota never started some, and a report that left them out would
look like a smaller, passing batch.

How a record maps to a testcase: at most one ``<error>`` or ``<failure>``
(the Ant/Surefire schema allows one, and most viewers show only the first),
whose ``message`` and text name every failed check; each testcase counted
once in the totals:

- ``failed`` (a turn failed for good): an ``<error>`` typed with the error
  kind; its text adds the attempts and every check that failed before.
  Counted in ``errors``.
- ``interrupted``, or in the batch without a record: an ``<error>`` of type
  ``interrupted`` or ``not_run``, message ``interrupted after N turns: ...``
  or ``not run: ...``. Not ``<skipped>``: CI viewers and gates treat skipped tests as
  harmless, but a conversation that did not run to the end says nothing
  about its answers, and the run's exit code (3 or 130) says so too.
  Counted in ``errors``.
- ``checks_failed``, or any record with a failed check: one ``<failure>``,
  typed with the check's kind (``checks`` when several kinds failed), whose
  message starts with how many checks failed and lists each. Counted in
  ``failures``.
- ``completed`` with no failed check: no child element.
- an unknown status: an ``<error>`` of type ``unknown_status``.

``time`` is the conversation's wall-clock time, ``finished_at -
started_at``, so it includes backoff waits, Retry-After holds and pacing
(a conversation that failed after 52 s of retries takes 52 s, not the 0.15 s
its requests took). Where either is missing or unreadable, or they are out of
order, it is the sum of the latency of every attempt of every turn (the
turn's ``latency_ms`` where its attempts carry none). ``started_at`` is kept
across ``--resume``, so a resumed conversation's time spans the pause between
the runs. Times are rounded to milliseconds per testcase, and suite and run
times are sums of those, so the totals add up exactly.

A suite's ``timestamp`` is the given ``timestamp``, else the earliest
``started_at`` of its records, written in UTC as ``YYYY-MM-DDTHH:MM:SS``
without fraction or zone: the form the strictest readers (the Ant/Surefire
schema) accept.

Model output can hold characters XML 1.0 forbids (control characters,
U+FFFE/U+FFFF), which ElementTree would write as-is; they are removed from
every text and attribute value. Lone surrogates are written as their escape
(``\\ud800``), as in every other renderer. The texts inside the elements
(failed checks, the compact transcript) are :mod:`runner.review.junit_text`.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from runner.review.junit_text import (
    ATTRIBUTE_CHARS,
    EXCERPT_CHARS,
    check_line,
    failed_checks_text,
    transcript,
)
from runner.review.view import cut
from runner.transcripts.atomic import write_atomic
from runner.transcripts.fields import as_list as _list
from runner.transcripts.fields import as_text as _text
from runner.transcripts.fields import escape_surrogates, is_int
from runner.transcripts.status import Status
from runner.transcripts.totals import totals
from runner.words import plural

ATTEMPTS_SHOWN = 10
"""Most attempts of a failed turn listed in its ``<error>`` body."""

_ILLEGAL_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def junit_xml(
    records: Sequence[Mapping[str, Any]],
    *,
    run_name: str = "mtrun",
    timestamp: str | None = None,
    batch: Sequence[tuple[str, str]] = (),
    not_run_reason: str | None = None,
) -> bytes:
    """The JUnit XML report of ``records`` as a UTF-8 document with its declaration.

    ``batch`` is the run's conversations as ``(id, source)``: those without a
    record become ``not run`` errors, saying ``not_run_reason`` (why the run
    stopped) when given.
    """
    suites: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        suites.setdefault(_text(record.get("source")), []).append(record)
    recorded = {_text(record.get("id")) for record in records}
    missing: dict[str, list[str]] = {}
    for conversation_id, source in batch:
        if conversation_id not in recorded:
            missing.setdefault(source, []).append(conversation_id)
            suites.setdefault(source, [])
    reason = not_run_reason or "the run stopped before it started"

    root = ET.Element("testsuites", {"name": _clean(run_name)})
    totals = _Counts()
    for source, members in suites.items():
        counts = _Counts()
        suite = ET.SubElement(root, "testsuite", {"name": _clean(source or run_name)})
        stamp = _timestamp(timestamp) if timestamp is not None else _earliest(members)
        classname = _classname(source) or _clean(run_name)
        for record in members:
            outcome, millis = _testcase(suite, record, classname)
            counts.add(outcome, millis)
        for conversation_id in missing.get(source, ()):
            _not_run(suite, conversation_id, classname, reason)
            counts.add("errors", 0)
        counts.set_on(suite)
        if stamp:
            suite.set("timestamp", stamp)
        totals.merge(counts)
    totals.set_on(root)
    ET.indent(root, space="  ")
    return _DECLARATION + ET.tostring(root, encoding="unicode").encode("utf-8") + b"\n"


def write_junit(path: Path, records: Sequence[Mapping[str, Any]], **kw: Any) -> None:
    """Write the report of ``records`` to ``path`` atomically (see :func:`junit_xml`).

    The document goes to a temporary file in the same folder, which then
    replaces ``path``: a reader never sees half a report.
    """
    write_atomic(
        path,
        junit_xml(records, **kw),
        what="JUnit report",
        hint="check the folder exists and is writable, or choose another --junit path",
    )


class _Counts:
    """Testcase outcomes and time of a suite or of the whole run."""

    def __init__(self) -> None:
        self.by_outcome = {"passed": 0, "failures": 0, "errors": 0, "skipped": 0}
        self.millis = 0

    def add(self, outcome: str, millis: int) -> None:
        self.by_outcome[outcome] += 1
        self.millis += millis

    def merge(self, other: _Counts) -> None:
        for key, value in other.by_outcome.items():
            self.by_outcome[key] += value
        self.millis += other.millis

    def set_on(self, element: ET.Element) -> None:
        element.set("tests", str(sum(self.by_outcome.values())))
        for key in ("failures", "errors", "skipped"):
            element.set(key, str(self.by_outcome[key]))
        element.set("time", _seconds(self.millis))


def _testcase(suite: ET.Element, record: Mapping[str, Any], classname: str) -> tuple[str, int]:
    """Add the testcase of ``record`` to ``suite``; its outcome and time in ms."""
    turns = [t for t in _list(record.get("turns")) if isinstance(t, Mapping)]
    millis = _wall_millis(record)
    if millis is None:
        millis = round(sum(_turn_millis(t) for t in turns))
    case = ET.SubElement(
        suite,
        "testcase",
        {"name": _clean(_text(record.get("id"))), "classname": classname, "time": _seconds(millis)},
    )
    failed_checks = [
        (_turn_number(turn), check)
        for turn in turns
        for check in _list(turn.get("checks"))
        if isinstance(check, Mapping) and check.get("passed") is not True
    ]
    status = _text(record.get("status"))
    error = record.get("error") if isinstance(record.get("error"), Mapping) else None
    checks_text = failed_checks_text(failed_checks)

    if status == Status.FAILED:
        _add_error(case, error or {}, turns, checks_text)
        outcome = "errors"
    elif status == Status.INTERRUPTED:
        answered = totals(record).turns
        reason = _text((error or {}).get("message")) or "the run stopped first"
        message = f"interrupted after {plural(answered, 'turn')}: {reason}"
        body = [message, checks_text] if checks_text else [message]
        _child(case, "error", message=message, type="interrupted").text = _clean("\n\n".join(body))
        outcome = "errors"
    elif status in Status.FINISHED:
        outcome = "failures" if failed_checks or status == Status.CHECKS_FAILED else "passed"
        if failed_checks:
            kinds = {_text(check.get("kind")) or "check" for _, check in failed_checks}
            kind = kinds.pop() if len(kinds) == 1 else "checks"
            summary = "; ".join(check_line(n, c) for n, c in failed_checks)
            if len(failed_checks) > 1:
                summary = f"{plural(len(failed_checks), 'check')} failed: {summary}"
            _child(case, "failure", message=summary, type=kind).text = _clean(checks_text)
        elif status == Status.CHECKS_FAILED:
            _child(case, "failure", message="checks failed", type="checks").text = _clean(
                "the transcript says checks failed but lists no failed check"
            )
    else:
        message = f"unknown status {status!r}"
        _child(case, "error", message=message, type="unknown_status").text = _clean(
            "\n\n".join(part for part in (message, checks_text) if part)
        )
        outcome = "errors"

    ET.SubElement(case, "system-out").text = _clean(transcript(record))
    return outcome, millis


def _not_run(suite: ET.Element, conversation_id: str, classname: str, reason: str) -> None:
    """The testcase of a conversation of the batch that has no record: it never started."""
    case = ET.SubElement(
        suite,
        "testcase",
        {"name": _clean(conversation_id), "classname": classname, "time": "0.000"},
    )
    message = f"not run: {reason}"
    _child(case, "error", message=message, type="not_run").text = _clean(
        f"{message}\n\nthe conversation never started"
    )


def _add_error(
    case: ET.Element, error: Mapping[str, Any], turns: list[Mapping[str, Any]], checks_text: str
) -> None:
    """The ``<error>`` of a conversation whose turn failed for good."""
    index = error.get("turn")
    turn = next((t for t in turns if t.get("index") == index), None)
    if turn is None:
        turn = next((t for t in reversed(turns) if isinstance(t.get("error"), Mapping)), None)
    turn_error = (turn or {}).get("error")
    detail: Mapping[str, Any] = error or (turn_error if isinstance(turn_error, Mapping) else {})
    number = index + 1 if is_int(index) else _turn_number(turn or {})
    kind = _text(detail.get("kind")) or "error"
    message = _text(detail.get("message")) or "the turn failed"
    status = _text(detail.get("status"))
    lines = [f"turn {number} failed: {kind}" + (f" (HTTP {status})" if status else ""), message]
    attempts = [a for a in _list((turn or {}).get("attempts")) if isinstance(a, Mapping)]
    if attempts:
        lines.append("")
        lines.append(f"attempts ({len(attempts)}):")
        for attempt in attempts[-ATTEMPTS_SHOWN:]:
            said = _text(attempt.get("message"))
            lines.append(
                f"  {_text(attempt.get('attempt'))}: {_text(attempt.get('outcome'))}"
                + (f": {cut(said, EXCERPT_CHARS)}" if said else "")
            )
    if checks_text:
        lines += ["", f"before it, {checks_text[0].lower()}{checks_text[1:]}"]
    _child(case, "error", message=f"turn {number}: {message}", type=kind).text = _clean(
        "\n".join(lines)
    )


def _wall_millis(record: Mapping[str, Any]) -> int | None:
    """``finished_at - started_at`` in ms, or None when either is missing or out of order."""
    started = _parse_time(_text(record.get("started_at")))
    finished = _parse_time(_text(record.get("finished_at")))
    if started is None or finished is None or finished < started:
        return None
    return round((finished - started).total_seconds() * 1000)


def _turn_millis(turn: Mapping[str, Any]) -> float:
    """Milliseconds a turn spent waiting for the API."""
    attempts = [a for a in _list(turn.get("attempts")) if isinstance(a, Mapping)]
    latencies = [_as_millis(a.get("latency_ms")) for a in attempts]
    known = [ms for ms in latencies if ms is not None]
    if known:
        return sum(known)
    return _as_millis(turn.get("latency_ms")) or 0.0


def _turn_number(turn: Mapping[str, Any]) -> int:
    """The 1-based turn number users see."""
    index = turn.get("index")
    return index + 1 if isinstance(index, int) and not isinstance(index, bool) else 0


def _earliest(records: Sequence[Mapping[str, Any]]) -> str:
    """The earliest ``started_at`` of ``records`` in the report's timestamp form, or ""."""
    stamps = [_parse_time(_text(r.get("started_at"))) for r in records]
    known = [s for s in stamps if s is not None]
    return _format_time(min(known)) if known else ""


def _timestamp(value: str) -> str:
    """A given timestamp in the report's form; kept as given (cleaned) if it does not parse."""
    parsed = _parse_time(value)
    return _format_time(parsed) if parsed is not None else _clean(value)


def _parse_time(value: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


def _format_time(value: datetime) -> str:
    return value.replace(microsecond=0).isoformat()


def _classname(source: str) -> str:
    """``conversations/greet.yaml`` as ``conversations.greet``."""
    parts = [p for p in re.split(r"[/\\]+", source) if p not in ("", ".", "..")]
    if parts and "." in parts[-1].lstrip("."):
        parts[-1] = parts[-1].rsplit(".", 1)[0]
    return _clean(".".join(parts))


def _child(parent: ET.Element, tag: str, **attributes: str) -> ET.Element:
    """A child element whose attributes are cleaned and kept to one bounded line."""
    return ET.SubElement(
        parent,
        tag,
        {k: _clean(cut(" ".join(v.split()), ATTRIBUTE_CHARS)) for k, v in attributes.items()},
    )


def _clean(text: str) -> str:
    """``text`` without the characters XML 1.0 does not allow; lone surrogates escaped."""
    return _ILLEGAL_XML.sub("", escape_surrogates(text))


def _as_millis(value: Any) -> float | None:
    """``value`` as a non-negative number of milliseconds, or None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf:
        return float(value)
    return None


def _seconds(millis: int) -> str:
    return f"{millis / 1000:.3f}"
