"""Client CPU per request over each candidate HTTP transport, against a zero-latency server.

Starts ``bench_server.py`` with zero latency, then sends the same small
chat-completions POST through each transport at several concurrencies (an
``asyncio.Semaphore`` around each request and a pool of that many
connections). CPU is this process's ``ru_utime + ru_stime`` around the
requests, so the server's own work is not counted. The candidates run
interleaved, each concurrency ``--rounds`` times, and the table gives each
one's median: the machine is shared and noisy.

The candidates (one missing its package is left out, with a note):

- ``httpx+httpcore``: httpx's default transport;
- ``httpx+h11 (old)``: the HTTP/1.1 transport on h11 that mtrun had until
  issue 14, loaded from git (``--old-rev``, default: the last commit with it);
- ``httpx2``: httpx2's default transport;
- ``httpx+aiohttp``: httpx-aiohttp's ``AiohttpTransport`` as shipped;
- ``httpx2+aiohttp``: ``httpx_aiohttp.httpx2.AiohttpTransport``;
- ``mtrun``: the transport mtrun uses now (``runner.http.network``), under httpx's client;
- ``mtrun direct``: the same transport as mtrun posts over it (``runner.http.sender``):
  its direct path, neither httpx's nor aiohttp's request and response objects
  built (``runner.http.exchange``).

Usage: ``python scripts/bench_transport.py [--requests N] [--rounds R]
[--only NAME ...] [--connections N ...]``
(with mtrun installed, and the ``bench`` extra for httpx2); prints a
Markdown table of CPU milliseconds per request.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json as _json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BODY = {"model": "bench", "messages": [{"role": "user", "content": "Hello there."}]}
OLD_REV = "9249b9b"
"""The last commit with mtrun's own h11 transport (``runner/http/transport.py``)."""
CONCURRENCIES = (1, 8, 32, 64)

Factory = Callable[[int], tuple[Any, Any]]
"""Given the connection count: (an AsyncClient class, a transport for it)."""


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(url: str, factory: Factory, n: int, j: int) -> float:
    """CPU milliseconds per request for ``n`` requests, ``j`` at a time."""
    client_class, transport = factory(j)
    async with client_class(transport=transport, timeout=30.0) as client:
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


def _httpx_default(j: int) -> tuple[Any, Any]:
    import httpx

    return httpx.AsyncClient, httpx.AsyncHTTPTransport(limits=_limits(httpx, j))


def _old_h11(rev: str) -> Factory:
    """mtrun's h11 transport as it was at ``rev``, loaded from git into a scratch module."""
    source = subprocess.run(
        ["git", "show", f"{rev}:runner/http/transport.py"],
        cwd=HERE.parent,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "old_h11_transport.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_h11_transport", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def factory(j: int) -> tuple[Any, Any]:
        import httpx

        return httpx.AsyncClient, module.HTTP11Transport(max_connections=j)

    return factory


def _httpx2_default(j: int) -> tuple[Any, Any]:
    import httpx2

    return httpx2.AsyncClient, httpx2.AsyncHTTPTransport(limits=_limits(httpx2, j))


def _httpx_aiohttp(j: int) -> tuple[Any, Any]:
    import httpx
    from httpx_aiohttp import AiohttpTransport

    return httpx.AsyncClient, AiohttpTransport(limits=_limits(httpx, j))


def _httpx2_aiohttp(j: int) -> tuple[Any, Any]:
    import httpx2
    from httpx_aiohttp.httpx2 import AiohttpTransport

    return httpx2.AsyncClient, AiohttpTransport(limits=_limits(httpx2, j))


def _mtrun(j: int) -> tuple[Any, Any]:
    import httpx

    from runner.http.network import network_transport

    return httpx.AsyncClient, network_transport("http://127.0.0.1/v1", max_connections=j)


def _mtrun_direct(j: int) -> tuple[Any, Any]:
    from runner.http.network import network_transport

    return _SenderClient, network_transport("http://127.0.0.1/v1", max_connections=j)


class _SenderClient:
    """mtrun's own way of posting (``runner.http.sender.Sender``) behind ``AsyncClient.post``.

    Its answers come back as ``httpx.Response`` for the measuring loop, which mtrun itself
    never builds: if anything, this row counts a little more than mtrun spends.
    """

    def __init__(self, *, transport: Any, timeout: float) -> None:
        import httpx

        from runner.http.sender import Sender

        self._httpx = httpx
        self._sender = Sender
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout)
        self._transport = transport
        self._senders: dict[str, tuple[Any, Any]] = {}
        """Per URL: its ``Sender`` and the request the answers are said to be for."""

    async def __aenter__(self) -> _SenderClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def post(self, url: str, *, json: Any) -> Any:
        found = self._senders.get(url)
        if found is None:
            headers = {"content-type": "application/json"}
            sender = self._sender(self._http, url, transport=self._transport, headers=headers)
            found = self._senders[url] = (sender, self._httpx.Request("POST", url))
        sender, request = found
        answer = await sender.post(_json.dumps(json).encode(), {})
        return self._httpx.Response(
            answer.status_code, headers=answer.headers, content=answer.content, request=request
        )


def _limits(module: Any, j: int) -> Any:
    return module.Limits(max_connections=j, max_keepalive_connections=j)


def _candidates(old_rev: str) -> dict[str, Factory]:
    """The transports to compare, less those whose package is missing."""
    wanted: dict[str, tuple[str, Callable[[], Factory]]] = {
        "httpx+httpcore": ("httpx", lambda: _httpx_default),
        "httpx+h11 (old)": ("h11", lambda: _old_h11(old_rev)),
        "httpx2": ("httpx2", lambda: _httpx2_default),
        "httpx+aiohttp": ("httpx_aiohttp", lambda: _httpx_aiohttp),
        "httpx2+aiohttp": ("httpx2", lambda: _httpx2_aiohttp),
        "mtrun": ("runner", lambda: _mtrun),
        "mtrun direct": ("runner", lambda: _mtrun_direct),
    }
    found: dict[str, Factory] = {}
    for name, (module, make) in wanted.items():
        if importlib.util.find_spec(module) is None:
            print(f"({name}: {module} is not installed, left out)", file=sys.stderr)
            continue
        try:
            found[name] = make()
        except (OSError, subprocess.CalledProcessError, ImportError) as exc:
            print(f"({name}: left out: {exc})", file=sys.stderr)
    return found


def _start_server() -> tuple[subprocess.Popen[str], str]:
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
    assert server.stdout is not None
    return server, server.stdout.readline().strip() + "/chat/completions"


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=3, help="runs of each cell; the median is shown")
    p.add_argument("--old-rev", default=OLD_REV, help="git revision with the old h11 transport")
    p.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    p.add_argument(
        "--connections", type=int, nargs="*", default=list(CONCURRENCIES), help="pool sizes"
    )
    args = p.parse_args()
    sizes: list[int] = args.connections
    candidates = _candidates(args.old_rev)
    if args.only:
        candidates = {k: v for k, v in candidates.items() if k in args.only}
    server, url = _start_server()
    try:
        print("| transport | " + " | ".join(str(j) for j in sizes) + " |")
        print("|---|" + "---:|" * len(sizes))
        results: dict[str, dict[int, list[float]]] = {name: {} for name in candidates}
        for j in sizes:
            for _ in range(args.rounds):
                for name, factory in candidates.items():
                    ms = asyncio.run(_measure(url, factory, args.requests, j))
                    results[name].setdefault(j, []).append(ms)
                    time.sleep(0.2)
        for name, cells in results.items():
            row = " | ".join(f"{statistics.median(cells[j]):.2f}" for j in sizes)
            print(f"| {name} | {row} |", flush=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
