"""Reading the Grafana dashboard: its panels, its PromQL, and Grafana's variable substitution."""

import json
import re

from .support import GRAFANA

DASHBOARD_FILE = GRAFANA / "dashboards" / "cmx-connect-exporter.json"

# $name, ${name}, ${name:format} and [[name]]: the forms Grafana substitutes.
VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")
LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?(\w+)\)$")


def load():
    return json.loads(DASHBOARD_FILE.read_text())


def panels(dashboard):
    """Every panel, including those folded into collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def targets(dashboard):
    """(panel title, target) for every Prometheus query of every panel."""
    return [(panel["title"], target) for panel in panels(dashboard) for target in panel.get("targets", [])]


def query_variables(dashboard):
    return [variable for variable in dashboard["templating"]["list"] if variable["type"] == "query"]


def variable_query(variable):
    """The query text of a query variable, in either of the forms Grafana stores."""
    query = variable["query"]
    return query["query"] if isinstance(query, dict) else query


def substitute(text, values):
    """Replaces Grafana variables as Grafana would; a variable missing from `values` raises KeyError."""
    return VARIABLE.sub(lambda match: values[next(group for group in match.groups() if group)], text)
