"""mtrun: replay scripted multi-turn dialogues against OpenAI-compatible chat APIs.

The Python API mirrors the command line::

    import asyncio
    from pathlib import Path

    from runner import RunConfig, load_conversations, run_batch

    conversations = load_conversations(["conversations/"])
    config = RunConfig(output=Path("out.jsonl"), base_url="mock://")
    result = asyncio.run(run_batch(conversations, config))

:class:`RunConfig` takes everything the options do, with the same defaults;
``run_batch(..., on_event=callback)`` reports progress events and
``control=RunControl()`` lets you stop a run cleanly. ``read_transcript``
reads an output back. The command line (``runner.cli``) is a thin layer over
these names.

The names are imported when first used, so ``mtrun --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from runner.errors import (
        APIError,
        ConfigError,
        FatalAPIError,
        InputError,
        OutputError,
        QuotaExhaustedError,
        RunnerError,
        TransientAPIError,
    )
    from runner.run.config import RunConfig
    from runner.run.control import RunControl
    from runner.run.engine import run_batch
    from runner.run.events import Event, RunResult
    from runner.spec.loader import load_conversations
    from runner.spec.model import Conversation
    from runner.transcripts.reader import read_transcript

_HOMES = {
    "load_conversations": "runner.spec.loader",
    "Conversation": "runner.spec.model",
    "RunConfig": "runner.run.config",
    "RunControl": "runner.run.control",
    "run_batch": "runner.run.engine",
    "RunResult": "runner.run.events",
    "Event": "runner.run.events",
    "read_transcript": "runner.transcripts.reader",
    "RunnerError": "runner.errors",
    "InputError": "runner.errors",
    "ConfigError": "runner.errors",
    "OutputError": "runner.errors",
    "APIError": "runner.errors",
    "TransientAPIError": "runner.errors",
    "FatalAPIError": "runner.errors",
    "QuotaExhaustedError": "runner.errors",
}
"""Each public name and the module it lives in."""

__all__ = [
    "APIError",
    "ConfigError",
    "Conversation",
    "Event",
    "FatalAPIError",
    "InputError",
    "OutputError",
    "QuotaExhaustedError",
    "RunConfig",
    "RunControl",
    "RunResult",
    "RunnerError",
    "TransientAPIError",
    "__version__",
    "load_conversations",
    "read_transcript",
    "run_batch",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'runner' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
