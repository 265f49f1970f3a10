"""Loopback servers for the network path: a chat endpoint (http or https) and an HTTP proxy.

Both run in the test's own event loop on real sockets. The proxy does what
squid or a corporate proxy does for a client that has ``HTTP(S)_PROXY``
set: ``CONNECT host:port`` opens a tunnel (https), and a request with an
absolute URL (``POST http://host/path``) is forwarded in origin form
(plain http). It checks ``Proxy-Authorization`` when given credentials,
answering 407 otherwise, and resolves every host name to ``upstream``
(the test's endpoint), as a proxy with its own DNS would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
from typing import Any, TypeVar
from urllib.parse import urlsplit

L = TypeVar("L", bound="_Loopback")

ANSWER = {
    "id": "chatcmpl-p1",
    "object": "chat.completion",
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi."}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


async def read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]] | None:
    """One request's line and headers (names lowercased); None when the peer closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    line, *fields = head.decode("latin-1").split("\r\n")[:-2]
    return line, {k.strip().lower(): v.strip() for k, v in (f.split(":", 1) for f in fields)}


class _Loopback:
    """A server on 127.0.0.1 that closes every connection it has when the block ends."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self._server: asyncio.Server | None = None
        self._open: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self.connections = 0
        """Connections accepted so far."""

    async def __aenter__(self: L) -> L:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._open.values():
            writer.close()
        for task in list(self._open):
            task.cancel()
        await asyncio.gather(*self._open, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = writer
        self.connections += 1
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                await self._serve(reader, writer)
        finally:
            writer.close()
            self._open.pop(task, None)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class ChatEndpoint(_Loopback):
    """A chat-completions endpoint that answers every request with :data:`ANSWER`."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(tls)
        self.seen: list[tuple[str, dict[str, str]]] = []
        """Each request's line and headers."""

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_head(reader)) is not None:
            self.seen.append(request)
            await reader.readexactly(int(request[1].get("content-length", "0")))
            body = json.dumps(ANSWER).encode()
            head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()


class LoopbackProxy(_Loopback):
    """An HTTP proxy: CONNECT tunnels and absolute-URL forwarding, all to ``upstream``."""

    def __init__(self, upstream: int, *, credentials: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.upstream = upstream
        """The port on 127.0.0.1 that every host name resolves to."""
        self.credentials = credentials
        self.seen: list[tuple[str, dict[str, str]]] = []
        """Each request's line and headers, as the proxy got them."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_head(reader)
        if request is not None:
            self.seen.append(request)
            await self._handle(request, reader, writer)

    async def _handle(
        self,
        request: tuple[str, dict[str, str]],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        line, headers = request
        if not self._authorized(headers):
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="loopback"\r\nContent-Length: 0\r\n\r\n'
            )
            await writer.drain()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        try:
            if line.startswith("CONNECT "):
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            else:
                await self._forward(request, reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()

    async def _forward(
        self,
        request: tuple[str, dict[str, str]] | None,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        """Forward each request of a kept-alive connection in origin form, and its answer back."""
        while request is not None:
            line, headers = request
            method, target, version = line.split(" ")
            parts = urlsplit(target)
            origin = parts.path + (f"?{parts.query}" if parts.query else "")
            kept = [f"{k}: {v}" for k, v in headers.items() if not k.startswith("proxy-")]
            head = "\r\n".join([f"{method} {origin} {version}", *kept]) + "\r\n\r\n"
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            up_writer.write(head.encode("latin-1") + body)
            answer = await read_head(up_reader)
            if answer is None:
                return
            status, answer_headers = answer
            fields = [f"{k}: {v}" for k, v in answer_headers.items()]
            answer_body = await up_reader.readexactly(int(answer_headers["content-length"]))
            writer.write(("\r\n".join([status, *fields]) + "\r\n\r\n").encode() + answer_body)
            await writer.drain()
            request = await read_head(reader)
            if request is not None:
                self.seen.append(request)

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self.credentials is None:
            return True
        token = base64.b64encode(":".join(self.credentials).encode()).decode()
        return headers.get("proxy-authorization") == f"Basic {token}"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until it ends, then close ``writer``."""
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()
