"""What the poll worker's client is told, kept current: the password file and the CA bundle are read
again at each reload, and a change reaches the worker before its next poll."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace

from cmx_connect_exporter.polling.messages import ClientOptions
from cmx_connect_exporter.reload import ReloadError
from cmx_connect_exporter.settings import Settings, SettingsError, check_ca_bundle


class ClientCredentials:
    """The options in force; ``send`` hands changed ones to the worker."""

    def __init__(self, settings: Settings, options: ClientOptions, send: Callable[[ClientOptions], None]) -> None:
        self._settings = settings
        self.options = options
        self._send = send
        self._ca_digest = self._read_ca_bundle() if settings.ca_bundle else b""

    def reload_password(self) -> bool:
        try:
            password = self._settings.read_password()
        except SettingsError as exc:
            raise ReloadError(str(exc).partition(": ")[2]) from None
        if password == self.options.password:
            return False
        self.options = replace(self.options, password=password)
        self._send(self.options)
        return True

    def reload_ca_bundle(self) -> bool:
        """CMX's certificate is checked against the new bundle from the worker's next connection."""
        digest = self._read_ca_bundle()
        if digest == self._ca_digest:
            return False
        self._ca_digest = digest
        self._send(self.options)  # the same options: the worker's new client opens new connections
        return True

    def _read_ca_bundle(self) -> bytes:
        assert self._settings.ca_bundle is not None
        try:
            return hashlib.sha256(check_ca_bundle(self._settings.ca_bundle)).digest()
        except ValueError as exc:
            raise ReloadError(str(exc)) from None
