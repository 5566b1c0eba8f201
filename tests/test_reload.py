"""Reload without restart, through the console script: SIGHUP, and files that change on their own as a
rotated Kubernetes Secret does (the kubelet swaps a ``..data`` symlink); the worker's environment."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import ssl
import time
from pathlib import Path

import bcrypt
import pytest
import trustme

from cmx_simulator import Simulator
from exporter_process import ExporterProcess, children, of_target, poll_errors, session_counts, up

pytestmark = pytest.mark.slow

CANARY = "cmx-pw-canary-41f0"


class SecretVolume:
    """A folder laid out as the kubelet mounts a Secret: each key a symlink through ``..data`` to a folder
    of the current version, which a rotation replaces by swapping ``..data`` at once."""

    _versions = itertools.count()

    def __init__(self, folder: Path, files: dict[str, bytes]) -> None:
        self.folder = folder
        folder.mkdir(exist_ok=True)
        self.swap(files)
        for name in files:
            (folder / name).symlink_to(Path("..data") / name)

    def swap(self, files: dict[str, bytes]) -> None:
        version = self.folder / f"..2026_11_30_{next(self._versions)}"
        version.mkdir()
        for name, data in files.items():
            (version / name).write_bytes(data)
        (self.folder / "..data_tmp").symlink_to(version.name)
        os.replace(self.folder / "..data_tmp", self.folder / "..data")

    def __truediv__(self, name: str) -> Path:
        return self.folder / name


def last_success(samples: dict) -> float:
    return of_target(samples).get(("cmx_connect_last_success_timestamp_seconds", ()), 0.0)


def test_ten_sighups_in_a_row_end_neither_the_exporter_nor_its_worker(tmp_path: Path) -> None:
    secret = SecretVolume(tmp_path / "secret", {"password": b"demo\n"})
    with Simulator(200, seed=5) as cmx, \
            ExporterProcess("--url", cmx.url, "--username", "demo", "--password-file", str(secret / "password"),
                            "--poll-interval", "1") as exporter:
        exporter.wait_for(up)
        worker = children(exporter.pid)
        for _ in range(10):
            exporter.proc.send_signal(signal.SIGHUP)
            time.sleep(0.05)
        time.sleep(3)  # the reloads, and polls after them
        assert exporter.proc.poll() is None
        assert children(exporter.pid) == worker, "the same worker lives on"
        samples = exporter.wait_for(lambda s: up(s) and session_counts(s) == cmx.active_counts())
        assert sum(poll_errors(samples).values()) == 0
        log = exporter.stop()
    assert "Traceback" not in log and " WARNING " not in log and " ERROR " not in log


def test_a_password_rotated_by_a_symlink_swap_is_used_from_the_next_poll(tmp_path: Path) -> None:
    """CMX's password and the Secret change together; no signal. The poll after the swap succeeds, and the
    one line logged is the reload's."""
    secret = SecretVolume(tmp_path / "secret", {"password": b"first-pw\n"})
    with Simulator(200, seed=6, password="first-pw") as cmx, \
            ExporterProcess("--url", cmx.url, "--username", "demo", "--password-file", str(secret / "password"),
                            "--poll-interval", "6") as exporter:
        before = last_success(exporter.wait_for(up))
        lines = len(exporter.log.splitlines())
        cmx.set_credentials("demo", CANARY)
        secret.swap({"password": CANARY.encode() + b"\n"})
        samples = exporter.wait_for(lambda s: last_success(s) > before, timeout=15)
        assert up(samples) and poll_errors(samples)["auth"] == 0
        log = exporter.stop()
    after_swap = [line for line in log.splitlines()[lines:] if "shutting down" not in line]
    assert len(after_swap) == 1 and " INFO " in after_swap[0] and "reloaded CMX_PASSWORD_FILE" in after_swap[0], \
        after_swap
    assert CANARY not in log and "first-pw" not in log


def test_an_unusable_new_password_file_is_refused_in_one_line_and_the_old_stays(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("demo\n")
    with Simulator(200, seed=7) as cmx, \
            ExporterProcess("--url", cmx.url, "--username", "demo", "--password-file", str(secret),
                            "--poll-interval", "1") as exporter:
        exporter.wait_for(up)
        secret.write_bytes(b"\xff\xfe not UTF-8")
        exporter.proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        errors = poll_errors(exporter.wait_for(up))
        log = exporter.stop()
    warnings = [line for line in log.splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and "CMX_PASSWORD_FILE not reloaded, the old one stays in force" in warnings[0], warnings
    assert errors["auth"] == 0


def served_certificate(port: int, ca: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        certificate = tls.getpeercert(binary_form=True)
    assert certificate is not None
    return certificate


def test_a_renewed_certificate_is_served_to_new_connections_after_a_swap_and_sighup(tmp_path: Path) -> None:
    ca = trustme.CA()
    old, new = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")

    def files(issued: trustme.LeafCert) -> dict[str, bytes]:
        return {"tls.crt": issued.cert_chain_pems[0].bytes(), "tls.key": issued.private_key_pem.bytes()}

    secret = SecretVolume(tmp_path / "tls", files(old))
    config = tmp_path / "web.yml"
    config.write_text(f"tls_server_config:\n  cert_file: {secret / 'tls.crt'}\n  key_file: {secret / 'tls.key'}\n")
    with Simulator(200, seed=8) as cmx, \
            ExporterProcess("--url", cmx.url, "--username", "demo", "--web-config-file", str(config),
                            env={"CMX_PASSWORD": "demo"}, scheme="https") as exporter:
        exporter.http.verify = str(tmp_path / "ca.pem")
        exporter.wait_for(up)
        first = served_certificate(exporter.port, tmp_path / "ca.pem")
        kept_alive = exporter.http.get(exporter.url + "/healthz", timeout=5)
        secret.swap(files(new))
        exporter.proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        second = served_certificate(exporter.port, tmp_path / "ca.pem")
        assert exporter.http.get(exporter.url + "/metrics", timeout=5).status_code == 200
        log = exporter.stop()
    assert first == ssl.PEM_cert_to_DER_cert(old.cert_chain_pems[0].bytes().decode())
    assert second == ssl.PEM_cert_to_DER_cert(new.cert_chain_pems[0].bytes().decode())
    assert kept_alive.status_code == 200
    assert log.count("reloaded CMX_WEB_CONFIG_FILE") == 1 and " WARNING " not in log


def test_a_certificate_that_does_not_match_its_key_is_refused_and_the_old_one_served(tmp_path: Path) -> None:
    ca = trustme.CA()
    old, other = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    old.cert_chain_pems[0].write_to_path(tmp_path / "tls.crt")
    old.private_key_pem.write_to_path(tmp_path / "tls.key")
    config = tmp_path / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n")
    with Simulator(200, seed=9) as cmx, \
            ExporterProcess("--url", cmx.url, "--username", "demo", "--web-config-file", str(config),
                            env={"CMX_PASSWORD": "demo"}, scheme="https") as exporter:
        exporter.http.verify = str(tmp_path / "ca.pem")
        exporter.wait_for(up)
        other.private_key_pem.write_to_path(tmp_path / "tls.key")  # a new key, and the old certificate
        time.sleep(4)  # noticed without a signal
        served = served_certificate(exporter.port, tmp_path / "ca.pem")
        log = exporter.stop()
    assert served == ssl.PEM_cert_to_DER_cert(old.cert_chain_pems[0].bytes().decode())
    warnings = [line for line in log.splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and "CMX_WEB_CONFIG_FILE not reloaded" in warnings[0], warnings
    assert "not a matching PEM pair" in warnings[0]


def test_the_workers_environment_holds_no_password() -> None:
    with Simulator(200, seed=10, password=CANARY) as cmx, \
            ExporterProcess("--url", cmx.url, "--username", "demo", env={"CMX_PASSWORD": CANARY}) as exporter:
        exporter.wait_for(up)
        (worker,) = children(exporter.pid)
        environment = Path(f"/proc/{worker}/environ").read_bytes()
        exporter.stop()
    assert b"CMX_PASSWORD" not in environment and CANARY.encode() not in environment
    assert b"PATH=" in environment, "the environment was read"


def test_new_basic_auth_users_apply_to_the_next_request(tmp_path: Path) -> None:
    """The scrape password changes in the web config; no signal."""
    def users(password: bytes) -> str:
        return f"basic_auth_users:\n  prometheus: {bcrypt.hashpw(password, bcrypt.gensalt(4)).decode()}\n"

    config = tmp_path / "web.yml"
    config.write_text(users(b"old-scrape-pw"))
    with Simulator(200, seed=13) as cmx, \
            ExporterProcess("--url", cmx.url, "--username", "demo", "--web-config-file", str(config),
                            env={"CMX_PASSWORD": "demo"}) as exporter:
        exporter.http.auth = ("prometheus", "old-scrape-pw")
        exporter.wait_for(up)
        config.write_text(users(b"new-pw"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and exporter.http.get(exporter.url + "/metrics", timeout=5).ok:
            time.sleep(0.2)
        assert exporter.http.get(exporter.url + "/metrics", timeout=5).status_code == 401
        assert exporter.http.get(exporter.url + "/metrics", auth=("prometheus", "new-pw"), timeout=5).status_code == 200
        log = exporter.stop()
    assert log.count("reloaded CMX_WEB_CONFIG_FILE") == 1


def write_targets(path: Path, entries: dict[str, tuple[str, Path]]) -> None:
    """The targets file, replaced at once as an editor or a ConfigMap update does; each entry is (url, password
    file)."""
    body = "".join(f"  - name: {name}\n    url: {url}\n    password_file: {secret}\n"
                   for name, (url, secret) in entries.items())
    new = path.with_suffix(".new")
    new.write_text(f"defaults:\n  username: demo\n  poll_interval: 1\n  timeout: 2\ntargets:\n{body}")
    os.replace(new, path)


def cmx_names(samples: dict) -> set[str]:
    return {dict(labels)["cmx"] for _, labels in samples if "cmx" in dict(labels)}


def test_the_targets_file_reloads_adding_removing_and_changing_targets(tmp_path: Path) -> None:
    """On a change of the file: a new target polls, a removed one's series go, a changed one starts afresh
    and an unchanged one keeps its counters; an invalid file is refused in one line; SIGHUP reloads too."""
    good, bad = tmp_path / "good.pw", tmp_path / "bad.pw"
    good.write_text("demo\n")
    bad.write_text("wrong\n")
    path = tmp_path / "targets.yml"
    with Simulator(200, seed=31) as one, Simulator(300, seed=32) as two, Simulator(400, seed=33) as three:
        write_targets(path, {"a": (one.url, good), "b": (two.url, bad), "d": (two.url, good)})
        with ExporterProcess("--targets-file", str(path)) as exporter:
            before = exporter.wait_for(lambda s: up(s, "a") and up(s, "d") and poll_errors(s, "b")["auth"] >= 2)
            lines = len(exporter.log.splitlines())
            write_targets(path, {"a": (three.url, good), "b": (two.url, bad), "c": (one.url, good)})
            after = exporter.wait_for(lambda s: session_counts(s, "a") == three.active_counts() and up(s, "c")
                                      and "d" not in cmx_names(s), timeout=15)
            assert poll_errors(after, "b")["auth"] >= poll_errors(before, "b")["auth"], "b kept its counter"
            assert cmx_names(after) == {"a", "b", "c"}

            path.write_text("targets: [a, b")  # not YAML: refused, and the three go on
            time.sleep(5)  # two looks at the file, and polls
            kept = exporter.wait_for(lambda s: up(s, "a") and up(s, "c"))
            assert cmx_names(kept) == {"a", "b", "c"}

            write_targets(path, {"a": (three.url, good), "b": (two.url, bad)})
            exporter.proc.send_signal(signal.SIGHUP)
            exporter.wait_for(lambda s: cmx_names(s) == {"a", "b"}, timeout=10)
            log = exporter.stop()
    after_start = log.splitlines()[lines:]
    assert len([line for line in after_start if "reloaded CMX_TARGETS_FILE" in line]) == 2, after_start
    refused = [line for line in after_start if "CMX_TARGETS_FILE not reloaded" in line]
    assert len(refused) == 1 and " WARNING " in refused[0] and "the old one stays in force" in refused[0] \
        and "is not valid YAML" in refused[0], refused


def test_a_removed_target_keeps_no_connection_in_any_worker(tmp_path: Path) -> None:
    """The workers keep each target's client, with its connections open, between polls; a reload that removes
    a target closes its client in every worker, while the target left keeps polling."""
    secret = tmp_path / "cmx.pw"
    secret.write_text("demo\n")
    path = tmp_path / "targets.yml"
    with Simulator(200, seed=34) as kept, Simulator(200, seed=35) as removed:
        write_targets(path, {"kept": (kept.url, secret), "removed": (removed.url, secret)})
        with ExporterProcess("--targets-file", str(path)) as exporter:
            exporter.wait_for(lambda s: up(s, "kept") and up(s, "removed"))
            assert removed.open_connections, "a worker keeps its connection to CMX between polls"
            write_targets(path, {"kept": (kept.url, secret)})
            exporter.proc.send_signal(signal.SIGHUP)
            exporter.wait_for(lambda s: cmx_names(s) == {"kept"}, timeout=10)
            deadline = time.monotonic() + 10
            while removed.open_connections and time.monotonic() < deadline:
                time.sleep(0.1)
            assert removed.open_connections == 0, "no worker holds a connection to the removed target's CMX"
            served = removed.requests_served
            polled = last_success(exporter.wait_for(lambda s: up(s, "kept")))
            exporter.wait_for(lambda s: last_success(s) > polled)
            assert kept.open_connections and removed.requests_served == served
            exporter.stop()
