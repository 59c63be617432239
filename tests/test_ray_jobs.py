"""Training as a Ray job: ``ray job submit`` (the command line users run) uploads the
project folder as the job's ``working_dir`` and the run succeeds with its progress and
summary in the job's logs; through the job SDK behind it, a bad recipe fails the job with
rayseq's one-line error."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
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


def test_ray_job_submit_runs_training_from_the_working_dir(ray_head, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "RAY_API_SERVER_ADDRESS": ray_head["dashboard"]}
    env.pop("RAY_ADDRESS", None)  # the job CLI reads RAY_API_SERVER_ADDRESS / --address (HTTP)
    done = subprocess.run(
        [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", ray_head["dashboard"],
         "--working-dir", ".", "--", "python", "-m", "pipelines.train", "recipes/demo_sentiment.yaml",
         *(f"--set={s}" for s in TINY), "--output", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout and "step 5/10 | loss" in done.stdout
    summary = summary_line(done.stdout)
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
