"""TLS and basic auth for the HTTP side, from a Prometheus exporter-toolkit web config file.

node_exporter and most Go exporters read this format (``--web.config.file``), so users can reuse
what they have::

    tls_server_config:
      cert_file: server.crt     # relative paths are relative to this file
      key_file: server.key
      min_version: TLS12        # optional: TLS10, TLS11, TLS12 or TLS13
    basic_auth_users:
      prometheus: $2y$10$...    # bcrypt hashes, e.g. from htpasswd -nBC 10 prometheus

Only these keys are read. Any other key is refused rather than ignored, because a security setting
that silently does nothing is worse than an error at start. ``/healthz`` stays open, so liveness
probes need no credentials; it tells nothing but "ok".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OPEN_PATHS = frozenset({"/healthz"})
CHALLENGE = 'Basic realm="cmx-connect-exporter", charset="UTF-8"'
TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
SECTIONS = ("tls_server_config", "basic_auth_users")
TLS_KEYS = ("cert_file", "key_file", "min_version")
# The cost is one bcrypt accepts (4 to 31): a hash it refuses would make a user who can never log in.
_BCRYPT_HASH = re.compile(r"\$2[abxy]?\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}")
_REMEMBERED = 256  # successful checks kept; the cache is emptied when full


class WebConfigError(ValueError):
    """The file cannot be used. The message says why, and quotes no hash, key or password."""


@dataclass(frozen=True)
class WebConfig:
    """What the file asks for; the empty default serves plain HTTP to anyone, as without a file."""

    ssl_context: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)
    files: tuple[Path, ...] = ()  # the file itself, and the certificate and key it names: what a reload watches
    digest: bytes = b""  # of those files' contents, as read: a reload that finds the same changes nothing

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context else "http"


def load_web_config(path: Path | None) -> WebConfig:
    """Read and check the file, loading the certificate now so a bad one stops the start. Raises WebConfigError."""
    if path is None:
        return WebConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WebConfigError(f"cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise WebConfigError("is not UTF-8 text") from None
    import yaml  # here, not at the top: most exporters run without a web config

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # its message would quote the file, hashes included
        mark = getattr(exc, "problem_mark", None)
        raise WebConfigError("is not valid YAML" + (f" (line {mark.line + 1})" if mark else "")) from None
    data = _mapping(data, "the file", SECTIONS)
    tls = data.get("tls_server_config")
    context = _tls(tls, path.parent)
    files = (path, *(path.parent / tls[key] for key in ("cert_file", "key_file") if context))
    digest = hashlib.sha256()
    for file in files:
        try:
            digest.update(hashlib.sha256(file.read_bytes()).digest())
        except OSError as exc:  # gone since OpenSSL read it: the next look reloads again
            raise WebConfigError(f"cannot read {file.name} ({exc.strerror})") from None
    return WebConfig(ssl_context=context, users=_users(data.get("basic_auth_users")), files=files,
                     digest=digest.digest())


def _mapping(value: Any, where: str, known: tuple[str, ...] | None = None) -> dict[Any, Any]:
    """A YAML mapping, with only ``known`` keys if given; an empty section counts as an empty mapping."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(f"{where} must be a mapping")
    for key in value:
        if known is not None and key not in known:
            raise WebConfigError(f"{key} in {where} is not supported; known keys are {', '.join(known)}")
    return value


def _tls(section: Any, base: Path) -> ssl.SSLContext | None:
    if section is None:
        return None
    tls = _mapping(section, "tls_server_config", TLS_KEYS)
    cert, key = tls.get("cert_file"), tls.get("key_file")
    if not (isinstance(cert, str) and cert and isinstance(key, str) and key):
        raise WebConfigError("tls_server_config needs both cert_file and key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(base / cert, base / key)
    except OSError as exc:  # ssl.SSLError is an OSError too
        why = exc.strerror if exc.strerror and not isinstance(exc, ssl.SSLError) else "not a matching PEM pair"
        raise WebConfigError(f"tls_server_config: cannot load cert_file {cert} with key_file {key} ({why})") from None
    version = tls.get("min_version")
    if version is not None:
        if version not in TLS_VERSIONS:
            raise WebConfigError(f"tls_server_config.min_version must be one of {', '.join(TLS_VERSIONS)}")
        context.minimum_version = TLS_VERSIONS[version]
    return context


def _users(section: Any) -> dict[str, bytes]:
    users = {}
    for name, hashed in _mapping(section, "basic_auth_users").items():
        if not isinstance(name, str) or not name or ":" in name:
            raise WebConfigError("basic_auth_users: each user name must be text without ':'")
        if not isinstance(hashed, str) or not _BCRYPT_HASH.fullmatch(hashed):
            raise WebConfigError(f"basic_auth_users.{name} is not a bcrypt hash (htpasswd -nBC 10 {name})")
        users[name] = hashed.encode()
    return users


class BasicAuth:
    """Checks Basic credentials against bcrypt hashes, and remembers the ones that passed.

    bcrypt is slow by design, and Prometheus presents the same credentials at every scrape, so a
    success is remembered as an HMAC of the credentials under a key made at start: a scrape stays
    fast, and neither the password nor anything that could be tested offline against it is kept.
    Failures are never remembered, so each wrong guess costs a full bcrypt check.
    """

    def __init__(self, users: Mapping[str, bytes]) -> None:
        import bcrypt  # here, not at the top: only an exporter with users pays for it

        self._checkpw = bcrypt.checkpw
        self._users = dict(users)
        # Checked when the user is unknown, at the highest cost among the users, so that a wrong name
        # takes as long as a wrong password and the time of a 401 does not tell which names exist.
        cost = max(int(hashed.split(b"$")[2]) for hashed in self._users.values())
        self._nobody = bcrypt.hashpw(b"", bcrypt.gensalt(rounds=cost))
        self._key = os.urandom(32)
        self._passed: set[bytes] = set()
        self._lock = threading.Lock()

    def remembered(self, presented: bytes) -> bool:
        """Whether these ``user:password`` bytes passed before: a keyed hash, no bcrypt."""
        return hmac.new(self._key, presented, hashlib.sha256).digest() in self._passed

    def verify(self, presented: bytes) -> bool:
        """The bcrypt check, slow by design; a success is remembered."""
        user, _, password = presented.partition(b":")
        try:
            hashed = self._users.get(user.decode())
            ok = self._checkpw(password, hashed or self._nobody) and hashed is not None
        except ValueError:  # a user name that is not UTF-8, or a password over bcrypt's 72 bytes
            return False
        if ok:
            with self._lock:
                if len(self._passed) >= _REMEMBERED:
                    self._passed.clear()
                self._passed.add(hmac.new(self._key, presented, hashlib.sha256).digest())
        return ok


def credentials(header: str | None) -> bytes | None:
    """``user:password`` as sent in a Basic Authorization header, or None when there is none."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        presented = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return presented if b":" in presented else None
