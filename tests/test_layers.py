"""The import direction between runner's subpackages, read from the source (no imports run).

Every ``import`` in every module under ``runner/`` (at the top, inside
functions, under ``TYPE_CHECKING``) is an edge from the module's layer to the
imported one, and must be allowed by :data:`ALLOWED`. A layer is the first
package under ``runner`` (``runner.http.client`` is in ``http``); the modules
at the top are layers of their own. An entry of ``ALLOWED`` is a layer, or a
dotted module name when only that module of a layer may be used.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

RUNNER = Path(__file__).resolve().parent.parent / "runner"

ALLOWED: dict[str, frozenset[str]] = {
    # The one error tree, the one JSON encoding and the one way to write a count before its
    # noun that every layer shares: they stand on nothing.
    "errors": frozenset(),
    "jsonbytes": frozenset(),
    "words": frozenset(),
    # Check kinds, safe schemas, the judge's prompt and verdict: pure rules over answers.
    "checks": frozenset({"errors", "words"}),
    # The conversation model holds its turns' checks (Turn.expect is a tuple of Check), so
    # spec stands on checks; tokens.py is here so that every layer above may estimate.
    "spec": frozenset({"errors", "words", "checks"}),
    # One HTTP attempt: the offline backend knows the judge's constants, nothing else above.
    "http": frozenset({"errors", "jsonbytes", "words", "spec", "runner.checks.judge"}),
    # The send path over http; fixture files are written with the transcripts' atomic JSON
    # writer (the one entry to drop if that writer moves beside jsonbytes.py).
    "send": frozenset(
        {"errors", "jsonbytes", "words", "spec", "http", "runner.transcripts.jsonio"}
    ),
    # Records on disk: written by the run, read by review and cli. The writer and resume read
    # the conversation model (what a journaled turn must continue), nothing else below them.
    "transcripts": frozenset(
        {"errors", "jsonbytes", "words", "runner.spec.model", "runner.spec.tools"}
    ),
    # A batch run wires spec, checks, the send path, http and the transcript store together.
    "run": frozenset(
        {"errors", "jsonbytes", "words", "spec", "checks", "http", "send", "transcripts"}
    ),
    # Renderers read transcripts only: nothing here sends a request or runs a batch.
    "review": frozenset({"errors", "words", "transcripts"}),
}
"""The layers each layer may import (besides itself). ``cli``, the public API in
``runner/__init__.py`` and ``__main__`` may import any layer; ``from runner import
__version__`` is allowed everywhere."""

TOP = frozenset({"cli", "__init__", "__main__"})
"""Layers that may import anything: the commands and the public Python API."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(RUNNER.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"  # runner itself: the public API
    return parts[1]


def imports(path: Path) -> Iterator[tuple[str, list[str]]]:
    """Each module ``path`` imports, absolute, with the names taken from it."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, [alias.name for alias in node.names]


def allows(entries: frozenset[str], imported: str) -> bool:
    return layer_of(imported) in entries or any(
        imported == entry or imported.startswith(entry + ".") for entry in entries if "." in entry
    )


def edges() -> Iterator[tuple[str, str, list[str]]]:
    for path in sorted(RUNNER.rglob("*.py")):
        for imported, names in imports(path):
            yield module_name(path), imported, names


def violations() -> set[tuple[str, str]]:
    found = set()
    for module, imported, names in edges():
        if imported != "runner" and not imported.startswith("runner."):
            continue
        layer = layer_of(module)
        if layer in TOP or layer_of(imported) == layer:
            continue
        if imported == "runner" and names == ["__version__"]:
            continue
        if not allows(ALLOWED.get(layer, frozenset()), imported):
            found.add((module, imported))
    return found


def test_every_layer_is_in_the_map() -> None:
    layers = {layer_of(module_name(p)) for p in RUNNER.rglob("*.py")}
    assert layers - TOP == set(ALLOWED)


def test_imports_go_one_way() -> None:
    found = violations()
    assert found == set(), "imports against the layer map"


def test_nothing_below_the_cli_imports_click() -> None:
    clicking = {
        module
        for module, imported, _ in edges()
        if imported.split(".")[0] == "click" and layer_of(module) != "cli"
    }
    assert clicking == set()


def test_the_map_has_no_cycle() -> None:
    """Layers form a stack: following allowed imports never leads back to where it started."""

    def reach(layer: str, seen: tuple[str, ...]) -> None:
        for entry in ALLOWED[layer]:
            target = entry if "." not in entry else layer_of(entry)
            assert target not in seen, f"cycle: {' -> '.join((*seen, target))}"
            reach(target, (*seen, target))

    for layer in ALLOWED:
        reach(layer, (layer,))
