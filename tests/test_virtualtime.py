"""The virtual clock's one hook into mtrun: it must still see the journal's fsyncs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import virtualtime
from virtualtime import clock, run_virtual

from runner.run.engine import RunConfig, run_batch
from runner.spec.loader import load_conversations


def test_the_loop_sees_the_fsyncs_it_must_wait_for(tmp_path: Path) -> None:
    """If the fsync thread moves to another module, time would jump during fsyncs: fail here."""
    source = tmp_path / "c.yaml"
    source.write_text("id: c\nturns: [Hello, Again]\n", encoding="utf-8")
    config = RunConfig(output=tmp_path / "out.jsonl", base_url="mock://")
    result = run_virtual(
        run_batch(load_conversations([str(source)]), config, sleep=asyncio.sleep, clock=clock)
    )
    assert result.completed == 1
    loop = virtualtime._Timeline.last_loop
    assert loop is not None and loop.thread_futures_seen >= 2  # a turn each, at least
