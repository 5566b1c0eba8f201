"""Tools installed in the virtualenv that runs the tests (hadolint, kubernetes-validate and
check-jsonschema come with the `test` extra) count as installed even when the venv is not
activated, as with `.venv/bin/pytest`: its bin/ goes on PATH for require_tool to find them."""

import os
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def venv_tools_on_path():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
        yield
