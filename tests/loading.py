"""Loading one conversation file through the real entry point, named as a user would name it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from runner.spec.loader import load_conversations
from runner.spec.model import Conversation


def load_as(path: Path, display: str | None = None) -> list[Conversation]:
    """The conversations of ``path``, by :func:`load_conversations`; messages name it ``display``.

    A user in another folder would name the file ``display``: the file is
    copied there, in a fresh folder, and loaded from that folder.
    """
    if display is None or display == str(path):
        return load_conversations([str(path)])
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder, display)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        before = os.getcwd()
        os.chdir(folder)
        try:
            return load_conversations([display])
        finally:
            os.chdir(before)
