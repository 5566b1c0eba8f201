"""The alert rules: complete annotations, a unit test for each alert, and the
PrometheusRule kept equal to deploy/prometheus/alerts.yml, the one source."""

import pytest

from .support import DEPLOY, load_yaml

RULES = load_yaml(DEPLOY / "prometheus" / "alerts.yml")
ALERTS = [rule for group in RULES["groups"] for rule in group["rules"] if "alert" in rule]


def test_the_issue_s_alerts_are_there():
    expressions = " ".join(alert["expr"] for alert in ALERTS)
    for needed in ["up{", "cmx_connect_up == 0", "time() - cmx_connect_last_success_timestamp_seconds",
                   'increase(cmx_connect_poll_errors_total{reason="auth"}']:
        assert needed in expressions


@pytest.mark.parametrize("alert", ALERTS, ids=lambda alert: alert["alert"])
def test_each_alert_has_a_severity_summary_description_and_runbook(alert):
    assert alert["labels"]["severity"] in {"warning", "critical"}
    for key in ["summary", "description", "runbook"]:
        assert alert["annotations"].get(key, "").strip(), f"{alert['alert']} has no {key}"


@pytest.mark.parametrize("alert", ALERTS, ids=lambda alert: alert["alert"])
def test_each_alert_has_unit_tests_where_it_fires_and_where_it_stays_quiet(alert):
    unit_tests = load_yaml(DEPLOY / "prometheus" / "alerts_test.yml")
    cases = [case for test in unit_tests["tests"] for case in test.get("alert_rule_test", [])
             if case["alertname"] == alert["alert"]]
    assert any(case.get("exp_alerts") for case in cases), "no unit test sees it fire"
    assert any(not case.get("exp_alerts") for case in cases), "no unit test sees it stay quiet"


def test_the_prometheus_rule_carries_exactly_the_standalone_rules():
    prometheus_rule = load_yaml(DEPLOY / "kubernetes" / "prometheusrule.yaml")
    assert prometheus_rule["kind"] == "PrometheusRule"
    assert prometheus_rule["spec"]["groups"] == RULES["groups"]
