"""Settings: every field is an environment variable ``CMX_<NAME>`` and a flag ``--<name>``.

Validation lives in the pydantic model; the command line only feeds it, so the
environment and the flags can never disagree about what is valid.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, get_args, get_origin

from annotated_types import Ge, Gt, Le
from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from cmx_connect_exporter.config.targets import (
    MIN_POLL_TIMEOUT,
    FieldError,
    PollOptions,
    Target,
    ca_digest,
    check_name,
    check_url,
    default_name,
    load_targets,
    options_of,
    read_password,
    readable_file,
)
from cmx_connect_exporter.web.webconfig import WebConfig, WebConfigError, load_web_config

ENV_PREFIX = "CMX_"
DEFAULT_PORT = 10180
# Defaults computed from other settings, as --help shows them.
DERIVED_DEFAULTS = {
    "stale_after": "3 x poll interval",
    "poll_timeout": f"the poll interval, but at least 3 x timeout and {MIN_POLL_TIMEOUT:g} s",
    "name": "the URL's host, or demo in demo mode",
}
# Rules across fields, as --help and the README's table say them; the model's validator enforces them.
REQUIRED = {"url": "required, except with --demo or a targets file"}
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


class Settings(PollOptions, BaseSettings):
    """Everything the exporter can be told. Field descriptions double as ``--help`` text.

    The per-target options come from PollOptions: in single-target mode they describe the one CMX, and with a
    targets file they are ignored there (the file has its own ``defaults:``).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True,
                                      allow_inf_nan=False)

    url: str | None = Field(None, description="base URL of the CMX server, such as https://cmx.example.net")
    password: SecretStr | None = Field(None, description="CMX API password (prefer CMX_PASSWORD_FILE)")
    name: str | None = Field(None, description="the cmx label of the one CMX polled without a targets file")
    targets_file: Path | None = Field(None, description="YAML file of the CMX servers to poll (see README, "
                                                        "Many CMX servers); replaces the single-CMX settings")
    poll: Literal["all", "probed"] = Field("all", description="poll every target (all), or only those Prometheus "
                                                              "probes on this replica (probed; for sharding)")
    poll_workers: Annotated[int, Field(ge=1, le=32, description="most poll worker processes, shared by the "
                                                                "targets")] = 4
    listen_address: str = Field(f"0.0.0.0:{DEFAULT_PORT}", description="host:port of the HTTP server")
    web_config_file: Path | None = Field(None, description="exporter-toolkit web config file: TLS and basic auth "
                                                           "for the HTTP server (/healthz stays open)")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["text", "json"] = Field("text", description="log format")
    demo: bool = Field(False, description="poll a built-in CMX simulator instead of a real server")
    _web_config: WebConfig = PrivateAttr()

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value)

    @field_validator("targets_file")
    @classmethod
    def _targets_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            readable_file(value)
        return value

    @field_validator("listen_address")
    @classmethod
    def _check_listen_address(cls, value: str) -> str:
        parse_listen_address(value)
        return value

    @model_validator(mode="after")
    def _check_combination(self) -> Settings:
        if self.url is None and not self.demo and self.targets_file is None:
            raise FieldError("url", "is required (or run with --demo, or give CMX_TARGETS_FILE)")
        if self.password is not None and self.password_file is not None:
            raise FieldError("password_file", "cannot be used together with CMX_PASSWORD")
        try:  # read and checked here, once; the exporter uses what was read
            self._web_config = load_web_config(self.web_config_file)
        except WebConfigError as exc:
            raise FieldError("web_config_file", str(exc)) from None
        return self

    @property
    def web_config(self) -> WebConfig:
        return self._web_config

    @property
    def listen(self) -> tuple[str, int]:
        return parse_listen_address(self.listen_address)

    def read_password(self) -> str | None:
        """Read the secret late, so it lives in as few places as possible. Raises SettingsError."""
        if self.password_file is not None:
            try:
                return read_password(self.password_file)
            except ValueError as exc:
                raise SettingsError(_name("password_file", str(exc))) from None
        return self.password.get_secret_value() if self.password is not None else None

    def targets(self) -> tuple[Target, ...]:
        """The CMX servers to poll: the targets file's, or the one these settings describe (without its URL in
        demo mode, which the simulator gives). Raises SettingsError, or TargetsError for the file."""
        if self.targets_file is not None:
            return load_targets(self.targets_file)
        password = None if self.demo else self.read_password()
        options = options_of(self)
        try:
            digest = ca_digest(options)
        except ValueError as exc:
            raise SettingsError(_name("ca_bundle", str(exc))) from None
        return (Target(self.name or default_name(self.url, self.demo), self.url or "", options, password, digest),)


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
    if isinstance(cause, FieldError):
        field, message = cause.field, str(cause)
    else:
        message = str(cause) if isinstance(cause, ValueError) else error["msg"]
    return _name(field, message)


def _name(field: str, message: str) -> str:
    if field in Settings.model_fields:
        return f"invalid setting {env_name(field)} ({flag_name(field)}): {message}"
    return f"invalid settings: {message}"
