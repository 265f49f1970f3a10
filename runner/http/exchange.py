"""One POST and its whole answer over aiohttp's connection layer, without its client session.

``aiohttp.ClientSession.request`` builds a ``ClientRequest`` and a
``ClientResponse`` around every request (the URL parsed and checked again,
the headers merged with the session's, cookies filtered, auth and proxy
looked up, a timer armed) and, on Python before 3.12, writes the body from a
task of its own, one turn of the event loop after the headers. Against a fast
server that is half the client's CPU per request, and the turn it waits is
time a freed server slot stands idle (docs/BENCHMARKS.md, "The direct path
over aiohttp's connection layer").

:func:`post` does only what a chat request needs, with aiohttp's own parts:
a connection from the session's connector (its pool and keep-alive, happy
eyeballs, TLS, the proxy and its ``CONNECT`` tunnel), its header serializer
and stream writer, its response parser (the C one where built) and its
read timeout. The request goes out in one write when its body is small; a
larger body is written while the answer is awaited, as aiohttp's session
does, so an answer that comes first (a 413 for a long history) is taken at
once. The connection goes back to the pool when the answer was read to its
end and may be kept, and is closed otherwise.

What aiohttp's session would have added is the caller's to give: the
headers are sent as given (Host and Content-Length among them), no cookies,
no redirects, no decoding of the body.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from multidict import CIMultiDict, MultiDict
from yarl import URL

from runner.http.aiohttp_import import aiohttp

RawAnswer = tuple[int, str, tuple[tuple[bytes, bytes], ...], bytes]
"""A whole answer: its status, reason phrase, headers as sent and body."""

_AT_ONCE = 64 * 1024
"""A body of at most this many bytes goes in one write with the headers, before the answer is
awaited (the transport takes it whole: its buffer's high-water mark); a larger one is written
while the answer is awaited."""
_PIECE = 256 * 1024
"""A large body is written in pieces of this size, each drained before the next."""


class Target:
    """Where requests to one URL go: aiohttp's connection key for it and the request line.

    The ``ClientRequest`` is built once per URL, for the connector only (it
    picks the pool, the TLS context and name, and the proxy from it); nothing
    is sent through it.
    """

    __slots__ = ("request", "request_line")

    def __init__(
        self,
        url: str,
        *,
        loop: asyncio.AbstractEventLoop,
        proxy: str | None,
        proxy_headers: CIMultiDict[str] | None,
        server_hostname: str | None,
    ) -> None:
        parsed = URL(url)
        self.request = aiohttp.ClientRequest(
            "POST",
            parsed,
            loop=loop,
            proxy=None if proxy is None else URL(proxy),
            proxy_headers=None if proxy is None else CIMultiDict(proxy_headers or ()),
            server_hostname=server_hostname,
        )
        kept = self.request.proxy_headers  # the request's own (aiohttp may have copied them)
        if isinstance(kept, MultiDict):
            # The connector adds the Host to the proxy's headers on every connect; added
            # now, the pool's key (which hashes them) is the same for every request.
            kept["Host"] = self.request.headers["Host"]
        # A plain-http request through a proxy names the whole URL (absolute form).
        forwarded = proxy is not None and parsed.scheme == "http"
        target = str(parsed) if forwarded else parsed.raw_path_qs
        self.request_line = f"POST {target} HTTP/1.1"


async def post(
    connector: aiohttp.BaseConnector,
    target: Target,
    headers: CIMultiDict[str],
    body: bytes,
    timeout: aiohttp.ClientTimeout,
) -> RawAnswer:
    """POST ``body`` with ``headers`` to ``target``; the answer, read whole.

    Raises aiohttp's exceptions, as its session would: ``asyncio.TimeoutError``
    when no connection was had within ``timeout.connect``, a
    ``ClientConnectorError`` when none could be opened, a
    ``ServerTimeoutError`` when the server fell silent for ``timeout.sock_read``,
    a ``ServerDisconnectedError`` or ``ClientPayloadError`` when the answer
    was cut, ``aiohttp.http.HttpProcessingError`` when it was not HTTP.
    """
    connection = await connector.connect(target.request, [], timeout)
    writing: asyncio.Future[None] | None = None
    try:
        protocol = connection.protocol
        assert protocol is not None
        protocol.set_response_params(
            read_until_eof=True, auto_decompress=False, read_timeout=timeout.sock_read
        )
        sent = _send(protocol, target.request_line, headers, body)
        if len(body) <= _AT_ONCE:
            await sent  # one write, with the headers
        else:  # written while the answer is awaited, which may come first
            writing = asyncio.ensure_future(sent)
        while True:
            message, payload = await protocol.read()
            if not 100 <= message.code < 200:  # an interim answer (100 Continue) is skipped
                break
        data = await payload.read()
        if writing is not None and writing.done():
            writing.result()  # nothing, or a failure of this module's own
    except BaseException:
        connection.close()
        raise
    finally:
        if writing is not None and not writing.done():
            writing.cancel()  # answered before the body was all sent: the rest of it
            connection.close()  # would be taken for the next request
    connection.release()  # kept for the next request unless closed or the answer says otherwise
    return message.code, message.reason, message.raw_headers, data


async def _send(protocol: Any, request_line: str, headers: CIMultiDict[str], body: bytes) -> None:
    """Write the request, then start the read timeout; large bodies in drained pieces.

    A server may answer before it has read the whole body (a 413 for a long
    history) and hang up: writing then fails, quietly, and the answer is read
    as any other. With no answer, reading raises what ended the connection.
    """
    writer = aiohttp.http.StreamWriter(protocol, asyncio.get_running_loop())
    await writer.write_headers(request_line, headers)
    with contextlib.suppress(aiohttp.ClientConnectionError, OSError):
        if len(body) <= _PIECE:
            await writer.write_eof(body)
        else:
            view = memoryview(body)
            for start in range(0, len(view), _PIECE):
                await writer.write(view[start : start + _PIECE])
            await writer.write_eof()
    protocol.start_timeout()
