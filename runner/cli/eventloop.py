"""Which event loop a run from the command line replays on: uvloop's when it is installed.

A turn against a fast server is mostly event-loop work: callbacks, socket
reads and writes, futures. uvloop does that work in C over libuv, where
asyncio's default loop does much of it in Python: 7% fewer instructions per
turn against the zero-latency bench server, and about a fifth less CPU per
request in a loop of requests over loopback (docs/BENCHMARKS.md, "Client CPU
per request"). It is a dependency on every system but Windows, which it
does not support; where it is missing, asyncio's own loop runs the batch.
mtrun asks nothing of the loop that both do not do alike (timers, signal
handlers, sockets, ``call_soon_threadsafe``). Only the command line
chooses: ``runner.run_conversations`` and the tests run on whatever loop
their caller gives them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_on_fast_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on uvloop's loop when uvloop is installed."""
    try:
        import uvloop
    except ImportError:  # Windows, or an install without it
        return asyncio.run(main)
    return uvloop.run(main)
