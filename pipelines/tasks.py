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

Tasks are keyed by ``(model.kind, model.input, model.decoder)``. Audio tasks (``input:
audio``) feed log-mel frames ``(B, 4T, n_mels)`` float32 where text tasks feed token
ids, with lengths counted in the front end's subsampled steps ``T``
(``models.frontend``); video tasks feed RGB frames ``(B, T, size, size, 3)`` uint8, one
step per frame. vec2seq (captioning) trains and decodes like seq2seq.
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
from pipelines.errors import ConfigError, DataError
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


def _frames(value: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(value, dtype=np.float32))


def _pixels(value: Any) -> torch.Tensor:
    """Video frames stay uint8 up to the front end, which scales them on its device."""
    return torch.from_numpy(np.array(value, dtype=np.uint8))


def _steps(frames: Any) -> torch.Tensor:
    """Frame counts -> the front end's output steps (frames are multiples of SUBSAMPLING)."""
    from models.frontend import SUBSAMPLING

    return _tensor(frames) // SUBSAMPLING


def _checked_sizes(path, meta: dict[str, Any], names: tuple[str, ...]) -> dict[str, int]:
    bad = [k for k in names if not isinstance(meta.get(k), int) or isinstance(meta[k], bool) or meta[k] < 1]
    if bad:
        raise DataError(f"{path}/meta.json: needs {' and '.join(repr(k) for k in names)} as integers >= 1, "
                        f"got {', '.join(f'{k}={meta.get(k)!r}' for k in bad)}")
    return {k: meta[k] for k in names}


def _labels_from_meta(path, meta: dict[str, Any]) -> int:
    labels = meta.get("labels")
    if (not isinstance(labels, list) or len(labels) < 2 or len(set(map(str, labels))) < len(labels)
            or not all(isinstance(label, str) and label for label in labels)):
        raise DataError(f"{path}/meta.json: needs 'labels': 2 or more distinct non-empty strings")
    return len(labels)


class ClassificationTask:
    """seq2vec: a label per sequence; loss summed per example."""

    kind = "seq2vec"
    input = "text"
    decoder = ""
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

        return seq2vec_layer_factories(config, **sizes)

    def build(self, config: ModelConfig, sizes: dict[str, int], *, seed: int = 0, keep=None) -> nn.Module:
        from models.seq2vec import build_seq2vec

        return build_seq2vec(config, **sizes, seed=seed, keep=keep)

    def missing_files(self, path) -> str | None:
        """What a checkpoint folder lacks of the files this task's inference needs, else None."""
        return None if (path / "tokenizer.json").is_file() else "tokenizer.json"

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

    def scores(self, loaded, recipe, predictions=None) -> dict[str, Any]:
        """``rayseq eval``: a loaded checkpoint scored on ``recipe.data.valid``; with
        ``predictions`` (a path), every record's prediction written there too."""
        from pipelines.evaluate import score_classifications

        return score_classifications(loaded, recipe, predictions)

    def sizes_from_meta(self, path, meta: dict[str, Any]) -> dict[str, int]:
        """The builder's size arguments from a checkpoint's ``meta.json``, checked."""
        return {"num_labels": _labels_from_meta(path, meta), **_checked_sizes(path, meta, ("vocab_size",))}


class TranslationTask:
    """seq2seq: a token sequence per sequence; loss summed per target token (padding
    ignored), as OpenNMT and fairseq normalise it."""

    kind = "seq2seq"
    input = "text"
    decoder = "attention"
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

        return seq2seq_layer_factories(config, **sizes)

    def build(self, config: ModelConfig, sizes: dict[str, int], *, seed: int = 0, keep=None) -> nn.Module:
        from models.seq2seq import build_seq2seq

        return build_seq2seq(config, **sizes, seed=seed, keep=keep)

    def missing_files(self, path) -> str | None:
        from pipelines.tokenization import missing_translation_tokenizer

        return missing_translation_tokenizer(path)

    def source(self, row: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(padded source, lengths in model steps, input positions per step)``."""
        return _tensor(row["src_tokens"]), _tensor(row["src_lengths"]), 1

    def step_plan(self, row: dict[str, Any], microbatches: int) -> StepPlan:
        """Row chunks, each trimmed to its own longest source and target (dynamic unrolling)."""
        src, src_len, per_step = self.source(row)
        tgt_in, tgt_out, tgt_len = _tensor(row["tgt_in"]), _tensor(row["tgt_out"]), _tensor(row["tgt_lengths"])
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
        return _checked_sizes(path, meta, ("src_vocab_size", "tgt_vocab_size"))

    def scores(self, loaded, recipe, predictions=None) -> dict[str, Any]:
        from pipelines.evaluate import score_translations

        return score_translations(loaded.path, recipe, predictions)


class AudioClassificationTask(ClassificationTask):
    """seq2vec on log-mel frames (spoken digits): no tokenizer; the features' width
    (``n_mels``) sizes the front end."""

    input = "audio"

    def prepare(self, recipe) -> PreparedData:
        from pipelines.audio_data import prepare_audio_classification

        data = prepare_audio_classification(recipe)
        feature_dim = recipe.data.audio.n_mels
        sizes = {"feature_dim": feature_dim, "num_labels": len(data.labels)}
        meta = {"labels": data.labels, "feature_dim": feature_dim}
        return PreparedData(data.train, data.valid, sizes, {}, meta, data.train_stats.batches, data.report)

    def step_plan(self, row: dict[str, Any], microbatches: int) -> StepPlan:
        from models.frontend import SUBSAMPLING

        return split_batch(_frames(row["tokens"]), _steps(row["lengths"]), _tensor(row["labels"]), microbatches,
                           per_step=SUBSAMPLING)

    def missing_files(self, path) -> str | None:
        return None

    def scores(self, loaded, recipe, predictions=None) -> dict[str, Any]:
        from pipelines.evaluate import score_audio_classifications

        return score_audio_classifications(loaded.path, recipe, predictions)

    def sizes_from_meta(self, path, meta: dict[str, Any]) -> dict[str, int]:
        return {"num_labels": _labels_from_meta(path, meta), **_checked_sizes(path, meta, ("feature_dim",))}


class SpeechRecognitionTask(TranslationTask):
    """seq2seq from log-mel frames to a transcript (speech-to-text): the translation
    model with the audio front end in place of the source embedding; one target
    tokenizer (``tokenizer.json``); scored by WER and CER."""

    input = "audio"

    def prepare(self, recipe) -> PreparedData:
        from pipelines.audio_data import prepare_speech

        data = prepare_speech(recipe)
        vocab, feature_dim = data.tokenizer.get_vocab_size(), recipe.data.audio.n_mels
        sizes = {"feature_dim": feature_dim, "tgt_vocab_size": vocab}
        meta = {"feature_dim": feature_dim, "tgt_vocab_size": vocab}
        return PreparedData(data.train, data.valid, sizes, {"tokenizer.json": data.tokenizer.to_str()}, meta,
                            data.train_stats.batches, data.report)

    def source(self, row: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, int]:
        from models.frontend import SUBSAMPLING

        return _frames(row["src_tokens"]), _steps(row["src_lengths"]), SUBSAMPLING

    def final_scores(self, checkpoint, recipe) -> dict[str, Any]:
        """WER and CER of the decoded validation split (recipe's beam)."""
        if not (recipe.data.valid or recipe.data.audio.valid_takes):
            return {}
        from pipelines.evaluate import score_speech

        scores = score_speech(checkpoint, recipe)
        print(f"validation: WER {scores['wer']:.4f}, CER {scores['cer']:.4f} (beam {scores['beam_size']}, "
              f"{scores['examples']} utterances)", flush=True)
        return {f"val_{k}": scores[k] for k in ("wer", "cer", "exact_match")}

    def scores(self, loaded, recipe, predictions=None) -> dict[str, Any]:
        from pipelines.evaluate import score_speech

        return score_speech(loaded.path, recipe, predictions)

    def missing_files(self, path) -> str | None:
        return None if (path / "tokenizer.json").is_file() else "tokenizer.json"

    def sizes_from_meta(self, path, meta: dict[str, Any]) -> dict[str, int]:
        return _checked_sizes(path, meta, ("feature_dim", "tgt_vocab_size"))


class CTCSpeechTask(SpeechRecognitionTask):
    """Speech-to-text with CTC (``model.decoder: ctc``): frames in, per-step token
    log-probabilities out, no decoder. The last stage needs each row's step count for the
    loss, so the labels carry it: ``labels = [steps | y (PAD-padded)]`` ``(B, 1 + L)``."""

    decoder = "ctc"

    def layer_factories(self, config: ModelConfig, sizes: dict[str, int]) -> list[Callable[[], nn.Module]]:
        from models.ctc import ctc_layer_factories

        return ctc_layer_factories(config, **sizes)

    def build(self, config: ModelConfig, sizes: dict[str, int], *, seed: int = 0, keep=None) -> nn.Module:
        from models.ctc import build_ctc

        return build_ctc(config, **sizes, seed=seed, keep=keep)

    def step_plan(self, row: dict[str, Any], microbatches: int) -> StepPlan:
        from models.frontend import SUBSAMPLING

        frames, steps = _frames(row["src_tokens"]), _steps(row["src_lengths"])
        targets, target_lengths = _tensor(row["tgt_in"])[:, 1:], _tensor(row["tgt_lengths"]) - 1  # y, no BOS/EOS
        plan = StepPlan([], [], [])
        for rows in torch.arange(len(steps)).tensor_split(min(microbatches, len(steps))):
            plan.tokens.append(frames[rows, : int(steps[rows].max()) * SUBSAMPLING])
            plan.lengths.append(steps[rows])
            width = max(int(target_lengths[rows].max()), 1)
            plan.labels.append(torch.cat([steps[rows, None], targets[rows, :width]], dim=1))
        return plan

    @staticmethod
    def _unpack(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = targets[:, 1:]
        return targets[:, 0].cpu(), y, (y != PAD_ID).sum(1).cpu()

    def loss(self, out: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        from models.ctc import ctc_loss

        steps, y, lengths = self._unpack(targets)
        return ctc_loss(out, steps, y, lengths)

    def loss_units(self, plan: StepPlan) -> float:
        return float(sum(int((labels[:, 1:] != PAD_ID).sum()) for labels in plan.labels))

    def eval_counts(self, out: torch.Tensor, targets: torch.Tensor) -> tuple[float, float, float]:
        """``(loss, target tokens - edit distance of the greedy transcript (per utterance,
        at least 0), target tokens)``: the token accuracy is 1 - token error rate."""
        from models.ctc import ctc_greedy
        from pipelines.speech_metrics import edit_distance

        steps, y, lengths = self._unpack(targets)
        loss = float(self.loss(out, targets, 0.0))
        correct = 0.0
        for hyp, ref, n in zip(ctc_greedy(out, steps), y.tolist(), lengths.tolist()):
            correct += max(0, n - edit_distance(ref[:n], hyp[0].tokens))
        return loss, correct, float(lengths.sum())

    def validation_metrics(self, loss_sum: float, correct: float, count: float) -> dict[str, float]:
        return {"val_loss": loss_sum / count, "val_token_accuracy": correct / count, "val_tokens": int(count)}


class VideoClassificationTask(ClassificationTask):
    """seq2vec on RGB frames (CNN+RNN video classification): no tokenizer; the frame
    size sizes the front end."""

    input = "video"

    def prepare(self, recipe) -> PreparedData:
        from pipelines.video_data import prepare_video_classification

        data = prepare_video_classification(recipe)
        size = recipe.data.video.size
        meta = {"labels": data.labels, "frame_size": size}
        return PreparedData(data.train, data.valid, {"frame_size": size, "num_labels": len(data.labels)}, {}, meta,
                            data.train_stats.batches, data.report)

    def step_plan(self, row: dict[str, Any], microbatches: int) -> StepPlan:
        return split_batch(_pixels(row["tokens"]), _tensor(row["lengths"]), _tensor(row["labels"]), microbatches)

    def missing_files(self, path) -> str | None:
        return None

    def scores(self, loaded, recipe, predictions=None) -> dict[str, Any]:
        from pipelines.evaluate import score_video_classifications

        return score_video_classifications(loaded.path, recipe, predictions)

    def sizes_from_meta(self, path, meta: dict[str, Any]) -> dict[str, int]:
        return {"num_labels": _labels_from_meta(path, meta), **_checked_sizes(path, meta, ("frame_size",))}


class CaptioningTask(TranslationTask):
    """vec2seq video captioning: frames -> one video vector -> caption (``models.vec2seq``);
    one target tokenizer (``tokenizer.json``); scored by exact match and BLEU."""

    kind = "vec2seq"
    input = "video"
    decoder = ""

    def prepare(self, recipe) -> PreparedData:
        from pipelines.video_data import prepare_captions

        data = prepare_captions(recipe)
        vocab, size = data.tokenizer.get_vocab_size(), recipe.data.video.size
        sizes = {"frame_size": size, "tgt_vocab_size": vocab}
        return PreparedData(data.train, data.valid, sizes, {"tokenizer.json": data.tokenizer.to_str()}, dict(sizes),
                            data.train_stats.batches, data.report)

    def layer_factories(self, config: ModelConfig, sizes: dict[str, int]) -> list[Callable[[], nn.Module]]:
        from models.vec2seq import vec2seq_layer_factories

        return vec2seq_layer_factories(config, **sizes)

    def build(self, config: ModelConfig, sizes: dict[str, int], *, seed: int = 0, keep=None) -> nn.Module:
        from models.vec2seq import build_vec2seq

        return build_vec2seq(config, **sizes, seed=seed, keep=keep)

    def source(self, row: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, int]:
        return _pixels(row["src_tokens"]), _tensor(row["src_lengths"]), 1

    def final_scores(self, checkpoint, recipe) -> dict[str, Any]:
        """Exact match and BLEU of the decoded validation captions (recipe's beam)."""
        if not recipe.data.valid:
            return {}
        from pipelines.evaluate import score_captions

        scores = score_captions(checkpoint, recipe)
        print(f"validation: exact match {scores['exact_match']:.4f}, BLEU {scores['bleu']} "
              f"(beam {scores['beam_size']}, {scores['examples']} clips)", flush=True)
        return {f"val_{k}": scores[k] for k in ("exact_match", "bleu")}

    def scores(self, loaded, recipe, predictions=None) -> dict[str, Any]:
        from pipelines.evaluate import score_captions

        return score_captions(loaded.path, recipe, predictions)

    def missing_files(self, path) -> str | None:
        return None if (path / "tokenizer.json").is_file() else "tokenizer.json"

    def sizes_from_meta(self, path, meta: dict[str, Any]) -> dict[str, int]:
        return _checked_sizes(path, meta, ("frame_size", "tgt_vocab_size"))


class AttentionCaptioningTask(CaptioningTask):
    """Video captioning with the seq2seq attention decoder over every frame's encoder
    state (``model.kind: seq2seq``, ``input: video``): the alternative to one vector."""

    kind = "seq2seq"
    decoder = "attention"

    def layer_factories(self, config: ModelConfig, sizes: dict[str, int]) -> list[Callable[[], nn.Module]]:
        return TranslationTask.layer_factories(self, config, sizes)

    def build(self, config: ModelConfig, sizes: dict[str, int], *, seed: int = 0, keep=None) -> nn.Module:
        return TranslationTask.build(self, config, sizes, seed=seed, keep=keep)


Task = ClassificationTask | TranslationTask
TASKS: dict[tuple[str, str, str], Task] = {
    (task.kind, task.input, task.decoder): task
    for task in (ClassificationTask(), TranslationTask(), AudioClassificationTask(), SpeechRecognitionTask(),
                 CTCSpeechTask(), VideoClassificationTask(), CaptioningTask(), AttentionCaptioningTask())
}


def task_for(config: ModelConfig) -> Task:
    key = (config.kind, config.input, config.decoder if config.kind == "seq2seq" else "")
    if key not in TASKS:
        known = ", ".join("/".join(filter(None, k)) for k in TASKS)
        raise ConfigError(f"model kind/input/decoder {'/'.join(filter(None, key))} is not supported; known: {known}")
    return TASKS[key]


def task_of_checkpoint(path, meta: dict[str, Any]) -> Task:
    """The task a checkpoint's ``meta.json`` names (its ``kind``, ``input`` and ``decoder``;
    checkpoints from before audio have neither: text, attention)."""
    meta = meta if isinstance(meta, dict) else {}
    kind, source = meta.get("kind"), meta.get("input", "text")
    key = (kind, source, meta.get("decoder", "attention") if kind == "seq2seq" else "")
    if key not in TASKS:
        known = ", ".join("/".join(filter(None, k)) for k in TASKS)
        raise DataError(f"{path}/meta.json: kind/input/decoder must be one of {known}, got {'/'.join(map(str, key))}")
    return TASKS[key]
