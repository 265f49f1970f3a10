"""An endpoint that accepts connections and never answers: the run stops, resumable.

Real sockets and the real client; backoff waits are skipped, time is real
(every request has to time out for real).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest
from faultserver import FaultServer
from helpers import read_jsonl
from virtualtime import RecordedSleep

from runner.cli.base import EXIT_FAILED
from runner.cli.replay import exit_code
from runner.run.engine import RunConfig, run_batch
from runner.run.events import RunResult
from runner.send.retry import RetryPolicy
from runner.spec.loader import load_conversations
from runner.spec.model import Conversation

TIMEOUT = 0.3
COUNT = 10


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> list[Conversation]:
    folder = tmp_path_factory.mktemp("batch")
    items = [{"id": f"c{i}", "turns": [f"c{i} hello", f"c{i} again"]} for i in range(COUNT)]
    (folder / "batch.yaml").write_text(json.dumps({"conversations": items}))
    return load_conversations([str(folder / "batch.yaml")])


@contextlib.contextmanager
def listening_only() -> Iterator[str]:
    """A port whose kernel accepts connections for a server that never reads or answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


@contextlib.contextmanager
def reading_never_answering() -> Iterator[str]:
    """An HTTP server that reads each request and then hangs until it is stopped."""
    with FaultServer(rule=lambda *_: "hang", hang_s=60.0) as server:
        yield server.base_url


def run(
    batch: list[Conversation],
    url: str,
    out: Path,
    *,
    concurrency: int | Literal["auto"],
    resume: bool = False,
) -> RunResult:
    config = RunConfig(
        output=out,
        resume=resume,
        base_url=url,
        timeout=TIMEOUT,
        concurrency=concurrency,
        retry=RetryPolicy(max_retries=6),
    )
    return asyncio.run(
        run_batch(batch, config, sleep=RecordedSleep(skip=True), clock=time.monotonic)
    )


@pytest.mark.parametrize("server", [listening_only, reading_never_answering])
@pytest.mark.parametrize("concurrency", [1, 8, "auto"])
def test_an_endpoint_that_never_answers_stops_the_run_within_about_two_timeouts(
    server: Callable[[], contextlib.AbstractContextManager[str]],
    concurrency: int | Literal["auto"],
    batch: list[Conversation],
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.jsonl"
    with server() as url:
        began = time.monotonic()
        result = run(batch, url, out, concurrency=concurrency)
        took = time.monotonic() - began
    # Two timeouts (0.6 s) and some turnaround; a loaded machine gets a lot of room,
    # but not the 10 conversations x 7 attempts x 0.3 s of retrying each one.
    assert took < 8.0
    assert result.stop_reason is not None
    assert result.stop_reason.startswith(f"{url} is not answering: ")
    assert "(--timeout 0.3s)" in result.stop_reason and "--resume" in result.stop_reason
    assert exit_code(result) == EXIT_FAILED  # 3
    assert result.failed == 0 and result.completed == 0
    assert result.interrupted >= 1 and result.interrupted + result.not_started == COUNT
    records = read_jsonl(out)
    assert {r["status"] for r in records} == {"interrupted"}
    # Timeouts with nothing answered say the endpoint is down, not that we send too fast.
    assert result.limit_changes == ()

    with FaultServer() as healthy:
        again = run(batch, healthy.base_url, out, concurrency=concurrency, resume=True)
        assert healthy.violations == []
    assert again.completed == COUNT and again.failed == 0 and again.stop_reason is None
    assert {r["id"] for r in read_jsonl(out) if r["status"] == "completed"} == {c.id for c in batch}
