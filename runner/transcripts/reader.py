"""Reading a transcript back: the current record of each conversation, whatever the file holds.

Every review command (show, export, report, diff, merge) reads through
:func:`read_transcript`. Lines come from :func:`runner.transcripts.jsonio.json_lines`,
which never hangs and never raises on a bad line; here a line must also be a
record (an object with an ``id``), and the last line for an id wins, as
resuming and compaction count them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner.errors import OutputError
from runner.transcripts.jsonio import JsonLine, json_lines
from runner.transcripts.records import ConversationRecord


def read_transcript(path: Path) -> list[dict[str, Any]]:
    """The current record of each conversation in a transcript (last line per id wins).

    Tolerates a torn last line, as left by a crash; other broken lines raise
    :class:`OutputError` naming the line, as does a path that is not a
    regular file (see :func:`runner.transcripts.jsonio.json_lines`).
    """
    records: dict[str, dict[str, Any]] = {}
    for line in json_lines(path):
        problem = line.problem or _not_a_record(line)
        if problem is not None:
            if line.last and not line.too_long:
                break
            raise OutputError(f"{path}:{line.number}: not a valid transcript line ({problem})")
        conv_id = str(line.value["id"])
        records.pop(conv_id, None)
        records[conv_id] = line.value
    return list(records.values())


def _not_a_record(line: JsonLine) -> str | None:
    if not isinstance(line.value, dict) or "id" not in line.value:
        return "not a transcript record"
    return None


def record_of(value: Any) -> tuple[ConversationRecord | None, str | None]:
    """A transcript line's record, or None and why it is not one."""
    if not isinstance(value, dict) or "id" not in value or "status" not in value:
        return None, "not a transcript record"
    try:
        return ConversationRecord.from_dict(value), None
    except (ValueError, KeyError, TypeError, OverflowError):
        return None, "a field has the wrong type"
