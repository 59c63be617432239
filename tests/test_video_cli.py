"""Video end to end through the CLI on a real local Ray: the video classification and
captioning recipes trained on moving-shape clips they generate themselves
(``data.generate``, small and short), then ``rayseq eval`` reproducing their scores
and ``rayseq generate video`` writing a fresh held-out folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import last_json_line, read_predictions
from test_train_cli import rayseq, rayseq_together, sets

pytestmark = pytest.mark.ray

SMALL_VIDEO = ["data.generate.size=160", "data.video.size=16", "data.video.max_frames=24", "batching.max_tokens=480",
               "batching.max_batch_size=32", "model.embed_dim=32", "model.hidden_size=32",
               "model.frontend_channels=8", "train.log_every=20", "train.warmup_steps=10",
               "parallel.threads_per_worker=1"]


@pytest.fixture(scope="module")
def runs(ray_head, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """The classifier and the captioner, trained at once (their start-ups overlap)."""
    work = tmp_path_factory.mktemp("video")
    commands = {
        "classify": ["train", "recipes/video_classify.yaml", *sets(*SMALL_VIDEO, "train.max_steps=40",
                                                                    "train.eval_every=40")],
        "caption": ["train", "recipes/video_caption.yaml", *sets(*SMALL_VIDEO, "train.max_steps=60",
                                                                  "train.eval_every=60", "decode.beam_size=2")],
    }
    done = rayseq_together(*([*args, "--output", str(work / name)] for name, args in commands.items()))
    for run in done:
        assert run.returncode == 0, run.stderr[-3000:]
    return {name: (work / name, last_json_line(run.stdout)) for name, run in zip(commands, done)}


@pytest.fixture(scope="module")
def classify_run(runs) -> tuple[Path, dict]:
    return runs["classify"]


def test_classifier_trains_and_eval_reproduces_its_accuracy(classify_run):
    out, summary = classify_run
    assert summary["steps"] == 40 and summary["val_examples"] == 40 and summary["skipped_records"] == 0
    assert (out / "checkpoint" / "meta.json").is_file()
    done = rayseq("eval", str(out / "checkpoint"), "--data", str(out / "data" / "valid"),
                  "--predictions", str(out / "valid.jsonl"))
    assert done.returncode == 0, done.stderr[-3000:]
    scores = last_json_line(done.stdout)
    assert scores["examples"] == 40 and scores["accuracy"] == pytest.approx(summary["val_accuracy"], abs=1e-4)
    assert len({r["origin"] for r in read_predictions(scores)}) == 40


def test_eval_scores_a_freshly_generated_folder_and_names_a_corrupt_clip(classify_run, tmp_path):
    out, _ = classify_run
    fresh = tmp_path / "fresh"
    done = rayseq("generate", "video", str(fresh), "--count", "24", "--seed", "7", "--size", "32")
    assert done.returncode == 0, done.stderr[-2000:]
    assert last_json_line(done.stdout)["files"] == 24
    done = rayseq("eval", str(out / "checkpoint"), "--data", str(fresh))
    assert done.returncode == 0 and last_json_line(done.stdout)["examples"] == 24
    (fresh / "clips" / "00005.mp4").write_bytes(b"not a video at all")
    done = rayseq("eval", str(out / "checkpoint"), "--data", str(fresh))
    assert done.returncode == 2
    assert "clips/00005.mp4" in done.stderr and "rayseq: error: bad record" in done.stderr


def test_captioner_trains_and_eval_reproduces_exact_match_and_bleu(runs):
    out, summary = runs["caption"]
    # "a", "moves" and the three "then"s (plus [EOS]) are the same in every caption: a
    # decoder that learned anything gets most of those right (uniform guessing: 1/18).
    assert summary["val_token_accuracy"] > 0.3
    assert 0.0 <= summary["val_exact_match"] <= 1.0 and "val_bleu" in summary
    done = rayseq("eval", str(out / "checkpoint"), "--data", str(out / "data" / "valid"),
                  "--predictions", str(out / "valid.jsonl"))
    assert done.returncode == 0, done.stderr[-3000:]
    scores = last_json_line(done.stdout)
    assert scores["examples"] == 40 and scores["beam_size"] == 2
    assert all(r["reference"] and isinstance(r["hypothesis"], str) for r in read_predictions(scores))
    assert scores["exact_match"] == pytest.approx(summary["val_exact_match"], abs=1e-4)
    assert scores["bleu"] == pytest.approx(summary["val_bleu"], abs=0.01)
