"""-j auto against servers that queue: the waits it reads, the parallelism it finds, the runs.

The runs are on virtual time against ``sim_queue.QueueServer`` (K slots, FIFO,
never a 429, answer lengths varying by turn, abandoned requests still
served), so a minute of a llama.cpp-like server takes milliseconds and every
count is exact.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

import httpx
import pytest
from sim_queue import QueueServer
from virtualtime import clock, run_virtual

from runner.run.engine import RunConfig, run_batch
from runner.run.events import RunResult
from runner.send.queueing import Answer, Envelope, QueueWatch, served_at_once
from runner.spec.model import Conversation, Turn


def test_the_envelope_bounds_a_linear_service_time_from_above() -> None:
    """Points on or above ``s(t) = 0.2 + 0.002 t``: the envelope never falls below the line."""
    env = Envelope()
    line = [(t, 0.2 + 0.002 * t) for t in (50, 300, 120)]
    for t, s in line:
        env.add(t, s)
    env.add(200, 5.0)  # a queued answer: above the hull, changes nothing
    assert len(env) == 3
    for t in (0, 10, 50, 80, 120, 200, 300, 450, 1000):
        bound = env.bound(t)
        assert bound is not None and bound >= 0.2 + 0.002 * t - 1e-9
    assert env.bound(120) == pytest.approx(0.44)  # exact where it was measured
    assert env.bound(10) == pytest.approx(0.3)  # left of the points: flat from the first
    assert env.bound(600) == pytest.approx(0.8 * 2)  # right: in proportion to the last


def test_a_faster_answer_tightens_the_envelope_and_a_restart_forgets_it() -> None:
    env = Envelope()
    env.add(100, 1.0)
    env.add(300, 1.6)
    env.add(200, 0.9)  # below the segment: becomes a vertex
    assert (env.xs, env.ys) == ([100, 200, 300], [1.0, 0.9, 1.6])
    env.add(100, 0.5)
    assert env.bound(100) == 0.5
    env.restart(250, 2.0)
    assert (env.xs, env.ys) == ([250], [2.0])


def test_waits_are_read_whatever_the_answers_lengths() -> None:
    """One slot, two requests in flight: each waits for the other, long answers or short."""
    watch = QueueWatch()
    for tokens in (20, 400):  # unqueued answers of both lengths first
        watch.observe(Answer(latency_s=0.2 + 0.002 * tokens, tokens=tokens), alone=True)
    assert watch.reading().ratio == 0.0
    # Behind a 0.6 s answer, a 0.28 s one waits 0.6 s: raw latency says "short", the wait
    # says "as long as a service".
    behind = Answer(latency_s=0.6 + 0.28, tokens=40)
    assert watch.wait_of(behind) == pytest.approx(0.6)
    for _ in range(8):
        watch.observe(behind, in_flight=2)
        watch.observe(Answer(latency_s=0.28 + 0.6, tokens=200), in_flight=2)
    reading = watch.reading()
    assert reading.ratio > 0.75 and 1.0 <= reading.slots <= 1.2


def test_an_answer_sent_alone_and_far_slower_than_the_envelope_restarts_it() -> None:
    """The server got slower for good: one request alone says so."""
    watch = QueueWatch()
    watch.observe(Answer(latency_s=0.3, tokens=100), alone=True)
    watch.observe(Answer(latency_s=1.2, tokens=100), alone=True)
    assert watch.latency.bound(100) == 1.2
    assert watch.reading().ratio == 0.0


def test_answers_served_at_once_lie_on_one_rising_line() -> None:
    """``0.2 + 0.002 t`` each, or one after another: the same four sizes, told apart."""
    sizes = [20, 400, 120, 300]
    alone = [0.2 + 0.002 * t for t in sizes]
    behind = [sum(alone[: i + 1]) for i in range(len(sizes))]  # one slot, in that order
    assert served_at_once([Answer(s, t) for s, t in zip(alone, sizes, strict=True)])
    assert not served_at_once([Answer(s, t) for s, t in zip(behind, sizes, strict=True)])
    assert not served_at_once([Answer(0.5 * n, 100) for n in (1, 2, 3, 4)])  # equal sizes
    # One slot, sizes growing just so: each answer lies on the envelope of the others, but
    # the four are on no one line.
    sizes = [20, 100, 300, 400]
    behind = [0.24, 0.64, 1.44, 2.44]
    watch = QueueWatch()
    for latency, tokens in zip(behind, sizes, strict=True):
        watch.latency.add(tokens, latency)
    assert all(watch.wait_of(Answer(y, t)) < 0.25 * y for y, t in zip(behind, sizes, strict=True))
    assert not served_at_once([Answer(y, t) for y, t in zip(behind, sizes, strict=True)])
    # Streamed: whole answers on a line, first tokens one behind another (a queue of prefills).
    firsts = [Answer(0.4, 100, prompt_tokens=50, first_token_s=0.1 * n) for n in (1, 2, 3, 4)]
    assert not served_at_once(firsts)


def batch(count: int, turns: int) -> list[Conversation]:
    return [
        Conversation(
            id=f"c{i}", source="s", turns=tuple(Turn(f"c{i} turn {t}") for t in range(turns))
        )
        for i in range(count)
    ]


def lower_bound(server: QueueServer, convs: list[Conversation]) -> float:
    """The makespan no client can beat: all the work over K slots, or the longest chain."""

    def service(conv: Conversation, t: int) -> float:
        body = {"messages": [{"role": "user", "content": conv.turns[t].content}]}
        return server.service_s(server.tokens_for(body))

    chains = [sum(service(c, t) for t in range(len(c.turns))) for c in convs]
    return max(max(chains), sum(chains) / server.slots)


def run(
    server: QueueServer,
    convs: list[Conversation],
    tmp_path: Path,
    *,
    timeout: float,
    stream: bool = False,
    concurrency: int | Literal["auto"] = "auto",
) -> tuple[RunResult, float, float]:
    """Run ``convs`` with nothing else configured; return the result, start and end."""
    config = RunConfig(
        output=tmp_path / "out.jsonl",
        base_url="http://127.0.0.1:9/v1",
        transport=httpx.MockTransport(server.handle),
        timeout=timeout,
        stream=stream,
        concurrency=concurrency,
    )
    start = clock()
    result = run_virtual(run_batch(convs, config, sleep=asyncio.sleep, clock=clock))
    return result, start, clock()


@pytest.mark.parametrize(
    ("slots", "count", "turns", "stream"),
    [(1, 20, 3, False), (4, 40, 4, False), (4, 40, 4, True), (16, 200, 4, False)],
)
def test_auto_finds_the_parallel_slots_of_a_queueing_server(
    slots: int, count: int, turns: int, stream: bool, tmp_path: Path
) -> None:
    """K = 1, 4, 16 slots; answers of 20-400 tokens; --timeout six mean answers."""
    server = QueueServer(slots=slots, base_s=0.2, per_token_s=0.002)
    convs = batch(count, turns)
    timeout = 6 * server.service_s((server.min_tokens + server.max_tokens) / 2)
    result, start, end = run(server, convs, tmp_path, timeout=timeout, stream=stream)

    assert result.completed == count and result.failed == 0 and result.stop_reason is None
    assert server.abandoned == 0  # no request timed out, none left for the server to chew on
    assert server.served == count * turns  # one request per turn: nothing retried
    assert end - start <= 1.10 * lower_bound(server, convs)
    # Settled: in the middle of the run, between K and 2K requests in flight at every moment.
    span = end - start
    fewest, most, _ = server.open_between(start + 0.25 * span, start + 0.75 * span)
    assert slots <= fewest and most <= 2 * slots
    assert any(c.reason.startswith("queueing") for c in result.limit_changes)


def test_the_queued_workload_of_issue_11_completes(tmp_path: Path) -> None:
    """One slot, every answer 1/6 of --timeout: it used to stop after 5 of 60 turns (exit 3)."""
    server = QueueServer(slots=1, base_s=0.5, per_token_s=0.0)
    convs = batch(20, 3)
    result, start, end = run(server, convs, tmp_path, timeout=3.0)
    assert result.stop_reason is None and result.completed == 20
    assert (server.served, server.abandoned) == (60, 0)
    assert end - start <= 1.10 * 30.0  # 60 answers of 0.5 s, one at a time


def test_a_queueing_server_that_hangs_mid_run_is_still_found_down(tmp_path: Path) -> None:
    """It answers, then takes requests in and never answers: stopped, resumable."""
    server = QueueServer(slots=4, base_s=0.2, per_token_s=0.002, silent_from=clock() + 5.0)
    timeout = 3.0
    result, start, end = run(server, batch(40, 4), tmp_path, timeout=timeout)
    assert result.stop_reason is not None and " is not answering: " in result.stop_reason
    assert result.failed == 0 and result.interrupted >= 1
    # Two timeouts, after the few seconds the server could have spent on what was in flight.
    assert end - (start + 5.0) <= 4 * timeout


def test_a_queueing_server_that_never_answers_stops_the_run_within_two_timeouts(
    tmp_path: Path,
) -> None:
    server = QueueServer(slots=4, silent_from=clock())
    timeout = 3.0
    result, start, end = run(server, batch(10, 2), tmp_path, timeout=timeout)
    assert result.stop_reason is not None and " is not answering: " in result.stop_reason
    assert result.completed == 0 and result.failed == 0
    assert end - start <= 2 * timeout + 1.0  # two timeouts and the first retry's backoff
    assert result.limit_changes == ()  # nothing ever answered: down, not overloaded


def test_a_server_that_queues_nothing_gets_the_ceiling_after_one_round_trip(
    tmp_path: Path,
) -> None:
    """MT-bench's shape: 80 two-turn dialogues, 0.4 s answers, 32 slots, --timeout 120."""
    server = QueueServer(slots=32, base_s=0.2, per_token_s=0.002, min_tokens=100, max_tokens=100)
    result, start, end = run(server, batch(80, 2), tmp_path, timeout=120.0)
    assert result.completed == 80 and (server.served, server.abandoned) == (160, 0)
    # The opening round (4 requests, 0.4 s), then 32 at once.
    assert server.open_between(start, start + 0.4) == (4, 4, 4.0)
    _, most, mean = server.open_between(start + 0.4, start + 2.0)  # float instants aside
    # Every answer of a round comes back at the same instant here, and the sends that
    # replace them are spread over a third of a latency (pacing.py, ``_wait_flight``), so
    # the slots refill over 0.13 s: 96% of 32 on average.
    assert most == 32 and mean >= 0.95 * 32
    # Six rounds: the opening one, then 156 turns at 32 a round; the spreading of the jump's
    # sends stays as a stagger of the slots (0.1 s). When a seat waited for its conversation's
    # last answer, the conversations that should have taken the freed slots had not started,
    # and the last 7 dialogues began in the sixth round: a seventh for their second turns.
    assert 2.4 <= end - start <= 2.4 + 0.12
    assert [(c.at_s, c.limit) for c in result.limit_changes][-1] == (0.4, 32)


def test_a_fixed_limit_replays_mt_bench_in_the_fewest_rounds(tmp_path: Path) -> None:
    """``-j 32``, 80 two-turn dialogues of 0.4 s: 160 turns in 5 rounds of 32, the bound."""
    server = QueueServer(slots=32, base_s=0.2, per_token_s=0.002, min_tokens=100, max_tokens=100)
    result, start, end = run(server, batch(80, 2), tmp_path, timeout=120.0, concurrency=32)
    assert result.completed == 80 and server.served == 160
    # The third round's answers end 32 dialogues; the 16 not yet begun must start before
    # those slots are handed out (run/seats.py), or the slots go to second turns, and the
    # 16 take a sixth round for theirs (2.4 s).
    assert end - start == pytest.approx(2.0, abs=0.01)
    assert server.open_between(start, start + 2.0)[2] == pytest.approx(32, abs=0.5)


@pytest.mark.parametrize("slots", [1, 4])
def test_a_queueing_server_with_a_long_timeout_settles_all_the_same(
    slots: int, tmp_path: Path
) -> None:
    """The bench's queue workloads: --timeout 120 against answers of 0.07-0.45 s."""
    server = QueueServer(slots=slots, base_s=0.05, per_token_s=0.001)
    convs = batch(15 * slots, 4)
    result, start, end = run(server, convs, tmp_path, timeout=120.0)
    assert result.completed == len(convs) and server.abandoned == 0
    assert end - start <= 1.10 * lower_bound(server, convs)
    span = end - start
    fewest, most, _ = server.open_between(start + 0.25 * span, start + 0.75 * span)
    assert slots <= fewest and most <= 2 * slots
    jumped = any(c.reason.startswith("opening round") for c in result.limit_changes)
    # One slot answers the opening round one after another: no jump, never more than those
    # four in flight. Four slots serve it at once: 32, until the queue shows.
    assert jumped == (slots > 1)
    assert max(n for _, n in server.timeline) == (4 if slots == 1 else 32)
