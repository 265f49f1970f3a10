"""JSON for requests and transcript lines: encoding that never fails, reading that never hangs.

Model output can carry lone UTF-16 surrogates (``"\\ud800"`` in a JSON answer
decodes to one), which UTF-8 cannot encode. Such a value is written with
ASCII escapes instead, so the line stays valid JSON and nothing is lost.

Reading JSON Lines back (transcripts, journals) goes through
:func:`json_lines`, the one reader every command uses. Files come from
crashes, hand edits and strangers, so it refuses what is not a regular file
(a FIFO, ``/dev/full``, a folder would block or never end), reads at most
:data:`MAX_LINE_BYTES` of a line, and reports a line that is not UTF-8, not
JSON, or nested deeper than :data:`MAX_DEPTH` as a problem of that line
instead of raising. Lone surrogates written as ``\\udXXX`` escapes are kept:
mtrun writes them itself (see above), and every writer escapes them again.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import OutputError
from runner.jsonbytes import dumps_bytes as dumps_bytes  # its old home: callers import it here
from runner.transcripts.atomic import write_atomic

MAX_LINE_BYTES = 64 * 2**20
"""The longest transcript or journal line read back, newline included (64 MiB).

Far above any record mtrun writes; a longer line is corrupt, and reading
stops there instead of holding an endless line in memory.
"""
MAX_DEPTH = 128
"""The deepest nesting of arrays and objects a transcript or journal line may have.

Conversation files may nest content 100 levels deep (``yamlsafe.MAX_DEPTH``)
and a record adds a few levels around it; anything deeper would only reach
Python's recursion limit further on.
"""


def write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    """Write an indented JSON document atomically (see ``atomic.py``)."""
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        data = (json.dumps(document, indent=2) + "\n").encode("ascii")
    write_atomic(path, data)


@dataclass(frozen=True, slots=True)
class JsonLine:
    """One line of a JSON Lines file, parsed or with the reason it could not be."""

    number: int
    """1-based line number."""
    offset: int
    """Where the line starts in the file."""
    raw: bytes
    """The line as read, newline included (empty for a line too long to hold)."""
    last: bool
    """Nothing follows it in the file."""
    value: Any = None
    """The JSON value, when there is no problem."""
    problem: str | None = None
    """Why the line is not a JSON value (not UTF-8, not JSON, too deep, too long)."""
    too_long: bool = False
    """Longer than :data:`MAX_LINE_BYTES`: reading stopped at this line."""

    @property
    def end(self) -> int:
        """Where the next line starts."""
        return self.offset + len(self.raw)

    @property
    def whole(self) -> bool:
        """The line ends with a newline."""
        return self.raw.endswith(b"\n")


def open_regular(path: Path) -> int:
    """A read-only descriptor of ``path``, refusing anything that is not a regular file.

    Opened without blocking, so a FIFO nobody writes to cannot hang the open;
    raises :class:`FileNotFoundError` as it is, :class:`OutputError` otherwise.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot read {path}: {exc.strerror or exc}") from None
    return regular_fd(fd, f"cannot read {path}")


def regular_fd(fd: int, refusal: str) -> int:
    """``fd``, back in blocking mode, if it is a regular file; else closed and refused.

    ``refusal`` starts the error's message (``cannot read PATH``); what the file
    is instead (a FIFO, a device, a folder) follows it.
    """
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise OutputError(f"{refusal}: {not_regular(mode)}")
    os.set_blocking(fd, True)
    return fd


def not_regular(mode: int) -> str:
    """What a file of ``mode`` is, said as the reason it is refused."""
    if stat.S_ISDIR(mode):
        kind = "a folder"
    elif stat.S_ISFIFO(mode):
        kind = "a FIFO"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    else:
        return "it is not a regular file"
    return f"it is {kind}, not a regular file"


def json_lines(path: Path, *, missing_ok: bool = False) -> Iterator[JsonLine]:
    """Every line of a JSON Lines file, each parsed or with its problem (see the module doc).

    Stops after a line longer than :data:`MAX_LINE_BYTES`. A missing file is an
    :class:`OutputError`, or no lines with ``missing_ok``.
    """
    try:
        fd = open_regular(path)
    except FileNotFoundError as exc:
        if missing_ok:
            return
        raise OutputError(f"cannot read {path}: {exc.strerror or exc}") from None
    with open(fd, "rb") as fh:
        number, offset = 0, 0
        raw = _read_line(fh)
        while raw:
            number += 1
            if len(raw) >= MAX_LINE_BYTES and not raw.endswith(b"\n"):
                too_long = f"longer than {MAX_LINE_BYTES // 2**20} MiB"
                yield JsonLine(number, offset, b"", last=True, problem=too_long, too_long=True)
                return
            following = _read_line(fh)
            value, problem = parse_line(raw)
            yield JsonLine(number, offset, raw, last=not following, value=value, problem=problem)
            offset += len(raw)
            raw = following


def _read_line(fh: Any) -> bytes:
    try:
        line: bytes = fh.readline(MAX_LINE_BYTES)
    except OSError as exc:
        raise OutputError(f"cannot read {fh.name}: {exc.strerror or exc}") from None
    return line


def parse_line(raw: bytes) -> tuple[Any, str | None]:
    """The JSON value of one line and None, or None and what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 at byte {exc.start + 1}"
    try:
        value = json.loads(text)
    except RecursionError:
        return None, f"nested deeper than {MAX_DEPTH} levels"
    except ValueError as exc:
        return None, f"not JSON: {getattr(exc, 'msg', 'a number too long')}"
    if text.count("[") + text.count("{") > MAX_DEPTH and _too_deep(value):
        return None, f"nested deeper than {MAX_DEPTH} levels"
    return value, None


def _too_deep(value: Any) -> bool:
    """Whether arrays and objects in ``value`` nest deeper than MAX_DEPTH (no recursion)."""
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False
