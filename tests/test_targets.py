"""The targets file: what it takes, the one line it fails with, and the CMX_* settings as one target."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cmx_connect_exporter.config.targets import TargetsError, load_targets
from cmx_connect_exporter.polling.scheduler import client_options
from cmx_connect_exporter.settings import Settings, load_settings
from exporter_process import console_script

CANARY = "pw-canary-targets-51"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"CMX_{name.upper()}", raising=False)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "mall.password"
    path.write_text(CANARY + "\n")
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "targets.yml"
    path.write_text(text)
    return path


def test_defaults_lie_under_each_target(tmp_path: Path, secret: Path) -> None:
    path = write(tmp_path, f"""
defaults:
  username: api
  password_file: {secret}
  poll_interval: 120
targets:
  - name: mall-1
    url: https://cmx-mall-1.example.net/
  - name: airport
    url: https://10.0.0.7:8443
    username: other
    poll_interval: 30
    page_size: 500
""")
    mall, airport = load_targets(path)
    assert (mall.name, mall.url, mall.options.username, mall.options.poll_interval) == (
        "mall-1", "https://cmx-mall-1.example.net", "api", 120)
    assert (airport.options.username, airport.options.poll_interval, airport.options.page_size) == ("other", 30, 500)
    assert mall.password == airport.password == CANARY
    assert CANARY not in repr(mall)
    assert airport.options.stale_after_seconds == 90
    assert client_options(airport).configured_in == f"target 'airport' in the targets file {path}", \
        "the client's errors name the file's keys, not the CMX_* settings"


def test_the_venue_analytics_options_are_per_target(tmp_path: Path) -> None:
    path = write(tmp_path, """
defaults:
  visitors_today: true
  split_by: site
targets:
  - name: stadium
    url: https://stadium
  - name: shop
    url: https://shop
    visitors_today: false
    split_by: none
    dimensions: visit,os
""")
    stadium, shop = load_targets(path)
    assert (stadium.options.visitors_today, stadium.options.split_label, stadium.options.dimensions) == (
        True, "site", "all")
    assert (shop.options.visitors_today, shop.options.split_label, shop.options.dimension_labels) == (
        False, None, ("os", "visit")), "in the catalogue's order"


BAD = [
    ("targets: [{name: a, url: 'https://a'}]\n1: x\nb: y", None, "'1'"),
    ("targets: [{name: a, url: 'https://a'}, {name: a, url: 'https://b'}]", "'a'", "'name'"),
    ("targets: [{name: a, url: 'ftp://a'}]", "'a'", "'url'"),
    ("targets: [{name: a, url: 'https://user:pw@a'}]", "'a'", "'url'"),
    ("targets: [{name: 'a b', url: 'https://a'}]", "'a b'", "'name'"),
    ("targets: [{name: a}]", "'a'", "'url'"),
    ("targets: [{url: 'https://a'}]", "'#1'", "'name'"),
    ("targets: [{name: a, url: 'https://a', page_size: 5000}]", "'a'", "'page_size'"),
    ("targets: [{name: a, url: 'https://a', poll_intervall: 5}]", "'a'", "'poll_intervall'"),
    (f"targets: [{{name: a, url: 'https://a', password: {CANARY}}}]", "'a'", "'password'"),
    (f"defaults: {{password: {CANARY}}}\ntargets: [{{name: a, url: 'https://a'}}]", None, "'defaults.password'"),
    ("targets: [{name: a, url: 'https://a', password_file: /no/such/file}]", "'a'", "'password_file'"),
    ("targets: [{name: a, url: 'https://a', poll_interval: 60, stale_after: 10}]", "'a'", "'stale_after'"),
    ("defaults: {timeout: 0}\ntargets: [{name: a, url: 'https://a'}]", "'a'", "'timeout'"),
    ("targets: [{name: a, url: 'https://a', dimensions: 'os,shoe_size'}]", "'a'", "'dimensions'"),
    ("defaults: {split_by: floor}\ntargets: [{name: a, url: 'https://a'}]", "'a'", "'split_by'"),
    ("targets: [{name: a, url: 'https://a', visitors_today: maybe}]", "'a'", "'visitors_today'"),
    ("targets: []", None, "'targets'"),
    ("target: []", None, "'target'"),
    ("targets: [a, b", None, None),
]


@pytest.mark.parametrize(("text", "target", "key"), BAD)
def test_an_invalid_file_is_one_line_naming_the_file_the_target_and_the_key(
        tmp_path: Path, text: str, target: str | None, key: str | None) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TargetsError) as caught:
        load_targets(path)
    message = str(caught.value)
    assert message.startswith(f"targets file {path}")
    assert "\n" not in message
    assert (f"target {target}" in message) if target else "target '" not in message
    if key:
        assert f"key {key}" in message
    assert CANARY not in message


def test_console_script_exits_2_with_one_line_for_an_invalid_file(tmp_path: Path) -> None:
    path = write(tmp_path, f"targets: [{{name: mall, url: 'https://a', password: {CANARY}}}]")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMX_")}
    result = subprocess.run([console_script(), "--targets-file", str(path)], capture_output=True, text=True,
                            timeout=30, env=env, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1
    assert f"targets file {path}, target 'mall', key 'password'" in result.stderr
    assert CANARY not in result.stderr


@pytest.mark.parametrize(("argv", "name"), [
    (["--url", "https://cmx-7.example.net:8443"], "cmx-7.example.net"),
    (["--url", "https://cmx-7.example.net", "--name", "hall-a"], "hall-a"),
    (["--demo"], "demo"),
])
def test_without_a_file_the_settings_are_one_target(argv: list[str], name: str) -> None:
    (target,) = load_settings(argv).targets()
    assert target.name == name
    assert client_options(target).configured_in is None, "the client's errors name the CMX_* settings"


def test_the_single_target_takes_the_settings_options(tmp_path: Path, secret: Path) -> None:
    (target,) = load_settings(["--url", "https://cmx", "--password-file", str(secret), "--page-size", "200",
                               "--poll-interval", "15"]).targets()
    assert (target.options.page_size, target.options.poll_interval, target.password) == (200, 15, CANARY)
