"""Checkpoint files.

Training checkpoints (written through ``ray.train.report``, one directory per report):

    model.stage<S>.pt      model state of pipeline stage S (written by its dp rank 0)
    optim.stage<S>.pt      optimizer + LR scheduler state of that stage
    train_state.json       step, epoch and the metric history so far

Inference checkpoint (``<output>/checkpoint``, what ``eval`` and ``serve`` load):

    config.yaml            the resolved recipe
    model.pt               the whole model's state dict (``weights_only`` loadable)
    tokenizer.json         ``tokenizers`` tokenizer trained on the training split (seq2seq:
                           the joint one, or source_tokenizer.json + target_tokenizer.json)
    meta.json              kind, task, the builder's sizes (``vocab_size`` and ``labels``,
                           or ``src_vocab_size`` and ``tgt_vocab_size``)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from pipelines.config import Recipe, recipe_from_dict
from pipelines.errors import DataError
from pipelines.tasks import task_for, task_of_checkpoint

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


def export_inference(train_dir: Path, out_dir: Path, *, recipe: Recipe, files: dict[str, str], meta: dict[str, Any]) -> Path:
    """Merge the training checkpoint's model shard(s) into one inference checkpoint;
    ``files`` (tokenizers) are written beside it, ``meta`` completes ``meta.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(train_dir.glob("model.stage*.pt")):
        state.update(torch.load(shard, weights_only=True))
    torch.save(state, out_dir / "model.pt")
    (out_dir / "config.yaml").write_text(recipe.to_yaml())
    for name, text in files.items():
        (out_dir / name).write_text(text)
    route = task_for(recipe.model).route
    head = {"kind": recipe.model.kind, "input": recipe.model.input, "task": route}
    if recipe.model.kind == "seq2seq":
        head["decoder"] = recipe.model.decoder
    (out_dir / "meta.json").write_text(json.dumps({**head, **meta}, indent=2))
    return out_dir


def classifier_files(tokenizer, labels: list[str]) -> tuple[dict[str, str], dict[str, Any]]:
    """``files`` and ``meta`` of a seq2vec checkpoint."""
    return {"tokenizer.json": tokenizer.to_str()}, {"labels": labels, "vocab_size": tokenizer.get_vocab_size()}


def translator_files(tokenizers, recipe: Recipe) -> tuple[dict[str, str], dict[str, Any]]:
    """``files`` and ``meta`` of a seq2seq checkpoint (``TranslationTokenizers``)."""
    from pipelines.tokenization import translation_tokenizer_files

    src, tgt = tokenizers.vocab_sizes
    return translation_tokenizer_files(tokenizers), {"src_vocab_size": src, "tgt_vocab_size": tgt,
                   "source_lang": recipe.data.source_lang, "target_lang": recipe.data.target_lang}


@dataclass
class InferenceCheckpoint:
    path: Path
    recipe: Recipe
    meta: dict[str, Any]
    tokenizer_json: str | None
    """``tokenizer.json`` of a text classifier (its input) or a speech recognizer (its
    output); translation checkpoints load theirs with
    ``pipelines.tokenization.load_translation_tokenizers(path)``; audio classifiers have none."""
    model: torch.nn.Module

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])


def load_inference(path: str | Path, *, device: str = "cpu") -> InferenceCheckpoint:
    """Load and validate an inference checkpoint; the model comes back in eval mode."""
    path = Path(path)
    for name in ("config.yaml", "model.pt", "meta.json"):
        if not (path / name).is_file():
            raise DataError(f"{path}: not a rayseq checkpoint (missing {name})")
    recipe = recipe_from_dict(yaml.safe_load((path / "config.yaml").read_text()))
    meta = json.loads((path / "meta.json").read_text())
    task = task_of_checkpoint(path, meta)
    if task.kind != recipe.model.kind:
        raise DataError(f"{path}: meta.json says kind {task.kind!r} but config.yaml builds {recipe.model.kind!r}")
    if task is not task_for(recipe.model):
        raise DataError(f"{path}: meta.json and config.yaml disagree on the model's input or decoder")
    sizes = task.sizes_from_meta(path, meta)
    missing = task.missing_files(path)
    if missing:
        raise DataError(f"{path}: not a rayseq checkpoint (missing {missing})")
    single = path / "tokenizer.json"
    tokenizer_json = single.read_text() if single.is_file() else None
    model = task.build(recipe.model, sizes)
    model.load_state_dict(torch.load(path / "model.pt", map_location=device, weights_only=True))
    model.to(device).eval()
    return InferenceCheckpoint(path, recipe, meta, tokenizer_json, model)
