"""Helpers shared by the tests: fake sleeps and a scripted chat server."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from runner.mock import answer


class Sleeps:
    """A fake ``sleep`` that records what it was asked to wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


Responder = Callable[[dict[str, Any], int], httpx.Response | None]


class ChatServer:
    """An ``httpx.MockTransport`` chat server that records every request body.

    ``respond(body, n)`` may return a response for the n-th request (0-based)
    or None for the offline backend's normal answer.
    """

    def __init__(self, respond: Responder | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[httpx.Headers] = []
        self.respond = respond
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        n = len(self.bodies)
        self.bodies.append(body)
        self.headers.append(request.headers)
        if self.respond is not None:
            special = self.respond(body, n)
            if special is not None:
                return special
        return httpx.Response(200, json=answer(body))

    def bodies_for(self, first_user: str) -> list[dict[str, Any]]:
        """Bodies of the conversation whose first user message is ``first_user``."""
        return [b for b in self.bodies if _first_user(b) == first_user]


def _first_user(body: dict[str, Any]) -> str | None:
    for message in body["messages"]:
        if message["role"] == "user":
            return str(message["content"])
    return None


def error(status: int, message: str, code: str | None = None, **headers: str) -> httpx.Response:
    """An OpenAI-style error response."""
    err: dict[str, Any] = {"message": message, "type": "error"}
    if code:
        err["code"] = code
    return httpx.Response(status, json={"error": err}, headers=headers)


def read_jsonl(path: Any) -> list[dict[str, Any]]:
    """Every line of a JSONL file, parsed."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]
