"""The network transport (httpx over aiohttp), against scripted servers on real loopback sockets.

What mtrun relies on from it: keep-alive within a connection limit, answers
that stream as they arrive, each failure as the httpx error the client
classifies (a refused connection is not a timeout, a dropped one is a
protocol error), https verified, and the connection trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from helpers import self_signed_cert

from runner.http.client import ChatClient, Completion
from runner.http.transport import NetworkTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


class Server:
    """A loopback server in the test's own event loop; ``handler`` runs once per connection."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{port}/v1/chat/completions"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bool:
        """Read one request into ``requests``; False when the client closed instead."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        line, *fields = head.decode("latin-1").split("\r\n")[:-2]
        headers = {k.lower(): v.strip() for k, v in (f.split(":", 1) for f in fields)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append((line, headers, body))
        return True


def ok(body: bytes = b'{"ok": true}', *extra: str) -> bytes:
    head = [
        "HTTP/1.1 200 OK",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def answer_chat(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
) -> None:
    """Answer every request on the connection with a chat completion."""
    while await s.read_request(reader):
        message = {"role": "assistant", "content": "Hi."}
        answer = {"id": "c1", "choices": [{"index": 0, "message": message}]}
        writer.write(ok(json.dumps(answer).encode()))
        await writer.drain()


async def answer_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
    """Answer every request on the connection, keeping it open."""
    while await s.read_request(reader):
        s.in_flight += 1
        s.max_in_flight = max(s.max_in_flight, s.in_flight)
        await asyncio.sleep(0.01)
        s.in_flight -= 1
        writer.write(ok(json.dumps({"n": len(s.requests)}).encode()))
        await writer.drain()


def run(coro: Awaitable[Any]) -> Any:
    async def go() -> Any:
        return await coro

    return asyncio.run(go())


def network(
    *, ssl_context: ssl.SSLContext | None = None, max_connections: int = 8
) -> NetworkTransport:
    """The transport as ``network.py`` builds it, trusting ``ssl_context`` (default: the system)."""
    context = ssl_context or ssl.create_default_context()
    return NetworkTransport(ssl_context=context, max_connections=max_connections)


def client(transport: NetworkTransport, via: str = "httpx", **timeouts: float) -> Any:
    """An httpx client over ``transport``; with ``via="direct"``, one posting by the direct path."""
    http = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, **timeouts))
    return http if via == "httpx" else Direct(http, transport)


class Direct:
    """``NetworkTransport.post_read`` (what ``Sender`` uses) behind httpx's ``post``.

    The request is the one httpx would build (its headers but Content-Length,
    which ``post_read`` adds); the answer comes back as an ``httpx.Response``.
    """

    def __init__(self, http: httpx.AsyncClient, transport: NetworkTransport) -> None:
        self.http = http
        self.transport = transport

    async def __aenter__(self) -> Direct:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def post(
        self, url: str, *, extensions: dict[str, Any] | None = None, **given: Any
    ) -> httpx.Response:
        request = self.http.build_request("POST", url, **given)
        headers = httpx.Headers([kv for kv in request.headers.raw if kv[0] != b"Content-Length"])
        ext = {"timeout": self.http.timeout.as_dict(), **(extensions or {})}
        status, reason, raw, data = await self.transport.post_read(
            request.url, headers, request.read(), ext
        )
        return httpx.Response(
            status,
            headers=raw,
            content=data,
            request=request,
            extensions={"reason_phrase": reason.encode()},
        )


@pytest.fixture(params=["httpx", "direct"])
def via(request: pytest.FixtureRequest) -> str:
    """Each way the client posts over the transport: an httpx request, or the direct path."""
    return str(request.param)


def test_sequential_requests_share_one_keep_alive_connection(via: str) -> None:
    async def go() -> None:
        async with Server(answer_all) as server:
            transport = network(max_connections=4)
            async with client(transport, via) as http:
                for n in range(1, 6):
                    r = await http.post(server.url, json={"turn": n})
                    assert r.status_code == 200 and r.json() == {"n": n}
            assert server.connections == 1 and transport.connections_opened == 1
            line, headers, body = server.requests[0]
            assert line == "POST /v1/chat/completions HTTP/1.1"
            assert headers["host"].startswith("127.0.0.1:")
            assert headers["content-type"] == "application/json"
            assert json.loads(body) == {"turn": 1}

    run(go())


def test_never_more_connections_than_the_limit(via: str) -> None:
    async def go() -> None:
        async with Server(answer_all) as server:
            async with client(network(max_connections=3), via) as http:
                answers = await asyncio.gather(
                    *(http.post(server.url, json={"i": i}) for i in range(12))
                )
            assert [r.status_code for r in answers] == [200] * 12
            assert server.connections == 3
            assert server.max_in_flight == 3

    run(go())


def test_a_connection_the_server_closed_while_idle_is_not_reused(via: str) -> None:
    async def one_then_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
    ) -> None:
        await s.read_request(reader)
        writer.write(ok())
        await writer.drain()
        # then hang up without saying so (a server's keep-alive timeout)

    async def go() -> None:
        async with Server(one_then_close) as server:
            async with client(network(), via) as http:
                for _ in range(3):
                    assert (await http.post(server.url, content=b"{}")).status_code == 200
                    await asyncio.sleep(0.05)  # the close reaches the client
            assert server.connections == 3

    run(go())


def test_connection_close_in_the_answer_means_a_new_connection(via: str) -> None:
    async def close_each(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
    ) -> None:
        while await s.read_request(reader):
            writer.write(ok(b"{}", "Connection: close"))
            await writer.drain()

    async def go() -> None:
        async with Server(close_each) as server:
            async with client(network(), via) as http:
                for _ in range(3):
                    assert (await http.post(server.url, content=b"{}")).status_code == 200
            assert server.connections == 3

    run(go())


def test_a_chunked_answer_streams_as_it_arrives() -> None:
    async def slow_chunks(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
    ) -> None:
        await s.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for word in (b"data: one\n\n", b"data: two\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(word), word))
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await s.read_request(reader)  # keep-alive: the connection stays open

    async def go() -> list[tuple[str, float]]:
        seen: list[tuple[str, float]] = []
        loop = asyncio.get_running_loop()
        async with Server(slow_chunks) as server:
            async with client(network()) as http:
                async with http.stream("POST", server.url, content=b"{}") as r:
                    async for line in r.aiter_lines():
                        if line:
                            seen.append((line, loop.time()))
        return seen

    seen = run(go())
    assert [line for line, _ in seen] == ["data: one", "data: two"]
    assert seen[1][1] - seen[0][1] >= 0.04  # the first line did not wait for the second


def test_a_large_request_and_answer_arrive_whole(via: str) -> None:
    big = json.dumps({"content": "x" * 3_000_000}).encode()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        while await s.read_request(reader):
            await asyncio.sleep(0.05)  # let the client's buffers fill
            writer.write(ok(s.requests[-1][2] * 2))
            await writer.drain()

    async def go() -> None:
        async with Server(echo) as server:
            async with client(network(), via) as http:
                r = await http.post(server.url, content=big)
                assert r.content == big * 2
                r = await http.post(server.url, content=b"{}")
                assert r.content == b"{}{}"
            assert server.connections == 1

    run(go())


@pytest.mark.parametrize("then", ["reset", "stop-reading"])
def test_an_answer_sent_before_the_body_was_read_is_the_answer(via: str, then: str) -> None:
    big = json.dumps({"content": "x" * 8_000_000}).encode()

    async def too_large(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the headers only: the body is refused unread
        s.requests.append(("", {}, b""))
        body = b'{"error": {"message": "request entity too large"}}'
        close = b"Connection: close\r\n" if then == "reset" else b""
        writer.write(
            b"HTTP/1.1 413 Payload Too Large\r\n%sContent-Length: %d\r\n\r\n%s"
            % (close, len(body), body)
        )
        await writer.drain()
        if then == "reset":  # hang up at once, the unread body making it a reset
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:  # keep the connection, reading nothing more: the client's writes stall
            await asyncio.sleep(5)

    async def go() -> None:
        async with Server(too_large) as server:
            async with client(network(max_connections=1), via) as http:
                # The answer is taken as it comes, not after the stalled writes.
                r = await asyncio.wait_for(http.post(server.url, content=big), 2.0)
                assert r.status_code == 413
                assert r.json()["error"]["message"] == "request entity too large"
                r = await http.post(server.url, content=b"{}")  # a connection of its own
                assert r.status_code == 413
            assert server.connections == 2

    run(go())


def test_a_server_that_stops_answering_gives_a_read_timeout_and_frees_the_slot(via: str) -> None:
    async def hang_first(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
    ) -> None:
        await s.read_request(reader)
        if len(s.requests) == 1:
            # Never answer; the client must hang up.
            hung_up.append(await asyncio.wait_for(reader.read(), 5) == b"")
            return
        writer.write(ok())
        await writer.drain()

    hung_up: list[bool] = []

    async def go() -> None:
        async with Server(hang_first) as server:
            transport = network(max_connections=1)
            async with client(transport, via, read=0.1) as http:
                with pytest.raises(httpx.ReadTimeout):
                    await http.post(server.url, content=b"{}")
                assert (await http.post(server.url, content=b"{}")).status_code == 200
            assert server.connections == 2  # the timed-out connection was not reused
            assert hung_up == [True]

    run(go())


def test_no_free_connection_within_the_pool_timeout(via: str) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(reader)
        await asyncio.sleep(0.5)
        writer.write(ok())
        await writer.drain()

    async def go() -> None:
        async with Server(slow) as server:
            async with client(network(max_connections=1), via, pool=0.05) as http:
                first = asyncio.ensure_future(http.post(server.url, content=b"{}"))
                await asyncio.sleep(0.01)
                with pytest.raises(httpx.PoolTimeout):
                    await http.post(server.url, content=b"{}")
                assert (await first).status_code == 200

    run(go())


def test_a_cancelled_request_gives_its_slot_back(via: str) -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        await s.read_request(reader)
        if len(s.requests) == 1:
            await asyncio.sleep(10)
        writer.write(ok())
        await writer.drain()

    async def go() -> None:
        async with Server(hang) as server:
            async with client(network(max_connections=1), via, pool=1.0) as http:
                task = asyncio.ensure_future(http.post(server.url, content=b"{}"))
                while not server.requests:
                    await asyncio.sleep(0.01)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert (await http.post(server.url, content=b"{}")).status_code == 200
            assert server.connections == 2

    run(go())


def test_waiters_for_a_slot_are_served_in_order_and_a_cancelled_one_is_skipped(via: str) -> None:
    async def go() -> None:
        async with Server(answer_all) as server:
            async with client(network(max_connections=1), via) as http:
                order: list[int] = []

                async def post(i: int) -> None:
                    await http.post(server.url, json={"i": i})
                    order.append(i)

                tasks = [asyncio.ensure_future(post(i)) for i in range(4)]
                await asyncio.sleep(0)
                tasks[2].cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                assert order == [0, 1, 3]
                await post(9)  # every slot came back
                assert order == [0, 1, 3, 9]

    run(go())


def test_a_slot_handed_to_a_waiter_cancelled_before_it_ran_is_passed_on() -> None:
    async def go() -> None:
        async with Server(answer_all) as server:
            transport = network(max_connections=1)

            def post() -> Awaitable[httpx.Response]:
                return transport.handle_async_request(httpx.Request("POST", server.url, json={}))

            first = await post()  # holds the one slot until its answer is read
            waiting = asyncio.ensure_future(post())
            await asyncio.sleep(0)  # waiting for the slot
            await first.aread()  # read to the end: the slot goes to the waiter...
            waiting.cancel()  # ...which is cancelled before it could run
            with pytest.raises(asyncio.CancelledError):
                await waiting
            third = await asyncio.wait_for(post(), 1.0)  # the slot was not lost
            await third.aread()
            await transport.aclose()

    run(go())


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"", httpx.RemoteProtocolError),  # hung up without an answer
        (b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"cut', httpx.RemoteProtocolError),
        (b"this is not HTTP\r\n\r\n", httpx.RemoteProtocolError),
    ],
    ids=["no-answer", "cut-body", "garbage"],
)
def test_a_broken_answer_is_a_protocol_error_and_the_next_request_works(
    reply: bytes, error: type[Exception], via: str
) -> None:
    async def broken_first(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
    ) -> None:
        while await s.read_request(reader):
            if len(s.requests) == 1:
                writer.write(reply)
                await writer.drain()
                return  # and close
            writer.write(ok())
            await writer.drain()

    async def go() -> None:
        async with Server(broken_first) as server:
            async with client(network(max_connections=1), via) as http:
                with pytest.raises(error):
                    r = await http.post(server.url, content=b"{}")
                    r.raise_for_status()
                assert (await http.post(server.url, content=b"{}")).status_code == 200

    run(go())


def test_an_interim_answer_is_skipped_for_the_one_that_follows(via: str) -> None:
    async def continue_first(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
    ) -> None:
        while await s.read_request(reader):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b'{"n": %d}' % len(s.requests)))
            await writer.drain()

    async def go() -> None:
        async with Server(continue_first) as server:
            async with client(network(), via) as http:
                for n in (1, 2):
                    r = await http.post(server.url, content=b"{}")
                    assert (r.status_code, r.json()) == (200, {"n": n})
            assert server.connections == 1

    run(go())


def test_an_answer_without_a_length_is_read_until_the_server_closes(via: str) -> None:
    async def close_delimited(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
    ) -> None:
        await s.read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"part": 1,')
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b' "whole": true}')
        await writer.drain()

    async def go() -> None:
        async with Server(close_delimited) as server:
            async with client(network(), via) as http:
                for _ in range(2):
                    r = await http.post(server.url, content=b"{}")
                    assert r.json() == {"part": 1, "whole": True}
            assert server.connections == 2

    run(go())


def test_a_server_that_falls_silent_inside_its_answer_is_a_read_timeout(via: str) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        while await s.read_request(reader):
            if len(s.requests) == 1:
                writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"cho')
                await writer.drain()
                await asyncio.sleep(5)
                return
            writer.write(ok())
            await writer.drain()

    async def go() -> None:
        async with Server(stall) as server:
            async with client(network(max_connections=1), via, read=0.1) as http:
                with pytest.raises(httpx.ReadTimeout):
                    await http.post(server.url, content=b"{}")
                assert (await http.post(server.url, content=b"{}")).status_code == 200
            assert server.connections == 2

    run(go())


def test_nothing_listening_is_a_connect_error(via: str) -> None:
    async def go() -> None:
        async with Server(answer_all) as server:
            url = server.url
        await asyncio.sleep(0.01)
        async with client(network(), via) as http:
            with pytest.raises(httpx.ConnectError):
                await http.post(url, content=b"{}")

    run(go())


def test_only_http_and_https_urls() -> None:
    async def go() -> None:
        transport = network()
        with pytest.raises(httpx.UnsupportedProtocol):
            await transport.handle_async_request(httpx.Request("GET", "ftp://example.com/"))
        await transport.aclose()

    run(go())


def test_at_least_one_connection() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        network(max_connections=0)


def test_a_stream_left_after_its_last_event_keeps_the_connection_when_its_end_arrived() -> None:
    events = b"data: one\n\ndata: [DONE]\n\n"

    async def sse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        while await s.read_request(reader):
            chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(events), events)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
            await writer.drain()

    async def go() -> None:
        async with Server(sse) as server:
            async with client(network()) as http:
                for _ in range(3):
                    async with http.stream("POST", server.url, content=b"{}") as r:
                        async for line in r.aiter_lines():
                            if line == "data: [DONE]":
                                break  # as the stream reader does
            assert server.connections == 1

    run(go())


def test_an_answer_closed_before_its_end_arrived_drops_the_connection() -> None:
    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        while await s.read_request(reader):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
            await writer.drain()

    async def go() -> None:
        async with Server(half) as server:
            async with client(network(), read=0.5) as http:
                for _ in range(2):
                    async with http.stream("POST", server.url, content=b"{}") as r:
                        async for _chunk in r.aiter_raw():
                            break
            assert server.connections == 2

    run(go())


def test_https_keeps_its_connection_verifies_the_server_and_streams(tmp_path: Path) -> None:
    pytest.importorskip("cryptography", reason="needed to make a self-signed certificate")
    cert, key = self_signed_cert(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)

    async def answer_or_stream(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
    ) -> None:
        while await s.read_request(reader):
            if b"stream" in s.requests[-1][2]:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                writer.write(b"b\r\ndata: one\n\n\r\n0\r\n\r\n")
            else:
                writer.write(ok())
            await writer.drain()

    async def go() -> None:
        async with Server(answer_or_stream, tls=server_tls) as server:
            trusting = ssl.create_default_context(cafile=str(cert))
            async with client(network(ssl_context=trusting)) as http:
                for _ in range(3):
                    assert (await http.post(server.url, content=b"{}")).json() == {"ok": True}
                async with http.stream("POST", server.url, content=b'{"stream": 1}') as r:
                    assert [line async for line in r.aiter_lines() if line] == ["data: one"]
                assert (await http.post(server.url, content=b"{}")).status_code == 200
            assert server.connections == 1
            # A client that does not trust the certificate never gets to send.
            async with client(network(ssl_context=ssl.create_default_context())) as http:
                with pytest.raises(httpx.ConnectError) as info:
                    await http.post(server.url, content=b"{}")
                assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
            assert len(server.requests) == 5

    run(go())


def test_the_trace_extension_hears_when_a_connection_is_opened(via: str) -> None:
    events: list[str] = []

    async def trace(event: str, info: dict[str, Any]) -> None:
        events.append(event)

    async def go() -> None:
        async with Server(answer_all) as server:
            async with client(network(max_connections=1), via) as http:
                for _ in range(2):
                    r = await http.post(server.url, json={}, extensions={"trace": trace})
                    assert r.status_code == 200
                    events.append("answered")

    run(go())
    # The second request reuses the kept-alive connection: nothing to connect.
    assert events == [
        "connection.connect_tcp.started",
        "connection.connect_tcp.complete",
        "answered",
        "answered",
    ]


def test_a_failure_keeps_the_library_error_as_its_cause(via: str) -> None:
    async def hang_up(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
    ) -> None:
        await s.read_request(reader)

    async def go() -> None:
        async with Server(hang_up) as server:
            async with client(network(), via) as http:
                with pytest.raises(httpx.RemoteProtocolError) as info:
                    await http.post(server.url, content=b"{}")
        assert isinstance(info.value.__cause__, aiohttp.ServerDisconnectedError)
        assert str(info.value) == "Server disconnected"

    run(go())


def test_one_transport_sends_to_each_url_it_is_given_in_turn(via: str) -> None:
    async def go() -> None:
        async with Server(answer_all) as first, Server(answer_all) as second:
            async with client(network(), via) as http:
                for url in (first.url, second.url, second.url, first.url):
                    assert (await http.post(url, json={})).status_code == 200
        assert (len(first.requests), len(second.requests)) == (2, 2)

    run(go())


def test_headers_go_as_httpx_built_them_in_lower_case_repeated_ones_too() -> None:
    seen: list[bytes] = []

    async def head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        await reader.readexactly(2)
        writer.write(ok())
        await writer.drain()

    async def go() -> None:
        async with Server(head) as server:
            async with client(network()) as http:
                headers = [("X-Tag", "a"), ("Content-Type", "application/json"), ("X-Tag", "b")]
                await http.post(server.url, content=b"{}", headers=headers)

    run(go())
    lines = seen[0].decode().split("\r\n")[1:-2]
    assert [line.split(":")[0] for line in lines] == [
        *("host", "accept", "accept-encoding", "connection", "user-agent"),
        *("x-tag", "content-type", "x-tag", "content-length"),
    ]
    assert lines[5:8] == ["x-tag: a", "content-type: application/json", "x-tag: b"]


def test_a_request_body_given_as_a_stream_goes_chunked_and_arrives_whole() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def chunked(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
    ) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.readuntil(b"0\r\n\r\n")
        seen.append((head.lower(), body))
        writer.write(ok())
        await writer.drain()

    async def pieces() -> Any:
        for piece in (b'{"a":', b" 1}"):
            yield piece

    async def go() -> None:
        async with Server(chunked) as server:
            async with client(network()) as http:
                assert (await http.post(server.url, content=pieces())).status_code == 200

    run(go())
    [(head, body)] = seen
    assert b"transfer-encoding: chunked" in head and head.count(b"transfer-encoding") == 1
    assert body == b'5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n'


@pytest.mark.parametrize(
    "lost",
    [
        aiohttp.ClientConnectionResetError("Cannot write to closing transport"),
        aiohttp.ClientConnectionError("Connection closed"),
    ],
)
def test_a_connection_lost_while_sending_is_a_dropped_connection(lost: Exception) -> None:
    from runner.http.transport import httpx_error

    assert isinstance(lost, aiohttp.ClientError)
    mapped = httpx_error(lost)
    assert type(mapped) is httpx.RemoteProtocolError  # "connection dropped", not a timeout
    assert str(mapped) == str(lost)


class _BrokenIPv6First(aiohttp.abc.AbstractResolver):
    """Resolves every name to ::1 first (where nothing answers), then 127.0.0.1."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": kind,
                "proto": 0,
                "flags": 0,
            }
            for address, kind in (("::1", socket.AF_INET6), ("127.0.0.1", socket.AF_INET))
        ]

    async def close(self) -> None:
        return None


def black_hole(port: int) -> list[socket.socket]:
    """A port on ::1 whose connections never complete: a full backlog drops every SYN."""
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    listener.bind(("::1", port))
    listener.listen(0)
    held = [listener]
    for _ in range(3):
        filler = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("::1", port))
        held.append(filler)
    return held


def test_a_host_whose_ipv6_is_broken_is_reached_over_ipv4_before_the_deadline() -> None:
    async def go() -> Completion:
        async with Server(answer_chat) as server:
            port = int(server.url.split(":")[2].split("/")[0])
            held = black_hole(port)
            try:
                transport = NetworkTransport(
                    ssl_context=ssl.create_default_context(), resolver=_BrokenIPv6First()
                )
                # Without happy eyeballs the ::1 attempt would use up the whole 2 s.
                async with ChatClient(
                    f"http://dual-stack.test:{port}/v1",
                    api_key=None,
                    timeout=2.0,
                    transport=transport,
                ) as chat:
                    return await chat.complete({"model": "m", "messages": []})
            finally:
                for sock in held:
                    sock.close()

    assert run(go()).content == "Hi."
