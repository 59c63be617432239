"""The run's metric history: a JSONL file and a PNG of the curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_history(history: list[dict[str, Any]], path: Path) -> None:
    path.write_text("".join(json.dumps(entry) + "\n" for entry in history))


def plot_history(history: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [e["step"] for e in history]
    left.plot(steps, [e["train_loss"] for e in history], label="train loss")
    evals = [e for e in history if "val_loss" in e]
    if evals:
        left.plot([e["step"] for e in evals], [e["val_loss"] for e in evals], "o-", label="val loss")
    metric = "val_accuracy" if any("val_accuracy" in e for e in evals) else "val_token_accuracy"
    if evals and metric in evals[0]:
        right.plot([e["step"] for e in evals], [e[metric] for e in evals], "o-", color="tab:green")
    right.set_title("validation " + ("accuracy" if metric == "val_accuracy" else "token accuracy"))
    right.set_xlabel("step")
    left.set_title("loss")
    left.set_xlabel("step")
    left.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
