"""The chat-completions client: one HTTP attempt, turned into a result or a typed error.

``ChatClient.complete`` sends one request and either returns a
:class:`Completion` or raises an :class:`~runner.errors.APIError` subclass
that says whether the failure is worth retrying. It never retries itself
(``retry.py`` does) and never logs. The transport is a seam: the real network,
the offline backend (``mock.py``) or an ``httpx.MockTransport`` in tests all
go through exactly the same code.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from runner import __version__
from runner.errors import ConfigError, FatalAPIError, TransientAPIError
from runner.jsonio import dumps_bytes
from runner.pacing import RateLimits
from runner.retry import classify_status, parse_rate_limits, parse_retry_after
from runner.streaming import read_stream
from runner.transport import HTTP11Transport

DEFAULT_BASE_URL = "https://api.arcee.ai/api/v1"
MOCK_BASE_URL = "mock://offline"
"""Where the built-in offline backend answers (``--mock``)."""
KEY_ENV_VARS = ("MTRUN_API_KEY", "ARCEE_API_KEY", "OPENAI_API_KEY")
"""Environment variables searched for the API key, in order."""

_MAX_ERROR_CHARS = 500


class ApiKey:
    """An API key that never shows itself in a repr, str, log or traceback."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source
        """Name of the environment variable it came from."""

    def reveal(self) -> str:
        """The secret itself, for the Authorization header only."""
        return self._value

    def __repr__(self) -> str:
        return f"ApiKey(from ${self.source})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("an API key cannot be pickled")


def find_api_key(env: Mapping[str, str], names: tuple[str, ...] = KEY_ENV_VARS) -> ApiKey | None:
    """The first non-empty key among ``names`` in ``env``, or None."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return ApiKey(value, name)
    return None


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


def check_base_url(base_url: str) -> str:
    """Validate a base URL and return it without a trailing slash."""
    parts = urlsplit(base_url)
    if parts.scheme == "mock":
        return MOCK_BASE_URL
    example = "expected e.g. https://api.openai.com/v1 or http://localhost:8000/v1"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"--base-url {public_base_url(base_url)!r} is not an http(s) URL; {example}"
        )
    if parts.username or parts.password:
        raise ConfigError(
            "--base-url must not contain credentials; put the key in MTRUN_API_KEY instead"
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


@dataclass(frozen=True, slots=True)
class Completion:
    """One successful chat-completions answer."""

    message: dict[str, Any]
    """The assistant message exactly as returned (role, content and any extra fields)."""
    finish_reason: str | None
    """Why the model stopped: ``stop``, ``length``, ..."""
    usage: dict[str, Any] | None
    """Token counts as reported by the API."""
    response_id: str | None
    """The API's id for the response."""
    model: str | None
    """The model the API says answered."""
    raw: dict[str, Any]
    """The whole answer as received (a stream: as assembled), for recording fixtures."""
    first_token_ms: float | None = None
    """With streaming: milliseconds from sending to the first token of the answer."""
    rate_limits: RateLimits | None = None
    """What the answer's ``x-ratelimit-*`` headers said, when it had any."""

    @property
    def content(self) -> Any:
        """The assistant message's content, verbatim."""
        return self.message.get("content")


class ChatClient:
    """Sends chat-completions requests over one shared connection pool."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: ApiKey | None,
        timeout: float = 120.0,
        max_connections: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = check_base_url(base_url)
        self.url = f"{self.base_url}/chat/completions"
        headers = {"User-Agent": f"mtrun/{__version__}", "Accept": "application/json"}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key.reveal()}"
        # The network goes through our HTTP/1.1 transport (see transport.py for why),
        # unless an environment proxy applies: then httpx's own transport handles it.
        trust_env = transport is None and _env_proxy(self.base_url)
        if transport is None and not trust_env:
            transport = HTTP11Transport(
                ssl_context=_ssl_context(self.base_url), max_connections=max_connections
            )
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
            follow_redirects=False,
            trust_env=trust_env,
        )

    def __repr__(self) -> str:
        return f"ChatClient({public_base_url(self.base_url)!r})"

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def complete(self, body: Mapping[str, Any]) -> Completion:
        """Send one request; return the answer or raise a typed APIError.

        A body with ``"stream": true`` is read as server-sent events.
        """
        content = dumps_bytes(body)
        headers = {"Content-Type": "application/json"}
        try:
            if body.get("stream"):
                async with self._http.stream(
                    "POST", self.url, content=content, headers=headers
                ) as streamed:
                    media = streamed.headers.get("content-type", "").split(";")[0].strip()
                    if not 200 <= streamed.status_code <= 299 or media == "application/json":
                        # An error, or a server that ignores "stream": one JSON answer.
                        await streamed.aread()
                        return _read_response(streamed)
                    data, first_token_ms = await read_stream(streamed)
                completion = completion_from_json(data, status=streamed.status_code)
                return dataclasses.replace(
                    completion,
                    first_token_ms=first_token_ms,
                    rate_limits=parse_rate_limits(streamed.headers),
                )
            response = await self._http.post(self.url, content=content, headers=headers)
        except httpx.TimeoutException as exc:
            raise TransientAPIError(
                f"no answer within the timeout ({type(exc).__name__})", kind=_timeout_kind(exc)
            ) from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            if _tls_failure(exc):
                raise FatalAPIError(
                    f"TLS verification failed for {public_base_url(self.base_url)}: "
                    f"{_short(str(exc))}; check the URL, or the CA bundle (SSL_CERT_FILE)",
                    kind="tls_error",
                ) from None
            kind, words = _network_failure(exc)
            raise TransientAPIError(
                f"{words}: {_short(str(exc)) or type(exc).__name__}", kind=kind
            ) from None
        except httpx.HTTPError as exc:
            raise FatalAPIError(
                f"request failed: {_short(str(exc)) or type(exc).__name__}", kind="request_error"
            ) from None
        return _read_response(response)


def _read_response(response: httpx.Response) -> Completion:
    status = response.status_code
    if not 200 <= status <= 299:
        details, code = _error_details(response)
        cls = classify_status(status, code=code)
        retry_after = parse_retry_after(response.headers)
        raise cls(
            f"HTTP {status}: {details}",
            kind=f"http_{status}",
            status=status,
            retry_after=retry_after,
        )
    try:
        data = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        raise TransientAPIError(
            f"HTTP {status} with a body that is not valid JSON: {_short(response.text)!r}",
            kind="invalid_json",
            status=status,
        ) from None
    completion = completion_from_json(data, status=status, text=response.text)
    limits = parse_rate_limits(response.headers)
    return completion if limits is None else dataclasses.replace(completion, rate_limits=limits)


def completion_from_json(data: Any, *, status: int = 200, text: str | None = None) -> Completion:
    """The Completion in a parsed chat-completions answer, or a TransientAPIError.

    ``text`` is the body as received, quoted in errors (default: ``data`` as JSON).
    """
    shown = _short(text if text is not None else json.dumps(data, ensure_ascii=False))
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise TransientAPIError(
            f"HTTP {status} with no choices in the answer: {shown!r}",
            kind="no_choices",
            status=status,
        )
    message = choices[0].get("message")
    if not isinstance(message, dict) or "content" not in message:
        raise TransientAPIError(
            f"HTTP {status} with no assistant message in the answer: {shown!r}",
            kind="no_message",
            status=status,
        )
    assert isinstance(data, dict)
    usage = data.get("usage")
    return Completion(
        message=message,
        finish_reason=_str_or_none(choices[0].get("finish_reason")),
        usage=usage if isinstance(usage, dict) else None,
        response_id=_str_or_none(data.get("id")),
        model=_str_or_none(data.get("model")),
        raw=data,
    )


def _error_details(response: httpx.Response) -> tuple[str, str | None]:
    """The API's own error message and code, from the common error shapes."""
    try:
        data = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        text = _short(response.text.strip())
        return (text or response.reason_phrase or "no details"), None
    code: str | None = None
    message: Any = None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            message = err.get("message") or err.get("detail") or err.get("msg")
            raw_code = err.get("code") or err.get("type")
            code = raw_code if isinstance(raw_code, str) else None
        elif isinstance(err, str):
            message = err
        if message is None and "detail" in data:
            message = data["detail"]
    if message is None:
        message = data
    if not isinstance(message, str):
        message = json.dumps(message, ensure_ascii=False)
    return _short(message), code


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _env_proxy(base_url: str) -> bool:
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


def _ssl_context(base_url: str) -> ssl.SSLContext | None:
    """The verifying TLS context for an https endpoint (honours SSL_CERT_FILE / SSL_CERT_DIR)."""
    if urlsplit(base_url).scheme != "https":
        return None
    return httpx.create_ssl_context(trust_env=True)


def _timeout_kind(exc: httpx.TimeoutException) -> str:
    return {
        httpx.ConnectTimeout: "connect_timeout",
        httpx.ReadTimeout: "read_timeout",
        httpx.WriteTimeout: "write_timeout",
        httpx.PoolTimeout: "pool_timeout",
    }.get(type(exc), "timeout")


def _tls_failure(exc: BaseException) -> bool:
    """Whether a network error is a failed TLS verification: retrying cannot fix it."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _network_failure(exc: httpx.HTTPError) -> tuple[str, str]:
    """The recorded kind of a network failure and how to say it."""
    if isinstance(exc, httpx.ConnectError):
        return "connect_error", "cannot connect"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection_dropped", "connection dropped"
    return "network_error", "network error"
