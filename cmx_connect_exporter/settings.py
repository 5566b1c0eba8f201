"""Settings: every field is an environment variable ``CMX_<NAME>`` and a flag ``--<name>``.

Validation lives in the pydantic model; the command line only feeds it, so the
environment and the flags can never disagree about what is valid.
"""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, get_args, get_origin
from urllib.parse import urlsplit

from annotated_types import Ge, Gt, Le
from pydantic import Field, PrivateAttr, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from cmx_connect_exporter.counting.dimensions import LABELS, SPLITS
from cmx_connect_exporter.web.webconfig import WebConfig, WebConfigError, load_web_config

ENV_PREFIX = "CMX_"
DEFAULT_PORT = 10180
MIN_POLL_TIMEOUT = 30.0
# Defaults computed from other settings, as --help shows them.
DERIVED_DEFAULTS = {
    "stale_after": "3 x poll interval",
    "poll_timeout": f"the poll interval, but at least 3 x timeout and {MIN_POLL_TIMEOUT:g} s",
}
# Rules across fields, as --help and the README's table say them; the model's validator enforces them.
REQUIRED = {"url": "required, except with --demo"}
RELATIONS = {"stale_after": "at least CMX_POLL_INTERVAL", "poll_timeout": "longer than CMX_TIMEOUT"}


class SettingsError(Exception):
    """A setting is missing or invalid; the message names it and never echoes its value."""


def parse_listen_address(value: str) -> tuple[str, int]:
    """Split ``host:port``, ``:port`` or ``[v6]:port`` into a bindable pair."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be host:port, such as 0.0.0.0:10180 or [::]:10180")
    host = host.strip("[]") or "0.0.0.0"
    if any(c.isspace() or c in "/@" for c in host):
        raise ValueError("the host part is not an address or a host name")
    return host, int(port)


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


class Settings(BaseSettings):
    """Everything the exporter can be told. Field descriptions double as ``--help`` text."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True,
                                      allow_inf_nan=False)

    url: str | None = Field(None, description="base URL of the CMX server, such as https://cmx.example.net")
    username: str | None = Field(None, description="CMX API user (HTTP Basic)")
    password: SecretStr | None = Field(None, description="CMX API password (prefer CMX_PASSWORD_FILE)")
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
    listen_address: str = Field(f"0.0.0.0:{DEFAULT_PORT}", description="host:port of the HTTP server")
    web_config_file: Path | None = Field(None, description="exporter-toolkit web config file: TLS and basic auth "
                                                           "for the HTTP server (/healthz stays open)")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["text", "json"] = Field("text", description="log format")
    dimensions: str = Field("all", description="breakdowns of the active sessions to export, comma-separated: "
                                               f"{','.join(LABELS)}; all or none")
    split_by: str = Field("none", description="a label to put on every active-session family, so each "
                                              f"{'/'.join(d.label for d in SPLITS)} has its own counts: "
                                              f"none or {' or '.join(d.label for d in SPLITS)}")
    visitors_today: bool = Field(False, description="after each poll, also count the sessions with a login since "
                                                    "CMX's local midnight: a second paged query of CMX")
    demo: bool = Field(False, description="poll a built-in CMX simulator instead of a real server")
    _web_config: WebConfig = PrivateAttr()

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

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

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not contain credentials; use CMX_USERNAME and CMX_PASSWORD_FILE")
        if parts.query or parts.fragment:
            raise ValueError("must be the server's base URL, without a query")
        return value.strip().rstrip("/")

    @field_validator("listen_address")
    @classmethod
    def _check_listen_address(cls, value: str) -> str:
        parse_listen_address(value)
        return value

    @field_validator("ca_bundle", "password_file")
    @classmethod
    def _readable_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None:  # a CA bundle must hold certificates too
            (check_ca_bundle if info.field_name == "ca_bundle" else readable_file)(value)
        return value

    @model_validator(mode="after")
    def _check_combination(self) -> Settings:
        if self.url is None and not self.demo:
            raise _FieldError("url", "is required (or run with --demo)")
        if self.password is not None and self.password_file is not None:
            raise _FieldError("password_file", "cannot be used together with CMX_PASSWORD")
        if self.poll_timeout is not None and self.poll_timeout <= self.timeout:
            raise _FieldError("poll_timeout", "must be longer than CMX_TIMEOUT, or no request could finish")
        if self.stale_after is not None and self.stale_after < self.poll_interval:
            raise _FieldError("stale_after", "must be at least CMX_POLL_INTERVAL, or counts would vanish between polls")
        if self.insecure_skip_verify and self.ca_bundle is not None:
            raise _FieldError("insecure_skip_verify", "cannot be used together with CMX_CA_BUNDLE")
        try:  # read and checked here, once; the exporter uses what was read
            self._web_config = load_web_config(self.web_config_file)
        except WebConfigError as exc:
            raise _FieldError("web_config_file", str(exc)) from None
        return self

    @property
    def web_config(self) -> WebConfig:
        return self._web_config

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
    def listen(self) -> tuple[str, int]:
        return parse_listen_address(self.listen_address)

    def read_password(self) -> str | None:
        """Read the secret late, so it lives in as few places as possible. Raises SettingsError."""
        if self.password_file is not None:
            try:
                return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise SettingsError(_name("password_file", f"cannot read it ({exc.strerror})")) from None
            except UnicodeDecodeError:  # the message would quote the bytes around the bad one
                raise SettingsError(_name("password_file", "is not UTF-8 text")) from None
        return self.password.get_secret_value() if self.password is not None else None


class _FieldError(ValueError):
    """A rule across fields, blamed on the one field the user should change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


class _QuietParser(argparse.ArgumentParser):
    """argparse quotes what it did not understand, which may be a password given to a mistyped flag."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments"):
            flags = [arg.split("=", 1)[0] for arg in message.partition(": ")[2].split() if arg.startswith("-")]
            message = f"unrecognized arguments: {' '.join(flags) or '(values without a flag)'}"
        super().error(message)


def constraint(name: str, field: FieldInfo) -> str:
    """What --help says a value must be: required, one of its choices, or within its range."""
    if name in REQUIRED:
        return REQUIRED[name]
    if name in RELATIONS:  # which bounds the value from below more tightly than its range
        return RELATIONS[name]
    if get_origin(field.annotation) is Literal:
        return "one of " + ", ".join(get_args(field.annotation))
    bounds = {type(item): item for item in field.metadata if isinstance(item, Ge | Gt | Le)}
    low, high = bounds.get(Ge), bounds.get(Le)
    if low is not None:
        return f"{low.ge} to {high.le}" if high is not None else f"{low.ge} or more"
    if Gt in bounds:
        return f"more than {bounds[Gt].gt}" + (f", at most {high.le}" if high is not None else "")
    return ""


def build_parser() -> argparse.ArgumentParser:
    """One flag per settings field, generated so the two lists cannot drift apart."""
    parser = _QuietParser(
        prog="cmx-connect-exporter",
        allow_abbrev=False,
        description="Prometheus exporter for Cisco CMX Connect guest Wi-Fi sessions. "
        "Every flag can also be set through the environment variable shown.",
    )
    for name, field in Settings.model_fields.items():
        default = DERIVED_DEFAULTS.get(name, field.default)
        shown = "" if default is None or name == "password" else f", default {default}"
        rule = constraint(name, field)
        help_text = f"{field.description}{'; ' + rule if rule else ''} (env {env_name(name)}{shown})"
        if field.annotation is bool:
            parser.add_argument(flag_name(name), dest=name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        else:
            choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
            metavar = "{" + ",".join(choices) + "}" if choices else name.upper()
            parser.add_argument(flag_name(name), dest=name, metavar=metavar,
                                default=argparse.SUPPRESS, help=help_text)
    return parser


def load_settings(argv: list[str] | None = None) -> Settings:
    """Flags override the environment, which overrides defaults. Raises SettingsError."""
    flags = vars(build_parser().parse_args(argv))
    try:
        return Settings(**flags)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    """The first problem, as one line. ``input`` is left out: it may be the password."""
    error = exc.errors(include_input=False)[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, _FieldError):
        field, message = cause.field, str(cause)
    else:
        message = str(cause) if isinstance(cause, ValueError) else error["msg"]
    return _name(field, message)


def _name(field: str, message: str) -> str:
    if field in Settings.model_fields:
        return f"invalid setting {env_name(field)} ({flag_name(field)}): {message}"
    return f"invalid settings: {message}"
