"""Hugging Face ``transformers serve``, the real server, on loopback with a tiny local model.

The server lives in its own virtualenv, apart from mtrun's (torch is large and
mtrun never imports it): ``$MTRUN_TSERVE_VENV``, by default
:data:`DEFAULT_VENV`, which ``.ci/run`` makes with
``pip install torch==2.13.0 'transformers[serving]==5.24.0'`` (torch first and
pinned, so nothing pulls a CUDA build). :func:`server_venv` says where it is
or why it is missing.

:func:`build_model` builds the model with that virtualenv's Python
(``realserve_model.py``: random weights, a local tokenizer, nothing from the
hub); :class:`TransformersServe` is ``transformers serve MODEL`` on a free
loopback port with the hub switched off, ready once ``/health`` answers and
one short warm-up request (the first generation pays for lazy set-up) did;
:func:`serving` starts several at once and stops them at the end.

What the server does, read from transformers 5.24's ``cli/serving``: without
``--continuous-batching`` every generation runs on one inference thread, one
at a time, and the rest wait in its queue: a server with one slot that never
answers 429. A stream starts at once with a chunk holding only the role, so
a queued stream sends its headers and that chunk long before its first
token; it ends with a chunk carrying ``finish_reason`` and ``usage``, and no
``[DONE]``. ``max_tokens`` is honoured; a ``model`` other than the one it
was started with is a 400, a field outside OpenAI's schema a 422. With
:data:`CONTINUOUS_BATCHING` it generates for every request at once instead
(eight 192-token answers asked together came back together, in about a
third of the time one after another takes): a server with many slots.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from helpers import free_port

DEFAULT_VENV = Path("/opt/mtrun-tserve")
"""Where ``.ci/run`` installs the server; ``MTRUN_TSERVE_VENV`` names another."""
START_S = 180.0
"""How long the server may take to answer ``/health`` (about 10 s on a quiet machine)."""
BUILDER = Path(__file__).resolve().parent / "realserve_model.py"


class ServerError(Exception):
    """The server could not be built or started; the message says why."""


def server_venv() -> tuple[Path | None, str]:
    """The server's virtualenv, or None and why it is not usable."""
    venv = Path(os.environ.get("MTRUN_TSERVE_VENV") or DEFAULT_VENV)
    for tool in ("python", "transformers"):
        if not (venv / "bin" / tool).exists():
            return None, (
                f"{venv / 'bin' / tool} not found (set MTRUN_TSERVE_VENV, or: python3 -m venv "
                f"{venv} && {venv}/bin/pip install torch==2.13.0 'transformers[serving]==5.24.0')"
            )
    return venv, ""


def environ(folder: Path) -> dict[str, str]:
    """The hub off, caches in the test's folder, one torch thread (the machine is shared)."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(folder / "hf-home"),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }


def build_model(venv: Path, folder: Path) -> Path:
    """The tiny model, saved in ``folder/model`` by the server's Python (``realserve_model.py``)."""
    model = folder / "model"
    built = subprocess.run(
        [str(venv / "bin" / "python"), str(BUILDER), str(model)],
        env=environ(folder),
        capture_output=True,
        text=True,
        timeout=START_S,
    )
    if built.returncode != 0:
        raise ServerError(f"building the model failed: {built.stderr[-2000:]}")
    return model


CONTINUOUS_BATCHING = (
    "--continuous-batching",
    "--cb-num-blocks",
    "256",
    "--cb-block-size",
    "32",
    "--cb-max-batch-tokens",
    "512",
)
"""The server generating for many requests at once, with a small KV cache: by default it
takes a share of the machine's memory (5.7 GB resident seen here) and 20 s to set up."""


class TransformersServe:
    """``transformers serve MODEL FLAGS...`` on a free loopback port, from start to stop."""

    def __init__(self, venv: Path, model: Path, log: Path, *flags: str) -> None:
        self.venv = venv
        self.model = str(model)
        """The model's path: the name requests must give (the server is pinned to it)."""
        self.flags = flags
        self.port = free_port()
        self.log = log
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        """Start the server; it loads for a while (:meth:`wait_ready`)."""
        command = [str(self.venv / "bin" / "transformers"), "serve", self.model]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu"]
        with self.log.open("wb") as log:
            self._proc = subprocess.Popen(
                [*command, *self.flags],
                env=environ(self.log.parent),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        """Wait for ``/health``, then warm up: the first generation sets things up."""
        self._wait_healthy()
        self.chat([{"role": "user", "content": "w1 w2"}], max_tokens=4)

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ServerError(f"transformers serve exited: {self.log_tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).is_success:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)  # a real process starting: nothing to wait on but the clock
        raise ServerError(f"no /health within {START_S:.0f} s: {self.log_tail()}")

    def chat(self, messages: list[dict[str, Any]], *, max_tokens: int) -> dict[str, Any]:
        """The server's own answer to ``messages``, asked directly (not through mtrun)."""
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens}
        answer = httpx.post(f"{self.base_url}/chat/completions", json=body, timeout=60)
        answer.raise_for_status()
        data: dict[str, Any] = answer.json()
        return data

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def stop(self) -> None:
        """Stop the server this object started (and only it)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@contextlib.contextmanager
def serving(*servers: TransformersServe) -> Iterator[None]:
    """The servers started together (each loads on its own core) and stopped at the end."""
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        yield
    finally:
        for server in servers:
            server.stop()
