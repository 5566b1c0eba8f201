"""The rule for missing tools, which the deploy tests rely on: skip on a developer's machine, fail under CI."""

import pytest

from tool_policy import require_tool

MISSING = "no-such-tool-cmx-connect"


def test_a_tool_of_the_test_venv_is_found():
    assert require_tool("hadolint")


def test_a_missing_tool_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_tool(MISSING)


def test_a_missing_tool_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        require_tool(MISSING)
