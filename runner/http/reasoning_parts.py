"""Streamed ``reasoning_details`` fragments, merged into the list a non-streamed answer gives.

OpenRouter sends structured reasoning as ``delta.reasoning_details``: each
chunk holds a list of detail objects (``reasoning.text``,
``reasoning.summary``, ``reasoning.encrypted``), each with an ``index``, its
position among the answer's details. One detail arrives in pieces: its text
a fragment at a time under the same ``index``, its ``signature`` often only
in the last piece. A non-streamed answer gives each detail whole, and
OpenRouter requires the list sent back with tool results to be exactly the
details it produced, so the fragments are merged by ``index``:

- a fragment whose ``type`` and ``index`` an earlier one had continues that
  detail; a fragment without an integer ``index`` continues the detail just
  before it when that one has the same ``type`` and no index either;
- the text fields (``text``, ``summary``, ``data``) are concatenated;
- any other field keeps its first value that is not null or empty (a
  ``signature`` that comes empty first and whole at the end is the whole one);
- details come out in the order their first fragment came; anything in the
  list that is not an object is kept as it is, in its place.
"""

from __future__ import annotations

from typing import Any, TypeGuard

TEXT_FIELDS = ("text", "summary", "data")
"""Fields of a reasoning detail whose fragments are concatenated."""


class ReasoningDetailParts:
    """The ``reasoning_details`` of a stream's deltas, gathered by ``index`` (pure, no I/O)."""

    def __init__(self) -> None:
        self._details: list[Any] = []
        self._by_key: dict[tuple[Any, int], dict[str, Any]] = {}
        self.seen = False
        """Whether any delta carried a ``reasoning_details`` list (even an empty one)."""

    def add(self, fragments: list[Any]) -> None:
        """Take in one delta's ``reasoning_details`` list."""
        self.seen = True
        for fragment in fragments:
            if not isinstance(fragment, dict):
                self._details.append(fragment)
                continue
            detail = self._detail_for(fragment)
            if detail is None:
                self._start(fragment)
            else:
                _merge(detail, fragment)

    def merged(self) -> list[Any]:
        """The details as a non-streamed answer gives them."""
        return list(self._details)

    def _detail_for(self, fragment: dict[str, Any]) -> dict[str, Any] | None:
        """The detail ``fragment`` continues, if any."""
        index = fragment.get("index")
        if _is_index(index):
            return self._by_key.get((fragment.get("type"), index))
        last = self._details[-1] if self._details else None
        if (
            isinstance(last, dict)
            and not _is_index(last.get("index"))
            and last.get("type") == fragment.get("type")
        ):
            return last
        return None

    def _start(self, fragment: dict[str, Any]) -> None:
        detail = dict(fragment)
        self._details.append(detail)
        index = fragment.get("index")
        if _is_index(index):
            self._by_key[(fragment.get("type"), index)] = detail


def _merge(detail: dict[str, Any], fragment: dict[str, Any]) -> None:
    """Add one more fragment of a detail to what came before it."""
    for field, value in fragment.items():
        before = detail.get(field)
        if field in TEXT_FIELDS and isinstance(value, str) and isinstance(before, str):
            detail[field] = before + value
        elif before in (None, "") and value not in (None, ""):
            detail[field] = value
        elif field not in detail:
            detail[field] = value


def _is_index(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
