"""``rayseq serve CHECKPOINT [CHECKPOINT ...] [--host 127.0.0.1] [--port 8000]``

Checks the checkpoints, deploys the Serve application on the Ray cluster in
``RAY_ADDRESS`` (or a local one), prints where it listens, and serves until Ctrl-C or
SIGTERM. The same application runs from a Serve config through
``serving.app:app_builder``.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from dataclasses import fields, replace

from serving.limits import ServeLimits


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                        help="inference checkpoint folder(s) written by 'rayseq train'")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default: %(default)s)")
    limits = parser.add_argument_group("request limits (see serving/limits.py)")
    for f in fields(ServeLimits):
        limits.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None,
                            metavar=f.name.upper(), help=f"default: {f.default}")


def limits_from_args(args: argparse.Namespace) -> ServeLimits:
    """The defaults, overridden by the limit flags given on the command line."""
    given = {f.name: getattr(args, f.name) for f in fields(ServeLimits) if getattr(args, f.name, None) is not None}
    return replace(ServeLimits(), **given)


def serve_command(args: argparse.Namespace) -> None:
    """Serve until interrupted; bad checkpoints fail first, with ``DataError``."""
    from ray import serve

    from pipelines.runtime import init_ray
    from serving.app import APP_NAME, build_app
    from serving.catalog import read_cards

    limits = limits_from_args(args)
    cards = read_cards(args.checkpoints)  # DataError naming the bad folder, before Ray starts
    app = build_app(args.checkpoints, limits)
    init_ray()
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(app, name=APP_NAME, route_prefix="/")
        url = f"http://{args.host}:{args.port}"
        for card in cards:
            takes = f" (multipart 'file' {card.input} uploads)" if card.input != "text" else ""
            print(f"serving {card.name} ({card.kind}): POST {url}/v1/models/{card.name}/{card.task}{takes}", flush=True)
        print(f"models at {url}/v1/models, API docs at {url}/docs; Ctrl-C to stop", flush=True)
        _wait_for_stop_signal()
    finally:
        # Also when Ctrl-C comes while replicas are still starting. On a shared cluster
        # (RAY_ADDRESS) remove only this app, not other people's Serve apps.
        if os.environ.get("RAY_ADDRESS"):
            serve.delete(APP_NAME)
        else:
            serve.shutdown()


def _wait_for_stop_signal() -> None:
    """Block until SIGINT or SIGTERM; the previous handlers come back afterwards."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
