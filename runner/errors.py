"""The errors mtrun reports to its users.

Every error a user can cause or meet derives from :class:`RunnerError`; its
message is one line that names what it is about (file, line, conversation,
turn) and says what to do next. Each class carries the exit code it means
(``exit_code``); one handler in ``cli/base.py`` prints the line and exits
with it. The core never prints or exits.

    RunnerError                                                          exit_code
    ├── InputError          bad conversation files, globs, or options        2
    ├── ConfigError         missing key, bad endpoint, bad option value      2
    ├── OutputError         output exists, unwritable, or cannot be resumed  2
    └── APIError            one failed request to the chat API               3
        ├── TransientAPIError   worth retrying: 408/409/429/5xx, network faults, bad bodies
        ├── FatalAPIError       not worth retrying: 400/401/403/404/422 and the like
        └── QuotaExhaustedError a 429 saying the quota or billing is used up: stop the run

An error raised means the command could not do its work, so nothing was
sent (2). Once a run is under way, errors are recorded instead of raised:
an APIError in the conversation's transcript, and an OutputError that stops
the run (the disk filled up) in ``RunResult.output_error``; either makes the
run's exit code 3, decided from its result (``cli/replay.py`` ``exit_code``).

The exit codes themselves are named here, once, beside the errors that
carry them; ``EXIT_CODES_HELP`` in ``cli/base.py`` explains them to users.
"""

from __future__ import annotations

from typing import ClassVar

EXIT_OK = 0
"""Every conversation completed and every expectation passed."""
EXIT_CHECKS_FAILED = 1
"""An expectation failed (a pass rate too low; ``mtrun diff``: a regression)."""
EXIT_USAGE = 2
"""Invalid input or usage; nothing was sent."""
EXIT_FAILED = 3
"""Some conversation failed, or the run stopped early."""
EXIT_INTERNAL = 4
"""A bug in mtrun."""
EXIT_INTERRUPTED = 130
"""Interrupted by Ctrl-C."""


class RunnerError(Exception):
    """Base of every error mtrun reports to its user."""

    exit_code: ClassVar[int] = EXIT_USAGE
    """The command's exit code when this error stops it."""


class InputError(RunnerError):
    """A conversation file, glob or option value is invalid.

    ``location`` is ``path[:line[:column]]``; ``field`` the dotted path of the
    offending value (``turns[2].content``) or empty.
    """

    exit_code: ClassVar[int] = EXIT_USAGE

    def __init__(
        self,
        message: str,
        *,
        path: str = "",
        line: int | None = None,
        column: int | None = None,
        field: str = "",
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.column = column
        self.field = field
        super().__init__(self.render())

    @property
    def location(self) -> str:
        """``path:line:column`` with the parts that are known."""
        parts = [self.path] if self.path else []
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def render(self) -> str:
        """The one-line form shown to the user."""
        head = ": ".join(p for p in (self.location, self.field) if p)
        return f"{head}: {self.message}" if head else self.message


class ConfigError(RunnerError):
    """The run cannot start as configured (no API key, bad base URL, ...)."""

    exit_code: ClassVar[int] = EXIT_USAGE


class OutputError(RunnerError):
    """The transcript output cannot be created, written or resumed."""

    exit_code: ClassVar[int] = EXIT_USAGE


class APIError(RunnerError):
    """One request to the chat API failed.

    ``kind`` is a short machine-readable word (``http_429``, ``connect_error``,
    ``read_timeout``, ``invalid_json``, ...) recorded in transcripts.
    ``retry_after`` is the server's requested wait in seconds, when it gave one.
    ``rate_limits`` is what the refusal's own rate-limit headers said (a
    ``runner.http.ratelimits.RateLimits``, parsed: never the headers themselves), when it
    had any; typed loosely because this module stands on no other layer.
    """

    exit_code: ClassVar[int] = EXIT_FAILED

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        status: int | None = None,
        retry_after: float | None = None,
        rate_limits: object | None = None,
    ) -> None:
        self.message = message
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        self.rate_limits = rate_limits
        super().__init__(message)


class TransientAPIError(APIError):
    """A failure worth retrying after a wait."""


class FatalAPIError(APIError):
    """A failure that retrying cannot fix; the conversation fails at once."""


class QuotaExhaustedError(FatalAPIError):
    """The account's quota or billing is exhausted; no new work should start."""
