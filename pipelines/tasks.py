"""What the training engine does differently per model kind, behind one registry.

    task = TASKS[recipe.model.kind]

A task knows how its data is prepared (and what of it goes into the checkpoint), the
model builder, how a bucketed batch row becomes a step plan (what the first stage feeds
in, the lengths every stage needs, the targets the last stage scores), the loss, its
normalisation, and the validation counts. Stage plans, schedules,
transport and the worker loop are the same for every kind.

    kind      first-stage input            lengths              targets         loss per
    seq2vec   tokens (B, T)                (B,)                 labels (B,)     example
    seq2seq   (src (B, S), tgt_in (B, T))  ((B,) src, (B,) tgt)  tgt_out (B, T)  target token
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig
from models.layers import PAD_ID
from pipelines.errors import DataError
from pipelines.schedules import StepPlan, split_batch


@dataclass
class PreparedData:
    """What the training driver needs from a task's data preparation."""

    train: Any
    """Bucketed, shuffled training batches (a materialized ``ray.data.Dataset``)."""
    valid: Any
    """Bucketed validation batches, or None."""
    sizes: dict[str, int]
    """The model builder's size arguments (vocabularies, labels)."""
    files: dict[str, str]
    """Files the inference checkpoint carries (tokenizers)."""
    meta: dict[str, Any]
    """``meta.json`` fields beyond kind and task."""
    batches: int
    report: dict[str, Any] = field(default_factory=dict)


def _tensor(value: Any) -> torch.Tensor:
    # np.array copies: Ray hands out read-only views of the object store.
    return torch.from_numpy(np.array(value, dtype=np.int64))


class ClassificationTask:
    """seq2vec: a label per sequence; loss summed per example."""

    kind = "seq2vec"
    route = "classify"
    """The serving route (CONTRACT.md) its checkpoints answer; ``meta.json``'s ``task``."""
    metric = "val_accuracy"

    def prepare(self, recipe) -> PreparedData:
        from pipelines.checkpoint import classifier_files
        from pipelines.text_data import prepare_text_classification

        data = prepare_text_classification(recipe)
        files, meta = classifier_files(data.tokenizer, data.labels)
        sizes = {"vocab_size": data.tokenizer.get_vocab_size(), "num_labels": len(data.labels)}
        return PreparedData(data.train, data.valid, sizes, files, meta, data.train_stats.batches, data.report)

    def layer_factories(self, config: ModelConfig, sizes: dict[str, int]) -> list[Callable[[], nn.Module]]:
        from models.seq2vec import seq2vec_layer_factories

        return seq2vec_layer_factories(config, vocab_size=sizes["vocab_size"], num_labels=sizes["num_labels"])

    def build(self, config: ModelConfig, sizes: dict[str, int], *, seed: int = 0, keep=None) -> nn.Module:
        from models.seq2vec import build_seq2vec

        return build_seq2vec(config, vocab_size=sizes["vocab_size"], num_labels=sizes["num_labels"],
                             seed=seed, keep=keep)

    def step_plan(self, row: dict[str, Any], microbatches: int) -> StepPlan:
        return split_batch(_tensor(row["tokens"]), _tensor(row["lengths"]), _tensor(row["labels"]), microbatches)

    def loss(self, out: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        return F.cross_entropy(out, targets, reduction="sum", label_smoothing=label_smoothing)

    def loss_units(self, plan: StepPlan) -> float:
        return float(plan.examples)

    def eval_counts(self, out: torch.Tensor, targets: torch.Tensor) -> tuple[float, float, float]:
        """``(summed loss, correct, scored)`` of one micro-batch."""
        loss = float(F.cross_entropy(out, targets, reduction="sum"))
        return loss, float((out.argmax(-1) == targets).sum()), float(len(targets))

    def validation_metrics(self, loss_sum: float, correct: float, count: float) -> dict[str, float]:
        """The validation entry from :meth:`eval_counts` summed over the split (count > 0)."""
        return {"val_loss": loss_sum / count, "val_accuracy": correct / count, "val_examples": int(count)}

    def final_scores(self, checkpoint, recipe) -> dict[str, Any]:
        """Scores beyond the engine's validation pass, for the end-of-training summary."""
        return {}

    def sizes_from_meta(self, path, meta: dict[str, Any]) -> dict[str, int]:
        """The builder's size arguments from a checkpoint's ``meta.json``, checked."""
        labels = meta.get("labels")
        if not isinstance(labels, list) or len(labels) < 2 or not isinstance(meta.get("vocab_size"), int):
            raise DataError(f"{path}/meta.json: needs 'labels' (2 or more) and an integer 'vocab_size'")
        return {"vocab_size": meta["vocab_size"], "num_labels": len(labels)}


class TranslationTask:
    """seq2seq: a token sequence per sequence; loss summed per target token (padding
    ignored), as OpenNMT and fairseq normalise it."""

    kind = "seq2seq"
    route = "generate"
    metric = "val_token_accuracy"

    def prepare(self, recipe) -> PreparedData:
        from pipelines.checkpoint import translator_files
        from pipelines.translation_data import prepare_translation

        data = prepare_translation(recipe)
        files, meta = translator_files(data.tokenizers, recipe)
        sizes = dict(zip(("src_vocab_size", "tgt_vocab_size"), data.tokenizers.vocab_sizes))
        return PreparedData(data.train, data.valid, sizes, files, meta, data.train_stats.batches, data.report)

    def layer_factories(self, config: ModelConfig, sizes: dict[str, int]) -> list[Callable[[], nn.Module]]:
        from models.seq2seq import seq2seq_layer_factories

        return seq2seq_layer_factories(config, src_vocab_size=sizes["src_vocab_size"],
                                       tgt_vocab_size=sizes["tgt_vocab_size"])

    def build(self, config: ModelConfig, sizes: dict[str, int], *, seed: int = 0, keep=None) -> nn.Module:
        from models.seq2seq import build_seq2seq

        return build_seq2seq(config, src_vocab_size=sizes["src_vocab_size"], tgt_vocab_size=sizes["tgt_vocab_size"],
                             seed=seed, keep=keep)

    def step_plan(self, row: dict[str, Any], microbatches: int) -> StepPlan:
        """Row chunks, each trimmed to its own longest source and target (dynamic unrolling)."""
        src, src_len = _tensor(row["src_tokens"]), _tensor(row["src_lengths"])
        tgt_in, tgt_out, tgt_len = _tensor(row["tgt_in"]), _tensor(row["tgt_out"]), _tensor(row["tgt_lengths"])
        plan = StepPlan([], [], [])
        for rows in torch.arange(len(src_len)).tensor_split(min(microbatches, len(src_len))):
            s, t = int(src_len[rows].max()), int(tgt_len[rows].max())
            plan.tokens.append((src[rows, :s], tgt_in[rows, :t]))
            plan.lengths.append((src_len[rows], tgt_len[rows]))
            plan.labels.append(tgt_out[rows, :t])
        return plan

    def loss(self, out: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        return F.cross_entropy(out.reshape(-1, out.size(-1)), targets.reshape(-1), ignore_index=PAD_ID,
                               reduction="sum", label_smoothing=label_smoothing)

    def loss_units(self, plan: StepPlan) -> float:
        return float(sum(int(tgt.sum()) for _, tgt in plan.lengths))

    def eval_counts(self, out: torch.Tensor, targets: torch.Tensor) -> tuple[float, float, float]:
        valid = targets != PAD_ID
        loss = float(self.loss(out, targets, 0.0))
        return loss, float(((out.argmax(-1) == targets) & valid).sum()), float(valid.sum())

    def validation_metrics(self, loss_sum: float, correct: float, count: float) -> dict[str, float]:
        """Per target token; perplexity capped so a diverged run still reports a number."""
        return {"val_loss": loss_sum / count, "val_token_accuracy": correct / count,
                "val_perplexity": math.exp(min(loss_sum / count, 50.0)), "val_tokens": int(count)}

    def final_scores(self, checkpoint, recipe) -> dict[str, Any]:
        """BLEU, chrF and ``bleu_tok_lc`` of the decoded validation split (recipe's beam)."""
        if not recipe.data.valid:
            return {}
        from pipelines.evaluate import score_translations

        scores = score_translations(checkpoint, recipe)
        print(f"validation: BLEU {scores['bleu']}, chrF {scores['chrf']}, bleu_tok_lc {scores['bleu_tok_lc']} "
              f"(beam {scores['beam_size']}, {scores['examples']} sentences)", flush=True)
        return {f"val_{k}": scores[k] for k in ("bleu", "chrf", "bleu_tok_lc")}

    def sizes_from_meta(self, path, meta: dict[str, Any]) -> dict[str, int]:
        if not all(isinstance(meta.get(k), int) for k in ("src_vocab_size", "tgt_vocab_size")):
            raise DataError(f"{path}/meta.json: needs integer 'src_vocab_size' and 'tgt_vocab_size'")
        return {"src_vocab_size": meta["src_vocab_size"], "tgt_vocab_size": meta["tgt_vocab_size"]}


TASKS = {task.kind: task for task in (ClassificationTask(), TranslationTask())}


def task_for(config: ModelConfig) -> ClassificationTask | TranslationTask:
    return TASKS[config.kind]


def task_of_checkpoint(path, meta: dict[str, Any]) -> ClassificationTask | TranslationTask:
    """The task a checkpoint's ``meta.json`` names (its ``kind``)."""
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if kind not in TASKS:
        raise DataError(f"{path}/meta.json: 'kind' must be one of {', '.join(TASKS)}, got {kind!r}")
    return TASKS[kind]
