"""Benchmark mtrun against the usual ways of replaying multi-turn dialogues.

Every workload runs the same conversations through each client against
``bench_server.py`` started in its own process:

- (a) ``openai`` sequential: the vendor docs' pattern, one conversation after another,
  the official client with its default retries (``max_retries=2``);
- (b) MT-bench threads: ``ThreadPoolExecutor`` of 8, one conversation per thread, the
  client's own retries off and MT-bench's loop of 16 tries with a fixed sleep on any
  error (10 s times ``--sleep-factor``);
- (c) ``AsyncOpenAI`` + ``asyncio.Semaphore`` + ``asyncio.gather``, default retries;
- (d) ``mtrun`` as a subprocess.

Each client runs in its own process, so its CPU time and peak RSS come from
``os.wait4`` (``ru_utime + ru_stime``, ``ru_maxrss``); wall time is measured
around the process, start-up included. The server's counts and per-request
timings come from ``GET /_stats``.

Usage: ``python scripts/benchmark.py [--quick] [--workload NAME ...]``; prints one
Markdown table per workload and writes every figure to ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MT_BENCH = Path("/work/shared/data/mt_bench_question.jsonl")
MODEL = "bench"

# --------------------------------------------------------------------------- clients
# Run inside a child process: ``benchmark.py _client KIND SPEC URL CONCURRENCY RESULT``.


def _client_openai_sequential(convs: list[dict[str, Any]], url: str, _n: int) -> dict[str, int]:
    import openai

    client = openai.OpenAI(base_url=url, api_key="unused")  # max_retries: default (2)
    ok = failed = 0
    for conv in convs:
        messages: list[dict[str, str]] = []
        try:
            for turn in conv["turns"]:
                messages.append({"role": "user", "content": turn})
                r = client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
                messages.append({"role": "assistant", "content": r.choices[0].message.content})
                ok += 1
        except openai.OpenAIError:
            failed += 1
    return {"turns_ok": ok, "failed": failed}


def _client_mtbench_threads(
    convs: list[dict[str, Any]], url: str, threads: int, sleep: float
) -> dict[str, int]:
    """FastChat's gen_api_answer: API_MAX_RETRY = 16, API_RETRY_SLEEP = 10 (scaled)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import openai

    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    lock = threading.Lock()
    counts = {"turns_ok": 0, "failed": 0}

    def one(conv: dict[str, Any]) -> None:
        messages: list[dict[str, str]] = []
        broken = False
        for turn in conv["turns"]:
            messages.append({"role": "user", "content": turn})
            output = "$ERROR$"
            for _ in range(16):
                try:
                    r = client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
                    output = r.choices[0].message.content or ""
                    break
                except openai.OpenAIError:
                    time.sleep(sleep)
            with lock:
                if output == "$ERROR$":
                    broken = True
                else:
                    counts["turns_ok"] += 1
            messages.append({"role": "assistant", "content": output})
        with lock:
            counts["failed"] += broken

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, convs))
    return counts


def _client_async_semaphore(convs: list[dict[str, Any]], url: str, n: int) -> dict[str, int]:
    import openai

    counts = {"turns_ok": 0, "failed": 0}

    async def main() -> None:
        client = openai.AsyncOpenAI(base_url=url, api_key="unused")  # max_retries: default (2)
        sem = asyncio.Semaphore(n)

        async def one(conv: dict[str, Any]) -> None:
            async with sem:
                messages: list[dict[str, str]] = []
                try:
                    for turn in conv["turns"]:
                        messages.append({"role": "user", "content": turn})
                        r = await client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
                        messages.append(
                            {"role": "assistant", "content": r.choices[0].message.content or ""}
                        )
                        counts["turns_ok"] += 1
                except openai.OpenAIError:
                    counts["failed"] += 1

        await asyncio.gather(*(one(c) for c in convs))
        await client.close()

    asyncio.run(main())
    return counts


def client_main(argv: list[str]) -> None:
    """Entry point of a client child process."""
    kind, spec, url, concurrency, result, sleep = argv
    convs = json.loads(Path(spec).read_text())
    n = int(concurrency)
    if kind == "a":
        out = _client_openai_sequential(convs, url, n)
    elif kind == "b":
        out = _client_mtbench_threads(convs, url, n, float(sleep))
    else:
        out = _client_async_semaphore(convs, url, n)
    Path(result).write_text(json.dumps(out))


# --------------------------------------------------------------------------- workloads


@dataclass
class Workload:
    """Conversations, a server model, and which clients run them how."""

    name: str
    title: str
    convs: list[dict[str, Any]]
    server: list[str]
    """bench_server.py options; None for --mock runs."""
    clients: list[tuple[str, str, int, int]] = field(default_factory=list)
    """(label, kind a|b|c|mtrun|mock, concurrency or 0 for mtrun's default, sample 1/k)."""
    mtrun_args: list[str] = field(default_factory=list)
    warmup_s: float = 10.0
    files_per: int = 1000


def _skewed(n: int, seed: int, long_share: float = 0.05) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    convs = []
    for i in range(n):
        turns = rng.randint(30, 40) if rng.random() < long_share else rng.randint(1, 12)
        convs.append(
            {
                "id": f"c{i:06d}",
                "turns": [
                    f"Conversation {i}, turn {t}: tell me more about item {t}."
                    for t in range(turns)
                ],
            }
        )
    return convs


def _mt_bench() -> list[dict[str, Any]]:
    convs = []
    for line in MT_BENCH.read_text().splitlines():
        q = json.loads(line)
        convs.append({"id": f"mt-bench-{q['question_id']}", "turns": list(q["turns"])})
    return convs


def _short(n: int) -> list[dict[str, Any]]:
    return [{"id": f"s{i:06d}", "turns": [f"Hello {i}.", "And then?"]} for i in range(n)]


def _latency(base: float, per_token: float, capacity: int, *extra: str) -> list[str]:
    return [
        "--base-latency", str(base), "--per-token", str(per_token),
        "--answer-tokens", "100", "--capacity", str(capacity), *extra,
    ]  # fmt: skip


def workloads(quick: bool) -> dict[str, Workload]:
    """Every workload, full size or ``--quick``."""
    sample = 10
    return {
        "mtbench": Workload(
            "mtbench",
            "MT-bench: 80 two-turn dialogues, capacity 32",
            _mt_bench(),
            _latency(0.025, 0.00025, 32) if quick else _latency(0.2, 0.002, 32),
            [
                ("(a) openai sequential", "a", 1, 1),
                ("(b) MT-bench 8 threads", "b", 8, 1),
                ("(c) AsyncOpenAI + Semaphore(32)", "c", 32, 1),
                ("(d) mtrun -j 32", "mtrun", 32, 1),
                ("(d) mtrun (defaults: -j auto)", "mtrun", 0, 1),
                ("(d) mtrun -j auto", "mtrun", -1, 1),
            ],
        ),
        "skewed": Workload(
            "skewed",
            f"Skewed: {150 if quick else 500} conversations, 1-12 turns, 5% 30-40, capacity 32",
            _skewed(150 if quick else 500, seed=7),
            _latency(0.025, 0.00025, 32) if quick else _latency(0.05, 0.0005, 32),
            [
                (f"(a) openai sequential (1/{sample} sample, extrapolated)", "a", 1, sample),
                ("(b) MT-bench 8 threads", "b", 8, 1),
                ("(c) AsyncOpenAI + Semaphore(32)", "c", 32, 1),
                ("(d) mtrun -j 32", "mtrun", 32, 1),
                ("(d) mtrun -j auto", "mtrun", -1, 1),
            ],
        ),
        "ratelimited": Workload(
            "ratelimited",
            f"Rate-limited: server allows {1200 if quick else 600} rpm, nothing configured",
            _skewed(25 if quick else 100, seed=11, long_share=0.0),
            _latency(0.05, 0.0005, 64, "--rpm", "1200" if quick else "600"),
            [
                ("(a) openai sequential", "a", 1, 1),
                ("(b) MT-bench 8 threads", "b", 8, 1),
                ("(c) AsyncOpenAI + Semaphore(8)", "c", 8, 1),
                ("(d) mtrun (defaults)", "mtrun", 0, 1),
            ],
            warmup_s=3.0 if quick else 10.0,
        ),
        "zerolat": Workload(
            "zerolat",
            f"Zero latency: {300 if quick else 1000} conversations x 5 turns, client overhead",
            [
                {"id": f"z{i:05d}", "turns": [f"Zero {i}, turn {t}." for t in range(5)]}
                for i in range(300 if quick else 1000)
            ],
            _latency(0.0, 0.0, 1000),
            [
                ("(a) openai sequential", "a", 1, 1),
                ("(b) MT-bench 8 threads", "b", 8, 1),
                ("(c) AsyncOpenAI + Semaphore(8)", "c", 8, 1),
                ("(d) mtrun (defaults: -j auto)", "mtrun", 0, 1),
            ],
        ),
        "queued": Workload(
            "queued",
            "Queued: one request at a time, answers taking 1/6 of --timeout, nothing configured",
            [
                {"id": f"q{i:03d}", "turns": [f"Queued {i}, turn {t}." for t in range(3)]}
                for i in range(20)
            ],
            _latency(0.5, 0.0, 1),
            [
                ("(d) mtrun (defaults) --timeout 3", "mtrun", 0, 1),
                ("(d) mtrun -j 1 --timeout 3", "mtrun", 1, 1),
            ],
            mtrun_args=["--timeout", "3"],
        ),
        "mock": Workload(
            "mock",
            f"{10_000 if quick else 100_000:,} two-turn conversations through mtrun --mock",
            _short(10_000 if quick else 100_000),
            [],
            [("(d) mtrun --mock", "mock", 0, 1)],
        ),
    }


# --------------------------------------------------------------------------- running


def _write_yaml(convs: list[dict[str, Any]], folder: Path, per_file: int) -> list[Path]:
    """Conversation files mtrun reads (JSON is YAML), ``per_file`` conversations each."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for start in range(0, len(convs), per_file):
        path = folder / f"batch-{start // per_file:04d}.yaml"
        doc = {"defaults": {"model": MODEL}, "conversations": convs[start : start + per_file]}
        path.write_text(json.dumps(doc, indent=1))
        paths.append(path)
    return paths


def _http(url: str, method: str = "GET") -> dict[str, Any]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


_LAUNCHER = (
    "import json, os, sys\n"
    "pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)\n"
    "_, status, u = os.wait4(pid, 0)\n"
    "print(json.dumps([os.waitstatus_to_exitcode(status), u.ru_utime + u.ru_stime, u.ru_maxrss]))\n"
)


def _run_child(cmd: list[str]) -> tuple[float, float, float, int]:
    """Run a process; return (wall s, CPU s, peak RSS MB, exit code) from its rusage.

    A small launcher process spawns it: a child of this (large) process would
    inherit this process's RSS high-water mark into its ``ru_maxrss`` through exec.
    """
    start = time.perf_counter()
    cmd = [shutil.which(cmd[0]) or cmd[0], *cmd[1:]]
    out = subprocess.run(
        [sys.executable, "-S", "-c", _LAUNCHER, *cmd], stdout=subprocess.PIPE, text=True
    ).stdout
    wall = time.perf_counter() - start
    code, cpu, maxrss_kb = json.loads(out.strip().splitlines()[-1])
    return wall, cpu, maxrss_kb / 1024, code


def _mtrun() -> str:
    found = Path(sys.executable).parent / "mtrun"
    return str(found) if found.exists() else (shutil.which("mtrun") or "mtrun")


def lower_bound(w: Workload, convs: list[dict[str, Any]]) -> float | None:
    """Fastest possible makespan under the server's model (no client overhead)."""
    if not w.server:
        return None
    opts = dict(zip(w.server[::2], w.server[1::2], strict=False))
    service = float(opts["--base-latency"]) + float(opts["--per-token"]) * int(
        opts["--answer-tokens"]
    )
    turns = [len(c["turns"]) for c in convs]
    bound = max(max(turns) * service, sum(turns) * service / int(opts["--capacity"]))
    if "--rpm" in opts:
        rate = float(opts["--rpm"]) / 60.0
        bound = max(bound, (sum(turns) - max(1.0, rate)) / rate)
    return bound


def run_client(
    w: Workload,
    label: str,
    kind: str,
    concurrency: int,
    sample: int,
    url: str | None,
    tmp: Path,
    sleep_factor: float,
    server_pid: int | None,
) -> dict[str, Any]:
    """Run one client over the workload; return its row of figures."""
    convs = w.convs[::sample]
    scale = sum(len(c["turns"]) for c in w.convs) / sum(len(c["turns"]) for c in convs)
    work = tmp / f"{w.name}-{kind}-{concurrency}"
    work.mkdir(parents=True, exist_ok=True)
    if url:
        _http(url.removesuffix("/v1") + "/_reset", "POST")
    server_cpu0 = _proc_cpu(server_pid)
    if kind in ("mtrun", "mock"):
        files = _write_yaml(convs, work / "conversations", w.files_per)
        summary = work / "summary.json"
        cmd = [_mtrun(), "-q", "-o", str(work / "out.jsonl"), "--summary-json", str(summary)]
        cmd += ["--mock"] if kind == "mock" else ["--base-url", url or "", "--model", MODEL]
        if concurrency > 0:
            cmd += ["-j", str(concurrency)]
        elif concurrency < 0:
            cmd += ["-j", "auto"]
        wall, cpu, rss, code = _run_child([*cmd, *w.mtrun_args, *map(str, files)])
        s = json.loads(summary.read_text()) if summary.exists() else {}
        outcome = {
            "turns_ok": s.get("turns", 0),
            "failed": s.get("failed", 0) + s.get("interrupted", 0) + s.get("not_started", 0),
            "exit_code": code,
            "mtrun_rate_limited": s.get("rate_limited"),
            "mtrun_limit_changes": len(s.get("limit_changes", []) or []),
        }
    else:
        spec, result = work / "spec.json", work / "result.json"
        spec.write_text(json.dumps(convs))
        sleep = 10.0 * sleep_factor
        cmd = [sys.executable, __file__, "_client", kind, str(spec), url or "", str(concurrency)]
        wall, cpu, rss, code = _run_child([*cmd, str(result), str(sleep)])
        outcome = json.loads(result.read_text()) if result.exists() else {"turns_ok": 0}
        outcome["exit_code"] = code
    server_cpu = _proc_cpu(server_pid) - server_cpu0
    stats = _http(url.removesuffix("/v1") + "/_stats") if url else None
    row: dict[str, Any] = {
        "client": label,
        "wall_s": wall * scale,
        "cpu_s": cpu * scale,
        "rss_mb": rss,
        "server_cpu_s": server_cpu * scale,
        "sampled": sample > 1,
        "scale": scale,
        **outcome,
    }
    row["turns_ok_scaled"] = outcome["turns_ok"] * scale
    row["failed"] = round(outcome.get("failed", 0) * scale)
    bound = lower_bound(w, w.convs)
    if bound:
        row["bound_s"] = bound
        row["ratio"] = row["wall_s"] / bound
    if stats:
        row.update(_server_figures(stats, w, wall))
        if bound and "span_s" in row:
            row["span_s"] *= scale
            row["span_ratio"] = row["span_s"] / bound
    return row


def _server_figures(stats: dict[str, Any], w: Workload, wall: float) -> dict[str, Any]:
    records = stats["records"]
    refused = stats["refused_rate"] + stats["refused_capacity"]
    out: dict[str, Any] = {"requests": stats["requests"], "refused_429": refused}
    out["max_in_flight"] = stats["max_in_flight"]
    done = [r[3] for r in records if r[3] is not None]
    if records and done:
        # Makespan as the server saw it: first arrival to last answer (no process start-up).
        out["span_s"] = max(done) - records[0][0]
    rpm = stats["config"]["rpm"]
    if rpm and records:
        first = records[0][0]
        late = [r for r in records if r[0] >= first + w.warmup_s]
        out["refused_after_warmup_pct"] = (
            100.0 * sum(r[1] == 429 for r in late) / len(late) if late else 0.0
        )
        out["goodput_of_limit"] = (stats["ok"] / wall) / (rpm / 60.0)
    return out


def _proc_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    except Exception:  # psutil missing or process gone: report 0
        return 0.0


def run_workload(
    w: Workload, tmp: Path, sleep_factor: float, only: set[str] | None
) -> list[dict[str, Any]]:
    """Start the server (if any), run every client, stop the server."""
    server = None
    url = None
    if w.server:
        server = subprocess.Popen(
            [sys.executable, str(HERE / "bench_server.py"), "--port", "0", *w.server],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        url = server.stdout.readline().strip()
    rows = []
    try:
        for label, kind, conc, sample in w.clients:
            if only and kind not in only:
                continue
            print(f"  {w.name}: {label} ...", file=sys.stderr, flush=True)
            row = run_client(
                w, label, kind, conc, sample, url, tmp, sleep_factor, server and server.pid
            )
            print(f"    {_brief(row)}", file=sys.stderr, flush=True)
            rows.append(row)
    finally:
        if server is not None:
            server.terminate()
            server.wait()
    return rows


def _brief(row: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in row.items()
        if k != "client"
    )


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    return format(value, spec) if isinstance(value, float) else str(value)


COLUMNS: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = [
    ("client", "", lambda r: r["client"]),
    ("wall s", ".1f", lambda r: r["wall_s"]),
    ("bound s", ".1f", lambda r: r.get("bound_s")),
    ("wall/bound", ".2f", lambda r: r.get("ratio")),
    ("server span s", ".1f", lambda r: r.get("span_s")),
    ("span/bound", ".2f", lambda r: r.get("span_ratio")),
    ("turns/s", ".0f", lambda r: r["turns_ok_scaled"] / r["wall_s"]),
    ("goodput/limit", ".0%", lambda r: r.get("goodput_of_limit")),
    ("429s", "", lambda r: r.get("refused_429")),
    ("429 % after warm-up", ".1f", lambda r: r.get("refused_after_warmup_pct")),
    ("failed convs", "", lambda r: r["failed"]),
    ("client CPU s", ".1f", lambda r: r["cpu_s"]),
    (
        "CPU s / 1k turns",
        ".2f",
        lambda r: 1000 * r["cpu_s"] / r["turns_ok_scaled"] if r["turns_ok_scaled"] else None,
    ),
    ("peak RSS MB", ".0f", lambda r: r["rss_mb"]),
]


def table(w: Workload, rows: list[dict[str, Any]]) -> str:
    """One Markdown table; columns with nothing in them are left out."""
    used = [c for c in COLUMNS if any(c[2](r) is not None for r in rows)]
    turns = sum(len(c["turns"]) for c in w.convs)
    lines = [
        f"### {w.title}",
        "",
        f"{len(w.convs):,} conversations, {turns:,} turns; server: "
        f"`{' '.join(w.server) or 'none (offline backend)'}`",
        "",
        "| " + " | ".join(c[0] for c in used) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(used))) + "|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(c[2](r), c[1]) for c in used) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line of the benchmark."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_client":
        client_main(argv[1:])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, under 2 minutes")
    p.add_argument(
        "--workload",
        action="append",
        choices=["mtbench", "skewed", "ratelimited", "zerolat", "queued", "mock", "all"],
        help="repeatable; default: all",
    )
    p.add_argument("--clients", help="comma-separated subset of a,b,c,mtrun,mock")
    p.add_argument(
        "--sleep-factor",
        type=float,
        default=0.1,
        help="scale of MT-bench's fixed 10 s sleep on error (default 0.1: 1 s)",
    )
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args(argv)
    chosen = args.workload or ["all"]
    all_ = workloads(args.quick)
    names = list(all_) if "all" in chosen else chosen
    only = set(args.clients.split(",")) if args.clients else None
    tmp = Path(tempfile.mkdtemp(prefix="mtrun-bench-"))
    results: dict[str, Any] = {"quick": args.quick, "sleep_factor": args.sleep_factor}
    try:
        for name in names:
            w = all_[name]
            started = time.perf_counter()
            rows = run_workload(w, tmp, args.sleep_factor, only)
            results[name] = rows
            print(table(w, rows), flush=True)
            print(f"_({name} took {time.perf_counter() - started:.0f} s)_\n", flush=True)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
