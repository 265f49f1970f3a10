"""Helpers shared by the tests: scripted chat servers and small readers.

The tests' one clock is in ``virtualtime.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from runner.http.mock import answer

Responder = Callable[[dict[str, Any], int], httpx.Response | None]


class ChatServer:
    """An ``httpx.MockTransport`` chat server that records every request body.

    ``respond(body, n)`` may return a response for the n-th request (0-based)
    or None for the offline backend's normal answer. ``delay(body, n)`` is
    how many seconds the server takes to answer: on the virtual loop
    (``virtualtime.py``) that is the latency the engine records.
    """

    def __init__(
        self,
        respond: Responder | None = None,
        delay: Callable[[dict[str, Any], int], float] | None = None,
    ) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[httpx.Headers] = []
        self.respond = respond
        self.delay = delay
        self.transport = httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        n = len(self.bodies)
        self.bodies.append(body)
        self.headers.append(request.headers)
        if self.delay is not None:
            await asyncio.sleep(self.delay(body, n))
        if self.respond is not None:
            special = self.respond(body, n)
            if special is not None:
                return special
        return httpx.Response(200, json=answer(body))

    def bodies_for(self, first_user: str) -> list[dict[str, Any]]:
        """Bodies of the conversation whose first user message is ``first_user``."""
        return [b for b in self.bodies if _first_user(b) == first_user]


def _first_user(body: dict[str, Any]) -> str | None:
    for message in body["messages"]:
        if message["role"] == "user":
            return str(message["content"])
    return None


def error(status: int, message: str, code: str | None = None, **headers: str) -> httpx.Response:
    """An OpenAI-style error response."""
    err: dict[str, Any] = {"message": message, "type": "error"}
    if code:
        err["code"] = code
    return httpx.Response(status, json={"error": err}, headers=headers)


def read_jsonl(path: Any) -> list[dict[str, Any]]:
    """Every line of a JSONL file, parsed."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


class LoopbackServer:
    """A real HTTP chat server on 127.0.0.1, answering like the offline backend.

    ``rules(body)`` may return ``(status, payload)`` to answer otherwise;
    ``delay`` seconds are slept (in the server thread) before each answer.
    Every request body is recorded in ``bodies``.
    """

    def __init__(
        self,
        rules: Callable[[dict[str, Any]], tuple[int, Any] | None] | None = None,
        delay: float = 0.0,
    ) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        server_self = self
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.rules = rules
        self.delay = delay
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                import time

                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                with server_self.lock:
                    server_self.bodies.append(body)
                    server_self.auth.append(self.headers.get("Authorization"))
                if server_self.delay:
                    time.sleep(server_self.delay)
                special = server_self.rules(body) if server_self.rules else None
                status, payload = special if special else (200, answer(body))
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client was killed or cancelled mid-request

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def sent(self) -> list[tuple[str, int]]:
        """(first user message, number of user messages) of every request."""
        with self.lock:
            return [
                (
                    next(m["content"] for m in b["messages"] if m["role"] == "user"),
                    sum(1 for m in b["messages"] if m["role"] == "user"),
                )
                for b in self.bodies
            ]


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """``cert.pem`` and ``key.pem`` in ``folder``: a certificate for 127.0.0.1 that no CA signed.

    Needs the ``cryptography`` package (a dev dependency).
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(private, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def bounded(coro: Any, seconds: float = 5.0) -> Any:
    """``coro``, failing the test if it hangs instead of hanging the suite."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        raise AssertionError(f"still waiting after {seconds} s")
    return task.result()


def record(i: int, status: str = "completed") -> dict[str, Any]:
    """A whole, plain transcript record of conversation ``c{i}``."""
    return {
        "schema": "mtrun.transcript/1",
        "run_id": "r1",
        "id": f"c{i}",
        "source": "a.yaml",
        "model": "m",
        "base_url": "mock://offline",
        "params": {},
        "status": status,
        "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}],
        "turns": [{"index": 0, "message_index": 0, "attempts": [{"attempt": 1, "outcome": "ok"}]}],
        "fingerprint": "sha256:x",
        "started_at": "2026-01-01T00:00:00Z",
        "finished_at": "2026-01-01T00:00:01Z",
    }


def start_mtrun(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    """``python -m runner ARGS`` as a child process (to kill), with no key or target set."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("API_KEY")}
    env.pop("MTRUN_MODEL", None)
    env.pop("MTRUN_BASE_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_for_requests(
    seen: Callable[[], int], more: int, proc: subprocess.Popen[str], *, within_s: float
) -> bool:
    """Wait until a server has ``seen()`` ``more`` requests more; False if the run ended first."""
    count = seen() + more
    deadline = time.monotonic() + within_s
    while seen() < count:
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the run stopped sending requests"
        time.sleep(0.002)
    return True


_GIVEN: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on now, and not handed out here before."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port
