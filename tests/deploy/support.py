"""Shared by the deploy tests: where the files are, running a tool, reading YAML.

Finding a tool is tests/tool_policy.py's require_tool, the project's one rule for it."""

import subprocess
from pathlib import Path

import yaml

from tool_policy import require_tool

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
GRAFANA = ROOT / "grafana"


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
