"""The CI tool policy: a test whose tool or privilege is missing skips on a developer's machine, fails in CI."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def require(available: bool, what: str) -> None:
    """Skip a test whose tool or privilege is missing, except in CI, where that is a failure."""
    if not available:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is required in CI but is missing")
        pytest.skip(f"{what} is missing")


def require_tool(name: str) -> str:
    """The tool's path; skip without it, except in CI, where a missing tool is a failure.

    Tools of the ``test`` extra count as installed when pytest runs from the virtualenv
    without it being activated, as with ``.venv/bin/pytest``.
    """
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    require(path is not None, f"{name} on PATH")
    assert path is not None
    return path
