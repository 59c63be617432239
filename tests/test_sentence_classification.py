"""Sentence classification on a real local Ray: trees read through Ray Data, the carved
validation split, and one run of the CLI with a label map and frozen pretrained vectors
(as recipes/trec.yaml and recipes/sst2.yaml use them), scored by ``rayseq eval``."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from conftest import last_json_line, read_predictions
from pipelines.apps.text_classify.data import prepare_text_classification
from pipelines.config import DataConfig, recipe_from_dict
from pipelines.errors import DataError, user_error
from pipelines.media.sources import carve_validation, check_records, read_split
from test_train_cli import rayseq, sets

pytestmark = pytest.mark.ray

TREES = [
    "(4 (3 (2 a) (4 (4 great) (2 film))) (2 .))",
    "(0 (1 (2 a) (0 (0 awful) (2 film))) (2 .))",
    "(3 (2 the) (3 (3 (2 acting) (2 is)) (4 superb)))",
    "(1 (2 the) (1 (1 (2 plot) (2 is)) (0 dull)))",
]


def test_trees_train_and_sentences_validate(ray_head, tmp_path):
    (tmp_path / "train.txt").write_text("\n".join(TREES) + "\n")
    (tmp_path / "dev.txt").write_text("1 a great film .\n0 the plot is dull\n")
    recipe = recipe_from_dict({
        "data": {"root": str(tmp_path), "train": "train.txt", "format": "sst-trees", "valid": "dev.txt",
                 "valid_format": "labeled-lines", "max_length": 16},
        "tokenizer": {"kind": "wordlevel", "vocab_size": 100, "min_frequency": 1},
    })
    data = prepare_text_classification(recipe)
    assert data.labels == ["0", "1"]  # stsa.binary's labels, so sentences validate against phrases
    # the non-neutral nodes, 4 a tree ("a", "film", "." and the like are neutral and dropped)
    assert data.report["train_examples"] == 16 and data.report["valid_examples"] == 2


def questions(count: int, seed: int) -> list[tuple[str, str]]:
    """``(label, question)``: 0 what/how (DESC), 1 who (HUM), 2 where (LOC), the way TREC's
    file writes them (numeric labels)."""
    rng = random.Random(seed)
    things = ["the river", "a comet", "the senate", "jazz", "the treaty", "a volcano", "the opera", "chess"]
    forms = [("0", "what is {} ?"), ("0", "how does {} work ?"), ("1", "who founded {} ?"),
             ("1", "who wrote about {} ?"), ("2", "where is {} ?"), ("2", "where can one see {} ?")]
    out = []
    for _ in range(count):
        label, form = rng.choice(forms)
        out.append((label, form.format(rng.choice(things))))
    return out


def test_carved_validation_is_stratified_seeded_and_disjoint(ray_head, tmp_path):
    path = tmp_path / "q.txt"
    path.write_text("".join(f"{label} {text}\n" for label, text in questions(300, 0)))
    config = DataConfig(train=str(path), valid="")
    train = check_records(read_split(config, "train"), "error", "train")

    def carve(seed: int):
        kept, held, report = carve_validation(train, 0.2, seed)
        origins = lambda split: {r["origin"] for r in split.dataset.take_all()}  # noqa: E731
        return origins(kept), origins(held), held, report

    kept, held, held_split, report = carve(0)
    assert not kept & held and len(kept | held) == 300
    assert report == {"valid_fraction": 0.2, "valid_seed": 0, "valid_lines": len(held), "train_lines": len(kept)}
    labels = [r["label"] for r in train.dataset.take_all()]
    for label in ("0", "1", "2"):  # each label held out in its own proportion
        share = sum(1 for r in held_split.dataset.take_all() if r["label"] == label)
        assert abs(share - 0.2 * labels.count(label)) <= 1
    assert carve(0)[1] == held  # the same seed holds out the same lines
    assert carve(1)[1] != held


def write_vectors(path: Path, words: list[str], dim: int) -> dict[str, list[float]]:
    vectors = {w: [round(random.Random(w).gauss(0, 1), 3) for _ in range(dim)] for w in words}
    path.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in vectors.items()))
    return vectors


def test_label_map_carved_split_and_frozen_vectors_end_to_end(ray_head, tmp_path):
    data = tmp_path / "trec"
    data.mkdir()
    (data / "train.all").write_text("".join(f"{label} {text}\n" for label, text in questions(400, 1)))
    vectors = write_vectors(tmp_path / "vectors.txt", ["who", "where", "what", "how", "river", "opera"], 16)
    out = tmp_path / "run"
    done = rayseq("train", "recipes/trec.yaml", *sets(
        f"data.root={data}", "data.train=train.all", "data.valid_fraction=0.25", "data.valid_seed=3",
        "data.label_names={0: DESC, 1: HUM, 2: LOC}", f"model.pretrained_embeddings={tmp_path / 'vectors.txt'}",
        "model.freeze_embeddings=true", "model.embed_dim=16", "model.hidden_size=16", "train.max_steps=40",
        "train.lr=0.01", "train.warmup_steps=5", "train.eval_every=20", "train.log_every=20"), "--output", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = last_json_line(done.stdout)
    assert summary["valid_fraction"] == 0.25 and summary["valid_seed"] == 3
    assert abs(summary["valid_lines"] - 100) <= 2  # a quarter of each label, rounded
    assert "pretrained embeddings: 6 of " in done.stdout and "(frozen)" in done.stdout
    assert summary["val_accuracy"] > 0.9  # first words decide the class
    checkpoint = Path(summary["checkpoint"])
    assert json.loads((checkpoint / "meta.json").read_text())["labels"] == ["DESC", "HUM", "LOC"]
    vocab = json.loads((checkpoint / "tokenizer.json").read_text())["model"]["vocab"]
    embedding = torch.load(checkpoint / "model.pt", weights_only=True)["layers.0.embed.weight"]
    for word, vector in vectors.items():  # frozen: still exactly the file's vectors after training
        assert torch.allclose(embedding[vocab["\u2581" + word]], torch.tensor(vector)), word

    # rayseq eval reads a file in the training file's own form through the recipe's map
    held_out = tmp_path / "test.txt"
    held_out.write_text("".join(f"{label} {text}\n" for label, text in questions(60, 9)))
    scored = rayseq("eval", str(checkpoint), "--data", str(held_out), "--predictions", str(tmp_path / "p.jsonl"))
    assert scored.returncode == 0, scored.stderr[-3000:]
    scores = last_json_line(scored.stdout)
    assert scores["accuracy"] > 0.9 and scores["examples"] == 60
    rows = read_predictions(scores)
    assert {r["label"] for r in rows} | {r["predicted"] for r in rows} <= {"DESC", "HUM", "LOC"}
    held_out.write_text("0 what is jazz ?\n7 who founded chess ?\n")
    refused = rayseq("eval", str(checkpoint), "--data", str(held_out), "--set", "data.on_bad_record=error")
    assert refused.returncode != 0
    assert f"{held_out}:2" in refused.stderr and "label '7' is not in data.label_names" in refused.stderr

    from pipelines.checkpoint import load_predictor

    answer = load_predictor(checkpoint).predict(["where is the opera ?"])[0]
    assert answer["label"] == "LOC" and set(answer["scores"]) == {"DESC", "HUM", "LOC"}  # what Serve answers


def test_a_malformed_tree_names_file_and_line(ray_head, tmp_path):
    (tmp_path / "train.txt").write_text(TREES[0] + "\n(3 (2 oops)\n")
    config = DataConfig(root=str(tmp_path), train="train.txt", format="sst-trees")
    with pytest.raises(Exception) as info:
        check_records(read_split(config, "train"), "error", "train")
    error = user_error(info.value)
    assert isinstance(error, DataError)
    assert f"bad record at {tmp_path / 'train.txt'}:2: malformed tree: 1 unclosed '('" in str(error)
