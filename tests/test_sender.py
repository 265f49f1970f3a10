"""The sender: ChatClient sends the request httpx.AsyncClient would send, byte for byte."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import httpx
import pytest

from runner.errors import TransientAPIError
from runner.http.client import ChatClient

BASE = "https://api.example.test/v1"
ANSWER: dict[str, Any] = {
    "choices": [{"message": {"role": "assistant", "content": "Hi."}, "finish_reason": "stop"}]
}


def _sent(handler: Any, bodies: int = 1, **client: Any) -> list[httpx.Request]:
    seen: list[httpx.Request] = []

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        response: httpx.Response = handler(request)
        return response

    async def go() -> None:
        transport = httpx.MockTransport(recording)
        async with ChatClient(BASE, api_key=None, transport=transport, **client) as chat:
            for i in range(bodies):
                await chat.complete({"model": "m", "messages": [], "n": i})

    asyncio.run(go())
    return seen


def _as_httpx_sent(
    handler: Any, bodies: list[bytes], timeout: float = 120.0
) -> list[httpx.Request]:
    """The requests ``httpx.AsyncClient.post`` sends with ChatClient's settings (as it did)."""
    seen: list[httpx.Request] = []

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        response: httpx.Response = handler(request)
        return response

    async def go() -> None:
        from runner import __version__

        async with httpx.AsyncClient(
            headers={"User-Agent": f"mtrun/{__version__}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0), read=None),
            transport=httpx.MockTransport(recording),
        ) as client:
            for body in bodies:
                url = f"{BASE}/chat/completions"
                headers = {"Content-Type": "application/json"}
                await client.post(url, content=body, headers=headers)

    asyncio.run(go())
    return seen


def _same_requests(ours: list[httpx.Request], theirs: list[httpx.Request]) -> None:
    assert len(ours) == len(theirs)
    for mine, httpx_ in zip(ours, theirs, strict=True):
        assert mine.method == httpx_.method and mine.url == httpx_.url
        assert mine.headers.raw == httpx_.headers.raw  # names, values and order
        assert mine.content == httpx_.content
        assert mine.extensions["timeout"] == httpx_.extensions["timeout"]


def test_headers_order_and_timeouts_are_those_of_httpx_async_client() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=ANSWER)

    ours = _sent(handler, bodies=2, timeout=7.0)
    _same_requests(ours, _as_httpx_sent(handler, [r.content for r in ours], timeout=7.0))
    assert [k for k, _ in ours[0].headers.raw][:2] == [b"Host", b"Accept-Encoding"]
    # No read timeout: the client's own deadline bounds the answer (see client.py).
    assert ours[0].extensions["timeout"] == {
        "connect": 7.0,
        "read": None,
        "write": 7.0,
        "pool": 7.0,
    }


def test_a_cookie_the_server_sets_goes_back_with_the_next_requests() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"set-cookie": "lb=node-7; Path=/"} if "cookie" not in request.headers else {}
        return httpx.Response(200, json=ANSWER, headers=headers)

    ours = _sent(handler, bodies=3)
    first, second, third = ours
    assert "cookie" not in first.headers
    assert second.headers["cookie"] == "lb=node-7"
    assert third.headers["cookie"] == "lb=node-7"
    _same_requests(ours, _as_httpx_sent(handler, [r.content for r in ours]))


def test_a_gzipped_answer_is_decoded_as_httpx_decodes_it() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = gzip.compress(json.dumps(ANSWER).encode())
        return httpx.Response(200, content=body, headers={"content-encoding": "gzip"})

    seen: list[Any] = []

    async def go() -> None:
        async with ChatClient(BASE, api_key=None, transport=httpx.MockTransport(handler)) as chat:
            seen.append(await chat.complete({"model": "m", "messages": []}))

    asyncio.run(go())
    assert seen[0].content == "Hi."


def _over_the_network(answer: bytes, pieces: int = 1) -> Any:
    """One ChatClient.complete against a loopback server that sends ``answer`` in pieces."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        size = -(-len(answer) // pieces)
        for start in range(0, len(answer), size):
            writer.write(answer[start : start + size])
            await writer.drain()
            await asyncio.sleep(0)
        writer.close()

    async def go() -> Any:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with ChatClient(f"http://127.0.0.1:{port}/v1", api_key=None) as chat:
                return await chat.complete({"model": "m", "messages": []})
        finally:
            server.close()

    return asyncio.run(go())


def _http(body: bytes, *headers: str) -> bytes:
    head = ["HTTP/1.1 200 OK", "Content-Type: application/json", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_a_chunked_answer_sent_in_pieces_arrives_whole() -> None:
    body = json.dumps(ANSWER).encode()
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7)
    )
    answer = _http(chunks + b"0\r\n\r\n", "Transfer-Encoding: chunked")
    assert _over_the_network(answer, pieces=9).content == "Hi."


def test_a_gzipped_answer_from_the_network_is_decoded() -> None:
    body = gzip.compress(json.dumps(ANSWER).encode())
    answer = _http(body, f"Content-Length: {len(body)}", "Content-Encoding: gzip")
    assert _over_the_network(answer, pieces=3).content == "Hi."


def test_an_answer_cut_short_is_a_dropped_connection_worth_retrying() -> None:
    body = json.dumps(ANSWER).encode()
    answer = _http(body[:20], f"Content-Length: {len(body)}")
    with pytest.raises(TransientAPIError) as info:
        _over_the_network(answer)
    assert info.value.kind == "connection_dropped"
