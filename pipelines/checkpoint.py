"""Checkpoint files.

Training checkpoints (written through ``ray.train.report``, one directory per report):

    model.stage<S>.pt      model state of pipeline stage S (written by its dp rank 0)
    optim.stage<S>.pt      optimizer + LR scheduler state of that stage
    train_state.json       step, epoch and the metric history so far

Inference checkpoint (``<output>/checkpoint``, what ``eval`` and ``serve`` load):

    config.yaml            the resolved recipe
    model.pt               the whole model's state dict (``weights_only`` loadable)
    tokenizer.json         ``tokenizers`` tokenizer trained on the training split
    meta.json              kind, label names, vocabulary size, rayseq version
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from models import build_seq2vec
from pipelines.config import Recipe, recipe_from_dict
from pipelines.errors import DataError

TRAIN_STATE = "train_state.json"


def model_file(stage: int) -> str:
    return f"model.stage{stage}.pt"


def optim_file(stage: int) -> str:
    return f"optim.stage{stage}.pt"


def save_train_shard(directory: Path, stage: int, model: torch.nn.Module, optimizer, scheduler) -> None:
    torch.save(model.state_dict(), directory / model_file(stage))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, directory / optim_file(stage))


def load_train_shard(directory: Path, stage: int, model: torch.nn.Module, optimizer, scheduler) -> None:
    model.load_state_dict(torch.load(directory / model_file(stage), weights_only=True))
    state = torch.load(directory / optim_file(stage), weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])


def write_train_state(directory: Path, state: dict[str, Any]) -> None:
    (directory / TRAIN_STATE).write_text(json.dumps(state))


def read_train_state(directory: Path) -> dict[str, Any]:
    return json.loads((directory / TRAIN_STATE).read_text())


def export_inference(train_dir: Path, out_dir: Path, *, recipe: Recipe, tokenizer_json: str, labels: list[str], vocab_size: int) -> Path:
    """Merge the training checkpoint's model shard(s) into one inference checkpoint."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(train_dir.glob("model.stage*.pt")):
        state.update(torch.load(shard, weights_only=True))
    torch.save(state, out_dir / "model.pt")
    (out_dir / "config.yaml").write_text(recipe.to_yaml())
    (out_dir / "tokenizer.json").write_text(tokenizer_json)
    meta = {"kind": recipe.model.kind, "task": "classify", "labels": labels, "vocab_size": vocab_size}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    return out_dir


@dataclass
class InferenceCheckpoint:
    path: Path
    recipe: Recipe
    meta: dict[str, Any]
    tokenizer_json: str
    model: torch.nn.Module

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])


def load_inference(path: str | Path, *, device: str = "cpu") -> InferenceCheckpoint:
    """Load and validate an inference checkpoint; the model comes back in eval mode."""
    path = Path(path)
    for name in ("config.yaml", "model.pt", "tokenizer.json", "meta.json"):
        if not (path / name).is_file():
            raise DataError(f"{path}: not a rayseq checkpoint (missing {name})")
    recipe = recipe_from_dict(yaml.safe_load((path / "config.yaml").read_text()))
    meta = json.loads((path / "meta.json").read_text())
    labels = meta.get("labels")
    if not isinstance(labels, list) or len(labels) < 2 or not isinstance(meta.get("vocab_size"), int):
        raise DataError(f"{path}/meta.json: needs 'labels' (2 or more) and an integer 'vocab_size'")
    model = build_seq2vec(recipe.model, vocab_size=meta["vocab_size"], num_labels=len(labels))
    model.load_state_dict(torch.load(path / "model.pt", map_location=device, weights_only=True))
    model.to(device).eval()
    return InferenceCheckpoint(path, recipe, meta, (path / "tokenizer.json").read_text(), model)
