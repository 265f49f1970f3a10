"""The transcript store: durable turn by turn, resumable, never overwriting.

An output ``PATH`` is backed by two files:

``PATH``
    The transcript: one JSON line per conversation, appended when the
    conversation reaches a final status (completed, failed, interrupted).
``PATH.journal``
    One JSON line per completed turn of a conversation that has not reached
    a final status yet. It exists only while a run is going, or after a run
    was killed; a run that ends (even by Ctrl-C) deletes it.

Every line is written whole with one ``write`` and made durable with
``fsync`` before the conversation sends its next request, so a crash or
``kill -9`` loses at most the requests in flight. Concurrent conversations
share fsyncs (group commit): a turn waits for the first fsync that starts
after its own write.

Resuming reads both files. In the transcript the last line for an id wins;
a torn last line (a crash mid-write) is cut off. A conversation recorded as
completed is skipped; one recorded as failed or interrupted continues after
its last completed turn; journal lines extend a conversation turn by turn
(a line counts only if it is the next turn). A resumed conversation appends
a new line that supersedes its old one, and when the run ends the transcript
is compacted (written beside, fsynced, renamed over) so it holds each
conversation exactly once.

While a run writes ``PATH`` it holds an exclusive ``flock`` on it, so two
runs can never write the same output.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import stat
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from runner.errors import OutputError
from runner.jsonio import JsonLine, dumps_bytes, json_lines, not_regular
from runner.transcript import FINISHED, ConversationRecord, TurnRecord

try:  # POSIX only; on other systems two runs on one output are not prevented.
    import fcntl
except ImportError:  # pragma: no cover - exercised only on Windows
    fcntl = None  # type: ignore[assignment]

JOURNAL_SUFFIX = ".journal"


@dataclass(slots=True)
class Progress:
    """Where a resumed conversation picks up."""

    started_at: str
    """When the conversation was first started."""
    turns: list[TurnRecord] = field(default_factory=list)
    """Its completed turns, in order."""
    exchanges: list[dict[str, Any]] = field(default_factory=list)
    """The user and assistant messages of those turns, after the prefix."""
    failed_attempts: list[dict[str, Any]] = field(default_factory=list)
    """Attempts already spent on the next turn before it failed."""


@dataclass(slots=True)
class _Known:
    status: str
    fingerprint: str
    source: str
    progress: Progress | None


@dataclass(frozen=True, slots=True)
class ResumeReport:
    """What was found when an existing output was opened for resuming."""

    completed: int
    """Conversations already completed (they will not be sent again)."""
    to_continue: int
    """Conversations cut short that will continue from their last completed turn."""
    torn_bytes: int
    """Bytes of an incomplete last line that were cut off the transcript."""


class _AppendFile:
    """An append-only file written in whole lines with group-committed fsync."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.written = 0
        self.synced = 0
        self._sync_task: asyncio.Task[None] | None = None
        self._syncer: _SyncThread | None = None
        self.broken: OSError | None = None

    def append(self, data: bytes) -> None:
        if self.broken is not None:
            raise _write_error(self.path, self.broken)
        start = os.lseek(self.fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                done = os.write(self.fd, view)
                view = view[done:]
        except OSError as exc:
            self.broken = exc
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, start)
            raise _write_error(self.path, exc) from None
        self.written += 1

    async def sync(self) -> None:
        target = self.written
        while self.synced < target:
            if self._sync_task is None:
                self._sync_task = asyncio.create_task(self._fsync())
            await asyncio.shield(self._sync_task)

    async def _fsync(self) -> None:
        target = self.written
        if self._syncer is None:
            self._syncer = _SyncThread(self.fd)
        try:
            await self._syncer.fsync()
        except OSError as exc:
            self.broken = exc
            raise _write_error(self.path, exc) from None
        finally:
            self._sync_task = None
        self.synced = max(self.synced, target)

    def close(self) -> None:
        if self._syncer is not None:
            self._syncer.stop()  # no fsync may still be running when the fd closes
            self._syncer = None
        with contextlib.suppress(OSError):
            os.close(self.fd)


class _SyncThread:
    """Runs one file's fsyncs on a thread of its own, so the event loop never waits on disk.

    Cheaper per fsync than ``asyncio.to_thread`` (no executor work item, no
    copied context, no concurrent future chained to an asyncio one), which
    matters because with one conversation in flight every turn waits for one.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._asks: queue.SimpleQueue[asyncio.Future[None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="mtrun-fsync", daemon=True)
        self._thread.start()

    def fsync(self) -> asyncio.Future[None]:
        """A future that completes (or fails with the OSError) once the fd is fsynced."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._asks.put(done)
        return done

    def stop(self) -> None:
        """Let an fsync under way finish, then end the thread."""
        self._asks.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (done := self._asks.get()) is not None:
            error: Exception | None = None
            try:
                os.fsync(self.fd)
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


def _write_error(path: Path, exc: OSError) -> OutputError:
    return OutputError(
        f"cannot write {path}: {exc.strerror or exc}; what was written before stays valid"
    )


def _dumps(data: dict[str, Any]) -> bytes:
    return dumps_bytes(data, newline=True)


class TranscriptStore:
    """Owns one output: its transcript, its journal and its lock."""

    def __init__(self, path: Path, *, resume: bool = False) -> None:
        self.path = path
        self.journal_path = path.with_name(path.name + JOURNAL_SUFFIX)
        self.run_id: str | None = None
        self._known: dict[str, _Known] = {}
        self._superseded = False
        self._journal: _AppendFile | None = None
        self._journal_end = 0
        """Where the journal's last whole line ends (as read when resuming)."""
        self.resume_report = ResumeReport(0, 0, 0)
        exists = path.exists()
        if exists and not resume:
            raise OutputError(
                f"{path} already exists; pass --resume to continue it, or choose another -o"
            )
        if not resume and self.journal_path.exists():
            raise OutputError(
                f"{self.journal_path} is left from an earlier run of {path}; "
                "continue it with --resume, or delete it to start afresh"
            )
        if path.is_dir():
            raise OutputError(f"{path} is a folder; -o takes a file path such as {path}/run.jsonl")
        self._main = _AppendFile(path, self._open_locked(path, new=not exists))
        if resume:
            try:
                self._load()
            except BaseException:
                self._main.close()  # releases the lock: fixing the file and retrying works
                raise

    def _open_locked(self, path: Path, *, new: bool) -> int:
        flags = os.O_RDWR | os.O_CREAT | (os.O_EXCL if new else 0)
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
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise OutputError(f"cannot use {path} as the output: {not_regular(mode)}")
        os.set_blocking(fd, True)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise OutputError(
                    f"{path} is being written by another mtrun process; "
                    "wait for it or use another -o"
                ) from None
        return fd

    # -- reading an existing output -------------------------------------------------

    def _load(self) -> None:
        completed = 0
        good_end, torn = self._scan_transcript()
        if torn:
            os.ftruncate(self._main.fd, good_end)
            os.fsync(self._main.fd)
        self._load_journal()
        for known in self._known.values():
            completed += known.status in FINISHED
        self.resume_report = ResumeReport(
            completed=completed, to_continue=len(self._known) - completed, torn_bytes=torn
        )

    def _scan_transcript(self) -> tuple[int, int]:
        """Index the transcript; return (end of the last whole line, torn bytes)."""
        offset = 0
        for line in json_lines(self.path):
            problem = line.problem
            record = None
            if problem is None:
                record, problem = _record_of(line.value)
            if record is None:
                if line.last and not line.too_long:
                    return line.offset, len(line.raw)
                raise OutputError(
                    f"{self.path}:{line.number}: not a valid transcript line ({problem}); "
                    "the file was changed by something other than mtrun "
                    "(fix or remove the line)"
                )
            self.run_id = self.run_id or record.run_id
            if record.id in self._known:
                self._superseded = True
            self._known[record.id] = _Known(
                record.status, record.fingerprint, record.source, _progress_of(record)
            )
            offset = line.end
            if not line.whole:
                # A whole record that only lacks its newline: keep it, end the line.
                os.lseek(self._main.fd, 0, os.SEEK_END)
                os.write(self._main.fd, b"\n")
                offset += 1
        return offset, 0

    def _load_journal(self) -> None:
        """Extend conversations with the journal's turns; note where its last whole line ends."""
        for line in json_lines(self.journal_path, missing_ok=True):
            if line.too_long:
                raise OutputError(
                    f"{self.journal_path}:{line.number}: not a valid journal line "
                    f"({line.problem}); remove the journal to resume without it "
                    "(the turns it holds are sent again)"
                )
            if line.problem is None and isinstance(line.value, dict):
                self._apply_journal(line.value)
            if line.whole:
                self._journal_end = line.end

    def _apply_journal(self, entry: dict[str, Any]) -> None:
        try:
            conv_id = str(entry["id"])
            turn = TurnRecord.from_dict(entry["turn"])
            exchange = list(entry["exchange"])
            fingerprint = str(entry["fingerprint"])
        except (KeyError, TypeError, ValueError, OverflowError):
            return
        self.run_id = self.run_id or entry.get("run_id")
        known = self._known.get(conv_id)
        if known is None:
            known = _Known(
                "interrupted",
                fingerprint,
                str(entry.get("source", "")),
                Progress(started_at=str(entry.get("started_at", ""))),
            )
            self._known[conv_id] = known
        progress = known.progress
        if progress is None or known.fingerprint != fingerprint:
            return
        if turn.index == len(progress.turns):
            progress.turns.append(turn)
            progress.exchanges.extend(exchange)
            progress.failed_attempts = []

    # -- what the engine asks -------------------------------------------------------

    def check_unchanged(self, conv_id: str, fingerprint: str, source: str) -> None:
        """Refuse to resume a conversation whose requests would now differ."""
        known = self._known.get(conv_id)
        if known is not None and known.fingerprint != fingerprint:
            raise OutputError(
                f"{source}: conversation {conv_id!r} has changed since {self.path} recorded it "
                "(its turns, system prompt, messages, model or params differ); "
                "resume only with the same files and options, or write to a new output with -o"
            )

    def status(self, conv_id: str) -> str | None:
        """The status the output holds for a conversation, if any."""
        known = self._known.get(conv_id)
        return None if known is None else known.status

    def is_completed(self, conv_id: str) -> bool:
        """Whether the output already holds this conversation with every turn answered."""
        known = self._known.get(conv_id)
        return known is not None and known.status in FINISHED

    def progress(self, conv_id: str) -> Progress | None:
        """Where an unfinished conversation continues, or None to start afresh."""
        known = self._known.get(conv_id)
        if known is None or known.status in FINISHED:
            return None
        return known.progress

    # -- writing -------------------------------------------------------------------

    async def record_turn(self, record: ConversationRecord, turn: TurnRecord) -> None:
        """Make one completed turn durable before the next request is sent."""
        if self._journal is None:
            self._journal = _AppendFile(self.journal_path, self._open_journal())
        exchange = record.messages[turn.message_index : turn.message_index + 2]
        line = {
            "run_id": record.run_id,
            "id": record.id,
            "source": record.source,
            "fingerprint": record.fingerprint,
            "started_at": record.started_at,
            "turn": turn.as_dict(),
            "exchange": exchange,
        }
        self._journal.append(_dumps(line))
        await self._journal.sync()

    def _open_journal(self) -> int:
        try:
            fd = os.open(self.journal_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise _write_error(self.journal_path, exc) from None
        if os.fstat(fd).st_size != self._journal_end:
            # Cut a torn last line so that new lines start on a line of their own.
            os.ftruncate(fd, self._journal_end)
        return fd

    async def record_conversation(self, record: ConversationRecord) -> None:
        """Append a conversation's final line and make it durable."""
        self.append_conversation(record)
        await self.flush()

    def append_conversation(self, record: ConversationRecord) -> None:
        """Append a conversation's final line (durable after :meth:`flush`)."""
        if record.id in self._known:
            self._superseded = True
        self._main.append(_dumps(record.as_dict()))
        self._known[record.id] = _Known(record.status, record.fingerprint, record.source, None)

    async def flush(self) -> None:
        """Wait until every appended conversation line is on disk (fsync)."""
        await self._main.sync()

    def close(self, *, finished: bool) -> None:
        """Release the output. ``finished``: every started conversation has its final line."""
        try:
            if finished and self._main.broken is None:
                if self._journal is not None:
                    self._journal.close()
                    self._journal = None
                with contextlib.suppress(FileNotFoundError):
                    self.journal_path.unlink()
                if self._superseded:
                    self._compact()
        finally:
            if self._journal is not None:
                self._journal.close()
            self._main.close()

    def _compact(self) -> None:
        """Rewrite the transcript keeping only the last line of each conversation."""
        last: dict[str, int] = {}
        odd: set[int] = set()  # not written by mtrun (nor read by it): kept as they are
        for line in json_lines(self.path):
            if line.problem is None and isinstance(line.value, dict) and "id" in line.value:
                last[str(line.value["id"])] = line.number
            else:
                odd.add(line.number)
        keep = set(last.values()) | odd
        tmp = self.path.with_name(self.path.name + ".compacting")
        try:
            with open(tmp, "wb") as dst:
                for line in json_lines(self.path):
                    if line.number in keep:
                        dst.write(line.raw)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise OutputError(
                f"cannot compact {self.path}: {exc.strerror or exc}; it is still valid "
                "(a conversation may appear twice: the last line for an id is the current one)"
            ) from None


def _progress_of(record: ConversationRecord) -> Progress | None:
    """Where a transcript record of a cut-short conversation continues."""
    if record.status in FINISHED:
        return None
    done = [t for t in record.turns if t.completed]
    exchanges: list[dict[str, Any]] = []
    if done:
        first = done[0].message_index
        exchanges = record.messages[first : first + 2 * len(done)]
    failed = [t for t in record.turns if not t.completed]
    return Progress(
        started_at=record.started_at,
        turns=done,
        exchanges=exchanges,
        failed_attempts=list(failed[0].attempts) if failed else [],
    )


def _fsync_dir(folder: Path) -> None:
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


def default_output_path(folder: Path, *, now: datetime | None = None, suffix: str = "") -> Path:
    """A new file name under ``folder`` that does not exist yet (``suffix``: e.g. a shard)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S") + suffix
    candidate = folder / f"mtrun-{stamp}.jsonl"
    number = 2
    while candidate.exists() or candidate.with_name(candidate.name + JOURNAL_SUFFIX).exists():
        candidate = folder / f"mtrun-{stamp}-{number}.jsonl"
        number += 1
    return candidate


def read_transcript(path: Path) -> list[dict[str, Any]]:
    """The current record of each conversation in a transcript (last line per id wins).

    Tolerates a torn last line, as left by a crash; other broken lines raise
    :class:`OutputError` naming the line, as does a path that is not a
    regular file (see :func:`runner.jsonio.json_lines`).
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


def _record_of(value: Any) -> tuple[ConversationRecord | None, str | None]:
    """A transcript line's record, or None and why it is not one."""
    if not isinstance(value, dict) or "id" not in value or "status" not in value:
        return None, "not a transcript record"
    try:
        return ConversationRecord.from_dict(value), None
    except (ValueError, KeyError, TypeError, OverflowError):
        return None, "a field has the wrong type"
