"""Compact JSON bytes that never fail to encode: for request bodies and transcript lines.

Model output can carry lone UTF-16 surrogates (``"\\ud800"`` in a JSON answer
decodes to one), which UTF-8 cannot encode. Such a value is written with
ASCII escapes instead, so the bytes stay valid JSON and nothing is lost.
The client sends answers back in the history, and the transcripts store
them, so both encode with this one rule; it sits beside ``errors.py``
because every layer may use it.
"""

from __future__ import annotations

import json
from typing import Any

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
