"""Another revision's mtrun beside today's, in the same run: ``benchmark.py --baseline REV``.

Why: the fourth run's figures in docs/BENCHMARKS.md were measured on a faster machine, so a
target like "1,688 turns/s" says more about the machine than about mtrun (on the 2-core
machine the later runs used, ``main`` before issue 14 did 696 turns/s). The fair comparison
runs the old code beside today's, against the same server, on the same machine, in the
same run. The fourth run measured the code of ba5c3eb (a commit of docs only: the code is
its parent's, e97cb42).

:func:`build` makes REV's mtrun once and keeps it: ``git archive`` of REV's commit (git's
object store only: the working tree, its index and its worktrees are never touched) into
``CACHE/<commit>-py<X.Y>/src``, a virtualenv beside it from this interpreter, and a plain
(not editable) ``pip install`` of ``src``, which compiles its bytecode as any install does.
A file ``ready``, written last, marks a finished build: later runs reuse it, and a build
cut short is started again. A lock keeps two benchmarks from building the same one at once.

:func:`with_baseline` gives each workload that has figures of the fourth run a twin (f) of
every mtrun row, run the same way (:func:`bench_clients.mtrun_options`, less the options
REV's ``mtrun run --help`` does not list, which the twin's label names), and a target per
fourth-run figure: today's row against its twin, with the same allowance for noise.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench_clients import mtrun_options
from bench_workloads import Target, Workload, margin

USUAL = "ba5c3eb"
"""The fourth run's commit (its code is e97cb42's): the usual ``--baseline``."""

Run = Callable[[list[str], Path | None], str]
"""Runs a command (in a folder, or here) and returns what it printed; fails with SystemExit."""


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A revision's mtrun, built (:func:`build`) or only named (``--list``)."""

    rev: str
    """The revision as the command line named it (the rows' labels say it)."""
    commit: str = ""
    mtrun: Path | None = None
    """Its ``mtrun`` command, in its own virtualenv."""
    options: frozenset[str] | None = None
    """The options its ``mtrun run --help`` lists; None: not known, all taken as there."""

    def accepts(self, flag: str) -> bool:
        """Whether this mtrun has the option ``flag``."""
        return self.options is None or flag in self.options


def run_command(cmd: list[str], cwd: Path | None = None) -> str:
    """Run ``cmd``; its output, or SystemExit with its last error line."""
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:  # no such program: a revision without an mtrun command
        raise SystemExit(f"benchmark: --baseline: {' '.join(cmd)}: {exc.strerror}") from None
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise SystemExit(f"benchmark: --baseline: {' '.join(cmd)} failed: {last}")
    return done.stdout


def default_cache() -> Path:
    """Where built baselines are kept: ``$XDG_CACHE_HOME/mtrun-bench`` (``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mtrun-bench"


def build(
    rev: str,
    repo: Path,
    cache: Path,
    run: Run = run_command,
    python: str = sys.executable,
) -> Baseline:
    """REV's mtrun in ``cache``, built unless a finished build of its commit is there."""
    found = run(["git", "-C", str(repo), "rev-parse", "--verify", f"{rev}^{{commit}}"], None)
    commit = found.strip()
    home = cache / f"{commit}-py{sys.version_info.major}.{sys.version_info.minor}"
    with _locked(cache, home.name):
        if not (home / "ready").is_file():
            _install(home, commit, repo, run, python)
    mtrun = home / "venv" / "bin" / "mtrun"
    return Baseline(rev, commit, mtrun, options_of(run([str(mtrun), "run", "--help"], home)))


@contextmanager
def _locked(cache: Path, name: str) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _install(home: Path, commit: str, repo: Path, run: Run, python: str) -> None:
    """A fresh build in ``home``: the commit's files, a virtualenv, mtrun installed in it."""
    print(f"  building mtrun at {commit[:12]} in {home} ...", file=sys.stderr, flush=True)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    archive = home / "src.tar"
    run(["git", "-C", str(repo), "archive", "--format=tar", "-o", str(archive), commit], None)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12 and later
            tar.extractall(home / "src", filter="data")
        else:  # git's own archive of a commit of this repository
            tar.extractall(home / "src")
    archive.unlink()
    venv = home / "venv"
    run([python, "-m", "venv", str(venv)], None)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    run([*pip, "--disable-pip-version-check", str(home / "src")], home)
    # Run from ``home``: a ``runner`` folder in the current one would be imported instead.
    where = run([str(venv / "bin" / "python"), "-c", "import runner; print(runner.__file__)"], home)
    if not Path(where.strip()).resolve().is_relative_to(venv.resolve()):
        raise SystemExit(f"benchmark: --baseline: its runner is {where.strip()} (PYTHONPATH?)")
    (home / "ready").write_text(commit + "\n")


_OPTION_LINE = re.compile(r"  (-\S.*?)(?:\s{2,}|$)")


def options_of(help_text: str) -> frozenset[str]:
    """The options a click ``--help`` lists: ``  -j, --concurrency N|auto  ...`` gives -j and
    --concurrency; the lines of their descriptions, indented further, give none."""
    found: set[str] = set()
    for line in help_text.splitlines():
        m = _OPTION_LINE.match(line)
        if m:
            found.update(part.split()[0] for part in m.group(1).split(", "))
    return frozenset(found)


def accepted(args: list[str], accepts: Callable[[str], bool]) -> tuple[list[str], list[str]]:
    """``args`` less the options ``accepts`` refuses (each with its values), and those options."""
    kept: list[str] = []
    dropped: list[str] = []
    keep = True
    for arg in args:
        if arg.startswith("-"):
            keep = accepts(arg)
            if not keep:
                dropped.append(arg)
        if keep:
            kept.append(arg)
    return kept, dropped


def twin_label(label: str, baseline: Baseline, dropped: list[str]) -> str:
    """ "(d) mtrun -j 32" at REV: "(f) mtrun at REV -j 32", naming the options left out."""
    name = label.replace("(d) mtrun", f"(f) mtrun at {baseline.rev}", 1)
    return name + (f" (no {', '.join(dropped)})" if dropped else "")


def with_baseline(w: Workload, baseline: Baseline) -> Workload:
    """The workload with REV's twin of every mtrun row, and the fourth run's figures as targets
    against those twins; a workload without figures of the fourth run as it is."""
    if not w.fourth_run:
        return w
    clients: list[tuple[str, str, int, int]] = []
    twins: dict[str, str] = {}
    for client in w.clients:
        clients.append(client)
        label, kind, concurrency, sample = client
        if kind in ("mtrun", "mock"):
            url = None if kind == "mock" else "URL"
            opts = mtrun_options(url, concurrency, w.mtrun_args, Path("o"), Path("s"))
            twins[label] = twin_label(label, baseline, accepted(opts, baseline.accepts)[1])
            clients.append((twins[label], "f", concurrency, sample))
    same_run = f"{baseline.rev}, same run"
    targets = [
        Target(t.figure, t.op, margin(t.op), same_run, (label,), against=twin)
        for t in w.fourth_run
        for label, twin in twins.items()
        if not t.clients or label in t.clients
    ]
    return dataclasses.replace(w, clients=clients, targets=[*w.targets, *targets])
