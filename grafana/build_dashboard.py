"""Writes grafana/dashboards/cmx-connect-exporter.json, the exporter's Grafana dashboard.

The four "sessions by ..." sections and the panels differ only in a few fields,
so they are built here rather than repeated by hand in the JSON. After editing,
run `python grafana/build_dashboard.py`; `--check` only reports whether the JSON
file is up to date, and the tests fail while it is not.

The JSON has no `__inputs`: the `datasource` template variable carries the
datasource, so the file works both through Grafana's import and through file
provisioning.
"""

import argparse
import json
import sys
from pathlib import Path

from cmx_connect_exporter.outcome import REASONS

OUTPUT = Path(__file__).parent / "dashboards" / "cmx-connect-exporter.json"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SELECTOR = 'job=~"$job", instance=~"$instance"'

# (label, title word) for each cmx_connect_active_sessions_by_<label> metric.
SPLITS = [
    ("authtype", "authentication type"),
    ("os", "operating system"),
    ("device", "device type"),
    ("language", "language"),
]

# Matches CMXConnectCountsStale in deploy/prometheus/alerts.yml.
STALE_AFTER_SECONDS = 300


def of(metric):
    """The metric, restricted to the dashboard's job and instance."""
    return f"{metric}{{{SELECTOR}}}"


def target(expr, legend="__auto", instant=False):
    return {
        "datasource": DATASOURCE,
        "refId": "A",
        "expr": expr,
        "legendFormat": legend,
        "instant": instant,
        "range": not instant,
    }


def thresholds(*steps):
    """Steps as (value, colour); the first value is None, the base."""
    return {"mode": "absolute", "steps": [{"value": value, "color": color} for value, color in steps]}


def panel(kind, title, description, unit, expr, legend="__auto", *,
          instant=False, options=None, defaults=None):
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target(expr, legend, instant)],
        "fieldConfig": {"defaults": {"unit": unit, **(defaults or {})}, "overrides": []},
        "options": options or {},
    }


def stat(title, description, unit, expr, legend="{{instance}}", *, steps=None, options=None, defaults=None):
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value",
        "graphMode": "none",
        "textMode": "auto",
        "justifyMode": "auto",
        "orientation": "auto",
        **(options or {}),
    }
    defaults = {
        "thresholds": thresholds(*(steps or [(None, "green")])),
        "color": {"mode": "thresholds"},
        **(defaults or {}),
    }
    return panel("stat", title, description, unit, expr, legend,
                 instant=True, options=options, defaults=defaults)


def timeseries(title, description, unit, expr, legend="{{instance}}", *, stacked=False, bars=False):
    custom = {
        "drawStyle": "bars" if bars else "line",
        "fillOpacity": 60 if stacked else 10,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
    }
    options = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel("timeseries", title, description, unit, expr, legend,
                 options=options, defaults={"custom": custom, "min": 0})


def piechart(title, description, unit, expr, legend):
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "pieType": "donut",
        "legend": {"displayMode": "table", "placement": "right", "showLegend": True,
                   "values": ["value", "percent"]},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return panel("piechart", title, description, unit, expr, legend, instant=True, options=options)


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def sessions_section():
    total = f"sum({of('cmx_connect_active_sessions')})"
    return [
        (row("Active sessions"), 24, 1),
        (stat("Active sessions now", "Guest Wi-Fi sessions active in CMX Connect, from the last "
              "complete poll.", "short", total, "Active sessions"), 6, 8),
        (timeseries("Active sessions over time", "Active sessions per exporter instance.", "short",
                    of("cmx_connect_active_sessions")), 18, 8),
    ]


def split_section(label, word):
    expr = f"sum by ({label}) ({of('cmx_connect_active_sessions_by_' + label)})"
    legend = "{{" + label + "}}"
    return [
        (row(f"Sessions by {word}"), 24, 1),
        (piechart(f"By {word} now", f"Active sessions by {word}, from the last complete poll.",
                  "short", expr, legend), 8, 8),
        (timeseries(f"By {word} over time", f"Active sessions by {word}, stacked: the series add up "
                    "to the total.", "short", expr, legend, stacked=True), 16, 8),
    ]


def health_section():
    errors = of("cmx_connect_poll_errors_total")
    up_mappings = [{"type": "value", "options": {
        "0": {"text": "DOWN", "color": "red", "index": 0},
        "1": {"text": "UP", "color": "green", "index": 1},
    }}]
    return [
        (row("Exporter health"), 24, 1),
        (stat("CMX polling", "1 (UP) when the exporter's last poll of CMX Connect completed.", "none",
              of("cmx_connect_up"), steps=[(None, "red"), (1, "green")],
              options={"colorMode": "background"}, defaults={"mappings": up_mappings}), 6, 5),
        (stat("Age of last successful poll", "Time since the last complete poll. The alert "
              f"CMXConnectCountsStale fires past {STALE_AFTER_SECONDS} s.", "s",
              "time() - " + of("cmx_connect_last_success_timestamp_seconds"),
              steps=[(None, "green"), (STALE_AFTER_SECONDS // 2, "orange"),
                     (STALE_AFTER_SECONDS, "red")]), 6, 5),
        (stat("Failed polls in time range", "Polls that failed, for any reason, in the dashboard's "
              "time range.", "short", f"sum(increase({errors}[$__range]))", "Failed polls",
              steps=[(None, "green"), (1, "red")]), 6, 5),
        (stat("Exporter version", "Version of each exporter instance.", "none",
              of("cmx_connect_exporter_build_info"), "{{instance}}: {{version}}",
              options={"textMode": "name"}), 6, 5),
        (timeseries("Poll duration", "How long the last complete poll of CMX Connect took.", "s",
                    of("cmx_connect_poll_duration_seconds")), 8, 8),
        (timeseries("Requests per poll", "HTTP requests (pages) the last complete poll made.", "short",
                    of("cmx_connect_poll_requests")), 8, 8),
        (timeseries("Poll errors by reason", f"Failed polls by reason: {', '.join(REASONS[:-1])} or {REASONS[-1]}.",
                    "short",
                    f"sum by (reason) (increase({errors}[$__rate_interval]))",
                    "{{reason}}", stacked=True, bars=True), 8, 8),
    ]


def laid_out(sections):
    """Numbers the panels and places them left to right, wrapping at Grafana's 24 columns."""
    panels, x, y, row_height = [], 0, 0, 0
    for number, (item, width, height) in enumerate((p for s in sections for p in s), start=1):
        if x + width > 24:
            x, y, row_height = 0, y + row_height, 0
        panels.append({"id": number, "gridPos": {"x": x, "y": y, "w": width, "h": height}, **item})
        x, row_height = x + width, max(row_height, height)
    return panels


def query_variable(name, label, query):
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": query,
        "refresh": 2,
        "sort": 1,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {},
        "options": [],
        "regex": "",
        "hide": 0,
    }


def templating():
    return {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "options": [], "refresh": 1, "regex": "", "hide": 0},
        query_variable("job", "Job", "label_values(cmx_connect_up, job)"),
        query_variable("instance", "Instance", 'label_values(cmx_connect_up{job=~"$job"}, instance)'),
    ]}


def build():
    sections = [sessions_section(), *(split_section(label, word) for label, word in SPLITS), health_section()]
    return {
        "id": None,
        "uid": "cmx-connect-exporter",
        "title": "CMX Connect guest Wi-Fi sessions",
        "description": "Active guest Wi-Fi sessions in Cisco CMX Connect, from cmx-connect-exporter.",
        "tags": ["cmx-connect", "cisco", "wifi", "prometheus-exporter"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "schemaVersion": 39,
        "version": 1,
        "links": [],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
            "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
            "type": "dashboard",
        }]},
        "templating": templating(),
        "panels": laid_out(sections),
    }


def render():
    return json.dumps(build(), indent=2) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the JSON file is up to date")
    args = parser.parse_args(argv)
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != render():
            print(f"{OUTPUT} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
