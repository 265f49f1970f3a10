"""A canary key through every failure path of the client: servers echo it, nothing keeps it.

Servers echo what they get: an error body quoting the key (JSON, escaped JSON,
plain text), a header, the reason phrase, a stream's error event, an answer
that spells it out across deltas, an exception message. The key is scrubbed
from each before it is stored or shown, and a key the user wrote into the URL
is never echoed either. The end-to-end test runs the CLI against a loopback
server that echoes the key in every way, and reads every file and stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from faultserver import ECHO_FAULTS, FaultServer
from helpers import read_jsonl

from runner.checks.judge import JUDGE_MARKER
from runner.errors import APIError, ConfigError
from runner.http.client import ApiKey, ChatClient, Completion, check_base_url, public_base_url
from runner.http.mock import answer

KEY = "sk-CANARY/" + secrets.token_hex(16)
"""A key with a '/', which JSON may escape and which breaks naive URL parsing."""
SECRET_PART = KEY[10:]
REDACTED = "[redacted]"
BASE = "https://api.example.test/v1"
BODY: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
STREAM = {**BODY, "stream": True}

Handler = Callable[[httpx.Request], httpx.Response]


def assert_clean(*texts: str) -> None:
    for text in texts:
        assert KEY not in text and SECRET_PART not in text, text


def outcome(handler: Handler, body: dict[str, Any] = BODY) -> Completion | APIError:
    async def go() -> Completion:
        transport = httpx.MockTransport(handler)
        async with ChatClient(BASE, api_key=ApiKey(KEY, "MTRUN_API_KEY"), transport=transport) as c:
            return await c.complete(body)

    try:
        return asyncio.run(go())
    except APIError as exc:
        return exc


def assert_nothing_kept(result: Completion | APIError) -> None:
    if isinstance(result, APIError):
        rendered = "".join(traceback.format_exception(result))
        assert_clean(result.message, str(result), repr(result), rendered)
    else:
        assert_clean(repr(result), json.dumps(result.raw), json.dumps(result.message))


def escaped(text: str) -> str:
    """``text`` as JSON may spell it: every character a \\u escape."""
    return "".join(f"\\u{ord(c):04x}" for c in text)


def bodies() -> dict[str, Callable[[int], httpx.Response]]:
    said = f"Incorrect API key provided: {KEY}"
    return {
        "json-message": lambda s: httpx.Response(s, json={"error": {"message": said}}),
        "json-detail": lambda s: httpx.Response(s, json={"detail": said}),
        "json-nested": lambda s: httpx.Response(s, json={"error": {"key": KEY, "n": [KEY]}}),
        "json-escaped": lambda s: httpx.Response(
            s, content=('{"error": {"message": "' + escaped(KEY) + '"}}').encode()
        ),
        "json-slash-escaped": lambda s: httpx.Response(
            s, content=('{"error": "' + KEY.replace("/", "\\/") + '"}').encode()
        ),
        "text": lambda s: httpx.Response(s, text=said),
        "text-long": lambda s: httpx.Response(s, text="x" * 495 + said),
        "reason": lambda s: httpx.Response(
            s, content=b"", extensions={"reason_phrase": said.encode()}
        ),
        "headers": lambda s: httpx.Response(
            s,
            json={"error": {"message": "no"}},
            headers={"Retry-After": KEY, "WWW-Authenticate": f"Bearer {KEY}", "X-Echo": KEY},
        ),
    }


@pytest.mark.parametrize("body", [BODY, STREAM], ids=["plain", "stream"])
@pytest.mark.parametrize("form", list(bodies()))
@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 409, 422, 429, 500, 502, 503])
def test_an_error_status_that_echoes_the_key_keeps_nothing_of_it(
    status: int, form: str, body: dict[str, Any]
) -> None:
    result = outcome(lambda request: bodies()[form](status), body)
    assert isinstance(result, APIError) and result.status == status
    assert_nothing_kept(result)
    if form in ("json-message", "json-escaped", "text"):
        assert REDACTED in result.message


def sse(*events: Any) -> bytes:
    return b"".join(
        f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events
    )


def pieces(text: str, size: int = 5) -> list[dict[str, Any]]:
    return [
        {"choices": [{"index": 0, "delta": {"content": text[i : i + size]}}]}
        for i in range(0, len(text), size)
    ]


FINISH = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
ANSWERS: dict[str, tuple[bytes, dict[str, str]]] = {
    "json-answer": (json.dumps(answer(BODY) | {"id": KEY, "model": KEY}).encode(), {}),
    "json-content": (
        json.dumps(
            {"choices": [{"message": {"role": "assistant", "content": f"k={KEY}", KEY: KEY}}]}
        ).encode(),
        {},
    ),
    "invalid-json": (f"<html>{KEY}</html>".encode(), {"content-type": "text/html"}),
    "no-choices": (json.dumps({"id": KEY, "choices": []}).encode(), {}),
    "no-message": (json.dumps({"choices": [{"text": KEY}]}).encode(), {}),
    "stream-error": (sse({"error": {"message": f"bad key {KEY}"}}), {}),
    "stream-error-text": (sse({"error": f"bad key {KEY}"}), {}),
    "stream-not-json": (sse(f"not json {KEY}"), {}),
    "stream-deltas": (sse(*pieces(f"Your key is {KEY}."), FINISH, "[DONE]"), {}),
    "stream-reasoning": (
        sse({"choices": [{"index": 0, "delta": {"reasoning_content": KEY}}]}, FINISH, "[DONE]"),
        {},
    ),
    "stream-ids": (sse({"id": KEY, "model": KEY, **FINISH}, "[DONE]"), {}),
    "stream-no-choice": (sse({"id": KEY, "usage": {"k": KEY}}, "[DONE]"), {}),
    "stream-cut": (sse(*pieces(f"Your key is {KEY}.")), {}),
    "stream-comments": (f": {KEY}\nevent: {KEY}\n".encode() + sse(FINISH, "[DONE]"), {}),
}


@pytest.mark.parametrize("body", [BODY, STREAM], ids=["plain", "stream"])
@pytest.mark.parametrize("name", list(ANSWERS))
def test_a_200_that_echoes_the_key_keeps_nothing_of_it(name: str, body: dict[str, Any]) -> None:
    content, headers = ANSWERS[name]
    if body.get("stream") and content.startswith(b"data:"):
        headers = {"content-type": "text/event-stream", **headers}
    result = outcome(lambda request: httpx.Response(200, content=content, headers=headers), body)
    assert_nothing_kept(result)


NETWORK: list[type[httpx.HTTPError]] = [
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.ReadTimeout,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.LocalProtocolError,
    httpx.UnsupportedProtocol,
    httpx.ProxyError,
]


@pytest.mark.parametrize("body", [BODY, STREAM], ids=["plain", "stream"])
@pytest.mark.parametrize("said", [f"echo {KEY}", f"[SSL: CERTIFICATE_VERIFY_FAILED] {KEY}"])
@pytest.mark.parametrize("exc_type", NETWORK)
def test_a_network_error_that_quotes_the_key_keeps_nothing_of_it(
    exc_type: type[httpx.TransportError], said: str, body: dict[str, Any]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type(said, request=request)

    result = outcome(handler, body)
    assert isinstance(result, APIError)
    assert_nothing_kept(result)


URLS = [
    f"ftp://user:{KEY}@host/v1",
    f"https://user:{KEY}@host/v1",
    f"http://{KEY}@localhost:8000/v1",
    f"user:{KEY}@host/v1",
    f"https://user:{KEY}@host:99999/v1",
    f"https://user:{KEY}@host/v1?x=1",
    f"{KEY}@host",
]


@pytest.mark.parametrize("url", URLS)
def test_a_key_written_into_the_url_is_never_shown(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_base_url(url)
    assert "credentials" in str(info.value)
    assert_clean(str(info.value), public_base_url(url))
    with pytest.raises(ConfigError) as info:
        ChatClient(url, api_key=None)
    assert_clean(str(info.value), "".join(traceback.format_exception(info.value)))


def test_the_cli_never_shows_a_key_written_into_the_url(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("turns: [hello]\n")
    for url in URLS:
        proc = subprocess.run(
            [sys.executable, "-m", "runner", "--base-url", url, "-o", "o.jsonl", "c.yaml"],
            cwd=tmp_path,
            env=environment(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert "credentials" in proc.stderr and "Traceback" not in proc.stderr
        assert_clean(proc.stdout, proc.stderr)
    assert not (tmp_path / "o.jsonl").exists()


# --- end to end: the CLI against a server that echoes the key every way ----------------


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("API_KEY")}
    env.pop("MTRUN_BASE_URL", None)
    env["MTRUN_API_KEY"] = KEY
    return env


def echo_rule(body: dict[str, Any], key: str, turn: int, attempt: int) -> str | None:
    """``echo NAME ...`` conversations get fault NAME on turn 1; judges echo too."""
    if str(body["messages"][0].get("content", "")).startswith(JUDGE_MARKER):
        prompt = str(body["messages"][-1]["content"])
        return "echo_500" if "judge-fails" in prompt else "echo_answer"
    name = key.split()[1] if key.startswith("echo ") else None
    return name if name is not None and turn == 1 and attempt < 2 else None


def write_batch(path: Path) -> None:
    items: list[dict[str, Any]] = [
        {"id": name, "turns": [f"echo {name} please", "and then?", "once more"]}
        for name in ECHO_FAULTS
    ]
    for name in ("judge-fails", "judge-echoes"):
        items.append(
            {"id": name, "turns": [{"content": f"{name}: hello", "expect": {"judge": '"Hi"'}}]}
        )
    path.write_text(json.dumps({"conversations": items}))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_run_against_an_echoing_server_writes_and_prints_no_key(
    tmp_path: Path, stream: bool
) -> None:
    write_batch(tmp_path / "batch.yaml")
    args = ["--timeout", "5", "--max-retries", "1", "--max-retry-wait", "0.1"]
    args += ["-o", "run.jsonl", "--junit", "junit.xml", "--summary-json", "summary.json"]
    args += ["--record", "fixtures", *(["--stream"] if stream else []), "batch.yaml"]
    with FaultServer(rule=echo_rule) as server:
        proc = subprocess.run(
            [sys.executable, "-m", "runner", "--base-url", server.base_url, *args],
            cwd=tmp_path,
            env=environment(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert set(server.auth) == {f"Bearer {KEY}"}
        injected = {fault for _, _, fault in server.injected}
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert injected == set(ECHO_FAULTS)
    records = {r["id"]: r for r in read_jsonl(tmp_path / "run.jsonl")}
    echoed = records["echo_answer"]["messages"][3]["content"]
    assert echoed == f"Your key is {REDACTED}, right?"  # scrubbed, the rest as said
    judged = [
        records[n]["turns"][0]["checks"][0]["message"] for n in ("judge-fails", "judge-echoes")
    ]
    assert all(REDACTED in message for message in judged), judged
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"run.jsonl", "junit.xml", "summary.json"} <= {p.name for p in written}
    assert any(p.parent.name == "fixtures" for p in written)
    for path in written:
        data = path.read_bytes()
        assert KEY.encode() not in data and SECRET_PART.encode() not in data, path
    assert_clean(proc.stdout, proc.stderr)
    assert_clean(proc.stdout.replace("\\/", "/"), proc.stderr.replace("\\/", "/"))
