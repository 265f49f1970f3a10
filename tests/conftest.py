"""Shared test helpers: no real sleeping, no real keys, no network."""

from __future__ import annotations

import pytest

KEY_VARS = ("MTRUN_API_KEY", "ARCEE_API_KEY", "OPENAI_API_KEY", "MTRUN_BASE_URL", "MTRUN_MODEL")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's real keys or endpoint settings."""
    for name in KEY_VARS:
        monkeypatch.delenv(name, raising=False)
