"""What the bench server counts, and the figures the benchmark reads from it.

Per request one :class:`RequestTiming` (arrival, status, admission to a slot, finish,
tokens); and a timeline of ``(time, in service, queued)`` at every change, from which
:func:`summarize` derives how many requests the client had at the server over time, as a
time-weighted distribution: the share of the time at each count. "In flight" is the
client's view: requests in service plus requests waiting in the server's queue.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RequestTiming:
    """One request as the server saw it (seconds on the server's clock)."""

    arrived: float
    status: int = 0
    admitted: float | None = None
    finished: float | None = None
    booked_tokens: int = 0
    """Tokens booked against the token limit (prompt + max_tokens), after any refund."""
    used_tokens: int = 0
    """Prompt + completion tokens of the answer."""
    abandoned: bool = False
    """The client closed the connection before the answer was written."""
    service_s: float = 0.0
    """The modelled service time it was given (it held its slot at least this long)."""

    def row(self) -> list[Any]:
        """The JSON form: a list, to keep ``/_stats`` small."""
        return [
            self.arrived,
            self.status,
            self.admitted,
            self.finished,
            self.booked_tokens,
            self.used_tokens,
            self.abandoned,
            self.service_s,
        ]


@dataclass
class Stats:
    """What the server counted since the last reset."""

    started: float
    requests: int = 0
    ok: int = 0
    refused_rate: int = 0
    refused_tokens: int = 0
    refused_capacity: int = 0
    abandoned: int = 0
    max_in_flight: int = 0
    """Most requests in service at once."""
    max_queued: int = 0
    records: list[RequestTiming] = field(default_factory=list)
    timeline: list[tuple[float, int, int]] = field(default_factory=list)
    """``(time, in service, queued)`` after every change."""

    def note(self, now: float, in_service: int, queued: int) -> None:
        """Record the counts after a change."""
        self.max_in_flight = max(self.max_in_flight, in_service)
        self.max_queued = max(self.max_queued, queued)
        self.timeline.append((now, in_service, queued))


def occupancy(timeline: list[tuple[float, int, int]], start: float, end: float) -> dict[int, float]:
    """Share of ``[start, end)`` spent at each count of requests in service + queued."""
    shares: dict[int, float] = {}
    if end <= start:
        return shares
    level, at = 0, start
    for t, in_service, queued in timeline:
        if t > at:
            lo, hi = max(at, start), min(t, end)
            if hi > lo:
                shares[level] = shares.get(level, 0.0) + hi - lo
        level, at = in_service + queued, max(at, t)
    if end > at:
        shares[level] = shares.get(level, 0.0) + end - max(at, start)
    return {k: v / (end - start) for k, v in sorted(shares.items())}


def quantile(shares: dict[int, float], q: float) -> int:
    """The smallest count at or below which ``q`` of the time was spent."""
    total = 0.0
    for level, share in sorted(shares.items()):
        total += share
        if total >= q - 1e-9:
            return level
    return max(shares) if shares else 0


def per_second(times: list[float], start: float) -> list[int]:
    """How many of ``times`` fell in each whole second from ``start``."""
    if not times:
        return []
    out = [0] * (math.floor(max(times) - start) + 1)
    for t in times:
        out[max(0, math.floor(t - start))] += 1
    return out


def peak_per_second(timeline: list[tuple[float, int, int]], start: float) -> list[int]:
    """The most requests in service + queued during each whole second from ``start``."""
    out: list[int] = []
    level = 0
    for t, in_service, queued in timeline:
        second = max(0, math.floor(t - start))
        while len(out) < second:
            out.append(level)  # a second with no change holds the level it started with
        new = in_service + queued
        if len(out) == second:  # the old level held from the second's start, if before t
            out.append(level if t - start > second else new)
        out[second] = max(out[second], new)
        level = new
    return out


def held_over_pct(records: list[RequestTiming]) -> float | None:
    """How much longer than modelled the answered requests held their slots, in %.

    The server's own share of a makespan over its bound: a timer of asyncio's fires up to a
    millisecond late (epoll waits whole milliseconds), and late again when the loop is busy.
    """
    held = [(r.finished - r.admitted, r.service_s) for r in _served(records) if r.service_s > 0]
    modelled = sum(m for _, m in held)
    return 100.0 * (sum(h for h, _ in held) - modelled) / modelled if modelled else None


def handover_ms(records: list[RequestTiming], capacity: int) -> list[float]:
    """How long each freed slot stayed free before the next request took it, in ms.

    A slot freed by an answer is taken by the next request admitted (the slot free longest
    first); the first ``capacity`` admissions find slots never used. With a request ready
    for every freed slot this is the round trip through both processes: the answer written,
    read and recorded, the next request built, sent, read and parsed.
    """
    served = _served(records)
    freed = sorted(r.finished for r in served)
    taken = sorted(r.admitted for r in served)
    free: list[float] = []
    gaps: list[float] = []
    next_freed = 0
    for i, at in enumerate(taken):
        while next_freed < len(freed) and freed[next_freed] <= at:
            heapq.heappush(free, freed[next_freed])
            next_freed += 1
        if i >= capacity and free:
            gaps.append(1000.0 * (at - heapq.heappop(free)))
    return gaps


def _served(records: list[RequestTiming]) -> list[Any]:
    return [r for r in records if r.status == 200 and r.admitted is not None and r.finished]


def summarize(stats: Stats, capacity: int | None = None) -> dict[str, Any]:
    """The figures the benchmark reads: span, per-second counts, in-flight distribution, tokens,
    and (given the server's ``capacity``) how long freed slots stayed free.

    The in-flight distribution is over the middle of the run (from 20% to 90% of the span),
    which leaves out the ramp-up and the tail where the last conversations drain.
    """
    records = stats.records
    if not records:
        return {"span_s": 0.0}
    first = min(r.arrived for r in records)
    last = max(r.finished if r.finished is not None else r.arrived for r in records)
    span = last - first
    settled = occupancy(stats.timeline, first + 0.2 * span, first + 0.9 * span)
    served = [r.finished for r in records if r.status == 200 and r.finished is not None]
    refused = [r.arrived for r in records if r.status == 429]
    return {
        "first_arrival": first,
        "span_s": span,
        "served_per_s": per_second(served, first),
        "refused_per_s": per_second(refused, first),
        "in_flight_settled": {str(k): round(v, 4) for k, v in settled.items()},
        "in_flight_p10": quantile(settled, 0.1),
        "in_flight_p90": quantile(settled, 0.9),
        "in_flight_max": max((s + q for _, s, q in stats.timeline), default=0),
        "in_flight_per_s": peak_per_second(stats.timeline, first),
        "booked_tokens": sum(r.booked_tokens for r in records if r.status == 200),
        "used_tokens": sum(r.used_tokens for r in records if r.status == 200),
        "held_over_pct": held_over_pct(records),
        # Hand-overs mean something only where the slots ran out: below that, a freed
        # slot waits for no one (the zero-latency server has 1,000 of them).
        **_handover(records, capacity if stats.max_in_flight >= (capacity or 0) else None),
    }


def _handover(records: list[RequestTiming], capacity: int | None) -> dict[str, float]:
    gaps = sorted(handover_ms(records, capacity)) if capacity else []
    if not gaps:
        return {}
    return {
        "handover_p50_ms": gaps[len(gaps) // 2],
        "handover_mean_ms": sum(gaps) / len(gaps),
    }
