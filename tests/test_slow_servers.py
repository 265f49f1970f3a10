"""Slow servers on real loopback sockets: --timeout bounds every one of them.

Each server misbehaves in one way (trickles bytes, pings, falls silent, never
answers) and stops by itself after ``CAP`` seconds, so a client that would
wait forever fails these tests instead of hanging them. The only real time
spent is the server's silence, a fraction of a second per test.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from runner.errors import TransientAPIError
from runner.http.client import ChatClient, Completion
from runner.http.mock import answer, stream_events

TIMEOUT = 0.3
CAP = 4.0
"""Seconds after which every server gives up: far above TIMEOUT, far below a hang."""
BOUND = 2.0
"""The most a failure may take, for a loaded 2-core machine (the limit is TIMEOUT)."""
STEP = 0.1
BODY: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
STREAM = {**BODY, "stream": True}

Behaviour = Callable[[socket.socket, threading.Event], None]


def read_request(conn: socket.socket) -> None:
    """Read one request's head and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += conn.recv(65536)


def sse_head() -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


class SlowServer:
    """A one-behaviour HTTP server on 127.0.0.1 (use as a context manager)."""

    def __init__(self, behave: Behaviour) -> None:
        self.behave = behave
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _serve(self) -> None:
        deadline = time.monotonic() + CAP
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._one, args=(conn, deadline), daemon=True).start()

    def _one(self, conn: socket.socket, deadline: float) -> None:
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), self.stop.set)
        timer.start()
        try:
            self.behave(conn, self.stop)
        except OSError:
            pass  # the client gave up: what it should do
        finally:
            timer.cancel()
            conn.close()

    def __enter__(self) -> SlowServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def run(behave: Behaviour, body: dict[str, Any]) -> tuple[Completion | TransientAPIError, float]:
    """One request to a server behaving so; what came of it and how long it took."""

    async def go() -> Completion:
        async with ChatClient(server.base_url, api_key=None, timeout=TIMEOUT) as client:
            return await client.complete(body)

    with SlowServer(behave) as server:
        started = time.monotonic()
        try:
            outcome: Completion | TransientAPIError = asyncio.run(go())
        except TransientAPIError as exc:
            outcome = exc
        return outcome, time.monotonic() - started


def trickle_json(conn: socket.socket, stop: threading.Event) -> None:
    read_request(conn)
    data = json.dumps(answer(BODY)).encode()
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(data)}\r\n\r\n".encode()
    )
    for i in range(len(data)):
        conn.sendall(data[i : i + 1])
        if stop.wait(STEP):
            return


def trickle_head(conn: socket.socket, stop: threading.Event) -> None:
    read_request(conn)
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
        conn.sendall(bytes([byte]))
        if stop.wait(STEP):
            return


def ping_forever(conn: socket.socket, stop: threading.Event) -> None:
    read_request(conn)
    conn.sendall(sse_head())
    while not stop.wait(STEP):
        conn.sendall(b": ping\n\n")


def trickle_event(conn: socket.socket, stop: threading.Event) -> None:
    """Bytes keep coming, but the first event never ends."""
    read_request(conn)
    conn.sendall(sse_head() + b"data: ")
    while not stop.wait(STEP):
        conn.sendall(b" ")


def silent_after_headers(conn: socket.socket, stop: threading.Event) -> None:
    read_request(conn)
    conn.sendall(sse_head())
    stop.wait(CAP)


def silent_after_json_headers(conn: socket.socket, stop: threading.Event) -> None:
    read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 99\r\n\r\n")
    stop.wait(CAP)


def silent_mid_stream(conn: socket.socket, stop: threading.Event) -> None:
    read_request(conn)
    events = stream_events(answer(BODY)).split(b"\n\n")
    conn.sendall(sse_head() + b"\n\n".join(events[:2]) + b"\n\n")
    stop.wait(CAP)


def never_answer(conn: socket.socket, stop: threading.Event) -> None:
    stop.wait(CAP)  # accepted, and not even the request is read


@pytest.mark.parametrize(
    ("behave", "body"),
    [
        (trickle_json, BODY),
        (trickle_head, BODY),
        (trickle_head, STREAM),
        (silent_after_json_headers, BODY),
        (never_answer, BODY),
        (never_answer, STREAM),
        (ping_forever, STREAM),
        (trickle_event, STREAM),
        (silent_after_headers, STREAM),
        (silent_mid_stream, STREAM),
    ],
    ids=[
        "trickle-json",
        "trickle-head",
        "trickle-head-stream",
        "silent-json-body",
        "never-answer",
        "never-answer-stream",
        "ping-forever",
        "trickle-one-event",
        "silent-after-headers",
        "silent-mid-stream",
    ],
)
def test_a_slow_server_fails_the_request_within_the_timeout(
    behave: Behaviour, body: dict[str, Any]
) -> None:
    outcome, took = run(behave, body)
    assert isinstance(outcome, TransientAPIError), outcome
    assert outcome.kind == "read_timeout", outcome.message
    assert TIMEOUT * 0.9 <= took < BOUND, took


def steady_stream(conn: socket.socket, stop: threading.Event) -> None:
    """A long answer: one event per STEP for over three times the timeout, pings between."""
    read_request(conn)
    reply = answer(BODY)
    events = stream_events(reply, pieces=12).split(b"\n\n")
    conn.sendall(sse_head())
    for event in events:
        if event:
            conn.sendall(event + b"\n\n: ping\n\n")
            if stop.wait(STEP):
                return


def test_a_long_stream_that_keeps_coming_is_never_cut_by_the_timeout() -> None:
    outcome, took = run(steady_stream, STREAM)
    assert isinstance(outcome, Completion), outcome
    assert outcome.content == answer(BODY)["choices"][0]["message"]["content"]
    assert took > TIMEOUT * 3
