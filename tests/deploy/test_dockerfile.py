"""The Dockerfile: hadolint, and the rules of issue 3 that hadolint does not know."""

import json
import re

from .helpers import ROOT, run_tool

DOCKERFILE = ROOT / "Dockerfile"


def instructions():
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = (line.strip() for line in text.splitlines())
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def final_stage():
    steps = instructions()
    last_from = max(i for i, (name, _) in enumerate(steps) if name == "FROM")
    return steps[last_from:]


def test_hadolint_is_clean_at_warning_level():
    run_tool("hadolint", "--failure-threshold", "warning", DOCKERFILE)


def test_it_is_multi_stage():
    assert sum(name == "FROM" for name, _ in instructions()) >= 2


def test_the_image_runs_as_a_numeric_non_root_user():
    users = [args for name, args in final_stage() if name == "USER"]
    assert users, "the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be numeric (for runAsNonRoot) and not root"


def test_it_exposes_the_default_port_and_has_an_exec_form_entrypoint():
    stage = dict(final_stage())
    assert stage["EXPOSE"] == "10180"
    assert json.loads(stage["ENTRYPOINT"]) == ["cmx-connect-exporter"]


def test_the_healthcheck_uses_python_against_healthz():
    check = dict(final_stage())["HEALTHCHECK"]
    assert "/healthz" in check and "urllib" in check
    assert not re.search(r"\b(curl|wget)\b", check)


def test_no_setting_is_baked_in():
    baked = [args for name, args in instructions() if name in {"ENV", "ARG"} and "CMX_" in args]
    assert baked == []
