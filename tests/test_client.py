"""The chat-completions client: the request it sends and how answers and failures map."""

from __future__ import annotations

import asyncio
import json
import pickle
import socket
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from helpers import bounded

from runner.errors import (
    APIError,
    ConfigError,
    FatalAPIError,
    QuotaExhaustedError,
    TransientAPIError,
)
from runner.http.client import (
    MOCK_BASE_URL,
    ApiKey,
    ChatClient,
    Completion,
    check_base_url,
    find_api_key,
    is_loopback,
    public_base_url,
)
from runner.http.network import choose_transport
from runner.http.transport import NetworkTransport

KEY = "sk-test-SECRET-123"
BASE = "https://api.example.test/v1"
BODY: dict[str, Any] = {
    "model": "tiny-1",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": 'Héllo ✓, "quoted" and\nnew line'},
    ],
    "temperature": 0.2,
    "max_tokens": 64,
}
ANSWER: dict[str, Any] = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "model": "tiny-1-2025",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi.", "reasoning_content": "short"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
}

Handler = Callable[[httpx.Request], httpx.Response]


def complete_with(
    handler: Handler,
    body: Mapping[str, Any] = BODY,
    *,
    api_key: ApiKey | None = None,
    base_url: str = BASE,
) -> Completion:
    """Run one ``ChatClient.complete`` against a mock transport."""

    async def go() -> Completion:
        transport = httpx.MockTransport(handler)
        async with ChatClient(base_url, api_key=api_key, transport=transport) as client:
            return await client.complete(body)

    return asyncio.run(go())


def failure_of(handler: Handler, **kw: Any) -> APIError:
    with pytest.raises(APIError) as info:
        complete_with(handler, api_key=ApiKey(KEY, "MTRUN_API_KEY"), **kw)
    return info.value


def answering(
    status: int,
    *,
    json_body: Any = None,
    text: str | None = None,
    headers: dict[str, str] | None = None,
) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if text is not None:
            return httpx.Response(status, text=text, headers=headers)
        return httpx.Response(status, json=json_body, headers=headers)

    return handler


def raising(exc_type: type[httpx.TransportError], message: str) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type(message, request=request)

    return handler


def openai_error(message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


# --- the request -------------------------------------------------------------


def test_the_request_is_an_exact_post_to_chat_completions() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ANSWER)

    complete_with(handler, api_key=ApiKey(KEY, "MTRUN_API_KEY"))

    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == "https://api.example.test/v1/chat/completions"
    expected = json.dumps(BODY, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert request.content == expected
    assert json.loads(request.content) == BODY
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"].startswith("mtrun/")


def test_no_key_means_no_authorization_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ANSWER)

    complete_with(handler, api_key=None)

    assert "authorization" not in seen[0].headers


def test_a_trailing_slash_in_the_base_url_does_not_double_up() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ANSWER)

    complete_with(handler, base_url="http://localhost:8000/v1/")

    assert str(seen[0].url) == "http://localhost:8000/v1/chat/completions"


@pytest.mark.parametrize("base_url", [f"{BASE}?api-version=2024-06-01", f"{BASE}#section"])
def test_a_query_or_fragment_in_the_base_url_never_misroutes_the_request(base_url: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ANSWER)

    try:
        complete_with(handler, base_url=base_url)
    except ConfigError:
        return  # rejecting such a base URL up front is fine too
    assert seen[0].url.path == "/v1/chat/completions"


# --- answers -----------------------------------------------------------------


def test_a_200_answer_becomes_a_completion() -> None:
    completion = complete_with(answering(200, json_body=ANSWER))

    assert completion == Completion(
        message={"role": "assistant", "content": "Hi.", "reasoning_content": "short"},
        finish_reason="stop",
        usage={"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
        response_id="chatcmpl-123",
        model="tiny-1-2025",
        raw=ANSWER,
    )
    assert completion.content == "Hi."


def test_a_tool_call_answer_with_null_content_is_a_completion() -> None:
    message = {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1"}]}
    body = {"choices": [{"message": message, "finish_reason": "tool_calls"}]}

    completion = complete_with(answering(200, json_body=body))

    assert completion.message == message
    assert completion.content is None
    assert completion.finish_reason == "tool_calls"
    assert (completion.usage, completion.response_id, completion.model) == (None, None, None)


# --- failures ----------------------------------------------------------------

FAILURES: dict[str, tuple[Handler, type[APIError], str, int | None, str]] = {
    # name: (handler, exact error class, kind, status, exact message)
    "429": (
        answering(
            429,
            json_body=openai_error("Rate limit reached", "rate_limit_exceeded"),
            headers={"retry-after": "2"},
        ),
        TransientAPIError,
        "http_429",
        429,
        "HTTP 429: Rate limit reached",
    ),
    "503": (
        answering(503, json_body=openai_error("The engine is overloaded")),
        TransientAPIError,
        "http_503",
        503,
        "HTTP 503: The engine is overloaded",
    ),
    "503-empty": (
        answering(503, text=""),
        TransientAPIError,
        "http_503",
        503,
        "HTTP 503: Service Unavailable",
    ),
    "400": (
        answering(400, json_body=openai_error("'messages' is too long")),
        FatalAPIError,
        "http_400",
        400,
        "HTTP 400: 'messages' is too long",
    ),
    "401": (
        answering(401, json_body=openai_error("Incorrect API key provided", "invalid_api_key")),
        FatalAPIError,
        "http_401",
        401,
        "HTTP 401: Incorrect API key provided",
    ),
    "403": (
        answering(403, json_body=openai_error("Country not supported")),
        FatalAPIError,
        "http_403",
        403,
        "HTTP 403: Country not supported",
    ),
    "404": (
        answering(404, json_body=openai_error("The model `nope` does not exist")),
        FatalAPIError,
        "http_404",
        404,
        "HTTP 404: The model `nope` does not exist",
    ),
    "422": (
        answering(422, json_body=openai_error("temperature must be at most 2")),
        FatalAPIError,
        "http_422",
        422,
        "HTTP 422: temperature must be at most 2",
    ),
    "404-detail": (
        answering(404, json_body={"detail": "Model tiny-1 not found"}),
        FatalAPIError,
        "http_404",
        404,
        "HTTP 404: Model tiny-1 not found",
    ),
    "400-text": (
        answering(400, text="  bad request:\n  context window exceeded\n"),
        FatalAPIError,
        "http_400",
        400,
        "HTTP 400: bad request: context window exceeded",
    ),
    "quota": (
        answering(429, json_body=openai_error("You exceeded your quota", "insufficient_quota")),
        QuotaExhaustedError,
        "http_429",
        429,
        "HTTP 429: You exceeded your quota",
    ),
    "invalid-json": (
        answering(200, text="<html>oops</html>"),
        TransientAPIError,
        "invalid_json",
        200,
        "HTTP 200 with a body that is not valid JSON: '<html>oops</html>'",
    ),
    "no-choices": (
        answering(200, json_body={"id": "x", "choices": []}),
        TransientAPIError,
        "no_choices",
        200,
        'HTTP 200 with no choices in the answer: \'{"id":"x","choices":[]}\'',
    ),
    "no-message": (
        answering(200, json_body={"choices": [{"finish_reason": "stop"}]}),
        TransientAPIError,
        "no_message",
        200,
        "HTTP 200 with no assistant message in the answer: "
        '\'{"choices":[{"finish_reason":"stop"}]}\'',
    ),
    "connect": (
        raising(httpx.ConnectError, "[Errno 111] Connection refused"),
        TransientAPIError,
        "connect_error",
        None,
        "cannot connect: [Errno 111] Connection refused",
    ),
    "read-timeout": (
        raising(httpx.ReadTimeout, "timed out"),
        TransientAPIError,
        "read_timeout",
        None,
        "no answer within the timeout (ReadTimeout)",
    ),
    "dropped": (
        raising(httpx.RemoteProtocolError, "Server disconnected without sending a response."),
        TransientAPIError,
        "connection_dropped",
        None,
        "connection dropped: Server disconnected without sending a response.",
    ),
}


@pytest.mark.parametrize("name", list(FAILURES))
def test_each_failure_maps_to_a_typed_error(name: str) -> None:
    handler, cls, kind, status, message = FAILURES[name]

    error = failure_of(handler)

    assert type(error) is cls
    assert error.kind == kind
    assert error.status == status
    assert error.message == message
    assert str(error) == message


def test_a_429_carries_the_servers_retry_after() -> None:
    error = failure_of(FAILURES["429"][0])
    assert error.retry_after == 2.0


def test_a_retry_after_ms_header_is_read_on_any_error_status() -> None:
    error = failure_of(answering(503, text="", headers={"Retry-After-Ms": "250"}))
    assert error.retry_after == 0.25


def test_no_retry_after_header_means_none() -> None:
    assert failure_of(FAILURES["503"][0]).retry_after is None


def test_a_long_error_body_is_shortened_to_one_line() -> None:
    error = failure_of(answering(500, text="boom\n" * 1000))
    assert error.message.startswith("HTTP 500: boom boom")
    assert error.message.endswith("…")
    assert "\n" not in error.message
    assert len(error.message) == len("HTTP 500: ") + 500


# --- secrets -----------------------------------------------------------------


def test_the_key_never_shows_in_repr_or_str() -> None:
    key = ApiKey(KEY, "MTRUN_API_KEY")
    client = ChatClient(BASE, api_key=key, transport=httpx.MockTransport(answering(200)))
    try:
        for text in (repr(key), str(key), f"{key}", repr(client), str(client)):
            assert KEY not in text
            assert "SECRET" not in text
        assert repr(key) == "ApiKey(from $MTRUN_API_KEY)"
        assert repr(client) == "ChatClient('https://api.example.test/v1')"
    finally:
        asyncio.run(client.aclose())


@pytest.mark.parametrize("name", list(FAILURES))
def test_the_key_never_shows_in_error_messages(name: str) -> None:
    error = failure_of(FAILURES[name][0])
    rendered = "".join(traceback.format_exception(error))
    for text in (error.message, str(error), repr(error), rendered):
        assert KEY not in text


def test_an_api_key_cannot_be_pickled() -> None:
    key = ApiKey(KEY, "MTRUN_API_KEY")
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(key, protocol=protocol)


@pytest.mark.parametrize(
    ("env", "value", "source"),
    [
        ({"MTRUN_API_KEY": "a", "ARCEE_API_KEY": "b", "OPENAI_API_KEY": "c"}, "a", "MTRUN_API_KEY"),
        ({"ARCEE_API_KEY": "b", "OPENAI_API_KEY": "c"}, "b", "ARCEE_API_KEY"),
        ({"OPENAI_API_KEY": "c"}, "c", "OPENAI_API_KEY"),
        (
            {"MTRUN_API_KEY": "", "ARCEE_API_KEY": " \t", "OPENAI_API_KEY": "c"},
            "c",
            "OPENAI_API_KEY",
        ),
        ({"MTRUN_API_KEY": "  a \n", "OPENAI_API_KEY": "c"}, "a", "MTRUN_API_KEY"),
        ({"OTHER_API_KEY": "x", "OPENAI_API_KEY": "c"}, "c", "OPENAI_API_KEY"),
    ],
)
def test_find_api_key_takes_the_first_non_blank_variable(
    env: dict[str, str], value: str, source: str
) -> None:
    key = find_api_key(env)
    assert key is not None
    assert (key.reveal(), key.source) == (value, source)


@pytest.mark.parametrize("env", [{}, {"MTRUN_API_KEY": " ", "OPENAI_API_KEY": ""}])
def test_find_api_key_without_a_usable_key_is_none(env: dict[str, str]) -> None:
    assert find_api_key(env) is None


def test_find_api_key_honours_other_names() -> None:
    key = find_api_key({"MY_KEY": "k", "MTRUN_API_KEY": "a"}, names=("MY_KEY",))
    assert key is not None
    assert (key.reveal(), key.source) == ("k", "MY_KEY")


# --- base URLs ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8000/v1",
        "http://127.0.0.1/v1",
        "http://127.5.5.5:1234/v1",
        "http://[::1]:8000/v1",
        "http://sub.localhost/v1",
        "http://LOCALHOST:11434/v1",
    ],
)
def test_loopback_endpoints(url: str) -> None:
    assert is_loopback(url) is True


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/v1",
        "http://10.0.0.1/v1",
        "http://192.168.1.1:8000/v1",
        "http://localhost.example.com/v1",
        "http://notlocalhost/v1",
        "mock://offline",
    ],
)
def test_non_loopback_endpoints(url: str) -> None:
    assert is_loopback(url) is False


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("https://api.example.com/v1/?key=abc#frag", "https://api.example.com/v1"),
        ("https://user:pass@api.example.com:8443/v1/", "https://api.example.com:8443/v1"),
        ("http://[::1]:8000/v1/", "http://[::1]:8000/v1"),
        ("mock://anything", MOCK_BASE_URL),
    ],
)
def test_public_base_url_drops_what_must_not_be_recorded(url: str, public: str) -> None:
    assert public_base_url(url) == public


@pytest.mark.parametrize(
    ("url", "checked"),
    [
        ("mock://anything", MOCK_BASE_URL),
        ("mock://", MOCK_BASE_URL),
        ("http://localhost:8000/v1/", "http://localhost:8000/v1"),
        ("https://api.arcee.ai/api/v1", "https://api.arcee.ai/api/v1"),
    ],
)
def test_check_base_url_accepts_http_and_mock(url: str, checked: str) -> None:
    assert check_base_url(url) == checked


@pytest.mark.parametrize(("url", "shown"), [("ftp://x", "'ftp://x'"), ("not a url", "'not a url'")])
def test_check_base_url_rejects_non_http_urls(url: str, shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_base_url(url)
    assert str(info.value) == (
        f"--base-url {shown} is not an http(s) URL; "
        "expected e.g. https://api.openai.com/v1 or http://localhost:8000/v1"
    )


def test_check_base_url_rejects_credentials_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as info:
        check_base_url("https://user:pass@host/v1")
    assert "pass" not in str(info.value)
    assert "MTRUN_API_KEY" in str(info.value)


@pytest.mark.parametrize(
    "url", ["http://localhost:abc/v1", "http://localhost:99999/v1", "ftp://x:abc"]
)
def test_check_base_url_rejects_a_bad_port_as_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        check_base_url(url)


# --- real loopback sockets ---------------------------------------------------


class ChatHandler(BaseHTTPRequestHandler):
    """Answers any POST with ANSWER, or drops the connection when the server says so."""

    server: LoopbackServer
    protocol_version = "HTTP/1.1"  # keep-alive, as real API servers do

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append((self.path, dict(self.headers), body))
        if self.server.drop:
            self.close_connection = True
            return
        payload = json.dumps(ANSWER).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LoopbackServer(ThreadingHTTPServer):
    def __init__(self, drop: bool) -> None:
        super().__init__(("127.0.0.1", 0), ChatHandler)
        self.drop = drop
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        self.connections = 0

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections += 1  # called once for every connection accepted
        return True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


def serve(drop: bool) -> Iterator[LoopbackServer]:
    server = LoopbackServer(drop)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real transport reads proxy settings; loopback tests must not go through one."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("all_proxy", raising=False)


@pytest.fixture
def chat_server(no_proxy: None) -> Iterator[LoopbackServer]:
    yield from serve(drop=False)


@pytest.fixture
def dropping_server(no_proxy: None) -> Iterator[LoopbackServer]:
    yield from serve(drop=True)


def complete_over_network(base_url: str, api_key: ApiKey | None = None) -> Completion:
    async def go() -> Completion:
        async with ChatClient(base_url, api_key=api_key, timeout=10.0) as client:
            return await client.complete(BODY)

    return asyncio.run(go())


def test_a_real_loopback_server_answers(chat_server: LoopbackServer) -> None:
    completion = complete_over_network(chat_server.base_url, ApiKey(KEY, "MTRUN_API_KEY"))

    assert completion.content == "Hi."
    assert completion.response_id == "chatcmpl-123"
    [(path, headers, body)] = chat_server.seen
    assert path == "/v1/chat/completions"
    assert json.loads(body) == BODY
    assert {k.lower(): v for k, v in headers.items()}["authorization"] == f"Bearer {KEY}"


def test_a_server_that_hangs_up_gives_a_transient_error(dropping_server: LoopbackServer) -> None:
    with pytest.raises(TransientAPIError) as info:
        complete_over_network(dropping_server.base_url)

    assert info.value.kind in ("connection_dropped", "network_error")
    assert info.value.status is None
    assert len(dropping_server.seen) == 1


def test_an_environment_proxy_carries_the_requests(
    chat_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loopback chat server stands in for the proxy: it sees the absolute-form target.
    monkeypatch.setenv("HTTP_PROXY", chat_server.base_url.removesuffix("/v1"))
    monkeypatch.setenv("NO_PROXY", "")
    completion = complete_over_network("http://chat.mtrun-proxy-test.invalid/v1")

    assert completion.content == "Hi."
    [(path, _, _)] = chat_server.seen
    assert path == "http://chat.mtrun-proxy-test.invalid/v1/chat/completions"


def test_no_proxy_sends_the_requests_direct(
    chat_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nothing_there = sock.getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{nothing_there}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    completion = complete_over_network(chat_server.base_url)

    assert completion.content == "Hi."
    [(path, _, _)] = chat_server.seen
    assert path == "/v1/chat/completions"


def test_the_network_goes_through_one_transport_proxied_or_not(
    no_proxy: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = choose_transport(BASE, transport=None, max_connections=3)
    assert isinstance(direct, NetworkTransport) and direct.proxy is None
    assert repr(direct) == "NetworkTransport(max_connections=3)"

    monkeypatch.setenv("HTTPS_PROXY", "http://user:secret@proxy.invalid:3128")
    proxied = choose_transport(BASE, transport=None, max_connections=3)
    assert isinstance(proxied, NetworkTransport) and proxied.proxy is not None
    assert str(proxied.proxy.url) == "http://proxy.invalid:3128"  # the credentials go apart
    assert "secret" not in repr(proxied)
    given = httpx.MockTransport(lambda request: httpx.Response(200))
    assert choose_transport(BASE, transport=given, max_connections=3) is given


def test_requests_share_keep_alive_connections(chat_server: LoopbackServer) -> None:
    async def go() -> None:
        async with ChatClient(chat_server.base_url, api_key=None, timeout=10.0) as client:
            for _ in range(5):
                await client.complete(BODY)

    asyncio.run(go())
    assert len(chat_server.seen) == 5 and chat_server.connections == 1


def test_nothing_listening_gives_a_connect_error(no_proxy: None) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransientAPIError) as info:
        complete_over_network(f"http://127.0.0.1:{port}/v1")

    assert info.value.kind == "connect_error"
    assert info.value.message.startswith("cannot connect: ")


class _NeverConnects(httpx.AsyncBaseTransport):
    """Says it started connecting (the ``trace`` extension, as httpcore does), then hangs."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.extensions["trace"]("connection.connect_tcp.started", {})
        await asyncio.Event().wait()
        raise AssertionError("never reached")


class _NeverAnswers(httpx.AsyncBaseTransport):
    """Connects, then never sends the answer's head."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.extensions["trace"]("connection.connect_tcp.started", {})
        await request.extensions["trace"]("connection.connect_tcp.complete", {})
        await asyncio.Event().wait()
        raise AssertionError("never reached")


@pytest.mark.parametrize(
    ("transport", "kind", "message"),
    [
        (_NeverConnects, "connect_timeout", "no connection within the timeout (0.05 s)"),
        (_NeverAnswers, "read_timeout", "no whole answer within the timeout (0.05 s)"),
    ],
)
def test_the_deadline_says_whether_it_expired_connecting_or_waiting(
    transport: type[httpx.AsyncBaseTransport], kind: str, message: str
) -> None:
    async def go() -> Completion:
        async with ChatClient(BASE, api_key=None, timeout=0.05, transport=transport()) as client:
            return await client.complete(BODY)

    with pytest.raises(TransientAPIError) as info:
        asyncio.run(bounded(go()))
    assert (info.value.kind, info.value.message) == (kind, message)
