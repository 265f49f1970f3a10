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

YOUNG_THRESHOLD = 3_000
"""Net container allocations between two collections of the youngest generation (CPython: 700).

Measured on the zero-latency benchmark (5,000 turns): 525 collections taking 0.44 s
of CPU at 700, 15 taking 0.05 s at 10,000, when the standard library's JSON encoder
still allocated containers of its own for every line. With orjson (no containers)
collections at 10,000 came so seldom that cyclic garbage (aiohttp's and asyncio's)
piled up between them: a 1,000-conversation run peaked at 62 MB RSS instead of 50.
At 3,000 it peaks at 49-51 MB, for 1% more CPU instructions per turn (callgrind).
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
