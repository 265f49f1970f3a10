"""The batch as the engine runs it: every conversation per model and per repetition.

``--model A --model B`` runs each conversation once per model (ids
``ID@MODEL``), and ``--repeat N`` runs each of those N times (ids ``ID#k``).
:class:`Variants` is that expansion as a sequence that makes each variant
when it is asked for, so 100,000 conversations repeated 10 times cost the
memory of 100,000 specs, not a million copies.

``--model`` wins over a file's ``models:`` (the loader already made those
``ID@MODEL`` copies): given any ``--model``, each such group of copies gives
way to one conversation per ``--model``, so ids always name the models asked
for. A model named twice runs once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import overload

from runner.spec.model import Conversation


class Variants(Sequence[Conversation]):
    """``base`` expanded per ``--model`` (when 2+), then ``repeat`` times; base-major order.

    ``models`` are the ``--model`` values, one or several; see the module docstring.
    """

    def __init__(self, base: Sequence[Conversation], models: Sequence[str], repeat: int) -> None:
        if repeat < 1:
            raise ValueError("repeat must be at least 1")
        asked = tuple(dict.fromkeys(models))
        if asked and any(c.variant_of is not None for c in base):
            base = _without_file_models(base, asked[0] if len(asked) == 1 else None)
        self.base = base
        self.models = asked if len(asked) >= 2 else ()
        self.repeat = repeat
        self._per_base = max(1, len(self.models)) * repeat

    def __len__(self) -> int:
        return len(self.base) * self._per_base

    @overload
    def __getitem__(self, index: int) -> Conversation: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Conversation]: ...

    def __getitem__(self, index: int | slice) -> Conversation | Sequence[Conversation]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("variant index out of range")
        position, rest = divmod(index, self._per_base)
        which_model, k = divmod(rest, self.repeat)
        conv = self.base[position]
        if self.models:
            conv = conv.for_model(self.models[which_model])
        if self.repeat > 1:
            conv = conv.repetition(k + 1)
        return conv

    def __iter__(self) -> Iterator[Conversation]:
        return (self[i] for i in range(len(self)))

    def turn_count(self, index: int) -> int:
        """How many turns variant ``index`` has, without making it."""
        return len(self.base[index // self._per_base].turns)


def _without_file_models(base: Sequence[Conversation], only: str | None) -> list[Conversation]:
    """``base`` with each group of ``models:`` copies made one conversation again.

    With one ``--model`` (``only``) that conversation is its ``ID@MODEL``;
    with several, :class:`Variants` expands it like any other.
    """
    out: list[Conversation] = []
    seen: set[str] = set()
    for conv in base:
        if conv.variant_of is None:
            out.append(conv)
        elif conv.variant_of not in seen:
            seen.add(conv.variant_of)
            single = replace(conv, id=conv.variant_of, model=None, variant_of=None)
            out.append(single.for_model(only) if only is not None else single)
    return out
