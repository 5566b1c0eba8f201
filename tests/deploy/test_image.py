"""The real image: the root Dockerfile built with podman and run as users run it.

python:3.11-slim-bookworm cannot be pulled here (Docker Hub is unreachable from the test machines), so a
local Debian bookworm root with Python 3.11 stands in for it: see tests/deploy/podman.py. Each container
runs read-only, as the image's own user, on the host's network so the test talks to it over loopback.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests
import trustme

from cmx_simulator import Simulator
from exporter_process import Samples, free_port, parse_samples, session_counts, up

from .podman import ULIMITS, Built, build_image, inspect, podman, require_podman
from .support import DEPLOY, load_yaml

TESTS = Path(__file__).resolve().parents[1]
UID = 10001
WAIT = 60  # seconds for a container to serve its first complete poll, on a slow shared machine


@pytest.fixture(scope="module")
def built(pytestconfig: pytest.Config) -> Built:
    require_podman()
    result = build_image()
    base = "kept" if result.base_seconds is None else f"made in {result.base_seconds:.0f} s"
    line = (f"image {result.image}: built in {result.seconds:.1f} s (base {base}), "
            f"{result.size_bytes / 1e6:.0f} MB (podman's size, uncompressed)")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n{line}", flush=True)  # on the terminal, whatever pytest captures
    return result


class Container:
    """A detached container of the image, serving on a free loopback port; removed on exit."""

    def __init__(self, built: Built, *args: str, env: dict[str, str] | None = None,
                 volumes: tuple[str, ...] = (), command: tuple[str, ...] = (), network: str = "host") -> None:
        self.name = f"cmx-test-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.scheme = "https" if env and "CMX_WEB_CONFIG_FILE" in env else "http"
        environment = {"CMX_LISTEN_ADDRESS": f"127.0.0.1:{self.port}", **(env or {})}
        podman("run", "--detach", "--name", self.name, "--read-only", "--network", network, *ULIMITS,
               *(f"--env={name}={value}" for name, value in environment.items()),
               *(f"--volume={volume}" for volume in volumes), *args, built.image, *command)
        self.http = requests.Session()
        self.http.trust_env = False

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()
        podman("rm", "--force", "--time", "0", self.name, check=False)

    @property
    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def exit_code(self) -> int | None:
        state = inspect(self.name)["State"]
        return None if state["Running"] else int(state["ExitCode"])

    def wait_until_up(self) -> Samples:
        deadline = time.monotonic() + WAIT
        samples: Samples = {}
        while time.monotonic() < deadline:
            if self.exit_code() is not None:
                pytest.fail(f"the container exited with {self.exit_code()}:\n{self.logs}")
            with contextlib.suppress(requests.ConnectionError):
                samples = parse_samples(self.http.get(f"{self.scheme}://127.0.0.1:{self.port}/metrics",
                                                      timeout=5).text)
                if up(samples):
                    return samples
            time.sleep(0.2)
        pytest.fail(f"no complete poll within {WAIT} s; last scrape {samples}\n{self.logs}")


def readable_by_the_image(folder: Path) -> None:
    """pytest's temporary folders are private to their owner; the image's user must get through them."""
    top = Path(tempfile.gettempdir()).resolve()
    for path in (folder, *folder.parents):
        if path == top:
            break
        path.chmod(path.stat().st_mode | 0o055)


def test_the_demo_serves_real_counts_read_only_as_the_images_own_user(built: Built) -> None:
    with Container(built, env={"CMX_DEMO": "true"}) as container:
        counts = session_counts(container.wait_until_up())
        assert counts is not None and counts.total > 1000
        for label, values in counts.by_label.items():
            assert sum(values.values()) == counts.total, label
        config = inspect(container.name)
        assert config["HostConfig"]["ReadonlyRootfs"] is True
        assert config["Config"]["User"] == f"{UID}:{UID}"
        assert podman("exec", container.name, "id", "-u").stdout.strip() == str(UID)
        refused = podman("exec", container.name, "touch", "/usr/local/written", check=False)
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_the_healthcheck_passes_with_and_without_tls(built: Built, tls: bool, tmp_path: Path) -> None:
    env, volumes = {"CMX_DEMO": "true"}, ()
    ca = trustme.CA()
    if tls:
        issued = ca.issue_cert("127.0.0.1")
        issued.cert_chain_pems[0].write_to_path(tmp_path / "server.crt")
        issued.private_key_pem.write_to_path(tmp_path / "server.key")
        (tmp_path / "web.yml").write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
        readable_by_the_image(tmp_path)
        for file in tmp_path.iterdir():
            file.chmod(0o444)
        env["CMX_WEB_CONFIG_FILE"] = "/etc/cmx-web/web.yml"
        volumes = (f"{tmp_path}:/etc/cmx-web:ro",)
    with Container(built, env=env, volumes=volumes) as container:
        with ca.cert_pem.tempfile() as ca_file:
            container.http.verify = ca_file
            container.wait_until_up()
        health = podman("healthcheck", "run", container.name, check=False)
        assert health.returncode == 0, f"{health.stdout}{health.stderr}\n{container.logs}"
        assert f"listening on {container.scheme}://127.0.0.1:{container.port}/metrics" in container.logs


def test_help_works(built: Built) -> None:
    result = podman("run", "--rm", "--read-only", "--network", "none", *ULIMITS, built.image, "--help")
    assert result.stdout.startswith("usage: cmx-connect-exporter")
    assert "--url" in result.stdout and "--demo" in result.stdout


def test_sigterm_ends_it_with_status_0_within_5_seconds(built: Built) -> None:
    with Container(built, env={"CMX_DEMO": "true"}) as container:
        container.wait_until_up()
        started = time.monotonic()
        podman("kill", "--signal", "TERM", container.name)
        code = podman("wait", container.name, timeout=30).stdout.strip()
        elapsed = time.monotonic() - started
        assert code == "0", container.logs
        assert elapsed < 5, f"took {elapsed:.1f} s"
        assert "shutting down" in container.logs


def test_the_image_holds_no_build_tools_and_no_test_files(built: Built) -> None:
    """No compiler or build stage left behind, and none of this repository's tests, found by their names.
    (Third-party wheels ship tests of their own, such as certifi's; those are not ours to remove.)"""
    ours = sorted({path.name for path in [*TESTS.glob("*.py"), *TESTS.rglob("test_*.py")]})
    names = " -o ".join(f"-name {name}" for name in ours)
    script = ("for tool in gcc cc c++ make git; do command -v $tool; done; ls -d /src /wheels 2>/dev/null; "
              f"find / -xdev \\( {names} -o -path '*/cmx_*/tests' -o -path '*/golden/metrics.prom' \\) -print")
    result = podman("run", "--rm", "--user", "0", "--read-only", "--network", "none", *ULIMITS,
                    "--entrypoint", "sh", built.image, "-c", script)
    assert result.stdout.split() == []
    assert len(ours) > 20, "the search must name the test files"
    imported = podman("run", "--rm", "--network", "none", *ULIMITS, "--entrypoint", "python", built.image,
                      "-c", "import cmx_connect_exporter.cli, cmx_simulator; print('ok')")
    assert imported.stdout.strip() == "ok", "the search must not pass because the image lost everything"


@pytest.mark.parametrize("owner", [UID, 0], ids=["owned-by-10001", "owned-by-root"])
def test_the_password_file_is_read_as_uid_10001(built: Built, owner: int, tmp_path: Path) -> None:
    """Mode 0400: the exporter can read it only as its owner, so this shows which user reads it."""
    secret = tmp_path / "password"
    secret.write_text("s3cret-pw\n")
    secret.chmod(0o400)
    os.chown(secret, owner, owner)
    readable_by_the_image(tmp_path)
    with Simulator(500, seed=4, username="reader", password="s3cret-pw") as cmx, Container(
        built, env={"CMX_URL": cmx.url, "CMX_USERNAME": "reader", "CMX_PASSWORD_FILE": "/run/secrets/cmx"},
        volumes=(f"{secret}:/run/secrets/cmx:ro",),
    ) as container:
        if owner == UID:
            assert session_counts(container.wait_until_up()) == cmx.active_counts()
        else:
            deadline = time.monotonic() + WAIT
            while container.exit_code() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert container.exit_code() == 2
            assert container.logs.strip().endswith(
                "invalid setting CMX_PASSWORD_FILE (--password-file): cannot read it (Permission denied)")
        assert "s3cret-pw" not in container.logs



@pytest.mark.parametrize("serving", [True, False], ids=["simulator", "nothing-listening"])
def test_the_compose_simulators_health_check_passes_only_when_it_answers(built: Built, serving: bool) -> None:
    """deploy/compose.yaml gates the exporter's start on this check, run here in the real image."""
    simulator = load_yaml(DEPLOY / "compose.yaml")["services"]["simulator"]
    form, *health = simulator["healthcheck"]["test"]
    assert form == "CMD"  # run as Compose runs it, in the container; podman 4.3's --health-cmd splits it at spaces
    entrypoint, *module = simulator["entrypoint"]
    # A compose network gives each container its own loopback; so does a container without a network.
    command = (*module, *simulator["command"]) if serving else ("-c", "import time; time.sleep(60)")
    with Container(built, "--entrypoint", entrypoint, command=command, network="none") as container:
        deadline = time.monotonic() + (WAIT if serving else 5)
        passed = False
        while not passed and time.monotonic() < deadline:
            passed = podman("exec", container.name, *health, check=False).returncode == 0
            time.sleep(0.5)
        assert container.exit_code() is None, container.logs
        assert passed == serving, container.logs
