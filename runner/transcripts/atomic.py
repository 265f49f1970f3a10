"""Writing whole files safely: a reader never sees half a file, a failure keeps the old one.

Every file mtrun writes in one go (reports, fixtures, summaries, merged
outputs) goes to a temporary file in the same folder, is fsynced, and then
takes its name. Transcripts are different: they grow line by line
(``store.py``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from runner.errors import OutputError


def write_atomic(path: Path, data: bytes, *, what: str = "", hint: str = "") -> None:
    """Replace ``path`` with ``data`` atomically.

    ``what`` names the file in errors ("JUnit report"); ``hint`` says what to do.
    """
    _write(path, data, what=what, hint=hint, replace=True)


def write_new(path: Path, data: bytes, *, what: str = "", hint: str = "") -> None:
    """Create ``path`` with ``data`` atomically; never replace an existing file.

    Race-free: the data takes the name with ``link``, which fails if anything
    has the name by then, so a file created meanwhile is never overwritten.
    ``hint`` also ends the error saying the file exists.
    """
    _write(path, data, what=what, hint=hint, replace=False)


def _write(path: Path, data: bytes, *, what: str, hint: str, replace: bool) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        if not path.parent.exists():
            path.parent.mkdir(parents=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with open(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if the path exists: nothing is overwritten
            except FileExistsError:
                then = hint or "choose another path"
                raise OutputError(f"{path} already exists; {then}") from None
    except OSError as exc:
        name = f"{what} {path}" if what else str(path)
        extra = f"; {hint}" if hint else ""
        raise OutputError(f"cannot write {name}: {exc.strerror or exc}{extra}") from None
    finally:
        if not replace or tmp.exists():
            with contextlib.suppress(OSError):
                tmp.unlink()
