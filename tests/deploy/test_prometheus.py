"""deploy/prometheus through promtool: the config, the rules and the rules' unit tests."""

from .support import DEPLOY, run_tool

PROMETHEUS = DEPLOY / "prometheus"


def test_prometheus_config_is_valid_and_loads_the_rules():
    output = run_tool("promtool", "check", "config", PROMETHEUS / "prometheus.yml")
    assert "SUCCESS: 1 rule files found" in output


def test_sharded_prometheus_config_is_valid_and_loads_the_rules():
    output = run_tool("promtool", "check", "config", PROMETHEUS / "prometheus-sharded.yml")
    assert "SUCCESS: 1 rule files found" in output


def test_alert_rules_are_valid():
    run_tool("promtool", "check", "rules", PROMETHEUS / "alerts.yml")


def test_alert_rule_unit_tests_pass():
    run_tool("promtool", "test", "rules", "alerts_test.yml", cwd=PROMETHEUS)
