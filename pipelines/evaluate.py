"""Score an inference checkpoint on a dataset: ``rayseq eval CHECKPOINT --data PATH``.

The checkpoint's application scores it (``App.score``): accuracy for classifiers;
sacrebleu BLEU, chrF and ``bleu_tok_lc`` for translation; WER, CER and exact matches
for speech-to-text; exact matches, BLEU and chrF for captioning. Decoding uses the
recipe's ``decode`` settings (beam size, length penalty). Records are read and checked
exactly as in training (same formats, same bad-record errors); prediction runs as Ray
Data batch inference with the checkpoint's predictor loaded once per actor
(``pipelines.scoring.records``). ``--device cuda`` runs the model on a GPU: the actors
reserve one each, and applications that score in this process use ``--device`` as given.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from pipelines import apps
from pipelines.checkpoint import load_inference
from pipelines.config import apply_overrides, recipe_from_dict
from pipelines.devices import add_device_argument, checked_device
from pipelines.runtime import init_ray
from pipelines.scoring.records import check_writable


def evaluate_checkpoint(checkpoint: Path, data: Path, *, fmt: str = "auto", overrides: list[str] | None = None,
                        predictions: Path | None = None, device: str = "cpu") -> dict[str, Any]:
    """``rayseq eval``: the checkpoint's application scores on ``data`` with its model on
    ``device`` (``pipelines.devices``); ``predictions``: also write each record's
    prediction there (JSON lines, input order)."""
    device = checked_device(device)  # no GPU here: one line naming --device, before any loading
    if predictions is not None:
        check_writable(predictions)  # before any scoring: a bad path fails in a second, by name
    loaded = load_inference(checkpoint)  # a bad checkpoint fails here, naming the file, not in an actor
    raw = yaml.safe_load((Path(checkpoint) / "config.yaml").read_text())
    # The file to score is the validation split, in --format: not a carve of data.train.
    raw.setdefault("data", {}).update({"root": "", "valid": str(data), "format": fmt, "generate": None,
                                       "valid_format": "", "valid_fraction": 0.0})
    loaded.app.eval_data(raw)
    recipe = recipe_from_dict(apply_overrides(raw, overrides or []))

    init_ray()
    return apps.app_for(recipe).score(Path(checkpoint), recipe, predictions, device=device)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="inference checkpoint folder (<run>/checkpoint)")
    parser.add_argument("--data", type=Path, required=True, help="file or folder to score")
    parser.add_argument("--format", default="auto",
                        help=f"{', '.join(apps.data_formats())} (default: by extension; parallel when "
                             "PATH.<source_lang> exists; audio-folder/video-folder for audio/video models)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the checkpoint's recipe, e.g. data.text_column=sentence")
    parser.add_argument("--predictions", type=Path, metavar="FILE.jsonl",
                        help="also write every scored record's prediction, one JSON line each in input order: "
                             "origin, label, predicted, score (classifiers) or origin, reference, hypothesis")
    add_device_argument(parser)


def eval_command(args: argparse.Namespace) -> dict[str, Any]:
    return evaluate_checkpoint(args.checkpoint, args.data, fmt=args.format, overrides=args.overrides,
                               predictions=args.predictions, device=args.device)
