"""``rayseq eval`` over Ray Data: checkpoint predictions for every record, in input order.

Prediction runs as Ray Data batch inference, the checkpoint loaded once per actor
through ``pipelines.checkpoint.load_predictor`` (the same predictor Serve runs); on a
CUDA ``device`` the actor reserves one GPU and runs the model there::

    records {index, origin, <inputs>, <target>}
        -> map_batches(Classify | Decode, ActorPoolStrategy(size=1))
        -> rows sorted by index -> accuracy | the application's metric
        -> --predictions: one JSON line per record, in input order

``inputs`` is a column of texts (the predictor's ``rows`` encodes them) or of featurized
frames (already rows: audio and video folders are featurized by Ray Data tasks).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import ray

from pipelines.devices import actor_device, actor_gpus
from pipelines.errors import DataError

DECODED_COLUMNS = ("origin", "reference", "hypothesis")
"""``--predictions`` fields of translation, speech-to-text and captioning."""

CLASSIFIED_COLUMNS = ("origin", "label", "predicted", "score")
"""``--predictions`` fields of classifiers."""


class _Actor:
    """A Ray Data actor holding one predictor; ``encoded``: the ``inputs`` column holds
    raw inputs (texts) the predictor's ``rows`` turns into model rows."""

    def __init__(self, checkpoint: str, inputs: str, encoded: bool, max_length: int | None,
                 device: str = "cpu") -> None:
        from pipelines.checkpoint import load_predictor

        self.predictor = load_predictor(checkpoint, device=device)
        if max_length is not None:
            self.predictor.max_length = max_length  # the eval recipe's ``data.max_length`` (``--set``)
        self.predictor.refuse_longer = False  # scored as trained: long sources cut, not refused
        self.inputs, self.encoded = inputs, encoded

    def rows(self, batch: dict[str, np.ndarray]) -> list:
        values = list(batch[self.inputs])
        return self.predictor.rows([str(v) for v in values]) if self.encoded else values


class Classify(_Actor):
    """Ray Data actor: a classifier over ``{index, origin, <inputs>, label}`` records."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        labels = self.predictor.labels
        unknown = [(o, lab) for o, lab in zip(batch["origin"], batch["label"]) if lab not in labels]
        if unknown:
            raise DataError(f"{unknown[0][0]}: label {unknown[0][1]!r} was not seen in training "
                            f"(labels: {sorted(labels)})")
        probs = self.predictor.probabilities(self.rows(batch))
        return {"index": batch["index"], "origin": batch["origin"], "predicted": np.array(labels)[probs.argmax(-1)],
                "score": probs.max(-1), "label": batch["label"]}


class Decode(_Actor):
    """Ray Data actor: a decoder over ``{index, origin, <inputs>, <target>}`` records;
    returns hypotheses beside the target texts."""

    def __init__(self, checkpoint: str, inputs: str, encoded: bool, max_length: int | None, target: str,
                 options: dict[str, Any], device: str = "cpu") -> None:
        super().__init__(checkpoint, inputs, encoded, max_length, device)
        self.target, self.options = target, options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.predictor.run(self.rows(batch), **self.options)
        return {"index": batch["index"], "origin": batch["origin"],
                "hypothesis": np.array([o["text"] for o in outputs]), "reference": batch[self.target]}


# The scoring actors run with ``max_restarts=0``: Ray Data keeps an actor's constructor
# arguments in the object store, where a restart may not find them (ray-project/ray#53727,
# which Ray says on every run with restarts on); a lost actor fails the evaluation with
# Ray's error instead, and `rayseq eval` is rerun.


def classified(checkpoint: Path, records, *, inputs: str, encoded: bool = False, max_length: int | None = None,
               batch_size: int = 128, device: str = "cpu") -> list[dict[str, Any]]:
    """``{origin, label, predicted, score}`` of each record (a ``ray.data.Dataset`` with
    ``index``), in input order, the model on ``device``."""
    scored = records.map_batches(
        Classify, fn_constructor_kwargs={"checkpoint": str(checkpoint), "inputs": inputs, "encoded": encoded,
                                         "max_length": max_length, "device": actor_device(device)},
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1),
        max_restarts=0, **actor_gpus(device),
    )
    return in_order(scored)


def decoded(checkpoint: Path, records, *, inputs: str, target: str, options: dict[str, Any], encoded: bool = False,
            batch_size: int = 128, device: str = "cpu") -> list[dict[str, Any]]:
    """``{origin, reference, hypothesis}`` of each record, in input order, decoded with
    ``options``, the model on ``device``."""
    found = records.map_batches(
        Decode, fn_constructor_kwargs={"checkpoint": str(checkpoint), "inputs": inputs, "encoded": encoded,
                                       "max_length": None, "target": target, "options": options,
                                       "device": actor_device(device)},
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1),
        max_restarts=0, **actor_gpus(device),
    )
    return in_order(found)


def in_order(dataset) -> list[dict[str, Any]]:
    """The rows of a scored dataset in input order (``index``; actors may finish out of order)."""
    return sorted(dataset.iter_rows(), key=lambda r: int(r["index"]))


def accuracy(rows: list[dict[str, Any]], skipped: int, predictions: Path | None) -> dict[str, Any]:
    """A classifier's ``rayseq eval`` summary of :func:`classified` rows."""
    correct = sum(r["predicted"] == r["label"] for r in rows)
    named = [{"origin": r["origin"], "label": r["label"], "predicted": r["predicted"],
              "score": round(float(r["score"]), 4)} for r in rows]
    return {
        "accuracy": round(correct / len(rows), 4) if rows else 0.0,
        "examples": len(rows),
        "skipped_records": skipped,
        **write_predictions(predictions, named, CLASSIFIED_COLUMNS),
    }


def write_predictions(path: Path | None, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> dict[str, str]:
    """``--predictions``: ``columns`` of each scored record as one JSON line, in input
    order, into the folder :func:`check_writable` checked; ``{"predictions": path}`` for
    the summary ({} when not asked)."""
    if path is None:
        return {}
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps({c: _plain(row[c]) for c in columns}, ensure_ascii=False) + "\n")
    return {"predictions": str(path)}


def check_writable(path: Path) -> None:
    """A ``--predictions`` path that cannot be written fails before any scoring, by name."""
    if path.is_dir():
        raise DataError(f"--predictions {path}: is a folder; give the path of a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"--predictions {path}: cannot create its folder ({err.strerror})") from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise DataError(f"--predictions {path}: not writable")


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
