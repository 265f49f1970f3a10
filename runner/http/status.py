"""What an HTTP status says about retrying: transient, fatal, or the quota is gone.

408, 409, 429 and every 5xx are transient (worth another attempt); other
4xx are fatal; a 402, or an error code that says the quota or billing is
exhausted, stops the run. The client picks the error class here; the retry
loop (``runner.send.retry``) only reads the class.
"""

from __future__ import annotations

from runner.errors import APIError, FatalAPIError, QuotaExhaustedError, TransientAPIError

RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""Statuses below 500 that are worth retrying (every 5xx is, too)."""

QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "quota_exceeded"})
"""Error codes or types that mean the account cannot send more, not "slow down"."""


def classify_status(status: int, *, code: str | None = None) -> type[APIError]:
    """The error class for a non-2xx status and the API's error code or type."""
    if code in QUOTA_CODES or status == 402:
        return QuotaExhaustedError
    if status in RETRYABLE_STATUSES or 500 <= status <= 599:
        return TransientAPIError
    return FatalAPIError
