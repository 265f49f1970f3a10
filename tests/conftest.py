"""Shared test fixtures: no real sleeping, no real keys, no network."""

from __future__ import annotations

import pytest
import virtualtime

KEY_VARS = ("MTRUN_API_KEY", "ARCEE_API_KEY", "OPENAI_API_KEY", "MTRUN_BASE_URL", "MTRUN_MODEL")
GITHUB_VARS = ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITHUB_WORKSPACE")
"""Set in every GitHub Actions step; a test that wants them sets them itself."""
NETWORK_VARS = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's real keys, endpoint, proxy, CA or GitHub settings."""
    for name in (*KEY_VARS, *GITHUB_VARS):
        monkeypatch.delenv(name, raising=False)
    for name in NETWORK_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture(autouse=True)
def virtual_time() -> None:
    """Every test's virtual clock (``virtualtime.py``) starts at the same time."""
    virtualtime.reset()
