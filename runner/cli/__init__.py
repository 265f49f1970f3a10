"""The ``mtrun`` command (see ``base.py``); importing it registers every subcommand."""

from __future__ import annotations

from runner.cli import merge, review, run  # noqa: F401 - importing them registers their commands
from runner.cli.base import main

__all__ = ["main"]
