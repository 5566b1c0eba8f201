"""The dashboard and the alert rules use only metric names the exporter really serves."""

import re

import pytest

from cmx_connect_exporter.counting.dimensions import (
    ACTIVE_SESSIONS,
    BYTES,
    DIMENSIONS,
    DWELL,
    LOGINS,
    UNREADABLE_LOGIN_TIME,
    VISITORS_TODAY,
    VISITORS_TODAY_BY_VISIT,
    VISITORS_TODAY_STAY,
)
from cmx_connect_exporter.exposition.names import (
    BUILD_INFO,
    LAST_SUCCESS,
    POLL_DURATION,
    POLL_ERRORS,
    POLL_REQUESTS,
    UP,
)

from . import dashboard as board
from .support import DEPLOY, load_yaml

# The metric names fixed in issue 2, the exporter's contract: the catalogue and the names module must keep them.
CONTRACT = {
    "cmx_connect_up",
    "cmx_connect_active_sessions",
    "cmx_connect_active_sessions_by_authtype",
    "cmx_connect_active_sessions_by_os",
    "cmx_connect_active_sessions_by_device",
    "cmx_connect_active_sessions_by_language",
    "cmx_connect_last_success_timestamp_seconds",
    "cmx_connect_poll_duration_seconds",
    "cmx_connect_poll_requests",
    "cmx_connect_poll_errors_total",
    "cmx_connect_exporter_build_info",
    # issue 11
    "cmx_connect_active_sessions_by_site",
    "cmx_connect_active_sessions_by_portal",
    "cmx_connect_active_sessions_by_portal_type",
    "cmx_connect_active_sessions_by_visit",
    "cmx_connect_active_session_duration_seconds_bucket",
    "cmx_connect_active_session_bytes",
    "cmx_connect_logins_total",
    "cmx_connect_visitors_today",
    "cmx_connect_visitors_today_by_visit",
}
# What the exporter serves, read from where it is defined: a new dimension's metric is served too.
SERVED = {ACTIVE_SESSIONS, *(dimension.metric for dimension in DIMENSIONS), UP.name, LAST_SUCCESS.name,
          POLL_DURATION.name, POLL_REQUESTS.name, f"{POLL_ERRORS.name}_total", BUILD_INFO.name,
          *(f"{histogram}_{series}" for histogram in (DWELL.metric, VISITORS_TODAY_STAY.metric)
            for series in ("bucket", "sum", "count")), BYTES.metric,
          UNREADABLE_LOGIN_TIME.metric, f"{LOGINS.metric}_total", VISITORS_TODAY.metric, VISITORS_TODAY_BY_VISIT.metric}
# Prometheus's own per-target series, which the exporter-down alert needs.
FROM_PROMETHEUS = {"up"}

DASHBOARD = board.load()
DASHBOARD_QUERIES = [target["expr"] for _, target in board.targets(DASHBOARD)] + [
    board.variable_query(variable) for variable in board.query_variables(DASHBOARD)
]
RULES = load_yaml(DEPLOY / "prometheus" / "alerts.yml")
RULE_QUERIES = [rule["expr"] for group in RULES["groups"] for rule in group["rules"]]


def metric_names(promql):
    """Names that prefix a {selector}, and any cmx_ name, in a PromQL expression."""
    return set(re.findall(r"([A-Za-z_:][\w:]*)\s*\{", promql)) | set(re.findall(r"\bcmx_\w+", promql))


@pytest.mark.parametrize("promql", DASHBOARD_QUERIES)
def test_dashboard_queries_use_served_metrics_only(promql):
    assert metric_names(promql), "no metric found"
    assert metric_names(promql) <= SERVED


@pytest.mark.parametrize("promql", RULE_QUERIES)
def test_alert_rules_use_served_metrics_only(promql):
    assert metric_names(promql), "no metric found"
    assert metric_names(promql) <= SERVED | FROM_PROMETHEUS


def test_the_dashboard_shows_every_served_metric():
    shown = set().union(*map(metric_names, DASHBOARD_QUERIES))
    assert shown >= SERVED


def test_the_contracted_names_are_still_served() -> None:
    assert CONTRACT <= SERVED
