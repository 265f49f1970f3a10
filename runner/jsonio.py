"""JSON encoding for requests and transcript lines that never fails on odd text.

Model output can carry lone UTF-16 surrogates (``"\\ud800"`` in a JSON answer
decodes to one), which UTF-8 cannot encode. Such a value is written with
ASCII escapes instead, so the line stays valid JSON and nothing is lost.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runner.atomic import write_atomic

# Built once: json.dumps with options builds a new encoder on every call, and
# these encode every request body and every transcript and journal line.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_COMPACT_ASCII = json.JSONEncoder(separators=(",", ":"))


def dumps_bytes(value: Any, *, newline: bool = False) -> bytes:
    """Compact UTF-8 JSON for ``value``; ASCII-escaped if it holds lone surrogates."""
    text = _COMPACT.encode(value)
    end = "\n" if newline else ""
    try:
        return (text + end).encode("utf-8")
    except UnicodeEncodeError:
        return (_COMPACT_ASCII.encode(value) + end).encode("ascii")


def write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    """Write an indented JSON document atomically (see ``atomic.py``)."""
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        data = (json.dumps(document, indent=2) + "\n").encode("ascii")
    write_atomic(path, data)
