"""The application structure is open: an application defined in tests/ (``tests/reverse_app.py``,
"reverse a digit sequence") trains at pp=1 and pp=2, is evaluated and serves a request,
registered without touching any file of pipelines/, models/ or serving/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import ROOT, last_json_line, serve_app
from pipelines import apps
from pipelines.config import recipe_from_dict
from pipelines.errors import ConfigError
from test_train_cli import rayseq_together

MODULE = "tests.reverse_app"

RECIPE = {
    "name": "reverse",
    "app": MODULE,
    "data": {"format": "digit-lines", "train": "train.txt", "valid": "valid.txt", "max_length": 12,
             "generate": {"name": "reverse-digits", "size": 300, "seed": 0}},
    "tokenizer": {"kind": "wordlevel", "vocab_size": 16, "min_frequency": 1, "lowercase": False},
    "model": {"kind": "seq2seq", "embed_dim": 16, "hidden_size": 16, "num_layers": 2, "decoder_layers": 1,
              "dropout": 0.0},
    "batching": {"max_tokens": 256},
    "train": {"max_steps": 12, "eval_every": 6, "log_every": 6, "warmup_steps": 2, "lr": 0.01},
    "parallel": {"microbatches": 2, "schedule": "gpipe", "dtype": "float64"},
    "decode": {"beam_size": 1, "max_length": 12},
}


def test_no_shared_file_names_the_application():
    shared = [p for folder in ("pipelines", "models", "serving") for p in (ROOT / folder).rglob("*.py")]
    assert shared, "the shared folders are where the test expects them"
    for path in shared:
        text = path.read_text()
        assert "reverse_app" not in text and "reverse-digits" not in text and "digit-lines" not in text, path


def test_a_recipe_names_the_application_by_module():
    recipe = recipe_from_dict(RECIPE)
    app = apps.app_for(recipe)
    assert app is apps.app_named(MODULE) and app.name == "reverse_digits"
    assert "reverse-digits" in apps.generators()  # its generator is known once it is registered
    with pytest.raises(ConfigError, match=r"data\.format: 'labeled-lines' is not read by the reverse_digits "
                                          r"application; it reads digit-lines"):
        recipe_from_dict({**RECIPE, "data": {**RECIPE["data"], "format": "labeled-lines"}})
    with pytest.raises(ConfigError, match=r"app 'tests\.reverse_app' trains model kind/input/decoder "
                                          r"seq2seq/text/attention; the recipe's model is seq2vec/text"):
        recipe_from_dict({**RECIPE, "model": {**RECIPE["model"], "kind": "seq2vec"}})
    with pytest.raises(ConfigError, match=r"app: cannot import application module 'tests\.no_such_app'"):
        recipe_from_dict({**RECIPE, "app": "tests.no_such_app"})


def test_a_bad_line_is_named_by_file_and_line(tmp_path):
    from tests.reverse_app import read_digit_lines

    (tmp_path / "x.txt").write_text("1 2 3\n4 five 6\n")
    records = read_digit_lines(tmp_path / "x.txt")
    assert [r["error"] for r in records] == ["", "not a line of digits"]
    assert records[1]["origin"].endswith("x.txt:2") and records[0]["target"] == "3 2 1"


def rayseq(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    return last_json_line(done.stdout)


@pytest.fixture(scope="module")
def trained(ray_head, tmp_path_factory) -> dict[int, dict]:
    """The application trained at pp=1 and pp=2 on the same generated data."""
    work = tmp_path_factory.mktemp("reverse")
    recipe = work / "reverse.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    # Both runs at once, each generating the same seeded data into a root of its own.
    runs = rayseq_together(*(["train", str(recipe), "--set", f"data.root={work / f'data{pp}'}", "--set",
                              f"parallel.pp={pp}", "--output", str(work / f"pp{pp}")] for pp in (1, 2)))
    summaries = {}
    for pp, run in zip((1, 2), runs):
        assert run.returncode == 0, run.stderr[-3000:]
        summaries[pp] = last_json_line(run.stdout)
    assert (work / "data1" / "train.txt").read_text() == (work / "data2" / "train.txt").read_text()
    return summaries


@pytest.mark.ray
def test_trains_the_same_at_pp1_and_pp2(trained):
    one, two = trained[1], trained[2]
    assert one["steps"] == two["steps"] == 12
    assert one["train_loss"] == pytest.approx(two["train_loss"], rel=1e-9)
    assert one["val_loss"] == pytest.approx(two["val_loss"], rel=1e-9)
    meta = json.loads((Path(one["checkpoint"]) / "meta.json").read_text())
    assert meta["app"] == MODULE and meta["task"] == "generate"


@pytest.mark.ray
@pytest.mark.serve
def test_evaluates_and_serves(trained, ray_head, tmp_path):
    checkpoint = Path(trained[2]["checkpoint"])
    valid = checkpoint.parent.parent / "data2" / "valid.txt"
    scores = rayseq("eval", str(checkpoint), "--data", str(valid), "--format", "digit-lines",
                    "--predictions", str(tmp_path / "p.jsonl"))
    lines = valid.read_text().splitlines()
    assert scores["examples"] == len(lines) and 0.0 <= scores["exact_match"] <= 1.0
    predictions = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [p["reference"] for p in predictions] == [" ".join(reversed(line.split())) for line in lines]

    from pipelines.checkpoint import load_predictor
    from serving.app import build_app

    want = load_predictor(checkpoint).predict(["1 2 3 4"])
    with serve_app(ray_head, build_app([checkpoint]), name="reverse") as url:
        listed = httpx.get(f"{url}/v1/models", timeout=30).json()["models"]
        assert listed == [{"name": "reverse", "kind": "seq2seq", "task": "generate"}]
        answer = httpx.post(f"{url}/v1/models/reverse/generate", json={"inputs": ["1 2 3 4"]}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["text"] == want[0]["text"]
