"""The endpoint's base URL: checked before anything is sent, and made safe to record.

A base URL is the API root (``https://api.openai.com/v1``); requests go to
``BASE_URL/chat/completions``. Credentials never belong in it (the key goes in
``MTRUN_API_KEY``): a URL with ``user:key@`` is refused, and no error message
or record shows any part of what comes before its ``@``.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

from runner.errors import ConfigError

DEFAULT_BASE_URL = "https://api.arcee.ai/api/v1"
MOCK_BASE_URL = "mock://offline"
"""Where the built-in offline backend answers (``--mock``)."""


def is_loopback(base_url: str) -> bool:
    """Whether the endpoint is on this machine (a local vLLM, Ollama, llama.cpp)."""
    host = urlsplit(base_url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def public_base_url(base_url: str) -> str:
    """The base URL without credentials, query or fragment: safe to record."""
    base_url = _without_userinfo(base_url)
    parts = urlsplit(base_url)
    if parts.scheme == "mock":
        return MOCK_BASE_URL
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None:
        netloc = f"{netloc}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _without_userinfo(url: str) -> str:
    """``url`` without anything before the last ``@`` of what follows its scheme.

    Cruder than URL parsing on purpose: a key with ``/``, ``?`` or ``#`` in it
    breaks parsing (``ftp://user:ab/cd@host`` has the host ``user``), and no
    part of it may be shown.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" not in rest:
        return url
    after = rest.rpartition("@")[2]
    return f"{scheme}://{after}" if sep else after


def check_base_url(base_url: str) -> str:
    """Validate a base URL and return it without a trailing slash."""
    parts = urlsplit(base_url)
    if parts.scheme == "mock":
        return MOCK_BASE_URL
    example = "expected e.g. https://api.openai.com/v1 or http://localhost:8000/v1"
    if _without_userinfo(base_url) != base_url:
        raise ConfigError(
            "--base-url must not contain credentials (user:key@); "
            "put the key in MTRUN_API_KEY instead"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"--base-url {public_base_url(base_url)!r} is not an http(s) URL; {example}"
        )
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise ConfigError(
            f"--base-url {parts.scheme}://{parts.hostname}: bad port; {example}"
        ) from None
    if parts.query or parts.fragment:
        raise ConfigError(
            f"--base-url {public_base_url(base_url)!r}: a query or fragment is not supported; "
            "give the API root only, requests go to BASE_URL/chat/completions"
        )
    return base_url.rstrip("/")
