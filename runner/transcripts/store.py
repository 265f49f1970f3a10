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
after its own write (``journal.py``).

Resuming reads both files. In the transcript the last line for an id wins;
a torn last line (a crash mid-write) is cut off. A conversation recorded as
completed is skipped; one recorded as failed or interrupted continues after
its last completed turn; journal lines extend a conversation turn by turn
(a line counts only if it is the next turn of the same run). Before a
conversation continues, its recorded turns are checked against its file
(``resume.py``); what does not match is discarded, sent again, and reported.
An output holding conversations that are not in the batch is refused: it is
another batch's. A resumed conversation appends
a new line that supersedes its old one, and when the run ends the transcript
is compacted (written beside, fsynced, renamed over) so it holds each
conversation exactly once.

While a run writes ``PATH`` it holds an exclusive ``flock`` on it, so two
runs can never write the same output. Reading a transcript back for review
is ``reader.py``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import OutputError
from runner.transcripts.journal import (
    AppendFile,
    SyncThread,
    compact,
    open_journal,
    open_locked,
)
from runner.transcripts.jsonio import dumps_bytes, json_lines
from runner.transcripts.known import KnownIds
from runner.transcripts.reader import record_of
from runner.transcripts.records import ConversationRecord, TurnRecord
from runner.transcripts.resume import (
    TurnsDone,
    changed_error,
    keep_matching,
    resume_point,
    tokens_of,
)
from runner.transcripts.status import Status
from runner.words import plural

if TYPE_CHECKING:
    from runner.spec.model import Conversation

JOURNAL_SUFFIX = ".journal"
MAX_NOTES = 20
"""Discarded lines and turns reported one by one; the rest are counted."""


@dataclass(slots=True)
class _Recorded:
    """What resuming needs of a conversation read back from the output (not one appended now)."""

    progress: TurnsDone | None
    """Where it continues; None when it finished."""
    tokens: int = 0
    """Tokens a finished conversation's turns used."""
    shard: Any = None
    """Its record's ``shard``, named when the output is another batch's."""


@dataclass(frozen=True, slots=True)
class ResumeReport:
    """What was found when an existing output was opened for resuming."""

    completed: int
    """Conversations already completed (they will not be sent again)."""
    to_continue: int
    """Conversations cut short that will continue from their last completed turn."""
    torn_bytes: int
    """Bytes of an incomplete last line that were cut off the transcript."""
    discarded: tuple[str, ...] = ()
    """Recorded lines and turns not trusted, each saying why (sent again)."""


def _dumps(data: dict[str, Any]) -> bytes:
    return dumps_bytes(data, newline=True)


class TranscriptStore:
    """Owns one output: its transcript, its journal and its lock."""

    def __init__(self, path: Path, *, resume: bool = False) -> None:
        self.path = path
        self.journal_path = path.with_name(path.name + JOURNAL_SUFFIX)
        self.run_id: str | None = None
        self._known = KnownIds()
        self._recorded: dict[str, _Recorded] = {}
        """The output's conversations as read when resuming, until appended again."""
        self._superseded = False
        self._journal: AppendFile | None = None
        self._journal_end = 0
        """Where the journal's last whole line ends (as read when resuming)."""
        self._notes: list[str] = []
        self._more_notes = 0
        self._other_runs: dict[str, int] = {}
        self._seen: set[str] = set()
        self._changed: OutputError | None = None
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
        self._main = AppendFile(path, open_locked(path, new=not exists), SyncThread())
        if resume:
            try:
                self._load()
            except BaseException:
                self._main.close()  # releases the lock: fixing the file and retrying works
                self._main.syncer.stop()
                raise

    # -- reading an existing output -------------------------------------------------

    def _load(self) -> None:
        good_end, torn = self._scan_transcript()
        if torn:
            os.ftruncate(self._main.fd, good_end)
            os.fsync(self._main.fd)
        self._load_journal()
        completed = sum(status in Status.FINISHED for status in self._known.statuses())
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
                record, problem = record_of(line.value)
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
            self._known.put(record.id, record.status, record.fingerprint, record.source)
            self._recorded[record.id] = _Recorded(
                resume_point(record, f"{self.path.name} line {line.number}"),
                tokens_of(record.turns) if record.status in Status.FINISHED else 0,
                record.shard,
            )
            offset = line.end
            if not line.whole:
                # A whole record that only lacks its newline: keep it, end the line.
                os.write(self._main.fd, b"\n")  # at the end: the file is O_APPEND
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
                self._apply_journal(line.value, line.number)
            elif not line.last:  # a torn last line is a crash's: cut without a word
                problem = line.problem or "not a journal entry"
                self._note(f"journal line {line.number} is corrupt ({problem})")
            if line.whole:
                self._journal_end = line.end
        for run_id, count in self._other_runs.items():
            self._note(
                f"discarded {plural(count, 'journal line')} of another run "
                f"({run_id!r}; this output is run {self.run_id!r})"
            )

    def _note(self, text: str) -> None:
        """Remember something discarded, to report when the run starts."""
        if len(self._notes) < MAX_NOTES:
            self._notes.append(text)
        else:
            self._more_notes += 1

    def _apply_journal(self, entry: dict[str, Any], number: int) -> None:
        try:
            conv_id = str(entry["id"])
            turn = TurnRecord.from_dict(entry["turn"])
            exchange = list(entry["exchange"])
            fingerprint = str(entry["fingerprint"])
            run_id = str(entry["run_id"])
        except (KeyError, TypeError, ValueError, OverflowError):
            self._note(f"journal line {number} is not a journal entry (a field is missing or odd)")
            return
        self.run_id = self.run_id or run_id
        if run_id != self.run_id:
            self._other_runs[run_id] = self._other_runs.get(run_id, 0) + 1
            return
        partial = entry.get("partial") is True
        if len(exchange) < 2 or not all(isinstance(m, dict) for m in exchange):
            self._note(
                f"journal line {number} ({conv_id!r} turn {turn.index + 1}): its exchange "
                "is not a user message and an answer"
            )
            return
        known = self._known.get(conv_id)
        if known is None:
            self._known.put(conv_id, Status.INTERRUPTED, fingerprint, str(entry.get("source", "")))
            started_at = str(entry.get("started_at", ""))
            self._recorded[conv_id] = _Recorded(TurnsDone(started_at=started_at))
        progress = self._recorded[conv_id].progress
        if progress is None or turn.index < len(progress.turns):
            return  # finished since, or a turn already known: a crash at the right moment
        if known is not None and known.fingerprint != fingerprint:
            self._note(
                f"journal line {number} ({conv_id!r} turn {turn.index + 1}) is for another "
                "version of the conversation than the transcript's"
            )
            return
        if turn.index > len(progress.turns):
            self._note(
                f"journal line {number} ({conv_id!r} turn {turn.index + 1}) does not follow "
                f"its {plural(len(progress.turns), 'recorded turn')}"
            )
            return
        if partial:  # the steps a turn had answered when the run stopped
            known_steps = progress.partial.steps or [] if progress.partial else []
            if len(turn.steps or []) < len(known_steps):
                return  # the transcript's line of a later stop knows more
            progress.partial = turn
            progress.partial_exchange = exchange
            progress.partial_origin = f"{self.journal_path.name} line {number}"
            progress.failed_attempts = []  # the partial turn's attempts hold them
            progress.failed_index = None
            return
        progress.partial = None
        progress.turns.append(turn)
        progress.exchanges.extend(exchange)
        progress.origins.append(f"{self.journal_path.name} line {number}")
        progress.failed_attempts = []
        progress.failed_index = None

    # -- what the engine asks -------------------------------------------------------

    def check_resumable(self, conversation: Conversation, fingerprint: str) -> None:
        """Note a conversation of the batch; keep only its recorded turns that continue it.

        A conversation whose requests would now differ is refused by
        :meth:`check_same_batch`, after the whole batch was seen.
        """
        self._seen.add(conversation.id)
        known = self._known.get(conversation.id)
        if known is None:
            return
        if known.fingerprint != fingerprint:
            if self._changed is None:
                self._changed = changed_error(self.path, conversation, known.source)
            return
        progress = self.progress(conversation.id)
        if progress is not None:
            note = keep_matching(progress, conversation)
            if note is not None:
                self._note(note)

    def check_same_batch(self) -> None:
        """Refuse an output of another batch; report what resuming discarded.

        Call after :meth:`check_resumable` for every conversation of the batch.
        """
        foreign = [cid for cid in self._known if cid not in self._seen]
        self._seen = set()
        if foreign:
            recorded = self._recorded.get(foreign[0])
            shard = None if recorded is None else recorded.shard
            where = f"from {self._known[foreign[0]].source or 'an unnamed file'}"
            if isinstance(shard, dict):
                where += f", shard {shard.get('index')}/{shard.get('count')}"
            raise OutputError(
                f"{self.path} holds {plural(len(foreign), 'conversation')} "
                f"that {'are' if len(foreign) > 1 else 'is'} not in this batch "
                f"(e.g. {foreign[0]!r} {where}): it is the output of another batch or other "
                "options (files, --model, --repeat, --shard); resume it with the same ones, "
                "or write to a new output with -o"
            )
        if self._changed is not None:
            raise self._changed
        notes = list(self._notes)
        if self._more_notes:
            notes.append(f"... and {self._more_notes} more discarded")
        self.resume_report = replace(self.resume_report, discarded=tuple(notes))

    def tokens_used(self) -> int:
        """Prompt and completion tokens the output's conversations already used.

        So ``--budget-tokens`` holds for the output across resumes; counts the
        turns kept by :meth:`check_resumable`.
        """
        total = 0
        for conv_id, recorded in self._recorded.items():
            if self._known.status(conv_id) in Status.FINISHED or recorded.progress is None:
                total += recorded.tokens
            else:
                total += tokens_of(recorded.progress.turns)
                partial = recorded.progress.partial
                steps = partial.steps or [] if partial is not None else []
                usages = [s.get("usage") for s in steps if isinstance(s, dict)]
                total += tokens_of([TurnRecord(0, 0, [], usage=u) for u in usages])
        return total

    def status(self, conv_id: str) -> str | None:
        """The status the output holds for a conversation, if any."""
        return self._known.status(conv_id)

    def is_completed(self, conv_id: str) -> bool:
        """Whether the output already holds this conversation with every turn answered."""
        return self._known.status(conv_id) in Status.FINISHED

    def progress(self, conv_id: str) -> TurnsDone | None:
        """Where an unfinished conversation continues, or None to start afresh."""
        recorded = self._recorded.get(conv_id)
        if recorded is None or self._known.status(conv_id) in Status.FINISHED:
            return None
        return recorded.progress

    # -- writing -------------------------------------------------------------------

    async def record_turn(self, record: ConversationRecord, turn: TurnRecord) -> None:
        """Make one completed turn durable before the next request is sent."""
        await self._journal_turn(record, turn, partial=False)

    async def record_step(self, record: ConversationRecord, turn: TurnRecord) -> None:
        """Make the steps a turn has answered so far durable before its next request."""
        await self._journal_turn(record, turn, partial=True)

    async def _journal_turn(
        self, record: ConversationRecord, turn: TurnRecord, *, partial: bool
    ) -> None:
        if self._journal is None:
            self._journal = AppendFile(
                self.journal_path,
                open_journal(self.journal_path, self._journal_end),
                self._main.syncer,
            )
        end = len(record.messages) if partial else turn.answer_index + 1
        exchange = record.messages[turn.message_index : end]
        line: dict[str, Any] = {
            "run_id": record.run_id,
            "id": record.id,
            "source": record.source,
            "fingerprint": record.fingerprint,
            "started_at": record.started_at,
            "turn": turn.as_dict(),
            "exchange": exchange,
        }
        if partial:
            line["partial"] = True
        self._journal.append(_dumps(line))
        await self._journal.sync()

    def append_conversation(self, record: ConversationRecord) -> None:
        """Append a conversation's final line (durable after :meth:`flush`)."""
        if record.id in self._known:
            self._superseded = True
        self._main.append(_dumps(record.as_dict()))
        self._known.put(record.id, record.status, record.fingerprint, record.source)
        self._recorded.pop(record.id, None)

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
                    compact(self.path)
        finally:
            if self._journal is not None:
                self._journal.close()
            self._main.close()
            self._main.syncer.stop()


def default_output_path(folder: Path, *, now: datetime | None = None, suffix: str = "") -> Path:
    """A new file name under ``folder`` that does not exist yet (``suffix``: e.g. a shard)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S") + suffix
    candidate = folder / f"mtrun-{stamp}.jsonl"
    number = 2
    while candidate.exists() or candidate.with_name(candidate.name + JOURNAL_SUFFIX).exists():
        candidate = folder / f"mtrun-{stamp}-{number}.jsonl"
        number += 1
    return candidate
