"""Translation data: the recipe's pairs (``parallel`` files, or csv/tsv/jsonl/parquet/hf
columns), read and checked (``pipelines.media.sources``), then tokenized and bucketed
like any text pairs (``pipelines.media.pairs``)."""

from __future__ import annotations

import logging
import time

from pipelines.config import Recipe
from pipelines.media.pairs import PreparedPairs, check_target_budget, prepare_pairs
from pipelines.media.sources import check_records, read_pairs

log = logging.getLogger(__name__)


def prepare_translation(recipe: Recipe) -> PreparedPairs:
    """Read, check, tokenize and bucket the recipe's translation data (once, in the driver)."""
    data = recipe.data
    check_target_budget(recipe)  # before any reading
    if recipe.tokenizer.lowercase:
        log.warning("tokenizer.lowercase is true: translations will come out lowercase (set it false for cased output)")
    started = time.perf_counter()
    train = check_records(read_pairs(data, "train"), data.on_bad_record, "train")
    valid = check_records(read_pairs(data, "valid"), data.on_bad_record, "valid") if data.valid else None
    read_s = round(time.perf_counter() - started, 3)
    prepared = prepare_pairs(recipe, train, valid)
    prepared.stage_s = {"read": read_s, **prepared.stage_s}
    return prepared
