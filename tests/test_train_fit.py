"""What ``rayseq train`` asks Ray for fits where it runs, or is refused before anything
starts (no Ray: the checks run before Ray is started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import train
from pipelines.config import load_recipe
from pipelines.errors import ConfigError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture
def two_cpus(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(train, "local_cpus", lambda: 2)


def test_threads_per_worker_shrink_to_fit_a_local_instance(two_cpus, capsys):
    recipe = load_recipe(RECIPES / "sst2.yaml", ["parallel.pp=2"])
    assert recipe.parallel.threads_per_worker == 2
    train.fit_workers(recipe)
    assert recipe.parallel.threads_per_worker == 1
    assert "2 workers x 2 threads (parallel.threads_per_worker) = 4 CPUs, this machine has 2: 1 thread per worker" \
        in capsys.readouterr().out


def test_a_request_that_fits_is_left_alone(two_cpus, capsys):
    recipe = load_recipe(RECIPES / "sst2.yaml")
    train.fit_workers(recipe)
    assert recipe.parallel.threads_per_worker == 2 and capsys.readouterr().out == ""


@pytest.mark.parametrize("overrides", [["parallel.pp=3"], ["parallel.dp=2", "parallel.pp=2"]])
def test_more_workers_than_cpus_is_refused_with_the_arithmetic(two_cpus, overrides):
    recipe = load_recipe(RECIPES / "demo_translation.yaml", overrides)
    workers = recipe.parallel.dp * recipe.parallel.pp
    with pytest.raises(ConfigError, match=rf"= {workers} workers need at least {workers} CPUs \(one thread each\), "
                                          r"this machine has 2: lower parallel.pp or parallel.dp"):
        train.fit_workers(recipe)


def test_a_cluster_request_is_said_once_and_not_changed(monkeypatch, capsys):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    recipe = load_recipe(RECIPES / "sst2.yaml", ["parallel.pp=2", "parallel.dp=4"])
    train.fit_workers(recipe)
    assert recipe.parallel.threads_per_worker == 2
    out = capsys.readouterr().out
    assert "requesting 8 Ray Train workers x {'CPU': 2}" in out and "autoscaling" in out


def test_a_pipeline_deeper_than_the_model_is_refused():
    recipe = load_recipe(RECIPES / "sst2.yaml", ["parallel.pp=7"])
    with pytest.raises(ConfigError, match=r"parallel.pp=7 stages for a model of 3 layers: every stage needs a layer"):
        train.check_depth(recipe)
    train.check_depth(load_recipe(RECIPES / "sst2.yaml", ["parallel.pp=3"]))  # as deep as the model: fine
