"""The Ray head the integration tests share, and how the Ray tier splits into shards.

One head per test session: ``ray start --head --block`` (so it also serves ``ray job
submit``), stopped by stopping its whole session. The ``ray_head`` fixture starts one for
its pytest process, or joins the head named by ``RAYSEQ_TEST_HEAD`` (a state file this
module writes), which is how ``scripts/test.sh`` runs the Ray tier as two pytest processes
on one head::

    python tests/ray_session.py start STATE   # start a head, write its address to STATE
    python tests/ray_session.py stop STATE    # stop everything the head started

``RAYSEQ_TEST_SHARD=k/n`` keeps the k-th of n shards of the Ray tier's files (balanced by
their measured seconds, :data:`FILE_SECONDS`); ``RAYSEQ_TEST_SHARD=own`` keeps the files
that start a Ray head of their own (:data:`OWN_CLUSTER_TESTS`), which must run before the
shared head exists. Files with a test marked ``serve`` (Ray Serve on the shared head: a
cluster has one Serve instance, and these tests start, reconfigure and shut it down) all
go to one shard.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

SHARED_HEAD_ENV = "RAYSEQ_TEST_HEAD"
SHARD_ENV = "RAYSEQ_TEST_SHARD"

OWN_CLUSTER_TESTS = ("test_autoscaling.py",)
"""Test files that start their own Ray head. They run before the shared session head
exists: with two clusters on one machine, Ray 2.60 ran the second head's job supervisors
on the first cluster's node (measured: the autoscaling test's job never saw its fake_gpu
nodes and hung)."""

FILE_SECONDS = {
    "test_train_cli.py": 565, "test_audio_cli.py": 230, "test_open_structure.py": 215, "test_bench_smoke.py": 190,
    "test_video_cli.py": 115, "test_sentence_classification.py": 115, "test_serving_resilience.py": 100,
    "test_image.py": 95, "test_ray_jobs.py": 50, "test_serve_config.py": 45, "test_audio_perturb.py": 40,
    "test_serving_summarize.py": 40, "test_serving.py": 35, "test_ray_data.py": 20, "test_translation_data.py": 20,
    "test_serving_stream.py": 20, "test_serving_security.py": 20, "test_audio.py": 15, "test_serving_fuzz.py": 15,
    "test_serving_image.py": 10, "test_serving_audio.py": 10, "test_serving_video.py": 10, "test_video.py": 10,
    "test_devices.py": 5,
}
"""Seconds each Ray-tier file took in a whole-suite run (a clean clone of 879c18c, 2026-12-08,
the two shards beside the tests without Ray on two cores: only their proportions matter).
A file not listed counts :data:`DEFAULT_SECONDS`."""
DEFAULT_SECONDS = 20


def prepare_environment() -> None:
    """The environment of every test process, and so of the heads and CLIs they start."""
    # One intra-op thread for torch (and NumPy's BLAS) in this process and in every process the
    # tests start (the CLI subprocesses, the Ray heads and their workers inherit it). The
    # suite's two tiers share two cores with each other and with Ray's own processes; there a
    # second OpenMP thread only spins waiting for a core: measured, the 150-step in-process
    # language model of ``tiny_generator`` took 37 CPU-s on 2 threads, 4.5 on one. rayseq's
    # own thread settings (parallel.threads_per_worker, Serve replicas) are explicit and stay
    # in force; this only sets the default they override.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules:  # imported before this file (a plugin): the variable came too late
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    # Ray's bookkeeping the tests never read, paid in CPU by every process: usage stats (each
    # Ray Data execution reports to a cluster-wide actor and queries Prometheus) and the
    # metrics every worker exports to its node's agent. Every process the tests start
    # inherits these, heads included.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_enable_metrics_collection", "0")

    # Ray 2.60 turns token auth on for clusters started here, but a client given an explicit
    # address only sends the token in token mode; Ray reads this when it is imported.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    # In token mode `ray start --head` refuses to start without a token, and only ray.init()
    # makes one (~/.ray/auth_token): on a fresh machine the session head would never start.
    # Give this test session (and every process it starts) a token of its own instead.
    # A shard joining the head scripts/test.sh started takes that head's token.
    if os.environ.get(SHARED_HEAD_ENV):
        token = json.loads(Path(os.environ[SHARED_HEAD_ENV]).read_text()).get("token")
        if token:
            os.environ["RAY_AUTH_TOKEN"] = token
    if not ({"RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & os.environ.keys()
            or (Path.home() / ".ray" / "auth_token").exists()):
        os.environ["RAY_AUTH_TOKEN"] = uuid.uuid4().hex
    # Serve's high-throughput mode, as `rayseq serve` runs it; the session head inherits it.
    from pipelines.runtime import use_serve_throughput_mode

    use_serve_throughput_mode()


def shard_of_files(files: dict[str, bool], shards: int) -> dict[str, int]:
    """``{file: shard}`` (1-based) for ``{file: uses Serve}``: the Serve files as one unit,
    then longest first onto the least loaded shard."""
    units = [[f for f, serve in files.items() if serve]] + [[f] for f, serve in files.items() if not serve]
    units = [u for u in units if u]
    units.sort(key=lambda u: (-sum(FILE_SECONDS.get(f, DEFAULT_SECONDS) for f in u), u))
    load = [0] * shards
    plan = {}
    for unit in units:
        k = load.index(min(load))
        load[k] += sum(FILE_SECONDS.get(f, DEFAULT_SECONDS) for f in unit)
        plan.update({f: k + 1 for f in unit})
    return plan


def select_shard(config, items) -> None:
    """Deselect the items outside ``RAYSEQ_TEST_SHARD`` (a ``pytest_collection_modifyitems`` step)."""
    shard = os.environ.get(SHARD_ENV, "")
    if not shard:
        return
    if shard == "own":
        keep = [item for item in items if item.path.name in OWN_CLUSTER_TESTS]
    else:
        k, n = (int(x) for x in shard.split("/"))
        files: dict[str, bool] = {}
        for item in items:
            if item.path.name not in OWN_CLUSTER_TESTS:
                files[item.path.name] = files.get(item.path.name, False) or item.get_closest_marker("serve") is not None
        plan = shard_of_files(files, n)
        keep = [item for item in items if plan.get(item.path.name) == k]
    dropped = [item for item in items if item not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


HEAD_CPUS = 8
"""Logical CPUs of the test head: headroom over the machine's two, so that a shard's
concurrent trainings start together (the six demo runs of tests/test_train_cli.py
reserve 10 for their workers and queue a little). More is slower, not faster: with 24
the whole suite took 32 min 13 s instead of 24 min 48 s (2026-12-08), as every job's
Ray Data stages and workers then ran at once on two cores."""


def start_head(log: Path, *, num_cpus: int = HEAD_CPUS) -> tuple[subprocess.Popen, dict[str, str]]:
    """A local head in a session of its own; returns it and ``{address, dashboard}``
    once a driver can connect."""
    from pipelines.runtime import HEALTH_CHECK_DEFAULT_S, HEALTH_CHECK_INTERVAL, PREEMPTION_WATCHER, free_port

    gcs_port, dashboard_port = free_port(), free_port()
    # Jobs submitted to this head run `python` from its PATH: make that this venv's.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    # A one-machine head has no node to lose: no preemption watcher per run (as rayseq's own
    # local instances, pipelines.runtime.PREEMPTION_WATCHER); its Ray Train controllers poll
    # their workers every 0.5 s, as rayseq's own runs (pipelines.runtime.HEALTH_CHECK_INTERVAL).
    # The dashboard agent's reporter walks every process's psutil figures every 5 s by
    # default: once a minute is plenty for a test head with dozens of short-lived workers.
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "PATH": path, PREEMPTION_WATCHER: "0",
           "REPORTER_UPDATE_INTERVAL_MS": "60000",
           HEALTH_CHECK_INTERVAL: os.environ.get(HEALTH_CHECK_INTERVAL, HEALTH_CHECK_DEFAULT_S)}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
         f"--port={gcs_port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
         # A free agent port too: the fixed default (52365) is taken by any other Ray on the
         # machine, and then every job submission answers "No available agent".
         f"--dashboard-agent-listen-port={free_port()}",
         f"--num-cpus={num_cpus}", "--include-dashboard=true", "--disable-usage-stats"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    info = {"address": f"127.0.0.1:{gcs_port}", "dashboard": f"http://127.0.0.1:{dashboard_port}"}
    wait_until_up(head, info["address"], log)
    return head, info


def wait_until_up(head: subprocess.Popen, address: str, log: Path) -> None:
    """Connect this process to the head (retrying while it starts)."""
    import ray

    deadline = time.time() + 90
    while True:
        try:
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")
            return
        except Exception as exc:  # noqa: BLE001 - the head is still starting
            if time.time() > deadline or head.poll() is not None:
                head.kill()
                raise RuntimeError(f"Ray head did not start; see {log}:\n{log.read_text()[-3000:]}") from exc
            time.sleep(1)


def stop_head(session: int, address: str, head: subprocess.Popen | None = None) -> None:
    """Stop the head's whole session, and forget it as this machine's current cluster."""
    stop_session(session, head)
    # `ray start --head` recorded the head here for later `ray.init()` calls; `ray stop`
    # would remove it. Left behind, it sends Ray's state API on this machine to a dead head.
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    with contextlib.suppress(OSError):
        if current.read_text().strip().endswith(":" + address.rsplit(":", 1)[1]):
            current.unlink()


def stop_session(session: int, head: subprocess.Popen | None = None) -> None:
    """Stop every process of a session (a head's: its autoscaler, the fake nodes'
    raylets, all their workers): SIGTERM, then SIGKILL whatever is left after 10 s."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        for pid in session_processes(session):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if head is not None:
                head.poll()  # reap the head itself
            if not session_processes(session):
                return
            time.sleep(0.5)


def session_processes(session: int) -> list[int]:
    """Live processes of a session (Linux /proc). Not its process group: Ray puts each
    worker process in a group of its own, so killing the head's group misses them."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            after_name = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        state, sid = after_name[0], int(after_name[3])  # fields 3 and 6 of proc_pid_stat(5)
        if sid == session and state != "Z":
            pids.append(int(stat.parent.name))
    return pids


def main(argv: list[str]) -> int:
    command, state = argv[0], Path(argv[1])
    prepare_environment()
    if command == "start":
        head, info = start_head(state.with_suffix(".log"))
        state.write_text(json.dumps({**info, "session": head.pid, "token": os.environ.get("RAY_AUTH_TOKEN", "")}))
        print(f"Ray head for the tests at {info['address']} (log {state.with_suffix('.log')})", flush=True)
        os._exit(0)  # leave the head running; skip Ray's disconnect-at-exit hooks
    if command == "stop":
        info = json.loads(state.read_text())
        stop_head(info["session"], info["address"])
        return 0
    raise SystemExit(f"usage: {Path(__file__).name} start|stop STATE")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main(sys.argv[1:]))
