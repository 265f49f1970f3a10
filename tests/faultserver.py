"""A chat server on real loopback sockets that injects faults and audits history.

:class:`FaultServer` answers ``POST .../chat/completions`` like the offline
backend (``runner.http.mock.answer``: deterministic), except where its schedule
says to misbehave. Faults are keyed by (conversation, turn, attempt), so a
schedule is deterministic whatever order concurrent requests arrive in:

- ``faults``: a mapping ``(conversation key, turn) -> [fault, ...]``; the n-th
  request for that turn gets the n-th fault, later ones a normal answer;
- ``rate`` with ``kinds`` and ``seed``: each request gets a fault with that
  probability, drawn from a hash of (seed, conversation, turn, attempt);
- ``rule(body, key, turn, attempt)``: a callable returning a fault name or None.

A conversation is keyed by its first user message. Every request's history
is checked against what the server saw and answered before for that
conversation: it must be the previous request's messages again (a retry), or
exactly those messages + the answer that was delivered + the next user
message. Anything else is recorded in ``violations``.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from runner.http.mock import answer, stream_events

ERROR_STATUSES = {
    "http_400": 400,
    "http_401": 401,
    "http_403": 403,
    "http_404": 404,
    "http_422": 422,
    "http_500": 500,
    "http_502": 502,
    "http_503": 503,
    "http_504": 504,
}
RETRY_AFTER_FAULTS = (
    "429_seconds",
    "429_fraction",
    "429_date",
    "429_ms",
    "429_garbage",
    "429_none",
)
BODY_FAULTS = ("drop", "hang", "truncated_json", "no_choices")
STREAM_FAULTS = ("stream_cut", "stream_truncated", "stream_no_done")
FAULTS = (*ERROR_STATUSES, *RETRY_AFTER_FAULTS, *BODY_FAULTS, *STREAM_FAULTS, "quota")
ECHO_FAULTS = (
    "echo_400",
    "echo_401",
    "echo_429",
    "echo_500",
    "echo_escaped_401",
    "echo_text_500",
    "echo_header_503",
    "echo_reason_503",
    "echo_stream_error",
    "echo_stream_invalid",
    "echo_answer",
)
"""Faults that echo the request's API key back: in a body, a header, a stream, an answer."""
ODD_STREAM_FAULTS = ("stream_choiceless", "stream_cut_after_last", "stream_untyped_json")
"""A stream with no choice (retried), a whole one cut after its last event, a JSON answer
without a Content-Type (both answers)."""

Rule = Callable[[dict[str, Any], str, int, int], "str | None"]


def conversation_key(messages: Sequence[Mapping[str, Any]]) -> str:
    """What identifies a conversation: its first user message."""
    for message in messages:
        if message.get("role") == "user":
            return str(message.get("content"))
    return ""


def user_turn(messages: Sequence[Mapping[str, Any]]) -> int:
    """The 0-based turn a request asks: user messages in it, minus one."""
    return sum(1 for m in messages if m.get("role") == "user") - 1


class FaultServer:
    """A threaded HTTP/1.1 chat server on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        *,
        faults: Mapping[tuple[str, int], Sequence[str]] | None = None,
        rate: float = 0.0,
        kinds: Sequence[str] = (),
        seed: int = 0,
        rule: Rule | None = None,
        latency: tuple[float, float] = (0.0, 0.0),
        hang_s: float = 3.0,
    ) -> None:
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.rate = rate
        self.kinds = list(kinds)
        self.seed = seed
        self.rule = rule
        self.latency = latency
        self.hang_s = hang_s
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.requests: list[dict[str, Any]] = []
        """Every request body, in arrival order."""
        self.auth: list[str | None] = []
        """The Authorization header of every request."""
        self.injected: list[tuple[str, int, str]] = []
        """(conversation, turn, fault) for every fault injected."""
        self.per_turn: Counter[tuple[str, int]] = Counter()
        """Requests per (conversation, turn)."""
        self.violations: list[str] = []
        """History violations: a request whose messages were not what they must be."""
        self.connections: set[socket.socket] = set()
        self._last: dict[str, tuple[list[Any], dict[str, Any] | None]] = {}
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    # -- lifecycle -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving and close the port (later connections are refused)."""
        if self.stopped.is_set():
            return
        self.stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
        with self.lock:  # kept-alive connections too: the endpoint is gone
            for connection in list(self.connections):
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    # -- decisions ---------------------------------------------------------------------

    def _fault_for(self, body: dict[str, Any], key: str, turn: int, attempt: int) -> str | None:
        planned = self.faults.get((key, turn))
        if planned is not None and attempt < len(planned):
            return planned[attempt]
        if self.rule is not None:
            return self.rule(body, key, turn, attempt)
        if self.rate and self.kinds:
            digest = hashlib.sha256(f"{self.seed}|{key}|{turn}|{attempt}".encode()).digest()
            if int.from_bytes(digest[:4], "big") / 2**32 < self.rate:
                return self.kinds[digest[4] % len(self.kinds)]
        return None

    def _audit(self, key: str, messages: list[Any]) -> None:
        """Check the carried history; remember this request (lock held)."""
        previous = self._last.get(key)
        if previous is not None:
            sent, answered = previous
            retry = messages == sent
            ok = retry or (
                answered is not None
                and len(messages) == len(sent) + 2
                and messages[: len(sent)] == sent
                and messages[len(sent)] == answered
                and isinstance(messages[-1], dict)
                and messages[-1].get("role") == "user"
            )
            if not ok:
                self.violations.append(
                    f"{key!r}: request with {len(messages)} messages does not continue the "
                    f"previous one ({len(sent)} messages, answered={answered is not None})"
                )
        self._last[key] = (messages, None)

    def _delivered(self, key: str, messages: list[Any], message: dict[str, Any]) -> None:
        with self.lock:
            if self._last.get(key, (None,))[0] is messages:
                self._last[key] = (messages, {"role": "assistant", "content": message["content"]})

    def _delay(self, key: str, turn: int, attempt: int) -> float:
        low, high = self.latency
        if high <= 0:
            return 0.0
        digest = hashlib.sha256(f"lat|{key}|{turn}|{attempt}".encode()).digest()
        return low + (high - low) * digest[0] / 255

    # -- HTTP --------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def handle(self) -> None:
                with server.lock:
                    server.connections.add(self.connection)
                try:
                    super().handle()
                except OSError:
                    pass  # the client went away (killed, timed out, cancelled)
                finally:
                    with server.lock:
                        server.connections.discard(self.connection)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                messages = body["messages"]
                key, turn = conversation_key(messages), user_turn(messages)
                with server.lock:
                    server.requests.append(body)
                    server.auth.append(self.headers.get("Authorization"))
                    attempt = server.per_turn[(key, turn)]
                    server.per_turn[(key, turn)] += 1
                    server._audit(key, messages)
                    fault = server._fault_for(body, key, turn, attempt)
                    if fault is not None:
                        server.injected.append((key, turn, fault))
                delay = server._delay(key, turn, attempt)
                if delay:
                    time.sleep(delay)
                try:
                    self._answer(body, key, messages, fault)
                except OSError:
                    self.close_connection = True  # the client gave up or was killed

            def _answer(
                self, body: dict[str, Any], key: str, messages: list[Any], fault: str | None
            ) -> None:
                reply = answer(body)
                message = reply["choices"][0]["message"]
                # Marked answered before the answer goes out: the client may send the
                # next turn the moment it has read it.
                if fault is None:
                    server._delivered(key, messages, message)
                    if body.get("stream"):
                        self._chunked(stream_events(reply))
                    else:
                        self._json(200, reply)
                elif fault in ERROR_STATUSES:
                    status = ERROR_STATUSES[fault]
                    self._json(status, _error(f"injected {fault} for {key}", "server_error"))
                elif fault == "quota":
                    said = "You exceeded your current quota, please check your plan and billing"
                    self._json(429, _error(said, "insufficient_quota"))
                elif fault.startswith("429_"):
                    self._json(429, _error("Rate limit reached", "rate_limited"), _retry(fault))
                elif fault == "drop":
                    self._drop()
                elif fault == "hang":
                    server.stopped.wait(server.hang_s)
                    self._drop()
                elif fault == "truncated_json":
                    data = json.dumps(reply).encode()
                    self._raw(200, data[: len(data) // 2], "application/json")
                elif fault == "no_choices":
                    self._json(200, {**reply, "choices": []})
                elif fault == "stream_cut":  # the connection dies mid-body
                    data = stream_events(reply)
                    self._chunked(data[: len(data) // 2], finish=False)
                    self._drop()
                elif fault == "stream_truncated":  # a clean end, but mid-answer
                    events = stream_events(reply).split(b"\n\n")
                    self._chunked(b"\n\n".join(events[:2]) + b"\n\n")
                elif fault == "stream_no_done":  # complete, only without [DONE]
                    data = stream_events(reply).removesuffix(b"data: [DONE]\n\n")
                    server._delivered(key, messages, message)
                    self._chunked(data)
                elif fault.startswith("echo_"):
                    self._echo(fault, body, reply)
                elif fault == "stream_choiceless":
                    self._chunked(
                        b'data: {"choices": [], "prompt_filter_results": []}\n\ndata: [DONE]\n\n'
                    )
                elif fault == "stream_cut_after_last":  # whole, then the connection dies
                    server._delivered(key, messages, message)
                    data = stream_events(reply).removesuffix(b"data: [DONE]\n\n")
                    self._chunked(data, finish=False)
                    self._drop()
                elif fault == "stream_untyped_json":
                    server._delivered(key, messages, message)
                    self._raw(200, json.dumps(reply).encode(), "")
                else:
                    raise AssertionError(f"unknown fault {fault!r}")

            def _json(
                self, status: int, payload: Any, headers: dict[str, str] | None = None
            ) -> None:
                self._raw(status, json.dumps(payload).encode(), "application/json", headers)

            def _raw(
                self,
                status: int,
                data: bytes,
                content_type: str,
                headers: dict[str, str] | None = None,
            ) -> None:
                self.send_response(status)
                if content_type:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

            def _chunked(self, data: bytes, *, finish: bool = True) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for start in range(0, len(data), 97):
                    piece = data[start : start + 97]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.flush()
                if finish:
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()

            def _drop(self) -> None:
                """Close the connection without (the rest of) a response."""
                self.close_connection = True
                try:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _echo(self, fault: str, body: dict[str, Any], reply: dict[str, Any]) -> None:
                """Say the key back (see ECHO_FAULTS)."""
                key = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                said = f"Incorrect API key provided: {key}"
                if fault in ("echo_400", "echo_401", "echo_429", "echo_500"):
                    self._json(int(fault[-3:]), _error(said, "invalid_api_key"))
                elif fault == "echo_escaped_401":
                    escaped = "".join(f"\\u{ord(c):04x}" for c in key)
                    data = b'{"error": {"message": "no such key: ' + escaped.encode() + b'"}}'
                    self._raw(401, data, "application/json")
                elif fault == "echo_text_500":
                    self._raw(500, said.encode(), "text/plain")
                elif fault == "echo_header_503":
                    echoed = {
                        "X-Echo": key,
                        "WWW-Authenticate": f"Bearer {key}",
                        "Retry-After": key,
                    }
                    self._raw(503, b"", "application/json", echoed)
                elif fault == "echo_reason_503":
                    self.send_response(503, said)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif fault in ("echo_stream_error", "echo_stream_invalid"):
                    event = json.dumps(_error(said, "x")) if fault == "echo_stream_error" else said
                    self._chunked(f"data: {event}\n\n".encode())
                else:  # echo_answer: an answer that quotes the key, in pieces when streamed
                    reply["choices"][0]["message"]["content"] = f"Your key is {key}, right?"
                    if body.get("stream"):
                        self._chunked(stream_events(reply, pieces=9))
                    else:
                        self._json(200, reply)

        return Handler


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "code": code}}


def _retry(fault: str) -> dict[str, str]:
    """The Retry-After header of each 429 form."""
    if fault == "429_seconds":
        return {"Retry-After": "2"}
    if fault == "429_fraction":
        return {"Retry-After": "0.25"}
    if fault == "429_date":
        return {"Retry-After": email.utils.formatdate(time.time() + 3, usegmt=True)}
    if fault == "429_ms":
        return {"retry-after-ms": "1500"}
    if fault == "429_garbage":
        return {"Retry-After": "soon, maybe"}
    return {}


def closed_port_url() -> str:
    """A loopback base URL where nothing listens: connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
