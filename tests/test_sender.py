"""The sender: ChatClient sends the request httpx.AsyncClient would send, byte for byte."""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
from typing import Any

import httpx
import pytest

from runner.errors import TransientAPIError
from runner.http.client import ChatClient
from runner.http.ratelimits import RateLimits
from runner.http.transport import NetworkTransport

BASE = "https://api.example.test/v1"
ANSWER: dict[str, Any] = {
    "choices": [{"message": {"role": "assistant", "content": "Hi."}, "finish_reason": "stop"}]
}


def _recording(handler: Any) -> tuple[list[httpx.Request], httpx.MockTransport]:
    """A transport answering with ``handler`` that keeps every request it is sent."""
    seen: list[httpx.Request] = []

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        response: httpx.Response = handler(request)
        return response

    return seen, httpx.MockTransport(recording)


def _sent(handler: Any, bodies: int = 1, **client: Any) -> list[httpx.Request]:
    seen, transport = _recording(handler)

    async def go() -> None:
        async with ChatClient(BASE, api_key=None, transport=transport, **client) as chat:
            for i in range(bodies):
                await chat.complete({"model": "m", "messages": [], "n": i})

    asyncio.run(go())
    return seen


def _as_httpx_sent(
    handler: Any, bodies: list[bytes], timeout: float = 120.0
) -> list[httpx.Request]:
    """The requests ``httpx.AsyncClient.post`` sends with ChatClient's settings (as it did)."""
    seen, transport = _recording(handler)

    async def go() -> None:
        from runner import __version__

        async with httpx.AsyncClient(
            headers={"User-Agent": f"mtrun/{__version__}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0), read=None),
            transport=transport,
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


class _Plain(httpx.AsyncBaseTransport):
    """The network transport seen only through httpx's seam: the sender's path for every other."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Counting(NetworkTransport):
    """The network transport, counting the requests that went through httpx's seam."""

    through_httpx = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        _Counting.through_httpx += 1
        return await super().handle_async_request(request)


def _wire(answers: list[bytes], *, plain: bool) -> tuple[list[bytes], list[Any]]:
    """The requests (head and body, as sent) for ``answers`` over loopback, and the outcomes."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers[len(seen) :]:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            port = writer.get_extra_info("sockname")[1]
            head = head.replace(b":%d\r\n" % port, b":PORT\r\n")  # the same for both runs
            seen.append(head + await reader.readexactly(length))
            writer.write(answer)
            await writer.drain()
        writer.close()

    async def go() -> list[Any]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
        transport = _Counting(ssl_context=ssl.create_default_context(), max_connections=1)
        chosen = _Plain(transport) if plain else transport
        outcomes: list[Any] = []
        try:
            async with ChatClient(url, api_key=None, transport=chosen) as chat:
                for n in range(len(answers)):
                    try:
                        outcomes.append(await chat.complete({"model": "m", "messages": [], "n": n}))
                    except TransientAPIError as exc:
                        outcomes.append((exc.kind, str(exc)))
        finally:
            server.close()
        return outcomes

    return seen, asyncio.run(go())


def _answer(status: str, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_the_direct_network_path_sends_and_reads_what_the_httpx_path_does() -> None:
    body = json.dumps(ANSWER).encode()
    answers = [
        _answer("200 OK", body, "Content-Type: application/json", "x-ratelimit-limit-requests: 60"),
        _answer("503 ", b"", "Retry-After: 2"),  # no reason phrase: httpx's standard one
        _answer("503 Sl\u00e9epy", b""),  # not ASCII: httpx keeps the ASCII of it
        _answer("200 OK", gzip.compress(body), "Content-Encoding: gzip"),
        # Names in any case; a repeated header is one value, joined as httpx joins it.
        _answer(
            "200 OK",
            body,
            "X-RATELIMIT-Remaining-Requests: 7",
            "x-ratelimit-reset-requests: 1s",
            "X-Ratelimit-Reset-Requests: 2s",
        ),
    ]
    _Counting.through_httpx = 0
    direct = _wire(answers, plain=False)
    assert _Counting.through_httpx == 0  # all five went the direct way
    assert direct == _wire(answers, plain=True)
    assert _Counting.through_httpx == 5
    outcomes = direct[1]
    assert outcomes[4].rate_limits == RateLimits(remaining_requests=7)  # "1s, 2s": no reset
    assert [o.content for o in (outcomes[0], outcomes[3])] == ["Hi.", "Hi."]
    assert outcomes[0].rate_limits is not None
    assert outcomes[1:3] == [
        ("http_503", "HTTP 503: Service Unavailable"),
        ("http_503", "HTTP 503: Slepy"),
    ]


def test_a_cookie_set_over_the_network_goes_back_with_the_next_requests() -> None:
    body = json.dumps(ANSWER).encode()
    answers = [
        _answer("200 OK", body, "Set-Cookie: lb=node-7; Path=/"),
        *[_answer("200 OK", body)] * 2,
    ]
    _Counting.through_httpx = 0
    direct = _wire(answers, plain=False)
    assert [b"\r\ncookie: lb=node-7\r\n" in request for request in direct[0]] == [False, True, True]
    assert _Counting.through_httpx == 2  # once a cookie is set, the jar's way
    assert direct == _wire(answers, plain=True)
