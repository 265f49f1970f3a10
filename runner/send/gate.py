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
- **So does an endpoint that accepts and never answers.** Requests that
  time out say nothing was answered either, but one timeout costs a whole
  ``--timeout``, so counting to twelve would take many of them. The
  endpoint is down once at least two requests timed out with no answer in
  between and two timeouts' worth of time has passed with no answer: a
  conversation timing out twice in a row (``-j 1``) or a whole wave timing
  out and its retries timing out again (``-j 16``) stops the run within
  about two timeouts, while a slow server that still answers now and then
  resets the count with every answer. The quiet time starts at the last
  answer, or when the first unanswered request was sent, if later (so time
  spent held or paced before it does not count).
- **A queue is not silence.** A server that queues (llama.cpp, Ollama,
  vLLM) keeps working on the requests still in flight at the last answer,
  and on those abandoned on ``--timeout`` after it, before it gets to a
  fresh request: from the client, that looks just like silence. So the
  quiet time starts only once the server could have worked through what was
  in flight at the last answer (its *backlog*: their count times the
  typical service time, over the requests it was seen serving at once;
  ``limiter.py`` tells). An endpoint that never answered has no backlog and
  is still found down within about two timeouts; one that answered and then
  went silent, that much later.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from runner.errors import APIError
from runner.send.retry import is_server_wait
from runner.send.waits import WaitSpans

UNREACHABLE = frozenset(
    {"connect_error", "connect_timeout", "connection_dropped", "network_error", "pool_timeout"}
)
"""Failure kinds that say nothing answered at all."""
UNANSWERED = frozenset({"read_timeout", "write_timeout", "timeout"})
HOLD_SLACK_S = 1e-6
"""What is left of a hold when it is over: a clock that reads the hold's end a rounding error
short of it would otherwise be slept on for that error, again and again, at the same instant."""
"""Failure kinds of a request that reached the endpoint and got no answer in time."""


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
        timeout: float | None = None,
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
        self.timeout = timeout
        """Seconds a request may take (``--timeout``); None: timeouts never mean 'down'."""
        self._unreachable = 0
        self._conversations: set[str] = set()
        self.timed_out = 0
        """Requests that timed out since the last answer."""
        self._quiet_since = 0.0
        self.last_answer = float("-inf")
        """When the last answer arrived (any status)."""
        self.backlog_s = 0.0
        """How long the server may still be busy with what was in flight at the last answer."""
        self.last_error: str | None = None

    async def before_send(self) -> None:
        """Wait while a Retry-After hold is in force."""
        while (wait := self.hold_until - (now := self.clock())) > HOLD_SLACK_S:
            self.waits.add(now, self.hold_until)
            await self.sleep(wait)

    def succeeded(self, *, backlog_s: float | None = None) -> None:
        """An answer arrived: the endpoint is up (``backlog_s``: see :attr:`backlog_s`)."""
        self._unreachable = 0
        self._conversations.clear()
        self.timed_out = 0
        self.last_answer = self.clock()
        if backlog_s is not None:
            self.backlog_s = backlog_s

    def failed(
        self, error: APIError, conversation_id: str, *, sent_at: float | None = None
    ) -> None:
        """Record a failed attempt sent at ``sent_at``: start a hold, count what got no answer.

        Without ``sent_at``, a timed-out request counts as sent one timeout ago.
        """
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
        elif error.kind in UNANSWERED:
            if not self.timed_out:
                sent = self.clock() - (self.timeout or 0.0) if sent_at is None else sent_at
                self._quiet_since = max(sent, self.last_answer + self.backlog_s)
            self.timed_out += 1
            self.last_error = error.message
        else:
            self.succeeded()

    @property
    def unreachable(self) -> bool:
        """Whether connecting keeps failing, for more than one conversation."""
        return self._unreachable >= self.down_after and len(self._conversations) >= 2

    @property
    def unanswered_s(self) -> float:
        """Seconds with requests timing out and nothing answered (0 until two timed out)."""
        if self.timed_out < 2:
            return 0.0
        return max(0.0, self.clock() - self._quiet_since)

    @property
    def unanswering(self) -> bool:
        """Whether the endpoint accepts requests but has stopped answering them."""
        return self.timeout is not None and self.unanswered_s >= 2 * self.timeout

    @property
    def down(self) -> bool:
        """Whether the endpoint looks down for everyone."""
        return self.unreachable or self.unanswering
