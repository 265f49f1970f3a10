"""The replay engine: exact history, failures, concurrency, latency, stopping.

Every run is on virtual time (``virtualtime.py``): handlers that take time
to answer give real latencies and real overlap, without real waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import ChatServer, error, read_jsonl
from virtualtime import RecordedSleep, clock, run_virtual

from runner.checks.kinds import parse_expect
from runner.errors import ConfigError
from runner.http.client import ApiKey
from runner.http.mock import answer
from runner.run.engine import RunConfig, RunControl, run_batch
from runner.run.events import RunResult
from runner.send.retry import RetryPolicy
from runner.spec.model import Conversation, Message, Turn
from runner.spec.tools import ToolRule, ToolScript, ToolSettings

LOCAL = "http://127.0.0.1:9/v1"


def conv(cid: str, *turns: str, **kw: Any) -> Conversation:
    return Conversation(id=cid, source=f"{cid}.yaml", turns=tuple(Turn(t) for t in turns), **kw)


def run(
    conversations: list[Conversation], tmp_path: Path, server: ChatServer | None = None, **kw: Any
) -> RunResult:
    sleep = kw.pop("sleep", asyncio.sleep)
    control = kw.pop("control", None)
    config = RunConfig(
        output=kw.pop("output", tmp_path / "out.jsonl"),
        base_url=kw.pop("base_url", LOCAL if server else "mock://"),
        transport=server.transport if server else None,
        **kw,
    )
    return run_virtual(run_batch(conversations, config, sleep=sleep, clock=clock, control=control))


def test_three_turns_send_the_exact_growing_history(tmp_path: Path) -> None:
    server = ChatServer()
    c = Conversation(
        id="c",
        source="c.yaml",
        system="You are terse.",
        messages=(Message("user", "Hi"), Message("assistant", "Hello.")),
        params={"temperature": 0.5, "max_tokens": 200},
        turns=(
            Turn("One?"),
            Turn("Two?", params={"temperature": 0, "max_tokens": None}),
            Turn("3"),
        ),
        model="file-model",
    )
    run([c], tmp_path, server, params={"seed": 7})

    head = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ]
    b0, b1, b2 = server.bodies
    assert b0 == {
        "model": "file-model",
        "messages": [*head, {"role": "user", "content": "One?"}],
        "temperature": 0.5,
        "max_tokens": 200,
        "seed": 7,
    }
    a0 = answer(b0)["choices"][0]["message"]["content"]
    assert b1 == {
        "model": "file-model",
        "messages": [
            *head,
            {"role": "user", "content": "One?"},
            {"role": "assistant", "content": a0},
            {"role": "user", "content": "Two?"},
        ],
        "temperature": 0,
        "seed": 7,
    }
    a1 = answer(b1)["choices"][0]["message"]["content"]
    assert b2["messages"] == [
        *b1["messages"],
        {"role": "assistant", "content": a1},
        {"role": "user", "content": "3"},
    ]
    assert b2["max_tokens"] == 200 and b2["temperature"] == 0.5

    (record,) = read_jsonl(tmp_path / "out.jsonl")
    a2 = answer(b2)["choices"][0]["message"]["content"]
    assert record["messages"] == [*b2["messages"], {"role": "assistant", "content": a2}]
    assert record["status"] == "completed"
    assert [t["message_index"] for t in record["turns"]] == [3, 5, 7]
    assert record["turns"][1]["params"] == {"temperature": 0, "max_tokens": None}
    assert record["totals"]["turns"] == 3


def test_model_precedence(tmp_path: Path) -> None:
    server = ChatServer()
    convs = [conv("a", "x", model="from-file"), conv("b", "y")]
    run(convs, tmp_path, server, env_model="from-env")
    assert [b["model"] for b in server.bodies] == ["from-file", "from-env"]
    server = ChatServer()
    run(convs, tmp_path, server, output=tmp_path / "2.jsonl", model="from-flag", env_model="e")
    assert [b["model"] for b in server.bodies] == ["from-flag", "from-flag"]
    server = ChatServer()
    run([conv("c", "z")], tmp_path, server, output=tmp_path / "3.jsonl")
    assert server.bodies[0]["model"] == "arcee-ai/AFM-4.5B"


def test_assistant_message_is_carried_verbatim(tmp_path: Path) -> None:
    odd = '  leading spaces, ünïcödé, "quotes", a trailing newline\n\n'

    def respond(body: dict[str, Any], n: int) -> httpx.Response | None:
        if n == 0:
            return httpx.Response(
                200,
                json={
                    "id": "r1",
                    "choices": [
                        {
                            "message": {
                                "role": "assistant",
                                "content": odd,
                                "reasoning_content": "hmm",
                            },
                            "finish_reason": "stop",
                        }
                    ],
                },
            )
        return None

    server = ChatServer(respond)
    run([conv("c", "first", "second")], tmp_path, server)
    assert server.bodies[1]["messages"][1] == {"role": "assistant", "content": odd}
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    assert record["turns"][0]["extra"] == {"reasoning_content": "hmm"}
    assert record["turns"][0]["response_id"] == "r1"


def test_fatal_error_fails_one_conversation_after_one_request(tmp_path: Path) -> None:
    def respond(body: dict[str, Any], n: int) -> httpx.Response | None:
        if body["messages"][-1]["content"] == "bad turn":
            return error(400, "max_tokens is too large")
        return None

    server = ChatServer(respond)
    result = run(
        [conv("bad", "ok turn", "bad turn", "never sent"), conv("good", "g1", "g2")],
        tmp_path,
        server,
        concurrency=1,
    )
    assert len(server.bodies_for("ok turn")) == 2
    assert len(server.bodies_for("g1")) == 2
    assert result.failed == 1 and result.completed == 1
    records = {r["id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    bad = records["bad"]
    assert bad["status"] == "failed"
    assert bad["error"] == {
        "turn": 1,
        "kind": "http_400",
        "status": 400,
        "message": "HTTP 400: max_tokens is too large",
    }
    assert [t.get("error") is None for t in bad["turns"]] == [True, False]
    assert bad["turns"][1]["attempts"] == [
        {
            "attempt": 1,
            "outcome": "http_400",
            "status": 400,
            "latency_ms": bad["turns"][1]["attempts"][0]["latency_ms"],
            "message": "HTTP 400: max_tokens is too large",
        }
    ]
    assert all("too large" not in str(m["content"]) for m in bad["messages"])
    assert bad["messages"][-1] == {"role": "user", "content": "bad turn"}
    assert records["good"]["status"] == "completed"
    assert result.failures[0].conversation_id == "bad" and result.failures[0].turn == 1


def test_transient_errors_are_retried_with_the_servers_wait(tmp_path: Path) -> None:
    def respond(body: dict[str, Any], n: int) -> httpx.Response | None:
        if n == 0:
            return error(429, "slow down", **{"retry-after": "3"})
        if n == 1:
            return httpx.Response(502, text="bad gateway")
        return None

    server = ChatServer(respond)
    sleeps = RecordedSleep()
    result = run([conv("c", "hello")], tmp_path, server, sleep=sleeps)
    assert len(server.bodies) == 3 and result.retries == 2
    assert 3.0 <= sleeps.waits[0] <= 4.0
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    attempts = record["turns"][0]["attempts"]
    assert [a["outcome"] for a in attempts] == ["http_429", "http_502", "ok"]
    assert attempts[0]["retry_after_s"] == 3.0
    assert attempts[0]["wait_s"] == pytest.approx(sleeps.waits[0], abs=1e-3)
    assert attempts[1]["wait_s"] == pytest.approx(sleeps.waits[1], abs=1e-3)
    assert record["totals"]["retries"] == 2 and record["status"] == "completed"


def test_retries_exhausted_fail_the_conversation(tmp_path: Path) -> None:
    server = ChatServer(lambda body, n: httpx.Response(503, text="overloaded"))
    result = run([conv("c", "hello")], tmp_path, server, retry=RetryPolicy(max_retries=2))
    assert len(server.bodies) == 3
    assert result.failed == 1
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    assert record["error"]["kind"] == "http_503"
    assert len(record["turns"][0]["attempts"]) == 3


def test_concurrency_is_bounded_and_used(tmp_path: Path) -> None:
    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.002)
        in_flight -= 1
        import json

        return httpx.Response(200, json=answer(json.loads(request.content)))

    convs = [conv(f"c{i}", "a", "b") for i in range(30)]
    config = RunConfig(
        output=tmp_path / "o.jsonl",
        base_url=LOCAL,
        transport=httpx.MockTransport(handler),
        concurrency=4,
    )
    result = run_virtual(run_batch(convs, config, sleep=asyncio.sleep, clock=clock))
    assert result.completed == 30
    assert peak == 4


@pytest.mark.parametrize(
    ("concurrency", "running", "tools"),
    [(1, 1, False), (3, 3, False), (8, 10, False), (8, 10, True)],
)
def test_a_quarter_more_conversations_run_than_requests_fly(
    tmp_path: Path, concurrency: int, running: int, tools: bool
) -> None:
    # Between two turns a conversation sends nothing; the extra ones keep every slot busy.
    # From 4 slots, a conversation whose last request has its slot gives its seat to the
    # next one (run/seats.py): at most one more per slot is open meanwhile.
    in_flight = peak_in_flight = peak_open = 0
    open_conversations: set[str] = set()

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak_in_flight, peak_open
        import json

        body = json.loads(request.content)
        key = body["messages"][0]["content"]
        users = sum(m["role"] == "user" for m in body["messages"])
        open_conversations.add(key)
        peak_open = max(peak_open, len(open_conversations))
        in_flight += 1
        peak_in_flight = max(peak_in_flight, in_flight)
        await asyncio.sleep(0.002)
        in_flight -= 1
        if users == 3:
            open_conversations.discard(key)
        return httpx.Response(200, json=answer(body))

    convs = [conv(f"c{i}", f"start {i}", "b", "c") for i in range(40)]
    if tools:  # a last turn that may call tools keeps its seat: it may take more requests
        weather = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
        script = {"get_weather": ToolScript(rules=(ToolRule("18 C"),))}
        last = Turn("c", tools=ToolSettings(tools=(weather,), results=script))
        convs = [dataclasses.replace(c, turns=(*c.turns[:2], last)) for c in convs]
    config = RunConfig(
        output=tmp_path / "o.jsonl",
        base_url=LOCAL,
        transport=httpx.MockTransport(handler),
        concurrency=concurrency,
    )
    result = run_virtual(run_batch(convs, config, sleep=asyncio.sleep, clock=clock))
    assert result.completed == 40
    assert peak_in_flight == concurrency
    if concurrency < 4 or tools:
        assert peak_open == running
    else:
        assert running < peak_open <= running + concurrency


def test_latency_is_the_time_the_server_takes_and_is_checked(tmp_path: Path) -> None:
    # The second turn of each conversation is slow: 0.25 s against a 0.1 s budget.
    server = ChatServer(delay=lambda body, n: 0.25 if len(body["messages"]) > 1 else 0.05)
    budget = parse_expect({"max_latency_ms": 100}, field="expect", scope="turn")
    convs = [
        Conversation(
            id=f"c{i}",
            source="c.yaml",
            turns=(Turn("fast", expect=budget), Turn("slow", expect=budget)),
        )
        for i in range(3)
    ]
    result = run(convs, tmp_path, server, concurrency=3)
    assert result.checks_failed == 3
    for record in read_jsonl(tmp_path / "out.jsonl"):
        fast, slow = record["turns"]
        assert fast["latency_ms"] == pytest.approx(50.0)
        assert slow["latency_ms"] == pytest.approx(250.0)
        assert [a["latency_ms"] for a in slow["attempts"]] == [pytest.approx(250.0)]
        assert [c["passed"] for c in fast["checks"]] == [True]
        assert [(c["passed"], c["message"]) for c in slow["checks"]] == [
            (False, "took 250 ms, at most 100 allowed")
        ]
        assert record["status"] == "checks_failed"


def test_turns_of_one_conversation_never_overlap(tmp_path: Path) -> None:
    busy: set[str] = set()
    overlaps = []

    async def handler(request: httpx.Request) -> httpx.Response:
        import json

        body = json.loads(request.content)
        key = body["messages"][0]["content"]
        if key in busy:
            overlaps.append(key)
        busy.add(key)
        await asyncio.sleep(0.001)
        busy.discard(key)
        return httpx.Response(200, json=answer(body))

    convs = [conv(f"c{i}", f"start {i}", "b", "c") for i in range(10)]
    config = RunConfig(
        output=tmp_path / "o.jsonl",
        base_url=LOCAL,
        transport=httpx.MockTransport(handler),
        concurrency=10,
    )
    run_virtual(run_batch(convs, config, sleep=asyncio.sleep, clock=clock))
    assert overlaps == []


def test_quota_exhausted_stops_new_work(tmp_path: Path) -> None:
    def respond(body: dict[str, Any], n: int) -> httpx.Response | None:
        if n == 1:
            return error(429, "You exceeded your current quota", code="insufficient_quota")
        return None

    server = ChatServer(respond)
    convs = [conv(f"c{i}", "a", "b") for i in range(10)]
    result = run(convs, tmp_path, server, concurrency=1)
    assert len(server.bodies) == 2
    assert result.failed == 1 and result.not_started == 9
    assert result.stop_reason is not None and "quota" in result.stop_reason
    assert not result.interrupted_by_user
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    assert record["status"] == "failed"


def test_stop_records_in_flight_conversations_as_interrupted(tmp_path: Path) -> None:
    control = RunControl()
    gate = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        import json

        body = json.loads(request.content)
        if len(body["messages"]) >= 3:  # every second turn hangs until stopped
            # As a signal handler would: from a loop callback, not from a worker.
            asyncio.get_running_loop().call_soon(
                lambda: control.stop("interrupted by Ctrl-C", by_user=True)
            )
            await gate.wait()
        return httpx.Response(200, json=answer(body))

    convs = [conv(f"c{i}", "a", "b") for i in range(5)]
    config = RunConfig(
        output=tmp_path / "o.jsonl",
        base_url=LOCAL,
        transport=httpx.MockTransport(handler),
        concurrency=2,
    )
    result = run_virtual(
        run_batch(convs, config, sleep=asyncio.sleep, clock=clock, control=control)
    )
    assert result.interrupted_by_user
    assert result.interrupted == 2 and result.not_started == 3
    records = read_jsonl(tmp_path / "o.jsonl")
    assert [r["status"] for r in records] == ["interrupted", "interrupted"]
    for r in records:
        assert len(r["turns"]) == 1 and r["messages"][-1]["role"] == "assistant"
        assert r["error"]["kind"] == "interrupted"
    assert not (tmp_path / "o.jsonl.journal").exists()


def test_no_key_for_a_remote_endpoint_is_refused_before_sending(tmp_path: Path) -> None:
    config = RunConfig(output=tmp_path / "o.jsonl", base_url="https://api.example.com/v1")
    with pytest.raises(ConfigError, match=r"no API key for https://api\.example\.com/v1"):
        asyncio.run(run_batch([conv("c", "x")], config))
    assert not (tmp_path / "o.jsonl").exists()


def test_key_over_plain_http_to_a_remote_host_is_refused(tmp_path: Path) -> None:
    config = RunConfig(
        output=tmp_path / "o.jsonl",
        base_url="http://api.example.com/v1",
        api_key=ApiKey("sk-x", "MTRUN_API_KEY"),
    )
    with pytest.raises(ConfigError, match="allow-insecure-key"):
        asyncio.run(run_batch([conv("c", "x")], config))


def test_loopback_endpoint_needs_no_key(tmp_path: Path) -> None:
    server = ChatServer()
    config = RunConfig(output=tmp_path / "o.jsonl", base_url="http://localhost:8000/v1")
    # The transport seam stands in for the local server here.
    config = RunConfig(output=config.output, base_url=config.base_url, transport=server.transport)
    result = asyncio.run(run_batch([conv("c", "x")], config))
    assert result.completed == 1
    assert "authorization" not in server.headers[0]


def test_key_is_sent_but_never_written(tmp_path: Path) -> None:
    secret = "sk-live-DISTINCTIVE-0123456789"

    def respond(body: dict[str, Any], n: int) -> httpx.Response | None:
        if body["messages"][-1]["content"] == "fail":
            return error(401, "Incorrect API key provided")
        return None

    server = ChatServer(respond)
    result = run(
        [conv("a", "ok", "fail"), conv("b", "fine")],
        tmp_path,
        server,
        api_key=ApiKey(secret, "MTRUN_API_KEY"),
    )
    assert server.headers[0]["authorization"] == f"Bearer {secret}"
    assert secret not in repr(result)
    for path in tmp_path.iterdir():
        assert secret not in path.read_text(encoding="utf-8")


def test_a_lone_surrogate_in_an_answer_is_carried_and_written(tmp_path: Path) -> None:
    raw = b'{"choices": [{"message": {"role": "assistant", "content": "bad \\ud800 text"}}]}'

    def respond(body: dict[str, Any], n: int) -> httpx.Response | None:
        return httpx.Response(200, content=raw) if n == 0 else None

    server = ChatServer(respond)
    result = run([conv("c", "one", "two")], tmp_path, server)
    assert result.completed == 1
    assert server.bodies[1]["messages"][1]["content"] == "bad \ud800 text"
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    assert record["messages"][1]["content"] == "bad \ud800 text"


def test_allowing_an_insecure_key_warns(tmp_path: Path) -> None:
    from runner.run.config import insecure_key_warning

    key = ApiKey("sk-x", "MTRUN_API_KEY")
    remote = RunConfig(
        output=tmp_path / "o",
        base_url="http://gpu-box.lan:8000/v1",
        api_key=key,
        allow_insecure_key=True,
    )
    assert insecure_key_warning(remote) == (
        "the API key goes over plain http to http://gpu-box.lan:8000/v1 "
        "(--allow-insecure-key): anyone on the network path can read it"
    )
    for quiet in (
        RunConfig(
            output=tmp_path / "o",
            base_url="http://localhost:8000/v1",
            api_key=key,
            allow_insecure_key=True,
        ),
        RunConfig(
            output=tmp_path / "o",
            base_url="https://api.example.com/v1",
            api_key=key,
            allow_insecure_key=True,
        ),
        RunConfig(
            output=tmp_path / "o", base_url="http://gpu-box.lan:8000/v1", allow_insecure_key=True
        ),
        RunConfig(
            output=tmp_path / "o",
            base_url="http://gpu-box.lan:8000/v1",
            api_key=key,
            allow_insecure_key=True,
            replay=tmp_path,
        ),
    ):
        assert insecure_key_warning(quiet) is None
