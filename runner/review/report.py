"""The HTML report: one run, or two runs compared, as one self-contained page.

The page is three static assets, ``runner/review/assets/report.html``, ``report.css``
and ``report.js``, put together into one file: the stylesheet and the script
are inlined, and the report's data is embedded once as JSON in
``<script type="application/json" id="data">``. Nothing is fetched, so the
file opens from disk, offline, and can be attached to a CI run.

Safety. The script builds every element with DOM calls and inserts every
string from a transcript as a text node, never as HTML. The JSON block
escapes ``<``, ``>``, ``&``, U+2028 and U+2029 (and lone surrogates) as
``\\uXXXX``, so no answer can close the script element. A
Content-Security-Policy allows only the inlined script and stylesheet, by
their SHA-256 hashes, and no network at all.

Size. The page shows what a transcript holds, minus what it never shows:
the ``schema``, ``run_id`` (listed once in the run's metadata) and
``fingerprint`` of each record, and of a judge check's ``details`` the
model, verdict and error only (the judge's request repeats the whole
conversation). Charts are drawn from aggregates computed here
(:func:`run_summary`), and the page renders table rows and chats lazily, so a
run of 10,000 conversations stays a file about the size of its transcript.

Data (``mtrun.report/1``)::

    {"schema", "mode": "run" | "compare", "title",
     "runs": [{"label": "run" | "base" | "new", "source", "meta", "totals",
               "charts", "conversations": [record, ...]}],
     "diff": runner.review.diff.render_json(...), each conversation's "turns" cut to
             [{"index", "prompt_changed", "answer_changed", "similarity",
             "similarity_method", "tools_step" (only when tool calls differ)}]
             of the turns whose prompts, answers or tool calls differ; or null}
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from runner.review.diff import diff_runs, render_json
from runner.transcripts.atomic import write_atomic
from runner.transcripts.fields import as_int as _int
from runner.transcripts.fields import as_list as _list
from runner.transcripts.fields import as_number as _number
from runner.transcripts.fields import as_text as _text
from runner.transcripts.fields import escape_surrogates, shallow
from runner.transcripts.fields import is_int as _is_int
from runner.transcripts.status import Status
from runner.transcripts.totals import totals

SCHEMA = "mtrun.report/1"
"""Version string of the data embedded in the page."""

CHART_TURNS = 60
"""Most turn indexes drawn in the per-turn charts; later turns are counted, not drawn."""

DROPPED_FIELDS = frozenset({"schema", "run_id", "fingerprint"})
"""Record fields the page never shows per conversation."""

JUDGE_DETAILS = ("model", "verdict", "error", "usage")
"""The parts of a check's ``details`` the page shows; the rest (the judge request) is dropped."""

_SLOTS = re.compile(r"\{\{(title|csp|style|script|data)\}\}")
_JSON_UNSAFE = re.compile("[<>&\u2028\u2029]")


def build_report(records: Sequence[Mapping[str, Any]], *, title: str, source: str) -> str:
    """The HTML page of one run's transcript ``records``; ``source`` names the file."""
    data = {
        "schema": SCHEMA,
        "mode": "run",
        "title": title,
        "runs": [_run(records, label="run", source=source)],
        "diff": None,
    }
    return _page(title, data)


def build_comparison(
    base: Sequence[Mapping[str, Any]],
    new: Sequence[Mapping[str, Any]],
    *,
    title: str,
    base_source: str,
    new_source: str,
) -> str:
    """The HTML page comparing two runs: regressions first, then answers side by side.

    Pairing, outcomes and flipped checks come from :func:`runner.review.diff.diff_runs`.
    Of its per-turn entries only the turns whose prompts, answers or tool calls differ are
    kept, with what differs and the answers' similarity: the page takes
    prompts, answers, tokens and latency from the embedded records, which it
    needs anyway.
    """
    diff = render_json(diff_runs(base, new))
    for conversation in diff["conversations"]:
        conversation["turns"] = [
            {
                "index": turn["index"],
                "prompt_changed": turn["prompt"] is not None,
                "answer_changed": turn["answer"] is not None,
                "similarity": (turn["answer"] or {}).get("similarity"),
                "similarity_method": (turn["answer"] or {}).get("similarity_method"),
                **({"tools_step": turn["tools"]["step"]} if "tools" in turn else {}),
            }
            for turn in conversation["turns"]
            if turn["answer"] is not None or turn["prompt"] is not None or "tools" in turn
        ]
    data = {
        "schema": SCHEMA,
        "mode": "compare",
        "title": title,
        "runs": [
            _run(base, label="base", source=base_source),
            _run(new, label="new", source=new_source),
        ],
        "diff": diff,
    }
    return _page(title, data)


def write_report(path: Path, html: str) -> None:
    """Write ``html`` to ``path`` atomically: a temporary file beside it, then a rename.

    Raises :class:`OutputError` with a one-line message when it cannot.
    """
    write_atomic(
        path,
        html.encode("utf-8", errors="replace"),
        what="report",
        hint="check the folder exists and is writable, or choose another -o path",
    )


def embed_json(value: Any) -> str:
    """``value`` as compact JSON that is safe inside a ``<script>`` element.

    Values JSON cannot hold as they are (NaN, infinities; nesting deeper than
    the encoder recurses) are shown as :func:`runner.transcripts.fields.shallow` makes them.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        text = json.dumps(shallow(value), ensure_ascii=False, separators=(",", ":"))
    return escape_surrogates(_JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


def csp_hash(text: str) -> str:
    """The CSP source expression allowing an inline element whose content is ``text``."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def asset(name: str) -> str:
    """The text of one file of ``runner/review/assets``."""
    return resources.files("runner.review").joinpath("assets", name).read_text(encoding="utf-8")


def run_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Metadata, totals and chart aggregates of one run's records."""
    records = [r for r in records if isinstance(r, Mapping)]
    statuses = Counter(_text(r.get("status")) or "unknown" for r in records)
    status_counts = {status: statuses.pop(status, 0) for status in Status.ALL}
    status_counts.update(sorted(statuses.items()))
    start_time = _earliest([s for r in records if (s := _text(r.get("started_at")))])
    end_time = _latest([f for r in records if (f := _text(r.get("finished_at")))])
    wall_s = None
    if start_time is not None and end_time is not None:
        wall_s = round(max(0.0, (end_time[0] - start_time[0]).total_seconds()), 3)
    turns = _TurnStats()
    for record in records:
        turns.add(record)
    run_totals = {
        "conversations": len(records),
        "statuses": status_counts,
        **_token_totals(records, turns),
        "wall_s": wall_s,
    }
    meta = {
        "run_ids": _distinct(r.get("run_id") for r in records),
        "models": _distinct(r.get("model") for r in records),
        "endpoints": _distinct(r.get("base_url") for r in records),
        "started_at": start_time[1] if start_time else None,
        "finished_at": end_time[1] if end_time else None,
    }
    per_turn, not_drawn = turns.charts()
    charts = {"statuses": status_counts, "turns": per_turn, "turns_not_drawn": not_drawn}
    return {"meta": meta, "totals": run_totals, "charts": charts}


def _token_totals(records: Sequence[Mapping[str, Any]], turns: _TurnStats) -> dict[str, Any]:
    """Turns, tokens (judge requests included), attempts, failed checks and latency of a run."""
    counted = [totals(record) for record in records]
    judge_prompt, judge_completion = turns.judge_tokens
    judge = judge_prompt + judge_completion
    return {
        "turns": sum(t.turns for t in counted),
        "turns_sent": sum(t.turns_sent for t in counted),
        "prompt_tokens": sum(t.prompt_tokens for t in counted) + judge_prompt,
        "completion_tokens": sum(t.completion_tokens for t in counted) + judge_completion,
        "total_tokens": sum(t.total_tokens for t in counted) + judge,
        "judge_tokens": judge,
        "attempts": sum(t.attempts for t in counted),
        "retries": sum(t.retries for t in counted),
        "failed_checks": turns.failed_checks,
        "latency_ms": round(turns.latency_ms, 3),
    }


class _TurnStats:
    """Per-turn latency and token samples of a run, for its charts, and what only turns know."""

    def __init__(self) -> None:
        self.latencies: dict[int, list[float]] = {}
        self.prompts: dict[int, list[int]] = {}
        self.completions: dict[int, list[int]] = {}
        self.latency_ms = 0.0
        self.failed_checks = 0
        self.judge_tokens = (0, 0)

    def add(self, record: Mapping[str, Any]) -> None:
        """Count the turns of one record."""
        turns = [t for t in _list(record.get("turns")) if isinstance(t, Mapping)]
        for position, turn in enumerate(turns):
            index = turn["index"] if _is_int(turn.get("index")) else position
            latency = _number(turn.get("latency_ms"))
            if latency is not None:
                self.latency_ms += latency
                self.latencies.setdefault(index, []).append(latency)
            usage = turn.get("usage")
            if isinstance(usage, Mapping):
                for key, samples in (("prompt", self.prompts), ("completion", self.completions)):
                    if _is_int(value := usage.get(f"{key}_tokens")):
                        samples.setdefault(index, []).append(value)
            checks = [c for c in _list(turn.get("checks")) if isinstance(c, Mapping)]
            self.failed_checks += sum(1 for c in checks if c.get("passed") is not True)
            for prompt, completion in (_judge_usage(c) for c in checks):
                judged = self.judge_tokens
                self.judge_tokens = (judged[0] + prompt, judged[1] + completion)

    def charts(self) -> tuple[list[dict[str, Any]], int]:
        """The per-turn chart rows (at most :data:`CHART_TURNS`), and how many were not drawn."""
        indexes = sorted(self.latencies.keys() | self.prompts.keys() | self.completions.keys())
        rows = [
            {
                "index": index,
                "n": len(self.latencies.get(index, [])),
                "latency": _five_numbers(self.latencies.get(index, [])),
                "prompt": _median(self.prompts.get(index, [])),
                "completion": _median(self.completions.get(index, [])),
            }
            for index in indexes[:CHART_TURNS]
        ]
        return rows, max(0, len(indexes) - CHART_TURNS)


def _judge_usage(check: Mapping[str, Any]) -> tuple[int, int]:
    """Prompt and completion tokens a judge check's request used (``details.usage``), or 0, 0.

    The run's summary counts judge requests in its tokens (they are sent and
    billed like answers), while a record's ``totals`` counts answers only, so
    the report adds these to agree with the summary.
    """
    details = check.get("details")
    usage = details.get("usage") if isinstance(details, Mapping) else None
    if not isinstance(usage, Mapping):
        return 0, 0
    return _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))


# -- the page -------------------------------------------------------------------------


def _page(title: str, data: Mapping[str, Any]) -> str:
    style, script = asset("report.css"), asset("report.js")
    if "</style" in style.lower() or "</script" in script.lower():
        raise ValueError("an asset would end its own element early")
    csp = (
        f"default-src 'none'; script-src {csp_hash(script)}; style-src {csp_hash(style)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    slots = {
        "title": html.escape(_clean(title)),
        "csp": html.escape(csp),
        "style": style,
        "script": script,
        "data": embed_json(data),
    }
    return _SLOTS.sub(lambda m: slots[m.group(1)], asset("report.html"))


def _run(records: Sequence[Mapping[str, Any]], *, label: str, source: str) -> dict[str, Any]:
    summary = run_summary(records)
    summary["meta"]["source"] = source
    return {
        "label": label,
        "source": source,
        **summary,
        "conversations": [_slim(r) for r in records if isinstance(r, Mapping)],
    }


def _slim(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record without what the page never shows (see the module docstring)."""
    out = {key: value for key, value in record.items() if key not in DROPPED_FIELDS}
    turns = record.get("turns")
    if isinstance(turns, list):
        out["turns"] = [_slim_turn(t) if isinstance(t, Mapping) else t for t in turns]
    return out


def _slim_turn(turn: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(turn)
    checks = turn.get("checks")
    if isinstance(checks, list):
        out["checks"] = [_slim_check(c) if isinstance(c, Mapping) else c for c in checks]
    return out


def _slim_check(check: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(check)
    details = check.get("details")
    if isinstance(details, Mapping):
        kept = {key: details[key] for key in JUDGE_DETAILS if key in details}
        if kept:
            out["details"] = kept
        else:
            del out["details"]
    return out


# -- small helpers --------------------------------------------------------------------


def _five_numbers(values: list[float]) -> list[float] | None:
    """Minimum, lower quartile, median, upper quartile and maximum (linear interpolation)."""
    if not values:
        return None
    ordered = sorted(values)
    return [round(_quantile(ordered, q), 3) for q in (0.0, 0.25, 0.5, 0.75, 1.0)]


def _median(values: Sequence[float]) -> float | None:
    return round(_quantile(sorted(values), 0.5), 3) if values else None


def _quantile(ordered: Sequence[float], q: float) -> float:
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _earliest(texts: list[str]) -> tuple[datetime, str] | None:
    parsed = [(moment, text) for text in texts if (moment := _parse_time(text)) is not None]
    return min(parsed, key=lambda pair: pair[0]) if parsed else None


def _latest(texts: list[str]) -> tuple[datetime, str] | None:
    parsed = [(moment, text) for text in texts if (moment := _parse_time(text)) is not None]
    return max(parsed, key=lambda pair: pair[0]) if parsed else None


def _distinct(values: Any) -> list[str]:
    """Distinct non-empty values, most frequent first."""
    counts = Counter(text for value in values if (text := _text(value)))
    return [value for value, _ in counts.most_common()]


def _clean(text: str) -> str:
    """``text`` with lone surrogates (from undecodable file names) escaped."""
    return escape_surrogates(text)
