"""What a rayseq command prints: its own lines, real warnings and errors; Ray's internals
only with ``--verbose`` (or ``RAYSEQ_VERBOSE=1``, which reaches ``ray job submit``
drivers too).

Quiet is made of Ray's own settings, in this order of preference:

- ``ray.LoggingConfig(log_level="WARNING")`` for the job: the root and ``ray`` loggers of
  every worker and actor (Ray Train's controller and workers, Ray Data's coordinators)
  stop at WARNING, and the driver prints forwarded worker output without the
  ``(RayTrainWorker pid=...)`` prefix (Ray drops it whenever a job logging config is set),
  so the training workers' step lines read as the driver's own;
- ``RAY_DATA_LOG_LEVEL``, and ``PYTHONWARNINGS`` in the environment a local Ray instance
  inherits (deprecation warnings raised inside Ray's own actors are for Ray's developers);
- Ray Data's progress bars on (``enable_progress_bars``) without ``use_ray_tqdm``: where
  stdout is a terminal the driver draws tqdm bars while data is prepared; elsewhere (and
  in the training coordinators, which are actors) Ray Data logs progress at INFO, which
  the WARNING level keeps out of the console (``--verbose`` shows it);
- joining a running cluster, the same environment as job environment variables;
- the few lines no setting reaches (:data:`NOISE`), dropped from forwarded output by
  substring, each with its reason.

Errors always show: tracebacks, failed tasks, anything at ERROR.
"""

from __future__ import annotations

import logging
import os
import warnings

VERBOSE_ENV = "RAYSEQ_VERBOSE"
OWN_LOGGERS = ("pipelines", "serving", "models")
WORKER_ENV = {"PYTHONWARNINGS": "ignore::DeprecationWarning",
              "RAY_DATA_LOG_LEVEL": "WARNING"}  # Ray Data configures its logger from this in every process
"""The quiet settings Ray's worker processes read from their environment."""

NOISE = {
    "ServeController.graceful_shutdown failed":
        "serve.shutdown() kills the controller while its own graceful_shutdown call is in flight, "
        "and the raylet reports the call's retry; every clean shutdown prints it",
    "Throughput optimized Ray Serve enabled with the following configurations:":
        "the Serve controller's banner (with its bullet lines below it), logged before "
        "serve.start's logging_config applies; rayseq turns the mode on itself (runtime.py)",
    "has constructor arguments in the object store and max_restarts > 0":
        "Ray's C++ warning (ray-project/ray#53727) about its own actors, e.g. Ray Train's "
        "PreemptionWatcher on a cluster; rayseq's own scoring actors run with max_restarts=0",
}
"""Forwarded Ray lines (matched by substring) that no log level or setting reaches, with why
each is noise. A match also drops the indented bullet and blank lines that follow it."""


def _without_noise(lines: list[str]) -> list[str]:
    kept, dropping = [], False
    for line in lines:
        if any(n in line for n in NOISE):
            dropping = True
        elif not (dropping and (not line.strip() or line.lstrip().startswith("•"))):
            dropping = False
            kept.append(line)
    return kept


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def set_verbose(on: bool) -> None:
    """``--verbose``: for this process and the Ray processes it starts (they inherit the
    environment)."""
    if on:
        os.environ[VERBOSE_ENV] = "1"


def prepare() -> None:
    """Before Ray starts: the driver's logging, and the environment a local Ray instance's
    processes inherit."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in OWN_LOGGERS:  # a job logging config sets the root logger to WARNING: ours keep INFO
        own = logging.getLogger(name)
        own.setLevel(logging.INFO)
        if not any(getattr(h, "rayseq", False) for h in own.handlers):
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            handler.rayseq = True
            own.addHandler(handler)
        own.propagate = False
    os.environ.setdefault("RAY_TRAIN_ENABLE_CONTROLLER_STRUCTURED_LOGGING", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING", "0")
    if verbose():
        return
    for name in ("ray", "ray.data", "ray.train", "ray.serve", "ray.tune", "filelock", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # "Token authentication is enabled for this Ray cluster": Ray 2.60 says it on every
    # start of the local instance rayseq starts for itself; nothing for a user to do.
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)


def ray_init_options(*, joining: bool = False) -> dict:
    """Keyword arguments for ``ray.init``: when quiet, the job's logging config, and,
    joining a running cluster (whose processes did not inherit this environment),
    :data:`WORKER_ENV` as job environment variables (those the user or the job left alone)."""
    import ray

    if verbose():
        return {}
    options: dict = {"logging_config": ray.LoggingConfig(log_level="WARNING")}
    # Inside `ray job submit` the job's runtime env (its working_dir package) is the
    # driver's: adding env_vars makes a new env whose workers fetch the package again,
    # and Ray 2.60 failed that ("Failed to download runtime_env file package"). There the
    # job's own env_vars are the way (set them in the job's runtime env); from a plain driver, ours.
    if joining and "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:
        env = {k: v for k, v in WORKER_ENV.items() if os.environ.get(k) == v}
        if env:
            options["runtime_env"] = {"env_vars": env}
    return options


def serve_system_logging() -> dict:
    """Serve's controller and proxies log at WARNING when quiet (``serve.start``'s
    ``logging_config``; the applications keep their own, which writes the request logs)."""
    return {} if verbose() else {"log_level": "WARNING"}


def configure_data(context) -> None:
    """Ray Data's progress reporting on ``context`` (a ``DataContext``)."""
    context.enable_progress_bars = True
    context.use_ray_tqdm = False  # actors' bars would be drawn into the driver's output
    context.enable_progress_bar_name_truncation = False  # else a warning per long operator chain
    context.print_on_execution_start = verbose()


def drop_noise() -> None:
    """Filter :data:`NOISE` out of what Ray forwards to this driver: worker and actor
    output, the raylet's error messages, and the lines its deduplicator holds until
    shutdown all print through ``ray._private.worker.print_worker_logs``."""
    if verbose():
        return
    try:
        from ray._private import worker
    except ImportError:  # other Ray versions: their output as it comes
        return
    forward = getattr(worker, "print_worker_logs", None)
    if forward is None or getattr(forward, "drops_noise", False):
        return

    def print_worker_logs(data: dict, print_file, *args, **kwargs) -> None:
        lines = _without_noise(data.get("lines", []))
        if lines:
            forward({**data, "lines": lines}, print_file, *args, **kwargs)

    print_worker_logs.drops_noise = True
    worker.print_worker_logs = print_worker_logs


def add_verbose_argument(parser) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help=f"also print Ray's own logs (its processes' INFO lines, progress, deprecation "
                             f"warnings); the same as {VERBOSE_ENV}=1")
