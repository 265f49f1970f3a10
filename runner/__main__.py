"""``python -m runner`` runs the ``mtrun`` command."""

from __future__ import annotations

from runner.cli import main

main()
