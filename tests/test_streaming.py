"""--stream: server-sent events assembled into the same transcripts, cut streams retried."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from faultserver import ODD_STREAM_FAULTS, FaultServer
from helpers import ChatServer, bounded, read_jsonl
from virtualtime import RecordedSleep, clock, run_virtual

from runner.errors import TransientAPIError
from runner.http.client import ChatClient
from runner.http.mock import answer, stream_events
from runner.run.engine import RunConfig, run_batch
from runner.spec.model import Conversation, Turn

LOCAL = "http://127.0.0.1:9/v1"
BODY = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": True}


def sse(*events: Any, done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(e)}\n\n" for e in events]
    return ("".join(lines) + ("data: [DONE]\n\n" if done else "")).encode()


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    delta = {"content": content} if content is not None else {}
    delta.update(extra)
    return {
        "id": "s1",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def complete(payload: bytes) -> Any:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=payload))

    async def go() -> Any:
        async with ChatClient(LOCAL, api_key=None, transport=transport) as client:
            return await client.complete(BODY)

    return asyncio.run(go())


def test_deltas_are_assembled_with_usage_and_first_token_time() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    payload = sse(
        chunk(role="assistant"),
        chunk("Hel"),
        chunk("lo", reasoning_content="think"),
        chunk(finish="stop"),
        {"id": "s1", "choices": [], "usage": usage},
    )
    completion = complete(b": keep-alive comment\n\nevent: message\n" + payload)
    assert completion.content == "Hello"
    assert completion.message == {
        "role": "assistant",
        "content": "Hello",
        "reasoning_content": "think",
    }
    assert completion.finish_reason == "stop" and completion.usage == usage
    assert completion.response_id == "s1" and completion.first_token_ms is not None
    assert completion.raw["choices"][0]["message"]["content"] == "Hello"


def test_a_stream_without_done_but_finished_is_complete() -> None:
    completion = complete(sse(chunk("All "), chunk("there.", finish="stop"), done=False))
    assert completion.content == "All there." and completion.finish_reason == "stop"


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (sse(chunk("Half an ans"), done=False), "stream_cut"),
        (b"data: {not json\n\n", "stream_invalid"),
        (sse({"error": {"message": "overloaded"}}), "stream_error"),
    ],
)
def test_broken_streams_are_transient(payload: bytes, kind: str) -> None:
    with pytest.raises(TransientAPIError) as info:
        complete(payload)
    assert info.value.kind == kind


def test_an_error_status_on_a_stream_is_classified_as_usual() -> None:
    transport = httpx.MockTransport(
        lambda r: httpx.Response(
            429, headers={"retry-after": "2"}, json={"error": {"message": "slow"}}
        )
    )

    async def go() -> None:
        async with ChatClient(LOCAL, api_key=None, transport=transport) as client:
            await client.complete(BODY)

    with pytest.raises(TransientAPIError) as info:
        asyncio.run(go())
    assert info.value.status == 429 and info.value.retry_after == 2.0
    assert info.value.message == "HTTP 429: slow"


def test_a_server_that_ignores_stream_and_answers_json_is_read_as_one_answer() -> None:
    whole = answer({"model": "m", "messages": BODY["messages"]})
    transport = httpx.MockTransport(
        lambda r: httpx.Response(
            200, headers={"content-type": "application/json; charset=utf-8"}, json=whole
        )
    )

    async def go() -> Any:
        async with ChatClient(LOCAL, api_key=None, transport=transport) as client:
            return await client.complete(BODY)

    completion = asyncio.run(go())
    assert completion.content == whole["choices"][0]["message"]["content"]
    assert completion.first_token_ms is None  # no stream, so no time to first token


def conv(cid: str, *turns: str) -> Conversation:
    return Conversation(id=cid, source="s.yaml", turns=tuple(Turn(t) for t in turns))


def test_a_cut_stream_is_retried_and_its_partial_text_never_enters_the_history(
    tmp_path: Path,
) -> None:
    def respond(body: dict[str, Any], n: int) -> httpx.Response | None:
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        full = answer({k: v for k, v in body.items() if k not in ("stream", "stream_options")})
        if n == 0:
            return httpx.Response(200, content=sse(chunk("PARTIAL-GARBAGE"), done=False))
        return httpx.Response(200, content=stream_events(full))

    server = ChatServer(respond)
    config = RunConfig(
        output=tmp_path / "o.jsonl", base_url=LOCAL, transport=server.transport, stream=True
    )
    result = run_virtual(
        run_batch([conv("c", "one", "two")], config, sleep=asyncio.sleep, clock=clock)
    )
    assert result.completed == 1 and result.retries == 1
    (record,) = read_jsonl(tmp_path / "o.jsonl")
    assert all("PARTIAL-GARBAGE" not in str(m["content"]) for m in record["messages"])
    assert all("PARTIAL-GARBAGE" not in str(m["content"]) for m in server.bodies[2]["messages"])
    assert record["turns"][0]["attempts"][0]["outcome"] == "stream_cut"
    assert "first_token_ms" in record["turns"][0]


def test_streamed_and_plain_runs_carry_the_same_history(tmp_path: Path) -> None:
    convs = [conv("a", "Hello", "More please"), conv("b", "Hi")]

    def run(name: str, **kw: Any) -> list[dict[str, Any]]:
        config = RunConfig(output=tmp_path / name, base_url="mock://", **kw)
        asyncio.run(run_batch(convs, config))
        return sorted(read_jsonl(tmp_path / name), key=lambda r: r["id"])

    plain, streamed = run("plain.jsonl"), run("streamed.jsonl", stream=True)
    assert [r["messages"] for r in plain] == [r["messages"] for r in streamed]
    assert [t.get("usage") for r in plain for t in r["turns"]] == [
        t.get("usage") for r in streamed for t in r["turns"]
    ]
    assert all("first_token_ms" in t for r in streamed for t in r["turns"])
    assert all("first_token_ms" not in t for r in plain for t in r["turns"])


def test_a_recording_replays_with_or_without_stream(tmp_path: Path) -> None:
    convs = [conv("a", "Hello", "More please")]
    record = RunConfig(
        output=tmp_path / "r.jsonl", base_url="mock://", stream=True, record=tmp_path / "fx"
    )
    asyncio.run(run_batch(convs, record))
    replay = RunConfig(output=tmp_path / "p.jsonl", replay=tmp_path / "fx")
    result = asyncio.run(run_batch(convs, replay))
    assert result.completed == 1


# --- answers a stream must or must not be taken for -------------------------------

AZURE_FILTER = {
    "id": "",
    "choices": [],
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
}


@pytest.mark.parametrize(
    "payload",
    [
        b"data: [DONE]\n\n",
        sse({"id": "s1", "choices": [], "usage": {"prompt_tokens": 3, "total_tokens": 3}}),
        sse({}, {"choices": []}, {"choices": None}),
        sse(AZURE_FILTER),
        sse(AZURE_FILTER, done=False) + b"data: [DONE]\n\n",
    ],
    ids=["done-only", "usage-only", "empty-chunks", "azure-filter", "azure-filter-done"],
)
def test_a_stream_without_any_choice_is_no_answer_and_retried_like_no_choices(
    payload: bytes,
) -> None:
    with pytest.raises(TransientAPIError) as info:
        complete(payload)
    assert info.value.kind == "no_choices" and info.value.status == 200


def test_a_choiceless_stream_is_retried_and_never_enters_the_history(tmp_path: Path) -> None:
    def respond(body: dict[str, Any], n: int) -> httpx.Response | None:
        full = answer({k: v for k, v in body.items() if k not in ("stream", "stream_options")})
        return httpx.Response(200, content=b"data: [DONE]\n\n" if n == 0 else stream_events(full))

    server = ChatServer(respond)
    config = RunConfig(
        output=tmp_path / "o.jsonl", base_url=LOCAL, transport=server.transport, stream=True
    )
    result = run_virtual(
        run_batch([conv("c", "one", "two")], config, sleep=asyncio.sleep, clock=clock)
    )
    assert result.completed == 1 and result.retries == 1
    (record,) = read_jsonl(tmp_path / "o.jsonl")
    assert [m["content"] != "" for m in record["messages"]] == [True] * 4
    assert record["turns"][0]["attempts"][0]["outcome"] == "no_choices"


def test_content_is_null_when_no_delta_carried_any_as_without_streaming() -> None:
    tool_only = sse(
        chunk(role="assistant"),
        {"choices": [{"index": 0, "delta": {"content": None}, "finish_reason": "tool_calls"}]},
    )
    assert complete(tool_only).message == {"role": "assistant", "content": None}
    plain = {"choices": [{"message": {"role": "assistant", "content": None}}]}
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json=plain))

    async def go() -> Any:
        async with ChatClient(LOCAL, api_key=None, transport=transport) as client:
            return await client.complete({"model": "m", "messages": []})

    assert asyncio.run(go()).content is None
    assert complete(sse(chunk(""), chunk(finish="stop"))).content == ""
    assert complete(sse(chunk("a"), chunk(""), chunk("b", finish="stop"))).content == "ab"


# --- reading the event stream by the SSE specification ---------------------------


def test_unicode_line_separators_inside_the_answer_are_text() -> None:
    text = "one\u2028two\u2029three\u0085four\x0bfive\x0csix\x1cseven"
    events = [chunk(text), chunk(finish="stop")]
    payload = "".join(f"data: {json.dumps(e, ensure_ascii=False)}\n\n" for e in events)
    completion = complete(payload.encode() + b"data: [DONE]\n\n")
    assert completion.content == text


@pytest.mark.parametrize("end", ["\n", "\r", "\r\n"], ids=["lf", "cr", "crlf"])
def test_lines_end_at_cr_lf_or_crlf_and_data_lines_are_joined(end: str) -> None:
    whole = json.dumps(chunk("Hi", finish="stop"), indent=1).split("\n")
    event = end.join(["data:" + whole[0], *(f"data: {line}" for line in whole[1:])])
    payload = end.join([": ping", "event: message", "id: 7", "retry: 10", "x-unknown: 1", ""])
    payload += event + end + end + "data:[DONE]" + end + end
    assert complete(payload.encode()).content == "Hi"


def test_a_json_answer_to_a_stream_without_a_content_type_is_read_as_json() -> None:
    whole = answer({"model": "m", "messages": BODY["messages"]})
    transport = httpx.MockTransport(
        lambda r: httpx.Response(200, content=b"\n  " + json.dumps(whole).encode())
    )

    async def go() -> Any:
        async with ChatClient(LOCAL, api_key=None, transport=transport) as client:
            return await client.complete(BODY)

    completion = asyncio.run(go())
    assert completion.content == whole["choices"][0]["message"]["content"]
    assert completion.first_token_ms is None


class _CutAfter(httpx.AsyncByteStream):
    """A body that yields ``data`` in small pieces, then dies like a dropped connection."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> Any:
        for start in range(0, len(self.data), 7):
            yield self.data[start : start + 7]
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message")


@pytest.mark.parametrize("done", [True, False], ids=["with-done", "finish-only"])
def test_a_complete_stream_whose_body_is_cut_after_its_last_event_is_complete(
    done: bool,
) -> None:
    data = sse(chunk("All "), chunk("there.", finish="stop"), done=done)
    transport = httpx.MockTransport(lambda r: httpx.Response(200, stream=_CutAfter(data)))

    async def go() -> Any:
        async with ChatClient(LOCAL, api_key=None, transport=transport) as client:
            return await client.complete(BODY)

    assert asyncio.run(go()).content == "All there."


def test_a_stream_cut_before_its_answer_was_whole_is_still_an_error() -> None:
    data = sse(chunk("All "), chunk("there."), done=False)
    transport = httpx.MockTransport(lambda r: httpx.Response(200, stream=_CutAfter(data)))

    async def go() -> Any:
        async with ChatClient(LOCAL, api_key=None, transport=transport) as client:
            return await client.complete(BODY)

    with pytest.raises(TransientAPIError) as info:
        asyncio.run(go())
    assert info.value.kind == "connection_dropped"


class _ThenSilence(httpx.AsyncByteStream):
    """A body that sends ``data`` and then nothing, ever."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sent = asyncio.Event()

    async def __aiter__(self) -> Any:
        yield self.data
        self.sent.set()
        await asyncio.Event().wait()
        yield b""  # never reached


def test_a_finished_stream_that_falls_silent_is_a_whole_answer_after_the_timeout() -> None:
    body = _ThenSilence(sse(chunk("All "), chunk("there.", finish="stop"), done=False))
    transport = httpx.MockTransport(lambda r: httpx.Response(200, stream=body))

    async def go() -> Any:
        async with ChatClient(LOCAL, api_key=None, transport=transport, timeout=0.05) as client:
            return await client.complete(BODY)

    assert asyncio.run(bounded(go())).content == "All there."


def test_an_unfinished_stream_that_falls_silent_times_out() -> None:
    body = _ThenSilence(sse(chunk("Half"), done=False))
    transport = httpx.MockTransport(lambda r: httpx.Response(200, stream=body))

    async def go() -> Any:
        async with ChatClient(LOCAL, api_key=None, transport=transport, timeout=0.05) as client:
            return await client.complete(BODY)

    with pytest.raises(TransientAPIError) as info:
        asyncio.run(bounded(go()))
    assert info.value.kind == "read_timeout"
    assert info.value.message == "the stream sent no data for 0.05 s (--timeout)"


def test_cancelling_a_finished_stream_still_cancels() -> None:
    body = _ThenSilence(sse(chunk("All "), chunk("there.", finish="stop"), done=False))
    transport = httpx.MockTransport(lambda r: httpx.Response(200, stream=body))

    async def go() -> None:
        async with ChatClient(LOCAL, api_key=None, transport=transport, timeout=10.0) as client:
            task = asyncio.create_task(client.complete(BODY))
            await body.sent.wait()
            task.cancel()
            await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(bounded(go()))


def test_with_several_choices_the_first_one_is_followed() -> None:
    def two(index: int, text: str, finish: str | None = None) -> dict[str, Any]:
        delta = {"content": text}
        return {"choices": [{"index": index, "delta": delta, "finish_reason": finish}]}

    payload = sse(two(0, "A1 "), two(1, "B1 "), two(0, "A2", "stop"), two(1, "B2", "length"))
    completion = complete(payload)
    assert (completion.content, completion.finish_reason) == ("A1 A2", "stop")


@pytest.mark.parametrize("fault", ODD_STREAM_FAULTS)
def test_odd_streams_on_real_sockets_give_the_transcript_of_a_fault_free_run(
    fault: str, tmp_path: Path
) -> None:
    convs = [conv("a", "first question", "second one"), conv("b", "other question")]

    odd = {("first question", 0): [fault], ("other question", 0): [fault]}
    outputs = {}
    for name, faults in (("clean", {}), ("odd", odd)):
        with FaultServer(faults=faults) as server:
            config = RunConfig(
                output=tmp_path / f"{name}.jsonl", base_url=server.base_url, stream=True
            )
            skip = RecordedSleep(skip=True)  # real sockets: a real loop, on real time
            result = asyncio.run(run_batch(convs, config, sleep=skip, clock=time.monotonic))
        assert result.completed == 2 and server.violations == []
        outputs[name] = {r["id"]: r for r in read_jsonl(tmp_path / f"{name}.jsonl")}
        outcomes = [a["outcome"] for r in outputs[name].values() for a in r["turns"][0]["attempts"]]
        if name == "odd":
            retried = fault == "stream_choiceless"
            assert outcomes == (["no_choices", "ok"] * 2 if retried else ["ok", "ok"]), outcomes
    assert {k: r["messages"] for k, r in outputs["clean"].items()} == {
        k: r["messages"] for k, r in outputs["odd"].items()
    }


class _Trickle(httpx.AsyncByteStream):
    """A stream body whose events arrive ``gap`` seconds apart (on the loop's clock)."""

    def __init__(self, events: list[bytes], gap: float) -> None:
        self.events, self.gap = events, gap

    async def __aiter__(self) -> Any:
        for event in self.events:
            await asyncio.sleep(self.gap)
            yield event


def test_first_token_ms_counts_from_sending_on_the_runs_clock(tmp_path: Path) -> None:
    # The server holds its headers 200 ms, then sends an event every 50 ms:
    # the role, the first token, the finish.
    events = [sse(chunk(role="assistant"), done=False), sse(chunk("Hi"), done=False)]
    events.append(sse(chunk(finish="stop")))

    async def respond(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.2)
        headers = {"Content-Type": "text/event-stream"}
        return httpx.Response(200, headers=headers, stream=_Trickle(events, 0.05))

    config = RunConfig(
        output=tmp_path / "o.jsonl",
        base_url=LOCAL,
        transport=httpx.MockTransport(respond),
        stream=True,
    )
    result = run_virtual(run_batch([conv("c", "one")], config, sleep=asyncio.sleep, clock=clock))
    assert result.completed == 1
    (record,) = read_jsonl(tmp_path / "o.jsonl")
    turn = record["turns"][0]
    assert (turn["first_token_ms"], turn["latency_ms"]) == (300.0, 350.0)


@pytest.mark.parametrize(
    ("chunks", "said"), [(0, "1 event"), (1, "2 events"), (999, "1,000 events")]
)
def test_a_choiceless_stream_counts_its_events_in_the_singular_for_one(
    chunks: int, said: str
) -> None:
    with pytest.raises(TransientAPIError) as info:
        complete(sse(*[{"id": "s1", "choices": []}] * chunks))
    assert str(info.value) == (
        f"HTTP 200 with no choices in the streamed answer ({said}, none with a choice)"
    )
