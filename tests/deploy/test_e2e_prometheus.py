"""End to end: the simulator, the exporter polling it, and a real Prometheus on loopback
scraping the exporter with the project's scrape job and alert rules. Then every PromQL
expression of the dashboard, its variables substituted as Grafana would, and of the alert
rules goes through Prometheus's HTTP API."""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass

import pytest
import yaml

from cmx_connect_exporter.counting.dimensions import SITE
from cmx_simulator.vocabulary import SITES

from . import dashboard as board
from .dockerfile import healthcheck_command
from .support import DEPLOY, ROOT, load_yaml, require_tool

pytestmark = pytest.mark.slow

SCRAPE_INTERVAL_SECONDS = 1
STARTUP_TIMEOUT = 30
DATA_TIMEOUT = 60
RULES_FILE = DEPLOY / "prometheus" / "alerts.yml"
ALERTS = [rule for group in load_yaml(RULES_FILE)["groups"] for rule in group["rules"] if "alert" in rule]
DASHBOARD = board.load()
TARGETS = board.targets(DASHBOARD)


@dataclass
class Stack:
    prometheus: str  # base URL of Prometheus's HTTP API
    job: str
    instance: str
    processes: dict  # name -> (Popen, log file)
    cmx: str = "127.0.0.1"  # the one CMX's name: its URL's host

    def check_alive(self):
        for name, (process, log) in self.processes.items():
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}:\n{log.read_text()[-3000:]}")

    def api(self, path, **params):
        """GET /api/v1/<path>; the decoded JSON, also for the 4xx answers of a bad query."""
        url = f"{self.prometheus}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            return json.load(error)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(what, check, stack=None, timeout=STARTUP_TIMEOUT, details=lambda: ""):
    """Calls check() until it returns something true, and returns that.
    After timeout seconds it fails, with what details() then tells."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack:
            stack.check_alive()
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout} s waiting for {what}\n{details()}", pytrace=False)


def http_ok(url):
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def port_open(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def prometheus_config(exporter_address):
    """The project's prometheus.yml, made fast and pointed at the test's exporter."""
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    interval = f"{SCRAPE_INTERVAL_SECONDS}s"
    config["global"].update(scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval)
    config["rule_files"] = [str(RULES_FILE.parent / rules) for rules in config["rule_files"]]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [exporter_address]}]
    return config


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    prometheus = require_tool("prometheus")
    workdir = tmp_path_factory.mktemp("e2e")
    simulator_port, exporter_port, prometheus_port = free_port(), free_port(), free_port()
    exporter_address = f"127.0.0.1:{exporter_port}"
    config = prometheus_config(exporter_address)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus_url = f"http://127.0.0.1:{prometheus_port}"
    environment = {name: value for name, value in os.environ.items() if not name.startswith("CMX_")}
    # Started in this order, each once the one before is ready.
    services = [
        ("simulator", [sys.executable, "-m", "cmx_simulator", "--host", "127.0.0.1",
                       "--port", str(simulator_port), "--sessions", "3000", "--seed", "1",
                       "--username", "demo", "--password", "demo"],
         lambda: port_open(simulator_port)),
        ("exporter", [sys.executable, "-m", "cmx_connect_exporter", "--url", f"http://127.0.0.1:{simulator_port}",
                      "--username", "demo", "--password", "demo", "--listen-address", exporter_address,
                      "--poll-interval", "1", "--visitors-today"],
         lambda: http_ok(f"http://{exporter_address}/healthz")),
        ("prometheus", [prometheus, f"--config.file={workdir / 'prometheus.yml'}",
                        f"--storage.tsdb.path={workdir / 'data'}",
                        f"--web.listen-address=127.0.0.1:{prometheus_port}"],
         lambda: http_ok(f"{prometheus_url}/-/ready")),
    ]
    running = Stack(prometheus_url, config["scrape_configs"][0]["job_name"], exporter_address, {})
    with ExitStack() as cleanup:
        for name, command, ready in services:
            log = workdir / f"{name}.log"
            with log.open("w") as output:
                process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=output,
                                           stderr=subprocess.STDOUT)
            cleanup.callback(stop, process)
            running.processes[name] = (process, log)
            wait_for(f"{name} to be ready", ready, running)
        yield running


def stop(process):
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def grafana_values(stack, selected):
    """Template variables as Grafana substitutes them: `All` is the variables' allValue, `.*`;
    one selected value is regex-escaped, with backslashes doubled inside the PromQL string."""
    def escaped(value):
        return re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", value)

    scrape = SCRAPE_INTERVAL_SECONDS
    interval = scrape  # Grafana's floor for $__interval is the datasource's scrape interval
    return {
        "job": escaped(stack.job) if selected else ".*",
        "instance": escaped(stack.instance) if selected else ".*",
        "cmx": escaped(stack.cmx) if selected else ".*",
        SITE.label: escaped(next(iter(SITES))) if selected else ".*",  # the simulator's largest site
        "__interval": f"{interval}s",
        "__interval_ms": str(interval * 1000),
        "__rate_interval": f"{max(interval + scrape, 4 * scrape)}s",
        "__range": "6h",
        "__range_s": str(6 * 3600),
    }


def run_target(stack, target, values):
    """Runs one dashboard query as Grafana would: instant, or over the last minute."""
    expr = board.substitute(target["expr"], values)
    if target.get("instant"):
        return expr, stack.api("query", query=expr)
    end = time.time()
    step = values["__interval"]
    return expr, stack.api("query_range", query=expr, start=end - 60, end=end, step=step)


def failing_targets(stack, values, *, invalid_only=False):
    """One line for each dashboard query that is invalid PromQL or (unless invalid_only) returns no data."""
    failing = []
    for title, target in TARGETS:
        expr, answer = run_target(stack, target, values)
        if answer["status"] != "success":
            failing.append(f"{title}: {expr}: {answer.get('error')}")
        elif not invalid_only and not answer["data"]["result"]:
            failing.append(f"{title}: {expr}: no data")
    return failing


@pytest.mark.parametrize("selected", [False, True], ids=["all", "selected"])
def test_every_dashboard_query_is_valid_and_returns_data(stack, selected):
    values = grafana_values(stack, selected)
    invalid = failing_targets(stack, values, invalid_only=True)
    assert not invalid, "invalid PromQL:\n" + "\n".join(invalid)
    wait_for("every dashboard query to return data", lambda: not failing_targets(stack, values),
             stack, timeout=DATA_TIMEOUT, details=lambda: "\n".join(failing_targets(stack, values)))


def label_values(stack, query):
    """Runs a `label_values(selector, label)` variable query through the labels API, as Grafana does."""
    selector, label = board.LABEL_VALUES.match(query).groups()
    answer = stack.api(f"label/{label}/values", **({"match[]": selector} if selector else {}))
    assert answer["status"] == "success", answer
    return answer["data"]


@pytest.mark.parametrize("name", ["job", "instance", "cmx"])
def test_the_job_and_instance_variables_list_the_real_target(stack, name):
    (variable,) = [variable for variable in board.query_variables(DASHBOARD) if variable["name"] == name]
    query = board.substitute(board.variable_query(variable), grafana_values(stack, selected=False))
    wanted = getattr(stack, name)
    wait_for(f"${name} to list {wanted}", lambda: wanted in label_values(stack, query), stack,
             timeout=DATA_TIMEOUT)


@pytest.mark.parametrize("alert", ALERTS, ids=lambda alert: alert["alert"])
def test_every_alert_expression_is_valid_and_quiet_on_a_healthy_stack(stack, alert):
    wait_for("the exporter's first successful poll to be scraped",
             lambda: stack.api("query", query="cmx_connect_up == 1")["data"]["result"], stack,
             timeout=DATA_TIMEOUT)
    answer = stack.api("query", query=alert["expr"])
    assert answer["status"] == "success", answer
    assert answer["data"]["result"] == [], f"{alert['alert']} would fire on a healthy stack"


def test_prometheus_loaded_and_evaluates_every_alert_rule(stack):
    def evaluated_rules():
        rules = [rule for group in stack.api("rules")["data"]["groups"] for rule in group["rules"]]
        return rules if rules and all(rule["health"] == "ok" for rule in rules) else None

    rules = wait_for("every rule to be evaluated without error", evaluated_rules, stack)
    assert sorted(rule["name"] for rule in rules) == sorted(alert["alert"] for alert in ALERTS)


@pytest.mark.parametrize("live", [True, False], ids=["live", "dead"])
def test_the_image_healthcheck_passes_only_against_a_live_exporter(stack, live):
    address = stack.instance if live else f"127.0.0.1:{free_port()}"
    command = [sys.executable, *healthcheck_command()[1:]]  # the image's `python` is this one here
    environment = {**os.environ, "CMX_LISTEN_ADDRESS": address}
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=30)
    assert (result.returncode == 0) == live, result.stderr
