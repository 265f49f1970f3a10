"""The chat-completions client: one HTTP attempt, turned into a result or a typed error.

``ChatClient.complete`` sends one request and either returns a
:class:`Completion` or raises an :class:`~runner.errors.APIError` subclass
that says whether the failure is worth retrying. It never retries itself
(``runner.send.retry`` does) and never logs. The transport is a seam: the real network,
the offline backend (``mock.py``) or an ``httpx.MockTransport`` in tests all
go through exactly the same code. How the network is reached (one transport,
direct or through an environment proxy) is decided in ``network.py``; what
a status and the headers mean, in ``status.py``, ``headers.py`` and ``ratelimits.py``.

Two rules hold for every attempt. The whole of it runs under one
:class:`~runner.http.deadline.Deadline` (``--timeout``; for a stream, the longest
silence between events with data). And everything the server said (bodies,
events, the reason phrase, exception texts) passes through
:meth:`ApiKey.scrub <runner.http.apikey.ApiKey.scrub>` before it is kept in a
Completion or an error, so a server that echoes the key cannot get it stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from runner import __version__
from runner.errors import APIError, FatalAPIError, TransientAPIError
from runner.http.apikey import KEY_ENV_VARS, ApiKey, find_api_key
from runner.http.deadline import Deadline
from runner.http.endpoint import (
    DEFAULT_BASE_URL,
    MOCK_BASE_URL,
    check_base_url,
    is_loopback,
    public_base_url,
)
from runner.http.headers import parse_retry_after
from runner.http.network import choose_transport, is_tls_failure
from runner.http.ratelimits import RateLimits, parse_rate_limits
from runner.http.sender import Sender
from runner.http.status import classify_status
from runner.http.streaming import StreamAnswer
from runner.jsonbytes import dumps_bytes

__all__ = [
    "DEFAULT_BASE_URL",
    "KEY_ENV_VARS",
    "MOCK_BASE_URL",
    "ApiKey",
    "ChatClient",
    "Completion",
    "check_base_url",
    "completion_from_json",
    "find_api_key",
    "is_loopback",
    "public_base_url",
]

_MAX_ERROR_CHARS = 500
_JSON_MEDIA = ("application/json", "text/json")


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
    """With streaming: milliseconds from sending the request to the first token of the answer."""
    rate_limits: RateLimits | None = None
    """What the answer's ``x-ratelimit-*`` headers said, when it had any."""

    @property
    def content(self) -> Any:
        """The assistant message's content, verbatim."""
        return self.message.get("content")


class ChatClient:
    """Sends chat-completions requests over one shared connection pool.

    ``timeout`` is a deadline for the whole request, connecting included. A
    streamed answer may take longer as long as it keeps coming: for it the
    timeout limits the silence before the first event with data, and between
    two of them (comments such as ``: ping`` do not count).

    ``clock`` times the first token of a stream from the moment the request
    is sent: the clock the caller times ``latency_ms`` on.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: ApiKey | None,
        timeout: float = 120.0,
        max_connections: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = check_base_url(base_url)
        self.url = f"{self.base_url}/chat/completions"
        self.timeout = timeout
        self._key = api_key
        self._clock = clock
        headers = {"User-Agent": f"mtrun/{__version__}", "Accept": "application/json"}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key.reveal()}"
        chosen = choose_transport(
            self.base_url, transport=transport, max_connections=max_connections
        )
        self._http = httpx.AsyncClient(
            headers=headers,
            # No read timeout: the Deadline (below) bounds the whole answer, and the
            # silence of a stream, from earlier than any read could start; a read timer
            # on top (re-armed on every chunk) would never fire first.
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0), read=None),
            # The transport keeps the connection pool (httpx's limits= applies to its own only).
            transport=chosen,
            follow_redirects=False,
            trust_env=False,  # network.py reads the proxy and CA settings
        )
        self._send = Sender(self._http, self.url, transport=chosen, headers=_HEADERS)

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
        request = _Request(dumps_bytes(body), sent=self._clock())
        streamed = bool(body.get("stream"))
        try:
            async with Deadline(self.timeout) as deadline:
                if streamed:
                    return await self._streamed(request, deadline)
                answer = await self._send.post(request.content, request.ext)
        except TimeoutError:
            raise TransientAPIError(
                _deadline_words(self.timeout, streamed=streamed, connecting=request.connecting),
                kind="connect_timeout" if request.connecting else "read_timeout",
            ) from None
        except httpx.HTTPError as exc:
            raise self._failure(exc) from None
        return self._read_response(
            answer.status_code, answer.headers, answer.content, answer.reason_phrase
        )

    async def _streamed(self, request: _Request, deadline: Deadline) -> Completion:
        """One streamed request: its events assembled, or a JSON answer read as usual."""
        async with self._send.stream(request.content, request.ext) as response:
            status, headers = response.status_code, response.headers
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if not 200 <= status <= 299 or media in _JSON_MEDIA or media.endswith("+json"):
                # An error, or a server that ignores "stream": one JSON answer.
                data = await response.aread()
                return self._read_response(status, headers, data, response.reason_phrase)
            chunks: AsyncIterator[bytes] = response.aiter_bytes()
            if media != "text/event-stream":
                first = await _first_bytes(chunks)
                if first.lstrip()[:1] == b"{":  # JSON without a Content-Type saying so
                    data = first + b"".join([chunk async for chunk in chunks])
                    return self._read_response(status, headers, data, response.reason_phrase)
                chunks = _prepend(first, chunks)
            stream = StreamAnswer(clock=self._clock, started=request.sent)
            try:
                await stream.read(chunks, on_event=deadline.extend, scrub=self._scrub)
            except httpx.TransportError:
                if not stream.complete:
                    raise  # cut before the answer was whole
            except asyncio.CancelledError:
                if not (deadline.expired and stream.complete):
                    raise  # interrupted, or silent before the answer was whole
        answer = stream.answer()  # the key may be split across deltas: scrub the whole too
        completion = completion_from_json(
            answer if self._key is None else self._key.scrub_json(answer), status=status
        )
        return dataclasses.replace(
            completion, first_token_ms=stream.first_token_ms, rate_limits=parse_rate_limits(headers)
        )

    def _failure(self, exc: httpx.HTTPError) -> APIError:
        """The typed error for an attempt that got no answer from httpx (all but the deadline)."""
        if isinstance(exc, httpx.TimeoutException):
            return TransientAPIError(
                f"no answer within the timeout ({type(exc).__name__})", kind=_timeout_kind(exc)
            )
        said = _short(self._scrub(str(exc)))
        if not isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
            return FatalAPIError(
                f"request failed: {said or type(exc).__name__}", kind="request_error"
            )
        if is_tls_failure(exc):
            return FatalAPIError(
                f"TLS verification failed for {self._scrub(public_base_url(self.base_url))}: "
                f"{said}; check the URL, or the CA bundle (SSL_CERT_FILE)",
                kind="tls_error",
            )
        kind, words = _network_failure(exc)
        return TransientAPIError(f"{words}: {said or type(exc).__name__}", kind=kind)

    def _scrub(self, text: str) -> str:
        """``text`` without the API key: for everything a server said."""
        return text if self._key is None else self._key.scrub(text)

    def _read_response(
        self, status: int, headers: Mapping[str, str], content: bytes, reason: str
    ) -> Completion:
        """The Completion in a whole (non-streamed) answer, or its typed error."""
        text = self._scrub(content.decode("utf-8", errors="replace"))
        try:
            data: Any = json.loads(content)
        except (ValueError, UnicodeDecodeError):
            data = _NOT_JSON
        else:
            data = data if self._key is None else self._key.scrub_json(data)
        if not 200 <= status <= 299:
            details, code = _error_details(data, text, self._scrub(reason))
            cls = classify_status(status, code=code)
            raise cls(
                f"HTTP {status}: {details}",
                kind=f"http_{status}",
                status=status,
                retry_after=parse_retry_after(headers),
                rate_limits=parse_rate_limits(headers),  # a gateway's 429 tells its bucket too
            )
        if data is _NOT_JSON:
            raise TransientAPIError(
                f"HTTP {status} with a body that is not valid JSON: {_short(text)!r}",
                kind="invalid_json",
                status=status,
            )
        return completion_from_json(
            data, status=status, text=text, rate_limits=parse_rate_limits(headers)
        )


_HEADERS = {"Content-Type": "application/json"}
_NOT_JSON = object()


class _Request:
    """One request's body, and whether it is still connecting (told by the transport)."""

    __slots__ = ("connecting", "content", "ext", "sent")

    def __init__(self, content: bytes, *, sent: float) -> None:
        self.content = content
        self.sent = sent
        """When the request was sent, on the client's clock."""
        self.connecting = False
        self.ext: dict[str, Any] = {"trace": self._trace}

    async def _trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpx's ``trace`` extension: ``connection.connect_tcp.started`` and the like."""
        if event.startswith("connection."):
            self.connecting = event.endswith(".started")


def _deadline_words(timeout: float, *, streamed: bool, connecting: bool) -> str:
    if connecting:
        return f"no connection within the timeout ({timeout:g} s)"
    if streamed:
        return f"the stream sent no data for {timeout:g} s (--timeout)"
    return f"no whole answer within the timeout ({timeout:g} s)"


async def _first_bytes(chunks: AsyncIterator[bytes]) -> bytes:
    """The body up to its first chunk with more than whitespace (all of it, if none has)."""
    seen = b""
    async for chunk in chunks:
        seen += chunk
        if seen.strip():
            break
    return seen


async def _prepend(first: bytes, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in chunks:
        yield chunk


def completion_from_json(
    data: Any, *, status: int = 200, text: str | None = None, rate_limits: RateLimits | None = None
) -> Completion:
    """The Completion in a parsed chat-completions answer, or a TransientAPIError.

    ``text`` is the body as received, quoted in errors (default: ``data`` as JSON);
    ``rate_limits``, what the answer's headers said.
    """
    answer: dict[str, Any] = data if isinstance(data, dict) else {}
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise TransientAPIError(
            f"HTTP {status} with no choices in the answer: {_shown(data, text)!r}",
            kind="no_choices",
            status=status,
        )
    message = choices[0].get("message")
    # A message of tool calls only may leave ``content`` out (some providers do); it is
    # kept verbatim, as is a ``content: null``.
    if not isinstance(message, dict) or (
        "content" not in message and not message.get("tool_calls")
    ):
        raise TransientAPIError(
            f"HTTP {status} with no assistant message in the answer: {_shown(data, text)!r}",
            kind="no_message",
            status=status,
        )
    usage = answer.get("usage")
    return Completion(
        message=message,
        finish_reason=_str_or_none(choices[0].get("finish_reason")),
        usage=usage if isinstance(usage, dict) else None,
        response_id=_str_or_none(answer.get("id")),
        model=_str_or_none(answer.get("model")),
        raw=answer,
        rate_limits=rate_limits,
    )


def _shown(data: Any, text: str | None) -> str:
    """The answer as an error quotes it: ``text`` as received, else ``data`` as JSON; shortened."""
    return _short(text if text is not None else json.dumps(data, ensure_ascii=False))


def _error_details(data: Any, text: str, reason: str) -> tuple[str, str | None]:
    """The API's own error message and code, from the common error shapes."""
    if data is _NOT_JSON:
        return (_short(text.strip()) or reason or "no details"), None
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


def _timeout_kind(exc: httpx.TimeoutException) -> str:
    return {
        httpx.ConnectTimeout: "connect_timeout",
        httpx.ReadTimeout: "read_timeout",
        httpx.WriteTimeout: "write_timeout",
        httpx.PoolTimeout: "pool_timeout",
    }.get(type(exc), "timeout")


def _network_failure(exc: httpx.HTTPError) -> tuple[str, str]:
    """The recorded kind of a network failure and how to say it."""
    if isinstance(exc, httpx.ConnectError):
        return "connect_error", "cannot connect"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection_dropped", "connection dropped"
    return "network_error", "network error"
