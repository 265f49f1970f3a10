"""JSON encoding for requests and transcript lines that never fails on odd text.

Model output can carry lone UTF-16 surrogates (``"\\ud800"`` in a JSON answer
decodes to one), which UTF-8 cannot encode. Such a value is written with
ASCII escapes instead, so the line stays valid JSON and nothing is lost.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from runner.errors import OutputError


def dumps_bytes(value: Any, *, newline: bool = False) -> bytes:
    """Compact UTF-8 JSON for ``value``; ASCII-escaped if it holds lone surrogates."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    end = "\n" if newline else ""
    try:
        return (text + end).encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(value, separators=(",", ":")) + end).encode("ascii")


def write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    """Write an indented JSON document through a temporary file and a rename.

    Readers never see a half-written file; on failure the old file stays.
    """
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        data = (json.dumps(document, indent=2) + "\n").encode("ascii")
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
