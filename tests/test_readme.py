"""The README's examples still work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runner.spec.loader import load_conversations

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
YAML_BLOCKS = re.findall(r"```yaml\n(.*?)```", README, re.DOTALL)


def test_the_readme_has_yaml_examples() -> None:
    assert len(YAML_BLOCKS) >= 3


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=lambda b: b.splitlines()[0][:40])
def test_every_yaml_example_loads(block: str, tmp_path: Path) -> None:
    path = tmp_path / "example.yaml"
    path.write_text(block, encoding="utf-8")
    assert load_conversations([str(path)])


def test_the_readme_starts_with_the_two_setup_commands() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.DOTALL)
    assert first_block is not None
    commands = first_block.group(1).strip().splitlines()
    assert commands == [
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e . "
        "&& mtrun --mock conversations/*.yaml",
        "pip install -e '.[dev]' && pytest",
    ]
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert commands[1] in ci  # CI runs exactly README's test command


def test_ci_examples_are_valid_yaml_using_real_options() -> None:
    import yaml
    from click.testing import CliRunner

    from runner.cli import main

    help_text = CliRunner().invoke(main, ["run", "--help"]).stdout
    docs = Path(__file__).resolve().parent.parent / "docs" / "ci"
    files = sorted(docs.glob("*.yml"))
    assert [f.name for f in files] == ["github-actions.yml", "gitlab-ci.yml"]
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert isinstance(yaml.safe_load(text), dict)
        used = set(re.findall(r"mtrun [^\n]*?(--[a-z][a-z-]+)", text))
        used |= set(re.findall(r"^\s+(--[a-z][a-z-]+)", text, re.MULTILINE))
        assert used, path
        for option in used:
            assert option in help_text or option == "--fail-on", (path.name, option)


def test_scale_out_examples_parse_and_use_real_options() -> None:
    import yaml
    from click.testing import CliRunner

    from runner.cli import main

    help_text = CliRunner().invoke(main, ["run", "--help"]).stdout
    folder = Path(__file__).resolve().parent.parent / "docs" / "scale-out"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["github-matrix.yml", "k8s-indexed-job.yaml", "slurm-array.sbatch"]
    for name in ("github-matrix.yml", "k8s-indexed-job.yaml"):
        assert isinstance(yaml.safe_load((folder / name).read_text()), dict)
    for path in folder.iterdir():
        text = path.read_text()
        options = set(re.findall(r"mtrun [^\n]*?(--[a-z][a-z-]+)", text))
        options |= set(re.findall(r"^\s+(--[a-z][a-z-]+)", text, re.MULTILINE))
        assert "--shard" in options, path.name
        for option in options - {"--conversations"}:
            assert option in help_text, (path.name, option)


def test_the_literal_brace_forms_the_readme_documents_work(tmp_path: Path) -> None:
    (block,) = [b for b in YAML_BLOCKS if b.startswith("id: braces\n")]
    path = tmp_path / "braces.yaml"
    path.write_text(block, encoding="utf-8")
    (conversation,) = load_conversations([str(path)])
    assert [turn.content for turn in conversation.turns] == [
        "Hello Ada, this stays {{name}}",
        "{{name}} in single quotes",
        "{{name}} in double quotes",
        "{{name}} in a block\n",
    ]
    sent = re.search(r"sends `([^`]*)`, then `([^`]*)`", README)
    assert sent is not None and sent.groups() == tuple(
        conversation.turns[i].content for i in (0, 1)
    )


def test_the_form_the_readme_calls_an_error_is_one_with_a_hint(tmp_path: Path) -> None:
    from runner.errors import InputError

    assert '(`"\\{{"` is a YAML error)' in README
    path = tmp_path / "bad.yaml"
    path.write_text('turns:\n  - "\\{{name}}"\n', encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_conversations([str(path)])
    assert str(caught.value) == (
        f"{path}:2:7: YAML syntax error: found unknown escape character '{{'; "
        "inside double quotes write \\\\{{ for a literal {{, or use single quotes"
    )


def test_the_python_api_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = re.findall(r"## Python API\n.*?```python\n(.*?)```", README, re.DOTALL)
    assert len(blocks) == 1
    root = Path(__file__).resolve().parent.parent
    (tmp_path / "conversations").symlink_to(root / "conversations")
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "README.md", "exec"), {})
    completed, failed, tokens = capsys.readouterr().out.splitlines()[0].split()
    records = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert int(failed) == 0 and int(completed) >= 1 and int(tokens) > 0
    assert len(records) >= int(completed)


def test_the_public_api_is_what_init_lists() -> None:
    import runner

    for name in runner.__all__:
        assert getattr(runner, name) is not None, name
    from runner.run.engine import run_batch

    assert runner.run_batch is run_batch
    with pytest.raises(AttributeError):
        runner.no_such_name  # noqa: B018 - the attribute access is the test


def test_importing_the_cli_imports_no_run_machinery() -> None:
    """``mtrun --help`` stays fast: the lazy exports import nothing until used."""
    import subprocess
    import sys

    code = (
        "import sys, runner.cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('runner.run.engine', 'httpx'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
