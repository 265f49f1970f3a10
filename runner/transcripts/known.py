"""What an output holds per conversation id: status, fingerprint and source file, compactly.

The store answers these for every conversation of the output until the run
ends: which are done (resume skips them), whether a conversation changed
since it was recorded (its fingerprint), and the file it came from (named
in errors). A batch of 100,000 conversations keeps them for every one, so
they are columns of one row per id rather than an object per id: the id's
row number in a dict, the status and the source as numbers of texts kept
once each (a batch has a few statuses and files, not one per conversation),
and the fingerprint as the 32 bytes its ``sha256:`` hex digits spell. That
is about 120 bytes an id instead of 250. A fingerprint spelled otherwise (a
transcript is only text; something else may have written it) is kept as it
is, so every answer is the text that was put in.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import NamedTuple

from runner.spec.model import FINGERPRINT_PREFIX

DIGEST_BYTES = 32
"""A SHA-256 digest's length: one fingerprint's share of the digest column."""


class Known(NamedTuple):
    """One conversation as the output holds it."""

    status: str
    """Its status, as its last line says."""
    fingerprint: str
    """The fingerprint of the requests it was recorded with."""
    source: str
    """The conversation file it came from."""


class KnownIds:
    """The ids an output holds, each with its :class:`Known`, in the order first put."""

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}
        self._texts: list[str] = []
        self._text_numbers: dict[str, int] = {}
        self._statuses = array("I")
        self._sources = array("I")
        self._digests = bytearray()
        self._other_fingerprints: dict[int, str] = {}
        """Rows whose fingerprint is not ``sha256:`` and 64 lowercase hex digits."""

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, conv_id: object) -> bool:
        return conv_id in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def put(self, conv_id: str, status: str, fingerprint: str, source: str) -> None:
        """Hold ``conv_id`` as given; an id held already keeps its place in the order."""
        row = self._rows.get(conv_id)
        if row is None:
            row = self._rows[conv_id] = len(self._rows)
            self._statuses.append(0)
            self._sources.append(0)
            self._digests.extend(bytes(DIGEST_BYTES))
        self._statuses[row] = self._number(status)
        self._sources[row] = self._number(source)
        digest = _digest(fingerprint)
        if digest is None:
            self._other_fingerprints[row] = fingerprint
        else:
            self._other_fingerprints.pop(row, None)
            self._digests[row * DIGEST_BYTES : (row + 1) * DIGEST_BYTES] = digest

    def get(self, conv_id: str) -> Known | None:
        """What the output holds for ``conv_id``, or None when it holds nothing."""
        return self[conv_id] if conv_id in self._rows else None

    def __getitem__(self, conv_id: str) -> Known:
        row = self._rows[conv_id]
        fingerprint = self._other_fingerprints.get(row)
        if fingerprint is None:
            digest = self._digests[row * DIGEST_BYTES : (row + 1) * DIGEST_BYTES]
            fingerprint = FINGERPRINT_PREFIX + digest.hex()
        texts = self._texts
        return Known(texts[self._statuses[row]], fingerprint, texts[self._sources[row]])

    def status(self, conv_id: str) -> str | None:
        """The status the output holds for ``conv_id``, or None."""
        row = self._rows.get(conv_id)
        return None if row is None else self._texts[self._statuses[row]]

    def statuses(self) -> Iterator[str]:
        """Every id's status, in the order of the ids."""
        texts = self._texts
        return (texts[number] for number in self._statuses)

    def _number(self, text: str) -> int:
        """``text``'s number in the table of texts, adding it the first time."""
        number = self._text_numbers.get(text)
        if number is None:
            number = self._text_numbers[text] = len(self._texts)
            self._texts.append(text)
        return number


def _digest(fingerprint: str) -> bytes | None:
    """The digest a ``sha256:`` fingerprint spells in lowercase hex, or None for other text."""
    digits = fingerprint.removeprefix(FINGERPRINT_PREFIX)
    if len(digits) != 2 * DIGEST_BYTES or len(digits) == len(fingerprint):
        return None
    try:
        digest = bytes.fromhex(digits)
    except ValueError:
        return None
    return digest if digest.hex() == digits else None  # spelled back exactly, or kept as text
