"""TensorBoard event files: written by ``RunBoard`` and read back with TensorBoard's own
reader (no Ray; a CLI training's files are checked in test_train_cli)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pipelines.engine.tensorboard import RunBoard, flat_scalars, tag_of


def read_back(log_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def test_entries_become_scalars_under_train_and_val(tmp_path):
    board = RunBoard(tmp_path, {"name": "demo", "train": {"lr": 0.01, "max_steps": 4}, "data": {"root": None}},
                     padding_fraction=0.04)
    board.log({"step": 2, "epoch": 0, "train_loss": 1.5, "lr": 0.01, "tokens_per_s": 900.0})
    board.log({"step": 4, "epoch": 1, "train_loss": 1.25, "lr": 0.005, "tokens_per_s": 1000.0,
               "val_loss": 1.1, "val_accuracy": 0.75})
    board.close({"val_loss": 1.1, "val_accuracy": 0.75, "checkpoint": "/x"})
    events = read_back(tmp_path)
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "train/tokens_per_s", "val/loss", "val/accuracy",
            "data/padding_fraction"} <= set(scalars)
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(2, 1.5), (4, 1.25)]
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("val/accuracy")] == [(4, 0.75)]
    assert "recipe/text_summary" in events.Tags()["tensors"]


def test_bookkeeping_keys_and_non_scalars_are_left_out():
    assert tag_of("step") is None and tag_of("epoch") is None
    assert tag_of("val_bleu") == "val/bleu" and tag_of("train_loss") == "train/loss"
    assert flat_scalars({"a": {"b": 1, "c": [1, 2], "d": None}, "e": "x"}) == {"a.b": 1, "e": "x"}
