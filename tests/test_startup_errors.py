"""Start-up failures through the console script: one line naming the setting, exit status 2, never a
traceback; files in folders the exporter may not enter, an address it cannot listen on, a mismatched key."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest
import trustme

from exporter_process import console_script

# As root, permissions do not stop a read: the exporter runs without the capabilities that bypass them.
AS_A_USER = (["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else [])


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Path]:
    """A folder the exporter may not enter, holding usable files: a password, a CA bundle, a web config."""
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "password").write_text("pw\n")
    (folder / "ca.pem").write_bytes(Path(certifi.where()).read_bytes())
    (folder / "web.yml").write_text("basic_auth_users:\n")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(folder / "tls.crt")
    issued.private_key_pem.write_to_path(folder / "tls.key")
    folder.chmod(0)
    yield folder
    folder.chmod(0o700)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMX_")}
    return subprocess.run([*AS_A_USER, console_script(), "--url", "https://cmx.example.net", *args],
                          capture_output=True, text=True, timeout=30, env=env, check=False)


def assert_one_line_naming(result: subprocess.CompletedProcess[str], setting: str, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
    assert setting in result.stderr and "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


@pytest.mark.parametrize(("flag", "name", "setting"), [
    ("--password-file", "password", "CMX_PASSWORD_FILE"),
    ("--ca-bundle", "ca.pem", "CMX_CA_BUNDLE"),
    ("--web-config-file", "web.yml", "CMX_WEB_CONFIG_FILE"),
])
def test_a_file_in_a_folder_the_exporter_may_not_enter(flag: str, name: str, setting: str, locked: Path) -> None:
    assert_one_line_naming(run(flag, str(locked / name)), setting, "Permission denied")


def test_a_certificate_in_a_folder_the_exporter_may_not_enter(locked: Path, tmp_path: Path) -> None:
    config = tmp_path / "web.yml"
    config.write_text(f"tls_server_config:\n  cert_file: {locked / 'tls.crt'}\n  key_file: {locked / 'tls.key'}\n")
    assert_one_line_naming(run("--web-config-file", str(config)), "CMX_WEB_CONFIG_FILE", "Permission denied")


def test_a_certificate_that_does_not_match_its_key(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").cert_chain_pems[0].write_to_path(tmp_path / "tls.crt")
    ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(tmp_path / "tls.key")
    config = tmp_path / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n")
    assert_one_line_naming(run("--web-config-file", str(config)), "CMX_WEB_CONFIG_FILE", "not a matching PEM pair")


def test_an_address_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        assert_one_line_naming(run("--listen-address", address), "CMX_LISTEN_ADDRESS", address, "in use")


def test_an_address_that_does_not_resolve() -> None:
    assert_one_line_naming(run("--listen-address", "no-such-host.invalid:10180"), "CMX_LISTEN_ADDRESS",
                           "no-such-host.invalid:10180")
