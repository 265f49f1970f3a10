"""The proxied network path: HTTP(S)_PROXY through a loopback proxy, NO_PROXY, proxy credentials.

Requests go through the same transport whether proxied or not; these
tests prove the proxied half on real sockets (``proxyserver.py``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import self_signed_cert
from proxyserver import ChatEndpoint, LoopbackProxy

from runner.errors import ConfigError, FatalAPIError, TransientAPIError
from runner.http.apikey import ApiKey
from runner.http.client import ChatClient, Completion

KEY = "sk-proxy-test-0123456789abcdef"
BODY = {"model": "m", "messages": [{"role": "user", "content": "Hello"}]}
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or CA setting from the machine running the tests."""
    for name in (*PROXY_VARS, "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


async def complete(base_url: str, key: ApiKey | None = None) -> Completion:
    async with ChatClient(base_url, api_key=key, timeout=10.0) as client:
        return await client.complete(BODY)


def with_servers(
    go: Callable[[ChatEndpoint, LoopbackProxy], Awaitable[Any]],
    *,
    tls: ssl.SSLContext | None = None,
    credentials: tuple[str, str] | None = None,
) -> Any:
    """Run ``go`` with an endpoint and a proxy in front of it, both on loopback."""

    async def main() -> Any:
        async with ChatEndpoint(tls) as endpoint:
            async with LoopbackProxy(endpoint.port, credentials=credentials) as proxy:
                return await go(endpoint, proxy)

    return asyncio.run(main())


def test_plain_http_goes_through_http_proxy_in_absolute_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def go(endpoint: ChatEndpoint, proxy: LoopbackProxy) -> None:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        async with ChatClient("http://chat.mtrun-proxy-test.invalid/v1", api_key=None) as client:
            for _ in range(2):
                assert (await client.complete(BODY)).content == "Hi."
        lines = [line for line, _ in proxy.seen]
        target = "http://chat.mtrun-proxy-test.invalid/v1/chat/completions"
        assert lines == [f"POST {target} HTTP/1.1"] * 2
        assert proxy.connections == 1  # kept alive
        assert [line for line, _ in endpoint.seen] == ["POST /v1/chat/completions HTTP/1.1"] * 2

    with_servers(go)


def test_https_goes_through_a_connect_tunnel_the_proxy_cannot_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed_cert(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))

    async def go(endpoint: ChatEndpoint, proxy: LoopbackProxy) -> None:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        completion = await complete(endpoint.base_url, ApiKey(KEY, "MTRUN_API_KEY"))
        assert completion.content == "Hi."
        [(line, headers)] = proxy.seen
        assert line == f"CONNECT 127.0.0.1:{endpoint.port} HTTP/1.1"
        assert "authorization" not in headers  # the key travels inside the tunnel only
        [(_, inside)] = endpoint.seen
        assert inside["authorization"] == f"Bearer {KEY}"

    with_servers(go, tls=tls)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_requests_through_a_proxy_with_credentials_share_one_connection(
    scheme: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = None
    if scheme == "https":
        cert, key = self_signed_cert(tmp_path)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))

    async def go(endpoint: ChatEndpoint, proxy: LoopbackProxy) -> None:
        host = proxy.url.removeprefix("http://")
        monkeypatch.setenv(f"{scheme.upper()}_PROXY", f"http://alice:s3cret-pw@{host}")
        base = endpoint.base_url if tls else "http://chat.invalid/v1"
        async with ChatClient(base, api_key=None, timeout=10.0) as client:
            for _ in range(3):
                assert (await client.complete(BODY)).content == "Hi."
        # The proxy's own headers (its credentials, the Host aiohttp adds) do not make
        # each request a pool of its own: one connection to the proxy, one tunnel.
        assert proxy.connections == 1
        lines = [line for line, _ in proxy.seen]
        assert len(lines) == (1 if tls else 3)
        assert all(h["proxy-authorization"] == "Basic YWxpY2U6czNjcmV0LXB3" for _, h in proxy.seen)
        assert len(endpoint.seen) == 3

    with_servers(go, tls=tls, credentials=("alice", "s3cret-pw"))


def test_no_proxy_sends_matching_hosts_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    async def go(endpoint: ChatEndpoint, proxy: LoopbackProxy) -> None:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        assert (await complete(endpoint.base_url)).content == "Hi."
        assert proxy.seen == []
        assert [line for line, _ in endpoint.seen] == ["POST /v1/chat/completions HTTP/1.1"]

    with_servers(go)


def test_proxy_credentials_are_sent_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    async def go(endpoint: ChatEndpoint, proxy: LoopbackProxy) -> None:
        host = proxy.url.removeprefix("http://")
        monkeypatch.setenv("HTTP_PROXY", f"http://alice:s3cret-pw@{host}")
        assert (await complete("http://chat.invalid/v1")).content == "Hi."
        assert proxy.seen[0][1]["proxy-authorization"] == "Basic YWxpY2U6czNjcmV0LXB3"
        monkeypatch.setenv("HTTP_PROXY", f"http://alice:wrong-pw@{host}")
        with pytest.raises(FatalAPIError) as info:
            await complete("http://chat.invalid/v1")
        assert "407" in info.value.message
        assert "wrong-pw" not in info.value.message and "alice" not in info.value.message

    with_servers(go, credentials=("alice", "s3cret-pw"))


def test_a_proxy_that_is_down_is_a_connect_error(monkeypatch: pytest.MonkeyPatch) -> None:
    async def go(endpoint: ChatEndpoint, proxy: LoopbackProxy) -> str:
        return proxy.url

    gone = with_servers(go)  # the proxy has closed: nothing listens there now
    monkeypatch.setenv("HTTP_PROXY", gone)
    with pytest.raises(TransientAPIError) as info:
        asyncio.run(complete("http://chat.invalid/v1"))
    assert info.value.kind == "connect_error"


def test_a_socks_proxy_is_refused_without_showing_its_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALL_PROXY", "socks5://bob:hunter2@127.0.0.1:1080")
    with pytest.raises(ConfigError) as info:
        ChatClient("http://chat.invalid/v1", api_key=None)
    assert str(info.value) == (
        "the proxy 'socks5://127.0.0.1:1080' (from the *_PROXY environment) is not an http:// "
        "or https:// proxy; SOCKS proxies are not supported"
    )
