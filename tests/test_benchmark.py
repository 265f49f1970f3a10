"""The benchmark's arithmetic: bounds, sizes, the judged figures and PASS/MISS, workload choice."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from bench_process import run_child, time_limit
from bench_server import ServerConfig
from bench_targets import figures, judge, median_run
from bench_workloads import Target, Workload, lower_bound, sized, workloads
from benchmark import choose


def _convs(*turns: int) -> list[dict[str, Any]]:
    return [{"id": f"c{i}", "turns": [f"c{i} t{t}" for t in range(n)]} for i, n in enumerate(turns)]


def test_bound_is_the_longest_chain_or_the_work_over_the_slots() -> None:
    config = ServerConfig(base_latency=0.5, per_token=0.0, capacity=2)
    assert lower_bound(config, _convs(4, 1, 1), {}) == 2.0  # one chain of 4 x 0.5 s
    assert lower_bound(config, _convs(2, 2, 2, 2), {}) == 2.0  # 8 x 0.5 s over 2 slots


def test_bound_of_a_rate_limit_lets_the_first_burst_through_free() -> None:
    config = ServerConfig(base_latency=0.0, per_token=0.0, capacity=64, rpm=600)  # 10/s, burst 10
    assert lower_bound(config, _convs(*[10] * 11), {}) == pytest.approx(10.0)  # (110 - 10) / 10
    window = ServerConfig(base_latency=0.0, per_token=0.0, rpm=600, limiter="window", window_s=10)
    assert lower_bound(window, _convs(*[10] * 15), {}) == 10.0  # 150 requests: the 2nd window
    assert lower_bound(window, _convs(*[10] * 10), {}) == 0.0  # 100 fit the first one


def test_bound_of_a_token_limit_counts_prompts_and_max_tokens() -> None:
    config = ServerConfig(base_latency=0.0, per_token=0.0, tpm=6000, answer_tokens=4)
    # One turn: "c0 t0" (5 characters: 1 token) + max_tokens 99 = 100 tokens; 2 of them at
    # 100/s with a burst of 100: 1 s.
    assert lower_bound(config, _convs(1, 1), {"max_tokens": 99}) == pytest.approx(1.0)


def test_sized_picks_the_fewest_conversations_that_reach_the_time() -> None:
    config = ServerConfig(base_latency=0.1, per_token=0.0, capacity=64, rpm=1200)
    convs = sized("r", config, 5.0, seed=1)
    assert lower_bound(config, convs, {}) >= 5.0
    assert lower_bound(config, convs[:-1], {}) < 5.0


def _stats(**over: Any) -> dict[str, Any]:
    config = {
        "rpm": 600,
        "burst": None,
        "limiter": "bucket",
        "window_s": 60.0,
        "tpm": None,
        "tpm_burst": None,
    }
    stats = {
        "config": config,
        "requests": 210,
        "ok": 200,
        "refused_rate": 10,
        "refused_tokens": 0,
        "refused_capacity": 0,
        "abandoned": 1,
        "summary": {
            "span_s": 20.0,
            "in_flight_p10": 4,
            "in_flight_p90": 9,
            "in_flight_max": 12,
            "booked_tokens": 30_000,
        },
    }
    stats["config"].update(over)
    return stats


def _row(**over: Any) -> dict[str, Any]:
    return {
        "client": "(d) mtrun",
        "kind": "mtrun",
        "wall_s": 21.0,
        "turns_ok_scaled": 200,
        "scale": 1.0,
        **over,
    }


def test_figures_goodput_beyond_the_burst_refusals_and_in_flight() -> None:
    out = figures(_row(), _stats(), bound=19.0)
    assert out["goodput_pct"] == pytest.approx(95.0)  # (200 - 10) / 20 s / 10 per s
    assert out["refused_pct"] == pytest.approx(100 * 10 / 210)
    assert out["span_ratio"] == pytest.approx(20 / 19)
    assert out["in_flight_range"] == (4, 9)
    assert out["timeouts"] == 1
    assert "token_use_pct" not in out


def test_figures_token_use_against_the_token_limit() -> None:
    out = figures(_row(), _stats(rpm=None, tpm=100_000), bound=None)
    rate = 100_000 / 60  # the burst is one second's worth
    assert out["token_use_pct"] == pytest.approx(100 * (30_000 - rate) / 20 / rate)
    assert "goodput_pct" not in out


def test_targets_pass_or_miss_on_the_rows_they_apply_to() -> None:
    w = Workload(
        "queue-k4",
        "",
        [],
        [],
        targets=[
            Target("in_flight_range", "in", (4, 8)),
            Target("span_ratio", "<=", 1.03, clients=("(d) mtrun -j 4",)),
        ],
    )
    rows = [
        {**_row(), "in_flight_range": (4, 9), "span_ratio": 1.0},
        {**_row(client="(d) mtrun -j 4"), "in_flight_range": (4, 8), "span_ratio": 1.02},
        {**_row(client="(c) AsyncOpenAI", kind="c"), "in_flight_range": (1, 1)},
        {**_row(client="(d) mtrun -j 4"), "in_flight_range": (4, 8), "cut_off_at_s": 50.0},
    ]
    verdicts = [(v["client"], v["figure"], v["result"]) for v in judge(w, rows)]
    assert verdicts == [
        ("(d) mtrun", "in_flight_range", "MISS"),
        ("(d) mtrun -j 4", "in_flight_range", "PASS"),
        ("(d) mtrun -j 4", "in_flight_range", "MISS (stopped)"),  # stopped at its time limit
        ("(d) mtrun -j 4", "span_ratio", "PASS"),
        ("(d) mtrun -j 4", "span_ratio", "MISS (stopped)"),
    ]


def test_a_client_that_crashed_meets_no_target_even_with_empty_figures() -> None:
    """An mtrun that died of an internal error has 0 failed and 0 refused: it must not pass."""
    w = Workload("zerolat", "", [], [], targets=[Target("failed", "==", 0)])
    rows = [
        {**_row(), "failed": 0, "exit_code": 4},  # internal error
        {**_row(), "failed": 0, "exit_code": 0, "summary_read": False},  # died before its summary
        {**_row(), "failed": 0, "exit_code": 3},  # a conversation failed: a measurement
        {**_row(client="(e) floor", kind="e"), "failed": 0, "exit_code": 1},  # a traceback
    ]
    w.targets.append(Target("failed", "==", 0, clients=("(e) floor",)))
    results = [v["result"] for v in judge(w, rows)]
    assert results == [
        "MISS (crashed: exit 4)",
        "MISS (crashed: no summary)",
        "PASS",
        "MISS (crashed: exit 1)",
    ]


def test_repeated_runs_report_the_median_run_whole_and_never_hide_a_crash() -> None:
    runs = [
        {**_row(), "span_ratio": r, "handover_ms": h, "exit_code": 0}
        for r, h in ((1.05, 2.0), (1.03, 9.0), (1.04, 3.0))
    ]
    median = median_run(runs, "span_ratio")
    assert (median["span_ratio"], median["handover_ms"]) == (1.04, 3.0)  # one run's figures
    assert median["repeats"] == [1.05, 1.03, 1.04]
    assert median_run(runs[:2], "span_ratio")["span_ratio"] == 1.03  # even: the lower middle
    died = [*runs, {**_row(), "span_ratio": None, "exit_code": 4}]
    assert median_run(died, "span_ratio")["exit_code"] == 4


@pytest.fixture(scope="module")
def quick() -> dict[str, Workload]:
    """The quick workloads (sizing them from their bounds takes a moment: once per module)."""
    return workloads(quick=True)


def test_only_takes_names_and_globs_and_refuses_unknown_ones(quick: dict[str, Workload]) -> None:
    names = list(quick)
    assert choose(names, ["queue-k1"]) == ["queue-k1"]
    assert choose(names, ["queue-*,mock"]) == ["queue-k1", "queue-k4", "queue-k16", "mock"]
    assert choose(names, None) == names
    with pytest.raises(SystemExit, match="no workload nope"):
        choose(names, ["nope"])


def test_every_issue_target_has_a_workload(quick: dict[str, Workload]) -> None:
    every = quick
    for rpm in (600, 1200):
        for length in ("short", "long"):
            assert f"rate{rpm}-{length}" in every and f"rate{rpm}-{length}-headers" in every
    assert {"tpm-headers", "queue-k1", "queue-k4", "queue-k16", "skewed"} <= set(every)
    figures_judged = {t.figure for w in every.values() for t in w.targets}
    assert {
        "goodput_pct",
        "refused_pct",
        "token_use_pct",
        "in_flight_range",
        "timeouts",
    } <= figures_judged


def test_a_client_past_its_time_limit_is_stopped_with_sigint() -> None:
    script = (
        "import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    raise SystemExit(3)"
    )
    wall, _, rss, code, cut = run_child(
        [sys.executable, "-c", script], limit_s=2.0
    )  # time to start up
    assert cut and code == 3  # it got SIGINT, not SIGKILL, and could clean up
    assert wall < 30 and rss > 0
    assert time_limit(10.0) == 50.0 and time_limit(None) == 600.0
