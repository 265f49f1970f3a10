"""A storm of 429s without Retry-After, then a healthy server: the rate comes back in seconds.

On a virtual-time event loop, so that minutes of a run take a moment and
every wait and every concurrent request keeps its real shape.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import httpx
from virtualtime import run_virtual

from runner.http.mock import answer
from runner.run.engine import RunConfig, run_batch
from runner.run.events import RunResult
from runner.spec.model import Conversation, Turn

LATENCY = 1.0
STORM = (10.0, 30.0)
"""Seconds after the start during which every request is answered 429, with no Retry-After."""


def rate(times: list[float], start: float, end: float) -> float:
    """Answers a second between ``start`` and ``end``."""
    return sum(start <= t < end for t in times) / (end - start)


def test_the_send_rate_recovers_within_seconds_after_a_storm_of_429s(tmp_path: Path) -> None:
    answered: list[float] = []
    refused: list[float] = []

    async def go() -> RunResult:
        loop = asyncio.get_running_loop()
        began = loop.time()

        async def handler(request: httpx.Request) -> httpx.Response:
            arrived = loop.time() - began
            if STORM[0] <= arrived < STORM[1]:
                refused.append(arrived)
                return httpx.Response(429, json={"error": {"message": "Rate limit reached"}})
            await asyncio.sleep(LATENCY)
            answered.append(loop.time() - began)
            return httpx.Response(200, json=answer(json.loads(request.content)))

        convs = [
            Conversation(id=f"c{i}", source="s", turns=tuple(Turn(f"c{i} {t}") for t in range(30)))
            for i in range(6)
        ]
        config = RunConfig(
            output=tmp_path / "o.jsonl",
            base_url="http://127.0.0.1:9/v1",
            transport=httpx.MockTransport(handler),
            concurrency=4,
        )
        return await run_batch(
            convs, config, sleep=asyncio.sleep, clock=loop.time, rng=random.Random(5)
        )

    result = run_virtual(go())
    assert result.completed == 6 and result.failed == 0
    assert len(refused) > 10
    before = rate(answered, 3.0, STORM[0])
    assert before > 3.5  # four requests in flight, a second each
    # From a few seconds after the storm, about the rate before it (the pace learned
    # from its first 429 is 85% of that, and speeds up from there).
    after = rate(answered, STORM[1] + 3.0, STORM[1] + 10.0)
    assert after >= 0.7 * before, (before, after)  # it was 0.2 of it
