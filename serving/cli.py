"""``rayseq serve CHECKPOINT [CHECKPOINT ...] [--host 127.0.0.1] [--port 8000] [--device cuda]``

Checks the checkpoints, deploys the Serve application on the Ray cluster in
``RAY_ADDRESS`` (or a local one), prints where it listens, and serves until Ctrl-C or
SIGTERM. The same application runs from a Serve config through
``serving.app:app_builder``.

It listens on 127.0.0.1 unless ``--host`` says otherwise. Beyond loopback it wants a
token in ``RAYSEQ_API_TOKEN``, which every client must then send (``serving.auth``); it
refuses to start without one unless ``--allow-unauthenticated`` says something in front
(a proxy, a private network) already decides who may call it.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
import threading
from dataclasses import fields, replace
from typing import TYPE_CHECKING

from pipelines.errors import ConfigError
from serving.limits import ServeLimits
from serving.placement import ReplicaDevice

if TYPE_CHECKING:  # serving.auth imports FastAPI: too slow for every rayseq command's parser
    from serving.auth import ApiToken

TOKEN_ENV = "RAYSEQ_API_TOKEN"
"""``serving.auth.TOKEN_ENV``, for the help text without importing FastAPI."""


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                        help="inference checkpoint folder(s) written by 'rayseq train'")
    parser.add_argument("--host", default="127.0.0.1",
                        help=f"address to listen on (default: %(default)s, this machine only); any other address "
                             f"needs {TOKEN_ENV} set (clients send 'Authorization: Bearer <token>') or "
                             "--allow-unauthenticated")
    parser.add_argument("--allow-unauthenticated", action="store_true",
                        help=f"serve a non-loopback --host without {TOKEN_ENV}: only where something in front "
                             "(an authenticating proxy, a private network) decides who may call the API")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default: %(default)s)")
    parser.add_argument("--no-batching", dest="batching", action="store_false",
                        help="run every request alone instead of batching concurrent ones (for comparison)")
    parser.add_argument("--request-timeout-s", type=float, default=60.0, metavar="SECONDS",
                        help="a request not answered in time gets 408 from Serve instead of hanging (a stream too) "
                             "(default: %(default)s)")
    parser.add_argument("--access-log", action="store_true",
                        help="log every request in Serve's replica and proxy logs (off by default: it costs "
                             "CPU on every request)")
    parser.add_argument("--device", default="cpu", metavar="DEVICE",
                        help="cpu (default) or cuda: model replicas reserve a GPU each (--gpus-per-replica) and run "
                             "their models on it")
    parser.add_argument("--gpus-per-replica", type=float, metavar="G",
                        help="with --device cuda: GPUs each replica holding models reserves (default 1; a fraction "
                             "such as 0.5 lets replicas share a GPU)")
    parser.add_argument("--separate-models", action="store_true",
                        help="serve each model from deployments of its own behind a thin ingress (models scale "
                             "and are placed independently; one more hop per request) instead of loading them "
                             "in every ingress replica")
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
    from pipelines import console
    from pipelines.runtime import init_ray, use_serve_throughput_mode

    use_serve_throughput_mode()  # before ray.serve is imported
    from ray import serve

    from serving.app import APP_NAME, build_app
    from serving.auth import ApiToken
    from serving.catalog import read_cards

    limits = limits_from_args(args)
    warning = check_exposure(args.host, ApiToken.from_env(), allow_unauthenticated=args.allow_unauthenticated)
    placement = placement_from_args(args)
    cards = read_cards(args.checkpoints)  # DataError naming the bad folder, before Ray starts
    app = build_app(args.checkpoints, limits, batching=args.batching, separate_models=args.separate_models,
                    placement=placement)
    init_ray()
    try:
        log_config = {"enable_access_log": args.access_log}
        serve.start(http_options={"host": args.host, "port": args.port, "request_timeout_s": args.request_timeout_s},
                    logging_config={**log_config, **console.serve_system_logging()})
        serve.run(app, name=APP_NAME, route_prefix="/", logging_config=log_config)
        url = f"http://{args.host}:{args.port}"
        for card in cards:
            takes = f" (multipart 'file' {card.input} uploads)" if card.input != "text" else ""
            print(f"serving {card.name} ({card.kind}): POST {url}/v1/models/{card.name}/{card.task}{takes}", flush=True)
        if placement.num_gpus:
            print(f"model replicas on cuda, {placement.num_gpus:g} GPU(s) each", flush=True)
        print(f"models at {url}/v1/models, API docs at {url}/docs; Ctrl-C to stop", flush=True)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        _wait_for_stop_signal()
    finally:
        # Also when Ctrl-C comes while replicas are still starting. On a shared cluster
        # (RAY_ADDRESS) remove only this app, not other people's Serve apps.
        if os.environ.get("RAY_ADDRESS"):
            serve.delete(APP_NAME)
        else:
            serve.shutdown()


def placement_from_args(args: argparse.Namespace) -> ReplicaDevice:
    """``--device``/``--gpus-per-replica``, checked. Starting a local Ray, this machine
    must have the GPU; joining ``RAY_ADDRESS``, the GPUs may be on other nodes (or on
    nodes the autoscaler has yet to start), and Serve waits for them."""
    from pipelines.devices import check_available

    placement = ReplicaDevice(args.device.strip().lower(), args.gpus_per_replica,
                              names=("--device", "--gpus-per-replica"))
    if placement.num_gpus and not os.environ.get("RAY_ADDRESS"):
        check_available(placement.device, flag="--device")
    return placement


def check_exposure(host: str, token: ApiToken | None, *, allow_unauthenticated: bool) -> str | None:
    """Refuse (:class:`ConfigError`) to serve an open API beyond loopback unless allowed;
    return a warning to print, if one is due."""
    if is_loopback(host):
        return None
    if token is not None:
        return (f"note: {host} is reachable beyond this machine and HTTP carries the bearer token in clear text; "
                "put TLS in front (a load balancer or reverse proxy) outside a trusted network")
    if not allow_unauthenticated:
        raise ConfigError(f"--host {host} serves beyond this machine: set {TOKEN_ENV} so clients must send "
                          "'Authorization: Bearer <token>', or pass --allow-unauthenticated if something in front "
                          "already authenticates them")
    return f"warning: serving without authentication on {host}: anyone who reaches it can use every model"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (a name other than localhost
    may resolve anywhere, so it is not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _wait_for_stop_signal() -> None:
    """Block until SIGINT or SIGTERM; the previous handlers come back afterwards."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
