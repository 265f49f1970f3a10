"""The API key never leaks: through every failure path, nothing written anywhere holds it."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import secrets
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from faultserver import FaultServer, closed_port_url
from helpers import read_jsonl, self_signed_cert

from runner.cli import main
from runner.errors import ConfigError, TransientAPIError
from runner.http.client import ApiKey, ChatClient, find_api_key
from runner.run.engine import RunConfig, run_batch
from runner.spec.loader import load_conversations

KEY = "sk-CANARY-" + secrets.token_hex(16)
HOSTILE = Path(__file__).resolve().parent / "data" / "hostile"


def fault_rule(body: dict[str, Any], key: str, turn: int, attempt: int) -> str | None:
    """Conversations named ``fault NAME ...`` get that fault on every attempt of turn 1."""
    fault = key.split()[1] if key.startswith("fault ") else "ok"
    return fault if turn == 1 and fault != "ok" else None


def write(folder: Path, name: str, faults: list[str], turns: int = 2) -> Path:
    items = [
        {
            "id": f"{fault}-{n}",
            "turns": [f"fault {fault} {n}"] + [f"then {t}" for t in range(turns)],
        }
        for n, fault in enumerate(faults)
    ]
    path = folder / name
    path.write_text(json.dumps({"conversations": items}))
    return path


class Runs:
    """Runs the CLI as a subprocess with the canary key; keeps every output stream."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.streams: list[str] = []
        self.env = {k: v for k, v in os.environ.items() if not k.endswith("API_KEY")}
        self.env.pop("MTRUN_BASE_URL", None)
        self.env["MTRUN_API_KEY"] = KEY

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "runner", *args],
            cwd=self.cwd,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def finish(self, proc: subprocess.Popen[str]) -> int:
        out, err = proc.communicate(timeout=60)
        self.streams += [out, err]
        assert "Traceback" not in err, err
        return proc.returncode

    def __call__(self, *args: str) -> int:
        return self.finish(self.start(*args))


def wait_for(server: FaultServer, count: int) -> None:
    deadline = time.monotonic() + 20
    while server.count < count:
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_the_key_is_never_written_anywhere(tmp_path: Path) -> None:
    run = Runs(tmp_path)
    faults = ["http_401", "http_403", "http_400", "http_500", "hang", "truncated_json"]
    write(tmp_path, "batch.yaml", ["ok", *faults])
    write(tmp_path, "quota.yaml", ["quota", "ok"])
    fast = ("--timeout", "0.3", "--max-retries", "1", "--max-retry-wait", "0.1")
    with FaultServer(rule=fault_rule, hang_s=1.0) as server:
        url = server.base_url
        code = run(
            "--base-url", url, *fast, "-o", "run.jsonl", "--junit", "junit.xml",
            "--summary-json", "summary.json", "--record", "fixtures", "batch.yaml",
        )  # fmt: skip
        assert code == 3
        assert run("--base-url", url, *fast, "--stream", "-o", "stream.jsonl", "batch.yaml") == 3
        assert run("--base-url", url, *fast, "-o", "quota.jsonl", "quota.yaml") == 3
        assert server.auth and set(server.auth) == {f"Bearer {KEY}"}  # the key was in play

    records = read_jsonl(tmp_path / "run.jsonl")
    kinds = {r["id"]: (r.get("error") or {}).get("kind") for r in records}
    assert kinds == {
        "ok-0": None,
        "http_401-1": "http_401",
        "http_403-2": "http_403",
        "http_400-3": "http_400",
        "http_500-4": "http_500",
        "hang-5": "read_timeout",
        "truncated_json-6": "invalid_json",
    }

    # Connection refused, replay miss, bad input.
    assert run("--base-url", closed_port_url(), *fast, "-o", "down.jsonl", "batch.yaml") == 3
    write(tmp_path, "new.yaml", ["unrecorded"])
    assert run("--replay", "fixtures", "-o", "replay.jsonl", "new.yaml") == 3
    for bad in ("python_tag.yaml", "invalid_utf8.yaml", "alias_bomb.yaml"):
        assert run("validate", str(HOSTILE / bad)) == 2
        assert run("--base-url", "http://127.0.0.1:9/v1", str(HOSTILE / bad)) == 2
    assert run("--base-url", "http://192.0.2.1/v1", "-o", "x.jsonl", "batch.yaml") == 2

    # Ctrl-C, and kill -9 then resume.
    many = write(tmp_path, "many.yaml", ["ok"] * 12, turns=3)
    with FaultServer(latency=(0.05, 0.1)) as server:
        args = ("--base-url", server.base_url, "-j", "4", "-o", "int.jsonl", "many.yaml")
        proc = run.start(*args)
        wait_for(server, 6)
        proc.send_signal(signal.SIGINT)
        assert run.finish(proc) == 130
        proc = run.start(*args[:-3], "-o", "kill.jsonl", str(many))
        wait_for(server, server.count + 6)
        proc.kill()
        proc.communicate()
        assert run(*args[:-3], "--resume", "-o", "kill.jsonl", str(many)) == 0
        assert run(*args, "--resume") == 0

    # Reviewing the outputs.
    assert run("report", "run.jsonl") == 0
    assert run("show", "--no-pager", "run.jsonl") == 0
    assert run("export", "run.jsonl", "--format", "md", "-o", "run.md") == 0
    assert run("report", "run.jsonl", "stream.jsonl") == 0

    canary = KEY.encode()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 15
    for path in written:
        data = path.read_bytes()
        assert canary not in data, path
        if path.suffix in (".jsonl", ".json", ".md", ".html", ".xml"):
            assert b"authorization" not in data.lower(), path
            assert b"bearer" not in data.lower(), path
    for text in run.streams:
        assert KEY not in text
        assert KEY[10:] not in text  # not even the random part on its own
    assert (tmp_path / "run.html").exists() and (tmp_path / "junit.xml").exists()


def test_configs_and_clients_never_show_the_key() -> None:
    key = find_api_key({"MTRUN_API_KEY": KEY})
    assert key is not None and key.reveal() == KEY
    config = RunConfig(output=Path("o.jsonl"), base_url="https://api.example.com/v1", api_key=key)
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"choices": [{"message": {"content": "hi"}}]})

    async def go() -> list[str]:
        transport = httpx.MockTransport(answer)
        async with ChatClient(config.base_url, api_key=key, transport=transport) as client:
            await client.complete({"model": "m", "messages": []})
            return [repr(client), str(client)]

    shown = [repr(key), str(key), f"{key}", repr(config), str(config), str(vars(config))]
    shown += [*asyncio.run(go()), repr(sent[0]), repr(sent[0].headers)]
    assert sent[0].headers["authorization"] == f"Bearer {KEY}"  # sent, but never shown
    for text in shown:
        assert KEY not in text and KEY[10:] not in text, text
    with pytest.raises(TypeError):
        pickle.dumps(key)
    with pytest.raises(TypeError):
        pickle.dumps(config)


class _Connections:
    """Refuses and records every attempt to open a socket connection."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.attempts: list[Any] = []

        def refuse(sock: socket.socket, address: Any, *args: Any) -> Any:
            self.attempts.append(address)
            raise AssertionError(f"a connection was attempted to {address}")

        monkeypatch.setattr(socket.socket, "connect", refuse)
        monkeypatch.setattr(socket.socket, "connect_ex", refuse)

        async def refuse_async(loop: Any, *args: Any, **kwargs: Any) -> Any:
            self.attempts.append(args)
            raise AssertionError("a connection was attempted")

        monkeypatch.setattr(asyncio.BaseEventLoop, "create_connection", refuse_async)
        monkeypatch.setattr(asyncio.BaseEventLoop, "sock_connect", refuse_async)


def test_the_key_is_refused_over_plain_http_to_another_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connections = _Connections(monkeypatch)
    (tmp_path / "c.yaml").write_text("turns: [hello]\n")
    conversations = load_conversations([str(tmp_path / "c.yaml")])
    config = RunConfig(
        output=tmp_path / "out.jsonl",
        base_url="http://192.0.2.1/v1",  # TEST-NET-1: never routed
        api_key=ApiKey(KEY, "MTRUN_API_KEY"),
    )
    with pytest.raises(ConfigError, match="refusing to send the API key over plain http") as exc:
        asyncio.run(run_batch(conversations, config))
    assert KEY not in str(exc.value)
    assert "--allow-insecure-key" in str(exc.value)

    result = CliRunner().invoke(
        main,
        [
            "--base-url",
            "http://192.0.2.1/v1",
            "-o",
            str(tmp_path / "cli.jsonl"),
            str(tmp_path / "c.yaml"),
        ],
        env={"MTRUN_API_KEY": KEY},
        catch_exceptions=False,
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "mtrun: error: refusing to send the API key over plain http to http://192.0.2.1/v1; "
        "use https, or pass --allow-insecure-key if this network is trusted\n"
    )
    assert connections.attempts == []
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "cli.jsonl").exists()


def test_tls_verification_is_always_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip(
        "cryptography", reason="the cryptography package is needed to make a self-signed cert"
    )
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    self_signed_cert(tmp_path)
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(500)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        (tmp_path / "c.yaml").write_text("turns: [hello]\n")
        port = httpd.server_address[1]
        config = RunConfig(
            output=tmp_path / "out.jsonl",
            base_url=f"https://127.0.0.1:{port}/v1",
            api_key=ApiKey(KEY, "MTRUN_API_KEY"),
            timeout=2.0,
        )
        result = asyncio.run(run_batch(load_conversations([str(tmp_path / "c.yaml")]), config))
        assert seen == []  # the key never went to a server that could not prove who it is
        # Trusted through SSL_CERT_FILE, the same server gets the request (and answers 500).
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))
        with pytest.raises(TransientAPIError, match="HTTP 500"):
            asyncio.run(_complete_once(config.base_url, config.api_key))
        assert seen == [f"Bearer {KEY}"]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    assert result.completed == 0
    text = (tmp_path / "out.jsonl").read_text()
    assert "CERTIFICATE_VERIFY_FAILED" in text or "certificate" in text.lower()
    assert KEY not in text


async def _complete_once(base_url: str, api_key: ApiKey | None) -> None:
    async with ChatClient(base_url, api_key=api_key, timeout=2.0) as client:
        await client.complete({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.parametrize(
    ("bad", "what"),
    [
        (KEY[:14] + "\n" + KEY[14:], "a line break"),
        (KEY + "\r\nX-Injected: 1", "a line break"),
        (KEY[:14] + "\r" + KEY[14:], "a line break"),
        (KEY + "é", "a non-ASCII character"),
        ("sk-\u2018" + KEY[3:], "a non-ASCII character"),
        (KEY[:14] + "\x1b" + KEY[14:], "a control character"),
        (KEY[:14] + " " + KEY[14:], "a space"),
    ],
    ids=["lf", "crlf-injection", "cr", "accent", "smart-quote", "escape", "space"],
)
def test_a_key_that_cannot_go_in_a_header_is_refused_before_anything_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: str, what: str
) -> None:
    connections = _Connections(monkeypatch)
    (tmp_path / "c.yaml").write_text("turns: [hello]\n")
    out, junit, summary = tmp_path / "o.jsonl", tmp_path / "j.xml", tmp_path / "s.json"
    for env, variable in (
        ({"MTRUN_API_KEY": bad}, []),
        ({"MY_KEY": bad}, ["--api-key-env", "MY_KEY"]),
    ):
        result = CliRunner().invoke(
            main,
            [
                "--base-url",
                "https://api.example.com/v1",
                *variable,
                "-o",
                str(out),
                "--junit",
                str(junit),
                "--summary-json",
                str(summary),
                str(tmp_path / "c.yaml"),
            ],
            env=env,
            catch_exceptions=False,
        )
        name = next(iter(env))
        assert result.exit_code == 2
        assert result.stderr == (
            f"mtrun: error: ${name} holds {what}, which cannot be sent in an HTTP header; "
            "set it again to the key alone\n"
        )
        assert KEY[10:20] not in result.output
    assert connections.attempts == []
    assert not out.exists() and not junit.exists() and not summary.exists()
    with pytest.raises(ConfigError) as info:
        ApiKey(bad, "MTRUN_API_KEY")
    rendered = "".join(traceback.format_exception(info.value))
    assert KEY[10:20] not in rendered and str(info.value).startswith("$MTRUN_API_KEY holds")
