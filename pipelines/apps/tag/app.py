"""Sequence tagging: a label per token (named entities), the char-CNN + BiLSTM + CRF tagger.

    tokens -> word, case and character features -> bidirectional RNN stack -> tag scores
        -> CRF (Viterbi within the tag scheme's rules);  scored by entity-level F1
        (conlleval);  served on /tag: raw text in, tokens, tags and entities with
        character offsets out
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipelines.apps.base import App, PreparedData, ServeSpec, checked_sizes
from pipelines.apps.routes import RouteSpec
from pipelines.apps.tag.generate import ENTITIES
from pipelines.errors import DataError


class Entity(BaseModel):
    text: str
    """``input[start:end]``."""
    type: str
    """The entity type (``PER``, ``LOC``, ...)."""
    start: int
    """Character offset of its first character in the input."""
    end: int
    """Character offset just past its last character."""


class Tagged(BaseModel):
    tokens: list[str]
    """The input split into tokens."""
    tags: list[str]
    """A tag per token, in the model's ``data.tag_scheme``."""
    entities: list[Entity]


class TagResponse(BaseModel):
    outputs: list[Tagged]


TAG = RouteSpec(
    name="tag",
    answer_key="outputs",
    response=TagResponse,
    description="""Tag every token of each input text; `outputs[i]` belongs to input `i`.

Takes JSON `{"inputs": [text, ...]}`. Each text is split into tokens (words, numbers,
abbreviations such as `U.S.` or `Inc.`, every other symbol alone); each answer holds the tokens,
a tag per token in the model's tag scheme, and the entities with `start`/`end`
character offsets into the input (`text == input[start:end]`).""",
    json_doc="Texts to tag; one output per text, in the same order.",
    upload_doc="(taggers read text only)",
    json_example=("EU rejects German call to boycott British lamb .",),
)

SIZES = ("num_words", "num_chars", "num_tags")


class Tag(App):
    name = "tag"
    medium = "text"
    shapes = (("tagger", "text", ""),)
    formats = ("conll", "token-tag", "hf")
    data_options = frozenset({"tag_scheme", "tag_column"})
    meta_keys = frozenset({"tags", "tag_scheme", "num_words", "num_chars", "num_tags"})
    metric = "val_f1"
    eval_width = 7
    generators = (ENTITIES,)
    serve = ServeSpec(route=TAG)

    def __init__(self, tags: list[str] | None = None, scheme: str = "") -> None:
        self.tags = list(tags or [])
        self.scheme = scheme
        self._allowed = None

    def training_task(self, prepared: PreparedData) -> Tag:
        """This application bound to the run's tag set: the loss and the validation
        decode mask the CRF with its scheme's rules, and spans need the tag names."""
        return Tag(prepared.meta["tags"], prepared.meta["tag_scheme"])

    def _constrained(self, out):
        """The last layer's scores under the tag scheme's rules (unbound: none)."""
        from models.crf import Allowed
        from pipelines.apps.tag.predictor import allowed_mask

        k = out.emissions.size(-1)
        if self._allowed is None or len(self._allowed.start) != k:
            self._allowed = allowed_mask(self.tags, self.scheme) if self.tags else Allowed.everything(k)
        return out.constrained(self._allowed)

    # -- recipe and data --------------------------------------------------------------

    def check_recipe(self, recipe) -> None:
        from pipelines.errors import ConfigError
        from pipelines.media.sources import check_token_budget

        super().check_recipe(recipe)
        check_token_budget(recipe)
        if recipe.tokenizer.min_frequency < 1:
            raise ConfigError(f"tokenizer.min_frequency must be >= 1, got {recipe.tokenizer.min_frequency}")

    def prepare(self, recipe) -> PreparedData:
        from pipelines.apps.tag.data import prepare_tagging

        data = prepare_tagging(recipe)
        vocab = data.vocab
        sizes = {"num_words": len(vocab.words), "num_chars": len(vocab.chars), "num_tags": len(vocab.tags)}
        meta = {**sizes, "tags": vocab.tags, "tag_scheme": vocab.scheme}
        return PreparedData(data.train, data.valid, sizes, {"vocab.json": vocab.to_json()}, meta,
                            data.train_stats.batches, data.report)

    def layer_factories(self, config, sizes: dict[str, int]):
        from models.tagger import tagger_layer_factories

        return tagger_layer_factories(config, **{k: sizes[k] for k in SIZES})

    def build(self, config, sizes: dict[str, int], *, seed: int = 0, keep=None):
        from models.tagger import build_tagger

        return build_tagger(config, **{k: sizes[k] for k in SIZES}, seed=seed, keep=keep)

    # -- training ---------------------------------------------------------------------

    def step_plan(self, row: dict[str, Any], microbatches: int):
        """Row chunks, each trimmed to its longest sentence and its longest word."""
        import torch

        from pipelines.apps.objectives import tensor
        from pipelines.engine.microbatches import StepPlan

        words, cases, chars = tensor(row["tokens"]), tensor(row["cases"]), tensor(row["chars"])
        lengths, labels = tensor(row["lengths"]), tensor(row["labels"])
        plan = StepPlan([], [], [])
        for rows in torch.arange(len(lengths)).tensor_split(min(microbatches, len(lengths))):
            t = int(lengths[rows].max())
            c = max(int((chars[rows, :t] != 0).sum(-1).max()), 1)
            plan.tokens.append((words[rows, :t], cases[rows, :t], chars[rows, :t, :c]))
            plan.lengths.append(lengths[rows])
            plan.labels.append(labels[rows, :t])
        return plan

    @staticmethod
    def _lengths(targets):
        return (targets >= 0).sum(1).cpu()

    def loss(self, out, targets, label_smoothing: float):
        from models.crf import neg_log_likelihood

        return neg_log_likelihood(self._constrained(out), targets, self._lengths(targets)).sum()

    def loss_units(self, plan) -> float:
        return float(plan.examples)

    def eval_counts(self, out, targets) -> tuple[float, ...]:
        """``(loss, correct tags, tags, sentences, matched, predicted, gold entities)``."""
        from models.crf import neg_log_likelihood, viterbi
        from pipelines.media.tags import spans

        scores, lengths = self._constrained(out), self._lengths(targets)
        loss = float(neg_log_likelihood(scores, targets, lengths).sum())
        correct = matched = predicted = gold = 0
        for path, gold_ids, n in zip(viterbi(scores, lengths), targets.tolist(), lengths.tolist()):
            correct += sum(a == b for a, b in zip(path, gold_ids[:n]))
            found = set(spans([self.tags[i] for i in path])) if self.tags else set()
            truth = set(spans([self.tags[i] for i in gold_ids[:n]])) if self.tags else set()
            matched, predicted, gold = matched + len(found & truth), predicted + len(found), gold + len(truth)
        return (loss, float(correct), float(lengths.sum()), float(len(lengths)), float(matched), float(predicted),
                float(gold))

    def validation_metrics(self, loss_sum: float, correct: float, count: float, *more: float) -> dict[str, float]:
        sentences, matched, predicted, gold = more
        return {"val_loss": loss_sum / sentences,
                "val_f1": 100 * 2 * matched / (predicted + gold) if predicted + gold else 0.0,
                "val_precision": 100 * matched / predicted if predicted else 0.0,
                "val_recall": 100 * matched / gold if gold else 0.0,
                "val_tag_accuracy": correct / count, "val_examples": int(sentences)}

    # -- checkpoints, inference and scoring -------------------------------------------

    def missing_files(self, path: Path) -> str | None:
        return None if (path / "vocab.json").is_file() else "vocab.json"

    def sizes_from_meta(self, path: Path, meta: dict[str, Any]) -> dict[str, int]:
        sizes = checked_sizes(path, meta, SIZES)
        tags = meta.get("tags")
        if not isinstance(tags, list) or len(tags) != sizes["num_tags"]:
            raise DataError(f"{path}/meta.json: 'tags' must list num_tags={sizes['num_tags']} tags")
        return sizes

    def predictor(self, loaded, *, budget: int | None = None):
        from pipelines.apps.tag.predictor import TagPredictor

        return TagPredictor(loaded, budget=budget)

    def score(self, checkpoint: Path, recipe, predictions: Path | None = None, *,
              device: str = "cpu") -> dict[str, Any]:
        """Entity-level micro precision, recall and F1 (x 100) and per type on
        ``recipe.data.valid``, read and checked as in training; with ``predictions``,
        each sentence's tokens, gold and predicted tags (``data.tag_scheme``)."""
        from pipelines.apps.tag.data import read_tagged
        from pipelines.checkpoint import load_predictor
        from pipelines.media.sources import check_records, origin_order
        from pipelines.scoring.entities import EntityCounts

        records = check_records(read_tagged(recipe.data, "valid"), recipe.data.on_bad_record, "eval")
        sentences = sorted(records.dataset.iter_rows(), key=lambda r: origin_order(r["origin"]))
        predictor = load_predictor(checkpoint, device=device)
        predictor.max_length = 1 << 30  # score every token of every sentence
        answers = predictor.run(predictor.token_rows([list(s["tokens"]) for s in sentences],
                                                     [s["origin"] for s in sentences]))
        counts = EntityCounts()
        for sentence, answer in zip(sentences, answers):
            counts.add(list(sentence["tags"]), answer["tags"])
        report = {**counts.report(), "skipped_records": records.skipped}
        if predictions is not None:
            with predictions.open("w", encoding="utf-8") as out:
                for sentence, answer in zip(sentences, answers):
                    out.write(json.dumps({"origin": sentence["origin"], "tokens": list(sentence["tokens"]),
                                          "gold": list(sentence["tags"]), "predicted": answer["tags"]},
                                         ensure_ascii=False) + "\n")
            report["predictions"] = str(predictions)
        return report


APP = Tag()
