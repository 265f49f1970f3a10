"""RunConfig's defaults and validation, RunControl's stop callback, errors' exit codes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from runner import ConfigError, RunConfig, RunControl, load_conversations, run_batch
from runner.cli import main
from runner.errors import (
    EXIT_FAILED,
    EXIT_USAGE,
    APIError,
    InputError,
    OutputError,
    RunnerError,
    TransientAPIError,
)
from runner.run.config import AUTO_CEILING, AUTO_START, check_config, conversations_in_flight
from runner.run.events import ConversationFinished, Event

EXAMPLES = Path(__file__).resolve().parent.parent / "conversations"


def test_python_callers_get_the_command_lines_defaults(tmp_path: Path) -> None:
    config = RunConfig(output=tmp_path / "o.jsonl")
    assert config.concurrency == "auto"
    assert (config.ceiling, config.starting_limit) == (AUTO_CEILING, AUTO_START)
    assert (config.timeout, config.retry.max_retries, config.retry.max_retry_after) == (
        120.0,
        6,
        120.0,
    )
    help_text = CliRunner().invoke(main, ["run", "--help"]).stdout
    assert f"'auto': up to {AUTO_CEILING}, starting at {AUTO_START}." in " ".join(help_text.split())
    fixed = RunConfig(output=tmp_path / "o.jsonl", concurrency=4)
    assert (fixed.ceiling, fixed.starting_limit) == (4, None)
    assert conversations_in_flight(fixed.ceiling) == 5


@pytest.mark.parametrize("concurrency", [0, -1, "lots"])
def test_a_bad_concurrency_is_refused(tmp_path: Path, concurrency: object) -> None:
    config = RunConfig(output=tmp_path / "o.jsonl", base_url="mock://", concurrency=concurrency)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--concurrency must be at least 1, or 'auto'"):
        check_config(config)


def test_the_stop_callback_is_detached_however_the_run_ends(tmp_path: Path) -> None:
    conversations = load_conversations([str(EXAMPLES / "list_form.yaml")])

    def broken_renderer(event: Event) -> None:
        if isinstance(event, ConversationFinished):
            raise ValueError("a bug in the caller's callback")

    control = RunControl()
    config = RunConfig(output=tmp_path / "o.jsonl", base_url="mock://")
    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(run_batch(conversations, config, on_event=broken_renderer, control=control))
    assert control.reason == "stopped by an internal error"
    seen: list[str] = []
    with control.on_stop(seen.append):  # free again: the failed run detached its callback
        pass
    fresh = RunControl()
    asyncio.run(run_batch(conversations, config_for(tmp_path / "p.jsonl"), control=fresh))
    with fresh.on_stop(seen.append):  # and so did the run that succeeded
        fresh.stop("done")
    assert seen == ["done"]


def config_for(output: Path) -> RunConfig:
    return RunConfig(output=output, base_url="mock://")


def test_a_control_drives_one_run_at_a_time() -> None:
    control = RunControl()
    with control.on_stop(lambda _reason: None), pytest.raises(RuntimeError):
        with control.on_stop(lambda _reason: None):
            pass


def test_each_error_class_carries_its_exit_code() -> None:
    assert RunnerError.exit_code == EXIT_USAGE
    assert InputError("x").exit_code == ConfigError.exit_code == OutputError.exit_code == 2
    assert APIError.exit_code == TransientAPIError.exit_code == EXIT_FAILED


def test_every_command_turns_its_error_into_one_line_and_its_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.jsonl").write_text("")
    (tmp_path / "taken.md").write_text("")
    cases = {
        ("--resume", "c.yaml"): "mtrun: error: --resume needs -o PATH: the output to continue",
        ("export", "t.jsonl", "-o", "taken.md"): "mtrun: error: taken.md already exists; "
        "choose another -o",
        ("report", "a", "b", "c"): "mtrun: error: give one transcript, or two to compare: "
        "mtrun report BASE NEW",
        ("--mock", "--shard", "3/2", str(EXAMPLES)): "mtrun: error: --shard '3/2': expected K/N",
    }
    for args, line in cases.items():
        result = CliRunner().invoke(main, list(args))
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith(line), (args, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
