"""deploy/compose.yaml: the compose-spec schema, and that its parts find each other.
No Docker engine runs here, and no compose tool here can run the stack (see the README), so the
wiring is checked from the files; tests/deploy/test_image.py runs the simulator's health check in
the real image."""

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .support import DEPLOY, GRAFANA, ROOT, load_yaml, run_tool

COMPOSE_FILE = DEPLOY / "compose.yaml"
COMPOSE = load_yaml(COMPOSE_FILE)
SERVICES = COMPOSE["services"]


def dotenv():
    """deploy/.env, which Compose reads for the variables the compose file names."""
    lines = (line.strip() for line in (DEPLOY / ".env").read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


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


def test_the_image_is_built_once_from_the_root_dockerfile():
    """Two services building one tag fail a recent Compose's first `up --build` ("image already exists")."""
    builders = [name for name, service in SERVICES.items() if "build" in service]
    assert builders == ["simulator"]
    build = SERVICES["simulator"]["build"]
    assert (DEPLOY / build["context"]).resolve() == ROOT
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"
    assert SERVICES["exporter"]["image"] == SERVICES["simulator"]["image"]
    assert SERVICES["exporter"]["pull_policy"] == "never", "the built image, never one from a registry"


def healthy_conditions():
    """(service, the service it waits to be healthy); the short list form waits for a start only."""
    return [(name, needed) for name, service in SERVICES.items() if isinstance(service.get("depends_on"), dict)
            for needed, rule in service["depends_on"].items() if rule["condition"] == "service_healthy"]


def test_start_up_is_gated_on_health():
    assert {("exporter", "simulator"), ("prometheus", "exporter")} <= set(healthy_conditions())


def test_every_service_waited_for_has_a_health_check():
    """The simulator's own; the exporter's is the image's HEALTHCHECK, which it must not turn off."""
    for _, needed in healthy_conditions():
        check = SERVICES[needed].get("healthcheck", {})
        assert not check.get("disable"), needed
        assert check.get("test") or needed == "exporter", f"{needed} has no health check"
    assert SERVICES["simulator"]["healthcheck"]["test"][0] == "CMD"


def test_the_password_reaches_the_images_user_whatever_the_umask():
    """An environment secret is copied into the container with the uid and mode given, where a file
    secret would be bind-mounted with the checkout's mode."""
    (reference,) = SERVICES["exporter"]["secrets"]
    declared = COMPOSE["secrets"][reference["source"]]
    assert "file" not in declared and declared["environment"]
    assert reference["uid"] == "10001" and reference["mode"] & 0o400
    path = SERVICES["exporter"]["environment"]["CMX_PASSWORD_FILE"]
    assert path == f"/run/secrets/{reference.get('target', reference['source'])}"


def test_the_simulator_runs_the_simulator_module():
    assert SERVICES["simulator"]["entrypoint"] == ["python", "-m", "cmx_simulator"]


def test_every_bind_mount_and_secret_file_exists():
    for service in SERVICES:
        for source in mounts(service).values():
            assert source.exists(), f"{service} mounts {source}, which does not exist"
    for secret in COMPOSE["secrets"].values():
        assert "file" not in secret or (DEPLOY / secret["file"]).is_file()


def test_the_exporter_polls_the_simulator_with_its_credentials():
    environment = SERVICES["exporter"]["environment"]
    url = urlsplit(environment["CMX_URL"])
    command = SERVICES["simulator"]["command"]
    option = {name: command[i + 1] for i, name in enumerate(command) if name.startswith("--")}
    assert (url.hostname, str(url.port)) == ("simulator", option["--port"])
    assert environment["CMX_USERNAME"] == option["--username"]
    (secret,) = COMPOSE["secrets"].values()
    assert dotenv()[secret["environment"]] == option["--password"]


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
