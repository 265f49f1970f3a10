"""How the client reaches an endpoint: one transport, straight there or through a proxy, over TLS.

Every request to the network goes through :class:`~runner.http.transport.NetworkTransport`
(``transport.py`` says why), direct or proxied alike: when an ``HTTPS_PROXY``,
``HTTP_PROXY`` or ``ALL_PROXY`` setting applies to the endpoint (and
``NO_PROXY`` does not exempt it), the same transport sends through that
proxy (``CONNECT`` for https). Certificates are verified against certifi's
bundle, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set, loaded only when the
endpoint or its proxy is https. A transport given
by the caller (the offline backend, a test's ``httpx.MockTransport``) is
used as it is.

A failed TLS verification is told apart from other network errors by its
type (``ssl.SSLCertVerificationError`` behind the httpx error): retrying
cannot fix it, so the client reports it as fatal.
"""

from __future__ import annotations

import base64
import os
import re
import ssl
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from runner.errors import ConfigError
from runner.http.endpoint import public_base_url

if TYPE_CHECKING:
    from runner.http.transport import NetworkTransport


def choose_transport(
    base_url: str, *, transport: httpx.AsyncBaseTransport | None, max_connections: int
) -> httpx.AsyncBaseTransport:
    """The transport for requests to ``base_url``: the one given, else the network's."""
    if transport is not None:
        return transport
    return network_transport(base_url, max_connections=max_connections)


def network_transport(base_url: str, *, max_connections: int) -> NetworkTransport:
    """The network transport for ``base_url``: its proxy (if any) and a verifying TLS context."""
    from runner.http.transport import NetworkTransport  # aiohttp: only when the network is used

    proxy = env_proxy(base_url)
    tls = any(urlsplit(url).scheme == "https" for url in (base_url, proxy) if url)
    return NetworkTransport(
        ssl_context=tls_context() if tls else no_tls_context(),
        max_connections=max_connections,
        proxy=None if proxy is None else proxy_settings(proxy),
    )


def no_tls_context() -> ssl.SSLContext:
    """For an endpoint and proxy reached over plain http: a context that trusts nothing.

    Loading the CA bundle costs about a tenth of a second of CPU, which plain
    http never needs (redirects are not followed, so no request can turn to
    https). Were one ever made over it, TLS verification would fail, never pass.
    """
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def tls_context() -> ssl.SSLContext:
    """A context verifying against certifi, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set.

    A setting naming no readable certificates is the user's to fix: a one-line
    error naming it (exit 2), before anything is sent.
    """
    try:
        return httpx.create_ssl_context(trust_env=True)
    except (OSError, ssl.SSLError) as exc:
        named = [
            f"{k}={os.environ[k]}" for k in ("SSL_CERT_FILE", "SSL_CERT_DIR") if os.environ.get(k)
        ]
        where = " and ".join(named) or "certifi's bundle"
        if isinstance(exc, ssl.SSLError):
            reason = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc))  # not where in CPython
        else:
            reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot load the TLS certificates of {where}: {reason}") from None


def proxy_settings(url: str) -> httpx.Proxy:
    """The proxy at ``url``, its credentials (``user:password@``) moved into a header.

    Sent as ``Proxy-Authorization`` on the CONNECT or the forwarded request,
    and never part of the proxy's URL, so no error or repr can show them.
    """
    parsed = httpx.URL(url)
    if not (parsed.username or parsed.password):
        return httpx.Proxy(parsed)
    token = base64.b64encode(f"{parsed.username}:{parsed.password}".encode()).decode("ascii")
    return httpx.Proxy(
        parsed.copy_with(username=None, password=None),
        headers={"Proxy-Authorization": f"Basic {token}"},
    )


def env_proxy(base_url: str) -> str | None:
    """The HTTP(S)_PROXY / ALL_PROXY URL that applies to ``base_url``, unless NO_PROXY exempts it.

    Raises ConfigError for a proxy that is not http(s) (SOCKS is not supported).
    """
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return None  # the common case, without importing urllib.request (~13 ms)
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(base_url)
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy:
        return None
    # proxy_bypass_environment is public but missing from typeshed.
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if bypass(parts.hostname or "", proxies):
        return None
    if "://" not in proxy:
        proxy = f"http://{proxy}"  # "proxy:3128", as curl reads it
    if urlsplit(proxy).scheme not in ("http", "https"):
        raise ConfigError(
            f"the proxy {public_base_url(proxy)!r} (from the *_PROXY environment) is not "
            "an http:// or https:// proxy; SOCKS proxies are not supported"
        )
    return proxy


def is_tls_failure(exc: BaseException) -> bool:
    """Whether a network error is a failed TLS verification: retrying cannot fix it."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
