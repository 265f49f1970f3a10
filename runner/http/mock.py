"""The built-in offline backend: an OpenAI-compatible server inside an httpx transport.

``--mock`` (or ``--base-url mock://``) plugs :class:`OfflineBackend` into the
same :class:`~runner.http.client.ChatClient` the real API uses, so the whole
request/response path runs with no network and no key.

Answers are deterministic: they depend on the model, the whole history and
the parameters, so two runs of the same batch carry byte-identical
messages, and a client that dropped or reordered history would get a
different answer. ``usage`` is estimated at about four characters a token
(``runner.spec.tokens``, at least one a text, counting only the text parts);
``max_tokens`` truncates the answer with ``finish_reason: length``; a
``response_format`` of ``json_object`` or ``json_schema`` gets a JSON answer.

Tool calls (docs/design/tool-calls.md): a request that declares ``tools`` and
ends with the user's message gets one call of the first declared function
(or the one ``tool_choice`` names; none for ``tool_choice: "none"``):
``finish_reason: tool_calls``, content null, an id from the request's hash,
arguments built from the required properties of its ``parameters``
(strings: a word of the user's message, integers 1, numbers 1.0, booleans
true, enums their first value, arrays [], objects {}). A request that ends
with tool messages gets a text answer quoting their content. Requests
without ``tools`` are answered exactly as before.

Judge requests (``runner/checks/judge.py``, whose prompt is read by its
constants) get a verdict by a simple, documented rule: the answer passes when
every phrase the rubric puts in double quotes appears in it, ignoring case (a
rubric with no quoted phrase always passes).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import httpx

from runner.checks.judge import JUDGE_MARKER, REPLY_INSTRUCTION, RUBRIC_HEADING, message_heading
from runner.spec.tokens import CHARS_PER_TOKEN, MESSAGE_OVERHEAD_TOKENS, text_tokens

_WORDS = (
    "language models predict the next token from context and the answer depends on "
    "the whole history sent with each request so every turn carries what came before "
    "smaller models trade breadth for speed and cost while larger ones know more "
    "this offline reply is deterministic and exists so runs and tests need no network"
).split()


def _usage_tokens(text: str) -> int:
    """The tokens the offline backend reports for ``text``: the shared estimate, at least one."""
    return max(1, text_tokens(text))


class OfflineBackend(httpx.AsyncBaseTransport):
    """Answers ``POST .../chat/completions`` like an OpenAI-compatible server."""

    def __init__(self) -> None:
        self.requests = 0
        """How many chat requests it has answered."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer one request without any I/O."""
        await request.aread()
        if request.method != "POST" or not request.url.path.endswith("/chat/completions"):
            return _error(404, f"no route for {request.method} {request.url.path}", "not_found")
        try:
            body = json.loads(request.content)
        except ValueError:
            return _error(400, "request body is not valid JSON", "invalid_request_error")
        problem = _check_body(body)
        if problem:
            return _error(400, problem, "invalid_request_error")
        self.requests += 1
        if body.get("stream"):
            return httpx.Response(
                200,
                content=stream_events(answer(body)),
                headers={"Content-Type": "text/event-stream"},
            )
        return httpx.Response(200, json=answer(body))


def _check_body(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "'model' is required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            return f"messages[{i}] must have 'role' and 'content'"
        if "content" not in message and not message.get("tool_calls"):
            return f"messages[{i}] must have 'role' and 'content'"  # or tool calls
    return None


def answer(body: dict[str, Any]) -> dict[str, Any]:
    """The deterministic chat-completions answer to a valid request body."""
    messages: list[dict[str, Any]] = body["messages"]
    request = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("ascii")).hexdigest()
    user_turns = sum(1 for m in messages if m.get("role") == "user")
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    asked = _text_of(last_user["content"]) if last_user else ""
    asked = " ".join(asked.split())
    tool = _tool_to_call(body)
    if tool is not None:
        return _completion(body, digest, None, "tool_calls", [_tool_call(tool, asked, digest)])
    if len(asked) > 80:
        asked = asked[:79] + "…"

    filler_len = 12 + int(digest[:4], 16) % 28
    start = int(digest[4:8], 16) % len(_WORDS)
    filler = " ".join(_WORDS[(start + i) % len(_WORDS)] for i in range(filler_len))
    results = _tool_results(messages)
    said = f'You asked: "{asked}".' if results is None else f'The tool said: "{results}".'
    text = (
        f"[offline reply {digest[:8]}] Turn {user_turns}, after {len(messages)} "
        f"message{'' if len(messages) == 1 else 's'}. "
        f"{said} {filler.capitalize()}."
    )

    if _is_judge_request(messages):
        text = _judge_verdict(str(messages[-1].get("content", "")))

    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        text = json.dumps({"answer": filler, "turn": user_turns, "id": digest[:8]})

    finish_reason = "stop"
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if isinstance(max_tokens, int) and max_tokens > 0 and _usage_tokens(text) > max_tokens:
        text = text[: max_tokens * CHARS_PER_TOKEN]
        finish_reason = "length"
    return _completion(body, digest, text, finish_reason)


def _completion(
    body: dict[str, Any],
    digest: str,
    text: str | None,
    finish_reason: str,
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A chat.completion whose message is ``text`` (and ``tool_calls``), with its usage."""
    prompt_tokens = sum(
        MESSAGE_OVERHEAD_TOKENS + _usage_tokens(_text_of(m.get("content")))
        for m in body["messages"]
    )
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
        said = "".join(c["function"]["name"] + c["function"]["arguments"] for c in tool_calls)
        completion_tokens = _usage_tokens(said)
    else:
        completion_tokens = _usage_tokens(text or "")
    return {
        "id": f"chatcmpl-offline-{digest[:24]}",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def stream_events(response: dict[str, Any], pieces: int = 4) -> bytes:
    """A chat-completions answer as server-sent events: deltas, usage, ``[DONE]``.

    Tool calls stream as OpenAI streams them: per call, a first fragment with
    its ``index``, ``id``, ``type`` and name, then its arguments in pieces
    (at least two) carrying only the ``index``.
    """
    choice = response["choices"][0]
    message = choice["message"]
    text = message["content"] or ""
    size = max(1, -(-len(text) // pieces))
    base = {"id": response["id"], "object": "chat.completion.chunk", "model": response["model"]}
    deltas: list[dict[str, Any]] = [{"role": "assistant"}]
    deltas += [{"content": text[start : start + size]} for start in range(0, len(text), size)]
    for index, call in enumerate(message.get("tool_calls") or []):
        deltas += _tool_call_deltas(index, call, max(2, pieces))
    events = [{**base, "choices": [{"index": 0, "delta": delta}]} for delta in deltas]
    finish = {"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}
    events.append({**base, "choices": [finish]})
    events.append({**base, "choices": [], "usage": response["usage"]})
    lines = [f"data: {json.dumps(event)}\n\n" for event in events]
    return ("".join(lines) + "data: [DONE]\n\n").encode("utf-8")


def _tool_call_deltas(index: int, call: dict[str, Any], pieces: int) -> list[dict[str, Any]]:
    """The deltas of one tool call: its head, then its arguments in ``pieces`` fragments."""
    arguments: str = call["function"]["arguments"]
    head = {"id": call["id"], "type": call["type"], "function": {"name": call["function"]["name"]}}
    deltas: list[dict[str, Any]] = [
        {
            "tool_calls": [
                {"index": index, **head, "function": {**head["function"], "arguments": ""}}
            ]
        }
    ]
    size = max(1, -(-len(arguments) // pieces))
    for start in range(0, max(1, len(arguments)), size):
        fragment = {"index": index, "function": {"arguments": arguments[start : start + size]}}
        deltas.append({"tool_calls": [fragment]})
    return deltas


def _tool_to_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function the answer calls, when the last message is the user's; else None.

    The first declared one, or the one ``tool_choice`` names; none for ``"none"``.
    """
    tools = body.get("tools")
    if not isinstance(tools, list) or body["messages"][-1].get("role") != "user":
        return None
    functions: list[dict[str, Any]] = [
        t["function"]
        for t in tools
        if isinstance(t, dict)
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
    ]
    choice = body.get("tool_choice")
    if not functions or choice == "none":
        return None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        named = [f for f in functions if f["name"] == choice["function"].get("name")]
        functions = named or functions
    return functions[0]


def _tool_call(function: dict[str, Any], asked: str, digest: str) -> dict[str, Any]:
    """One call of ``function``, its arguments built from its required parameters.

    A string gets the last word of the user's message (``Paris`` in "What's
    the weather in Paris?"), or the property's name when the message has no word.
    """
    words = re.findall(r"[^\W\d_]+", asked)
    word = words[-1] if words else None
    parameters = function.get("parameters")
    schema = parameters if isinstance(parameters, dict) else {}
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = schema.get("required")
    arguments = {
        name: _argument(properties.get(name), word or name)
        for name in (required if isinstance(required, list) else [])
        if isinstance(name, str)
    }
    text = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
    return {
        "id": f"call_{digest[:24]}",
        "type": "function",
        "function": {"name": function["name"], "arguments": text},
    }


_BY_TYPE: dict[str, Any] = {
    "integer": 1,
    "number": 1.0,
    "boolean": True,
    "array": [],
    "object": {},
    "null": None,
}


def _argument(schema: Any, word: str) -> Any:
    """A value for one property: its enum's first value, else one of its type."""
    if not isinstance(schema, dict):
        return word
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    return _BY_TYPE.get(kind, word) if isinstance(kind, str) else word


def _tool_results(messages: list[dict[str, Any]]) -> str | None:
    """The content of the tool messages that end the history, joined; None if it ends otherwise."""
    results: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.insert(0, " ".join(_text_of(message.get("content")).split()))
    if not results:
        return None
    said = "; ".join(results)
    return said if len(said) <= 200 else said[:199] + "…"


def _is_judge_request(messages: list[dict[str, Any]]) -> bool:
    first = messages[0]
    return first.get("role") == "system" and str(first.get("content", "")).startswith(JUDGE_MARKER)


def _judge_verdict(prompt: str) -> str:
    """The offline judge: pass when every quoted phrase of the rubric is in the answer."""
    conversation, _, rubric = prompt.partition(f"\n\n{RUBRIC_HEADING}\n")
    rubric = rubric.rsplit(f"\n\n{REPLY_INSTRUCTION}", 1)[0]
    answer = conversation.rpartition(f"{message_heading('assistant')}\n")[2].lower()
    missing = [p for p in re.findall(r'"([^"]+)"', rubric) if p.lower() not in answer]
    if missing:
        reason = f"the answer does not mention {', '.join(repr(p) for p in missing)}"
        return json.dumps({"pass": False, "reason": reason})
    return json.dumps({"pass": True, "reason": "the answer meets the rubric"})


def _text_of(content: Any) -> str:
    """The text of a message's content, whether a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return "" if content is None else str(content)


def _error(status: int, message: str, code: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message, "type": code, "code": code}})
