"""GitHub Actions workflow commands: annotations of failures, and the one escaping rule.

A line a step prints is read by the runner as a command when, after leading
whitespace, it starts with ``::`` (``::error file=...::message``), and in the
legacy form when it holds ``##[`` anywhere. Model output is data, so every
string here goes through one of three functions: :func:`escape_data` for a
command's message, :func:`escape_property` for ``file``, ``title`` and the
like, and :func:`neutralise` for any other line printed while annotations
are on (a line of the diff, a progress line), which can then never be read
as a command. Everything here is a pure function from plain records to
strings; the CLI decides when to print and where.

GitHub shows at most :data:`ANNOTATIONS_SHOWN` annotations of each level per
step, so :func:`command_lines` prints that many of each and then one notice
counting the rest.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runner.review.diff_model import RunDiff
from runner.review.view import visible
from runner.transcripts.fields import as_list, as_text, is_int
from runner.transcripts.status import Status

ANNOTATIONS_SHOWN = 10
"""Annotations of one level (error, warning, notice) GitHub shows for a step."""
MESSAGE_CHARS = 2_000
"""Longest message of one annotation; the transcript has the rest."""
_DATA = {"%": "%25", "\r": "%0D", "\n": "%0A"}
_PROPERTY = {**_DATA, ":": "%3A", ",": "%2C"}


def escape_data(text: str) -> str:
    """A command's message as GitHub reads it back: ``%``, CR and LF percent-encoded."""
    return "".join(_DATA.get(ch, ch) for ch in text)


def escape_property(text: str) -> str:
    """A command property's value: as :func:`escape_data`, and ``:`` and ``,`` too."""
    return "".join(_PROPERTY.get(ch, ch) for ch in text)


def _ignorable(ch: str) -> bool:
    """Whether a comparison of text may skip ``ch``: format, control, line and paragraph marks.

    The runner compares with .NET's culture-sensitive rules, which may pass
    over invisible characters; counting more of them as skippable is safe.
    """
    return unicodedata.category(ch) in ("Cf", "Cc", "Zl", "Zp") and ch not in "\r\n"


def neutralise(line: str) -> str:
    """One output line that the runner cannot read as a workflow command.

    A line whose first visible character is ``:`` gets a backslash in front;
    every ``[`` that follows a ``#`` (invisible characters between them
    included) gets a backslash before it, which breaks the legacy ``##[``.
    """
    first = next((ch for ch in line if not (ch.isspace() or _ignorable(ch))), "")
    if first == ":":
        line = "\\" + line
    if "[" not in line or "#" not in line:
        return line
    out: list[str] = []
    previous = ""
    for ch in line:
        if ch == "[" and previous == "#":
            out.append("\\")
        out.append(ch)
        if not _ignorable(ch):
            previous = ch
    return "".join(out)


_LINES = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


def runner_lines(text: str) -> list[str]:
    """``text`` cut into lines as the runner reads them (at CR, LF or CRLF), ends kept."""
    return _LINES.findall(text)


def neutralise_text(text: str) -> str:
    """Every line of ``text`` neutralised (see :func:`neutralise`); line ends kept."""
    return "".join(neutralise(line) for line in runner_lines(text))


@dataclass(frozen=True, slots=True)
class Location:
    """Where a conversation is written: its file as GitHub names it, and its lines."""

    file: str
    """The file, relative to the workspace (empty when unknown)."""
    line: int = 0
    """1-based line where the conversation starts (0 when unknown)."""
    turn_lines: tuple[int, ...] = ()
    """1-based line of each turn, in order."""

    def at(self, turn: int | None) -> int:
        """The line of turn ``turn`` (0-based), else of the conversation (0: unknown)."""
        if turn is not None and 0 <= turn < len(self.turn_lines) and self.turn_lines[turn]:
            return self.turn_lines[turn]
        return self.line


@dataclass(frozen=True, slots=True)
class Annotation:
    """One annotation: a level, where it points, a title and a message (all plain text)."""

    level: str
    """``error``, ``warning`` or ``notice``."""
    title: str
    """A short title, shown in bold."""
    message: str
    """What went wrong; may span lines."""
    file: str = ""
    """The file it points at (empty: none)."""
    line: int = 0
    """The line in that file (0: none)."""
    column: int = 0
    """The column on that line (0: none)."""


def command(annotation: Annotation) -> str:
    """The workflow command line for ``annotation``, every part escaped."""
    props = []
    if annotation.file:
        props.append(f"file={escape_property(annotation.file)}")
        if annotation.line > 0:
            props.append(f"line={annotation.line}")
            if annotation.column > 0:
                props.append(f"col={annotation.column}")
    props.append(f"title={escape_property(_clean(annotation.title, 200))}")
    message = escape_data(_clean(annotation.message, MESSAGE_CHARS, multiline=True))
    return f"::{annotation.level} {','.join(props)}::{message}"


def command_lines(annotations: Iterable[Annotation]) -> list[str]:
    """The first :data:`ANNOTATIONS_SHOWN` annotations of each level, then a count of the rest."""
    shown: dict[str, int] = {}
    lines: list[str] = []
    left_out = 0
    for annotation in annotations:
        count = shown.get(annotation.level, 0)
        if count >= ANNOTATIONS_SHOWN:
            left_out += 1
            continue
        shown[annotation.level] = count + 1
        lines.append(command(annotation))
    if left_out:
        more = Annotation(
            "notice",
            "mtrun",
            f"{left_out} more not annotated (GitHub shows {ANNOTATIONS_SHOWN} of each kind "
            "per step); the job summary and the transcript list them all",
        )
        lines.append(command(more))
    return lines


def _clean(text: str, limit: int, *, multiline: bool = False) -> str:
    """Text with control characters made visible, cut to ``limit`` characters."""
    shown = visible(text, multiline=multiline)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def input_annotation(file: str, line: int, column: int, message: str) -> Annotation:
    """An error at a problem of a conversation file (``message``: the whole one-line error)."""
    return Annotation("error", "mtrun: invalid conversation file", message, file, line, column)


def located(record: Mapping[str, Any], locations: Mapping[str, Location]) -> Location:
    """Where ``record``'s conversation is written: from ``locations``, else its ``source``."""
    for key in (record.get("id"), record.get("group"), record.get("variant_of")):
        if isinstance(key, str) and key in locations:
            return locations[key]
    return Location(as_text(record.get("source")))


def run_annotations(
    records: Sequence[Mapping[str, Any]], locations: Mapping[str, Location]
) -> list[Annotation]:
    """An error for each failed check and each failed conversation, a warning if interrupted."""
    found: list[Annotation] = []
    for record in records:
        where = located(record, locations)
        name = as_text(record.get("id"))
        status = record.get("status")
        if status == Status.CHECKS_FAILED:
            for turn, check in failed_checks(record):
                found.append(
                    Annotation(
                        "error",
                        f"{name}: turn {turn + 1}: {as_text(check.get('kind'))} failed",
                        check_message(check),
                        where.file,
                        where.at(turn),
                    )
                )
        elif status in (Status.FAILED, Status.INTERRUPTED):
            stopped = failed_turn(record)
            word = "failed" if status == Status.FAILED else "interrupted"
            found.append(
                Annotation(
                    "error" if status == Status.FAILED else "warning",
                    f"{name}: {word}" + (f" at turn {stopped + 1}" if stopped is not None else ""),
                    error_message(record),
                    where.file,
                    where.at(stopped),
                )
            )
    return found


def failed_checks(record: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    """(0-based turn, check) of every check that failed in ``record``."""
    found = []
    for position, turn in enumerate(as_list(record.get("turns"))):
        if not isinstance(turn, Mapping):
            continue
        index = turn.get("index")
        number = index if is_int(index) and index >= 0 else position
        for check in as_list(turn.get("checks")):
            if isinstance(check, Mapping) and check.get("passed") is False:
                found.append((number, check))
    return found


def check_message(check: Mapping[str, Any]) -> str:
    """A failed check in three lines: what went wrong, what was expected, what was seen."""
    return (
        f"{as_text(check.get('message'))}\n"
        f"expected: {as_text(check.get('expected'))}\n"
        f"seen: {as_text(check.get('seen'))}"
    )


def failed_turn(record: Mapping[str, Any]) -> int | None:
    """The 0-based turn a failed or interrupted record stopped at, when it says."""
    error = record.get("error")
    if isinstance(error, Mapping) and is_int(error.get("turn")):
        return int(error["turn"])
    turns = [t for t in as_list(record.get("turns")) if isinstance(t, Mapping)]
    if turns and is_int(turns[-1].get("index")):
        return int(turns[-1]["index"]) + (0 if turns[-1].get("error") else 1)
    return None


def error_message(record: Mapping[str, Any]) -> str:
    """A failed or interrupted record's error message (its kind when it has none)."""
    error = record.get("error")
    if not isinstance(error, Mapping):
        return as_text(record.get("status"))
    return as_text(error.get("message")) or as_text(error.get("kind"))


def diff_annotations(diff: RunDiff, locations: Mapping[str, Location]) -> list[Annotation]:
    """An error for each regression ``mtrun diff`` found: a check flipped, a status fell."""
    found: list[Annotation] = []
    for conversation in diff.conversations:
        if conversation.outcome != "regressed":
            continue
        where = locations.get(conversation.id) or Location(conversation.source)
        flipped = [c for c in conversation.checks if c.change == "regressed"]
        for check in flipped:
            found.append(
                Annotation(
                    "error",
                    f"{conversation.id}: turn {check.turn + 1}: {check.kind} regressed",
                    f"{as_text(check.message)}\nexpected: {as_text(check.expected)}\n"
                    f"seen: {as_text(check.seen)}",
                    where.file,
                    where.at(check.turn),
                )
            )
        if not flipped:
            turn = _error_turn(conversation.new_error)
            message = as_text((conversation.new_error or {}).get("message"))
            found.append(
                Annotation(
                    "error",
                    f"{conversation.id}: {conversation.base_status} -> {conversation.new_status}",
                    f"was {conversation.base_status}, now {conversation.new_status}"
                    + (f": {message}" if message else ""),
                    where.file,
                    where.at(turn),
                )
            )
    for removed in diff.removed:
        where = locations.get(removed.id) or Location(removed.source)
        found.append(
            Annotation(
                "error",
                f"{removed.id}: missing from the new run",
                f"in the base run ({removed.status}), not in the new one",
                where.file,
                where.line,
            )
        )
    return found


def _error_turn(error: Mapping[str, Any] | None) -> int | None:
    """The 0-based turn an error names, if it names one."""
    turn = (error or {}).get("turn")
    return int(turn) if is_int(turn) else None


def json_without_commands(text: str) -> str:
    """JSON text no line of which the runner reads as a command, decoding to the same value.

    ``#`` can only stand inside a JSON string, where ``\\u0023`` means the
    same; a JSON line never starts with ``:``. (:func:`neutralise` would
    insert backslashes that are not valid JSON.)
    """
    return text.replace("#", "\\u0023")
