"""The rule for missing tools: skip on a developer's machine, fail under CI."""

import pytest

from .helpers import require_tool

MISSING = "no-such-tool-cmx-connect"


def test_a_present_tool_is_found():
    assert require_tool("python3").endswith("python3")


def test_a_missing_tool_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_tool(MISSING)


def test_a_missing_tool_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must install it"):
        require_tool(MISSING)
