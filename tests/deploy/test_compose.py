"""deploy/compose.yaml: the compose-spec schema, and that its parts find each other.
No Docker engine runs here, so the wiring is checked from the files."""

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .support import DEPLOY, GRAFANA, ROOT, load_yaml, run_tool

COMPOSE_FILE = DEPLOY / "compose.yaml"
COMPOSE = load_yaml(COMPOSE_FILE)
SERVICES = COMPOSE["services"]


def mounts(service):
    """{path in the container: path on the host} of a service's bind mounts."""
    pairs = (volume.split(":")[:2] for volume in SERVICES[service].get("volumes", []))
    return {target: (DEPLOY / source).resolve() for source, target in pairs if source.startswith(".")}


def host_path(service, container_path):
    """The host file behind a path in the container, through the service's bind mounts."""
    for target, source in mounts(service).items():
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / Path(container_path).relative_to(target)
    pytest.fail(f"{container_path} is not mounted into {service}")


def test_compose_file_matches_the_compose_spec():
    run_tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE_FILE)


def test_the_stack_has_its_four_services():
    assert set(SERVICES) == {"simulator", "exporter", "prometheus", "grafana"}


@pytest.mark.parametrize("service", ["simulator", "exporter"])
def test_simulator_and_exporter_are_built_from_the_root_dockerfile(service):
    build = SERVICES[service]["build"]
    assert (DEPLOY / build["context"]).resolve() == ROOT
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"
    assert SERVICES[service]["image"] == SERVICES["exporter"]["image"]


def test_the_simulator_runs_the_simulator_module():
    assert SERVICES["simulator"]["entrypoint"] == ["python", "-m", "cmx_simulator"]


def test_every_bind_mount_and_secret_file_exists():
    for service in SERVICES:
        for source in mounts(service).values():
            assert source.exists(), f"{service} mounts {source}, which does not exist"
    for secret in COMPOSE["secrets"].values():
        assert (DEPLOY / secret["file"]).is_file()


def test_the_exporter_polls_the_simulator_with_its_credentials():
    environment = SERVICES["exporter"]["environment"]
    url = urlsplit(environment["CMX_URL"])
    command = SERVICES["simulator"]["command"]
    option = {name: command[i + 1] for i, name in enumerate(command) if name.startswith("--")}
    assert (url.hostname, str(url.port)) == ("simulator", option["--port"])
    assert environment["CMX_USERNAME"] == option["--username"]
    (secret,) = COMPOSE["secrets"].values()
    assert (DEPLOY / secret["file"]).read_text().strip() == option["--password"]


def test_prometheus_scrapes_the_exporter_and_loads_the_rules():
    config_path = next(arg.split("=", 1)[1] for arg in SERVICES["prometheus"]["command"]
                       if arg.startswith("--config.file="))
    config_file = host_path("prometheus", config_path)
    config = load_yaml(config_file)
    targets = [target for job in config["scrape_configs"]
               for static in job["static_configs"] for target in static["targets"]]
    assert targets == ["exporter:10180"]
    assert all((config_file.parent / rules).is_file() for rules in config["rule_files"])


def test_grafana_is_provisioned_with_the_datasource_and_the_dashboard():
    assert host_path("grafana", "/etc/grafana/provisioning") == GRAFANA / "provisioning"
    (datasource,) = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yaml")["datasources"]
    assert urlsplit(datasource["url"]).hostname == "prometheus"
    (provider,) = load_yaml(GRAFANA / "provisioning" / "dashboards" / "cmx-connect.yaml")["providers"]
    assert any(host_path("grafana", provider["options"]["path"]).glob("*.json"))
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path("grafana", home).is_file()


def test_the_simulator_accepts_the_compose_command():
    # argparse checks every argument before it reaches the final --help, which then exits 0.
    command = [sys.executable, "-m", "cmx_simulator", *SERVICES["simulator"]["command"], "--help"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
