"""How the client reaches an endpoint: directly or through an environment proxy, and over TLS.

The network goes through mtrun's own HTTP/1.1 transport (``transport.py``
says why), with a verifying TLS context that honours ``SSL_CERT_FILE`` and
``SSL_CERT_DIR``. When an ``HTTP(S)_PROXY`` or ``ALL_PROXY`` setting applies
to the endpoint (``NO_PROXY`` aside), httpx's own transport handles it
instead. A transport given by the caller (the offline backend, a test's
``httpx.MockTransport``) is used as it is.

A failed TLS verification is told apart from other network errors: retrying
cannot fix it, so the client reports it as fatal.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from runner.http.transport import HTTP11Transport


@dataclass(frozen=True, slots=True)
class Route:
    """The transport a client uses, and whether httpx reads the proxy environment."""

    transport: httpx.AsyncBaseTransport | None
    """The transport; None: httpx's default (which then applies the proxy)."""
    trust_env: bool
    """Whether httpx applies ``*_PROXY`` settings (only when no transport is given)."""


def choose_route(
    base_url: str, *, transport: httpx.AsyncBaseTransport | None, max_connections: int
) -> Route:
    """How requests to ``base_url`` travel: the given transport, a proxy, or straight there."""
    if transport is not None:
        return Route(transport, trust_env=False)
    if env_proxy(base_url):
        return Route(None, trust_env=True)
    return Route(
        HTTP11Transport(ssl_context=ssl_context(base_url), max_connections=max_connections),
        trust_env=False,
    )


def env_proxy(base_url: str) -> bool:
    """Whether an HTTP(S)_PROXY / ALL_PROXY setting applies to ``base_url`` (NO_PROXY aside)."""
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return False  # the common case, without importing urllib.request (~13 ms)
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(base_url)
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    # proxy_bypass_environment is public but missing from typeshed.
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    return not bypass(parts.hostname or "", proxies)


def ssl_context(base_url: str) -> ssl.SSLContext | None:
    """The verifying TLS context for an https endpoint (honours SSL_CERT_FILE / SSL_CERT_DIR)."""
    if urlsplit(base_url).scheme != "https":
        return None
    return httpx.create_ssl_context(trust_env=True)


def is_tls_failure(exc: BaseException) -> bool:
    """Whether a network error is a failed TLS verification: retrying cannot fix it."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)
