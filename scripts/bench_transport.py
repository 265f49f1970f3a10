"""Client CPU per request: httpx's default transport (httpcore) against mtrun's HTTP11Transport.

Starts ``bench_server.py`` with zero latency, then sends the same small
chat-completions POST through an ``httpx.AsyncClient`` over each transport,
at several concurrencies (an ``asyncio.Semaphore`` around each request and
a pool of that many connections). CPU is this process's ``ru_utime +
ru_stime`` around the requests, so the server's own work is not counted.

Usage: ``python scripts/bench_transport.py [--requests N]`` (with mtrun
installed); prints a Markdown table of CPU milliseconds per request.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import time
from pathlib import Path

import httpx

from runner.http.transport import HTTP11Transport

HERE = Path(__file__).resolve().parent
BODY = {"model": "bench", "messages": [{"role": "user", "content": "Hello there."}]}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(url: str, transport: httpx.AsyncBaseTransport, n: int, j: int) -> float:
    """CPU milliseconds per request for ``n`` requests, ``j`` at a time."""
    async with httpx.AsyncClient(transport=transport, limits=_limits(j), timeout=30.0) as client:
        gate = asyncio.Semaphore(j)

        async def one() -> None:
            async with gate:
                response = await client.post(url, json=BODY)
                response.raise_for_status()
                response.json()

        await asyncio.gather(*(one() for _ in range(50)))  # warm the pool up
        before = _cpu()
        await asyncio.gather(*(one() for _ in range(n)))
        return (_cpu() - before) * 1000.0 / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=3000)
    args = p.parse_args()
    server = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "bench_server.py"),
            "--port",
            "0",
            "--base-latency",
            "0",
            "--per-token",
            "0",
            "--capacity",
            "1000",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip() + "/chat/completions"
        print("| connections | httpx's default transport | mtrun's HTTP11Transport |")
        print("|---:|---:|---:|")
        for j in (1, 8, 32, 64):
            default = asyncio.run(
                _measure(url, httpx.AsyncHTTPTransport(limits=_limits(j)), args.requests, j)
            )
            ours = asyncio.run(_measure(url, HTTP11Transport(max_connections=j), args.requests, j))
            print(f"| {j} | {default:.3f} | {ours:.3f} |", flush=True)
            time.sleep(0.2)
    finally:
        server.terminate()
        server.wait()


def _limits(j: int) -> httpx.Limits:
    return httpx.Limits(max_connections=j, max_keepalive_connections=j)


if __name__ == "__main__":
    main()
