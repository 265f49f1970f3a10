"""Reading transcript records back: tolerant accessors for fields that may be missing.

Records come from files, possibly from interrupted runs, older versions or
hand edits, so every reader (diff, report, show, JUnit) takes optional fields
through these instead of trusting their types.

A record can hold anything JSON can: lone surrogates (``"\\ud800"`` is valid
JSON but cannot be encoded as UTF-8), non-finite numbers, values nested
hundreds of levels deep. Renderers turn values into text only through
:func:`as_text`, :func:`to_json` and :func:`escape_surrogates`, so every
output is encodable and no renderer recurses without bound.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeGuard

NESTING_SHOWN = 64
"""Deepest level of a nested value a renderer shows; deeper ones become :data:`TOO_DEEP`."""
TOO_DEEP = "[nested too deeply to show]"
"""What stands for a value nested deeper than :data:`NESTING_SHOWN`."""

_SURROGATE = re.compile("[\ud800-\udfff]")


def as_list(value: Any) -> list[Any]:
    """``value`` as a list; anything that is not a list or tuple is empty."""
    return list(value) if isinstance(value, list | tuple) else []


def as_text(value: Any) -> str:
    """``value`` as text; None is empty, containers are shown at most :data:`NESTING_SHOWN` deep."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping | list | tuple):
        return str(shallow(value))
    return str(value)


def is_int(value: Any) -> TypeGuard[int]:
    """Whether ``value`` is an int (a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def as_int(value: Any) -> int:
    """``value`` if it is an int, else 0."""
    return value if is_int(value) else 0


def as_number(value: Any) -> float | None:
    """``value`` as a finite float, or None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def escape_surrogates(text: str) -> str:
    """``text`` with each lone surrogate written as its escape ``\\udXXX``.

    The one rule for surrogates in every output: as text the escape shows
    what the record held; inside a JSON string it is the JSON escape of the
    same character, so :func:`json.loads` gives the record's value back.
    """
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def shallow(value: Any, depth: int = NESTING_SHOWN) -> Any:
    """``value`` as plain JSON data a renderer can walk without recursing too deep.

    Containers below ``depth`` levels become :data:`TOO_DEEP`, tuples become
    lists, non-finite floats and other non-JSON values become their text, and
    mapping keys become text.
    """
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping | list | tuple):
        if depth <= 0:
            return TOO_DEEP
        if isinstance(value, Mapping):
            return {as_text(k): shallow(v, depth - 1) for k, v in value.items()}
        return [shallow(item, depth - 1) for item in value]
    return str(value)


def to_json(value: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """``value`` as JSON text that is always valid and encodable (see :func:`shallow`).

    Lone surrogates come out as ``\\uXXXX`` escapes; other characters as
    they are (``ensure_ascii=False``).
    """
    text = json.dumps(
        shallow(value), ensure_ascii=False, indent=indent, sort_keys=sort_keys, allow_nan=False
    )
    return escape_surrogates(text)


def unreadable_last_line(path: Path) -> int | None:
    """The number of the file's last line if it is not a whole transcript record, else None.

    :func:`runner.transcripts.reader.read_transcript` skips such a line (a crash tears the
    last line); the review commands use this to say so instead of staying
    silent. Reads the file once, one line at a time.
    """
    number, last = 0, b""
    if not path.is_file():  # a pipe or device was read once already; never block on it
        return None
    try:
        with open(path, "rb") as fh:
            for number, last in enumerate(fh, start=1):  # noqa: B007 - the last one is wanted
                pass
    except OSError:
        return None
    if number == 0:
        return None
    try:
        data = json.loads(last)
    except (ValueError, RecursionError):
        return number
    return None if isinstance(data, dict) and "id" in data else number


def answer_index(turn: Mapping[str, Any]) -> int | None:
    """Index in ``messages`` of a turn's answer, or None when the record says nowhere.

    The one rule every reader uses: the last step's ``message_index`` when
    the turn has steps (objects in its ``steps`` list), else the message
    after its user message. The HTML report's script has a copy
    (``answerIndexOf`` in ``runner/review/assets/report.js``), tested to agree.
    """
    steps = [s for s in as_list(turn.get("steps")) if isinstance(s, Mapping)]
    if steps:
        return _position(steps[-1].get("message_index"))
    at = _position(turn.get("message_index"))
    return None if at is None else at + 1


def _position(value: Any) -> int | None:
    """``value`` as an index into a list: an int, or a float with an integral value.

    JSON has one number type: ``3.0`` in a record is the number 3 (a browser
    reads it so), never a reason to disagree about where an answer is.
    """
    if is_int(value):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
