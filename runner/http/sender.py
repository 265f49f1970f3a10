"""One POST to one URL over a transport: what ``httpx.AsyncClient`` sends, at a fraction of its CPU.

``ChatClient`` posts to a single URL with fixed headers, no auth flow, no
redirects and no event hooks. ``AsyncClient.post`` still parses the URL,
merges headers, cookies and timeouts, runs its auth and redirect machinery
and hands every answer to its cookie jar (through ``urllib.request``
wrappers) on every request: about a fifth of mtrun's instructions per turn
against a zero-latency server (callgrind, docs/BENCHMARKS.md). :class:`Sender`
prepares all of that once and sends each request straight to the
transport: the same request (the client's own headers, in the same order,
its timeouts as the ``timeout`` extension, its cookies) and the same answer
(read, or streamed and closed on exit), on the same transport seam
(the network, the offline backend, an ``httpx.MockTransport``).

The ``httpx.AsyncClient`` stays the owner of the settings (default headers,
timeout, cookie jar) and of the transport, which its ``aclose`` closes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx


class Sender:
    """POSTs bodies to ``url`` over ``transport`` with ``client``'s headers, timeout and cookies."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        *,
        transport: httpx.AsyncBaseTransport,
        headers: dict[str, str],
    ) -> None:
        self._client = client
        self._transport = transport
        self.url = httpx.URL(url)
        merged = httpx.Headers(client.headers)
        merged.update(headers)
        self._headers = merged
        self._head = [(b"Host", self.url.netloc), *merged.raw]
        self._timeout = client.timeout.as_dict()
        self._cookies = False
        """Whether a server has set a cookie (the jar is read per request only then)."""

    def _request(self, content: bytes, extensions: dict[str, Any]) -> httpx.Request:
        extensions = {"timeout": self._timeout, **extensions}
        if self._cookies and self._client.cookies:
            # Built as AsyncClient builds it, the Cookie header in its place (rare: most
            # APIs set no cookies).
            return httpx.Request(
                "POST",
                self.url,
                headers=self._headers,
                cookies=self._client.cookies,
                content=content,
                extensions=extensions,
            )
        # The headers httpx would add (Host first, Content-Length last), given up front:
        # it then skips looking each one up, and reads the body from its stream at once.
        request = httpx.Request(
            "POST",
            self.url,
            headers=[*self._head, (b"Content-Length", b"%d" % len(content))],
            stream=httpx.ByteStream(content),
            extensions=extensions,
        )
        request.read()
        return request

    async def _send(self, request: httpx.Request) -> httpx.Response:
        response = await self._transport.handle_async_request(request)
        response.request = request
        if "set-cookie" in response.headers:
            self._client.cookies.extract_cookies(response)
            self._cookies = True
        return response

    async def post(
        self, content: bytes, extensions: dict[str, Any]
    ) -> tuple[httpx.Response, bytes]:
        """Send ``content``; the answer and its body, read (and the connection released).

        A body without a ``Content-Encoding`` is read straight from the transport's
        stream, without httpx's decoder and chunker layers around each chunk (a
        tenth of the client's CPU per turn against a fast server); an encoded one
        is decoded by httpx as always.
        """
        response = await self._send(self._request(content, extensions))
        try:
            if "content-encoding" in response.headers:
                return response, await response.aread()
            stream = response.stream
            assert isinstance(stream, httpx.AsyncByteStream)
            return response, b"".join([chunk async for chunk in stream])
        finally:
            await response.aclose()

    @asynccontextmanager
    async def stream(
        self, content: bytes, extensions: dict[str, Any]
    ) -> AsyncIterator[httpx.Response]:
        """Send ``content``; the answer with its body unread, closed when the block ends."""
        response = await self._send(self._request(content, extensions))
        try:
            yield response
        finally:
            await response.aclose()
