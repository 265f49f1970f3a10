"""A chat server on real loopback sockets, as strict about tool calls as the providers.

:class:`ToolServer` answers ``POST .../chat/completions``. Before answering it
checks the history the way the providers do and refuses a broken one with
their status and error JSON (``{"error": {"message", "type", "param", "code"}}``):

- OpenAI's pairing rule: an assistant message with ``tool_calls`` must be
  followed by one ``role: tool`` message per call id before the next non-tool
  message (or the end of the history): 400 "An assistant message with
  'tool_calls' must be followed by tool messages responding to each
  'tool_call_id'. The following tool_call_ids did not have response messages:
  call_x"; a tool message with no preceding call: 400 "Invalid parameter:
  messages with role 'tool' must be a response to a preceeding message with
  'tool_calls'." (OpenAI's spelling); a ``tool_call_id`` the calls did not
  give (or one answered twice): 400 "Invalid parameter: 'tool_call_id' of 'X'
  not found in 'tool_calls' of previous message."; an assistant message with
  content null and no tool calls: 400 "Invalid value for 'content': expected a
  string, got null."; ``function.arguments`` not a string: 400 "Invalid type
  for 'messages[i].tool_calls[j].function.arguments': expected a string, but
  got an object instead."; ``tool_calls: []``: 400 "Invalid
  'messages[i].tool_calls': empty array. ...".
- DeepSeek's reasoning rule (``mode="deepseek"``): every answer carries a
  ``reasoning_content`` (the reply's own, else ``"Thinking, step N of KEY."``),
  and an assistant message after the last user message (the turn's tool-call
  chain) sent back without one gets 400 "Missing `reasoning_content` field in
  the assistant message at message index N". The server's own stricter check
  (not DeepSeek's text): a ``reasoning_content`` that is not the one this
  server sent with those tool calls gets 400 "reasoning_content of the
  assistant message at message index N is not the one sent with it".
- OpenRouter's rule for signed reasoning (``mode="openrouter"``): every
  answer carries ``reasoning_details`` (the reply's own, else one signed
  ``reasoning.text`` detail), and an assistant message of the current tool
  chain whose ``reasoning_details`` are not exactly the ones sent with its
  calls gets the 400 OpenRouter relays from Anthropic: "Provider returned
  error", with Anthropic's "messages.N.content.0: Invalid `signature` in
  `thinking` block" under ``metadata.raw``.

What it answers is scripted (``script``):

- a callable ``script(body, n) -> reply | None``, ``n`` the number of requests
  of that conversation answered so far;
- a list of replies: the n-th answered request of every conversation gets the
  n-th one;
- a mapping ``conversation key -> list of replies``.

A reply is an assistant message (``text("...")``, ``calls(tool_call(...),
...)``, or any dict with ``content`` and maybe ``tool_calls``);
``finish_reason`` is ``tool_calls`` when it has calls, else ``stop``. A
missing reply (None, past the end of a list, an unscripted conversation)
gets the offline backend's answer (``runner.http.mock.answer``).
``never_stops(name, arguments)`` is a script that calls a tool forever.

A conversation is keyed by its first user message. With ``stream: true`` the
answer is sent as server-sent events: the role, then ``reasoning_content``,
``content`` and each call's arguments in fragments cut by ``split`` (default:
in two), a call's ``id``, ``type`` and name only in its first fragment, then
``finish_reason``, a usage chunk and ``[DONE]``. ``reasoning_details`` stream
as OpenRouter sends them: each detail's text (``text`` or ``summary``) in
fragments under its ``index``, its other fields in the first fragment but
the ``signature``, which comes only with the last (``data`` is never cut).

Recorded: ``requests`` (every body, in arrival order, refused ones too),
``answers`` (every answer sent, as a non-streamed JSON body) and ``refusals``
(``(request number, status, error JSON)``). ``latency=(low, high)`` makes each
answer take that long, so a test can kill a client with requests in flight.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from runner.http.mock import answer as offline_answer

Reply = dict[str, Any]
Script = Callable[[dict[str, Any], int], "Reply | None"]
Refusal = tuple[int, dict[str, Any]]


def tool_call(name: str, arguments: Any, id: str) -> dict[str, Any]:
    """One OpenAI tool call; ``arguments`` that are not a string are sent as compact JSON."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, separators=(",", ":"))
    return {"id": id, "type": "function", "function": {"name": name, "arguments": text}}


def calls(*tool_calls: dict[str, Any], content: str | None = None) -> Reply:
    """An assistant message making ``tool_calls`` (parallel when several)."""
    return {"role": "assistant", "content": content, "tool_calls": list(tool_calls)}


def text(content: str) -> Reply:
    """An assistant message in text, without tool calls."""
    return {"role": "assistant", "content": content}


def never_stops(name: str, arguments: Any) -> Script:
    """A model that calls ``name`` on every request, with a new id each time."""
    return lambda body, n: calls(tool_call(name, arguments, f"call_loop_{n}"))


def halves(piece: str) -> list[str]:
    """``piece`` in two fragments (one when it is shorter than two characters)."""
    middle = len(piece) // 2
    return [piece[:middle], piece[middle:]] if middle else [piece]


def conversation_key(messages: Sequence[Any]) -> str:
    """What identifies a conversation: its first user message (JSON when not a string)."""
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def openai_error(message: str, param: str | None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error body for a refused request."""
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return {"error": error}


def check_pairing(messages: Sequence[Any]) -> dict[str, Any] | None:
    """OpenAI's error body for a history that breaks its tool-call rules, or None."""
    chain: set[str] | None = None
    """The ids of the calls being answered, None outside a tool-call chain."""
    pending: list[str] = []
    pending_at = 0
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            if chain is None:
                said = (
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'."
                )
                return openai_error(said, f"messages.[{i}].role")
            call_id = message.get("tool_call_id")
            if call_id not in pending:
                said = (
                    f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in "
                    "'tool_calls' of previous message."
                )
                return openai_error(said, f"messages.[{i}].tool_call_id")
            pending.remove(call_id)
            continue
        if pending:
            return _unanswered(pending, pending_at)
        chain = None
        if role == "assistant":
            problem = _check_assistant(message, i)
            if problem is not None:
                return problem
            if message.get("tool_calls"):
                pending = [c.get("id") for c in message["tool_calls"]]
                chain, pending_at = set(pending), i
    return _unanswered(pending, pending_at) if pending else None


def _check_assistant(message: dict[str, Any], i: int) -> dict[str, Any] | None:
    tool_calls = message.get("tool_calls")
    if tool_calls == []:
        said = (
            f"Invalid 'messages[{i}].tool_calls': empty array. Expected an array with minimum "
            "length 1, but got an empty array instead."
        )
        return openai_error(said, f"messages[{i}].tool_calls", "empty_array")
    if message.get("content") is None and not tool_calls:
        said = "Invalid value for 'content': expected a string, got null."
        return openai_error(said, f"messages.[{i}].content")
    for j, call in enumerate(tool_calls or []):
        arguments = (call.get("function") or {}).get("arguments")
        if not isinstance(arguments, str):
            where = f"messages[{i}].tool_calls[{j}].function.arguments"
            said = f"Invalid type for '{where}': expected a string, but got an object instead."
            return openai_error(said, where, "invalid_type")
    return None


def _unanswered(pending: list[str], at: int) -> dict[str, Any]:
    said = (
        "An assistant message with 'tool_calls' must be followed by tool messages responding "
        "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
        + ", ".join(str(p) for p in pending)
    )
    return openai_error(said, f"messages.[{at}].role")


def check_reasoning(messages: Sequence[Any], sent: Mapping[str, str]) -> dict[str, Any] | None:
    """DeepSeek's error body for a tool-call chain sent back without its reasoning, or None.

    ``sent`` maps each tool call id the server gave to the reasoning it came with.
    """
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    for i in range(users[-1] + 1 if users else 0, len(messages)):
        message = messages[i]
        if message.get("role") != "assistant":
            continue
        reasoning = message.get("reasoning_content")
        if not isinstance(reasoning, str):
            said = (
                f"Missing `reasoning_content` field in the assistant message at message index {i}"
            )
            return openai_error(said, None, "invalid_request_error")
        ids = [c.get("id") for c in message.get("tool_calls") or []]
        if any(sent.get(call_id, reasoning) != reasoning for call_id in ids):
            said = (
                f"reasoning_content of the assistant message at message index {i} "
                "is not the one sent with it"
            )
            return openai_error(said, None, "invalid_request_error")
    return None


def check_details(messages: Sequence[Any], sent: Mapping[str, Any]) -> dict[str, Any] | None:
    """OpenRouter's error body for a tool chain sent back without its exact reasoning details.

    ``sent`` maps each tool call id the server gave to the ``reasoning_details`` it came with.
    """
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    for i in range(users[-1] + 1 if users else 0, len(messages)):
        message = messages[i]
        ids = [c.get("id") for c in message.get("tool_calls") or []]
        if message.get("role") != "assistant" or not ids:
            continue
        if any(id in sent and message.get("reasoning_details") != sent[id] for id in ids):
            raw = {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": f"messages.{i}.content.0: Invalid `signature` in `thinking` block",
                },
            }
            metadata = {"raw": json.dumps(raw), "provider_name": "Anthropic"}
            return {
                "error": {"message": "Provider returned error", "code": 400, "metadata": metadata}
            }
    return None


class _Server(ThreadingHTTPServer):
    """The HTTP server, quiet about clients that go away mid-request (a killed run)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class ToolServer:
    """A threaded HTTP/1.1 chat server on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        script: Script | Sequence[Reply] | Mapping[str, Sequence[Reply]] | None = None,
        *,
        mode: str = "openai",
        split: Callable[[str], list[str]] = halves,
        latency: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        if mode not in ("openai", "deepseek", "openrouter"):
            raise ValueError(f"mode must be 'openai', 'deepseek' or 'openrouter', not {mode!r}")
        self.script = script
        self.mode = mode
        self.split = split
        """How ``reasoning_content``, ``content`` and arguments are cut into fragments."""
        self.latency = latency
        """Seconds each answer takes, drawn evenly between the two (a crash test's window)."""
        self._random = random.Random(len(mode))
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        """Every request body, in arrival order (refused ones too)."""
        self.answers: list[dict[str, Any]] = []
        """Every answer sent, as a non-streamed chat.completion."""
        self.refusals: list[tuple[int, int, dict[str, Any]]] = []
        """(request number, status, error body) of every refused request."""
        self.answered: Counter[str] = Counter()
        """Answered requests per conversation key."""
        self.reasoning_sent: dict[str, str] = {}
        """The reasoning sent with each tool call id (``mode="deepseek"``)."""
        self.details_sent: dict[str, Any] = {}
        """The ``reasoning_details`` sent with each tool call id (``mode="openrouter"``)."""
        self.httpd = _Server(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> ToolServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def bodies_for(self, key: str) -> list[dict[str, Any]]:
        """The request bodies of the conversation whose first user message is ``key``."""
        with self.lock:
            return [b for b in self.requests if conversation_key(b.get("messages", [])) == key]

    # -- answering -------------------------------------------------------------------

    def respond(self, body: Any) -> tuple[int, dict[str, Any]]:
        """The status and JSON answer to one request body (records it)."""
        with self.lock:
            number = len(self.requests)
            self.requests.append(body)
            refused = self._refusal(body)
            if refused is not None:
                self.refusals.append((number, *refused))
                return refused
            key = conversation_key(body["messages"])
            n = self.answered[key]
            self.answered[key] += 1
            completion = self._completion(body, key, n)
            self.answers.append(completion)
            return 200, completion

    def _refusal(self, body: Any) -> Refusal | None:
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return 400, openai_error("'messages' must be a list of objects", "messages")
        problem = check_pairing(messages)
        if problem is None and self.mode == "deepseek":
            problem = check_reasoning(messages, self.reasoning_sent)
        if problem is None and self.mode == "openrouter":
            problem = check_details(messages, self.details_sent)
        return None if problem is None else (400, problem)

    def _reply(self, body: dict[str, Any], key: str, n: int) -> Reply | None:
        script = self.script
        if script is None:
            return None
        if callable(script):
            return script(body, n)
        replies = script.get(key, []) if isinstance(script, Mapping) else script
        return dict(replies[n]) if n < len(replies) else None

    def _completion(self, body: dict[str, Any], key: str, n: int) -> dict[str, Any]:
        reply = self._reply(body, key, n)
        if reply is None:
            completion = offline_answer(body)
            message = completion["choices"][0]["message"]
        else:
            message = {"role": "assistant", **reply}
            finish = "tool_calls" if message.get("tool_calls") else "stop"
            completion = {
                "id": f"chatcmpl-tools-{len(self.answers)}",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model"),
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        if self.mode == "deepseek":
            message.setdefault("reasoning_content", f"Thinking, step {n} of {key}.")
            for call in message.get("tool_calls") or []:
                self.reasoning_sent[call["id"]] = message["reasoning_content"]
        if self.mode == "openrouter":
            signed = {"type": "reasoning.text", "text": f"Thinking, step {n} of {key}."}
            signed.update(
                {"signature": f"sig-{len(self.answers)}", "format": "anthropic-claude-v1"}
            )
            message.setdefault("reasoning_details", [{**signed, "index": 0}])
            for call in message.get("tool_calls") or []:
                self.details_sent[call["id"]] = message["reasoning_details"]
        return completion

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                try:
                    body = json.loads(self.rfile.read(length))
                except ValueError:
                    body = None
                if server.latency[1] > 0:
                    time.sleep(server._random.uniform(*server.latency))
                status, payload = server.respond(body)
                if status == 200 and isinstance(body, dict) and body.get("stream"):
                    data, kind = sse(payload, server.split), "text/event-stream"
                else:
                    data, kind = json.dumps(payload).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler


def sse(completion: dict[str, Any], split: Callable[[str], list[str]] = halves) -> bytes:
    """A chat.completion as the server-sent events of a stream, its text cut by ``split``."""
    choice = completion["choices"][0]
    message = choice["message"]
    deltas: list[dict[str, Any]] = [{"role": "assistant"}]
    for field in ("reasoning_content", "content"):
        if isinstance(message.get(field), str):
            deltas += [{field: piece} for piece in split(message[field])]
    for detail in message.get("reasoning_details") or []:
        deltas += [{"reasoning_details": [piece]} for piece in detail_fragments(detail, split)]
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call["function"]
        head = {"index": index, "id": call["id"], "type": call["type"]}
        deltas.append({"tool_calls": [{**head, "function": {"name": function["name"]}}]})
        for piece in split(function["arguments"]):
            fragment = {"index": index, "function": {"arguments": piece}}
            deltas.append({"tool_calls": [fragment]})
    base = {"id": completion["id"], "object": "chat.completion.chunk", "model": completion["model"]}
    events = [
        {**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas
    ]
    events.append({**base, "choices": [{"index": 0, "delta": {}, **_finish(choice)}]})
    events.append({**base, "choices": [], "usage": completion["usage"]})
    lines = [f"data: {json.dumps(event)}\n\n" for event in events]
    return ("".join(lines) + "data: [DONE]\n\n").encode()


def _finish(choice: dict[str, Any]) -> dict[str, Any]:
    return {"finish_reason": choice["finish_reason"]}


def detail_fragments(detail: dict[str, Any], split: Callable[[str], list[str]]) -> list[Any]:
    """One reasoning detail as OpenRouter streams it: its text cut, the signature last."""
    field = next((f for f in ("text", "summary") if isinstance(detail.get(f), str)), None)
    if field is None:
        return [detail]
    head = {k: v for k, v in detail.items() if k not in (field, "signature")}
    pieces = split(detail[field]) or [""]
    fragments: list[dict[str, Any]] = [
        {"type": detail.get("type"), "index": detail.get("index"), field: piece} for piece in pieces
    ]
    fragments[0] = {**head, field: pieces[0]}
    if "signature" in detail:
        fragments[-1]["signature"] = detail["signature"]
    return fragments
