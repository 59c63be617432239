"""Training checkpoints: what each pipeline stage saves through ``ray.train.report`` and
resumes from (one directory per report)::

    model.stage<S>.pt      model state of pipeline stage S (written by its dp rank 0); with
                           train.ema_decay, the stage's parameter average
    optim.stage<S>.pt      optimizer + LR scheduler state of that stage (with ema_decay,
                           also its raw weights and the average's update count)
    train_state.json       step, epoch and the metric history so far

Training checkpoints are only resumed by the rayseq that wrote them: one from before
``train.ema_decay`` would resume a run saved with it from the average, not the raw
weights. ``pipelines.checkpoint`` merges the model shards into the inference checkpoint.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from pipelines.engine.averaging import ParameterAverage

TRAIN_STATE = "train_state.json"


def model_file(stage: int) -> str:
    return f"model.stage{stage}.pt"


def optim_file(stage: int) -> str:
    return f"optim.stage{stage}.pt"


def save_train_shard(directory: Path, stage: int, model: torch.nn.Module, optimizer, scheduler,
                     average: ParameterAverage | None = None, loss_scale=None) -> None:
    """The stage's model file holds the weights to serve: the parameter average when
    ``train.ema_decay`` is on (the raw weights then go beside the optimizer state).
    fp16's loss scale goes with the optimizer state."""
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    if loss_scale is not None:
        state["loss_scale"] = loss_scale.state_dict()
    if average is not None:
        state.update(raw_model=model.state_dict(), average_updates=average.updates)
    # Saved before the average is swapped in: raw_model shares the parameters' storage.
    torch.save(state, directory / optim_file(stage))
    with average.swapped_in() if average is not None else nullcontext():
        torch.save(model.state_dict(), directory / model_file(stage))


def load_train_shard(directory: Path, stage: int, model: torch.nn.Module, optimizer, scheduler,
                     average: ParameterAverage | None = None, loss_scale=None) -> None:
    """Resume a stage: raw weights into ``model``, the average into ``average`` (restarted
    from the weights when the checkpoint was saved without one)."""
    model.load_state_dict(torch.load(directory / model_file(stage), weights_only=True))
    state = torch.load(directory / optim_file(stage), weights_only=True)
    if "raw_model" in state:
        if average is not None:
            average.restart_from_module(state["average_updates"])  # the model file is the average
        model.load_state_dict(state["raw_model"])
    elif average is not None:
        average.restart_from_module()
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if loss_scale is not None and "loss_scale" in state:
        loss_scale.load_state_dict(state["loss_scale"])


def write_train_state(directory: Path, state: dict[str, Any]) -> None:
    (directory / TRAIN_STATE).write_text(json.dumps(state))


def read_train_state(directory: Path) -> dict[str, Any]:
    return json.loads((directory / TRAIN_STATE).read_text())
