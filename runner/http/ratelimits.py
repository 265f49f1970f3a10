"""What an answer's headers say of the server's rate limits, in the forms servers send.

For requests and for tokens: the limit, what remains of it, when it resets and,
where the form names it, the limit's period. The forms, the first that names a
resource winning for it:

- **OpenAI's** (Azure, Groq, most gateways):
  ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``. No period is named
  (a minute at OpenAI and Azure, a day for Groq's requests: ``bucket.py`` tells
  which from the reset). LiteLLM's proxy puts its keys' limits, or its backend's,
  in these names, the reset documented as the time at which the limit resets (a
  moment, read as below). RapidAPI's ``x-ratelimit-requests-limit`` and
  ``-requests-remaining`` are a plan's billing quota, not a rate, and are not read.
- **Windowed names** (Cerebras): ``x-ratelimit-{limit,remaining,reset}-`` then
  ``requests`` or ``tokens`` then ``-second``, ``-minute``, ``-hour`` or ``-day``:
  ``x-ratelimit-remaining-tokens-minute``, ``x-ratelimit-limit-requests-day``.
- **Anthropic's** (its OpenAI-compatible endpoint too):
  ``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``, the reset an
  RFC 3339 moment.
- **Unsuffixed** (Together, Envoy's local rate limit): ``x-ratelimit-limit``,
  ``-remaining``, ``-reset``: requests.
- **Kong's** rate-limiting plugin: ``x-ratelimit-limit-minute``,
  ``x-ratelimit-remaining-minute`` (``-second`` to ``-year``): requests per that
  window, with the reset of the ``RateLimit-*`` trio below when it tells the same
  limit.
- **The IETF draft's** (``draft-ietf-httpapi-ratelimit-headers``): from draft 7 on,
  ``RateLimit-Policy: "name";q=100;w=60`` with ``RateLimit: "name";r=50;t=30``
  (quota, window seconds, remaining, seconds to reset; a policy whose unit ``qu``
  is not requests counts only as ``"tokens"``); before it, and at Kong,
  ``RateLimit-Limit``, ``-Remaining`` and ``-Reset``, the period from a
  ``RateLimit-Policy: 100;w=60`` when there is one.

Durations are read by ``parse_duration`` (``6m0s``, ``20ms``, plain seconds). A
reset given as a moment (Unix seconds or milliseconds, or RFC 3339) becomes the
time from now until it, on the wall clock (``now``). A value that is not a count
or a duration (Azure's ``-1`` among them) is left out, as if not sent: the pacer
then falls back on what the rest says.

**Several windows of one resource** in one answer (a minute's and a day's, as
Cerebras or Kong may send): the one with the least remaining is kept. Every
request draws from all of them alike, so that one runs dry first, and once it is
dry it is the one that refuses; while it has room, the others have more. Each
answer chooses again, so a day's limit nearly spent takes over from a minute's.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import NamedTuple

from runner.http.headers import parse_duration, parse_seconds


@dataclass(frozen=True, slots=True)
class RateLimits:
    """What an answer's rate-limit headers said (None: not given)."""

    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None
    limit_requests: int | None = None
    """Requests per period: per minute at OpenAI and Azure, per day at Groq."""
    limit_tokens: int | None = None
    """Tokens per period: per minute at OpenAI."""
    period_requests_s: float | None = None
    """The requests limit's period, where the headers name it (Cerebras, Kong, the IETF draft)."""
    period_tokens_s: float | None = None
    """The tokens limit's period, where the headers name it."""


class _Window(NamedTuple):
    """One limit as one form told it."""

    limit: int | None
    remaining: int | None
    reset: float | None
    period: float | None = None

    @property
    def said(self) -> bool:
        return self.limit is not None or self.remaining is not None or self.reset is not None


PERIODS = {
    "second": 1.0,
    "minute": 60.0,
    "hour": 3600.0,
    "day": 86400.0,
    "month": 30 * 86400.0,
    "year": 365 * 86400.0,
}
"""The periods windowed header names spell out, in seconds."""

_FIELDS = ("limit", "remaining", "reset")
_RESOURCES = ("requests", "tokens")
_EPOCH_S = 1e9
"""A reset this large is a moment, not a duration (2001 in Unix seconds; 31 years as one)."""
_EPOCH_MS = 1e12

_Family = tuple[int, str, float | None]
"""A form's rank (lower wins), the resource it counts, and the period its names say."""

_OPENAI, _WINDOWED, _ANTHROPIC, _UNSUFFIXED, _KONG, _IETF = range(6)
"""The forms' ranks, in the order of the module's docstring; the IETF draft's structured
pair ranks before its older trio (``_TRIO``)."""
_TRIO: _Family = (_IETF + 1, "requests", None)


def _names() -> dict[str, tuple[_Family, int]]:
    """Every header name of a limit's field: its family and which field (``_FIELDS``)."""
    names: dict[str, tuple[_Family, int]] = {}
    for i, field in enumerate(_FIELDS):
        for resource in _RESOURCES:
            names[f"x-ratelimit-{field}-{resource}"] = ((_OPENAI, resource, None), i)
            for word, period in PERIODS.items():
                windowed = (_WINDOWED, resource, period)
                names[f"x-ratelimit-{field}-{resource}-{word}"] = (windowed, i)
            names[f"anthropic-ratelimit-{resource}-{field}"] = ((_ANTHROPIC, resource, None), i)
        names[f"x-ratelimit-{field}"] = ((_UNSUFFIXED, "requests", None), i)
        if field != "reset":
            for word, period in PERIODS.items():
                names[f"x-ratelimit-{field}-{word}"] = ((_KONG, "requests", period), i)
        names[f"ratelimit-{field}"] = (_TRIO, i)
    return names


_NAMES = _names()
_STRUCTURED = ("ratelimit", "ratelimit-policy")


def parse_rate_limits(headers: Mapping[str, str], *, now: float | None = None) -> RateLimits | None:
    """The rate limits an answer's headers tell, or None when it has none.

    ``now``: the wall clock (Unix seconds) for resets given as a moment.
    """
    said: dict[_Family, list[str | None]] = {}
    structured: dict[str, str] = {}
    for name, value in headers.items():
        low = name.lower()
        known = _NAMES.get(low)
        if known is not None:
            family, field = known
            said.setdefault(family, [None, None, None])[field] = value
        elif low in _STRUCTURED:
            structured[low] = value
    if not said and not structured:
        return None  # most answers: nothing to parse, on every request
    clock = _Clock(now)
    policies = _items(structured.get("ratelimit-policy"))
    current = _items(structured.get("ratelimit"))
    requests, tokens = (_resource(said, policies, current, r, clock) for r in _RESOURCES)
    limits = RateLimits(
        remaining_requests=requests.remaining,
        reset_requests_s=requests.reset,
        remaining_tokens=tokens.remaining,
        reset_tokens_s=tokens.reset,
        limit_requests=requests.limit,
        limit_tokens=tokens.limit,
        period_requests_s=requests.period,
        period_tokens_s=tokens.period,
    )
    return None if limits == RateLimits() else limits


_NONE = _Window(None, None, None)


class _Clock:
    """The wall clock, read once and only if a moment needs it."""

    def __init__(self, now: float | None) -> None:
        self._now = now

    def now(self) -> float:
        if self._now is None:
            self._now = time.time()
        return self._now


_Items = list[tuple[str, dict[str, str]]]
"""A structured-field list as (item, parameters) pairs (:func:`_items`)."""


def _resource(
    said: dict[_Family, list[str | None]],
    policies: _Items,
    current: _Items,
    resource: str,
    clock: _Clock,
) -> _Window:
    """``resource``'s limit from the best-ranked form that names it (``policies`` and
    ``current``: the IETF draft's ``RateLimit-Policy`` and ``RateLimit``, parsed)."""
    ranks = {rank for rank, of, _ in said if of == resource} | ({_IETF} if current else set())
    for rank in sorted(ranks):
        if rank == _IETF:
            window = _ietf(policies, current, clock, resource)
        else:
            window = _least(
                _window(values, period, clock)
                for (r, of, period), values in said.items()
                if r == rank and of == resource
            )
            if rank == _KONG:
                window = _with_trio_reset(window, said.get(_TRIO), clock)
            elif rank == _TRIO[0]:
                window = _with_policy_period(window, policies)
        if window.said:
            return window
    return _NONE


def _window(values: list[str | None], period: float | None, clock: _Clock) -> _Window:
    limit, remaining, reset = values
    return _Window(_count(limit), _count(remaining), _reset(reset, clock), period)


def _least(windows: Iterable[_Window]) -> _Window:
    """Of the windows said, the one with the least remaining (the first, if none says)."""
    said = [w for w in windows if w.said]
    if not said:
        return _NONE
    counted = [w for w in said if w.remaining is not None]
    return min(counted, key=lambda w: w.remaining or 0) if counted else said[0]


_ITEM = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^;,\s]*))((?:\s*;\s*[^;,]*)*)\s*(?:,|$)')
_PARAM = re.compile(r'\s*;\s*([a-z][a-z0-9_*-]*)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*))?')


def _items(raw: str | None) -> _Items:
    """A structured-field list (``"name";q=100;w=60, ...``) as (item, parameters) pairs."""
    if not raw:
        return []
    out: _Items = []
    pos = 0
    while pos < len(raw):
        match = _ITEM.match(raw, pos)
        if match is None or match.end() == pos:
            break
        item = match.group(1) if match.group(1) is not None else match.group(2)
        params = {k: v.strip('"') for k, v in _PARAM.findall(match.group(3))}
        out.append((item, params))
        pos = match.end()
    return out


def _ietf(policies: _Items, current: _Items, clock: _Clock, resource: str) -> _Window:
    """The IETF draft's structured pair: each current value beside its named policy."""
    quota = dict(policies)
    windows = []
    for name, params in current:
        policy = quota.get(name, {})
        if _unit(policy) == resource:
            windows.append(
                _Window(
                    _count(policy.get("q")),
                    _count(params.get("r")),
                    _reset(params.get("t"), clock),
                    _period(policy.get("w")),
                )
            )
    return _least(windows)


def _with_trio_reset(window: _Window, trio: list[str | None] | None, clock: _Clock) -> _Window:
    """Kong's window, with the reset of the ``RateLimit-*`` trio that tells the same limit."""
    if window.reset is not None or trio is None or _count(trio[0]) != window.limit:
        return window
    return window._replace(reset=_reset(trio[2], clock))


def _with_policy_period(window: _Window, policies: _Items) -> _Window:
    """The older drafts' trio, with the window of the ``RateLimit-Policy`` item of its limit."""
    if window.limit is None:
        return window
    for item, params in policies:
        if _count(item) == window.limit:
            return window._replace(period=_period(params.get("w")))
    return window


def _unit(policy: dict[str, str]) -> str | None:
    unit = policy.get("qu", "requests")
    return unit if unit in _RESOURCES else None


def _period(raw: str | None) -> float | None:
    seconds = parse_seconds(raw)
    return seconds if seconds is not None and seconds > 0 else None


def _count(raw: str | None) -> int | None:
    """A limit or remaining value: a whole count, or None."""
    value = parse_seconds(raw)
    return None if value is None else int(value)


def _reset(raw: str | None, clock: _Clock) -> float | None:
    """Seconds until a reset: a duration, or a moment (Unix seconds or ms, RFC 3339)."""
    if raw is None:
        return None
    seconds = parse_duration(raw)
    if seconds is None:
        try:
            when = datetime.fromisoformat(raw.strip())
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return _until(when.timestamp(), clock)
    if seconds >= _EPOCH_MS:
        return _until(seconds / 1000.0, clock)
    if seconds >= _EPOCH_S:
        return _until(seconds, clock)
    return seconds


def _until(moment: float, clock: _Clock) -> float | None:
    """Seconds from now to ``moment`` (0 once it is past), or None if not finite."""
    left = moment - clock.now()
    return max(0.0, left) if math.isfinite(left) else None
