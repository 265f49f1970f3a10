"""kill -9 and Ctrl-C at random moments, resumed every time: the output still comes out right."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path
from typing import Any

from faultserver import FaultServer
from helpers import read_jsonl, start_mtrun, wait_for_requests

from runner.http.mock import answer

COUNT, TURNS, JOBS = 200, 3, 8
KILLS, INTERRUPTS = 20, 3
MODEL = "arcee-ai/AFM-4.5B"


def turn_text(i: int, t: int) -> str:
    return f"crash-loop conversation {i}, turn {t}"


def write_batch(folder: Path) -> Path:
    path = folder / "batch.yaml"
    items = [
        {"id": f"c{i:03d}", "turns": [turn_text(i, t) for t in range(TURNS)]} for i in range(COUNT)
    ]
    path.write_text(json.dumps({"conversations": items}))
    return path


def reference_messages(i: int) -> list[dict[str, Any]]:
    """What conversation i must hold: the offline backend's answers are deterministic."""
    messages: list[dict[str, Any]] = []
    for t in range(TURNS):
        messages.append({"role": "user", "content": turn_text(i, t)})
        reply = answer({"model": MODEL, "messages": list(messages)})
        messages.append(reply["choices"][0]["message"])
    return messages


def test_kill_9_and_ctrl_c_in_a_loop_never_corrupt_or_resend(tmp_path: Path) -> None:
    rng = random.Random(20261124)
    batch = write_batch(tmp_path)
    out = tmp_path / "same.jsonl"
    with FaultServer(latency=(0.005, 0.02)) as server:
        args = ["--base-url", server.base_url, "-j", str(JOBS), "-q", "-o", str(out), str(batch)]

        def seen() -> int:
            return server.count

        kills = interrupts = 0
        finished = False
        for cycle in range(KILLS + INTERRUPTS):
            proc = start_mtrun([*args, "--resume"], tmp_path)
            interrupt = cycle % 7 == 6 and interrupts < INTERRUPTS
            if interrupt:
                # After the run is sending (before that, Ctrl-C is not the run's to handle).
                alive = wait_for_requests(seen, rng.randint(1, 25), proc, within_s=20)
                if alive:
                    proc.send_signal(signal.SIGINT)
                _, err = proc.communicate(timeout=30)
                if not alive:
                    assert proc.returncode == 0, err
                    finished = True
                    break
                assert proc.returncode == 130, err
                assert "Traceback" not in err
                read_jsonl(out)  # every line whole
                assert not out.with_name(out.name + ".journal").exists()
                interrupts += 1
                continue
            if rng.random() < 0.25:
                time.sleep(rng.uniform(0.0, 0.15))  # any moment, even while starting up
            elif not wait_for_requests(seen, rng.randint(1, 40), proc, within_s=20):
                finished = True
                break
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            kills += 1
        if not finished:
            proc = start_mtrun([*args, "--resume"], tmp_path)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
    assert kills >= KILLS and interrupts >= 2, (kills, interrupts)

    records = read_jsonl(out)
    assert sorted(r["id"] for r in records) == [f"c{i:03d}" for i in range(COUNT)]
    assert not out.with_name(out.name + ".journal").exists()
    for record in records:
        assert record["status"] == "completed", record.get("error")
        i = int(record["id"][1:])
        assert record["messages"] == reference_messages(i), record["id"]
        assert [t["index"] for t in record["turns"]] == list(range(TURNS))
    assert server.violations == []
    # Every turn was sent; a turn is sent again only if it was in flight at a kill
    # or a Ctrl-C: at most JOBS per stop.
    assert len(server.per_turn) == COUNT * TURNS
    repeats = sum(n - 1 for n in server.per_turn.values())
    assert repeats <= (kills + interrupts) * JOBS, repeats
