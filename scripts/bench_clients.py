"""The usual ways of replaying multi-turn dialogues, as child processes of the benchmark.

``benchmark.py _client KIND SPEC URL CONCURRENCY RESULT SLEEP`` runs one of them:

- (a) ``openai`` sequential: the vendor docs' pattern, one conversation after another,
  the official client with its default retries (``max_retries=2``);
- (b) MT-bench threads: ``ThreadPoolExecutor`` of 8, one conversation per thread, the
  client's own retries off and MT-bench's loop of 16 tries with a fixed sleep on any
  error (10 s times ``--sleep-factor``);
- (c) ``AsyncOpenAI`` + ``asyncio.Semaphore`` + ``asyncio.gather``, default retries;
- (e) the floor: what the server and the machine allow a client that does nothing but
  replay (``_client_floor``). Not a way anyone replays dialogues (no retries, no
  records, no pacing): the reference a miss of mtrun's is judged against;
- (g) the raw floor: the same replay over asyncio's own streams, no HTTP library
  (``_client_raw``): how close to its bound the server allows a client whose whole
  cost per request is a third of aiohttp's alone. Not a client anyone should use.

mtrun itself, today's (d) and ``--baseline``'s (f), gets the options of
:func:`mtrun_options`.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

MODEL = "bench"


def mtrun_options(
    url: str | None, concurrency: int, extra: list[str], out: Path, summary: Path
) -> list[str]:
    """mtrun's options for a run of the benchmark (no server URL: ``--mock``), files not included.

    ``concurrency``: 0 for the defaults, -1 for ``-j auto``, else ``-j N``; ``extra``: the
    workload's own options. One list for (d) and (f), so both run the same way.
    """
    opts = ["-q", "-o", str(out), "--summary-json", str(summary)]
    opts += ["--mock"] if url is None else ["--base-url", url, "--model", MODEL]
    if concurrency:
        opts += ["-j", "auto" if concurrency < 0 else str(concurrency)]
    return [*opts, *extra]


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
                messages.append(
                    {"role": "assistant", "content": r.choices[0].message.content or ""}
                )
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


def _client_floor(convs: list[dict[str, Any]], url: str, n: int) -> dict[str, int]:
    """Bare aiohttp on asyncio's loop, ``n`` requests in flight, longest first.

    Twice ``n`` conversations run at once, as in mtrun, so a freed slot always
    finds a request ready; nothing is recorded, checked or retried, and a
    failed turn ends its conversation. What it spends is the least any client
    in Python spends per turn, and its span the least this server allows.
    """
    import aiohttp

    counts = {"turns_ok": 0, "failed": 0}
    ordered = iter(sorted(convs, key=lambda c: -len(c["turns"])))
    headers = {"content-type": "application/json"}

    async def main() -> None:
        slots = asyncio.Semaphore(n)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n)) as session:

            async def replay() -> None:
                for conv in ordered:
                    messages: list[dict[str, Any]] = []
                    for turn in conv["turns"]:
                        messages.append({"role": "user", "content": turn})
                        body = json.dumps({"model": MODEL, "messages": messages}).encode()
                        async with (
                            slots,
                            session.post(
                                f"{url}/chat/completions", data=body, headers=headers
                            ) as response,
                        ):
                            answer = await response.read()
                        if response.status != 200:
                            counts["failed"] += 1
                            break
                        messages.append(json.loads(answer)["choices"][0]["message"])
                        counts["turns_ok"] += 1

            await asyncio.gather(*(replay() for _ in range(2 * n)))

    asyncio.run(main())
    return counts


def _client_raw(convs: list[dict[str, Any]], url: str, n: int) -> dict[str, int]:
    """The floor's replay over asyncio streams: one keep-alive connection per conversation task.

    HTTP/1.1 written by hand (a POST with Content-Length; answers read by their
    Content-Length, which the bench server always sends). Twice ``n`` tasks, ``n``
    requests in flight, longest conversations first, as the floor.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = f"{parts.path}/chat/completions"
    counts = {"turns_ok": 0, "failed": 0}
    ordered = iter(sorted(convs, key=lambda c: -len(c["turns"])))

    async def exchange(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
    ) -> tuple[int, bytes]:
        writer.write(
            f"POST {path} HTTP/1.1\r\nhost: {parts.netloc}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return int(head[0].split(" ")[1]), await reader.readexactly(length)

    async def main() -> None:
        slots = asyncio.Semaphore(n)

        async def replay() -> None:
            reader, writer = await asyncio.open_connection(host, port)
            try:
                for conv in ordered:
                    messages: list[dict[str, Any]] = []
                    for turn in conv["turns"]:
                        messages.append({"role": "user", "content": turn})
                        body = json.dumps({"model": MODEL, "messages": messages}).encode()
                        async with slots:
                            status, answer = await exchange(reader, writer, body)
                        if status != 200:
                            counts["failed"] += 1
                            break
                        messages.append(json.loads(answer)["choices"][0]["message"])
                        counts["turns_ok"] += 1
            finally:
                writer.close()

        await asyncio.gather(*(replay() for _ in range(2 * n)))

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
    elif kind == "e":
        out = _client_floor(convs, url, n)
    elif kind == "g":
        out = _client_raw(convs, url, n)
    else:
        out = _client_async_semaphore(convs, url, n)
    Path(result).write_text(json.dumps(out))
