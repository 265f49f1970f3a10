"""The command line's event loop: uvloop's when installed, asyncio's otherwise."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from runner.cli.eventloop import run_on_fast_loop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not installed on Windows")
def test_a_run_goes_on_uvloop_when_it_is_installed() -> None:
    assert run_on_fast_loop(_loop_module()).startswith("uvloop")


def test_without_uvloop_a_run_goes_on_asyncio_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop: ImportError
    assert run_on_fast_loop(_loop_module()).startswith("asyncio")


@pytest.mark.skipif(sys.platform == "win32", reason="no POSIX signals")
def test_the_signal_handlers_a_run_installs_hear_the_signal_on_either_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def heard() -> list[str]:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[str] = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, got.set_result, "SIGTERM")
        try:
            signal.raise_signal(signal.SIGTERM)
            return [await asyncio.wait_for(got, 5)]
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    assert run_on_fast_loop(heard()) == ["SIGTERM"]
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert run_on_fast_loop(heard()) == ["SIGTERM"]
