"""Queue detection: how long answers waited in the server's queue, from the client's clock.

llama.cpp (one slot by default), Ollama (``OLLAMA_NUM_PARALLEL``), vLLM
(``max_num_seqs``) and ``transformers serve`` never refuse: what they cannot
serve yet waits in a queue. The client sees only latency, and latency alone
says little, because answers differ in length: a 900-token answer takes ten
times as long as a 90-token one with no queue at all. Comparing raw latency
with the minimum seen (Vegas, Gradient2, Envoy's adaptive concurrency) would
read every long answer as congestion.

**The signal: each answer's wait, bounded from below.** A server's own time
for an answer grows with its length: ``s(t) = a + b*t`` for ``t`` completion
tokens, with ``a, b >= 0`` unknown (the prompt's cost is folded into
``a``). Every latency ever measured lies on or above that line, queued or
not. :class:`Envelope` keeps the lower convex hull of the points
``(tokens, latency)``. The line lies below the hull between its vertices,
below any point at a larger size (it rises, as ``b >= 0``), and below any
point at a smaller size scaled in proportion to the tokens (it rises no
faster than that, as ``a >= 0``); the least of these at a size is the
envelope there. So the envelope is an *upper* bound on
the server's own time for any length, and ``latency - envelope(tokens)`` a
*lower* bound on the time the answer waited: it never reports a queue that
is not there (jitter aside), only underestimates one until answers of
similar length were seen unqueued. With ``--stream``, time to the first
token is a second bound of the same kind (a wait plus a prefill that grows
with the prompt: an envelope over prompt tokens); the larger of the two
bounds is still a lower bound.

**From waits to the server's parallelism.** Little's law: of ``n``
requests in flight, those in service are ``n * S / (S + W)`` for mean
service time ``S`` and mean wait ``W``. A server with ``K`` slots fed ``n >
K`` requests shows ``W / S = (n - K) / K``, so ``W / S`` (the *queue
ratio*) says how far past the server's parallelism we are, whatever the
answers' lengths, and ``n * S / (S + W)`` estimates ``K``.
:class:`QueueWatch` keeps both as moving averages over the last answers;
``limiter.py`` grows the limit while the ratio stays low and cuts it to
one and a half times the estimated ``K`` when it rises past
:data:`HIGH_RATIO` (requests waiting most of a service time), which keeps
``n`` between ``K`` and ``2K``: every slot busy, a short queue, no timeouts.
Waits are measured against at least :data:`NOISE_S` of service: a busy
client's own event-loop lag, or a stall, delays every answer it reads and
would look like a queue on a fast server, while waits that short cannot
make anything time out.

**Minimum latency, re-measured at low concurrency.** At one or two slots
every request queues behind the others, so no answer shows the server's own
time, and the envelope stays loose; the limiter then lets one request in a
few go alone (a probe) to measure it. The envelope only goes down as faster
answers come, so a server that becomes slower for good (other users,
thermal throttling) looks queued, and the limit falls. A request sent while
nothing else of ours was in flight waited behind nothing of ours: when such
an answer is well above the envelope, the envelope is stale and starts
again from it.

**A round sent together.** Answer by answer, the envelope has too few
points early on to bound a wait (one point says nothing). The requests
``-j auto`` opens with are sent at once, so their answers can be judged
together once all are in (:func:`served_at_once`): served side by side,
their latencies lie on one line rising with size; served one behind
another, they climb in the order they were taken, whatever their sizes.
``limiter.py`` jumps on the first and ramps slowly on the second.

Assumed: the server serves in arrival order (FIFO) and nothing else loads
it; another client's queue looks like ours and lowers the limit, which is
the safe direction.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

NOISE_S = 0.25
"""Service time waits are measured against at least: shorter waits are jitter, not a queue."""
LOW_RATIO = 0.25
"""Queue ratio below which the server is not queueing (the limit may grow)..."""
SETTLED_RATIO = 0.1
"""...and below which it must stay for the limit to grow once a queue was seen: near the
server's parallelism, one request more already waits (a queue of one at one slot)."""
HIGH_RATIO = 0.75
"""Queue ratio above which requests queue: the limit is cut."""
HEADROOM = 1.5
"""A cut sets the limit to this many times the estimated parallel slots: enough queued
that a slot never idles on the client's turnaround, little enough that nothing times out."""
SMOOTHING = 0.25
"""Weight of each new answer in the moving averages."""


class Envelope:
    """An upper bound on a server's own time for an answer, by its size (see the module)."""

    def __init__(self) -> None:
        self.xs: list[float] = []
        """The hull's vertices, by size..."""
        self.ys: list[float] = []
        """...and their times."""

    def __len__(self) -> int:
        return len(self.xs)

    def bound(self, x: float) -> float | None:
        """The longest the server can take for size ``x`` unqueued; None before any point."""
        if not self.xs:
            return None
        # Three bounds on a line below every point, with a, b >= 0: the hull between its
        # vertices; any point at a larger size (the line rises); any point at a smaller
        # size, scaled in proportion (it rises no faster than through the origin).
        best = self._hull_at(x)
        for px, py in zip(self.xs, self.ys, strict=True):
            if px >= x:
                best = min(best, py)
            elif px > 0:
                best = min(best, py * x / px)
        return best

    def _hull_at(self, x: float) -> float:
        """The hull at ``x``, flat left of it and proportional right of it."""
        xs, ys = self.xs, self.ys
        if x <= xs[0]:
            return ys[0]
        if x >= xs[-1]:
            # Proportional growth from the last vertex; from size 0 nothing bounds it.
            return ys[-1] * x / xs[-1] if xs[-1] > 0 else ys[-1]
        i = bisect.bisect_right(xs, x)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (x - x0) / (x1 - x0)

    def add(self, x: float, y: float) -> None:
        """Take in a measured point; the hull keeps only points on its lower side."""
        if len(self.xs) >= 2 and self.xs[0] < x < self.xs[-1] and y >= self._hull_at(x):
            return  # above the hull: changes nothing
        points = sorted({*zip(self.xs, self.ys, strict=True), (x, y)})
        hull: list[tuple[float, float]] = []
        for px, py in points:
            if hull and hull[-1][0] == px:
                continue  # same size: the lower time came first in the sort
            while len(hull) >= 2 and _turns_up(hull[-2], hull[-1], (px, py)):
                hull.pop()
            hull.append((px, py))
        self.xs = [p[0] for p in hull]
        self.ys = [p[1] for p in hull]

    def restart(self, x: float, y: float) -> None:
        """Forget every point but this one (the old ones are too fast to be true now)."""
        self.xs, self.ys = [x], [y]


def _turns_up(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> bool:
    """Whether ``b`` lies on or above the segment from ``a`` to ``c`` (not a lower-hull vertex)."""
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]) <= 0


@dataclass(frozen=True, slots=True)
class Answer:
    """What one answer says about the server's queue."""

    latency_s: float
    """From sending to the whole answer."""
    tokens: float
    """Completion tokens (or an estimate from the answer's length)."""
    prompt_tokens: float = 0.0
    """Prompt tokens, when the usage said."""
    first_token_s: float | None = None
    """With streaming: from sending to the first token."""


@dataclass(frozen=True, slots=True)
class Reading:
    """The queue as the latest answers show it."""

    ratio: float
    """Mean wait over mean service time (0: no queue)."""
    slots: float
    """Estimated requests the server serves at once."""
    answers: int
    """Answers averaged since the last :meth:`QueueWatch.restart`."""
    latest: float = 0.0
    """The queue ratio of the latest answer alone (the averages lag behind it)."""


class QueueWatch:
    """Moving averages of waits, service times and requests in flight, answer by answer."""

    def __init__(self) -> None:
        self.latency = Envelope()
        self.first_token = Envelope()
        self.wait_s = 0.0
        self.service_s = 0.0
        self.typical_service_s = 0.0
        """Mean service time of the latest answers, kept across restarts (0 before any)."""
        self.typical_slots = 0.0
        """Requests served at once as the latest answers showed, kept across restarts."""
        self.in_flight = 0.0
        self.answers = 0

    def wait_of(self, answer: Answer) -> float:
        """A lower bound on the time ``answer`` waited in the server's queue."""
        wait = 0.0
        bound = self.latency.bound(answer.tokens)
        if bound is not None:
            wait = answer.latency_s - bound
        if answer.first_token_s is not None:
            bound = self.first_token.bound(answer.prompt_tokens)
            if bound is not None:
                wait = max(wait, answer.first_token_s - bound)
        return max(0.0, min(wait, answer.latency_s))

    def observe(self, answer: Answer, *, in_flight: int = 1, alone: bool = False) -> Reading:
        """Take in one answer; return the queue as it now reads.

        ``in_flight``: requests of ours in flight when it was sent, itself included;
        ``alone``: none other was, so a FIFO server took it at once.
        """
        wait = self.wait_of(answer)
        service = max(answer.latency_s - wait, NOISE_S)
        if alone and wait > HIGH_RATIO * service:
            # Nothing of ours was ahead of it: the envelope is too fast to be true now.
            self.latency.restart(answer.tokens, answer.latency_s)
            if answer.first_token_s is not None:
                self.first_token.restart(answer.prompt_tokens, answer.first_token_s)
            self.restart()
            wait, service = 0.0, max(answer.latency_s, NOISE_S)
        else:
            self.latency.add(answer.tokens, answer.latency_s)
            if answer.first_token_s is not None:
                self.first_token.add(answer.prompt_tokens, answer.first_token_s)
        weight = max(SMOOTHING, 1.0 / (self.answers + 1))  # the plain mean of the first few
        self.wait_s += weight * (wait - self.wait_s)
        self.service_s += weight * (service - self.service_s)
        self.in_flight += weight * (in_flight - self.in_flight)
        self.answers += 1
        self.typical_service_s = self.service_s
        reading = self.reading(latest=wait / service)
        self.typical_slots = reading.slots
        return reading

    def reading(self, *, latest: float = 0.0) -> Reading:
        """The queue as the averages say now (``latest``: as the latest answer alone says)."""
        if not self.answers:
            return Reading(0.0, 0.0, 0, latest)
        total = self.service_s + self.wait_s
        slots = self.in_flight * self.service_s / total
        return Reading(self.wait_s / self.service_s, slots, self.answers, latest)

    def restart(self) -> None:
        """Forget the averages (the limit was cut: earlier answers say nothing of the new one)."""
        self.wait_s = self.service_s = self.in_flight = 0.0
        self.answers = 0


def served_at_once(answers: Sequence[Answer]) -> bool:
    """Whether answers to requests sent together came back as from a server that served them
    all at once: each in its own service time, none behind another.

    Then every latency is ``s(t) = a + b*t`` of its own size, so the points lie on one
    rising line (within :data:`LOW_RATIO` of it, or of :data:`NOISE_S`). A server that
    serves fewer at once answers them one after another, each behind the ones before: the
    latencies climb in the order the requests were taken, whatever their sizes, and lie
    on no such line but by a rare coincidence of sizes. With streaming, the first tokens
    (over prompt sizes) must lie on one line too.
    """
    if not _on_one_line([(a.tokens, a.latency_s) for a in answers]):
        return False
    firsts = [(a.prompt_tokens, a.first_token_s) for a in answers if a.first_token_s is not None]
    return _on_one_line(firsts)


def _on_one_line(points: Sequence[tuple[float, float]]) -> bool:
    """Whether ``(size, seconds)`` points lie near one line rising with size (see above).

    The line is the chord between the lowest point of the smallest size and the lowest of
    the largest; a flat one when every size is the same. A point more than a quarter of the
    shorter of the two times above it waited; one as far below it says the times do not
    grow with size as a line does.
    """
    if len(points) < 2:
        return True
    low = min(points, key=lambda p: (p[0], p[1]))
    high = min((p for p in points if p[0] == max(q[0] for q in points)), key=lambda p: p[1])
    slope = 0.0 if high[0] == low[0] else max(0.0, (high[1] - low[1]) / (high[0] - low[0]))
    for x, y in points:
        line = low[1] + slope * (x - low[0])
        if abs(y - line) > LOW_RATIO * max(min(y, line), NOISE_S):
            return False
    return True
