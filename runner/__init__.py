"""mtrun: replay scripted multi-turn dialogues against OpenAI-compatible chat APIs.

The Python API mirrors the command line::

    from runner import load_conversations, RunConfig, run_batch

The command line (``runner.cli``) is a thin layer over these functions.
"""

from __future__ import annotations

__version__ = "0.1.0"
