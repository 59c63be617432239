"""Recipe loading, ``--set`` overrides and their errors. No Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import Recipe, apply_overrides, load_recipe, recipe_from_dict
from pipelines.errors import ConfigError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    assert recipe_from_dict(recipe.to_dict()) == recipe  # resolved config round-trips


def test_overrides_parse_yaml_scalars():
    recipe = load_recipe(RECIPES / "demo_sentiment.yaml", [
        "train.max_steps=7", "model.cell=gru", "model.dropout=0.25", "data.root=/tmp/x", "parallel.dp=2",
        "batching.sort=false",
    ])
    assert recipe.train.max_steps == 7 and recipe.model.cell == "gru"
    assert recipe.model.dropout == 0.25 and recipe.data.root == "/tmp/x"
    assert recipe.parallel.dp == 2 and recipe.batching.sort is False


def test_floats_in_exponent_form_are_floats(tmp_path):
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; a float key takes it, from --set and
    from a recipe file, as any ML user writes it; an int key still refuses it."""
    recipe = load_recipe(RECIPES / "demo_sentiment.yaml", ["train.lr=1e-3", "model.dropout=2.5E-1"])
    assert recipe.train.lr == 0.001 and isinstance(recipe.train.lr, float) and recipe.model.dropout == 0.25
    path = tmp_path / "r.yaml"
    path.write_text((RECIPES / "demo_sentiment.yaml").read_text() + "\n")
    raw = path.read_text().replace("train:\n", "train:\n  weight_decay: 3e-2\n", 1)
    path.write_text(raw)
    assert load_recipe(path).train.weight_decay == 0.03
    with pytest.raises(ConfigError, match=r"train.lr: expected float, got '1e-3x'"):
        load_recipe(RECIPES / "demo_sentiment.yaml", ["train.lr=1e-3x"])
    with pytest.raises(ConfigError, match=r"train.max_steps: expected int, got '1e3'"):
        load_recipe(RECIPES / "demo_sentiment.yaml", ["train.max_steps=1e3"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_stepz=3", r"unknown key 'train.max_stepz'"),
        ("nope=1", r"unknown key 'nope'"),
        ("train.lr.x=1", r"'train.lr' is not a section"),
        ("train.max_steps", r"--set expects KEY=VALUE"),
        ("train.max_steps=ten", r"train.max_steps: expected int, got 'ten'"),
        ("train.max_steps=0", r"train.max_steps must be >= 1, got 0"),
        ("data.format=xml", r"data.format: 'xml' is not one of"),
        ("model.cell=rnn", r"model.cell: 'rnn'"),
        ("data.max_length=5000", r"data.max_length must fit the token budget: 5000 > batching.max_tokens"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(RECIPES / "demo_sentiment.yaml", [override])


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  max_steps: 3\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'train.learning_rate'"):
        load_recipe(path)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(ConfigError, match=r"recipe not found: .*absent.yaml"):
        load_recipe(tmp_path / "absent.yaml")


def test_override_creates_optional_section():
    raw = apply_overrides({}, ["data.generate.size=50"])
    assert recipe_from_dict(raw).data.generate.size == 50


def test_resources_per_worker_adds_custom_resources_to_each_training_worker():
    from pipelines.config import ParallelConfig
    from pipelines.train import worker_resources

    recipe = load_recipe(RECIPES / "demo_sentiment.yaml", ["parallel.resources_per_worker={fake_gpu: 1}"])
    assert worker_resources(recipe.parallel) == {"CPU": 1, "fake_gpu": 1}
    assert worker_resources(ParallelConfig()) == {"CPU": 1}
    # With use_gpu Ray Train adds its one GPU per worker to whatever is asked here.
    assert worker_resources(ParallelConfig(use_gpu=True, resources_per_worker={"A100": 1})) == {"A100": 1}
    assert worker_resources(ParallelConfig(use_gpu=True)) is None


@pytest.mark.parametrize(
    "value, message",
    [
        ("fake_gpu", r"parallel.resources_per_worker: expected a mapping like \{fake_gpu: 1\}, got 'fake_gpu'"),
        ("{CPU: 2}", r"parallel.resources_per_worker: CPU is set by parallel.threads_per_worker, not here"),
        ("{GPU: 1}", r"parallel.resources_per_worker: GPU is set by parallel.use_gpu, not here"),
        ("{fake_gpu: 0}", r"parallel.resources_per_worker.fake_gpu must be a number > 0, got 0"),
        ("{fake_gpu: one}", r"parallel.resources_per_worker.fake_gpu must be a number > 0, got 'one'"),
    ],
)
def test_bad_resources_per_worker_names_the_resource(value, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(RECIPES / "demo_sentiment.yaml", [f"parallel.resources_per_worker={value}"])


class _FakeRay:
    """Stands in for the ``ray`` module: connected by the command, or before it."""

    def __init__(self, connected: bool) -> None:
        self.connected, self.shutdowns = connected, 0

    def is_initialized(self) -> bool:
        return self.connected

    def shutdown(self) -> None:
        self.shutdowns += 1
        self.connected = False


@pytest.mark.parametrize("connected_before, shutdowns", [(False, 1), (True, 0)])
def test_the_summary_comes_after_the_command_leaves_ray(monkeypatch, capsys, connected_before, shutdowns):
    """A command that connected to Ray disconnects before printing its summary, so no
    cluster log line can follow it; a caller's own connection (a test session's) stays."""
    import sys

    from pipelines.errors import run_and_report

    fake = _FakeRay(connected_before)
    monkeypatch.setitem(sys.modules, "ray", fake)

    def command() -> dict:
        fake.connected = True
        return {"steps": 3}

    assert run_and_report(command) == 0
    assert fake.shutdowns == shutdowns
    assert capsys.readouterr().out.strip().splitlines()[-1] == '{"steps": 3}'


def test_trainer_runs_without_the_placement_group_cleaner():
    """``pipelines.runtime.torch_trainer``: Ray Train's own callbacks, less the cleaner
    whose state-API lookup stalled runs 12 s (and can ask the wrong instance)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from pipelines.runtime import torch_trainer

    def names(trainer_class):
        trainer = trainer_class(lambda: None, scaling_config=ray.train.ScalingConfig(num_workers=1))
        return [type(c).__name__ for c in trainer._create_default_callbacks()]

    stock = names(TorchTrainer)
    assert "PlacementGroupCleanerCallback" in stock  # else Ray changed and this is moot
    assert names(torch_trainer()) == [n for n in stock if n != "PlacementGroupCleanerCallback"]


def test_step_schedule_drops_the_rate_at_its_steps():
    from pipelines.config import TrainConfig
    from pipelines.engine.optim import lr_factor

    config = TrainConfig(max_steps=10, warmup_steps=2, schedule="step", decay_at=[5, 8], decay_gamma=0.3)
    assert [round(lr_factor(s, config), 4) for s in range(10)] == [0.5, 1, 1, 1, 1, 0.3, 0.3, 0.3, 0.09, 0.09]
    with pytest.raises(ConfigError, match="train.decay_at is read by schedule: step, not linear"):
        TrainConfig(decay_at=[5])
    with pytest.raises(ConfigError, match="ascending steps >= 1"):
        TrainConfig(schedule="step", decay_at=[8, 5])
    with pytest.raises(ConfigError, match="decay_gamma must be in"):
        TrainConfig(schedule="step", decay_at=[5], decay_gamma=0.0)


def test_the_wavefront_runs_translation_and_says_why_other_decoders_do_not():
    """Translation's decoder streams over target chunks; the seq2seq-shaped applications
    whose decoder layers have no chunked form are refused by name, with the reason."""
    from pipelines import apps

    recipe = recipe_from_dict({"model": {"kind": "seq2seq"}, "parallel": {"schedule": "wavefront", "pp": 2}})
    assert (recipe.parallel.schedule, apps.app_for(recipe).name) == ("wavefront", "translate")
    for model, app, reason in (("language_model", "text_generate", "conditioned decoder layer"),
                               ("pointer_generator", "summarize", "pointer-generator decoder")):
        with pytest.raises(ConfigError, match=rf"wavefront .*; {app} does not \(its {reason} .* no chunked form"):
            recipe_from_dict({"model": {"kind": model}, "parallel": {"schedule": "wavefront", "pp": 2}})
