"""README's guarantees table: every test a row names as its proof exists.

A row such as ``tests/test_x.py::test_a``, ``::test_b`` names test functions
(``::name`` is in the file named before it on the row); a renamed or removed
test would leave a guarantee that nothing holds.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`")


def guarantee_rows() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Guarantees, and the tests that hold them", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and "tests/" in line]


def test_every_test_a_guarantee_names_exists() -> None:
    rows = guarantee_rows()
    assert any("test_crash_loop_tools.py" in row for row in rows)  # the tool chains' row
    assert any("reasoning_details" in row for row in rows)  # the reasoning row
    missing = []
    for row in rows:
        proof = row.rsplit(" | ", 1)[-1]
        current = None
        for path, name in REFERENCE.findall(proof):
            current = path or current
            assert current is not None, f"'::{name}' before any file in: {proof}"
            source = (
                (ROOT / current).read_text(encoding="utf-8") if (ROOT / current).is_file() else ""
            )
            if not source or (name and not re.search(rf"^def {name}\(", source, re.MULTILINE)):
                missing.append(f"{current}::{name}" if name else current)
    assert missing == []
