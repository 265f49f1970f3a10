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

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, NamedTuple, Protocol, runtime_checkable

import httpx


class Answer(NamedTuple):
    """A whole answer, as the client reads it."""

    status_code: int
    headers: Mapping[str, str]
    """By lower-case name (repeated headers joined with ``, ``, as httpx joins them)."""
    reason_phrase: str
    content: bytes
    """The body, decoded from its ``Content-Encoding`` if it had one."""


@runtime_checkable
class DirectTransport(Protocol):
    """A transport that can also POST bytes and read the answer whole without httpx's types.

    ``NetworkTransport.post_read``: the same request and answer, less the
    httpx request and response built around each one.
    """

    async def post_read(
        self, url: httpx.URL, headers: httpx.Headers, content: bytes, extensions: Mapping[str, Any]
    ) -> tuple[int, str, tuple[tuple[bytes, bytes], ...], bytes]: ...


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
        self._direct = transport if isinstance(transport, DirectTransport) else None
        self._direct_head = httpx.Headers(self._head)
        """The request's headers but its Content-Length, for the direct path."""
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
        return self._received(request, await self._transport.handle_async_request(request))

    def _received(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        """``response`` as the answer to ``request``, its cookies (if any) kept in the jar."""
        response.request = request
        if "set-cookie" in response.headers:
            self._client.cookies.extract_cookies(response)
            self._cookies = True
        return response

    async def post(self, content: bytes, extensions: dict[str, Any]) -> Answer:
        """Send ``content``; the answer and its body, read (and the connection released).

        Over a :class:`DirectTransport` (the network) the request goes without
        httpx's request and response around it, until a server sets a cookie.
        A body without a ``Content-Encoding`` is read straight from the transport's
        stream, without httpx's decoder and chunker layers around each chunk (a
        tenth of the client's CPU per turn against a fast server); an encoded one
        is decoded by httpx as always.
        """
        if self._direct is not None and not self._cookies:
            ext = {"timeout": self._timeout, **extensions}
            status, reason, raw, data = await self._direct.post_read(
                self.url, self._direct_head, content, ext
            )
            headers = _by_name(raw)
            if "set-cookie" not in headers and "content-encoding" not in headers:
                return Answer(status, headers, reason, data)
            extensions = {**extensions, "reason_phrase": reason.encode("ascii")}
            stream = httpx.ByteStream(data)
            response = httpx.Response(status, headers=raw, stream=stream, extensions=extensions)
            return await self._answer(self._received(self._request(content, {}), response))
        return await self._answer(await self._send(self._request(content, extensions)))

    async def _answer(self, response: httpx.Response) -> Answer:
        """A response's status, headers and body (decoded if encoded); then it is closed."""
        try:
            if "content-encoding" in response.headers:
                content = await response.aread()
            else:
                stream = response.stream
                assert isinstance(stream, httpx.AsyncByteStream)
                content = b"".join([chunk async for chunk in stream])
        finally:
            await response.aclose()
        headers = response.headers
        return Answer(response.status_code, headers, response.reason_phrase, content)

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


def _by_name(raw: tuple[tuple[bytes, bytes], ...]) -> dict[str, str]:
    """Headers as sent, by lower-case name: what ``httpx.Headers`` answers the client (values
    as UTF-8, else Latin-1), at a third of its CPU (it keeps every header three ways)."""
    headers: dict[str, str] = {}
    for key, value in raw:
        name = key.decode("latin-1").lower()
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = value.decode("latin-1")
        headers[name] = f"{headers[name]}, {text}" if name in headers else text
    return headers
