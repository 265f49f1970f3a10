"""The sender: ChatClient sends the request httpx.AsyncClient would send, byte for byte."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

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


def _as_httpx_sends(content: bytes, timeout: float = 120.0) -> httpx.Request:
    """The request ``httpx.AsyncClient.post`` builds with ChatClient's settings."""
    client = httpx.AsyncClient(
        headers={"User-Agent": _user_agent(), "Accept": "application/json"},
        timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
        transport=httpx.MockTransport(lambda r: httpx.Response(200)),
    )
    return client.build_request(
        "POST",
        f"{BASE}/chat/completions",
        content=content,
        headers={"Content-Type": "application/json"},
    )


def _user_agent() -> str:
    from runner import __version__

    return f"mtrun/{__version__}"


def test_headers_order_and_timeouts_are_those_of_httpx_async_client() -> None:
    [request] = _sent(lambda r: httpx.Response(200, json=ANSWER), timeout=7.0)
    expected = _as_httpx_sends(request.content, timeout=7.0)
    assert request.headers.raw == expected.headers.raw
    assert [k for k, _ in request.headers.raw][:2] == [b"Host", b"Accept-Encoding"]
    assert request.url == expected.url
    assert request.extensions["timeout"] == {"connect": 7.0, "read": 7.0, "write": 7.0, "pool": 7.0}


def test_a_cookie_the_server_sets_goes_back_with_the_next_requests() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"set-cookie": "lb=node-7; Path=/"} if "cookie" not in request.headers else {}
        return httpx.Response(200, json=ANSWER, headers=headers)

    first, second, third = _sent(handler, bodies=3)
    assert "cookie" not in first.headers
    assert second.headers["cookie"] == "lb=node-7"
    assert third.headers["cookie"] == "lb=node-7"


def test_a_gzipped_answer_is_decoded_as_httpx_decodes_it() -> None:
    import gzip
    import json

    def handler(request: httpx.Request) -> httpx.Response:
        body = gzip.compress(json.dumps(ANSWER).encode())
        return httpx.Response(200, content=body, headers={"content-encoding": "gzip"})

    seen: list[Any] = []

    async def go() -> None:
        async with ChatClient(BASE, api_key=None, transport=httpx.MockTransport(handler)) as chat:
            seen.append(await chat.complete({"model": "m", "messages": []}))

    asyncio.run(go())
    assert seen[0].content == "Hi."
