"""The network transport: httpx-aiohttp's ``AiohttpTransport``, with httpx's errors told apart.

``ChatClient`` keeps httpx's API (``httpx.AsyncClient``, its timeouts,
exceptions and streaming) and sends over aiohttp's connection pool, which
costs a fraction of httpcore's CPU per request at many connections
(docs/BENCHMARKS.md, "Client CPU per request, by HTTP transport") and
brings happy eyeballs (RFC 8305: a host whose IPv6 is broken is reached over
IPv4 after 0.25 s, not after the connect timeout) and HTTP proxies
(``CONNECT`` for https) on the same path as direct requests.

What this module adds to the library's transport:

- **Errors by kind.** httpx-aiohttp maps aiohttp's exceptions onto httpx's
  by a table in which ``ClientConnectionError`` (the base of a refused
  connection, a dropped one and a read timeout alike) becomes
  ``ConnectTimeout``. :func:`httpx_error` maps them again from the aiohttp
  exception itself, so a dropped connection is a ``RemoteProtocolError``, a
  refused one a ``ConnectError`` and silence a ``ReadTimeout``; the aiohttp
  exception stays the ``__cause__`` (a failed certificate check is an
  ``ssl.SSLCertVerificationError`` there, which is how the client knows it).
- **The session.** One pool of ``max_connections`` for every host, idle
  connections kept ``keepalive_expiry`` seconds, cookies left to httpx (no
  second jar), no environment read by aiohttp (``network.py`` decides the
  proxy and the TLS context).
- **The trace extension.** Like httpcore, it tells a request's ``trace``
  extension when it starts and finishes opening a connection
  (``connection.connect_tcp.started`` / ``.complete``), so the client can
  say whether a deadline passed while connecting or waiting for the answer;
  a connect timeout before any connection was begun is a ``PoolTimeout``.
"""

from __future__ import annotations

import contextvars
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import aiohttp.abc
import httpx
from httpx_aiohttp import AiohttpTransport

KEEPALIVE_EXPIRY = 5.0
"""Seconds an idle connection is kept: the default keep-alive of uvicorn and httpx."""
HAPPY_EYEBALLS_DELAY = 0.25
"""Seconds before the next address of a host is tried alongside the first (RFC 8305)."""

_LARGE_BODY = 512 * 1024
"""Request bodies of this many bytes or more are streamed (aiohttp warns from 1 MiB)."""
_PIECE = 256 * 1024


class _Sending:
    """The request this task is sending, and whether it began opening a connection."""

    __slots__ = ("connecting", "request")

    def __init__(self, request: httpx.Request) -> None:
        self.request = request
        self.connecting = False


_SENDING: contextvars.ContextVar[_Sending | None] = contextvars.ContextVar(
    "mtrun_sending", default=None
)
"""What this task is sending, for the connection trace."""


class NetworkTransport(AiohttpTransport):
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
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
        )
        super().__init__(verify=ssl_context, limits=limits, proxy=proxy, trust_env=False)
        self.max_connections = max_connections
        self._resolver = resolver
        """Where host names are looked up (default: the system's ``getaddrinfo``)."""
        self.connections_opened = 0
        """Connections opened so far (keep-alive at work keeps this low)."""

    def __repr__(self) -> str:
        proxied = ", proxied" if self.proxy is not None else ""
        return f"NetworkTransport(max_connections={self.max_connections}{proxied})"

    def get_client(self) -> aiohttp.ClientSession:
        """The aiohttp session: one pool, happy eyeballs, no cookie jar, no environment."""
        connector = _Connector(
            self,
            limit=self.max_connections,
            limit_per_host=0,
            keepalive_timeout=self.limits.keepalive_expiry,
            ssl=self.ssl_context,
            happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY,
            resolver=self._resolver,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; its answer's body streams, with errors mapped as above."""
        if self.proxy is not None and request.url.scheme == "http":
            # Forwarded as is: the proxy reads its credentials from the request itself
            # (aiohttp sends the proxy's headers only with a CONNECT).
            request.headers.update(self.proxy.headers)
        sending = _Sending(request)
        token = _SENDING.set(sending)
        try:
            response = await super().handle_async_request(_large_body_streamed(request))
        except (httpx.TransportError, aiohttp.ClientError) as exc:
            if not sending.connecting and isinstance(_cause(exc), aiohttp.ConnectionTimeoutError):
                # aiohttp's connect timeout covers the wait for a free connection too.
                raise httpx.PoolTimeout("no free connection within the timeout") from None
            raise httpx_error(exc) from _cause(exc)
        finally:
            _SENDING.reset(token)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Body(response.stream)
        return response


def _large_body_streamed(request: httpx.Request) -> httpx.Request:
    """``request``, its body streamed in pieces when it is large (a long conversation's history).

    aiohttp writes a body of bytes in one go and warns, over 1 MiB, that
    this may block the event loop; a stream it writes piece by piece. The
    Content-Length header stays, so the server still gets a plain body.
    """
    content = request.content
    if len(content) < _LARGE_BODY:
        return request
    return httpx.Request(
        request.method,
        request.url,
        headers=request.headers,
        stream=_Pieces(content),
        extensions=request.extensions,
    )


class _Pieces(httpx.AsyncByteStream):
    """A request body of bytes, sent in pieces of ``_PIECE`` bytes."""

    def __init__(self, content: bytes) -> None:
        self._content = content

    async def __aiter__(self) -> AsyncIterator[bytes]:
        view = memoryview(self._content)
        for start in range(0, len(view), _PIECE):
            yield bytes(view[start : start + _PIECE])


class _Body(httpx.AsyncByteStream):
    """An answer's body from the library's stream, with its errors mapped as above."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except (httpx.TransportError, aiohttp.ClientError) as exc:
            raise httpx_error(exc) from _cause(exc)

    async def aclose(self) -> None:
        await self._inner.aclose()


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
    trace = sending.request.extensions.get("trace")
    if trace is not None:
        await trace(event, {"request": sending.request})


_BY_CAUSE: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    # Most specific first: the first match wins.
    (aiohttp.ClientHttpProxyError, httpx.ProxyError),
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, DNS, TLS, the proxy down
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),  # the body cut or malformed
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # not an HTTP answer
    (aiohttp.ClientOSError, httpx.ReadError),  # reset, broken pipe
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
)


def httpx_error(exc: httpx.TransportError | aiohttp.ClientError) -> httpx.TransportError:
    """The httpx error that the aiohttp exception behind ``exc`` (or ``exc`` itself) stands for."""
    cause = _cause(exc)
    for aiohttp_class, httpx_class in _BY_CAUSE:
        if isinstance(cause, aiohttp_class):
            return exc if type(exc) is httpx_class else httpx_class(_words(cause))
    if isinstance(exc, httpx.TransportError):
        return exc
    return httpx.TransportError(_words(cause))


def _cause(exc: BaseException) -> BaseException:
    """The aiohttp exception behind a mapped one (or ``exc`` when none is)."""
    cause = exc.__cause__
    return cause if isinstance(exc, httpx.TransportError) and cause is not None else exc


def _words(cause: BaseException) -> str:
    """What an aiohttp exception says, or its class name when it says nothing."""
    if isinstance(cause, aiohttp.ClientResponseError):
        return f"{cause.status}, {cause.message}"  # without the URL
    return str(cause) or type(cause).__name__
