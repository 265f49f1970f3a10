"""Clients as child processes: CPU time and peak RSS from their own rusage, and a time limit.

Each client runs in its own process, so its CPU time and peak RSS come from ``os.wait4``
(``ru_utime + ru_stime``, ``ru_maxrss``), through a small launcher (:func:`run_child`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

_LAUNCHER = (
    "import json, os, sys\n"
    "pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)\n"
    "print(pid, flush=True)\n"
    "_, status, u = os.wait4(pid, 0)\n"
    "print(json.dumps([os.waitstatus_to_exitcode(status), u.ru_utime + u.ru_stime, u.ru_maxrss]))\n"
)

GRACE_S = 15.0
"""Seconds a client stopped with SIGINT gets to write its summary before SIGKILL."""


def time_limit(bound: float | None) -> float:
    """How long a client may run: twice the bound and 30 s, or 10 minutes without a bound.

    A client past it has missed its targets by far; stopping it keeps a full run's length
    in hand whatever the client does.
    """
    return 600.0 if bound is None else 2.0 * bound + 30.0


def run_child(cmd: list[str], limit_s: float) -> tuple[float, float, float, int, bool]:
    """Run a process; return (wall s, CPU s, peak RSS MB, exit code, cut off) from its rusage.

    A small launcher process spawns it: a child of this (large) process would
    inherit this process's RSS high-water mark into its ``ru_maxrss`` through exec.
    Past ``limit_s`` the process gets SIGINT (mtrun stops as on Ctrl-C and writes its
    summary), and SIGKILL ``GRACE_S`` later.
    """
    start = time.perf_counter()
    cmd = [shutil.which(cmd[0]) or cmd[0], *cmd[1:]]
    launcher = subprocess.Popen(
        [sys.executable, "-S", "-c", _LAUNCHER, *cmd], stdout=subprocess.PIPE, text=True
    )
    assert launcher.stdout is not None
    pid, cut = int(launcher.stdout.readline()), False
    try:
        out, _ = launcher.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        cut = True
        os.kill(pid, signal.SIGINT)
        try:
            out, _ = launcher.communicate(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            os.kill(pid, signal.SIGKILL)
            out, _ = launcher.communicate()
    wall = time.perf_counter() - start
    code, cpu, maxrss_kb = json.loads(out.strip().splitlines()[-1])
    return wall, cpu, maxrss_kb / 1024, code, cut
