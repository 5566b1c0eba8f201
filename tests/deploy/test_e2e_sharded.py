"""End to end, sharded: six simulated CMX, two exporter replicas in CMX_POLL=probed mode with one targets
file, and a real Prometheus with the shipped hashmod scrape config. Each CMX must be polled by exactly one
replica, by the simulators' own count of requests; every dashboard query returns data for every CMX.

The replicas are the same program with the same targets, but each reaches the simulators by another name
for the loopback address (127.0.0.1 or localhost), so a simulator's requests by Host header tell which
replica polled it."""

import os
import socket
import subprocess
import sys
from contextlib import ExitStack

import pytest
import yaml

from cmx_connect_exporter.counting.dimensions import SITE
from cmx_simulator import Simulator

from . import dashboard as board
from .support import DEPLOY, ROOT, load_yaml, require_tool
from .test_e2e_prometheus import ALERTS, DATA_TIMEOUT, Stack, free_port, http_ok, stop, wait_for

pytestmark = pytest.mark.slow

NAMES = ["mall-1", "mall-2", "mall-3", "airport", "campus", "stadium"]
REPLICA_HOSTS = ["127.0.0.1", "localhost"]
DASHBOARD = board.load()


def consecutive_free_ports(count):
    """Ports p0, p0+1, ... all free, with p0 a multiple of 10, so that "<p0 // 10>${shard}" names each."""
    while True:
        base = free_port() // 10 * 10
        try:
            with ExitStack() as held:
                for port in range(base, base + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return list(range(base, base + count))
        except OSError:
            continue


def sharded_config(replica_ports):
    config = load_yaml(DEPLOY / "prometheus" / "prometheus-sharded.yml")
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(DEPLOY / "prometheus" / rules) for rules in config["rule_files"]]
    job, replicas = config["scrape_configs"]
    job["static_configs"] = [{"targets": NAMES}]
    replicas["static_configs"] = [{"targets": [f"127.0.0.1:{port}" for port in replica_ports]}]
    (hashmod,) = [rule for rule in job["relabel_configs"] if rule.get("action") == "hashmod"]
    hashmod["modulus"] = len(replica_ports)
    (address,) = [rule for rule in job["relabel_configs"] if rule.get("target_label") == "__address__"]
    address["replacement"] = f"127.0.0.1:{replica_ports[0] // 10}${{1}}"
    return config


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    prometheus = require_tool("prometheus")
    workdir = tmp_path_factory.mktemp("sharded")
    (workdir / "password").write_text("demo\n")
    replica_ports = consecutive_free_ports(len(REPLICA_HOSTS))
    prometheus_port = free_port()
    environment = {name: value for name, value in os.environ.items() if not name.startswith("CMX_")}
    with ExitStack() as cleanup:
        simulators = {name: cleanup.enter_context(Simulator(sessions=300 + 100 * n, seed=40 + n))
                      for n, name in enumerate(NAMES)}
        stack = Stack(f"http://127.0.0.1:{prometheus_port}", "cmx-connect-exporter", ".*", {})
        for replica, (host, port) in enumerate(zip(REPLICA_HOSTS, replica_ports, strict=True)):
            targets = {"defaults": {"username": "demo", "password_file": str(workdir / "password"),
                                    "poll_interval": 1, "visitors_today": True},
                       "targets": [{"name": name, "url": sim.url.replace("127.0.0.1", host)}
                                   for name, sim in simulators.items()]}
            path = workdir / f"targets-{replica}.yml"
            path.write_text(yaml.safe_dump(targets))
            start(cleanup, stack, f"replica-{replica}", workdir, environment,
                  [sys.executable, "-m", "cmx_connect_exporter", "--targets-file", str(path), "--poll", "probed",
                   "--listen-address", f"127.0.0.1:{port}"],
                  lambda port=port: http_ok(f"http://127.0.0.1:{port}/healthz"))
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(sharded_config(replica_ports)))
        start(cleanup, stack, "prometheus", workdir, environment,
              [prometheus, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
               f"--web.listen-address=127.0.0.1:{prometheus_port}"],
              lambda: http_ok(f"{stack.prometheus}/-/ready"))
        yield stack, simulators


def start(cleanup, stack, name, workdir, environment, command, ready):
    log = workdir / f"{name}.log"
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=output, stderr=subprocess.STDOUT)
    cleanup.callback(stop, process)
    stack.processes[name] = (process, log)
    wait_for(f"{name} to be ready", ready, stack)


def up_per_cmx(stack):
    answer = stack.api("query", query="cmx_connect_up == 1")
    return {sample["metric"]["cmx"] for sample in answer["data"]["result"]}


def test_each_cmx_is_polled_by_exactly_one_replica(sharded):
    stack, simulators = sharded
    wait_for("every CMX to be up", lambda: up_per_cmx(stack) == set(NAMES), stack, timeout=DATA_TIMEOUT,
             details=lambda: str(up_per_cmx(stack)))
    for name, sim in simulators.items():
        by_replica = {host: sum(count for header, count in sim.requests_by_host.items()
                                if header.split(":")[0] == host) for host in REPLICA_HOSTS}
        assert sorted(by_replica.values())[0] == 0 < sorted(by_replica.values())[1], f"{name}: {by_replica}"


def test_every_dashboard_query_returns_data_for_every_cmx(sharded):
    stack, _ = sharded
    for name in NAMES:
        values = {"job": ".*", "instance": ".*", "cmx": name, SITE.label: ".*", "__interval": "1s",
                  "__interval_ms": "1000",
                  "__rate_interval": "4s", "__range": "6h", "__range_s": str(6 * 3600)}

        def failing(values=values):
            found = []
            for title, target in board.targets(DASHBOARD):
                expr = board.substitute(target["expr"], values)
                answer = stack.api("query", query=expr)
                if answer["status"] != "success" or not answer["data"]["result"]:
                    found.append(f"{title}: {expr}: {answer.get('error') or 'no data'}")
            return found

        wait_for(f"every dashboard query to return data for {name}", lambda failing=failing: not failing(), stack,
                 timeout=DATA_TIMEOUT, details=lambda failing=failing: "\n".join(failing()))


def test_the_cmx_variable_lists_every_cmx(sharded):
    stack, _ = sharded
    (variable,) = [v for v in board.query_variables(DASHBOARD) if v["name"] == "cmx"]
    query = board.substitute(board.variable_query(variable), {"job": ".*", "instance": ".*"})
    selector, label = board.LABEL_VALUES.match(query).groups()

    def listed():
        return set(stack.api(f"label/{label}/values", **{"match[]": selector})["data"])

    wait_for("$cmx to list every CMX", lambda: listed() == set(NAMES), stack, timeout=DATA_TIMEOUT)


@pytest.mark.parametrize("alert", ALERTS, ids=lambda alert: alert["alert"])
def test_every_alert_expression_is_valid_per_cmx(sharded, alert):
    stack, _ = sharded
    wait_for("every CMX to be up", lambda: up_per_cmx(stack) == set(NAMES), stack, timeout=DATA_TIMEOUT)
    answer = stack.api("query", query=alert["expr"])
    assert answer["status"] == "success", answer
    assert answer["data"]["result"] == [], f"{alert['alert']} would fire on a healthy stack"
