"""Benchmark mtrun against issue 14's targets and the usual ways of replaying dialogues.

Each workload (``bench_workloads.py``) runs its conversations through each client
against ``bench_server.py``, started afresh in its own process for every client (so a
client never meets the queue another one left behind):

- (d) ``mtrun`` as a subprocess, with nothing configured (defaults, ``-j auto``) unless
  the row says otherwise; ``--mock`` for the offline workload;
- (a)/(b)/(c), the usual alternatives (``bench_clients.py``), with ``--clients all``;
- (e) the floor (``bench_clients.py``): a bare client that only replays, for what the
  server and the machine allow; run by default, judged by no target; (g) the same
  over asyncio's own streams, without an HTTP library (skewed and zero latency);
- (f) with ``--baseline REV``: REV's mtrun, built once into a cache (``bench_baseline.py``),
  beside each mtrun row of the workloads that have figures of the fourth run, run the same
  way; those figures are then judged against it too, measured in the same run.

Each client runs in its own process, so its CPU time and peak RSS come from
``os.wait4`` (``ru_utime + ru_stime``, ``ru_maxrss``); wall time is measured around the
process, start-up included. Clients start from compiled bytecode, as from an install
(:func:`compiled`), whatever ``PYTHONDONTWRITEBYTECODE`` says here. The server's counts,
per-request timings and figures over time come from ``GET /_stats``; ``bench_targets.py``
turns them into the figure each target is judged by, and prints PASS or MISS beside it.

Usage: ``python scripts/benchmark.py [--quick] [--only NAME ...] [--clients K,...]
[--baseline REV] [--json F] [--markdown F]``; ``--list`` names the workloads and their
clients. Prints one Markdown table per workload and the targets table; writes every figure
to ``--json`` and the tables to ``--markdown``.
"""

from __future__ import annotations

import argparse
import compileall
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench_baseline import USUAL, Baseline, accepted, build, default_cache, with_baseline
from bench_clients import MODEL, client_main, mtrun_options
from bench_process import run_child, time_limit
from bench_targets import (
    crashed,
    figures,
    judge,
    key_figure,
    median_run,
    table,
    verdict_table,
)
from bench_workloads import Workload, lower_bound, workloads

import runner

HERE = Path(__file__).resolve().parent
CLIENT_KINDS = ("a", "b", "c", "e", "f", "g", "mtrun", "mock")
MTRUN_KINDS = ("mtrun", "mock", "f")
"""mtrun's clients (today's, offline, ``--baseline``'s): stopped at the time limit."""


def _write_yaml(w: Workload, convs: list[dict[str, Any]], folder: Path) -> list[Path]:
    """Conversation files mtrun reads (JSON is YAML), ``files_per`` conversations each."""
    folder.mkdir(parents=True, exist_ok=True)
    defaults: dict[str, Any] = {"model": MODEL, **({"params": w.params} if w.params else {})}
    paths = []
    for start in range(0, len(convs), w.files_per):
        path = folder / f"batch-{start // w.files_per:04d}.yaml"
        doc = {"defaults": defaults, "conversations": convs[start : start + w.files_per]}
        path.write_text(json.dumps(doc, indent=1))
        paths.append(path)
    return paths


def _http(url: str, method: str = "GET") -> dict[str, Any]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def _mtrun() -> str:
    found = Path(sys.executable).parent / "mtrun"
    return str(found) if found.exists() else (shutil.which("mtrun") or "mtrun")


def _run_mtrun(
    w: Workload,
    concurrency: int,
    convs: list[dict[str, Any]],
    url: str | None,
    work: Path,
    limit_s: float,
    baseline: Baseline | None = None,
) -> tuple[tuple[float, float, float, int, bool], dict[str, Any]]:
    """Today's mtrun, or ``baseline``'s with the options it has, over the workload."""
    files = _write_yaml(w, convs, work / "conversations")
    summary = work / "summary.json"
    opts = mtrun_options(url, concurrency, w.mtrun_args, work / "out.jsonl", summary)
    exe = _mtrun()
    if baseline is not None:
        opts, exe = accepted(opts, baseline.accepts)[0], str(baseline.mtrun)
    measured = run_child([exe, *opts, *map(str, files)], limit_s)
    s = json.loads(summary.read_text()) if summary.exists() else {}
    outcome = {
        "turns_ok": s.get("turns", 0),
        "failed": s.get("failed", 0) + s.get("interrupted", 0) + s.get("not_started", 0),
        "exit_code": measured[3],
        "summary_read": bool(s),
        "mtrun_rate_limited": s.get("rate_limited"),
        "mtrun_limit_changes": len(s.get("limit_changes", []) or []),
    }
    return measured, outcome


def _run_other(
    kind: str,
    concurrency: int,
    convs: list[dict[str, Any]],
    url: str,
    work: Path,
    sleep: float,
    limit_s: float,
) -> tuple[tuple[float, float, float, int, bool], dict[str, Any]]:
    spec, result = work / "spec.json", work / "result.json"
    spec.write_text(json.dumps(convs))
    cmd = [sys.executable, __file__, "_client", kind, str(spec), url, str(concurrency)]
    measured = run_child([*cmd, str(result), str(sleep)], limit_s)
    outcome = (
        json.loads(result.read_text()) if result.exists() else {"turns_ok": 0, "failed": len(convs)}
    )
    outcome["exit_code"] = measured[3]
    return measured, outcome


def _start_server(w: Workload) -> tuple[subprocess.Popen[str] | None, str | None]:
    if not w.server:
        return None, None
    server = subprocess.Popen(
        [sys.executable, str(HERE / "bench_server.py"), "--port", "0", *w.server],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    return server, server.stdout.readline().strip()


def run_client(
    w: Workload,
    client: tuple[str, str, int, int],
    tmp: Path,
    sleep_factor: float,
    baseline: Baseline | None = None,
    turn: int = 0,
) -> dict[str, Any]:
    """Run one client over the workload against a fresh server; return its row of figures.

    ``turn``: which repeat this is (each has a folder of its own)."""
    label, kind, concurrency, sample = client
    convs = w.convs[::sample]
    scale = sum(len(c["turns"]) for c in w.convs) / sum(len(c["turns"]) for c in convs)
    work = tmp / f"{w.name}-{kind}-{concurrency}" / str(turn)
    work.mkdir(parents=True, exist_ok=True)
    config = w.config
    bound = lower_bound(config, w.convs, w.params) if config else None
    # Only mtrun is stopped at the limit: the alternatives are there to be compared in full.
    limit = time_limit(bound) if kind in MTRUN_KINDS else 3600.0
    server, url = _start_server(w)
    began = time.monotonic()  # CLOCK_MONOTONIC: the server's clock too
    try:
        if kind in MTRUN_KINDS:
            twin = baseline if kind == "f" else None
            measured, outcome = _run_mtrun(w, concurrency, convs, url, work, limit, twin)
        else:
            sleep = 10.0 * sleep_factor
            measured, outcome = _run_other(kind, concurrency, convs, url or "", work, sleep, limit)
        ended = time.monotonic()
        stats = _http(url.removesuffix("/v1") + "/_stats") if url else None
    finally:
        if server is not None:
            server.terminate()
            server.wait()
    wall, cpu, rss, _, cut = measured
    row: dict[str, Any] = {
        "client": label,
        "kind": kind,
        "wall_s": wall * scale,
        "cpu_s": cpu * scale,
        "cut_off_at_s": limit if cut else None,
    }
    row.update(rss_mb=rss, sampled=sample > 1, scale=scale, **outcome)
    row["turns_ok_scaled"] = outcome["turns_ok"] * scale
    row["failed"] = round(outcome.get("failed", 0) * scale)
    row.update(figures(row, stats, bound))
    if stats and "first_arrival" in stats["summary"]:
        first = stats["summary"]["first_arrival"]
        row["lead_in_s"] = first - began  # process start to first request
        row["tail_s"] = ended - (first + stats["summary"]["span_s"])  # last answer to exit
    return row


def run_workload(
    w: Workload,
    tmp: Path,
    sleep_factor: float,
    kinds: set[str],
    baseline: Baseline | None = None,
    repeat: int = 1,
) -> list[dict[str, Any]]:
    """Run every chosen client of the workload, each against its own server; with ``repeat``,
    that many times each, reporting each client's median run (``median_run``)."""
    rows: list[dict[str, Any]] = []
    if not w.convs:
        print(f"  {w.name}: no conversations (its data file is missing), skipped", file=sys.stderr)
        return rows
    chosen = [client for client in w.clients if client[1] in kinds]
    runs: list[list[dict[str, Any]]] = [[] for _ in chosen]
    for turn in range(repeat):  # the clients alternate, so a slow spell hits them alike
        for client, done in zip(chosen, runs, strict=True):
            again = f" (run {turn + 1} of {repeat})" if repeat > 1 else ""
            print(f"  {w.name}: {client[0]}{again} ...", file=sys.stderr, flush=True)
            row = run_client(w, client, tmp, sleep_factor, baseline, turn)
            brief = {
                k: row.get(k)
                for k in ("wall_s", "span_ratio", "goodput_pct", "refused_pct", "failed")
            }
            print(f"    {brief}", file=sys.stderr, flush=True)
            crash = crashed(row)
            if crash:
                print(f"    CRASHED ({crash}): its figures are no measurement", file=sys.stderr)
            done.append(row)
    if repeat == 1:
        return [done[0] for done in runs]
    return [median_run(done, key_figure(w)) for done in runs]


def choose(names: list[str], patterns: list[str] | None) -> list[str]:
    """The workloads ``--only`` names (comma-separated or repeated, globs allowed), in order."""
    if not patterns or "all" in patterns:
        return names
    wanted = [p for arg in patterns for p in arg.split(",") if p]
    unknown = [p for p in wanted if not fnmatch.filter(names, p)]
    if unknown:
        raise SystemExit(f"benchmark: no workload {', '.join(unknown)} (see --list)")
    return [n for n in names if any(fnmatch.fnmatch(n, p) for p in wanted)]


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The benchmark's command line."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a few seconds each)")
    p.add_argument(
        "--only",
        "--workload",
        action="append",
        metavar="NAME",
        help="workload(s) to run: names or globs, comma-separated or repeated; default all",
    )
    p.add_argument("--list", action="store_true", help="name the workloads and exit")
    p.add_argument(
        "--clients",
        default="mtrun,mock,e,g",
        help="comma-separated subset of a,b,c,e,f,g,mtrun,mock, or all (default: mtrun,mock,e,g); "
        "mtrun includes mock (its --mock rows), f is --baseline's mtrun, g the raw floor",
    )
    p.add_argument(
        "--baseline",
        metavar="REV",
        help=f"also run the mtrun of git revision REV (usually {USUAL}, the fourth run's) "
        "beside today's, and judge the fourth run's figures against it too (adds f to --clients)",
    )
    p.add_argument(
        "--baseline-dir",
        type=Path,
        help=f"where --baseline's builds are kept and reused (default {default_cache()})",
    )
    p.add_argument(
        "--sleep-factor",
        type=float,
        default=0.1,
        help="scale of MT-bench's fixed 10 s sleep on error (default 0.1: 1 s)",
    )
    p.add_argument(
        "--repeat",
        type=_positive,
        default=1,
        metavar="N",
        help="run each client N times, alternating, and report and judge each client's median "
        "run by the workload's first figure (default 1)",
    )
    p.add_argument("--json", type=Path, help="write every figure and verdict here")
    p.add_argument(
        "--markdown", type=Path, help="write the tables here, to paste into docs/BENCHMARKS.md"
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Command line of the benchmark."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_client":
        client_main(argv[1:])
        return
    args = parse_args(argv)
    kinds = client_kinds(args.clients, args.baseline)
    baseline = Baseline(args.baseline or "REV")
    if args.baseline and not args.list:
        baseline = build(args.baseline, HERE.parent, args.baseline_dir or default_cache())
    every = {n: with_baseline(w, baseline) for n, w in workloads(args.quick).items()}
    if args.list:
        print(listing(every))
        return
    names = choose(list(every), args.only)
    compiled()
    tmp = Path(tempfile.mkdtemp(prefix="mtrun-bench-"))
    results: dict[str, Any] = {"quick": args.quick, "clients": sorted(kinds), "workloads": {}}
    if baseline.commit:
        results["baseline"] = {"rev": baseline.rev, "commit": baseline.commit}
    verdicts: list[dict[str, Any]] = []
    tables: list[str] = []
    started = time.perf_counter()
    try:
        for name in names:
            w, begun = every[name], time.perf_counter()
            rows = run_workload(w, tmp, args.sleep_factor, kinds, baseline, args.repeat)
            verdicts += judge(w, rows)
            took = f"_({name} took {time.perf_counter() - begun:.0f} s)_\n"
            tables.append(table(w, rows) + repeats_note(w, rows) + "\n" + took)
            print(tables[-1], flush=True)
            results["workloads"][name] = {"title": w.title, "server": w.server, "rows": rows}
            _write(args, results, verdicts, tables)
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"## Targets\n\n{verdict_table(verdicts)}", flush=True)
    passed = sum(v["result"] == "PASS" for v in verdicts)
    print(f"{passed} of {len(verdicts)} targets met; {time.perf_counter() - started:.0f} s in all")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def repeats_note(w: Workload, rows: list[dict[str, Any]]) -> str:
    """Under a table of median runs: every run's key figure, client by client."""
    repeated = [r for r in rows if "repeats" in r]
    if not repeated:
        return ""
    figure = key_figure(w)
    each = "; ".join(
        f"{r['client']}: {', '.join(_brief(v) for v in r['repeats'])}" for r in repeated
    )
    return f"\n_Median of {len(repeated[0]['repeats'])} runs by {figure}: {each}._\n"


def _brief(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else str(value)


def client_kinds(text: str, baseline: str | None) -> set[str]:
    """The client kinds ``--clients`` names: mtrun has mock (``--mock``) in it, and f
    (``--baseline``'s mtrun) is there whenever ``--baseline`` is given."""
    if text == "all":
        kinds = set(CLIENT_KINDS) - ({"f"} if baseline is None else set())
    else:
        kinds = {k for k in text.split(",") if k}
        unknown = sorted(kinds - set(CLIENT_KINDS))
        if unknown:
            raise SystemExit(f"benchmark: no client {', '.join(unknown)} (see --help)")
    if "mtrun" in kinds:
        kinds.add("mock")  # today's mtrun, offline too
    if baseline is not None:
        kinds.add("f")
    elif "f" in kinds:
        raise SystemExit(
            "benchmark: client f is --baseline's mtrun: name a revision with --baseline REV"
        )
    return kinds


def listing(every: dict[str, Workload]) -> str:
    """``--list``: each workload, and its clients by kind (what ``--clients`` chooses)."""
    lines = []
    for name, w in every.items():
        lines.append(f"{name}: {w.title}")
        lines += [f"    {kind:<5} {label}" for label, kind, _, _ in w.clients]
    return "\n".join(lines)


def compiled() -> None:
    """Let clients start from bytecode, as an installed copy of mtrun does.

    pip compiles a package's modules when it installs it; an editable install
    (``pip install -e .``) writes them on its first run, unless
    ``PYTHONDONTWRITEBYTECODE`` is set, as on some CI machines and sandboxes:
    then every start compiles all of ``runner`` again (about 0.15 s here), which
    no user pays. So the clients here write and read bytecode, and ``runner`` is
    compiled once before the first one starts.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False
    compileall.compile_dir(str(Path(runner.__file__).parent), quiet=1)


def _write(
    args: argparse.Namespace,
    results: dict[str, Any],
    verdicts: list[dict[str, Any]],
    tables: list[str],
) -> None:
    """Write what there is so far (a run cut short keeps its figures)."""
    if args.json:
        args.json.write_text(json.dumps({**results, "verdicts": verdicts}, indent=1))
    if args.markdown:
        base = results.get("baseline")
        said = f"(f): mtrun at `{base['rev']}`, commit {base['commit']}.\n\n" if base else ""
        args.markdown.write_text(
            "## Targets\n\n" + said + verdict_table(verdicts) + "\n" + "\n".join(tables)
        )


if __name__ == "__main__":
    main()
