"""TLS on the network path: a certificate that does not verify is fatal, known by its type.

A loopback https endpoint with a self-signed certificate (``cryptography``,
a dev dependency) stands in for a server whose certificate the client
cannot check; the same endpoint trusted through ``SSL_CERT_FILE`` answers.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import httpx
import pytest
from helpers import self_signed_cert
from proxyserver import ChatEndpoint

from runner.errors import APIError, FatalAPIError, TransientAPIError
from runner.http.apikey import ApiKey
from runner.http.client import ChatClient, Completion

KEY = "sk-tls-test-0123456789abcdef"
BODY = {"model": "m", "messages": [{"role": "user", "content": "Hello"}]}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or CA setting from the machine running the tests."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def server_tls(tmp_path: Path) -> ssl.SSLContext:
    cert, key = self_signed_cert(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def complete_at(
    tls: ssl.SSLContext, host: str = "127.0.0.1"
) -> tuple[Completion | APIError, list[tuple[str, dict[str, str]]]]:
    """One request to a loopback https endpoint reached as ``host``: its outcome, what it saw."""

    async def go() -> tuple[Completion | APIError, list[tuple[str, dict[str, str]]]]:
        async with ChatEndpoint(tls) as endpoint:
            url = endpoint.base_url.replace("127.0.0.1", host)
            async with ChatClient(url, api_key=ApiKey(KEY, "MTRUN_API_KEY"), timeout=5.0) as c:
                try:
                    return await c.complete(BODY), endpoint.seen
                except APIError as error:
                    return error, endpoint.seen

    return asyncio.run(go())


def test_an_untrusted_certificate_is_a_fatal_tls_error(server_tls: ssl.SSLContext) -> None:
    error, seen = complete_at(server_tls)
    assert isinstance(error, FatalAPIError) and error.kind == "tls_error"
    assert error.message.startswith("TLS verification failed for https://127.0.0.1:")
    assert error.message.endswith("; check the URL, or the CA bundle (SSL_CERT_FILE)")
    assert seen == []  # the key never went to a server that could not prove who it is


def test_a_certificate_for_another_name_is_a_fatal_tls_error(
    server_tls: ssl.SSLContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Trusted, but issued for 127.0.0.1: reached as localhost, the name does not match.
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))
    error, seen = complete_at(server_tls, host="localhost")
    assert isinstance(error, FatalAPIError) and error.kind == "tls_error"
    assert seen == []


def test_the_same_certificate_trusted_through_ssl_cert_file_answers(
    server_tls: ssl.SSLContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))
    completion, seen = complete_at(server_tls)
    assert isinstance(completion, Completion) and completion.content == "Hi."
    [(_, headers)] = seen
    assert headers["authorization"] == f"Bearer {KEY}"


class _SaysCertificate(httpx.AsyncBaseTransport):
    """A connection error whose text mentions certificates, with no TLS failure behind it."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] said a flaky middlebox")


def test_an_error_that_only_says_certificate_is_not_taken_for_a_tls_failure() -> None:
    async def go() -> Completion:
        async with ChatClient(
            "https://api.example.test/v1", api_key=None, transport=_SaysCertificate()
        ) as client:
            return await client.complete(BODY)

    with pytest.raises(TransientAPIError) as info:
        asyncio.run(go())
    assert info.value.kind == "connect_error"


@pytest.mark.parametrize("content", [None, "not a certificate\n"], ids=["missing", "garbage"])
def test_an_ssl_cert_file_without_certificates_is_a_one_line_error(
    content: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 2 before anything is sent, naming the setting: not a traceback from deep in TLS."""
    from click.testing import CliRunner

    from runner.cli import main

    bundle = tmp_path / "ca.pem"
    if content is not None:
        bundle.write_text(content)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    conv = tmp_path / "c.yaml"
    conv.write_text("id: c\nturns:\n  - Hello\n")
    result = CliRunner().invoke(
        main,
        ["-q", "-o", str(tmp_path / "o.jsonl"), "--base-url", "https://127.0.0.1:9/v1", str(conv)],
        catch_exceptions=False,
    )
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].startswith("mtrun: error: cannot load the TLS certificates of SSL_CERT_FILE=")
    assert str(bundle) in lines[0] and "_ssl.c" not in lines[0]
    assert not (tmp_path / "o.jsonl").exists() or (tmp_path / "o.jsonl").read_text() == ""


@pytest.mark.parametrize(
    ("base_url", "proxy", "loaded"),
    [
        ("http://127.0.0.1:9/v1", None, False),
        ("https://127.0.0.1:9/v1", None, True),
        ("http://127.0.0.1:9/v1", "https://127.0.0.1:8/", True),
        ("http://127.0.0.1:9/v1", "http://127.0.0.1:8/", False),
    ],
)
def test_the_ca_bundle_is_loaded_only_when_tls_is_used(
    base_url: str, proxy: str | None, loaded: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain http to the endpoint and its proxy needs no CA bundle: a bad one is no error there,
    and the context it gets trusts nothing, so no request over it could pass verification."""
    from runner.errors import ConfigError
    from runner.http.network import network_transport

    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    if proxy is not None:
        monkeypatch.setenv("HTTPS_PROXY" if base_url.startswith("https") else "HTTP_PROXY", proxy)
    if loaded:
        with pytest.raises(ConfigError, match="cannot load the TLS certificates of SSL_CERT_FILE"):
            network_transport(base_url, max_connections=1)
        return
    context = network_transport(base_url, max_connections=1).ssl_context
    assert context.cert_store_stats()["x509"] == 0
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_aiohttp_keeps_default_contexts_that_trust_nothing_and_ssl_is_restored() -> None:
    """aiohttp's import-time contexts skip the CA store (mtrun gives its connector its own), and
    loading the CA store works again once aiohttp is imported. In a process of its own: the
    suite may have imported aiohttp before."""
    import subprocess
    import sys

    probe = (
        "import ssl, runner.http.transport, aiohttp.connector as c\n"
        "print(ssl.SSLContext.set_default_verify_paths"
        " is ssl._ssl._SSLContext.set_default_verify_paths)\n"
        "print(c._SSL_CONTEXT_VERIFIED.cert_store_stats()['x509'],"
        " c._SSL_CONTEXT_UNVERIFIED.cert_store_stats()['x509'])\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "0", "0"]


def test_while_aiohttp_is_imported_other_threads_still_load_the_ca_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The switch is the importing thread's alone: a program's own thread gets whole contexts."""
    import threading

    from runner.http import aiohttp_import

    cert, _ = self_signed_cert(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # what set_default_verify_paths reads
    assert aiohttp_import._IMPORTING == threading.get_ident()  # pytest imported it here
    contexts = [ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT) for _ in range(2)]
    aiohttp_import._skip_on_this_thread(contexts[0])
    other = threading.Thread(target=aiohttp_import._skip_on_this_thread, args=(contexts[1],))
    other.start()
    other.join()
    assert [c.cert_store_stats()["x509"] for c in contexts] == [0, 1]
