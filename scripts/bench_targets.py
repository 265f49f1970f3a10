"""The figures each target is judged by, PASS/MISS, and the Markdown tables of a run.

Every figure of a row comes from the server's own counts where the server saw it (span,
refusals, tokens, requests in flight, abandoned requests), and from the client's process
where only the client knows (wall time, CPU, peak RSS, failed conversations):

- ``goodput_pct``: (answered requests - the bucket's burst) / server span / ``rpm / 60``,
  in %: the rate kept beyond what the full bucket gives at the start, so a perfect client
  scores about 100% however short the batch (token-bucket limits only);
- ``refused_pct``: 429s / all requests, in %;
- ``token_use_pct``: (tokens booked by answered requests - the token bucket's burst) /
  server span / (``tpm / 60``), in %, for the same reason;
- ``span_ratio``: server span (first arrival to last answer) / bound; ``wall_ratio``: the
  client's wall time (start-up included) / bound;
- ``timeouts``: requests whose client hung up before the answer (the server's count);
- ``in_flight_range``: the 10th and 90th percentiles, over time, of requests in service or
  queued at the server, between 20% and 90% of the span;
- ``turns_per_s``: answered turns / wall; ``rss_mb``: peak RSS of the client process;
- ``lead_in_s``/``tail_s`` (not judged): client start to first request, last answer to
  client exit, which make up the difference between wall and server span;
- ``held_over_pct``/``handover_ms`` (not judged): how much longer than modelled the server
  held its slots (its own timers), and the median time a freed slot stayed free before the
  next request took it. Between them they say how much of a span over its bound no client
  can take back: a slot is idle for at least one round trip through both processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench_workloads import Target, Workload


def figures(
    row: dict[str, Any], stats: dict[str, Any] | None, bound: float | None
) -> dict[str, Any]:
    """The judged figures of one client's run (``stats``: the server's ``/_stats``)."""
    out: dict[str, Any] = {
        "turns_per_s": row["turns_ok_scaled"] / row["wall_s"] if row["wall_s"] else None
    }
    if bound:
        out["bound_s"] = bound
        out["wall_ratio"] = row["wall_s"] / bound
    if not stats:
        return out
    summary, config = stats["summary"], stats["config"]
    span = summary["span_s"] * row["scale"]
    refused = stats["refused_rate"] + stats["refused_tokens"] + stats["refused_capacity"]
    out.update(
        span_s=span,
        requests=stats["requests"],
        refused_429=refused,
        refused_pct=100.0 * refused / stats["requests"] if stats["requests"] else 0.0,
        timeouts=stats["abandoned"],
        max_in_flight=summary.get("in_flight_max"),
        in_flight_range=(summary.get("in_flight_p10"), summary.get("in_flight_p90")),
        served_per_s=summary.get("served_per_s"),
        refused_per_s=summary.get("refused_per_s"),
        in_flight_per_s=summary.get("in_flight_per_s"),
        in_flight_shares=summary.get("in_flight_settled"),
        tokens_used=summary.get("used_tokens"),
        held_over_pct=summary.get("held_over_pct"),
        handover_ms=summary.get("handover_p50_ms"),
    )
    if bound and span:
        out["span_ratio"] = span / bound
    if config["rpm"] and config["limiter"] == "bucket" and summary["span_s"]:
        rate = config["rpm"] / 60.0
        burst = config["burst"] if config["burst"] is not None else max(1.0, rate)
        out["goodput_pct"] = 100.0 * (stats["ok"] - burst) / summary["span_s"] / rate
    if config["tpm"] and summary["span_s"]:
        rate = config["tpm"] / 60.0
        burst = config["tpm_burst"] if config["tpm_burst"] is not None else max(1.0, rate)
        used = summary["booked_tokens"] - burst
        out["token_use_pct"] = 100.0 * used / summary["span_s"] / rate
        out["tokens_booked"] = summary["booked_tokens"]
    return out


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": lambda v, t: v >= t,
    "<=": lambda v, t: v <= t,
    "<": lambda v, t: v < t,
    "==": lambda v, t: v == t,
    "in": lambda v, t: v[0] is not None and t[0] <= v[0] and v[1] <= t[1],
}


def judge(w: Workload, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One verdict per (target, row it applies to).

    A target against another row of the run (``Target.against``: ``--baseline``'s twin) is
    that row's figure times its ``value``, judged by the same rule as any other; without
    that row in the run (its client not chosen) it is not judged.
    """
    verdicts = []
    for target in w.targets:
        threshold, reference = _threshold(target, rows)
        if threshold is _ABSENT:
            continue
        for row in rows:
            if _applies(target, row):
                verdicts.append(_verdict(w, target, row, threshold, reference))
    return verdicts


_ABSENT = object()
"""The threshold of a target against a row the run does not have."""


def _threshold(target: Target, rows: list[dict[str, Any]]) -> tuple[Any, str | None]:
    """What the target's figure is compared with, and why it cannot be (its reference row)."""
    if not target.against:
        return target.value, None
    ref = next((r for r in rows if r["client"] == target.against), None)
    if ref is None:
        return _ABSENT, None
    if ref.get("cut_off_at_s") is not None:
        return None, "stopped"
    crash = crashed(ref)
    if crash:
        return None, f"crashed: {crash}"
    figure = ref.get(target.figure)
    return (None, "no figure") if figure is None else (figure * target.value, None)


def _verdict(
    w: Workload, target: Target, row: dict[str, Any], threshold: Any, reference: str | None
) -> dict[str, Any]:
    value = row.get(target.figure)
    # A client stopped at its time limit, or one that crashed, did not do the work: it
    # meets no target, even one its empty figures would pass (0 failed, 0 refused).
    stopped = row.get("cut_off_at_s") is not None
    crash = crashed(row)
    ok = (
        not (stopped or crash or reference)
        and value is not None
        and threshold is not None
        and _OPS[target.op](value, threshold)
    )
    shown = f"{target.op} {_show(threshold)}"
    if target.against and threshold is not None:
        shown += f" ({target.value:g} x {_show(threshold / target.value)})"
    verdict = {
        "workload": w.name,
        "client": row["client"],
        "figure": target.figure,
        "value": value,
        "target": shown,
        "source": target.source,
        "result": "PASS" if ok else _miss(stopped, crash, reference),
    }
    if target.against:
        verdict.update(against=target.against, threshold=threshold)
    return verdict


CLEAN_EXITS = {"mtrun": (0, 1, 3), "mock": (0, 1, 3), "f": (0, 1, 3)}
"""Exit codes of a client that did its work (mtrun, today's and ``--baseline``'s: passed, an
expectation failed, a conversation failed); others are 0. A client stopped at its time limit
is told apart by ``cut_off_at_s``."""


def crashed(row: dict[str, Any]) -> str | None:
    """Why the client's run is no measurement (it exited with an error), or None."""
    code = row.get("exit_code")
    if row.get("cut_off_at_s") is not None or code is None:
        return None
    if code not in CLEAN_EXITS.get(row["kind"], (0,)):
        return f"exit {code}"
    if row["kind"] in CLEAN_EXITS and not row.get("summary_read", True):
        return "no summary"
    return None


def _miss(stopped: bool, crash: str | None, reference: str | None = None) -> str:
    if crash:
        return f"MISS (crashed: {crash})"
    if stopped:
        return "MISS (stopped)"
    return f"MISS (reference {reference})" if reference else "MISS"


def _applies(target: Target, row: dict[str, Any]) -> bool:
    if target.clients:
        return row["client"] in target.clients
    return row["kind"] in ("mtrun", "mock")


def _show(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple | list) and len(value) == 2:
        return f"{_show(value[0])}..{_show(value[1])}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 and spec == ".3g" else format(value, spec)
    return str(value)


def verdict_table(verdicts: list[dict[str, Any]]) -> str:
    """The targets of a run side by side: one line per figure judged."""
    lines = [
        "| workload | client | figure | value | target | from | result |",
        "|---|---|---|---:|---|---|---|",
    ]
    for v in verdicts:
        cells = [
            v["workload"],
            v["client"],
            v["figure"],
            _show(v["value"]),
            v["target"],
            v["source"],
        ]
        lines.append("| " + " | ".join([*cells, f"**{v['result']}**"]) + " |")
    return "\n".join(lines) + "\n"


COLUMNS: list[tuple[str, str, str]] = [
    ("wall s", "wall_s", ".1f"),
    ("bound s", "bound_s", ".1f"),
    ("wall/bound", "wall_ratio", ".2f"),
    ("server span s", "span_s", ".1f"),
    ("start-up s", "lead_in_s", ".1f"),
    ("tail s", "tail_s", ".1f"),
    ("span/bound", "span_ratio", ".2f"),
    ("turns/s", "turns_per_s", ".0f"),
    ("goodput % of limit", "goodput_pct", ".1f"),
    ("token limit used %", "token_use_pct", ".1f"),
    ("requests", "requests", ""),
    ("429s", "refused_429", ""),
    ("refused %", "refused_pct", ".1f"),
    ("timeouts", "timeouts", ""),
    ("in flight p10..p90", "in_flight_range", ""),
    ("max in flight", "max_in_flight", ""),
    ("slot held over %", "held_over_pct", ".1f"),
    ("hand-over p50 ms", "handover_ms", ".1f"),
    ("failed convs", "failed", ""),
    ("stopped at s", "cut_off_at_s", ".0f"),
    ("client CPU s", "cpu_s", ".1f"),
    ("peak RSS MB", "rss_mb", ".0f"),
]


def table(w: Workload, rows: list[dict[str, Any]]) -> str:
    """One Markdown table per workload; columns with nothing in them are left out."""
    used = [c for c in COLUMNS if any(r.get(c[1]) is not None for r in rows)]
    turns = sum(len(c["turns"]) for c in w.convs)
    lines = [
        f"### {w.name}: {w.title}",
        "",
        f"{len(w.convs):,} conversations, {turns:,} turns; server: "
        f"`{' '.join(w.server) or 'none (offline backend)'}`"
        + (f"; params `{w.params}`" if w.params else ""),
        "",
        "| client | " + " | ".join(c[0] for c in used) + " |",
        "|---|" + "|".join("---:" for _ in used) + "|",
    ]
    for r in rows:
        lines.append(
            f"| {r['client']} | "
            + " | ".join(_show(r.get(c[1]), c[2] or ".3g") for c in used)
            + " |"
        )
    return "\n".join(lines) + "\n"


def key_figure(w: Workload) -> str:
    """The figure a workload is judged by first: the one ``--repeat`` takes the median run of."""
    return w.targets[0].figure if w.targets else "wall_s"


def median_run(runs: list[dict[str, Any]], figure: str) -> dict[str, Any]:
    """Of one client's repeated runs, the one whose ``figure`` is the median (the lower middle
    of an even count), with every run's ``figure`` beside it as ``repeats``.

    A whole run, not a row of medians, so its figures stay those of one measurement. A run
    that crashed or has no such figure is the one reported: a repeat never hides a failure.
    """
    broken = [r for r in runs if crashed(r) or not isinstance(r.get(figure), int | float)]
    if broken:
        chosen = broken[0]
    else:
        ranked = sorted(runs, key=lambda r: r[figure])
        chosen = ranked[(len(ranked) - 1) // 2]
    return {**chosen, "repeats": [r.get(figure) for r in runs]}
