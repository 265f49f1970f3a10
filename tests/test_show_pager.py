"""``mtrun show`` through a pager on a real terminal: colour reaches less as colour."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import read_jsonl


@pytest.mark.parametrize(("less", "seen"), [(None, "-R"), ("-F", "-F -R")])
def test_show_tells_less_to_pass_colours_through(
    tmp_path: Path, less: str | None, seen: str
) -> None:
    (tmp_path / "c.yaml").write_text("id: c\nturns: [Hi]\n")
    env = {k: v for k, v in os.environ.items() if k not in ("LESS", "NO_COLOR", "MTRUN_DEBUG")}
    run = subprocess.run(
        [sys.executable, "-m", "runner", "--mock", "-q", "-o", "t.jsonl", "c.yaml"],
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert run.returncode == 0 and len(read_jsonl(tmp_path / "t.jsonl")) == 1
    # A pager named less that records the LESS it was given, and what it was sent.
    pager = tmp_path / "bin" / "less"
    pager.parent.mkdir()
    pager.write_text('#!/bin/sh\nprintf "%s" "$LESS" > "$0.env"\ncat > "$0.out"\n')
    pager.chmod(0o755)
    if less is not None:
        env["LESS"] = less
    env["PAGER"] = str(pager)
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "runner", "show", "--color", "--pager", "t.jsonl"],
            cwd=tmp_path,
            env=env,
            stdin=secondary,
            stdout=secondary,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    finally:
        os.close(secondary)
        os.close(primary)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "bin" / "less.env").read_text() == seen
    assert "\x1b[" in (tmp_path / "bin" / "less.out").read_text()
