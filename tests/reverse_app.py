"""A tiny application defined outside ``pipelines/``: reverse a digit sequence.

It proves the structure is open (issue 19): nothing in ``pipelines/``, ``models/`` or
``serving/`` names it. A recipe selects it with ``app: tests.reverse_app`` (an importable
module defining ``APP``), and from there training (any ``parallel.pp``), ``rayseq eval``,
``rayseq serve`` and the ``/generate`` route work as for the built-in applications.

What it brings of its own, as a new application would: a data format (``digit-lines``:
one sequence of digits a line, ``3 1 4``; the target is the line reversed), its checks
(a line with anything but digits is a bad record naming file and line), a dataset
generator, a predictor (the shared ``Decoder`` base over token rows), and a score
(exact match). It borrows the shared pieces by job: text-pair tokenizing and bucketing
(``pipelines.media.pairs``), the seq2seq objective (``pipelines.apps.objectives.Tokens``),
the encoder-decoder builder (``models.seq2seq``) and the generate route.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

from pipelines.apps.base import App, DatasetGenerator, PreparedData, ServeSpec, checked_sizes, has_tokenizer
from pipelines.apps.objectives import Tokens
from pipelines.apps.routes import GENERATE
from pipelines.inference.media import TokenRows
from pipelines.inference.predictors import Decoder
from pipelines.media.tokenization import JOINT_TOKENIZER, decode, load_tokenizer

FORMAT = "digit-lines"


def read_digit_lines(path: Path) -> list[dict[str, str]]:
    """``{source, target, origin, error}`` per line; ``error`` names what is wrong."""
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        digits = line.split()
        error = "" if digits and all(d.isdigit() and len(d) == 1 for d in digits) else "not a line of digits"
        records.append({"source": " ".join(digits), "target": " ".join(reversed(digits)),
                        "origin": f"{path}:{number}", "error": error})
    return records


def write_digit_lines(out_dir: Path, *, size: int, seed: int) -> Path:
    """``train.txt`` (``size`` lines) and ``valid.txt`` (``size // 4``), 1-8 digits a line."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for name, count in (("train.txt", size), ("valid.txt", max(size // 4, 1))):
        lines = [" ".join(str(rng.randrange(10)) for _ in range(rng.randint(1, 8))) for _ in range(count)]
        (out_dir / name).write_text("".join(line + "\n" for line in lines))
    return out_dir


def _generator_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)


GENERATOR = DatasetGenerator(
    name="reverse-digits", help="lines of digits to reverse (tests/reverse_app.py)",
    write=lambda data, root: write_digit_lines(root, size=data.generate.size, seed=data.generate.seed),
    add_arguments=_generator_arguments,
    command=lambda args: {"output": str(write_digit_lines(args.out_dir, size=args.size, seed=args.seed))},
)


class Reverser(TokenRows, Decoder):
    """Rows are token ids of the digit line; answers ``{"text": reversed digits, "score"}``."""

    def __init__(self, loaded, *, budget: int | None = None) -> None:
        super().__init__(loaded, budget=budget)
        self.source_tokenizer = load_tokenizer((loaded.path / JOINT_TOKENIZER).read_text())

    def detokenize(self, tokens: list[int]) -> str:
        return decode(self.source_tokenizer, tokens)


class ReverseDigits(Tokens, App):
    name = "reverse_digits"
    medium = "text"
    shapes = (("seq2seq", "text", "attention"),)  # the model it trains; selected by ``app:``, not by shape
    formats = (FORMAT,)
    meta_keys = frozenset({"src_vocab_size", "tgt_vocab_size"})
    generators = (GENERATOR,)
    serve = ServeSpec(route=GENERATE, streaming=True)

    def _split(self, recipe, which: str):
        from pipelines.media.sources import check_records, records_dataset, resolve

        path = resolve(recipe.data.root, getattr(recipe.data, which))
        return check_records(records_dataset(read_digit_lines(path)), recipe.data.on_bad_record, which)

    def prepare(self, recipe) -> PreparedData:
        from pipelines.media.pairs import prepare_pairs
        from pipelines.media.tokenization import translation_tokenizer_files

        valid = self._split(recipe, "valid") if recipe.data.valid else None
        data = prepare_pairs(recipe, self._split(recipe, "train"), valid)
        sizes = dict(zip(("src_vocab_size", "tgt_vocab_size"), data.tokenizers.vocab_sizes))
        return PreparedData(data.train, data.valid, sizes, translation_tokenizer_files(data.tokenizers), dict(sizes),
                            data.train_stats.batches, data.report)

    def encoder_source(self, sizes: dict[str, int]):
        from models.seq2seq import source_tokens

        return source_tokens(sizes["src_vocab_size"])

    def missing_files(self, path: Path) -> str | None:
        return has_tokenizer(path)

    def sizes_from_meta(self, path: Path, meta: dict[str, Any]) -> dict[str, int]:
        return checked_sizes(path, meta, ("src_vocab_size", "tgt_vocab_size"))

    def predictor(self, loaded, *, budget: int | None = None) -> Reverser:
        return Reverser(loaded, budget=budget)

    def score(self, checkpoint: Path, recipe, predictions: Path | None = None, *,
              device: str = "cpu") -> dict[str, Any]:
        """Exact match of the decoded validation lines (greedy)."""
        from pipelines.media.sources import with_index
        from pipelines.scoring.records import DECODED_COLUMNS, decoded, write_predictions

        records = self._split(recipe, "valid")
        indexed = with_index(records.dataset, records.rows)
        rows = decoded(checkpoint, indexed, inputs="source", target="target", encoded=True,
                       options={"beam_size": 1}, device=device)
        exact = sum(r["hypothesis"] == r["reference"] for r in rows)
        return {"exact_match": round(exact / len(rows), 4), "examples": len(rows),
                "skipped_records": records.skipped, **write_predictions(predictions, rows, DECODED_COLUMNS)}


APP = ReverseDigits()
