"""Settings from flags and environment, and the one-line errors a user sees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import certifi
import pytest

from cmx_connect_exporter.settings import (
    Settings,
    SettingsError,
    build_parser,
    constraint,
    env_name,
    flag_name,
    load_settings,
    parse_listen_address,
)
from exporter_process import console_script

CANARY = "pw-canary-7f3a9"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"CMX_{name.upper()}", raising=False)


def test_defaults() -> None:
    s = load_settings(["--url", "https://cmx.example.net/"])
    assert s.url == "https://cmx.example.net"
    assert (s.poll_interval, s.page_size, s.timeout, s.max_label_values) == (60, 1000, 10, 50)
    assert s.stale_after_seconds == 180
    assert s.poll_timeout_seconds == 60
    assert s.listen == ("0.0.0.0", 10180)
    assert s.insecure_skip_verify is False


def test_environment_and_flags_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMX_URL", "https://env.example.net")
    monkeypatch.setenv("CMX_POLL_INTERVAL", "5")
    monkeypatch.setenv("CMX_INSECURE_SKIP_VERIFY", "true")
    s = load_settings(["--poll-interval", "7"])
    assert (s.url, s.poll_interval, s.insecure_skip_verify, s.stale_after_seconds) == (
        "https://env.example.net", 7, True, 21)


@pytest.mark.parametrize(("args", "poll_timeout"), [
    (["--poll-interval", "120"], 120),
    (["--poll-interval", "5"], 30),
    (["--poll-interval", "5", "--timeout", "20"], 60),
    (["--poll-interval", "5", "--poll-timeout", "2", "--timeout", "1"], 2),
], ids=["the-interval", "at-least-30-s", "at-least-3-timeouts", "as-set"])
def test_a_poll_may_take_its_interval_with_room_for_one_page_retried(args: list[str], poll_timeout: float) -> None:
    assert load_settings(["--url", "https://cmx", *args]).poll_timeout_seconds == poll_timeout


def test_password_file_is_read_and_trimmed_of_its_newline(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(CANARY + "\n")
    s = load_settings(["--url", "https://cmx", "--password-file", str(secret)])
    assert s.read_password() == CANARY


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Files that a setting may point at but cannot use, by the name the table below refers to them."""
    folder = tmp_path_factory.mktemp("bad-settings")
    not_utf8 = folder / "not-utf8"
    not_utf8.write_bytes(b"pw\xff\xfe\n")
    bad_yaml, plain_password = folder / "web-bad-yaml.yml", folder / "web-plain-password.yml"
    bad_yaml.write_text("basic_auth_users: [\n")
    plain_password.write_text("basic_auth_users:\n  prometheus: hunter2\n")
    return {"dir": str(folder), "not_utf8": str(not_utf8), "this": __file__, "bad_yaml": str(bad_yaml),
            "plain_password": str(plain_password), "ca": certifi.where()}


# Each row is a command line as a shell would take it: leading NAME=value words go to the environment,
# and {name} words are files from ``bad_files``.
INVALID = [
    ([], "CMX_URL"),
    (["--url", "ftp://cmx"], "CMX_URL"),
    (["--url", "cmx.example.net"], "CMX_URL"),
    (["--url", "https://user:pw@cmx"], "CMX_URL"),
    (["--url", "https://cmx/?q=1"], "CMX_URL"),
    (["CMX_URL=https://", "--poll-interval", "60"], "CMX_URL"),
    (["--url", "https://cmx", "--poll-interval", "soon"], "CMX_POLL_INTERVAL"),
    (["CMX_POLL_INTERVAL=soon", "--url", "https://cmx"], "CMX_POLL_INTERVAL"),
    (["--url", "https://cmx", "--poll-interval", "0.5"], "CMX_POLL_INTERVAL"),
    (["--url", "https://cmx", "--page-size", "1001"], "CMX_PAGE_SIZE"),
    (["--url", "https://cmx", "--page-size", "5000"], "CMX_PAGE_SIZE"),
    (["--url", "https://cmx", "--page-size", "0"], "CMX_PAGE_SIZE"),
    (["--url", "https://cmx", "--timeout", "-1"], "CMX_TIMEOUT"),
    (["--url", "https://cmx", "--timeout", "301"], "CMX_TIMEOUT"),
    (["--url", "https://cmx", "--max-label-values", "0"], "CMX_MAX_LABEL_VALUES"),
    (["--url", "https://cmx", "--stale-after", "0"], "CMX_STALE_AFTER"),
    (["--url", "https://cmx", "--poll-timeout", "0"], "CMX_POLL_TIMEOUT"),
    (["--url", "https://cmx", "--poll-timeout", "10"], "CMX_POLL_TIMEOUT"),
    (["CMX_TIMEOUT=20", "--url", "https://cmx", "--poll-timeout", "15"], "CMX_POLL_TIMEOUT"),
    (["--url", "https://cmx", "--concurrency", "9"], "CMX_CONCURRENCY"),
    (["--url", "https://cmx", "--max-pages", "0"], "CMX_MAX_PAGES"),
    (["--url", "https://cmx", "--listen-address", "10180"], "CMX_LISTEN_ADDRESS"),
    (["--url", "https://cmx", "--listen-address", "0.0.0.0:99999"], "CMX_LISTEN_ADDRESS"),
    (["--url", "https://cmx", "--log-level", "loud"], "CMX_LOG_LEVEL"),
    (["--url", "https://cmx", "--log-format", "xml"], "CMX_LOG_FORMAT"),
    (["CMX_INSECURE_SKIP_VERIFY=maybe", "--url", "https://cmx"], "CMX_INSECURE_SKIP_VERIFY"),
    (["CMX_DEMO=perhaps"], "CMX_DEMO"),
    (["--url", "https://cmx", "--ca-bundle", "/no/such/ca.pem"], "CMX_CA_BUNDLE"),
    (["--url", "https://cmx", "--ca-bundle", "{dir}"], "CMX_CA_BUNDLE"),
    (["--url", "https://cmx", "--password-file", "/no/such/file"], "CMX_PASSWORD_FILE"),
    (["--url", "https://cmx", "--password-file", "{not_utf8}"], "CMX_PASSWORD_FILE"),
    (["--url", "https://cmx", "--password", "x", "--password-file", "{this}"], "CMX_PASSWORD_FILE"),
    (["--url", "https://cmx", "--ca-bundle", "{this}"], "CMX_CA_BUNDLE"),  # no PEM certificate in it
    (["--url", "https://cmx", "--insecure-skip-verify", "--ca-bundle", "{ca}"], "CMX_INSECURE_SKIP_VERIFY"),
    (["--url", "https://cmx", "--web-config-file", "/no/such/web.yml"], "CMX_WEB_CONFIG_FILE"),
    (["CMX_WEB_CONFIG_FILE={bad_yaml}", "--url", "https://cmx"], "CMX_WEB_CONFIG_FILE"),
    (["--url", "https://cmx", "--web-config-file", "{plain_password}"], "CMX_WEB_CONFIG_FILE"),
    (["--url", "https://cmx", "--dimensions", "site,zone"], "CMX_DIMENSIONS"),
    (["CMX_DIMENSIONS=,", "--url", "https://cmx"], "CMX_DIMENSIONS"),
    (["--url", "https://cmx", "--split-by", "portal"], "CMX_SPLIT_BY"),
    (["CMX_SPLIT_BY=sites", "--url", "https://cmx"], "CMX_SPLIT_BY"),
]


@pytest.mark.parametrize(("words", "setting"), INVALID, ids=[f"{s}-{i}" for i, (_, s) in enumerate(INVALID)])
def test_console_script_rejects_each_invalid_setting(words: list[str], setting: str,
                                                     bad_files: dict[str, str]) -> None:
    """Exit status 2 and one line that names the setting: what a user or an orchestrator sees."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMX_")}
    argv = []
    for word in words:
        name, eq, value = word.partition("=")
        if eq and name.startswith("CMX_") and not argv:
            env[name] = value.format(**bad_files)
        else:
            argv.append(word.format(**bad_files))
    result = subprocess.run([console_script(), *argv], capture_output=True, text=True, timeout=30, env=env,
                            check=False)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, "exactly one line"
    assert setting in result.stderr
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr


def test_error_never_echoes_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMX_TIMEOUT", CANARY)
    with pytest.raises(SettingsError) as caught:
        load_settings(["--url", "https://cmx"])
    assert CANARY not in str(caught.value)


@pytest.mark.parametrize(("value", "pair"), [
    ("0.0.0.0:10180", ("0.0.0.0", 10180)),
    (":9", ("0.0.0.0", 9)),
    ("[::1]:10180", ("::1", 10180)),
    ("localhost:80", ("localhost", 80)),
    ("exporter-1.example.net:80", ("exporter-1.example.net", 80)),
])
def test_listen_address_forms(value: str, pair: tuple[str, int]) -> None:
    assert parse_listen_address(value) == pair


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cmx_connect_exporter", *argv], capture_output=True, text=True,
                          timeout=30, env=env, check=False)


def test_cli_help_lists_every_setting_and_no_secret() -> None:
    result = run_cli("--help", env={"CMX_PASSWORD": CANARY, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0
    for name in Settings.model_fields:
        assert f"CMX_{name.upper()}" in result.stdout
        assert "--" + name.replace("_", "-") in result.stdout
    assert CANARY not in result.stdout


README = Path(__file__).resolve().parents[1] / "README.md"


def help_entry(name: str) -> str:
    """A flag's --help text, on one line."""
    (action,) = [action for action in build_parser()._actions if action.dest == name]
    return " ".join(str(action.help).split())


def readme_row(name: str) -> str:
    """The row of the README's settings table for a field, without its backticks."""
    (row,) = [line for line in README.read_text().splitlines() if line.startswith(f"| `{env_name(name)}`")]
    return row.replace("`", "")


@pytest.mark.parametrize(("name", "rule"), [
    ("url", "required, except with --demo or a targets file"),
    ("log_level", "one of debug, info, warning, error"),
    ("log_format", "one of text, json"),
    ("poll_interval", "1 or more"),
    ("page_size", "1 to 1000"),
    ("timeout", "more than 0, at most 300"),
    ("concurrency", "1 to 8"),
    ("stale_after", "at least CMX_POLL_INTERVAL"),
    ("poll_timeout", "longer than CMX_TIMEOUT"),
])
def test_help_says_what_is_required_the_choices_and_the_ranges(name: str, rule: str) -> None:
    assert constraint(name, Settings.model_fields[name]) == rule
    assert f"; {rule} (env {env_name(name)}" in help_entry(name)


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_help_and_the_readme_use_the_same_words(name: str) -> None:
    """Every rule --help states is in the README's row for that setting, word for word."""
    rule = constraint(name, Settings.model_fields[name])
    if rule:
        assert rule in readme_row(name)


def test_the_stale_after_text_is_the_readmes() -> None:
    assert str(Settings.model_fields["stale_after"].description) in readme_row("stale_after")


def test_help_shows_the_choices_in_the_usage_line() -> None:
    usage = build_parser().format_usage()
    assert f"{flag_name('log_level')} {{debug,info,warning,error}}" in usage
    assert f"{flag_name('log_format')} {{text,json}}" in usage


def test_the_rules_help_states_are_the_rules_the_model_enforces() -> None:
    """--help's ranges and choices come from the model, so a value just outside one fails."""
    for field, bad in [("page_size", 1001), ("concurrency", 0), ("timeout", 0), ("log_format", "xml"),
                       ("stale_after", 30)]:
        with pytest.raises(SettingsError, match=env_name(field)):
            load_settings([flag_name(field), str(bad), "--poll-interval", "60", "--demo"])
    with pytest.raises(SettingsError, match="CMX_URL"):
        load_settings([])
