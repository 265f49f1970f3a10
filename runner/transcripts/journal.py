"""Append-only files on disk: whole lines, group-committed fsync, one writer at a time.

The transcript and its journal (see :mod:`runner.transcripts.store`) grow
line by line. :class:`AppendFile` writes each line with one ``write`` (cut
back on failure, so the file never ends in half a line) and makes lines
durable with ``fsync``; concurrent writers share fsyncs (group commit): a
line waits for the first fsync that starts after its own write. The fsyncs
run on a thread of the output's own (:class:`SyncThread`, one for the
transcript and its journal), so the event loop never waits on disk.
:func:`open_locked` holds an exclusive ``flock`` on the output, so two runs
can never write it; :func:`compact` rewrites a transcript keeping each
conversation's last line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from pathlib import Path

from runner.errors import OutputError
from runner.transcripts.jsonio import json_lines, regular_fd

try:  # POSIX only; on other systems two runs on one output are not prevented.
    import fcntl
except ImportError:  # pragma: no cover - exercised only on Windows
    fcntl = None  # type: ignore[assignment]


class AppendFile:
    """An append-only file written in whole lines with group-committed fsync.

    ``fd`` is opened ``O_APPEND`` (:func:`open_locked`, :func:`open_journal`): every
    write lands at the end without a seek.
    """

    def __init__(self, path: Path, fd: int, syncer: SyncThread) -> None:
        self.path = path
        self.fd = fd
        self.written = 0
        self.synced = 0
        self._sync_task: asyncio.Task[None] | None = None
        self.syncer = syncer
        """The thread that runs this file's fsyncs (an output's files share one)."""
        self.broken: OSError | None = None

    def append(self, data: bytes) -> None:
        if self.broken is not None:
            raise write_error(self.path, self.broken)
        done = 0
        try:
            view = memoryview(data)
            while done < len(view):
                done += os.write(self.fd, view[done:])
        except OSError as exc:
            self.broken = exc
            # Only this run writes the file (its flock), always at the end
            # (O_APPEND): cut off the part of the line that was written.
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, os.lseek(self.fd, 0, os.SEEK_END) - done)
            raise write_error(self.path, exc) from None
        self.written += 1

    async def sync(self) -> None:
        target = self.written
        while self.synced < target:
            if self._sync_task is None:
                self._sync_task = asyncio.create_task(self._fsync())
            await asyncio.shield(self._sync_task)

    async def _fsync(self) -> None:
        target = self.written
        try:
            await self.syncer.fsync(self.fd)
        except OSError as exc:
            self.broken = exc
            raise write_error(self.path, exc) from None
        finally:
            self._sync_task = None
        self.synced = max(self.synced, target)

    def close(self) -> None:
        self.syncer.drain()  # no fsync of this fd may still be running when it closes
        with contextlib.suppress(OSError):
            os.close(self.fd)


class SyncThread:
    """Runs an output's fsyncs on a thread of its own, so the event loop never waits on disk.

    Cheaper per fsync than ``asyncio.to_thread`` (no executor work item, no
    copied context, no concurrent future chained to an asyncio one), which
    matters because with one conversation in flight every turn waits for one.
    Started with the output, before anything is sent: starting a thread waits
    until it runs, which on a busy machine took 5-7 ms of the event loop at the
    first answers of a run, just when ``-j auto``'s first wave goes out.
    """

    def __init__(self) -> None:
        self._asks: queue.SimpleQueue[tuple[int, asyncio.Future[None]] | threading.Event | None]
        self._asks = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="mtrun-fsync", daemon=True)
        self._thread.start()

    def fsync(self, fd: int) -> asyncio.Future[None]:
        """A future that completes (or fails with the OSError) once ``fd`` is fsynced."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._asks.put((fd, done))
        return done

    def drain(self) -> None:
        """Wait (blocking) until every fsync asked so far has finished."""
        if self._thread.is_alive():
            drained = threading.Event()
            self._asks.put(drained)
            drained.wait()

    def stop(self) -> None:
        """Let the fsyncs asked so far finish, then end the thread."""
        self._asks.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (ask := self._asks.get()) is not None:
            if isinstance(ask, threading.Event):
                ask.set()
                continue
            fd, done = ask
            error: Exception | None = None
            try:
                os.fsync(fd)
            except Exception as exc:  # handed to the waiter, as to_thread would
                error = exc
            # The loop may have closed meanwhile (a cancelled run): nobody waits then.
            with contextlib.suppress(RuntimeError):
                done.get_loop().call_soon_threadsafe(_settle, done, error)


def _settle(done: asyncio.Future[None], error: Exception | None) -> None:
    if done.cancelled():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


def write_error(path: Path, exc: OSError) -> OutputError:
    """The error of a failed write to an append-only file: what was written before stays."""
    return OutputError(
        f"cannot write {path}: {exc.strerror or exc}; what was written before stays valid"
    )


def open_journal(path: Path, end: int) -> int:
    """An append-only descriptor of the journal ``path``, cut to its last whole line at ``end``.

    So that new lines start on a line of their own after a torn one.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        raise write_error(path, exc) from None
    if os.fstat(fd).st_size != end:
        os.ftruncate(fd, end)
    return fd


def open_locked(path: Path, *, new: bool) -> int:
    """An append-only read-write descriptor of the output ``path``, locked for this process alone.

    ``new``: create it, refusing an existing file. Refuses anything that is
    not a regular file, and an output another mtrun process is writing.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | (os.O_EXCL if new else 0)
    if not path.parent.is_dir():
        try:
            path.parent.mkdir(parents=True)
        except OSError as exc:
            raise OutputError(
                f"cannot open {path}: cannot create its folder ({exc.strerror or exc})"
            ) from None
    try:
        fd = os.open(path, flags | os.O_NONBLOCK, 0o644)  # a FIFO must not block the open
    except FileExistsError:
        raise OutputError(f"{path} already exists; pass --resume to continue it") from None
    except OSError as exc:
        raise OutputError(f"cannot open {path}: {exc.strerror or exc}") from None
    regular_fd(fd, f"cannot use {path} as the output")
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputError(
                f"{path} is being written by another mtrun process; wait for it or use another -o"
            ) from None
    return fd


def compact(path: Path) -> None:
    """Rewrite the transcript at ``path`` keeping only the last line of each conversation.

    Written beside, fsynced, renamed over: a crash leaves the old file or the new one.
    """
    last: dict[str, int] = {}
    odd: set[int] = set()  # not written by mtrun (nor read by it): kept as they are
    for line in json_lines(path):
        if line.problem is None and isinstance(line.value, dict) and "id" in line.value:
            last[str(line.value["id"])] = line.number
        else:
            odd.add(line.number)
    keep = set(last.values()) | odd
    tmp = path.with_name(path.name + ".compacting")
    try:
        with open(tmp, "wb") as dst:
            for line in json_lines(path):
                if line.number in keep:
                    dst.write(line.raw)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputError(
            f"cannot compact {path}: {exc.strerror or exc}; it is still valid "
            "(a conversation may appear twice: the last line for an id is the current one); "
            "run the same command again with --resume to compact it"
        ) from None


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
