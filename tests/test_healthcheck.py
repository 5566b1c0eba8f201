"""The image's HEALTHCHECK command against the real HTTP server, with TLS on and off.

tests/deploy/test_image.py runs the same command inside the built image."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from cmx_connect_exporter.exposition.snapshot import Store
from cmx_connect_exporter.healthcheck import healthz_url
from cmx_connect_exporter.polling.scheduler import Schedule
from cmx_connect_exporter.web.server import HttpServer, make_app
from cmx_connect_exporter.web.webconfig import load_web_config

HEALTHCHECK = [sys.executable, "-m", "cmx_connect_exporter.healthcheck"]


@pytest.fixture(scope="module")
def tls_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A web config turning TLS on, with a certificate for a name that is not the probe's address."""
    folder = tmp_path_factory.mktemp("health-tls")
    issued = trustme.CA().issue_cert("exporter.example.net")
    issued.cert_chain_pems[0].write_to_path(folder / "server.crt")
    issued.private_key_pem.write_to_path(folder / "server.key")
    config = folder / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
    return config


@pytest.fixture(params=[False, True], ids=["plain", "tls"])
def exporter(request: pytest.FixtureRequest, tls_config: Path) -> Iterator[dict[str, str]]:
    """A live HTTP server of the exporter, and the environment the container would give it."""
    env = {"CMX_WEB_CONFIG_FILE": str(tls_config)} if request.param else {}
    web = load_web_config(tls_config if request.param else None)
    store = Store("0")
    schedule = Schedule(lambda request: pytest.fail("no target, no poll"), store)  # /healthz needs no target
    server = HttpServer(make_app(store, schedule, healthy=lambda: True), web)
    server.bind("127.0.0.1", 0)
    server.start()
    try:
        yield {**env, "CMX_LISTEN_ADDRESS": f"127.0.0.1:{server.port}"}
    finally:
        server.stop()
        schedule.shutdown()


def run_healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("CMX_")}
    return subprocess.run(HEALTHCHECK, env={**clean, **env}, capture_output=True, text=True, timeout=30)


def test_the_healthcheck_passes_whether_or_not_tls_is_on(exporter: dict[str, str]) -> None:
    result = run_healthcheck(exporter)
    assert result.returncode == 0, result.stderr
    scheme = "https" if "CMX_WEB_CONFIG_FILE" in exporter else "http"
    assert result.stdout.startswith(f"healthy: {scheme}://127.0.0.1:")


def test_the_healthcheck_fails_when_it_asks_the_wrong_scheme(exporter: dict[str, str], tls_config: Path) -> None:
    """The fault the web config fixes: plain HTTP against TLS (and the other way round) is unhealthy."""
    swapped = {"CMX_LISTEN_ADDRESS": exporter["CMX_LISTEN_ADDRESS"]}
    if "CMX_WEB_CONFIG_FILE" not in exporter:
        swapped["CMX_WEB_CONFIG_FILE"] = str(tls_config)
    result = run_healthcheck(swapped)
    assert result.returncode == 1
    assert result.stderr.startswith("unhealthy: ")


def test_the_healthcheck_fails_when_nothing_listens() -> None:
    result = run_healthcheck({"CMX_LISTEN_ADDRESS": "127.0.0.1:1"})
    assert result.returncode == 1


def test_a_bad_web_config_is_unhealthy_with_its_reason(tmp_path: Path) -> None:
    bad = tmp_path / "web.yml"
    bad.write_text("tls_server_config:\n  cert_file: a.crt\n")
    result = run_healthcheck({"CMX_WEB_CONFIG_FILE": str(bad)})
    assert result.returncode == 1
    assert "needs both cert_file and key_file" in result.stderr


@pytest.mark.parametrize(("listen", "url"), [
    (None, "http://127.0.0.1:10180/healthz"),
    ("0.0.0.0:9000", "http://127.0.0.1:9000/healthz"),
    ("[::]:9000", "http://[::1]:9000/healthz"),
    ("10.1.2.3:9000", "http://10.1.2.3:9000/healthz"),
])
def test_the_probe_asks_loopback_for_a_wildcard_address(listen: str | None, url: str) -> None:
    assert healthz_url({"CMX_LISTEN_ADDRESS": listen} if listen else {}) == url
