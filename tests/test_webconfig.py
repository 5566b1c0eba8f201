"""CMX_WEB_CONFIG_FILE: the exporter-toolkit web config, its errors, basic auth and TLS over real HTTP."""

from __future__ import annotations

import base64
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests

from cmx_connect_exporter.web.webconfig import BasicAuth, WebConfigError, credentials, load_web_config
from cmx_simulator import Simulator
from exporter_process import ExporterProcess, issued_certificate, session_counts, up

USER, PASSWORD = "prometheus", "scrape-pw-Ü-e81c"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()  # cost 4: fast tests, same checks


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return issued_certificate(tmp_path_factory.mktemp("web-tls"))


def write(folder: Path, text: str) -> Path:
    path = folder / "web-config.yml"
    path.write_text(text)
    return path


def test_tls_and_users_load_with_paths_relative_to_the_file(tls_files: tuple[Path, Path, Path]) -> None:
    _, cert, key = tls_files
    config = load_web_config(write(cert.parent, f"""
tls_server_config:
  cert_file: {cert.name}
  key_file: {key}
  min_version: TLS13
basic_auth_users:
  {USER}: {HASH}
  other: {HASH.replace("$2b$", "$2y$")}
"""))
    assert config.scheme == "https" and config.ssl_context is not None
    assert config.ssl_context.minimum_version.name == "TLSv1_3"
    assert set(config.users) == {USER, "other"}


@pytest.mark.parametrize("text", ["", "# nothing\n", "tls_server_config:\nbasic_auth_users:\n"])
def test_an_empty_file_asks_for_nothing(text: str, tmp_path: Path) -> None:
    config = load_web_config(write(tmp_path, text))
    assert (config.scheme, dict(config.users)) == ("http", {})


@pytest.mark.parametrize(("text", "words"), [
    ("tls_server_config: [\n", "is not valid YAML (line 2)"),
    ("- a list\n", "the file must be a mapping"),
    ("http_server_config:\n  http2: false\n", "http_server_config in the file is not supported"),
    ("tls_server_config:\n  cert_file: a.crt\n", "needs both cert_file and key_file"),
    ("tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  client_ca_file: ca.pem\n",
     "client_ca_file in tls_server_config is not supported"),
    ("tls_server_config:\n  cert_file: /no/such.crt\n  key_file: /no/such.key\n", "No such file or directory"),
    ("tls_server_config:\n  cert_file: {ca}\n  key_file: {cert}\n", "not a matching PEM pair"),
    ("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_version: SSL3\n", "min_version must be one of"),
    ("basic_auth_users: [alice]\n", "basic_auth_users must be a mapping"),
    ("basic_auth_users:\n  alice: plain-text-password\n", "basic_auth_users.alice is not a bcrypt hash"),
    ("basic_auth_users:\n  alice: " + HASH.replace("$04$", "$03$") + "\n", "alice is not a bcrypt hash"),
    ("basic_auth_users:\n  alice: " + HASH.replace("$04$", "$32$") + "\n", "alice is not a bcrypt hash"),
    ("basic_auth_users:\n  'a:b': " + HASH + "\n", "without ':'"),
    ("basic_auth_users:\n  123: " + HASH + "\n", "without ':'"),
])
def test_bad_files_are_refused_with_a_reason_that_quotes_no_secret(text: str, words: str, tmp_path: Path,
                                                                    tls_files: tuple[Path, Path, Path]) -> None:
    ca, cert, key = tls_files
    with pytest.raises(WebConfigError) as caught:
        load_web_config(write(tmp_path, text.format(ca=ca, cert=cert, key=key)))
    assert words in str(caught.value)
    assert "plain-text-password" not in str(caught.value) and HASH not in str(caught.value)


def check(auth: BasicAuth, header: str | None) -> bool:
    """A header's credentials as the server's auth gate takes them: remembered, else checked with bcrypt."""
    presented = credentials(header)
    return presented is not None and (auth.remembered(presented) or auth.verify(presented))


def basic(user: str | bytes, password: str | bytes) -> str:
    raw = (user.encode() if isinstance(user, str) else user) + b":"
    raw += password.encode() if isinstance(password, str) else password
    return "Basic " + base64.b64encode(raw).decode()


@pytest.mark.parametrize(("header", "ok"), [
    (basic(USER, PASSWORD), True),
    (basic(USER, PASSWORD).replace("Basic", "basic"), True),
    (basic(USER, PASSWORD + "x"), False),
    (basic("someone-else", PASSWORD), False),
    (basic(USER, "x" * 100), False),  # over bcrypt's 72 bytes: refused, not an error
    (basic(b"\xff\xfe", PASSWORD), False),
    (None, False),
    ("", False),
    ("Bearer abc", False),
    ("Basic not-base64!", False),
    ("Basic " + base64.b64encode(b"no-colon").decode(), False),
])
def test_basic_auth_check(header: str | None, ok: bool) -> None:
    assert check(BasicAuth({USER: HASH.encode()}), header) is ok


def test_a_success_is_remembered_by_a_keyed_hash_and_a_failure_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """bcrypt runs once for the credentials Prometheus sends at every scrape, and the password is not kept."""
    calls = []
    real_checkpw = bcrypt.checkpw
    monkeypatch.setattr(bcrypt, "checkpw", lambda pw, hashed: calls.append(pw) or real_checkpw(pw, hashed))
    auth = BasicAuth({USER: HASH.encode()})
    for _ in range(5):
        assert check(auth, basic(USER, PASSWORD))
        assert not check(auth, basic(USER, "wrong"))
    assert calls.count(PASSWORD.encode()) == 1
    assert calls.count(b"wrong") == 5
    remembered = b"".join(vars(auth).get("_passed", set()))
    assert len(remembered) == 32
    assert PASSWORD.encode() not in remembered and base64.b64encode(PASSWORD.encode()) not in remembered


def test_an_unknown_user_takes_as_long_as_a_wrong_password() -> None:
    """Else the time a 401 takes tells which user names exist. Cost 12, not the 4 of the other tests: slow
    enough that bcrypt, not noise, sets both times, which are compared with each other, not with a clock."""
    auth = BasicAuth({USER: bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(12))})
    unknown: list[float] = []
    wrong: list[float] = []
    for _ in range(3):  # interleaved, so that a slower moment of the machine slows both alike
        for header, times in ((basic("nobody", PASSWORD), unknown), (basic(USER, "wrong"), wrong)):
            start = time.perf_counter()
            assert not check(auth, header)
            times.append(time.perf_counter() - start)
    ratio = statistics.median(unknown) / statistics.median(wrong)
    assert 0.5 <= ratio <= 2, f"an unknown user takes {ratio:.2f} times as long as a wrong password"


@pytest.fixture(scope="module")
def cmx() -> Iterator[Simulator]:
    with Simulator(500, seed=2) as sim:
        yield sim


@pytest.mark.parametrize("tls", [True, False], ids=["tls-and-basic-auth", "basic-auth-only"])
def test_metrics_behind_the_web_config(tls: bool, cmx: Simulator, tmp_path: Path,
                                       tls_files: tuple[Path, Path, Path]) -> None:
    ca, cert, key = tls_files
    section = f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n" if tls else ""
    config = write(tmp_path, f"{section}basic_auth_users:\n  {USER}: {HASH}\n")
    with ExporterProcess("--url", cmx.url, "--username", "demo", "--password", "demo",
                         env={"CMX_WEB_CONFIG_FILE": str(config)}, scheme="https" if tls else "http") as exporter:
        exporter.http.verify = str(ca)
        exporter.http.auth = requests.auth.HTTPBasicAuth(USER.encode(), PASSWORD.encode())  # UTF-8, as Prometheus
        samples = exporter.wait_for(up)
        assert session_counts(samples) == cmx.active_counts()

        anonymous = requests.Session()
        anonymous.verify, anonymous.trust_env = str(ca), False
        for path in ("/metrics", "/"):
            for auth in (None, (USER, "wrong"), ("nobody", "pw")):
                refused = anonymous.get(exporter.url + path, auth=auth, timeout=5)
                assert refused.status_code == 401, (path, auth)
                assert refused.headers["WWW-Authenticate"].startswith('Basic realm="cmx-connect-exporter"')
                assert "cmx_connect" not in refused.text
        health = anonymous.get(exporter.url + "/healthz", timeout=5)
        assert (health.status_code, health.text) == (200, "ok\n"), "probes need no credentials"
        if tls:
            with pytest.raises(requests.ConnectionError):
                requests.get(exporter.url.replace("https:", "http:") + "/metrics", timeout=5)
            with pytest.raises(requests.exceptions.SSLError):
                requests.get(exporter.url + "/healthz", timeout=5)  # the CA is not in the system store
        assert exporter.http.get(exporter.url + "/", timeout=5).status_code == 200
        log = exporter.stop()
    assert f"listening on {'https' if tls else 'http'}://127.0.0.1:{exporter.port}/metrics (basic auth" in log
    assert PASSWORD not in log and "Traceback" not in log
