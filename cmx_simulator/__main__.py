"""``python -m cmx_simulator``: the simulator alone, for compose and for trying the exporter by hand."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading

from cmx_connect_exporter.counting.dimensions import LAST_LOGOUT_KEYS
from cmx_simulator.api import CLIENTS_PATH
from cmx_simulator.records import DEFAULT_TIME_FORMAT, TIME_FORMATS
from cmx_simulator.server import Simulator

log = logging.getLogger("cmx_simulator")


def main(argv: list[str] | None = None) -> None:
    """Run the simulator until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m cmx_simulator", description="Run a CMX Connect API simulator."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=18443, help="port to listen on (default 18443)")
    parser.add_argument("--sessions", type=int, default=5000, help="population size (default 5000)")
    parser.add_argument("--active-fraction", type=float, default=0.7, help="share of sessions active (0.7)")
    parser.add_argument("--seed", type=int, default=1, help="population seed (default 1)")
    parser.add_argument("--username", default="demo", help="Basic auth user (default demo)")
    parser.add_argument(
        "--password", default=os.environ.get("SIM_PASSWORD", "demo"), help="Basic auth password (env SIM_PASSWORD)"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to wait before each answer")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered 500")
    parser.add_argument("--churn", type=int, default=0, help="sessions logging in and out per request")
    parser.add_argument(
        "--time-format", choices=sorted(TIME_FORMATS), default=DEFAULT_TIME_FORMAT,
        help=f"how records write their times (default {DEFAULT_TIME_FORMAT}: CMX local time, YYYY-MM-DD HH:MM:SS)",
    )  # fmt: skip
    parser.add_argument("--logout-key", choices=LAST_LOGOUT_KEYS, default=LAST_LOGOUT_KEYS[0],
                        help="how records spell the logout time (a Cisco sample app reads lastLogoutTIme)")
    parser.add_argument("--tls-cert", help="PEM certificate: serve HTTPS")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    sim = Simulator(
        args.sessions,
        active_fraction=args.active_fraction,
        seed=args.seed,
        username=args.username,
        password=args.password,
        host=args.host,
        port=args.port,
        latency=args.latency,
        error_rate=args.error_rate,
        churn=args.churn,
        time_format=args.time_format,
        logout_key=args.logout_key,
        certfile=args.tls_cert,
        keyfile=args.tls_key,
    ).start()
    log.info("CMX Connect simulator serving %d sessions at %s%s", args.sessions, sim.url, CLIENTS_PATH)
    done.wait()
    sim.stop()


if __name__ == "__main__":
    main()
