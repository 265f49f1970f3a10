"""The network transport: httpx's request and response over aiohttp's connection pool.

``ChatClient`` keeps httpx's API (its requests, responses, timeouts,
exceptions and streaming) and sends over aiohttp, which costs a fraction of
httpcore's CPU per request at many connections (docs/BENCHMARKS.md, "Client
CPU per request, by HTTP transport") and brings happy eyeballs (RFC 8305: a
host whose IPv6 is broken is reached over IPv4 after 0.25 s, not after the
connect timeout) and HTTP proxies (``CONNECT`` for https) on the same path
as direct requests.

An answer read whole takes a shorter way, :meth:`NetworkTransport.post_read`
(what :class:`~runner.http.sender.Sender` uses): the same bytes on the same
connections, sent by :mod:`runner.http.exchange` without httpx's or aiohttp's
request and response objects.

:class:`NetworkTransport` is the glue between the two, as httpx-aiohttp's
``AiohttpTransport`` is, less its per-request costs (a new ``ClientTimeout``,
the headers converted twice, two layers of exception
mapping on every request and every body chunk):

- **Errors by kind.** :func:`httpx_error` maps each aiohttp exception to the
  httpx error the client classifies: a dropped connection is a
  ``RemoteProtocolError``, a refused one a ``ConnectError`` and silence a
  ``ReadTimeout`` (httpx-aiohttp's table makes most of them ``ConnectTimeout``);
  the aiohttp exception stays the ``__cause__`` (a failed certificate check
  is an ``ssl.SSLCertVerificationError`` there, which is how the client knows it).
- **The session.** One pool of ``max_connections`` for every host, idle
  connections kept ``keepalive_expiry`` seconds, cookies left to httpx (no
  second jar), no environment read by aiohttp (``network.py`` decides the
  proxy and the TLS context), no decoding (httpx decodes the body, as for
  every transport).
- **The trace extension.** Like httpcore, it tells a request's ``trace``
  extension when it starts and finishes opening a connection
  (``connection.connect_tcp.started`` / ``.complete``), so the client can
  say whether a deadline passed while connecting or waiting for the answer;
  a connect timeout before any connection was begun is a ``PoolTimeout``.
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import httpx
from multidict import CIMultiDict

from runner.http import exchange
from runner.http.aiohttp_import import aiohttp

KEEPALIVE_EXPIRY = 5.0
"""Seconds an idle connection is kept: the default keep-alive of uvicorn and httpx."""
HAPPY_EYEBALLS_DELAY = 0.25
"""Seconds before the next address of a host is tried alongside the first (RFC 8305)."""

_LARGE_BODY = 512 * 1024
"""Request bodies of this many bytes or more are streamed (aiohttp warns from 1 MiB)."""
_PIECE = 256 * 1024
_CHUNK = 16 * 1024
"""The most an answer's body yields at once (httpx-aiohttp's size)."""


class _Sending:
    """What this task is sending (its ``trace`` extension), and whether it began connecting."""

    __slots__ = ("connecting", "request", "trace")

    def __init__(self, extensions: Mapping[str, Any], request: httpx.Request | None) -> None:
        self.trace: Trace | None = extensions.get("trace")
        self.request = request
        """The httpx request, or None on the direct path (:meth:`NetworkTransport.post_read`)."""
        self.connecting = False


Trace = Callable[[str, Mapping[str, Any]], Awaitable[None]]
"""httpx's ``trace`` extension: told an event's name and its details."""

_SENDING: contextvars.ContextVar[_Sending | None] = contextvars.ContextVar(
    "mtrun_sending", default=None
)
"""What this task is sending, for the connection trace."""


class NetworkTransport(httpx.AsyncBaseTransport):
    """httpx over aiohttp: at most ``max_connections``, through ``proxy`` when given.

    ``resolver`` looks host names up (aiohttp's seam; default: the system's).
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        max_connections: int = 8,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
        proxy: httpx.Proxy | None = None,
        resolver: aiohttp.abc.AbstractResolver | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self.proxy = proxy
        self._resolver = resolver
        """Where host names are looked up (default: the system's ``getaddrinfo``)."""
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}
        self._targets: dict[tuple[httpx.URL, str | None], exchange.Target] = {}
        """Where :meth:`post_read` sends, by URL and TLS server name."""
        self._head: httpx.Headers | None = None
        self._head_converted: CIMultiDict[str] = CIMultiDict()
        """The last headers :meth:`post_read` was given, and them as aiohttp takes them."""
        self.connections_opened = 0
        """Connections opened so far (keep-alive at work keeps this low)."""

    def __repr__(self) -> str:
        proxied = ", proxied" if self.proxy is not None else ""
        return f"NetworkTransport(max_connections={self.max_connections}{proxied})"

    def _open(self) -> aiohttp.ClientSession:
        """The aiohttp session: one pool, happy eyeballs, no cookie jar, no environment."""
        connector = _Connector(
            self,
            limit=self.max_connections,
            limit_per_host=0,
            keepalive_timeout=self.keepalive_expiry,
            ssl=self.ssl_context,
            happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY,
            resolver=self._resolver,
        )
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
        )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; its answer's body streams, with errors mapped as above."""
        proxy = self.proxy
        if proxy is not None and request.url.scheme == "http":
            # Forwarded as is: the proxy reads its credentials from the request itself
            # (aiohttp sends the proxy's headers only with a CONNECT).
            request.headers.update(proxy.headers)
        body = _body(request)  # before the headers: a streamed body drops one of them
        answer = await self._request(
            request.method,
            request.url,
            _headers(request.headers),
            body,
            request.extensions,
            _Sending(request.extensions, request),
        )
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if answer.reason:
            extensions["reason_phrase"] = answer.reason.encode()
        return httpx.Response(
            answer.status,
            headers=answer.raw_headers,
            stream=_Body(answer),
            request=request,
            extensions=extensions,
        )

    async def post_read(
        self, url: httpx.URL, headers: httpx.Headers, content: bytes, extensions: Mapping[str, Any]
    ) -> exchange.RawAnswer:
        """POST ``content`` with ``headers`` (and its Content-Length); the answer, read whole.

        The direct path of :class:`~runner.http.sender.Sender`: the same bytes on
        the wire as :meth:`handle_async_request` sends for an httpx request of
        these headers, over the same connections, but sent by
        :mod:`~runner.http.exchange` on aiohttp's connection layer, with neither
        httpx's request and response nor aiohttp's built around each one (0.28 ms
        of CPU per request at 32 connections against 0.64 ms through httpx and
        aiohttp's session: docs/BENCHMARKS.md). Errors are mapped as there.
        """
        if headers is not self._head:  # one Sender, the same headers every time
            self._head, self._head_converted = headers, _headers(headers)
        head = self._head_converted.copy()
        head["content-length"] = str(len(content))
        proxy = self.proxy
        if proxy is not None and url.scheme == "http":  # as handle_async_request does
            head.update(_headers(httpx.Headers(proxy.headers)))
        sni = extensions.get("sni_hostname")
        target = self._targets.get((url, sni))
        if target is None:
            target = self._targets[url, sni] = exchange.Target(
                str(url),
                loop=asyncio.get_running_loop(),
                proxy=None if proxy is None else str(proxy.url),
                proxy_headers=None if proxy is None else _headers(proxy.headers),
                server_hostname=sni,
            )
        connector = (self._session or self._open()).connector
        assert connector is not None  # the session's own, until it is closed
        sending = _Sending(extensions, None)
        token = _SENDING.set(sending)
        try:
            status, reason, raw, body = await exchange.post(
                connector, target, head, content, self._timeout(extensions.get("timeout"))
            )
        except (aiohttp.ClientError, aiohttp.http.HttpProcessingError) as exc:
            raise httpx_error(exc) from exc  # aiohttp's read timeout among them
        except asyncio.TimeoutError as exc:  # no connection within the connect timeout
            if not sending.connecting:
                raise httpx.PoolTimeout("no free connection within the timeout") from None
            raise httpx.ConnectTimeout("no connection within the timeout") from exc
        finally:
            _SENDING.reset(token)
        return status, _plain(status, reason), raw, body

    async def _request(
        self,
        method: str,
        url: httpx.URL,
        headers: CIMultiDict[str],
        body: bytes | AsyncIterator[bytes] | None,
        extensions: Mapping[str, Any],
        sending: _Sending,
    ) -> aiohttp.ClientResponse:
        """One request through aiohttp's pool, its errors mapped; the answer's body unread."""
        session = self._session or self._open()
        proxy = self.proxy
        token = _SENDING.set(sending)
        try:
            return await session.request(
                method,
                str(url),  # aiohttp's URL class keeps the ones it parsed
                headers=headers,
                data=body,
                allow_redirects=False,
                auto_decompress=False,  # httpx decodes, as for every transport
                timeout=self._timeout(extensions.get("timeout")),
                server_hostname=extensions.get("sni_hostname"),
                proxy=None if proxy is None else str(proxy.url),
                proxy_headers=None if proxy is None else proxy.headers,
            )
        except aiohttp.ClientError as exc:
            if not sending.connecting and isinstance(exc, aiohttp.ConnectionTimeoutError):
                # aiohttp's connect timeout covers the wait for a free connection too.
                raise httpx.PoolTimeout("no free connection within the timeout") from None
            raise httpx_error(exc) from exc
        finally:
            _SENDING.reset(token)

    def _timeout(self, timeouts: dict[str, float | None] | None) -> aiohttp.ClientTimeout:
        """httpx's timeouts as aiohttp's: connect for the socket, pool for a free connection."""
        timeouts = timeouts or {}
        key = (timeouts.get("connect"), timeouts.get("read"), timeouts.get("pool"))
        found = self._timeouts.get(key)
        if found is None:
            found = aiohttp.ClientTimeout(sock_connect=key[0], sock_read=key[1], connect=key[2])
            self._timeouts[key] = found
        return found

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _headers(headers: httpx.Headers) -> CIMultiDict[str]:
    """A request's headers as aiohttp takes them: named in lower case, repeated ones kept."""
    encoding = headers.encoding
    return CIMultiDict((k.lower().decode(encoding), v.decode(encoding)) for k, v in headers.raw)


def _body(request: httpx.Request) -> bytes | AsyncIterator[bytes] | None:
    """The request's body for aiohttp: bytes, or pieces when it is large (a long history).

    aiohttp writes a body of bytes in one go and warns, over 1 MiB, that this
    may block the event loop; pieces it writes one by one. The Content-Length
    header stays, so the server still gets a plain body. A body that is a
    stream (not read into the request) goes as it is.
    """
    try:
        content = request.content
    except httpx.RequestNotRead:
        request.headers.pop("transfer-encoding", None)  # aiohttp frames it itself
        return _stream(request.stream)
    return _content(content)


def _content(content: bytes) -> bytes | AsyncIterator[bytes] | None:
    """A body read into memory, for aiohttp: none, bytes, or pieces when it is large."""
    if not content:
        return None
    if len(content) < _LARGE_BODY:
        return content
    return _pieces(content)


async def _pieces(content: bytes) -> AsyncIterator[bytes]:
    view = memoryview(content)
    for start in range(0, len(view), _PIECE):
        yield bytes(view[start : start + _PIECE])


async def _stream(stream: httpx.SyncByteStream | httpx.AsyncByteStream) -> AsyncIterator[bytes]:
    assert isinstance(stream, httpx.AsyncByteStream)
    async for chunk in stream:
        yield chunk


def _plain(status: int, reason: str | None) -> str:
    """The reason phrase as httpx gives it: ASCII only, the standard one when none came."""
    if not reason:
        return httpx.codes.get_reason_phrase(status)
    return reason.encode("ascii", errors="ignore").decode("ascii")


class _Body(httpx.AsyncByteStream):
    """An answer's body as aiohttp reads it, with its errors mapped as above."""

    def __init__(self, answer: aiohttp.ClientResponse) -> None:
        self._answer = answer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._answer.content.iter_chunked(_CHUNK):
                yield chunk
        except aiohttp.ClientError as exc:
            raise httpx_error(exc) from exc

    async def aclose(self) -> None:
        """Give the connection back (or drop it, when the body was not read to its end)."""
        self._answer.release()
        try:
            await self._answer.wait_for_close()
        except aiohttp.ClientError as exc:
            raise httpx_error(exc) from exc


class _Connector(aiohttp.TCPConnector):
    """aiohttp's connector, telling the request being sent when it opens a connection.

    Done here rather than with an aiohttp ``TraceConfig``: a trace config
    makes aiohttp await a handful of signals on every request, reused
    connection or not (~5% of the client's CPU per request).
    """

    def __init__(self, transport: NetworkTransport, **options: Any) -> None:
        super().__init__(**options)
        self._transport = transport

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
        # aiohttp's hook for a new connection (every BaseConnector has it); not a reused one.
        sending = _SENDING.get()
        if sending is not None:
            sending.connecting = True
            await _trace(sending, "connection.connect_tcp.started")
        protocol = await super()._create_connection(req, traces, timeout)
        self._transport.connections_opened += 1
        if sending is not None:
            await _trace(sending, "connection.connect_tcp.complete")
        return protocol


async def _trace(sending: _Sending, event: str) -> None:
    """Tell the ``trace`` extension of the request being sent (as httpcore does) where it is."""
    if sending.trace is not None:
        await sending.trace(event, {"request": sending.request})


_BY_CAUSE: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    # Most specific first: the first match wins.
    (aiohttp.ClientHttpProxyError, httpx.ProxyError),
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, DNS, TLS, the proxy down
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),  # the body cut or malformed
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # not an HTTP answer
    (aiohttp.http.HttpProcessingError, httpx.RemoteProtocolError),  # the same, on the direct path
    (aiohttp.ClientOSError, httpx.ReadError),  # reset, broken pipe
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.ClientConnectionError, httpx.RemoteProtocolError),  # lost while sending
)


def httpx_error(
    exc: aiohttp.ClientError | aiohttp.http.HttpProcessingError,
) -> httpx.TransportError:
    """The httpx error that an aiohttp exception stands for (raise it ``from`` that one)."""
    for aiohttp_class, httpx_class in _BY_CAUSE:
        if isinstance(exc, aiohttp_class):
            return httpx_class(_words(exc))
    return httpx.TransportError(_words(exc))


def _words(cause: BaseException) -> str:
    """What an aiohttp exception says, or its class name when it says nothing."""
    if isinstance(cause, aiohttp.ClientResponseError):
        return f"{cause.status}, {cause.message}"  # without the URL
    if isinstance(cause, aiohttp.http.HttpProcessingError):
        return f"{cause.code}, {cause.message}"
    return str(cause) or type(cause).__name__
