"""The container's health check: ``python -m cmx_connect_exporter.healthcheck``.

It asks ``/healthz`` on the port of ``CMX_LISTEN_ADDRESS``, over HTTPS when ``CMX_WEB_CONFIG_FILE``
turns TLS on, so the image's HEALTHCHECK keeps passing whichever way the exporter serves. It reads
the same two variables as the exporter, through the same parsers. The certificate is not checked:
the probe asks its own container over loopback, under an address the certificate need not name.
Exit status 0 when healthy, 1 when not, as Docker and podman expect.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from cmx_connect_exporter.settings import DEFAULT_PORT, env_name, parse_listen_address
from cmx_connect_exporter.web.webconfig import load_web_config

TIMEOUT = 4.0  # under the HEALTHCHECK's --timeout of 5 s
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def healthz_url(environ: Mapping[str, str]) -> str:
    """The exporter's /healthz as seen from inside its container. Raises ValueError (WebConfigError is one)."""
    host, port = parse_listen_address(environ.get(env_name("listen_address"), f":{DEFAULT_PORT}"))
    host = _LOOPBACK.get(host, host)
    config_file = environ.get(env_name("web_config_file"))
    scheme = load_web_config(Path(config_file) if config_file else None).scheme
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}/healthz"


def probe(url: str, timeout: float = TIMEOUT) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # No proxy: the exporter is on loopback, whatever http_proxy says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(url, timeout=timeout) as answer:
            return bool(answer.status == 200)
    except OSError:  # refused, reset, timed out, or an HTTP error status
        return False


def main() -> None:
    try:
        url = healthz_url(os.environ)
    except ValueError as exc:  # a WebConfigError too
        print(f"unhealthy: cannot tell where the exporter listens: {exc}", file=sys.stderr)
        sys.exit(1)
    healthy = probe(url)
    print(f"{'healthy' if healthy else 'unhealthy'}: {url}", file=sys.stderr if not healthy else sys.stdout)
    sys.exit(0 if healthy else 1)


if __name__ == "__main__":
    main()
