"""Score an inference checkpoint on a dataset: ``rayseq eval CHECKPOINT --data PATH``.

seq2vec: accuracy. seq2seq: sacrebleu BLEU and chrF on detokenized output, plus
``bleu_tok_lc`` (lowercased, tokenized: how the Multi30k literature reports BLEU), with
the recipe's ``decode`` settings (beam size, length penalty). Records are read and
checked exactly as in training (same formats, same bad-record errors); prediction runs
as Ray Data batch inference with the checkpoint loaded once per actor.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import ray

from pipelines.config import apply_overrides, recipe_from_dict


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


def evaluate_checkpoint(checkpoint: Path, data: Path, *, fmt: str = "auto", overrides: list[str] | None = None) -> dict[str, Any]:
    import yaml

    from pipelines.checkpoint import load_inference
    from pipelines.runtime import init_ray

    loaded = load_inference(checkpoint)
    raw = yaml.safe_load((Path(checkpoint) / "config.yaml").read_text())
    raw.setdefault("data", {}).update({"root": "", "valid": str(data), "format": fmt, "generate": None})
    recipe = recipe_from_dict(apply_overrides(raw, overrides or []))

    init_ray()
    if loaded.meta["kind"] == "seq2seq":
        return score_translations(Path(checkpoint), recipe)
    return score_classifications(loaded, recipe)


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
    predicted, labels = [], []
    for part in scored.iter_batches(batch_size=None, batch_format="numpy"):
        predicted.append(part["predicted"])
        labels.append(part["label"])
    predicted, labels = np.concatenate(predicted), np.concatenate(labels)
    return {
        "accuracy": round(float((predicted == labels).mean()), 4),
        "examples": int(len(labels)),
        "skipped_records": records.skipped,
    }


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="inference checkpoint folder (<run>/checkpoint)")
    parser.add_argument("--data", type=Path, required=True, help="file or folder to score")
    parser.add_argument("--format", default="auto",
                        help="labeled-lines, csv, tsv, jsonl, parquet, parallel, hf (default: by extension; "
                             "parallel when PATH.<source_lang> exists)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the checkpoint's recipe, e.g. data.text_column=sentence")


def eval_command(args: argparse.Namespace) -> dict[str, Any]:
    return evaluate_checkpoint(args.checkpoint, args.data, fmt=args.format, overrides=args.overrides)
