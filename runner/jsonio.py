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


def dumps_bytes(value: Any, *, newline: bool = False) -> bytes:
    """Compact UTF-8 JSON for ``value``; ASCII-escaped if it holds lone surrogates."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    end = "\n" if newline else ""
    try:
        return (text + end).encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(value, separators=(",", ":")) + end).encode("ascii")


def write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    """Write an indented JSON document atomically (see ``atomic.py``)."""
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        data = (json.dumps(document, indent=2) + "\n").encode("ascii")
    write_atomic(path, data)
