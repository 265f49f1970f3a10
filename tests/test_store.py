"""The transcript store: never overwriting, crash recovery, resume, compaction."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import ChatServer, error, read_jsonl
from virtualtime import clock, run_virtual

from runner.errors import OutputError
from runner.run.engine import RunConfig, run_batch
from runner.run.events import RunResult
from runner.spec.model import Conversation, Turn
from runner.transcripts.reader import read_transcript
from runner.transcripts.records import ConversationRecord, TurnRecord
from runner.transcripts.store import TranscriptStore, default_output_path

LOCAL = "http://127.0.0.1:9/v1"


def conv(cid: str, n: int, **kw: Any) -> Conversation:
    turns = tuple(Turn(f"{cid} question {i}") for i in range(n))
    return Conversation(id=cid, source="batch.yaml", turns=turns, **kw)


BATCH = [conv("a", 3), conv("b", 3), conv("c", 2)]


def run(
    path: Path, server: ChatServer, *, resume: bool = False, batch: list[Conversation] = BATCH
) -> RunResult:
    config = RunConfig(output=path, resume=resume, base_url=LOCAL, transport=server.transport)
    return run_virtual(run_batch(batch, config, sleep=asyncio.sleep, clock=clock))


@pytest.fixture
def reference(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """The records of an uninterrupted run of BATCH."""
    path = tmp_path / "reference.jsonl"
    run(path, ChatServer())
    return {r["id"]: r for r in read_jsonl(path)}


def test_existing_output_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text("precious\n")
    with pytest.raises(OutputError, match="already exists; pass --resume"):
        TranscriptStore(path)
    assert path.read_text() == "precious\n"


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    first = TranscriptStore(tmp_path / "out.jsonl")
    try:
        with pytest.raises(OutputError, match="being written by another mtrun process"):
            TranscriptStore(tmp_path / "out.jsonl", resume=True)
    finally:
        first.close(finished=True)


def test_default_output_path_never_reuses_a_name(tmp_path: Path) -> None:
    first = default_output_path(tmp_path)
    first.write_text("")
    second = default_output_path(tmp_path)
    assert second != first and second.parent == tmp_path and second.suffix == ".jsonl"


def crash_state(tmp_path: Path, reference: dict[str, dict[str, Any]]) -> Path:
    """Files as a kill -9 would leave them.

    ``a`` was completed; ``b`` had its first turn journaled and its second in
    flight; ``c`` had its first turn journaled and its final line torn.
    """
    path = tmp_path / "crashed.jsonl"
    store = TranscriptStore(path)
    records = {k: ConversationRecord.from_dict(v) for k, v in reference.items()}

    async def write() -> None:
        store.append_conversation(records["a"])
        await store.flush()
        await store.record_turn(records["b"], records["b"].turns[0])
        await store.record_turn(records["c"], records["c"].turns[0])

    asyncio.run(write())
    store.close(finished=False)
    line = json.dumps(reference["c"]).encode()
    with open(path, "ab") as fh:
        fh.write(line[: len(line) // 2])
    return path


def test_resume_after_a_crash_sends_no_completed_turn_again(
    tmp_path: Path, reference: dict[str, dict[str, Any]]
) -> None:
    path = crash_state(tmp_path, reference)
    server = ChatServer()
    result = run(path, server, resume=True)

    sent = [(b["messages"][-1]["content"]) for b in server.bodies]
    assert sorted(sent) == ["b question 1", "b question 2", "c question 1"]
    records = read_jsonl(path)
    assert sorted(r["id"] for r in records) == ["a", "b", "c"]
    for record in records:
        ref = reference[record["id"]]
        assert record["messages"] == ref["messages"]
        assert record["status"] == "completed"
        assert [t["index"] for t in record["turns"]] == list(range(len(ref["turns"])))
        assert record["run_id"] == ref["run_id"], "a resumed run keeps the output's run id"
    assert result.already_completed == 1 and result.completed == 3
    assert not path.with_name(path.name + ".journal").exists()


def test_a_torn_last_line_is_reported_and_cut(
    tmp_path: Path, reference: dict[str, dict[str, Any]]
) -> None:
    path = crash_state(tmp_path, reference)
    size_with_tear = path.stat().st_size
    store = TranscriptStore(path, resume=True)
    try:
        report = store.resume_report
        assert report.torn_bytes == size_with_tear - path.stat().st_size > 0
        assert report.completed == 1 and report.to_continue == 2
        assert store.is_completed("a") and not store.is_completed("c")
        progress = store.progress("c")
        assert progress is not None and len(progress.turns) == 1
        assert progress.exchanges == reference["c"]["messages"][0:2]
    finally:
        store.close(finished=False)
    assert path.read_bytes().endswith(b"\n")


def test_a_whole_last_record_missing_only_its_newline_is_kept(
    tmp_path: Path, reference: dict[str, dict[str, Any]]
) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text(json.dumps(reference["a"]))
    server = ChatServer()
    run(path, server, resume=True)
    assert not server.bodies_for("a question 0")
    assert sorted(r["id"] for r in read_jsonl(path)) == ["a", "b", "c"]


def test_a_broken_line_in_the_middle_is_an_error_naming_it(
    tmp_path: Path, reference: dict[str, dict[str, Any]]
) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text(json.dumps(reference["a"]) + "\n{broken\n" + json.dumps(reference["b"]) + "\n")
    before = path.read_bytes()
    with pytest.raises(OutputError, match=r"out\.jsonl:2: not a valid transcript line"):
        TranscriptStore(path, resume=True)
    assert path.read_bytes() == before


def test_interrupted_and_failed_conversations_continue_and_appear_once(
    tmp_path: Path, reference: dict[str, dict[str, Any]]
) -> None:
    path = tmp_path / "out.jsonl"

    def fail_second_turn_of_b(body: dict[str, Any], n: int) -> httpx.Response | None:
        if body["messages"][-1]["content"] == "b question 1":
            return error(400, "try later")
        return None

    first = run(path, ChatServer(fail_second_turn_of_b))
    assert first.failed == 1
    server = ChatServer()
    second = run(path, server, resume=True)
    assert [b["messages"][-1]["content"] for b in server.bodies] == [
        "b question 1",
        "b question 2",
    ]
    assert second.completed == 3 and second.failed == 0
    records = read_jsonl(path)
    assert sorted(r["id"] for r in records) == ["a", "b", "c"]
    b = next(r for r in records if r["id"] == "b")
    assert b["messages"] == reference["b"]["messages"]
    attempts = b["turns"][1]["attempts"]
    assert [a["outcome"] for a in attempts] == ["http_400", "ok"]
    assert attempts[0]["resumed"] is True and attempts[1]["attempt"] == 2


def test_resume_refuses_a_changed_conversation(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    run(path, ChatServer())
    changed = [conv("a", 3, system="new system prompt"), conv("b", 3), conv("c", 2)]
    server = ChatServer()
    with pytest.raises(OutputError, match="conversation 'a' has changed since"):
        run(path, server, resume=True, batch=changed)
    assert server.bodies == []


def test_resume_of_a_finished_output_sends_nothing(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    run(path, ChatServer())
    before = path.read_bytes()
    server = ChatServer()
    result = run(path, server, resume=True)
    assert server.bodies == [] and result.completed == 3 and result.already_completed == 3
    assert path.read_bytes() == before


def test_read_transcript_takes_the_last_line_per_id(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    lines = [
        {"id": "x", "status": "interrupted"},
        {"id": "y", "status": "completed"},
        {"id": "x", "status": "completed"},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + '\n{"id": "z", "sta')
    records = read_transcript(path)
    assert [(r["id"], r["status"]) for r in records] == [("y", "completed"), ("x", "completed")]


def test_a_journal_left_by_a_crash_is_not_reused_by_a_new_run(
    tmp_path: Path, reference: dict[str, dict[str, Any]]
) -> None:
    path = crash_state(tmp_path, reference)
    path.unlink()
    with pytest.raises(OutputError, match=r"crashed\.jsonl\.journal is left from an earlier run"):
        TranscriptStore(path)
    server = ChatServer()
    run(path, server, resume=True)  # --resume continues from the journal alone
    assert sorted(b["messages"][-1]["content"] for b in server.bodies) == [
        "a question 0",
        "a question 1",
        "a question 2",
        "b question 1",
        "b question 2",
        "c question 1",
    ]


def one_exchange() -> ConversationRecord:
    """A conversation's record with one question and its answer."""
    return ConversationRecord(
        run_id="r",
        id="a",
        source="batch.yaml",
        model="m",
        base_url=LOCAL,
        params={},
        fingerprint="f",
        started_at="t",
        messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
    )


def test_a_turn_is_on_disk_when_recorded_and_a_failed_fsync_is_an_output_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.journal"
    fsynced_sizes: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        fsynced_sizes.append(os.fstat(fd).st_size)

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    record = one_exchange()

    async def main() -> None:
        store = TranscriptStore(path)
        try:
            monkeypatch.setattr(os, "fsync", fsync)
            await store.record_turn(record, TurnRecord(index=0, message_index=0, attempts=[]))
            assert fsynced_sizes == [journal.stat().st_size]  # the whole line, before returning

            monkeypatch.setattr(os, "fsync", failing_fsync)
            second = TurnRecord(index=1, message_index=0, attempts=[])
            with pytest.raises(OutputError, match=r"cannot write .*Input/output error"):
                await store.record_turn(record, second)
            with pytest.raises(OutputError, match="cannot write"):
                await store.record_turn(record, second)  # nothing more goes to a broken file
        finally:
            store.close(finished=False)

    asyncio.run(main())


def _fsync_threads() -> int:
    import threading

    return sum(t.name == "mtrun-fsync" for t in threading.enumerate())


def test_the_fsync_thread_starts_with_the_store_and_ends_with_it(tmp_path: Path) -> None:
    """Started before anything is sent (starting a thread stalls the loop for milliseconds on
    a busy machine: not during a run's first wave), one for the transcript and its journal."""
    before = _fsync_threads()
    store = TranscriptStore(tmp_path / "out.jsonl")
    assert _fsync_threads() == before + 1

    async def record() -> None:
        record = one_exchange()
        await store.record_turn(record, TurnRecord(index=0, message_index=0, attempts=[]))
        store.append_conversation(record)
        await store.flush()

    asyncio.run(record())
    assert store.journal_path.exists() and _fsync_threads() == before + 1  # the same thread
    store.close(finished=True)
    assert _fsync_threads() == before


def test_a_store_that_cannot_resume_leaves_no_thread_behind(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text("not a record\n" * 2)  # a bad line before the last: not resumable
    before = _fsync_threads()
    with pytest.raises(OutputError):
        TranscriptStore(path, resume=True)
    assert _fsync_threads() == before


def test_a_line_cut_short_by_a_failed_write_is_cut_off_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk mid-line: the file keeps its whole lines only, and takes no more."""
    path = tmp_path / "out.jsonl"
    real_write = os.write
    calls = 0

    def write_some_then_fail(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_write(fd, bytes(data[:7]))  # a short write: the rest follows
        if calls == 2:
            return real_write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, "No space left on device")

    async def main() -> None:
        store = TranscriptStore(path)
        try:
            first = one_exchange()
            store.append_conversation(first)
            await store.flush()
            whole = path.read_bytes()
            monkeypatch.setattr(os, "write", write_some_then_fail)
            second = dataclasses.replace(first, id="second")
            with pytest.raises(OutputError, match="No space left"):
                store.append_conversation(second)
            assert path.read_bytes() == whole  # the 12 bytes written of the line are gone
            with pytest.raises(OutputError, match="No space left"):
                store.append_conversation(second)
            assert calls == 3  # a broken file is not written again
        finally:
            store.close(finished=False)

    asyncio.run(main())
