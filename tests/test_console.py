"""The quiet console (pipelines/console.py): what is dropped, what is kept, what --verbose
restores, and the failure line a quiet run still shows. The real commands' output is
checked in the Ray tier (test_train_cli.py, test_the_console_shows_rayseq_lines_not_rays)."""

from __future__ import annotations

import io
import logging

import pytest

from pipelines import console
from pipelines.engine.failures import failure_line

BANNER = [
    "INFO 2026-12-07 17:51:59,027 serve 9198 -- Throughput optimized Ray Serve enabled with the following "
    "configurations:",
    "  \u2022 Direct ingress enabled",
    "  \u2022 gRPC communication enabled",
    "",
]
SHUTDOWN = ("Task ServeController.graceful_shutdown failed. There are infinite retries remaining, so the task "
            "will be retried. Error: The actor is dead because it was killed by `ray.kill`.")


@pytest.fixture
def quiet(monkeypatch):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)


def test_noise_is_dropped_with_its_bullets_and_everything_else_is_kept(quiet):
    lines = ["step 50/300 | loss 0.69", *BANNER, "serving demo (classify)", "  \u2022 a bullet of our own", SHUTDOWN,
             "Traceback (most recent call last):", "ValueError: bad"]
    assert console._without_noise(lines) == [
        "step 50/300 | loss 0.69", "serving demo (classify)", "  \u2022 a bullet of our own",
        "Traceback (most recent call last):", "ValueError: bad"]


def test_every_noise_entry_says_why():
    assert all(len(why) > 40 for why in console.NOISE.values())


def test_forwarded_output_is_filtered_where_ray_prints_it(quiet, monkeypatch):
    from ray._private import worker

    printed = []
    monkeypatch.setattr(worker, "print_worker_logs", lambda data, file, *a, **k: printed.append(data["lines"]))
    console.drop_noise()
    console.drop_noise()  # idempotent: one filter, not two
    assert getattr(worker.print_worker_logs, "drops_noise", False)
    worker.print_worker_logs({"pid": "raylet", "lines": [SHUTDOWN]}, io.StringIO(), False)
    worker.print_worker_logs({"pid": 7, "lines": [*BANNER, "step 10/30 | loss 0.7"]}, io.StringIO(), False)
    assert printed == [["step 10/30 | loss 0.7"]]  # a batch of nothing but noise prints nothing


def test_verbose_keeps_everything(monkeypatch):
    from ray._private import worker

    original = worker.print_worker_logs
    monkeypatch.setenv(console.VERBOSE_ENV, "1")
    console.drop_noise()
    assert worker.print_worker_logs is original
    assert console.ray_init_options(joining=True) == {}
    assert console.serve_system_logging() == {}


def test_quiet_ray_init_sets_the_job_logging_level(quiet, monkeypatch):
    for key, value in console.WORKER_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    local = console.ray_init_options()
    assert local["logging_config"].log_level == "WARNING" and "runtime_env" not in local
    joining = console.ray_init_options(joining=True)
    assert joining["runtime_env"] == {"env_vars": console.WORKER_ENV}  # the cluster's processes lack them
    assert console.serve_system_logging() == {"log_level": "WARNING"}


def test_joining_leaves_alone_what_the_user_or_the_job_set(quiet, monkeypatch):
    monkeypatch.setenv("PYTHONWARNINGS", "error")  # the user's own filter
    monkeypatch.setenv("RAY_DATA_LOG_LEVEL", "WARNING")
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert console.ray_init_options(joining=True)["runtime_env"] == {"env_vars": {"RAY_DATA_LOG_LEVEL": "WARNING"}}
    # inside `ray job submit`: the job's runtime env (its working_dir package) is left as it is
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"}}')
    assert "runtime_env" not in console.ray_init_options(joining=True)


def test_data_progress_reaches_a_terminal_but_never_through_actors():
    import ray.data

    context = ray.data.DataContext.get_current().copy()
    console.configure_data(context)
    assert context.enable_progress_bars and not context.use_ray_tqdm
    assert not context.enable_progress_bar_name_truncation


def test_rayseq_loggers_keep_info_when_ray_sets_the_root_to_warning(quiet, monkeypatch):
    console.prepare()
    stream = io.StringIO()
    own = logging.getLogger("pipelines")
    handler = next(h for h in own.handlers if getattr(h, "rayseq", False))
    monkeypatch.setattr(handler, "stream", stream)
    monkeypatch.setattr(logging.getLogger(), "level", logging.WARNING)
    logging.getLogger("pipelines.apps.text_classify.data").info("tokenizer: bpe, 241 tokens")
    assert stream.getvalue() == "tokenizer: bpe, 241 tokens\n"
    assert logging.getLogger("ray.data").level == logging.WARNING
    console.prepare()  # twice: still one handler
    assert sum(getattr(h, "rayseq", False) for h in own.handlers) == 1


@pytest.mark.parametrize("argv", [["train", "recipes/demo_sentiment.yaml", "--verbose"],
                                  ["eval", "ckpt", "--data", "d", "--verbose"], ["serve", "ckpt", "--verbose"]])
def test_every_command_takes_verbose(argv):
    from pipelines.cli import build_parser

    assert build_parser().parse_args(argv).verbose
    assert not build_parser().parse_args([a for a in argv if a != "--verbose"]).verbose


def test_verbose_flag_reaches_the_processes_ray_starts(monkeypatch):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    console.set_verbose(False)
    assert not console.verbose()
    console.set_verbose(True)
    assert console.verbose() and console.ray_init_options() == {}


def test_a_worker_failure_is_one_line_with_the_original_error():
    wrapped = RuntimeError("ray::RayTrainWorker.run() (pid=1, ip=x)\n  File \"worker.py\", line 3, in run\n"
                           "ValueError: stage 1 got a batch of 0 rows\n")
    line = failure_line(1, wrapped, 2)
    assert line.startswith("training: worker 1 failed: ValueError: stage 1 got a batch of 0 rows (Ray Train")
    assert "up to 2 times" in line
    long = RuntimeError("The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR "
                        + "x " * 200)
    assert "failed: The actor is dead because its worker process has died ... (Ray Train" in failure_line(0, long, 2)
