"""``lockapi serve-metrics``: a Prometheus endpoint for lockapi processes that have none of their own."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from typing import Any

from lockapi.errors import ConfigError

DEFAULT_PORT = 9464


def register(sub: Any) -> None:
    """Add the ``serve-metrics`` subcommand to the ``lockapi`` parser's subparsers."""
    p = sub.add_parser(
        "serve-metrics",
        help="serve the Prometheus metrics that lockapi processes write to $PROMETHEUS_MULTIPROC_DIR",
        description="Serve, at http://ADDR:PORT/metrics, the lockapi metrics of every process on this host "
                    "that runs with PROMETHEUS_MULTIPROC_DIR set and calls lockapi.instrument_prometheus() "
                    "(prometheus_client's multi-process mode), summed over processes. Runs until stopped.")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument("--addr", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 for scrapes from other hosts)")
    p.add_argument("--dir", default=None, help="the metrics directory (default: $PROMETHEUS_MULTIPROC_DIR)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    directory = args.dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        raise ConfigError("serve-metrics needs the directory lockapi processes write their metrics to: "
                          "pass --dir DIR, or set PROMETHEUS_MULTIPROC_DIR (here and in those processes)")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
    try:
        from lockapi.observability.prometheus import serve_directory
    except ImportError as exc:
        raise ConfigError(f"{exc.name} is not installed: pip install 'lockapi[prometheus]'") from exc
    endpoint = serve_directory(directory, args.port, args.addr)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"lockapi: serving metrics from {directory} at http://{endpoint.addr}:{endpoint.port}/metrics", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        endpoint.close()
    return 0
