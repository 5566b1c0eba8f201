"""The CMX_* settings that the compose stack and the Kubernetes manifests give the exporter
are real settings with valid values, checked by the exporter's own settings loader."""

import os

import pytest
import trustme
import yaml

from cmx_connect_exporter.config.targets import TargetsError
from cmx_connect_exporter.settings import Settings, SettingsError, env_name, load_settings

from .manifests import exporter_containers, of_kind, web_config_folder
from .support import DEPLOY, load_yaml

KNOWN = {env_name(field) for field in Settings.model_fields}
# Files mounted at run time, which do not exist here.
PATH_SETTINGS = {"CMX_PASSWORD_FILE", "CMX_CA_BUNDLE"}


def deploy_environments():
    """The exporter's environment in each deploy file, and the web config folder a manifest mounts;
    a value from a Secret is only known in the cluster."""
    compose = load_yaml(DEPLOY / "compose.yaml")["services"]["exporter"]["environment"]
    return [pytest.param(compose, None, id="compose.yaml")] + [
        pytest.param({variable["name"]: variable.get("value", "from-the-cluster") for variable in container["env"]},
                     web_config_folder(pod, container), id=name)
        for name, pod, container in exporter_containers()
    ]


def mount_web_config(folder, files):
    """The web config folder as the cluster would mount it, with a real certificate for the TLS Secret."""
    issued = trustme.CA().issue_cert("cmx-connect-exporter")
    for name, text in files.items():
        if name == "tls.crt":
            issued.cert_chain_pems[0].write_to_path(folder / name)
        elif name == "tls.key":
            issued.private_key_pem.write_to_path(folder / name)
        elif name != "config":
            (folder / name).write_text(text)
    return folder / files["config"]


@pytest.mark.parametrize(("environment", "web_files"), deploy_environments())
def test_deploy_files_set_only_real_settings(environment, web_files):
    assert set(environment) <= KNOWN


@pytest.mark.parametrize(("environment", "web_files"), deploy_environments())
def test_the_exporter_accepts_the_deploy_files_settings(environment, web_files, monkeypatch, tmp_path):
    secret = tmp_path / "mounted-file"
    secret.write_text("demo\n")
    for name in [name for name in os.environ if name.startswith("CMX_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, str(secret) if name in PATH_SETTINGS else str(value))
    if web_files is not None:
        monkeypatch.setenv("CMX_WEB_CONFIG_FILE", str(mount_web_config(tmp_path, web_files)))
    if "CMX_TARGETS_FILE" in environment:
        monkeypatch.setenv("CMX_TARGETS_FILE", str(shipped_targets_file(environment["CMX_TARGETS_FILE"], secret)))
    try:
        settings = load_settings([])
        settings.targets()
    except (SettingsError, TargetsError) as error:
        pytest.fail(str(error))
    assert settings.web_config.scheme == ("https" if web_files is not None else "http")


def shipped_targets_file(path, secret):
    """The targets file of the manifests' ConfigMap, as mounted at ``path``, with its password files at ``secret``."""
    name = path.rsplit("/", 1)[1]
    (text,) = [config["data"][name] for config in of_kind("ConfigMap") if name in config["data"]]
    targets = yaml.safe_load(text)
    for entry in [targets["defaults"], *targets["targets"]]:
        if "password_file" in entry:
            entry["password_file"] = str(secret)
    written = secret.parent / name
    written.write_text(yaml.safe_dump(targets))
    return written
