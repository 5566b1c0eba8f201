"""The Dockerfile: hadolint, and the rules of issue 3 that hadolint does not know.
test_e2e_prometheus.py runs its health check against a live exporter."""

import json
import re

from .dockerfile import DOCKERFILE, final_stage, healthcheck_command, instructions
from .support import run_tool


def test_hadolint_is_clean_at_warning_level():
    run_tool("hadolint", "--failure-threshold", "warning", DOCKERFILE)


def test_it_is_multi_stage():
    assert sum(name == "FROM" for name, _ in instructions()) >= 2


def test_the_image_runs_as_a_numeric_non_root_user():
    uid = final_stage()["USER"].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be numeric (for runAsNonRoot) and not root"


def test_it_exposes_the_default_port_and_has_an_exec_form_entrypoint():
    stage = final_stage()
    assert stage["EXPOSE"] == "10180"
    assert json.loads(stage["ENTRYPOINT"]) == ["cmx-connect-exporter"]


def test_the_healthcheck_is_the_packages_own_probe_run_by_python():
    assert healthcheck_command() == ["python", "-m", "cmx_connect_exporter.healthcheck"]
    assert not re.search(r"\b(curl|wget)\b", final_stage()["HEALTHCHECK"])


def test_no_setting_is_baked_in():
    baked = [args for name, args in instructions() if name in {"ENV", "ARG"} and "CMX_" in args]
    assert baked == []
