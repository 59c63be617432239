"""TensorBoard event files of a training run (``<run folder>/tensorboard``).

World rank 0 writes them as training goes, so ``tensorboard --logdir`` shows a run live:
the resolved recipe (as text, and its scalar keys as hyperparameters with the final
validation figures), the data's padding fraction, and at every log step the training
loss, learning rate and tokens/s, plus every validation figure at evaluation steps.
metrics.jsonl and curves.png stay what they were: the same entries, for scripts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SCALAR_GROUPS = {"train_loss": "train/loss", "lr": "train/lr", "tokens_per_s": "train/tokens_per_s"}
"""History keys shown under ``train/``; ``val_*`` keys go under ``val/`` as they are named."""


def tag_of(key: str) -> str | None:
    """Where a history entry's key is shown, or None for bookkeeping (step, epoch)."""
    if key in SCALAR_GROUPS:
        return SCALAR_GROUPS[key]
    if key.startswith("val_"):
        return "val/" + key[len("val_"):]
    return None


def flat_scalars(tree: dict[str, Any], prefix: str = "") -> dict[str, float | int | str | bool]:
    """A nested recipe as ``section.key`` -> value, scalars only (TensorBoard's
    hyperparameters take nothing else)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_scalars(value, name + "."))
        elif isinstance(value, (int, float, str, bool)):
            out[name] = value
    return out


class RunBoard:
    """The event writer of one run (open it on one worker only)."""

    def __init__(self, log_dir: Path, recipe: dict[str, Any], padding_fraction: float | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.recipe = recipe
        self.writer = SummaryWriter(str(self.log_dir))
        self.writer.add_text("recipe", "```yaml\n" + yaml.safe_dump(recipe, sort_keys=False) + "```", 0)
        if padding_fraction is not None:
            self.writer.add_scalar("data/padding_fraction", padding_fraction, 0)

    def log(self, entry: dict[str, Any]) -> None:
        """One history entry (``step`` and the figures of that step)."""
        step = int(entry["step"])
        for key, value in entry.items():
            tag = tag_of(key)
            if tag is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self, final: dict[str, Any]) -> None:
        """Write the hyperparameters with the run's last validation figures, and close."""
        metrics = {f"hparam/{k}": v for k, v in final.items()
                   if k.startswith("val_") and isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.writer.add_hparams(flat_scalars(self.recipe), metrics, run_name=".")
        self.writer.close()
