"""Targets: one CMX each, with its own credentials, TLS, schedule and limits.

A targets file (``CMX_TARGETS_FILE``) holds a ``defaults:`` block and a ``targets:`` list; each entry is the
defaults overlaid with its own keys, validated by one pydantic model. A password comes only from a file,
read once at load, so a scrape parameter or the YAML itself can never carry one. Without a file the
``CMX_*`` settings describe one target, so a sidecar user sees no change but the ``cmx`` label.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from cmx_connect_exporter.counting.dimensions import LABELS, SPLITS

MIN_POLL_TIMEOUT = 30.0
# A label value Prometheus, Grafana and a URL's query all take unquoted: the name is also /probe's parameter.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")
SECRET_KEYS = ("password",)


class TargetsError(Exception):
    """The targets file is unusable; the message is one line naming the file, the target and the key."""


def check_url(value: str) -> str:
    """A CMX base URL: http(s), a host, no credentials and no query."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials; use a username and a password file")
    if parts.query or parts.fragment:
        raise ValueError("must be the server's base URL, without a query")
    return value.strip().rstrip("/")


def check_name(value: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError("must be 1 to 63 letters, digits, '.', '_', ':' or '-', starting with a letter or digit")
    return value


def readable_file(path: Path) -> bytes:
    """The file's bytes; a ValueError that says why not, such as a folder the user may not enter."""
    try:
        if not path.is_file():
            raise ValueError("is not a readable file")
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read it ({exc.strerror})") from None


def check_ca_bundle(path: Path) -> bytes:
    """The bundle's bytes, once OpenSSL has read certificates from them. Raises ValueError."""
    data = readable_file(path)
    try:
        ssl.create_default_context().load_verify_locations(cadata=data.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError):
        raise ValueError("holds no PEM certificate that OpenSSL can read") from None
    return data


class PollOptions(BaseModel):
    """How one CMX is polled: the keys a target may set, and the CMX_* settings of single-target mode."""

    model_config = ConfigDict(allow_inf_nan=False)

    username: str | None = Field(None, description="CMX API user (HTTP Basic)")
    password_file: Path | None = Field(None, description="file holding the password (Docker or Kubernetes secret)")
    poll_interval: Annotated[float, Field(ge=1, description="seconds between polls")] = 60
    page_size: Annotated[int, Field(ge=1, le=1000, description="records per page")] = 1000
    timeout: Annotated[float, Field(gt=0, le=300, description="seconds allowed to connect, and again for the whole "
                                                              "answer to one HTTP request")] = 10
    poll_timeout: Annotated[
        float | None,
        Field(gt=0, description="seconds a whole poll may take; past it the poll fails as a timeout"),
    ] = None
    ca_bundle: Path | None = Field(None, description="CA file for a CMX with a private certificate")
    insecure_skip_verify: bool = Field(False, description="turn certificate checks off (logs a warning)")
    stale_after: Annotated[
        float | None,
        Field(gt=0, description="seconds after the last successful poll that its counts stay published"),
    ] = None
    max_label_values: Annotated[int, Field(ge=1, le=1000, description="distinct values kept per label")] = 50
    concurrency: Annotated[int, Field(ge=1, le=8, description="pages fetched at once; raise with care")] = 1
    max_pages: Annotated[int, Field(ge=1, description="hard cap on pages per poll")] = 5000
    dimensions: str = Field("all", description="breakdowns of the active sessions to export, comma-separated: "
                                               f"{','.join(LABELS)}; all or none")
    split_by: str = Field("none", description="a label to put on every active-session family, so each "
                                              f"{'/'.join(d.label for d in SPLITS)} has its own counts: "
                                              f"none or {' or '.join(d.label for d in SPLITS)}")
    visitors_today: bool = Field(False, description="after each poll, also count the sessions with a login since "
                                                    "CMX's local midnight: a second paged query of CMX")

    @field_validator("ca_bundle", "password_file")
    @classmethod
    def _readable_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None:  # a CA bundle must hold certificates too
            (check_ca_bundle if info.field_name == "ca_bundle" else readable_file)(value)
        return value

    @field_validator("dimensions")
    @classmethod
    def _check_dimensions(cls, value: str) -> str:
        text = value.strip().lower()
        if text in ("all", "none"):
            return text
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in LABELS]
        if unknown or not names:
            raise ValueError(f"must be all, none, or names from {','.join(LABELS)}")
        return ",".join(dict.fromkeys(names))

    @field_validator("split_by")
    @classmethod
    def _check_split_by(cls, value: str) -> str:
        text = value.strip().lower()
        if text != "none" and text not in {d.label for d in SPLITS}:
            raise ValueError(f"must be none or {' or '.join(d.label for d in SPLITS)}")
        return text

    @model_validator(mode="after")
    def _check_options(self) -> PollOptions:
        if self.poll_timeout is not None and self.poll_timeout <= self.timeout:
            raise FieldError("poll_timeout", "must be longer than timeout, or no request could finish")
        if self.stale_after is not None and self.stale_after < self.poll_interval:
            raise FieldError("stale_after", "must be at least poll_interval, or counts would vanish between polls")
        if self.insecure_skip_verify and self.ca_bundle is not None:
            raise FieldError("insecure_skip_verify", "cannot be used together with ca_bundle")
        return self

    @property
    def stale_after_seconds(self) -> float:
        return self.stale_after if self.stale_after is not None else 3 * self.poll_interval

    @property
    def poll_timeout_seconds(self) -> float:
        """By default a poll may take its interval, with room for one slow page's retries."""
        if self.poll_timeout is not None:
            return self.poll_timeout
        return max(self.poll_interval, 3 * self.timeout, MIN_POLL_TIMEOUT)

    @property
    def dimension_labels(self) -> tuple[str, ...]:
        """The breakdowns to count, in the catalogue's order."""
        if self.dimensions == "all":
            return LABELS
        chosen = set(self.dimensions.split(",")) if self.dimensions != "none" else set()
        return tuple(label for label in LABELS if label in chosen)

    @property
    def split_label(self) -> str | None:
        return None if self.split_by == "none" else self.split_by

    @property
    def verify(self) -> bool | str:
        return False if self.insecure_skip_verify else str(self.ca_bundle) if self.ca_bundle else True


class FieldError(ValueError):
    """A rule across fields, blamed on the one field the user should change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class TargetEntry(PollOptions):
    """One entry of the targets file, after the defaults are laid under it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    url: str

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return check_name(value)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_url(value)


@dataclass(frozen=True, slots=True)
class Target:
    """A CMX to poll, with its password read; equal targets poll the same way, so a reload keeps them. The
    credentials are left out of that comparison: a rotated password or a renewed CA bundle is used from the
    next poll, and the target keeps its counts."""

    name: str
    url: str
    options: PollOptions
    password: str | None = field(default=None, repr=False, compare=False)
    ca_digest: bytes = field(default=b"", repr=False, compare=False)  # of the CA bundle's content
    # where the user sets its options, for errors that ask for a fix: None for the CMX_* settings
    configured_in: str | None = field(default=None, compare=False)

    @property
    def credentials(self) -> tuple[str | None, bytes]:
        return self.password, self.ca_digest


def ca_digest(options: PollOptions) -> bytes:
    """The CA bundle's digest, so that a renewed bundle reaches the poll workers. Raises ValueError."""
    return hashlib.sha256(check_ca_bundle(options.ca_bundle)).digest() if options.ca_bundle else b""


def first_error(exc: ValidationError) -> tuple[str, str]:
    """The first problem as (key, message). ``input`` is left out: it may be a password."""
    error = exc.errors(include_input=False)[0]
    key = ".".join(str(part) for part in error["loc"])
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, FieldError):
        return cause.field, str(cause)
    return key, str(cause) if isinstance(cause, ValueError) else error["msg"]


def read_password(path: Path) -> str:
    """The first line of a secret file. Raises ValueError with a message that never quotes the file."""
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:  # the message would quote the bytes around the bad one
        raise ValueError("is not UTF-8 text") from None


def load_targets(path: Path) -> tuple[Target, ...]:
    """Read and validate the whole file, or raise TargetsError: a file is taken whole or not at all."""

    def fail(target: str | None, key: str | None, message: str) -> TargetsError:
        where = "".join([f", target {target!r}" if target else "", f", key {key!r}" if key else ""])
        return TargetsError(f"targets file {path}{where}: {message}")

    import yaml  # here, not at the top: a sidecar without a targets file never needs it (1.7 MiB)

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise fail(None, None, f"cannot read it ({exc.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise fail(None, None, "is not valid YAML" + (f" (line {line + 1})" if line is not None else "")) from None
    if not isinstance(document, dict):
        raise fail(None, None, "must be a mapping with 'defaults' and 'targets'")
    if unknown := sorted(map(str, set(document) - {"defaults", "targets"})):  # keys may be numbers too
        raise fail(None, unknown[0], "is not a known key; the file has 'defaults' and 'targets'")
    defaults = document.get("defaults") or {}
    entries = document.get("targets")
    if not isinstance(defaults, dict):
        raise fail(None, "defaults", "must be a mapping of target keys")
    if not isinstance(entries, list) or not entries:
        raise fail(None, "targets", "must be a non-empty list of targets")
    if any(key in defaults for key in SECRET_KEYS):
        raise fail(None, "defaults.password", "a password comes only from a file: use password_file")
    targets: list[Target] = []
    for position, entry in enumerate(entries, 1):
        label = entry.get("name") if isinstance(entry, dict) and isinstance(entry.get("name"), str) else f"#{position}"
        if not isinstance(entry, dict):
            raise fail(label, None, "must be a mapping with at least name and url")
        if any(key in entry for key in SECRET_KEYS):
            raise fail(label, "password", "a password comes only from a file: use password_file")
        try:
            checked = TargetEntry.model_validate({**defaults, **entry})
        except ValidationError as exc:
            raise fail(label, *first_error(exc)) from None
        if any(t.name == checked.name for t in targets):
            raise fail(label, "name", "is used by an earlier target; names must be unique")
        password = None
        if checked.password_file is not None:
            try:
                password = read_password(checked.password_file)
            except ValueError as exc:
                raise fail(label, "password_file", str(exc)) from None
        options = PollOptions.model_validate(checked.model_dump(exclude={"name", "url"}))
        try:
            digest = ca_digest(options)
        except ValueError as exc:
            raise fail(label, "ca_bundle", str(exc)) from None
        targets.append(Target(checked.name, checked.url, options, password, digest,
                              configured_in=f"target {checked.name!r} in the targets file {path}"))
    return tuple(targets)


def default_name(url: str | None, demo: bool) -> str:
    """A single target's name: ``demo`` in demo mode, else the URL's host."""
    if demo or url is None:
        return "demo"
    return urlsplit(url).hostname or "cmx"


def options_of(settings: Any) -> PollOptions:
    """The per-target options among the settings, by the fields they share."""
    return PollOptions.model_validate({name: getattr(settings, name) for name in PollOptions.model_fields})
