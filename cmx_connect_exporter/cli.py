"""The command line: settings in, logging set up, then poller and HTTP server until SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from contextlib import ExitStack
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn

from apscheduler.schedulers.background import BackgroundScheduler

from cmx_connect_exporter.credentials import ClientCredentials
from cmx_connect_exporter.exposition.processes import process_registry
from cmx_connect_exporter.exposition.snapshot import State
from cmx_connect_exporter.logs import setup_logging
from cmx_connect_exporter.outcome import QUERIES
from cmx_connect_exporter.polling.handle import PollWorker
from cmx_connect_exporter.polling.messages import ClientOptions, Hello
from cmx_connect_exporter.polling.scheduler import Poller, start_scheduler
from cmx_connect_exporter.reload import Reloader
from cmx_connect_exporter.settings import Settings, SettingsError, load_settings
from cmx_connect_exporter.web.server import HttpServer, make_app

log = logging.getLogger("cmx_connect_exporter")

DEMO_CREDENTIALS = ("demo", "demo")
# Guests the demo's simulator logs in, and as many out, at each request: a poll is a few requests,
# so the counts move a little between polls, as a real venue's do.
DEMO_CHURN = 5


def exporter_version() -> str:
    try:
        return version("cmx-connect-exporter")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def run(settings: Settings, stop: threading.Event, password: str | None, reloader: Reloader) -> None:
    """Serve until ``stop`` is set; ``reloader`` re-reads the files it watches."""
    with ExitStack() as cleanup:
        state = State(settings.stale_after_seconds, exporter_version(),  # the worker's pid is read at each scrape
                      live=process_registry(worker_pid=lambda: worker.pid),
                      queries=QUERIES if settings.visitors_today else QUERIES[:1])
        schedulers: list[BackgroundScheduler] = []  # the one started below
        server = HttpServer(make_app(state, healthy=lambda: any(s.running for s in schedulers)), settings.web_config)
        host, port = settings.listen
        try:  # first, so that an address in use stops the start before anything else is begun
            server.bind(host, port)
        except OSError as exc:  # taken, not ours, or a name that does not resolve
            _usage_error(f"invalid setting CMX_LISTEN_ADDRESS (--listen-address): cannot listen on "
                         f"{settings.listen_address} ({exc.strerror})")
        url, username = settings.url, settings.username
        if settings.demo:
            from cmx_simulator import Simulator

            username, password = DEMO_CREDENTIALS
            simulator = Simulator(username=username, password=password, churn=DEMO_CHURN).start()
            cleanup.callback(simulator.stop)
            url = simulator.url
            log.info("demo mode: polling the built-in CMX simulator at %s", url)
        if settings.insecure_skip_verify:
            log.warning("TLS certificate verification is off (CMX_INSECURE_SKIP_VERIFY); "
                        "prefer CMX_CA_BUNDLE")
        verify: bool | str = (False if settings.insecure_skip_verify
                              else str(settings.ca_bundle) if settings.ca_bundle else True)
        assert url is not None  # the settings model requires it outside demo mode
        client = ClientOptions(url=url, username=username, password=password, timeout=settings.timeout,
                               verify=verify, max_retry_wait=min(30.0, settings.poll_interval / 2))
        worker = PollWorker(Hello(client, settings.log_level, settings.log_format))
        cleanup.callback(worker.close)
        _watch_files(reloader, settings, server, ClientCredentials(settings, client, worker.set_client))

        scheduler = start_scheduler(Poller(worker.poll, settings, state), settings.poll_interval)
        schedulers.append(scheduler)
        cleanup.callback(scheduler.shutdown, wait=False)
        server.start()
        cleanup.callback(server.stop)
        reloader.start()
        cleanup.callback(reloader.stop)
        web = settings.web_config
        log.info("listening on %s://%s:%d/metrics%s, polling %s every %g s", web.scheme, host, server.port,
                 " (basic auth; /healthz open)" if web.users else "", url, settings.poll_interval)
        stop.wait()
        log.info("shutting down")


def _watch_files(reloader: Reloader, settings: Settings, server: HttpServer, credentials: ClientCredentials) -> None:
    """What SIGHUP and a changed file reload: the web config with its certificate, the password, the CA bundle."""
    if (web_config_file := settings.web_config_file) is not None:
        reloader.watch("CMX_WEB_CONFIG_FILE", lambda: server.web.files, lambda: server.reload(web_config_file))
    if (password_file := settings.password_file) is not None and not settings.demo:
        reloader.watch("CMX_PASSWORD_FILE", lambda: [password_file], credentials.reload_password)
    if (ca_bundle := settings.ca_bundle) is not None:
        reloader.watch("CMX_CA_BUNDLE", lambda: [ca_bundle], credentials.reload_ca_bundle)


def _usage_error(message: str) -> NoReturn:
    """One line on stderr and exit status 2, as argparse does for a bad flag."""
    print(f"cmx-connect-exporter: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    try:
        settings = load_settings(argv)
        password = None if settings.demo else settings.read_password()  # a bad file fails now, with exit 2
    except SettingsError as exc:
        _usage_error(str(exc))
    setup_logging(settings.log_level, settings.log_format)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    reloader = Reloader()
    signal.signal(signal.SIGHUP, lambda *_: reloader.request())  # reload, as Prometheus does; never an exit
    run(settings, stop, password, reloader)
