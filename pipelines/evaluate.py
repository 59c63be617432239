"""Score an inference checkpoint on a dataset: ``rayseq eval CHECKPOINT --data PATH``.

seq2vec: accuracy (text, audio or video). seq2seq: sacrebleu BLEU and chrF on detokenized
output, plus ``bleu_tok_lc`` (lowercased, tokenized: how the Multi30k literature reports
BLEU); speech-to-text: WER and CER (``jiwer``) and exact matches; video captioning:
exact matches, BLEU and chrF. Decoding uses the
recipe's ``decode`` settings (beam size, length penalty). Records are read and checked
exactly as in training (same formats, same bad-record errors); prediction runs as Ray
Data batch inference with the checkpoint loaded once per actor.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import ray

from pipelines.config import apply_overrides, recipe_from_dict
from pipelines.errors import DataError


DECODED_COLUMNS = ("origin", "reference", "hypothesis")
"""``--predictions`` fields of translation, speech-to-text and captioning."""


def _scored_labels(probs: np.ndarray, batch: dict[str, np.ndarray], labels: list[str]) -> dict[str, np.ndarray]:
    """A classifier actor's output rows: predicted and true label names, the predicted
    label's probability, and the record's ``origin`` and ``index`` (for ``--predictions``)."""
    return {"index": batch["index"], "origin": batch["origin"], "predicted": np.array(labels)[probs.argmax(-1)],
            "score": probs.max(-1), "label": batch["label"]}


class _Score:
    """Ray Data actor: a text classifier over ``{text, label, origin, index}`` records."""

    def __init__(self, checkpoint: str, max_length: int) -> None:
        from pipelines.inference import TextClassifier

        self.classifier = TextClassifier(checkpoint)
        self.classifier.max_length = max_length  # the eval recipe's (``--set data.max_length``)
        self.known = set(self.classifier.labels)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for label, origin in zip(batch["label"], batch["origin"]):
            if label not in self.known:
                raise DataError(f"{origin}: label {label!r} was not seen in training (labels: {sorted(self.known)})")
        probs = self.classifier.probabilities(self.classifier.encode([str(t) for t in batch["text"]]))
        return _scored_labels(probs, batch, self.classifier.labels)


class _Translate:
    def __init__(self, checkpoint: str, options: dict[str, Any]) -> None:
        from pipelines.translation import Translator

        self.translator = Translator(checkpoint)
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sources = [str(x) for x in batch["source"]]
        found = self.translator.generate_ids(self.translator.encode(sources), **self.options)
        return {"index": batch["index"], "origin": batch["origin"],
                "hypothesis": np.array([self.translator.detokenize(h[0].tokens) for h in found]),
                "reference": batch["target"]}


def score_translations(checkpoint: Path, recipe, predictions: Path | None = None) -> dict[str, Any]:
    """BLEU, chrF and ``bleu_tok_lc`` of the checkpoint on ``recipe.data.valid``."""
    from pipelines.sources import check_records, read_pairs
    from pipelines.translation_data import with_index
    from pipelines.translation_metrics import translation_scores

    records = check_records(read_pairs(recipe.data, "valid"), recipe.data.on_bad_record, "eval")
    indexed = with_index(records.dataset.select_columns(["source", "target", "origin"]), records.rows)
    decode = recipe.decode
    options = {"beam_size": decode.beam_size, **decode.limits()}
    translated = indexed.map_batches(
        _Translate, fn_constructor_kwargs={"checkpoint": str(checkpoint), "options": options}, batch_size=256,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1),
    )
    rows = _in_order(translated)
    scores = translation_scores([r["hypothesis"] for r in rows], [r["reference"] for r in rows])
    return {**scores, "beam_size": decode.beam_size, "skipped_records": records.skipped,
            **write_predictions(predictions, rows, DECODED_COLUMNS)}


class _ClassifyMedia:
    """Ray Data actor: an audio or video classifier over featurized rows (``inputs`` column)."""

    def __init__(self, checkpoint: str, inputs: str) -> None:
        if inputs == "frames":
            from pipelines.video_inference import VideoClassifier as Classifier
        else:
            from pipelines.audio_inference import AudioClassifier as Classifier

        self.classifier = Classifier(checkpoint)
        self.inputs = inputs
        self.known = set(self.classifier.labels)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        unknown = [(o, lab) for o, lab in zip(batch["origin"], batch["label"]) if lab not in self.known]
        if unknown:
            raise DataError(f"{unknown[0][0]}: label {unknown[0][1]!r} is not one of the model's labels "
                            f"{self.classifier.labels}")
        return _scored_labels(self.classifier.probabilities(list(batch[self.inputs])), batch, self.classifier.labels)


class _DecodeMedia:
    """Ray Data actor: a speech recognizer or video captioner decoding featurized rows
    (``inputs`` column) with ``options``; returns hypotheses beside the ``target`` texts."""

    def __init__(self, checkpoint: str, inputs: str, target: str, options: dict[str, Any]) -> None:
        if inputs == "frames":
            from pipelines.video_inference import VideoCaptioner

            self.decode = VideoCaptioner(checkpoint).caption_clips
        else:
            from pipelines.audio_inference import SpeechRecognizer

            self.decode = SpeechRecognizer(checkpoint).transcribe_features
        self.inputs, self.target, self.options = inputs, target, options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.decode(list(batch[self.inputs]), **self.options)
        return {"index": batch["index"], "origin": batch["origin"],
                "hypothesis": np.array([o["text"] for o in outputs]), "reference": batch[self.target]}


def _decoded(checkpoint: Path, records, recipe, *, inputs: str, target: str, batch_size: int) -> list[dict[str, Any]]:
    """``{origin, reference, hypothesis}`` rows of ``records`` in input order, decoded with
    the recipe's ``decode`` beam size and length cap."""
    options = {"beam_size": recipe.decode.beam_size, "max_length": recipe.decode.max_length}
    decoded = records.dataset.map_batches(
        _DecodeMedia, fn_constructor_kwargs={"checkpoint": str(checkpoint), "inputs": inputs, "target": target,
                                             "options": options},
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1),
    )
    return _in_order(decoded)


def _in_order(dataset) -> list[dict[str, Any]]:
    """The rows of a scored dataset in input order (``index``; actors may finish out of order)."""
    return sorted(dataset.iter_rows(), key=lambda r: int(r["index"]))


def write_predictions(path: Path | None, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> dict[str, str]:
    """``--predictions``: ``columns`` of each scored record as one JSON line, in input
    order, into the folder ``evaluate_checkpoint`` checked; ``{"predictions": path}`` for
    the summary ({} when not asked)."""
    if path is None:
        return {}
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps({c: _plain(row[c]) for c in columns}, ensure_ascii=False) + "\n")
    return {"predictions": str(path)}


def _check_writable(path: Path) -> None:
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


def _featurized_validation(recipe, target: str):
    from pipelines.audio_data import featurize_audio, validation_records

    return featurize_audio(validation_records(recipe.data, target=target), recipe.data.audio, "eval",
                           recipe.data.on_bad_record)


def score_audio_classifications(checkpoint: Path, recipe, predictions: Path | None = None) -> dict[str, Any]:
    """Accuracy of an audio classifier on the recipe's validation recordings."""
    return _media_accuracy(checkpoint, _featurized_validation(recipe, "label"), "features", predictions)


def _media_accuracy(checkpoint: Path, records, inputs: str, predictions: Path | None) -> dict[str, Any]:
    scored = records.dataset.map_batches(
        _ClassifyMedia, fn_constructor_kwargs={"checkpoint": str(checkpoint), "inputs": inputs}, batch_size=128,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1),
    )
    return _accuracy(scored, records.skipped, predictions)


def _validation_clips(recipe, target: str):
    from pipelines.video_data import featurize_video, validation_records

    records = validation_records(recipe.data, target=target)
    if not records:
        raise DataError("data.valid: no validation folder to score (set data.valid or pass --data)")
    return featurize_video(records, recipe.data.video, "eval", recipe.data.on_bad_record)


def score_video_classifications(checkpoint: Path, recipe, predictions: Path | None = None) -> dict[str, Any]:
    """Accuracy of a video classifier on the recipe's validation clips."""
    return _media_accuracy(checkpoint, _validation_clips(recipe, "label"), "frames", predictions)


def score_captions(checkpoint: Path, recipe, predictions: Path | None = None) -> dict[str, Any]:
    """Exact-match rate (whitespace- and case-normalised) and BLEU of a captioner on the
    recipe's validation clips, with the recipe's ``decode`` settings."""
    from pipelines.translation_metrics import caption_scores

    records = _validation_clips(recipe, "caption")
    rows = _decoded(checkpoint, records, recipe, inputs="frames", target="caption", batch_size=64)
    scores = caption_scores([r["hypothesis"] for r in rows], [r["reference"] for r in rows])
    return {**scores, "beam_size": recipe.decode.beam_size, "skipped_records": records.skipped,
            **write_predictions(predictions, rows, DECODED_COLUMNS)}


def score_speech(checkpoint: Path, recipe, predictions: Path | None = None) -> dict[str, Any]:
    """WER, CER and exact-match rate of a speech recognizer on the recipe's validation
    recordings, with the recipe's ``decode`` settings."""
    from pipelines.speech_metrics import speech_scores

    records = _featurized_validation(recipe, "transcript")
    rows = _decoded(checkpoint, records, recipe, inputs="features", target="transcript", batch_size=128)
    scores = speech_scores([r["hypothesis"] for r in rows], [r["reference"] for r in rows])
    return {**scores, "beam_size": recipe.decode.beam_size, "skipped_records": records.skipped,
            **write_predictions(predictions, rows, DECODED_COLUMNS)}


def evaluate_checkpoint(checkpoint: Path, data: Path, *, fmt: str = "auto", overrides: list[str] | None = None,
                        predictions: Path | None = None) -> dict[str, Any]:
    """``rayseq eval``: the checkpoint's task scores on ``data``; ``predictions``: also
    write each record's prediction there (JSON lines, input order)."""
    import yaml

    from pipelines.checkpoint import load_inference
    from pipelines.runtime import init_ray
    from pipelines.tasks import task_of_checkpoint

    if predictions is not None:
        _check_writable(predictions)  # before any scoring: a bad path fails in a second, by name
    loaded = load_inference(checkpoint)
    raw = yaml.safe_load((Path(checkpoint) / "config.yaml").read_text())
    raw.setdefault("data", {}).update({"root": "", "valid": str(data), "format": fmt, "generate": None})
    raw["data"].get("audio", {}).pop("valid_takes", None)  # the training carve-out; --set may choose takes
    recipe = recipe_from_dict(apply_overrides(raw, overrides or []))

    init_ray()
    return task_of_checkpoint(checkpoint, loaded.meta).scores(loaded, recipe, predictions)


def score_classifications(loaded, recipe, predictions: Path | None = None) -> dict[str, Any]:
    """Accuracy of a loaded seq2vec checkpoint on ``recipe.data.valid``."""
    from pipelines.sources import check_records, read_split
    from pipelines.translation_data import with_index

    records = check_records(read_split(recipe.data, "valid"), recipe.data.on_bad_record, "eval")
    indexed = with_index(records.dataset.select_columns(["text", "label", "origin"]), records.rows)
    scored = indexed.map_batches(
        _Score, fn_constructor_kwargs={"checkpoint": str(loaded.path), "max_length": recipe.data.max_length},
        batch_size=512, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1),
    )
    return _accuracy(scored, records.skipped, predictions)


def _accuracy(scored, skipped: int, predictions: Path | None) -> dict[str, Any]:
    rows = _in_order(scored)
    correct = sum(r["predicted"] == r["label"] for r in rows)
    named = [{"origin": r["origin"], "label": r["label"], "predicted": r["predicted"],
              "score": round(float(r["score"]), 4)} for r in rows]
    return {
        "accuracy": round(correct / len(rows), 4) if rows else 0.0,
        "examples": len(rows),
        "skipped_records": skipped,
        **write_predictions(predictions, named, ("origin", "label", "predicted", "score")),
    }


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="inference checkpoint folder (<run>/checkpoint)")
    parser.add_argument("--data", type=Path, required=True, help="file or folder to score")
    parser.add_argument("--format", default="auto",
                        help="labeled-lines, csv, tsv, jsonl, parquet, parallel, hf, audio-folder, video-folder (default: "
                             "by extension; parallel when PATH.<source_lang> exists; audio-folder/video-folder for "
                             "audio/video models)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the checkpoint's recipe, e.g. data.text_column=sentence")
    parser.add_argument("--predictions", type=Path, metavar="FILE.jsonl",
                        help="also write every scored record's prediction, one JSON line each in input order: "
                             "origin, label, predicted, score (classifiers) or origin, reference, hypothesis")


def eval_command(args: argparse.Namespace) -> dict[str, Any]:
    return evaluate_checkpoint(args.checkpoint, args.data, fmt=args.format, overrides=args.overrides,
                               predictions=args.predictions)
