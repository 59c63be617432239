"""``rayseq`` refuses bad input with exit status 2 and one line naming the problem, before
it starts or joins Ray: so these run in the tier without Ray (no ``RAY_ADDRESS``; a
command that started a Ray instance here first would still be checked, only slower).
The same commands on the session's Ray head ran in tests/test_train_cli.py before."""

from __future__ import annotations

import subprocess

import pytest

from test_train_cli import rayseq_together

BAD_INPUT = [
    (["train", "recipes/demo_sentiment.yaml", "--set", "train.max_stepz=3"], "unknown key 'train.max_stepz'"),
    (["train", "recipes/nope.yaml"], "recipe not found: recipes/nope.yaml"),
    (["eval", "/nonexistent/ckpt", "--data", "x.txt"], "/nonexistent/ckpt: not a rayseq checkpoint"),
    (["train", "recipes/fsdd_speech.yaml", "--set", "train.init_from=/nonexistent/ckpt", "--output", "/tmp/x"],
     "train.init_from: /nonexistent/ckpt is not a checkpoint folder (no model.pt)"),
    (["train", "recipes/fsdd_digits.yaml", "--set", "data.audio.valid_takes=5-x"],
     "data.audio.valid_takes: takes '5-x': cannot read '5-x'; expected e.g. '10-49' or '5,7,9-12'"),
]


@pytest.fixture(scope="module")
def bad_input_runs() -> list[subprocess.CompletedProcess]:
    return rayseq_together(*(args for args, _ in BAD_INPUT), timeout=120)


@pytest.mark.parametrize("case", range(len(BAD_INPUT)))
def test_bad_input_exits_nonzero_with_one_line(bad_input_runs, case):
    message = BAD_INPUT[case][1]
    done = bad_input_runs[case]
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"rayseq: error: {message}" or message in last
