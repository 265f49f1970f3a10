"""What every request to one endpoint shares: a Retry-After hold and a down detector.

Conversations retry independently, but the endpoint is shared, so two facts
are shared too:

- **Retry-After holds everyone.** When a 429 or 503 says "retry after T",
  no request to that endpoint starts before T, whichever conversation it
  belongs to: the others would only hit the same wall and burn retries.
- **A dead endpoint stops the run.** When requests keep failing to connect
  (refused, DNS, connect timeouts, dropped connections) with no success in
  between, across several conversations, the endpoint is down for everyone:
  the run stops starting work at once, rather than letting every
  conversation exhaust its retries one after another, and leaves a
  resumable output. Any answer, even an error status, proves the endpoint is
  up and resets the count.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from runner.errors import APIError
from runner.pacing import WaitSpans
from runner.retry import is_server_wait

UNREACHABLE = frozenset(
    {"connect_error", "connect_timeout", "connection_dropped", "network_error", "pool_timeout"}
)
"""Failure kinds that say nothing answered at all."""


class EndpointGate:
    """Shared state of one endpoint, consulted around every attempt."""

    def __init__(
        self,
        *,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
        down_after: int = 12,
        max_hold: float = 120.0,
        waits: WaitSpans | None = None,
    ) -> None:
        self.sleep = sleep
        self.clock = clock
        self.down_after = down_after
        """Consecutive unreachable failures (over 2+ conversations) that mean 'down'."""
        self.max_hold = max_hold
        """Longest hold a single Retry-After can impose (``--max-retry-wait``)."""
        self.hold_until = 0.0
        self.waits = waits or WaitSpans()
        """Wall-clock time requests waited on a Retry-After hold (shared with the pacer by the
        dispatcher): ten requests held for the same 5 s count 5 s."""
        self._unreachable = 0
        self._conversations: set[str] = set()
        self.last_error: str | None = None

    async def before_send(self) -> None:
        """Wait while a Retry-After hold is in force."""
        while (wait := self.hold_until - (now := self.clock())) > 0:
            self.waits.add(now, self.hold_until)
            await self.sleep(wait)

    def succeeded(self) -> None:
        """An answer arrived: the endpoint is up."""
        self._unreachable = 0
        self._conversations.clear()

    def failed(self, error: APIError, conversation_id: str) -> None:
        """Record a failed attempt: start a hold, count unreachability."""
        if (
            error.retry_after is not None
            and is_server_wait(error.retry_after)
            and error.status in (429, 503)
        ):
            until = self.clock() + min(error.retry_after, self.max_hold)
            self.hold_until = max(self.hold_until, until)
        if error.kind in UNREACHABLE:
            self._unreachable += 1
            self._conversations.add(conversation_id)
            self.last_error = error.message
        else:
            self.succeeded()

    @property
    def down(self) -> bool:
        """Whether the endpoint looks down for everyone."""
        return self._unreachable >= self.down_after and len(self._conversations) >= 2
