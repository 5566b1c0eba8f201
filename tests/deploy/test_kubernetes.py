"""deploy/kubernetes: schema validation of the built-in kinds, the hardening issue 3
asks of every exporter container, and the wiring of the ServiceMonitor."""

import pytest
import yaml

from .manifests import MANIFESTS, documents, exporter_containers, is_crd, of_kind, web_config_folder
from .support import DEPLOY, load_yaml, run_tool


def exporter_params():
    return [pytest.param(pod, container, id=name) for name, pod, container in exporter_containers()]


def test_the_expected_kinds_are_there():
    kinds = {document["kind"] for _, document in documents()}
    assert {"Pod", "Deployment", "Service", "Secret", "ServiceMonitor", "PrometheusRule"} <= kinds


def test_built_in_kinds_pass_strict_validation():
    crd_files = {name for name, document in documents() if is_crd(document)}
    files = [path for path in MANIFESTS if path.name not in crd_files]
    assert len(files) >= 4
    run_tool("kubernetes-validate", "--strict", *files)


def test_the_exporter_runs_in_the_sidecar_pod_and_the_deployment():
    assert {name for name, _, _ in exporter_containers()} == {"sidecar-pod.yaml", "deployment.yaml",
                                                              "statefulset-sharded.yaml"}


@pytest.mark.parametrize(("pod", "container"), exporter_params())
def test_exporter_container_is_hardened_and_probed(pod, container):
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] or security["runAsNonRoot"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for probe in ["livenessProbe", "readinessProbe"]:
        assert container[probe]["httpGet"]["path"] == "/healthz"
    assert set(container["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]


@pytest.mark.parametrize(("pod", "container"), exporter_params())
def test_exporter_password_comes_from_a_secret_file(pod, container):
    env = {variable["name"]: variable for variable in container["env"]}
    assert "CMX_PASSWORD" not in env, "the password belongs in a file, not the environment"
    secret_volumes = {volume["name"] for volume in pod["volumes"] if "secret" in volume}
    mounts = [mount for mount in container["volumeMounts"] if mount["name"] in secret_volumes]
    for password_file in password_files(env):
        assert any(password_file.startswith(mount["mountPath"].rstrip("/") + "/") for mount in mounts)


def password_files(env):
    """CMX_PASSWORD_FILE, or every password_file of the targets file, read from its ConfigMap."""
    if "CMX_TARGETS_FILE" not in env:
        return [env["CMX_PASSWORD_FILE"]["value"]]
    name = env["CMX_TARGETS_FILE"]["value"].rsplit("/", 1)[1]
    (targets,) = [yaml.safe_load(config["data"][name]) for config in of_kind("ConfigMap") if name in config["data"]]
    found = [entry["password_file"] for entry in [targets["defaults"], *targets["targets"]] if "password_file" in entry]
    assert found
    return found


def test_the_service_monitor_scrapes_both_services_under_the_job_the_alerts_expect():
    (monitor,) = of_kind("ServiceMonitor")
    (scrape_job,) = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]
    wanted = monitor["spec"]["selector"]["matchLabels"]
    ports = {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]}
    services = [service for service in of_kind("Service")
                if wanted.items() <= service["metadata"]["labels"].items()]
    assert len(services) == 2, "the standalone Service and the sidecar's"
    for service in services:
        assert len(ports & {port["name"] for port in service["spec"]["ports"]}) == 1, "one way of serving each"
        assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == scrape_job["job_name"]


@pytest.mark.parametrize(("pod", "container"), exporter_params())
def test_the_probes_ask_https_exactly_when_the_web_config_turns_tls_on(pod, container):
    found = web_config_folder(pod, container)
    config = yaml.safe_load(found[found["config"]]) if found else {}
    tls = "tls_server_config" in config
    for probe in ["livenessProbe", "readinessProbe"]:
        assert container[probe]["httpGet"].get("scheme", "HTTP") == ("HTTPS" if tls else "HTTP")
    if tls:
        assert {config["tls_server_config"]["cert_file"], config["tls_server_config"]["key_file"]} <= set(found)


def test_the_manifests_show_both_plain_http_and_tls():
    schemes = {container["livenessProbe"]["httpGet"].get("scheme", "HTTP") for _, _, container in exporter_containers()}
    assert schemes == {"HTTP", "HTTPS"}
