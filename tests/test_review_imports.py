"""The review and transcripts layers read transcripts only: they never import the run's layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parent.parent / "runner"
RUN_SIDE = ("runner.run", "runner.send", "runner.http", "runner.cli")


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any depth (inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", ["review", "transcripts"])
def test_a_layer_that_reads_transcripts_imports_no_run_send_http_or_cli(layer: str) -> None:
    reaching = {
        f"{path.name}: {name}"
        for path in sorted((RUNNER / layer).glob("*.py"))
        for name in imported(path)
        if name.startswith(RUN_SIDE)
    }
    assert reaching == set()
