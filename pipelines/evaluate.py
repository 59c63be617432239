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
from pathlib import Path
from typing import Any

import numpy as np
import ray

from pipelines.config import apply_overrides, recipe_from_dict
from pipelines.errors import DataError


class _Score:
    def __init__(self, checkpoint: str) -> None:
        from pipelines.inference import TextClassifier

        self.classifier = TextClassifier(checkpoint)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        probs = self.classifier.probabilities([list(x) for x in batch["ids"]])
        return {"predicted": probs.argmax(-1), "label": batch["label"]}


class _Translate:
    def __init__(self, checkpoint: str, options: dict[str, Any]) -> None:
        from pipelines.translation import Translator

        self.translator = Translator(checkpoint)
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sources = [str(x) for x in batch["source"]]
        found = self.translator.generate_ids(self.translator.encode(sources), **self.options)
        return {"index": batch["index"], "hypothesis": np.array([self.translator.detokenize(h[0].tokens) for h in found]),
                "target": batch["target"]}


def score_translations(checkpoint: Path, recipe) -> dict[str, Any]:
    """BLEU, chrF and ``bleu_tok_lc`` of the checkpoint on ``recipe.data.valid``."""
    from pipelines.sources import check_records, read_pairs
    from pipelines.translation_data import with_index
    from pipelines.translation_metrics import translation_scores

    records = check_records(read_pairs(recipe.data, "valid"), recipe.data.on_bad_record, "eval")
    indexed = with_index(records.dataset.select_columns(["source", "target"]), records.rows)
    decode = recipe.decode
    options = {"beam_size": decode.beam_size, "alpha": decode.alpha, "max_length": decode.max_length,
               "max_length_ratio": decode.max_length_ratio}
    translated = indexed.map_batches(
        _Translate, fn_constructor_kwargs={"checkpoint": str(checkpoint), "options": options}, batch_size=256,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1),
    )
    rows = sorted(translated.iter_rows(), key=lambda r: int(r["index"]))
    scores = translation_scores([r["hypothesis"] for r in rows], [r["target"] for r in rows])
    return {**scores, "beam_size": decode.beam_size, "skipped_records": records.skipped}


class _ClassifyMedia:
    """Ray Data actor: an audio or video classifier over featurized rows (``inputs`` column)."""

    def __init__(self, checkpoint: str, inputs: str) -> None:
        if inputs == "frames":
            from pipelines.video_inference import VideoClassifier as Classifier
        else:
            from pipelines.audio_inference import AudioClassifier as Classifier

        self.classifier = Classifier(checkpoint)
        self.inputs = inputs
        self.ids = {name: i for i, name in enumerate(self.classifier.labels)}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        unknown = [(o, lab) for o, lab in zip(batch["origin"], batch["label"]) if lab not in self.ids]
        if unknown:
            raise DataError(f"{unknown[0][0]}: label {unknown[0][1]!r} is not one of the model's labels "
                            f"{self.classifier.labels}")
        probs = self.classifier.probabilities(list(batch[self.inputs]))
        return {"predicted": probs.argmax(-1), "label": np.array([self.ids[lab] for lab in batch["label"]])}


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
        return {"index": batch["index"], "hypothesis": np.array([o["text"] for o in outputs]),
                "reference": batch[self.target]}


def _decoded(checkpoint: Path, records, recipe, *, inputs: str, target: str,
             batch_size: int) -> tuple[list[str], list[str]]:
    """``(hypotheses, references)`` of ``records`` in input order, decoded with the recipe's
    ``decode`` beam size and length cap."""
    options = {"beam_size": recipe.decode.beam_size, "max_length": recipe.decode.max_length}
    decoded = records.dataset.map_batches(
        _DecodeMedia, fn_constructor_kwargs={"checkpoint": str(checkpoint), "inputs": inputs, "target": target,
                                             "options": options},
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1),
    )
    rows = sorted(decoded.iter_rows(), key=lambda r: int(r["index"]))
    return [r["hypothesis"] for r in rows], [r["reference"] for r in rows]


def _featurized_validation(recipe, target: str):
    from pipelines.audio_data import featurize_audio, validation_records

    return featurize_audio(validation_records(recipe.data, target=target), recipe.data.audio, "eval",
                           recipe.data.on_bad_record)


def score_audio_classifications(checkpoint: Path, recipe) -> dict[str, Any]:
    """Accuracy of an audio classifier on the recipe's validation recordings."""
    return _media_accuracy(checkpoint, _featurized_validation(recipe, "label"), "features")


def _media_accuracy(checkpoint: Path, records, inputs: str) -> dict[str, Any]:
    scored = records.dataset.map_batches(
        _ClassifyMedia, fn_constructor_kwargs={"checkpoint": str(checkpoint), "inputs": inputs}, batch_size=128,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1),
    )
    return _accuracy(scored, records.skipped)


def _validation_clips(recipe, target: str):
    from pipelines.video_data import featurize_video, validation_records

    records = validation_records(recipe.data, target=target)
    if not records:
        raise DataError("data.valid: no validation folder to score (set data.valid or pass --data)")
    return featurize_video(records, recipe.data.video, "eval", recipe.data.on_bad_record)


def score_video_classifications(checkpoint: Path, recipe) -> dict[str, Any]:
    """Accuracy of a video classifier on the recipe's validation clips."""
    return _media_accuracy(checkpoint, _validation_clips(recipe, "label"), "frames")


def score_captions(checkpoint: Path, recipe) -> dict[str, Any]:
    """Exact-match rate (whitespace- and case-normalised) and BLEU of a captioner on the
    recipe's validation clips, with the recipe's ``decode`` settings."""
    from pipelines.translation_metrics import caption_scores

    records = _validation_clips(recipe, "caption")
    scores = caption_scores(*_decoded(checkpoint, records, recipe, inputs="frames", target="caption", batch_size=64))
    return {**scores, "beam_size": recipe.decode.beam_size, "skipped_records": records.skipped}


def score_speech(checkpoint: Path, recipe) -> dict[str, Any]:
    """WER, CER and exact-match rate of a speech recognizer on the recipe's validation
    recordings, with the recipe's ``decode`` settings."""
    from pipelines.speech_metrics import speech_scores

    records = _featurized_validation(recipe, "transcript")
    scores = speech_scores(*_decoded(checkpoint, records, recipe, inputs="features", target="transcript",
                                     batch_size=128))
    return {**scores, "beam_size": recipe.decode.beam_size, "skipped_records": records.skipped}


def evaluate_checkpoint(checkpoint: Path, data: Path, *, fmt: str = "auto", overrides: list[str] | None = None) -> dict[str, Any]:
    import yaml

    from pipelines.checkpoint import load_inference
    from pipelines.runtime import init_ray
    from pipelines.tasks import task_of_checkpoint

    loaded = load_inference(checkpoint)
    raw = yaml.safe_load((Path(checkpoint) / "config.yaml").read_text())
    raw.setdefault("data", {}).update({"root": "", "valid": str(data), "format": fmt, "generate": None})
    raw["data"].get("audio", {}).pop("valid_takes", None)  # the training carve-out; --set may choose takes
    recipe = recipe_from_dict(apply_overrides(raw, overrides or []))

    init_ray()
    return task_of_checkpoint(checkpoint, loaded.meta).scores(loaded, recipe)


def score_classifications(loaded, recipe) -> dict[str, Any]:
    """Accuracy of a loaded seq2vec checkpoint on ``recipe.data.valid``."""
    from pipelines.sources import check_records, read_split
    from pipelines.text_data import featurize
    from pipelines.tokenization import load_tokenizer

    records = check_records(read_split(recipe.data, "valid"), recipe.data.on_bad_record, "eval")
    features = featurize(records.dataset, load_tokenizer(loaded.tokenizer_json), loaded.labels, recipe.data.max_length)
    scored = features.map_batches(
        _Score, fn_constructor_kwargs={"checkpoint": str(loaded.path)}, batch_size=512,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1),
    )
    return _accuracy(scored, records.skipped)


def _accuracy(scored, skipped: int) -> dict[str, Any]:
    predicted, labels = [], []
    for part in scored.iter_batches(batch_size=None, batch_format="numpy"):
        predicted.append(part["predicted"])
        labels.append(part["label"])
    predicted, labels = np.concatenate(predicted), np.concatenate(labels)
    return {
        "accuracy": round(float((predicted == labels).mean()), 4),
        "examples": int(len(labels)),
        "skipped_records": skipped,
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


def eval_command(args: argparse.Namespace) -> dict[str, Any]:
    return evaluate_checkpoint(args.checkpoint, args.data, fmt=args.format, overrides=args.overrides)
