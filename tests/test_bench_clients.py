"""The benchmark's own clients: the raw floor (a hand-written HTTP/1.1 replay that must be a true
replay) and ``bench_transport.py``'s candidates, which must really post what they measure."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import bench_transport
from bench_clients import _client_raw
from bench_server import BenchServer, ServerConfig


@pytest.fixture
def serve() -> Iterator[object]:
    """Start a bench server with a config on a loop of its own thread; yield a starter."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servers: list[BenchServer] = []

    def start(config: ServerConfig) -> tuple[BenchServer, str]:
        server = BenchServer(config)
        servers.append(server)
        url = asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
        return server, url

    yield start

    async def shut() -> None:
        for server in servers:
            if server.server is not None:
                server.server.close()
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await asyncio.sleep(0)  # the closed transports let go of their sockets

    asyncio.run_coroutine_threadsafe(shut(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


def test_every_turn_is_answered_and_later_turns_carry_longer_histories(
    serve: object,
) -> None:
    server, url = serve(ServerConfig(base_latency=0.0, per_token=0.0, answer_tokens=5))  # type: ignore[operator]
    convs = [{"id": f"c{i}", "turns": [f"q{i}.{t}" for t in range(i + 1)]} for i in range(5)]
    assert _client_raw(convs, url, 2) == {"turns_ok": 15, "failed": 0}
    prompts = sorted(r.used_tokens for r in server.stats.records)  # prompt + 5 answered
    assert len(prompts) == 15
    # Each later turn carries the earlier ones and their answers: longer prompts.
    assert prompts[-1] > prompts[0]


def test_a_refused_turn_ends_its_conversation_and_is_counted(serve: object) -> None:
    config = ServerConfig(base_latency=0.05, per_token=0.0, capacity=1, overflow="reject")
    _, url = serve(config)  # type: ignore[operator]
    convs = [{"id": f"c{i}", "turns": ["a", "b"]} for i in range(4)]
    counts = _client_raw(convs, url, 4)  # 4 at once against 1 slot: 429s
    assert counts["failed"] >= 1
    assert counts["turns_ok"] + 2 * counts["failed"] <= 8


@pytest.mark.parametrize("name", ["httpx+httpcore", "mtrun", "mtrun direct"])
def test_each_transport_candidate_posts_every_request_it_measures(serve: object, name: str) -> None:
    server, url = serve(ServerConfig(base_latency=0.0, per_token=0.0, answer_tokens=3))  # type: ignore[operator]
    factory = bench_transport._candidates(bench_transport.OLD_REV)[name]
    cpu_ms = asyncio.run(bench_transport._measure(f"{url}/chat/completions", factory, 40, 4))
    assert cpu_ms > 0
    answered = [r for r in server.stats.records if r.status == 200]
    assert len(answered) == 50 + 40  # the warm-up and the measured requests, all answered
