"""Every fault a chat endpoint can throw, on real sockets: the transcripts come out unchanged."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from faultserver import ERROR_STATUSES, FaultServer, closed_port_url
from helpers import read_jsonl
from virtualtime import RecordedSleep

from runner.run.engine import RunConfig, run_batch
from runner.run.events import Event, RetryScheduled, RunResult
from runner.send.retry import RetryPolicy
from runner.spec.loader import load_conversations
from runner.spec.model import Conversation

COUNT, TURNS = 5, 3
TIMEOUT = 0.5

OUTCOME = {
    **{name: name for name in ERROR_STATUSES},
    "429_seconds": "http_429",
    "429_fraction": "http_429",
    "429_date": "http_429",
    "429_ms": "http_429",
    "429_garbage": "http_429",
    "429_none": "http_429",
    "drop": "connection_dropped",
    "hang": "read_timeout",
    "truncated_json": "invalid_json",
    "no_choices": "no_choices",
    "stream_cut": "connection_dropped",
    "stream_truncated": "stream_cut",
}
RETRY_AFTER: dict[str, tuple[float, float] | None] = {
    "429_seconds": (2.0, 2.0),
    "429_fraction": (0.25, 0.25),
    "429_date": (1.0, 3.0),  # an HTTP-date has whole seconds: 3 s ahead, read a moment later
    "429_ms": (1.5, 1.5),
    "429_garbage": None,
    "429_none": None,
}
TRANSIENT = [k for k in OUTCOME if k in ERROR_STATUSES and ERROR_STATUSES[k] >= 500]
TRANSIENT += ["429_seconds", "429_fraction", "429_date", "429_ms", "429_garbage", "429_none"]
TRANSIENT += ["drop", "hang", "truncated_json", "no_choices"]
STREAMED = ["stream_cut", "stream_truncated", "stream_no_done", "http_503", "429_fraction", "drop"]
FATAL = ["http_400", "http_401", "http_403", "http_404", "http_422"]


def first_turn(i: int) -> str:
    return f"conversation {i}: what is a small language model?"


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> list[Conversation]:
    folder = tmp_path_factory.mktemp("batch")
    items = [
        {
            "id": f"conv-{i}",
            "turns": [first_turn(i)] + [f"conv {i} follow-up {t}" for t in range(1, TURNS)],
        }
        for i in range(COUNT)
    ]
    (folder / "batch.yaml").write_text(json.dumps({"conversations": items}))
    return load_conversations([str(folder / "batch.yaml")])


def messages_by_id(path: Path) -> dict[str, str]:
    """Each conversation's messages as canonical JSON: byte-for-byte comparable."""
    return {r["id"]: json.dumps(r["messages"], sort_keys=True) for r in read_jsonl(path)}


def run(
    batch: list[Conversation],
    server: FaultServer | None,
    out: Path,
    *,
    base_url: str | None = None,
    stream: bool = False,
    concurrency: int = 4,
    policy: RetryPolicy | None = None,
) -> tuple[RunResult, RecordedSleep, list[Event]]:
    sleeps = RecordedSleep(skip=True)
    events: list[Event] = []
    config = RunConfig(
        output=out,
        base_url=base_url or (server.base_url if server else ""),
        timeout=TIMEOUT,
        concurrency=concurrency,
        stream=stream,
        retry=policy or RetryPolicy(max_retries=4, backoff_base=0.01, max_retry_after=10.0),
    )
    result = asyncio.run(
        run_batch(
            batch,
            config,
            sleep=sleeps,
            clock=sleeps.clock,
            rng=random.Random(7),
            on_event=events.append,
        )
    )
    return result, sleeps, events


@pytest.fixture(scope="module")
def reference(
    batch: list[Conversation], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    out = tmp_path_factory.mktemp("reference") / "ref.jsonl"
    with FaultServer() as server:
        result, _, _ = run(batch, server, out)
    assert result.completed == COUNT and not server.violations
    return messages_by_id(out)


def schedule(fault: str) -> dict[tuple[str, int], list[str]]:
    """The fault on turn 1 of every conversation, twice in a row on turn 2 of one."""
    plan = {(first_turn(i), 1): [fault] for i in range(COUNT)}
    plan[(first_turn(0), 2)] = [fault, fault]
    plan[(first_turn(1), 0)] = [fault]
    return plan


def attempts_of(path: Path) -> list[dict[str, Any]]:
    return [a for r in read_jsonl(path) for t in r["turns"] for a in t["attempts"]]


def check_recovered(
    fault: str, out: Path, server: FaultServer, sleeps: RecordedSleep, reference: dict[str, str]
) -> None:
    records = read_jsonl(out)
    assert {r["status"] for r in records} == {"completed"}, [r.get("error") for r in records]
    assert messages_by_id(out) == reference
    assert server.violations == []
    failed = [a for a in attempts_of(out) if a["outcome"] != "ok"]
    injected = len(server.injected)
    if fault == "stream_no_done":
        assert injected == COUNT + 2  # answered at once: the second planned fault is unused
        assert failed == []  # a complete answer, even without [DONE]
        return
    assert injected == COUNT + 3
    assert len(failed) == injected
    assert {a["outcome"] for a in failed} == {OUTCOME[fault]}
    assert all(a.get("message") for a in failed)
    expected = RETRY_AFTER.get(fault)
    for a in failed:
        if expected is None:
            assert "retry_after_s" not in a
        else:
            low, high = expected
            assert low <= a["retry_after_s"] <= high
            # Waited at least what was asked (the recorded wait is rounded to ms).
            assert a["wait_s"] >= a["retry_after_s"] - 0.0005
    if expected is not None:
        # Every wait asked for has a distinct wait at least as long (other waits,
        # e.g. pacing after a 429, may be in the list too): compare largest first.
        asked = sorted((a["retry_after_s"] for a in failed), reverse=True)
        waited = sorted((w for w in sleeps.waits if w >= expected[0]), reverse=True)
        assert len(waited) >= len(asked)
        assert all(w >= r for w, r in zip(waited, asked, strict=False))


@pytest.mark.parametrize("fault", TRANSIENT)
def test_transient_faults_are_retried_and_transcripts_stay_identical(
    fault: str, batch: list[Conversation], reference: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    with FaultServer(faults=schedule(fault), hang_s=TIMEOUT * 3) as server:
        result, sleeps, _ = run(batch, server, out)
    assert result.completed == COUNT and result.failed == 0
    assert result.retries == COUNT + 3
    check_recovered(fault, out, server, sleeps, reference)


@pytest.mark.parametrize("fault", STREAMED)
def test_streamed_runs_survive_stream_faults(
    fault: str, batch: list[Conversation], reference: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    with FaultServer(faults=schedule(fault)) as server:
        result, sleeps, _ = run(batch, server, out, stream=True)
    assert result.completed == COUNT
    assert all(b.get("stream") is True for b in server.requests)
    check_recovered(fault, out, server, sleeps, reference)


def test_random_faults_at_a_seeded_rate(
    batch: list[Conversation], reference: dict[str, str], tmp_path: Path
) -> None:
    kinds = ["http_500", "http_502", "http_504", "429_fraction", "truncated_json", "no_choices"]
    out = tmp_path / "out.jsonl"
    with FaultServer(rate=0.4, kinds=kinds, seed=3) as server:
        result, _, _ = run(batch, server, out, policy=RetryPolicy(max_retries=30))
    assert result.completed == COUNT
    assert len(server.injected) > 0
    assert messages_by_id(out) == reference
    assert server.violations == []


@pytest.mark.parametrize("fault", FATAL)
def test_client_errors_fail_one_conversation_after_one_request(
    fault: str, batch: list[Conversation], reference: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    key = first_turn(2)
    with FaultServer(faults={(key, 1): [fault]}) as server:
        result, _, _ = run(batch, server, out)
    assert result.failed == 1 and result.completed == COUNT - 1
    assert server.per_turn[(key, 1)] == 1 and (key, 2) not in server.per_turn
    records = {r["id"]: r for r in read_jsonl(out)}
    failed = records.pop("conv-2")
    assert failed["status"] == "failed"
    status = ERROR_STATUSES[fault]
    assert failed["error"] == {
        "turn": 1,
        "kind": fault,
        "status": status,
        "message": f"HTTP {status}: injected {fault} for {key}",
    }
    assert [a["outcome"] for a in failed["turns"][1]["attempts"]] == [fault]
    # The error never enters the history: the failed turn's user message is last.
    assert [m["role"] for m in failed["messages"]] == ["user", "assistant", "user"]
    assert all(r["status"] == "completed" for r in records.values())
    assert {k: v for k, v in messages_by_id(out).items() if k != "conv-2"} == {
        k: v for k, v in reference.items() if k != "conv-2"
    }
    assert server.violations == []


def test_endpoint_down_stops_the_run_quickly(batch: list[Conversation], tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    started = time.monotonic()
    result, _, events = run(batch, None, out, base_url=closed_port_url())
    assert time.monotonic() - started < 10
    assert result.stop_reason is not None and "is unreachable" in result.stop_reason
    assert "--resume" in result.stop_reason
    retries = [e for e in events if isinstance(e, RetryScheduled)]
    assert {e.outcome for e in retries} == {"connect_error"}
    assert len(retries) <= 12 + 4  # the down threshold, plus attempts already in flight
    records = read_jsonl(out)
    assert records and {r["status"] for r in records} == {"interrupted"}
    assert result.completed == 0 and result.failed == 0


def test_endpoint_going_down_mid_run_leaves_a_resumable_output(
    batch: list[Conversation], reference: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    server = FaultServer(latency=(0.01, 0.02))
    with server:
        url = server.base_url

        def stop_soon() -> None:
            while server.count < 4:
                time.sleep(0.005)
            server.stop()

        stopper = threading.Thread(target=stop_soon)
        stopper.start()
        # Waits take no time here, so one conversation could spend a small retry
        # budget before the others' failures add up to "down": give it room.
        policy = RetryPolicy(max_retries=30, backoff_base=0.01, max_retry_after=10.0)
        result, _, _ = run(batch, server, out, base_url=url, policy=policy)
        stopper.join()
    assert result.stop_reason is not None and "unreachable" in result.stop_reason
    assert {r["status"] for r in read_jsonl(out)} <= {"interrupted", "completed"}
    with FaultServer() as again:
        result2, _, _ = asyncio_resume(batch, again, out)
    assert result2.completed + result2.already_completed == COUNT
    assert messages_by_id(out) == reference


def asyncio_resume(
    batch: list[Conversation], server: FaultServer, out: Path
) -> tuple[RunResult, RecordedSleep, list[Event]]:
    sleeps = RecordedSleep(skip=True)
    config = RunConfig(output=out, resume=True, base_url=server.base_url, timeout=TIMEOUT)
    result = asyncio.run(run_batch(batch, config, sleep=sleeps, clock=sleeps.clock))
    return result, sleeps, []


def test_quota_exhausted_stops_the_run(batch: list[Conversation], tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    key = first_turn(0)
    with FaultServer(faults={(key, 1): ["quota"]}, latency=(0.02, 0.04)) as server:
        result, _, _ = run(batch, server, out, concurrency=2)
        count_at_end = server.count
    assert result.stop_reason is not None and "quota" in result.stop_reason
    assert server.per_turn[(key, 1)] == 1
    records = {r["id"]: r for r in read_jsonl(out)}
    assert records["conv-0"]["status"] == "failed"
    assert records["conv-0"]["error"]["kind"] == "http_429"
    assert "exceeded your current quota" in records["conv-0"]["error"]["message"]
    others = {r["status"] for k, r in records.items() if k != "conv-0"}
    assert others <= {"interrupted", "completed"}
    assert result.completed < COUNT - 1 or result.not_started > 0 or "interrupted" in others
    # Nothing new starts after the quota error: at most the other in-flight turn finishes.
    assert count_at_end <= server.per_turn[(key, 0)] + 2 + 2 * TURNS
    assert server.violations == []
