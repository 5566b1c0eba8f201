"""Shared helpers for the deploy tests: where the files are, and how to get at a tool."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
GRAFANA = ROOT / "grafana"


def require_tool(name: str) -> str:
    """The path of the command-line tool `name`, searched on PATH and beside this Python (a venv's bin/).

    A missing tool skips the test on a developer's machine, but fails it when CI is set:
    there every tool must be installed, and a skip would hide that it was not.
    """
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    path = shutil.which(name, path=search)
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not installed, and CI is set: CI must install it", pytrace=False)
    pytest.skip(f"{name} is not installed")


def run_tool(name: str, *args: str | Path, cwd: Path | None = None) -> str:
    """Runs the tool and returns its output; fails the test with that output when it exits non-zero."""
    result = subprocess.run(
        [require_tool(name), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{name} {' '.join(map(str, args))} exited {result.returncode}:\n{output}"
    return output


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def load_yaml_documents(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
