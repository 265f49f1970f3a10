"""A refusal's own ``x-ratelimit-*`` headers: carried on the error, and learned from by the pacer.

Gateways and providers that send the headers on their 429s let the pacer mirror the
server's bucket from the first refusal, even when their answers carry none (and at a run's
start, when the first answers a ``-j auto`` wave gets may all be 429s). Whole runs go
against ``tests/sim_ratelimit.py`` on the virtual clock; the client's part goes through a
real loopback socket to the bench server.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest
from sim_ratelimit import SimServer
from test_dispatch import dispatcher
from test_pacing_sim import NETWORK_S, batch, goodput, run
from virtualtime import RecordedSleep, clock, run_virtual

from runner.errors import APIError, TransientAPIError
from runner.http.client import ChatClient, Completion
from runner.http.ratelimits import RateLimits
from runner.run.engine import RunControl
from runner.send.dispatch import Dispatcher, Slot
from runner.send.pacing import Pacer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from bench_server import BenchServer, config_from, parse_args

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("rpm", [600, 1200])
def test_a_gateway_that_sends_its_headers_only_on_429s_is_learned_from_the_first(
    rpm: int, tmp_path: Path
) -> None:
    """60 s of work at the limit (a bucket of one second's worth), no headers on answers.

    The 429s' headers were ignored: the pace was learned from 429s as from a bare
    server's, and 3 (600 rpm) or 4 (1,200 rpm) requests were refused: the first wave's,
    then the probing pace's each time it met the refill rate again. Read, the first 429
    tells the bucket and the mirror keeps it without another refusal.
    """
    convs = batch(rpm)
    server = SimServer(rpm=rpm, burst=rpm / 60, headers="429", network_s=NETWORK_S)
    result = run(server, convs, tmp_path)
    assert result.completed == len(convs) and result.failed == 0
    log = server.log
    assert len(log.answered) == rpm
    assert len(log.refused) == 1
    assert log.refused[0] < 1.0  # the opening ramp's first meeting with the empty bucket
    assert goodput(server, rpm) >= 0.95


def test_a_token_limit_told_only_on_429s_is_used_without_a_stream_of_refusals(
    tmp_path: Path,
) -> None:
    """60,000 tokens a minute, told on 429s only, a server that refunds what was not used.

    The mirror has no answer's snapshot to tell it what the server gave back, so it
    refunds by the usage itself: kept whole, the bookings (400 tokens a request where
    about 225 are used) paced the run at about 55% of the limit. Ignored, the 429s'
    headers left 16 requests refused (4%)."""
    tpm = 60_000
    server = SimServer(rpm=10_000, tpm=tpm, headers="429", answer_tokens=(50, 400))
    convs = batch(400, params={"max_tokens": 400})
    result = run(server, convs, tmp_path)
    assert result.completed == len(convs) and result.failed == 0
    log = server.log
    used_per_minute = sum(tokens for at, tokens in log.tokens if 40.0 <= at < 100.0)
    assert used_per_minute >= 0.9 * tpm
    assert len(log.refused) <= 2  # the first, and one where the refunds ran ahead


def refusing_dispatcher(refusal: APIError, sent: list[float]) -> Dispatcher:
    """A dispatcher whose first request is refused with ``refusal``; the rest are answered."""
    return dispatcher([refusal, *[None] * 100], RunControl(), ceiling=8, sent=sent)


def sends_after_a_refusal(refusal: APIError, count: int = 3) -> list[float]:
    """Seconds after the refused request at which ``count`` requests waiting on it went."""
    sent: list[float] = []
    d = refusing_dispatcher(refusal, sent)

    async def one() -> None:
        slot = Slot()
        await d.wait_to_send(BODY, slot, continuing=False)
        await d.send(BODY, slot, conversation_id="c", turn=0)

    async def go() -> None:
        with pytest.raises(APIError):
            await one()
        await asyncio.gather(*(one() for _ in range(count)))

    run_virtual(go())
    return [round(t - sent[0], 6) for t in sent[1:]]


def refused(retry_after: float | None, limits: RateLimits | None = None) -> APIError:
    error = TransientAPIError("HTTP 429", kind="http_429", status=429, retry_after=retry_after)
    if limits is not None:
        error.rate_limits = limits
    return error


def test_a_retry_after_and_the_headers_of_one_429_hold_until_the_later_not_their_sum() -> None:
    """remaining 0, reset 2 s and Retry-After 1 s: one wait, the later of what each says.

    With a limit (600 a minute: one request back every 0.1 s), the mirror would let the
    next request go after 0.1 s; the server said 1 s, and both are lower bounds on when a
    request can get through, so 1 s, and the mirror lets the second's refill go at once.
    Without a limit, the older rule reads the reset as the end of the window: 2 s, the
    sends then spread by the first guess of a pace, as after a bare 429. Never 1 s and
    then the mirror's or the reset's wait on top.
    """
    mirrored = RateLimits(limit_requests=600, remaining_requests=0, reset_requests_s=2.0)
    assert sends_after_a_refusal(refused(1.0, mirrored)) == [1.0, 1.0, 1.0]
    windowed = RateLimits(remaining_requests=0, reset_requests_s=2.0)
    assert sends_after_a_refusal(refused(1.0, windowed)) == pytest.approx([2.0, 2.05, 2.1])
    # No Retry-After: the mirror alone, one request back a tenth of a second after the
    # 429, and a margin of one kept in hand.
    assert sends_after_a_refusal(refused(None, mirrored)) == [0.2, 0.3, 0.4]


def test_a_429_without_headers_is_handled_as_before() -> None:
    """Retry-After alone: the hold, then the first guess of a pace (a send every 50 ms)."""
    assert sends_after_a_refusal(refused(1.0)) == pytest.approx([1.0, 1.05, 1.1], abs=1e-3)


def test_the_error_carries_the_parsed_limits_and_never_the_headers() -> None:
    key = "sk-test-0123456789abcdef"

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {
            "retry-after-ms": "250",
            "x-ratelimit-limit-requests": "600",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "100ms",
            "x-echo-authorization": request.headers["authorization"],  # a server echoing it
        }
        return httpx.Response(
            429, json={"error": {"message": "Rate limit reached"}}, headers=headers
        )

    error = _refusal_over(httpx.MockTransport(handler), key=key)
    assert error.retry_after == 0.25
    assert error.rate_limits == RateLimits(
        limit_requests=600, remaining_requests=0, reset_requests_s=0.1
    )
    assert key not in repr(vars(error)) and key not in repr(error.rate_limits)


def test_a_429_without_rate_limit_headers_carries_none() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, json={"error": {"message": "slow down"}}, headers={"retry-after": "1"}
        )

    error = _refusal_over(httpx.MockTransport(handler))
    assert error.retry_after == 1.0 and error.rate_limits is None


def _refusal_over(transport: httpx.AsyncBaseTransport, key: str | None = None) -> APIError:
    from runner.http.apikey import ApiKey

    async def go() -> APIError:
        api_key = ApiKey(key, "MTRUN_API_KEY") if key else None
        async with ChatClient("http://127.0.0.1:9/v1", api_key=api_key, transport=transport) as c:
            with pytest.raises(APIError) as info:
                await c.complete(BODY)
        return info.value

    return asyncio.run(go())


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_over_a_real_socket_the_bench_servers_429_brings_its_bucket(
    stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bench server with ``--ratelimit-headers-on-429-only``: an answer with no
    headers, then a 429 that says the bucket (60 a minute, a burst of one)."""
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    args = parse_args(["--rpm", "60", "--base-latency", "0", "--per-token", "0"])
    assert not args.ratelimit_headers_on_429_only
    args = parse_args(
        [
            "--rpm",
            "60",
            "--ratelimit-headers-on-429-only",
            "--base-latency",
            "0",
            "--per-token",
            "0",
        ]
    )
    config = config_from(args)
    server = BenchServer(config)
    body = {**BODY, "stream": stream}

    async def go() -> tuple[Completion, APIError]:
        url = await server.start()
        try:
            async with ChatClient(url, api_key=None, timeout=10.0) as client:
                first = await client.complete(body)
                with pytest.raises(APIError) as info:
                    await client.complete(body)
        finally:
            assert server.server is not None
            server.server.close()
        return first, info.value

    first, error = asyncio.run(go())
    assert first.rate_limits is None  # nothing on the answer
    assert error.status == 429
    limits = error.rate_limits
    assert isinstance(limits, RateLimits)
    assert (limits.limit_requests, limits.remaining_requests) == (60, 0)
    # (Real time passed between the two: less than the second a request takes to come back.)
    assert limits.reset_requests_s is not None and 0.0 < limits.reset_requests_s <= 1.0
    assert error.retry_after is not None and 0.0 < error.retry_after <= 1.0
    assert server.stats.requests == 2


def test_sends_waiting_on_the_mirror_when_a_hold_begins_go_at_its_end_as_the_bucket_allows() -> (
    None
):
    """A bucket of 5 refilled at 10 a second, and a Retry-After that holds sends for 3 s.

    The sends already waiting on the mirror were booked as if it kept refilling while they
    waited: past the hold, all 20 were due at once, and a bucket of 5 had room for five.
    Booked again from the hold's end, where the bucket is full at 5, four go (one kept in
    hand), then one each tenth of a second.
    """
    sleeps = RecordedSleep()
    p = Pacer(sleep=sleeps, clock=clock)
    seq = p.sending(0)  # refused: nothing left, full again in half a second
    p.refused(seq, RateLimits(limit_requests=600, remaining_requests=0, reset_requests_s=0.5))

    async def go() -> list[float]:
        began = clock()
        started: list[float] = []

        async def send() -> None:
            await p.wait_turn(0)
            started.append(round(clock() - began, 6))

        sends = [asyncio.create_task(send()) for _ in range(20)]
        await asyncio.sleep(0.05)
        p.hold(began + 3.0)
        await asyncio.gather(*sends)
        return started

    assert run_virtual(go()) == [3.0] * 4 + [round(3.0 + k / 10, 6) for k in range(1, 17)]


def test_a_429_names_its_empty_bucket_and_one_showing_room_everywhere_empties_the_mirror() -> None:
    """OpenAI's token 429 says requests remain: only the tokens bucket is empty. A 429
    whose headers show room in every bucket they name was refused by a limit they do
    not name (an upstream's, say): the mirror is emptied, as by a bare 429."""

    def after(limits: RateLimits) -> tuple[float, float]:
        p = Pacer(sleep=RecordedSleep(), clock=clock)
        seq = p.sending(500)
        full = RateLimits(
            limit_requests=600,
            remaining_requests=599,
            reset_requests_s=0.1,
            limit_tokens=60_000,
            remaining_tokens=59_500,
            reset_tokens_s=0.5,
        )
        assert p.observe(full, in_flight=4, seq=seq)
        p.refused(p.sending(500), limits)
        now = clock()
        return p.mirror.requests.level_now(now), p.mirror.tokens.level_now(now)

    tokens_short = RateLimits(
        limit_requests=600, remaining_requests=598, limit_tokens=60_000, remaining_tokens=200
    )
    assert after(tokens_short) == (598.0, 200.0)
    room = RateLimits(limit_requests=600, remaining_requests=598)
    assert after(room) == (0.0, 0.0)
