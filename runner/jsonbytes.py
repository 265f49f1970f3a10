"""Compact JSON bytes that never fail to encode: for request bodies and transcript lines.

Every request body and every transcript and journal line is encoded here, on
the event loop, so the encoder is orjson: it writes the same compact UTF-8
JSON as :mod:`json` at a twentieth of the CPU (a sixth of mtrun's own work per
turn at zero latency; docs/BENCHMARKS.md). What orjson will not encode goes to
:mod:`json`, whose output for it is still valid:

- model output can carry lone UTF-16 surrogates (``"\\ud800"`` in a JSON
  answer decodes to one), which UTF-8 cannot encode: such a value is written
  with ASCII escapes instead, so the bytes stay valid JSON and nothing is lost;
- integers beyond 64 bits, and mapping keys that are not text, which
  :mod:`json` writes as numbers and as text.

NaN and the infinities have no JSON form; a server's answer may still hold
them (Python reads ``NaN`` in JSON). They are written as ``null``, as
JavaScript's ``JSON.stringify`` does, so every line stays JSON that jq, a
browser and any strict parser can read. The client sends answers back in the
history, and the transcripts store them, so both encode with this one rule; it
sits beside ``errors.py`` because every layer may use it.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_NEWLINE = orjson.OPT_APPEND_NEWLINE

# Built once: json.dumps with options builds a new encoder on every call.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_COMPACT_ASCII = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def dumps_bytes(value: Any, *, newline: bool = False) -> bytes:
    """Compact UTF-8 JSON for ``value``; ASCII-escaped if it holds lone surrogates."""
    try:
        return orjson.dumps(value, option=_NEWLINE if newline else 0)
    except orjson.JSONEncodeError:
        return _with_json(value, "\n" if newline else "")


def _with_json(value: Any, end: str) -> bytes:
    """What orjson refuses: lone surrogates, integers beyond 64 bits, keys that are not text."""
    value = _finite(value)
    try:
        return (_COMPACT.encode(value) + end).encode("utf-8")
    except UnicodeEncodeError:
        return (_COMPACT_ASCII.encode(value) + end).encode("ascii")


def _finite(value: Any) -> Any:
    """``value`` with NaN and the infinities as None, as orjson writes them."""
    if isinstance(value, float):
        return value if value - value == 0 else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
