"""``rayseq eval`` of a summarizer: ROUGE-1/2/L F1 with stemming (``rouge-score``, as the
DialogSum paper reports it) of the decoded validation split, with the recipe's ``decode``
(beam, ``min_length``, ``no_repeat_ngram``, ``alpha``).

Sources are cut at ``data.max_length`` words, as in training, and the cut ones counted
(``truncated_sources``); ``--predictions`` writes each summary with its reference(s)
and its own ROUGE. ``data.reference_columns`` names more references of each example
(DialogSum's test file has three): scores are then the mean over them, and the best.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.config import Recipe


def evaluate(checkpoint: Path, recipe: Recipe, predictions: Path | None = None, *,
             device: str = "cpu") -> dict[str, Any]:
    from pipelines.apps.summarize.words import Words
    from pipelines.media.sources import check_records, read_pairs, with_index
    from pipelines.media.tokenization import load_tokenizer
    from pipelines.scoring.records import decoded, write_predictions
    from pipelines.scoring.rouge import example_rouge, rouge_scores

    more = tuple(recipe.data.reference_columns)
    records = check_records(read_pairs(recipe.data, "valid", more), recipe.data.on_bad_record, "eval")
    extra = [f"reference{i}" for i in range(1, len(more) + 1)]
    indexed = with_index(records.dataset.select_columns(["source", "target", "origin", *extra]), records.rows)
    decode = recipe.decode
    rows = decoded(checkpoint, indexed, inputs="source", target="target", encoded=True, batch_size=64,
                   options={"beam_size": decode.beam_size, **decode.limits()}, device=device)
    inputs = {int(r["index"]): r for r in indexed.select_columns(["index", "source", *extra]).iter_rows()}
    references = [[r["reference"], *(inputs[int(r["index"])][c] for c in extra)] for r in rows]
    hypotheses = [r["hypothesis"] for r in rows]
    scores = rouge_scores(hypotheses, references)
    words = Words(load_tokenizer((Path(checkpoint) / "tokenizer.json").read_text()))
    cut = sum(len(words.split(r["source"])) > recipe.data.max_length for r in inputs.values())
    summaries = [{"origin": r["origin"], "reference": refs if extra else r["reference"], "hypothesis": r["hypothesis"],
                  **example_rouge(r["hypothesis"], refs)} for r, refs in zip(rows, references)]
    return {**scores, "beam_size": decode.beam_size, "min_length": decode.min_length,
            "no_repeat_ngram": decode.no_repeat_ngram, "summary_words": _mean_words(words, hypotheses),
            "reference_words": _mean_words(words, [r[0] for r in references]), "truncated_sources": cut,
            "skipped_records": records.skipped,
            **write_predictions(predictions, summaries, ("origin", "reference", "hypothesis", "rouge1", "rouge2",
                                                          "rougeL"))}


def _mean_words(words, texts: list[str]) -> float:
    """Mean tokens a text (words and marks, as the model counts them)."""
    return round(sum(len(words.split(t)) for t in texts) / max(len(texts), 1), 1)
