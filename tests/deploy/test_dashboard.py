"""The Grafana dashboard JSON: shape, variables, units and the panels issue 3 lists."""

import json
import re
import runpy

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from cmx_connect_exporter.counting import dimensions
from cmx_connect_exporter.counting.dimensions import ACTIVE_SESSIONS, DIMENSIONS, Dimension
from cmx_connect_exporter.exposition.names import (
    BUILD_INFO,
    LAST_SUCCESS,
    POLL_DURATION,
    POLL_ERRORS,
    POLL_REQUESTS,
    TARGET_LABEL,
    UP,
)

from . import dashboard as board
from .support import GRAFANA

DASHBOARD = board.load()
PANELS = [panel for panel in board.panels(DASHBOARD) if panel["type"] != "row"]
TARGETS = board.targets(DASHBOARD)
BUILDER = GRAFANA / "build_dashboard.py"


def exprs_of(panel_type):
    return [target["expr"] for panel in PANELS if panel["type"] == panel_type for target in panel["targets"]]


def test_the_json_is_what_build_dashboard_py_writes():
    builder = runpy.run_path(str(BUILDER))
    assert board.DASHBOARD_FILE.read_text() == builder["render"](), "run python grafana/build_dashboard.py"


def changed_or_lost(original, copy, path=""):
    """The paths where `copy` lacks or alters what `original` has; what `copy` adds is not counted."""
    if isinstance(original, dict) and isinstance(copy, dict):
        for key, value in original.items():
            if key in copy:
                yield from changed_or_lost(value, copy[key], f"{path}/{key}")
            else:
                yield f"{path}/{key}"
    elif isinstance(original, list) and isinstance(copy, list) and len(original) == len(copy):
        for index, (item, copied) in enumerate(zip(original, copy, strict=True)):
            yield from changed_or_lost(item, copied, f"{path}/{index}")
    elif original != copy:
        yield path


def test_the_sdk_s_typed_models_read_back_every_key_of_the_json():
    """Decoding through grafana-foundation-sdk's models keeps only the fields they know, with each
    panel's options, field config and Prometheus queries decoded by the plugin's own model: a key
    lost here is one Grafana 11.6's schema does not have."""
    register_default_plugins()
    decoded = json.loads(JSONEncoder().encode(Dashboard.from_json(DASHBOARD)))
    assert list(changed_or_lost(DASHBOARD, decoded)) == []


def test_a_new_dimension_in_the_catalogue_gets_its_section_with_no_change_to_the_builder(monkeypatch):
    extra = Dimension("ssid", ("ssid",), "network name")
    monkeypatch.setattr(dimensions, "DIMENSIONS", (*DIMENSIONS, extra))
    built = json.loads(runpy.run_path(str(BUILDER))["render"]())
    assert "Sessions by network name" in [panel["title"] for panel in built["panels"] if panel["type"] == "row"]
    assert any(f"{extra.metric}{{" in target["expr"] for _, target in board.targets(built))
    ids = [panel["id"] for panel in board.panels(built)]
    assert len(ids) == len(set(ids)) == len(DASHBOARD["panels"]) + 3


def test_it_has_no_inputs_and_no_import_placeholders():
    assert "__inputs" not in DASHBOARD
    assert "${DS_" not in board.DASHBOARD_FILE.read_text()


def test_identity_tags_and_refresh():
    assert DASHBOARD["uid"] == "cmx-connect-exporter"
    assert DASHBOARD["tags"]
    assert DASHBOARD["refresh"] == "1m"


def test_panel_ids_are_unique():
    ids = [panel["id"] for panel in board.panels(DASHBOARD)]
    assert len(ids) == len(set(ids))


def test_a_datasource_variable_and_job_and_instance_variables():
    variables = {variable["name"]: variable for variable in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert board.variable_query(variables["job"]).startswith("label_values(")
    assert '$job' in board.variable_query(variables["instance"])


def test_every_panel_and_query_uses_the_datasource_variable():
    for panel in PANELS:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(target["datasource"]["uid"] == "${datasource}" for target in panel["targets"])


@pytest.mark.parametrize("panel", PANELS, ids=lambda panel: panel["title"])
def test_every_panel_has_a_unit(panel):
    assert panel["fieldConfig"]["defaults"].get("unit")


@pytest.mark.parametrize(("title", "target"), TARGETS, ids=[title for title, _ in TARGETS])
def test_every_query_is_filtered_by_job_and_instance(title, target):
    assert 'job=~"$job"' in target["expr"] and 'instance=~"$instance"' in target["expr"]


@pytest.mark.parametrize(("title", "target"), TARGETS, ids=[title for title, _ in TARGETS])
def test_rate_and_increase_use_grafana_s_intervals(title, target):
    windows = re.findall(r"\b(?:rate|irate|increase)\([^\[]*\[([^\]]+)\]", target["expr"])
    assert set(windows) <= {"$__rate_interval", "$__range"}


def test_active_sessions_now_and_over_time():
    assert any(f"{ACTIVE_SESSIONS}{{" in expr for expr in exprs_of("stat"))
    assert any(f"{ACTIVE_SESSIONS}{{" in expr for expr in exprs_of("timeseries"))


@pytest.mark.parametrize("dimension", DIMENSIONS, ids=lambda dimension: dimension.label)
def test_each_dimension_is_shown_now_and_stacked_over_time(dimension):
    metric = f"{dimension.metric}{{"
    assert any(metric in expr for expr in exprs_of("piechart") + exprs_of("bargauge"))
    stacked = [panel for panel in PANELS if panel["type"] == "timeseries"
               and any(metric in target["expr"] for target in panel["targets"])]
    assert stacked and stacked[0]["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"


@pytest.mark.parametrize("needed", [
    f"{UP.name}{{",
    f"time() - {LAST_SUCCESS.name}{{",
    f"{POLL_DURATION.name}{{",
    f"{POLL_REQUESTS.name}{{",
    f"sum by (reason) (increase({POLL_ERRORS.name}_total{{",
])
def test_the_exporter_health_panels(needed):
    assert any(needed in target["expr"] for _, target in TARGETS)


def test_a_cmx_variable_filters_every_query_about_a_cmx():
    variables = {variable["name"]: variable for variable in DASHBOARD["templating"]["list"]}
    assert board.variable_query(variables[TARGET_LABEL]).endswith(f", {TARGET_LABEL})")
    per_cmx = [target["expr"] for _, target in TARGETS if BUILD_INFO.name not in target["expr"]]
    assert all(f'{TARGET_LABEL}=~"${TARGET_LABEL}"' in expr for expr in per_cmx)


def test_an_overview_table_with_one_row_per_cmx():
    (overview,) = [panel for panel in PANELS if panel["type"] == "table"]
    assert all(target["expr"].startswith(("max by (cmx)", "sum by (cmx)")) and target["format"] == "table"
               and target["instant"] for target in overview["targets"])
    assert [t["id"] for t in overview["transformations"]] == ["merge", "organize"]
