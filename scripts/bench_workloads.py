"""The benchmark's workloads: conversations, a bench server model, clients and the targets.

Issue 14's targets each get workloads of their own (rate limits with and without headers,
short and long; a token-per-minute limit; queueing servers with K slots; the skewed batch
at ``-j`` = capacity), beside the workloads of earlier runs (MT-bench, skewed, zero
latency, ``--mock``). Sizes are chosen from the bound (:func:`lower_bound`), so "15 s of
work at the limit" is 15 s however the conversations fall. ``--quick`` shrinks each one.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_answers import answer_text, prompt_tokens
from bench_server import ServerConfig, config_from, parse_args

MT_BENCH = [
    Path(__file__).resolve().parents[2] / "shared/data/mt_bench_question.jsonl",
    Path("/work/shared/data/mt_bench_question.jsonl"),
]
"""Where MT-bench's questions are looked for: shared/ beside the checkout, or the usual place."""

MTRUN = ("(d) mtrun (defaults)", "mtrun", 0, 1)
COMPARE = [
    ("(a) openai sequential", "a", 1, 1),
    ("(b) MT-bench 8 threads", "b", 8, 1),
    ("(c) AsyncOpenAI + Semaphore(8)", "c", 8, 1),
]
FLOOR = ("(e) floor: bare aiohttp, 32 in flight", "e", 32, 1)
"""What the server and the machine allow (``bench_clients._client_floor``): no targets."""
RAW_FLOOR = ("(g) raw floor: asyncio streams, no HTTP library, 32 in flight", "g", 32, 1)
"""What the server allows a client that costs a third of aiohttp per request (``_client_raw``)."""


@dataclass(frozen=True)
class Target:
    """One target: ``figure`` of a row, compared with ``value``."""

    figure: str
    """A key of the row's figures (see ``bench_targets.figures``)."""
    op: str
    """``>=``, ``<=``, ``<``, ``==`` or ``in`` (``value`` a (low, high) pair)."""
    value: Any
    source: str = "issue 14"
    """Where the target comes from (``issue 14``, ``4th run``, ``bench``: no issue target)."""
    clients: tuple[str, ...] = ()
    """Labels of the rows it applies to (empty: every mtrun row)."""
    against: str = ""
    """Label of a row of the same run: the target is its figure times ``value`` (``--baseline``)."""


@dataclass
class Workload:
    """Conversations, a server model, and which clients run them how."""

    name: str
    title: str
    convs: list[dict[str, Any]]
    server: list[str]
    """bench_server.py options; empty for --mock runs."""
    clients: list[tuple[str, str, int, int]] = field(default_factory=list)
    """(label, kind a|b|c|mtrun|mock, concurrency (mtrun: 0 defaults, -1 auto), sample 1/k)."""
    targets: list[Target] = field(default_factory=list)
    mtrun_args: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    """Request parameters of every conversation (``defaults: params:``)."""
    files_per: int = 1000
    fourth_run: list[Target] = field(default_factory=list)
    """The fourth run's figures (judged at full sizes only); ``--baseline`` judges them against
    the baseline's mtrun in the same run too (``bench_baseline.py``)."""

    @property
    def config(self) -> ServerConfig | None:
        """The server's model, parsed from its options."""
        return config_from(parse_args(self.server)) if self.server else None


def _conv(prefix: str, i: int, turns: int) -> dict[str, Any]:
    return {
        "id": f"{prefix}{i:05d}",
        "turns": [
            f"Conversation {prefix}{i}, turn {t}: tell me about item {t}." for t in range(turns)
        ],
    }


def skewed(n: int, seed: int, long_share: float = 0.05) -> list[dict[str, Any]]:
    """``n`` conversations of 1-12 turns, ``long_share`` of them 30-40."""
    rng = random.Random(seed)
    return [
        _conv("c", i, rng.randint(30, 40) if rng.random() < long_share else rng.randint(1, 12))
        for i in range(n)
    ]


def sized(
    prefix: str, config: ServerConfig, seconds: float, seed: int, most: int = 12, **params: Any
) -> list[dict[str, Any]]:
    """The fewest conversations of 1-``most`` turns whose bound reaches ``seconds``."""
    rng = random.Random(seed)
    pool: list[dict[str, Any]] = [_conv(prefix, 0, rng.randint(1, most))]
    while lower_bound(config, pool, params) < seconds:  # double, then bisect: the bound grows
        pool += [_conv(prefix, len(pool) + i, rng.randint(1, most)) for i in range(len(pool))]
    low, high = 1, len(pool)
    while low < high:
        mid = (low + high) // 2
        if lower_bound(config, pool[:mid], params) >= seconds:
            high = mid
        else:
            low = mid + 1
    return pool[:low]


def counted(prefix: str, turns: int, seed: int) -> list[dict[str, Any]]:
    """Conversations of 1-12 turns, ``turns`` turns in all."""
    rng = random.Random(seed)
    convs: list[dict[str, Any]] = []
    left = turns
    while left > 0:
        n = min(left, rng.randint(1, 12))
        convs.append(_conv(prefix, len(convs), n))
        left -= n
    return convs


def mt_bench() -> list[dict[str, Any]]:
    """MT-bench's 80 two-turn questions (none without the file: the workload is skipped)."""
    found = [p for p in MT_BENCH if p.is_file()]
    convs: list[dict[str, Any]] = []
    for line in found[0].read_text().splitlines() if found else []:
        q = json.loads(line)
        convs.append({"id": f"mt-bench-{q['question_id']}", "turns": list(q["turns"])})
    return convs


def _rate_bound(
    kind: str, amount: float, per_minute: float, burst: float | None, window_s: float
) -> float:
    """Fastest time to get ``amount`` through a limiter of ``per_minute``."""
    if kind == "window":
        per_window = max(1, round(per_minute * window_s / 60.0))
        return int((amount - 1) // per_window) * window_s
    rate = per_minute / 60.0
    return max(0.0, (amount - (burst if burst is not None else max(1.0, rate))) / rate)


def lower_bound(config: ServerConfig, convs: list[dict[str, Any]], params: dict[str, Any]) -> float:
    """Fastest possible makespan under the server's model, with no client overhead.

    The largest of: the longest conversation's chain of service times; all service
    time over the slots; and each rate limit's time to let every request (and every
    booked token: prompt + max_tokens, the prompts grown by the server's own answers)
    through, the first burst free.
    """
    cap = params.get("max_tokens")
    longest = total = 0.0
    requests = booked = 0
    for conv in convs:
        messages: list[dict[str, str]] = []
        chain = 0.0
        for turn, text in enumerate(conv["turns"], 1):
            messages.append({"role": "user", "content": text})
            length = config.answer_length(conv["turns"][0], turn)
            completion = min(length, cap) if cap else length
            chain += config.service_time(completion)
            booked += prompt_tokens(messages) + (cap or config.default_max_tokens)
            messages.append(
                {"role": "assistant", "content": answer_text(len(messages), completion)}
            )
        longest, total, requests = max(longest, chain), total + chain, requests + len(conv["turns"])
    bound = max(longest, total / config.capacity)
    if config.rpm is not None:
        bound = max(
            bound, _rate_bound(config.limiter, requests, config.rpm, config.burst, config.window_s)
        )
    if config.tpm is not None:
        bound = max(
            bound,
            _rate_bound(config.limiter, booked, config.tpm, config.tpm_burst, config.window_s),
        )
    return bound


def _latency(base: float, per_token: float, capacity: int, *extra: str) -> list[str]:
    return [
        "--base-latency", str(base), "--per-token", str(per_token),
        "--answer-tokens", "100", "--capacity", str(capacity), *extra,
    ]  # fmt: skip


_RATE_GOALS = [
    Target("goodput_pct", ">=", 95.0),
    Target("refused_pct", "<", 2.0),
    Target("failed", "==", 0),
]


def rate_workloads(quick: bool) -> list[Workload]:
    """600 and 1,200 rpm, without and with headers, short (15 s at the limit) and long (60 s)."""
    out = []
    for rpm in (600, 1200):
        for length, seconds in (("short", 5 if quick else 15), ("long", 15 if quick else 60)):
            for headers in (False, True):
                extra = ["--rpm", str(rpm), *(["--ratelimit-headers"] if headers else [])]
                server = _latency(0.05, 0.0005, 64, *extra)
                name = f"rate{rpm}-{length}{'-headers' if headers else ''}"
                convs = sized("r", config_from(parse_args(server)), seconds, seed=rpm + seconds)
                title = (
                    f"Rate limit {rpm} rpm (bucket, burst 1 s), {'with' if headers else 'no'} "
                    f"headers, {length} batch ({seconds} s at the limit)"
                )
                clients = (
                    [MTRUN, *COMPARE] if (rpm, length, headers) == (600, "long", False) else [MTRUN]
                )
                out.append(Workload(name, title, convs, server, clients, list(_RATE_GOALS)))
    return out


def limit_workloads(quick: bool) -> list[Workload]:
    """A token-per-minute limit with headers (OpenAI's, Groq's, Cerebras's forms), a request
    limit in the IETF draft's fields, and a fixed-window request limit."""
    tpm_server = [
        "--base-latency", "0.05", "--per-token", "0.0005", "--capacity", "64",
        "--answer-tokens-min", "20", "--answer-tokens-max", "150",
        "--tpm", "120000", "--ratelimit-headers",
    ]  # fmt: skip
    params = {"max_tokens": 150}
    seconds = 10 if quick else 30
    tpm_convs = sized("t", config_from(parse_args(tpm_server)), seconds, seed=5, most=6, **params)
    window_s = 10 if quick else 60
    window_server = _latency(0.05, 0.0005, 64, "--rpm", "600", "--limiter", "window")
    window_server += ["--window-s", str(window_s), "--ratelimit-headers"]
    per_window = 10 * window_s
    window_convs = counted("w", per_window * 3 // 2, seed=9)
    ietf_server = _latency(0.05, 0.0005, 64, "--rpm", "600", "--ratelimit-headers")
    ietf_server += ["--ratelimit-header-style", "ietf"]
    ietf_seconds = 5 if quick else 15
    ietf_convs = sized("i", config_from(parse_args(ietf_server)), ietf_seconds, seed=615)
    bench = "bench"
    return [
        Workload(
            "tpm-headers",
            f"Token limit 120,000 tpm with headers, max_tokens 150, answers 20-150 "
            f"({seconds} s at the limit)",
            tpm_convs,
            tpm_server,
            [MTRUN],
            [
                Target("token_use_pct", ">=", 90.0),
                Target("refused_pct", "<", 2.0),
                Target("failed", "==", 0),
            ],
            params=params,
        ),
        Workload(
            "tpm-groq-headers",
            "The same with Groq's headers: requests per day (14,400) beside 120,000 tpm",
            tpm_convs,
            [*tpm_server, "--rpd", "14400"],
            [MTRUN],
            [
                Target("token_use_pct", ">=", 90.0, "issue 14 (Groq)"),
                Target("refused_pct", "<", 2.0, "issue 14 (Groq)"),
                Target("failed", "==", 0, "issue 14 (Groq)"),
            ],
            params=params,
        ),
        Workload(
            "tpm-cerebras-headers",
            "The same with Cerebras's names: -requests-day (14,400) beside -tokens-minute, "
            "resets in plain seconds",
            tpm_convs,
            [*tpm_server, "--rpd", "14400", "--ratelimit-header-style", "cerebras"],
            [MTRUN],
            [
                Target("token_use_pct", ">=", 90.0, bench),
                Target("refused_pct", "<", 2.0, bench),
                Target("failed", "==", 0, bench),
            ],
            params=params,
        ),
        Workload(
            "rate600-ietf-headers",
            f"Rate limit 600 rpm (bucket, burst 1 s) told in the IETF draft's RateLimit and "
            f"RateLimit-Policy fields (whole seconds), {ietf_seconds} s at the limit",
            ietf_convs,
            ietf_server,
            [MTRUN],
            [Target(t.figure, t.op, t.value, bench) for t in _RATE_GOALS],
        ),
        Workload(
            "window600-headers",
            f"Fixed window: {per_window} requests per {window_s} s window, headers "
            f"(reset = window end), about 1.5 windows of work",
            window_convs,
            window_server,
            [MTRUN],
            [
                Target("span_ratio", "<=", 1.10, bench),
                Target("refused_pct", "<", 2.0, bench),
                Target("failed", "==", 0, bench),
            ],
        ),
    ]


def queue_workloads(quick: bool) -> list[Workload]:
    """Queueing servers with K = 1, 4, 16 slots and no 429s, answers of 20-400 tokens by turn."""
    out = []
    for k in (1, 4, 16):
        server = [
            "--base-latency", "0.05", "--per-token", "0.001", "--capacity", str(k),
            "--overflow", "queue", "--answer-tokens-min", "20", "--answer-tokens-max", "400",
        ]  # fmt: skip
        seconds = 5 if quick else 15
        convs = sized("q", config_from(parse_args(server)), seconds, seed=k)
        title = (
            f"Queueing server, K = {k} slots, answers 20-400 tokens by turn ({seconds} s of work)"
        )
        targets = [
            Target("span_ratio", "<=", 1.10),
            Target("timeouts", "==", 0),
            Target("in_flight_range", "in", (k, 2 * k)),
            Target("failed", "==", 0, "bench"),
        ]
        out.append(Workload(f"queue-k{k}", title, convs, server, [MTRUN], targets))
    return out


NOISE = 0.05
"""How far a figure may fall short of one it is compared with: the noise of a shared machine."""


def margin(op: str) -> float:
    """What a figure compared by ``op`` is multiplied by to allow for ``NOISE``."""
    return 1.0 + NOISE if op in ("<=", "<") else 1.0 - NOISE


def _fourth_run(figure: str, op: str, value: float, *clients: str) -> Target:
    """A figure of docs/BENCHMARKS.md's fourth run, with 5% for measurement noise."""
    return Target(figure, op, value * margin(op), "4th run", clients)


def existing_workloads(quick: bool) -> list[Workload]:
    """The workloads of earlier runs: MT-bench, skewed, zero latency."""
    n_skewed, n_zero = (150, 300) if quick else (500, 1000)
    j32, jauto = "(d) mtrun -j 32", "(d) mtrun -j auto"

    def full(*targets: Target) -> list[Target]:
        """Targets that hold at full sizes only (start-up weighs on the quick ones)."""
        return [] if quick else list(targets)

    mtbench = [_fourth_run("span_ratio", "<=", 1.23, MTRUN[0])]
    skew = [_fourth_run("span_ratio", "<=", 1.04, jauto)]
    zero = [_fourth_run("turns_per_s", ">=", 1688.0)]
    return [
        Workload(
            "mtbench",
            "MT-bench: 80 two-turn dialogues, capacity 32",
            mt_bench(),
            _latency(0.2, 0.002, 32),
            [
                MTRUN,
                (j32, "mtrun", 32, 1),
                ("(c) AsyncOpenAI + Semaphore(32)", "c", 32, 1),
                *COMPARE[:2],
                FLOOR,
            ],
            [
                *full(*mtbench),
                Target("failed", "==", 0, "4th run"),
            ],
            fourth_run=mtbench,
        ),
        Workload(
            "skewed",
            f"Skewed: {n_skewed} conversations, 1-12 turns, 5% 30-40, capacity 32",
            skewed(n_skewed, seed=7),
            _latency(0.05, 0.0005, 32),
            [
                (j32, "mtrun", 32, 1),
                (jauto, "mtrun", -1, 1),
                ("(c) AsyncOpenAI + Semaphore(32)", "c", 32, 1),
                FLOOR,
                RAW_FLOOR,
            ],
            [
                Target("span_ratio", "<=", 1.03, clients=(j32,)),
                *full(*skew),
                Target("failed", "==", 0, "4th run"),
            ],
            fourth_run=skew,
        ),
        Workload(
            "zerolat",
            f"Zero latency: {n_zero} conversations x 5 turns, client overhead",
            [_conv("z", i, 5) for i in range(n_zero)],
            _latency(0.0, 0.0, 1000),
            [MTRUN, *COMPARE, FLOOR, RAW_FLOOR],
            full(Target("turns_per_s", ">=", 1500.0), *zero),
            fourth_run=zero,
        ),
    ]


def _later_workloads(quick: bool) -> list[Workload]:
    """The queued workload of the fourth run's fix, and ``--mock``'s memory."""
    n_mock = 10_000 if quick else 100_000
    mock = [_fourth_run("rss_mb", "<=", 152.0)]
    return [
        Workload(
            "queued",
            "Queued: one request at a time, answers taking 1/6 of --timeout",
            [_conv("s", i, 3) for i in range(8 if quick else 20)],
            _latency(0.5, 0.0, 1),
            [
                ("(d) mtrun --timeout 3", "mtrun", 0, 1),
                ("(d) mtrun -j 1 --timeout 3", "mtrun", 1, 1),
            ],
            [Target("failed", "==", 0, "4th run")],
            mtrun_args=["--timeout", "3"],
        ),
        Workload(
            "mock",
            f"{n_mock:,} two-turn conversations through mtrun --mock",
            [{"id": f"s{i:06d}", "turns": [f"Hello {i}.", "And then?"]} for i in range(n_mock)],
            [],
            [("(d) mtrun --mock", "mock", 0, 1)],
            [] if quick else mock,
            fourth_run=mock,
        ),
    ]


def workloads(quick: bool) -> dict[str, Workload]:
    """Every workload by name, full size or ``--quick``, in the order a full run takes them."""
    every = [*rate_workloads(quick), *limit_workloads(quick), *queue_workloads(quick)]
    return {w.name: w for w in [*every, *existing_workloads(quick), *_later_workloads(quick)]}
