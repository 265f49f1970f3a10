"""How often Python's cyclic garbage collector runs while a batch replays.

By default CPython collects the youngest generation every 700 net container
allocations. A turn allocates thousands (the request, the answer, httpx's and
aiohttp's objects, the transcript lines), so a zero-latency batch ran a
collection every few turns, each one walking the survivors: 7-8% of mtrun's
CPU per turn, for garbage that is almost all freed by reference counting
anyway. :func:`fewer_collections` raises that threshold for the run and puts
it back afterwards; cyclic garbage still goes, a few thousand allocations later.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 10_000
"""Net container allocations between two collections of the youngest generation (CPython: 700).

Measured on the zero-latency benchmark (5,000 turns): 525 collections taking 0.44 s
of CPU at 700, 15 taking 0.05 s at 10,000; higher gains nothing more.
"""


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Collect the youngest generation every ``YOUNG_THRESHOLD`` allocations inside the block."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], YOUNG_THRESHOLD), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
