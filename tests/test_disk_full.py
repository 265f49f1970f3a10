"""A full disk or an unwritable output: a clear error, and what was written stays valid."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from click.testing import CliRunner
from helpers import read_jsonl

from runner.cli import main


def write_batch(folder: Path, count: int) -> Path:
    items = [
        {"id": f"c{i:03d}", "turns": [f"question {i} a", f"question {i} b"]} for i in range(count)
    ]
    path = folder / "batch.yaml"
    path.write_text(json.dumps({"conversations": items}))
    return path


def test_a_full_disk_stops_the_run_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    batch = write_batch(tmp_path, 60)
    # The process may write files of at most 40 kB: the transcript fills that "disk".
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))
        from runner.cli import main
        sys.argv = ["mtrun", "--mock", "-j", "2", "-o", "out.jsonl", {str(batch)!r}]
        main()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "mtrun: error: cannot write out.jsonl: File too large" in proc.stderr
    out = tmp_path / "out.jsonl"
    written = read_jsonl(out)  # every line whole: the failed write was taken back
    assert 0 < len(written) < 60

    result = CliRunner().invoke(
        main, ["--mock", "--resume", "-o", str(out), str(batch)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.stderr
    records = read_jsonl(out)
    assert sorted(r["id"] for r in records) == [f"c{i:03d}" for i in range(60)]
    assert {r["status"] for r in records} == {"completed"}


def test_an_output_that_cannot_be_created_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    (tmp_path / "c.yaml").write_text("turns: [Hi]\n")
    result = CliRunner().invoke(
        main, ["--mock", "-o", str(tmp_path / "a-file" / "out.jsonl"), str(tmp_path / "c.yaml")]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("mtrun: error: cannot open ")
    assert "Traceback" not in result.output


def test_a_full_disk_at_the_final_compaction_is_exit_3_with_the_summary(tmp_path: Path) -> None:
    batch = write_batch(tmp_path, 10)
    out = tmp_path / "out.jsonl"
    first = CliRunner().invoke(main, ["--mock", "-q", "-o", str(out), str(batch)])
    assert first.exit_code == 0, first.stderr
    lines = out.read_bytes().splitlines(keepends=True)
    superseded = json.loads(lines[0]) | {"status": "interrupted"}
    out.write_bytes(json.dumps(superseded).encode() + b"\n" + b"".join(lines))
    before = out.read_bytes()
    # Files of at most 1 kB: the compacted copy cannot be written (nothing else is).
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000, 1_000))
        from runner.cli import main
        sys.argv = ["mtrun", "--mock", "--resume", "-o", "out.jsonl", {str(batch)!r}]
        main()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    err = proc.stderr.splitlines()
    assert "10 conversations: 10 completed (10 before this run), 0 failed" in err
    assert err[-1] == (
        "mtrun: error: cannot compact out.jsonl: File too large; it is still valid (a "
        "conversation may appear twice: the last line for an id is the current one); "
        "run the same command again with --resume to compact it"
    )
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if "compacting" in p.name] == []

    again = CliRunner().invoke(main, ["--mock", "--resume", "-q", "-o", str(out), str(batch)])
    assert again.exit_code == 0, again.stderr
    assert out.read_bytes() == b"".join(lines)
