"""What answers a request on the send path: the live API, a fixture folder, or both by purpose.

A :class:`Responder` answers one chat request of a given conversation and
turn; the dispatcher sends every request through one. ``live`` wraps the
client, ``by_purpose`` sends judge requests to another endpoint, and the
fixture folder (``fixtures.py``) records or replays in front of either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from runner.http.client import Completion


class Responder(Protocol):
    """Anything that answers one chat request of a given conversation and turn."""

    async def __call__(
        self, body: Mapping[str, Any], *, conversation_id: str, turn: int, purpose: str
    ) -> Completion: ...


def live(complete: Callable[[Mapping[str, Any]], Awaitable[Completion]]) -> Responder:
    """A responder that sends every request to the API."""

    async def respond(
        body: Mapping[str, Any], *, conversation_id: str, turn: int, purpose: str
    ) -> Completion:
        return await complete(body)

    return respond


def by_purpose(answers: Responder, judge: Responder) -> Responder:
    """Send answer requests to one responder and judge requests to another."""

    async def respond(
        body: Mapping[str, Any], *, conversation_id: str, turn: int, purpose: str
    ) -> Completion:
        chosen = judge if purpose == "judge" else answers
        return await chosen(body, conversation_id=conversation_id, turn=turn, purpose=purpose)

    return respond
