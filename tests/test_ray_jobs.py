"""Training through Ray's job API, the SDK behind ``ray job submit``: the project folder
travels as the job's ``working_dir``, the job is polled to its end, its logs carry the
summary line, and a bad recipe fails the job with rayseq's one-line error.

(tests/test_train_cli.py covers the ``ray job submit`` command line's success path.)
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.ray

RUNTIME_ENV = {
    "working_dir": str(ROOT),
    # Upload the project only, not its virtualenv (1.8 GB), runs or git history.
    "excludes": [".venv", "runs", ".git", "**/__pycache__"],
    # Unbuffered, so logs read while the job runs hold everything printed so far.
    "env_vars": {"PYTHONUNBUFFERED": "1"},
}
TINY = [
    "data.generate.size=400", "train.max_steps=10", "train.log_every=5", "train.eval_every=10",
    "train.warmup_steps=2", "model.hidden_size=16", "model.embed_dim=16", "tokenizer.vocab_size=200",
]


@pytest.fixture(scope="module")
def jobs(ray_head):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(ray_head["dashboard"])


def submit_training(jobs, *args: str) -> str:
    """Submit ``python -m pipelines.train ARGS`` as a job; its id."""
    entrypoint = shlex.join(["python", "-m", "pipelines.train", *args])
    return jobs.submit_job(entrypoint=entrypoint, runtime_env=RUNTIME_ENV)


def wait_until_done(jobs, job_id: str, timeout: float):
    """Poll the job until it ends (stopping it past ``timeout``); its final JobStatus."""
    deadline = time.monotonic() + timeout
    while not (status := jobs.get_job_status(job_id)).is_terminal():
        if time.monotonic() > deadline:
            jobs.stop_job(job_id)
            raise AssertionError(f"job {job_id} still {status} after {timeout:.0f} s:\n"
                                 f"{jobs.get_job_logs(job_id)[-3000:]}")
        time.sleep(1)
    return status


def summary_line(logs: str) -> dict:
    """The run's JSON summary: the driver's last stdout line, though Ray may print its own
    lines (workers' output forwarded to the driver) after it in the job's logs."""
    lines = [line for line in logs.splitlines() if line.startswith("{")]
    assert lines, f"no JSON summary line in the job's logs:\n{logs[-3000:]}"
    return json.loads(lines[-1])


def test_submitted_training_succeeds_and_its_logs_name_the_checkpoint(jobs, tmp_path):
    from ray.job_submission import JobStatus

    out = tmp_path / "run"
    job_id = submit_training(jobs, "recipes/demo_sentiment.yaml", *(f"--set={s}" for s in TINY), f"--output={out}")
    status = wait_until_done(jobs, job_id, timeout=420)
    logs = jobs.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "step 5/10 | loss" in logs
    summary = summary_line(logs)
    checkpoint = Path(summary["checkpoint"])
    assert summary["steps"] == 10 and checkpoint == out / "checkpoint"
    assert {"config.yaml", "model.pt", "tokenizer.json", "meta.json"} <= {p.name for p in checkpoint.iterdir()}


@pytest.mark.parametrize(
    "args, message",
    [
        (["recipes/demo_sentiment.yaml", "--set", "train.max_stepz=3"], "unknown key 'train.max_stepz'; known: "),
        (["recipes/nope.yaml"], "recipe not found: recipes/nope.yaml"),
    ],
)
def test_bad_recipe_fails_the_job_with_one_clear_line(jobs, args, message):
    from ray.job_submission import JobStatus

    job_id = submit_training(jobs, *args)
    status = wait_until_done(jobs, job_id, timeout=180)
    logs = jobs.get_job_logs(job_id)
    assert status == JobStatus.FAILED, logs[-3000:]
    assert logs.strip().splitlines()[-1].startswith(f"rayseq: error: {message}"), logs[-3000:]
    assert "Traceback" not in logs
    assert jobs.get_job_info(job_id).driver_exit_code == 2
