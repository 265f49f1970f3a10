"""The API key: found, checked, never shown, and scrubbed from what servers say.

The key leaves mtrun in one place only, the ``Authorization`` header. It is
checked when it is found: a key with a line break, a control or a non-ASCII
character cannot go in a header, and the HTTP library's error would quote
it, so such a key is refused before anything is sent, with a message that
names the variable and not the key. A server may echo the key back (an error
body, a header, an answer); :meth:`ApiKey.scrub` replaces it in every text
that came from outside, before that text is stored or shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner.errors import ConfigError

KEY_ENV_VARS = ("MTRUN_API_KEY", "ARCEE_API_KEY", "OPENAI_API_KEY")
"""Environment variables searched for the API key, in order."""
REDACTED = "[redacted]"
"""What replaces the key in a text that came from a server."""
MIN_SCRUBBED = 8
"""Keys shorter than this are placeholders (``EMPTY``, ``none``, ``x`` for a local server):
scrubbing them would mangle answers that happen to contain the word."""


class ApiKey:
    """An API key that never shows itself in a repr, str, log or traceback."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        problem = _header_problem(value)
        if problem:
            raise ConfigError(
                f"${source} holds {problem}, which cannot be sent in an HTTP header; "
                "set it again to the key alone"
            )
        self._value = value
        self.source = source
        """Name of the environment variable it came from."""

    def reveal(self) -> str:
        """The secret itself, for the Authorization header only."""
        return self._value

    def scrub(self, text: str) -> str:
        """``text`` with every occurrence of the key replaced by ``[redacted]``."""
        if len(self._value) < MIN_SCRUBBED or self._value not in text:
            return text
        return text.replace(self._value, REDACTED)

    def scrub_json(self, value: Any) -> Any:
        """A parsed JSON value with the key scrubbed from every string in it, names too.

        Needed beside :meth:`scrub` on the raw text: JSON can spell the key
        with escapes (``\\u0073k-...``, ``\\/``) that only parsing reveals.
        """
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub(k): self.scrub_json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub_json(v) for v in value]
        return value

    def __repr__(self) -> str:
        return f"ApiKey(from ${self.source})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("an API key cannot be pickled")


def find_api_key(env: Mapping[str, str], names: tuple[str, ...] = KEY_ENV_VARS) -> ApiKey | None:
    """The first non-empty key among ``names`` in ``env``, or None.

    Raises :class:`~runner.errors.ConfigError` for a key that cannot be sent.
    """
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return ApiKey(value, name)
    return None


def _header_problem(value: str) -> str:
    """What makes ``value`` unfit for ``Authorization: Bearer``, without quoting it; or ''."""
    for char in value:
        if char in "\r\n":
            return "a line break"
        if not char.isascii():
            return "a non-ASCII character"
        if char.isspace():
            return "a space"
        if not char.isprintable():
            return "a control character"
    return ""
