"""Training objectives shared by applications of one model shape: how a bucketed batch
row becomes a step plan (what the first stage feeds in, the lengths every stage needs,
the targets the last stage scores), the loss, its normalisation and the validation
counts. An application mixes in the one that fits its shape::

    objective   first-stage input            lengths               targets         loss per
    Labels      inputs (B, T[, ...])         (B,)                  labels (B,)     example
    Tokens      (src (B, S), tgt_in (B, T))  ((B,) src, (B,) tgt)  tgt_out (B, T)  target token
    CTC         frames (B, 4S, F)            (B,)                  [steps | y]     target token

Inputs are token ids ``(B, T)`` int64 for text, log-mel frames ``(B, 4T, n_mels)``
float32 for audio (lengths in the front end's subsampled steps ``T``,
``models.frontend``), RGB frames ``(B, T, size, size, 3)`` uint8 for video (one step
per frame) and images (one frame, ``T = 1``): :data:`INPUTS` converts a batch row's
column for each medium.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.config import SUBSAMPLING
from models.layers import PAD_ID
from pipelines.engine.microbatches import StepPlan, split_batch


def tensor(value: Any) -> torch.Tensor:
    """Token ids, lengths or labels as int64. ``np.array`` copies: Ray hands out
    read-only views of the object store."""
    return torch.from_numpy(np.array(value, dtype=np.int64))


def frames(value: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(value, dtype=np.float32))


def pixels(value: Any) -> torch.Tensor:
    """Video frames (and images) stay uint8 up to the front end, which scales them on its device."""
    return torch.from_numpy(np.array(value, dtype=np.uint8))


def steps(frame_counts: Any) -> torch.Tensor:
    """Frame counts -> the audio front end's output steps (frames are multiples of SUBSAMPLING)."""
    return tensor(frame_counts) // SUBSAMPLING


MediumInputs = tuple[Callable[[Any], torch.Tensor], Callable[[Any], torch.Tensor], int]
INPUTS: dict[str, MediumInputs] = {
    "text": (tensor, tensor, 1),
    "audio": (frames, steps, SUBSAMPLING),
    "video": (pixels, tensor, 1),
    "image": (pixels, tensor, 1),
}
"""Per medium: ``(inputs converter, lengths -> model steps, input positions per step)``."""


class Labels:
    """seq2vec: a label per sequence; loss summed per example. The mixing application's
    ``medium`` picks the input conversion and its :meth:`frontend` the model's first
    layer; the RNN stack, pooling and classifier are ``models.seq2vec``'s."""

    metric = "val_accuracy"

    def frontend(self, sizes: dict[str, int]):
        """The model's input layer (``models.frontends``) for the prepared ``sizes``."""
        raise NotImplementedError(f"{type(self).__name__} must define frontend(sizes)")

    def layer_factories(self, config, sizes: dict[str, int]):
        from models.seq2vec import seq2vec_layer_factories

        return seq2vec_layer_factories(config, frontend=self.frontend(sizes), num_labels=sizes["num_labels"])

    def build(self, config, sizes: dict[str, int], *, seed: int = 0, keep=None):
        from models.seq2vec import build_seq2vec

        return build_seq2vec(config, frontend=self.frontend(sizes), num_labels=sizes["num_labels"], seed=seed,
                             keep=keep)

    def step_plan(self, row: dict[str, Any], microbatches: int) -> StepPlan:
        convert, to_steps, per_step = INPUTS[self.medium]
        return split_batch(convert(row["tokens"]), to_steps(row["lengths"]), tensor(row["labels"]), microbatches,
                           per_step=per_step)

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


class Tokens:
    """seq2seq and vec2seq: a token sequence per sequence; loss summed per target token
    (padding ignored), as OpenNMT and fairseq normalise it. The mixing application's
    :meth:`encoder_source` is what the encoder reads; :meth:`builders` picks the model
    (``models.seq2seq`` unless overridden, e.g. ``models.vec2seq``)."""

    metric = "val_token_accuracy"
    loss_per_step = True
    """The loss is a sum over target steps, so the wavefront scores decoder chunks one by one."""

    def encoder_source(self, sizes: dict[str, int]):
        """The encoder's input (``models.seq2seq.source_tokens`` or ``source(frontend)``)."""
        raise NotImplementedError(f"{type(self).__name__} must define encoder_source(sizes)")

    def builders(self):
        """``(layer factories, build)`` functions of the model family."""
        from models.seq2seq import build_seq2seq, seq2seq_layer_factories

        return seq2seq_layer_factories, build_seq2seq

    def layer_factories(self, config, sizes: dict[str, int]):
        factories, _ = self.builders()
        return factories(config, source=self.encoder_source(sizes), tgt_vocab_size=sizes["tgt_vocab_size"])

    def build(self, config, sizes: dict[str, int], *, seed: int = 0, keep=None):
        _, build = self.builders()
        return build(config, source=self.encoder_source(sizes), tgt_vocab_size=sizes["tgt_vocab_size"], seed=seed,
                     keep=keep)

    def tied_layers(self, config) -> tuple[int, int] | None:
        """The target embedding and output layer when ``model.tie_embeddings`` ties them."""
        from models.seq2seq import tied_layer_indices

        return tied_layer_indices(config)

    def source_batch(self, row: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(padded source, lengths in model steps, input positions per step)``."""
        convert, to_steps, per_step = INPUTS[self.medium]
        return convert(row["src_tokens"]), to_steps(row["src_lengths"]), per_step

    def step_plan(self, row: dict[str, Any], microbatches: int) -> StepPlan:
        """Row chunks, each trimmed to its own longest source and target (dynamic unrolling)."""
        src, src_len, per_step = self.source_batch(row)
        tgt_in, tgt_out, tgt_len = tensor(row["tgt_in"]), tensor(row["tgt_out"]), tensor(row["tgt_lengths"])
        plan = StepPlan([], [], [])
        for rows in torch.arange(len(src_len)).tensor_split(min(microbatches, len(src_len))):
            s, t = int(src_len[rows].max()) * per_step, int(tgt_len[rows].max())
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


class CTC:
    """Frames in, per-step token log-probabilities out, no decoder (``models.ctc``). The
    last stage needs each row's step count for the loss, so the labels carry it:
    ``labels = [steps | y (PAD-padded)]`` ``(B, 1 + L)``."""

    metric = "val_token_accuracy"

    def step_plan(self, row: dict[str, Any], microbatches: int) -> StepPlan:
        inputs, counts = frames(row["src_tokens"]), steps(row["src_lengths"])
        targets, target_lengths = tensor(row["tgt_in"])[:, 1:], tensor(row["tgt_lengths"]) - 1  # y, no BOS/EOS
        plan = StepPlan([], [], [])
        for rows in torch.arange(len(counts)).tensor_split(min(microbatches, len(counts))):
            plan.tokens.append(inputs[rows, : int(counts[rows].max()) * SUBSAMPLING])
            plan.lengths.append(counts[rows])
            width = max(int(target_lengths[rows].max()), 1)
            plan.labels.append(torch.cat([counts[rows, None], targets[rows, :width]], dim=1))
        return plan

    @staticmethod
    def _unpack(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = targets[:, 1:]
        return targets[:, 0].cpu(), y, (y != PAD_ID).sum(1).cpu()

    def loss(self, out: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        from models.ctc import ctc_loss

        counts, y, lengths = self._unpack(targets)
        return ctc_loss(out, counts, y, lengths)

    def loss_units(self, plan: StepPlan) -> float:
        return float(sum(int((labels[:, 1:] != PAD_ID).sum()) for labels in plan.labels))

    def eval_counts(self, out: torch.Tensor, targets: torch.Tensor) -> tuple[float, float, float]:
        """``(loss, target tokens - edit distance of the greedy transcript (per utterance,
        at least 0), target tokens)``: the token accuracy is 1 - token error rate."""
        from models.ctc import ctc_greedy
        from pipelines.scoring.speech import edit_distance

        counts, y, lengths = self._unpack(targets)
        loss = float(self.loss(out, targets, 0.0))
        correct = 0.0
        for hyp, ref, n in zip(ctc_greedy(out, counts), y.tolist(), lengths.tolist()):
            correct += max(0, n - edit_distance(ref[:n], hyp[0].tokens))
        return loss, correct, float(lengths.sum())

    def validation_metrics(self, loss_sum: float, correct: float, count: float) -> dict[str, float]:
        return {"val_loss": loss_sum / count, "val_token_accuracy": correct / count, "val_tokens": int(count)}
