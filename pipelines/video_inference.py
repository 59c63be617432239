"""Pure inference on video checkpoints: clips in, labels or captions out.

Shared by ``rayseq eval`` (Ray Data ``map_batches`` over decoded folders), the Serve
deployments (uploaded MP4s) and the end-of-training scores, so all of them see and
decode the same way::

    bytes -> VideoFeaturizer (decode, sample, resize; the checkpoint's data.video)
          -> length-sorted batches under a frame budget, zero-padded (B, T, S, S, 3) uint8
          -> classifier softmax | models.decoding.generate (greedy or beam search)
          -> {"label", "score", "scores"} | {"text", "score"}

``VideoCaptioner.stream_clips`` streams greedy captions token by token
(``pipelines.streaming``).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from models.decoding import Hypothesis, generate
from pipelines.bucketing import array_batches
from pipelines.checkpoint import load_inference
from pipelines.inference import predictions
from pipelines.streaming import Pass, stream_greedy
from pipelines.tokenization import decode, load_tokenizer
from pipelines.video import VideoFeaturizer


def clip_batches(clips: list[np.ndarray], max_frames: int) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """``(rows, frames (B, T, S, S, 3) uint8, lengths (B,) int64)`` sorted by length,
    ``rows * longest <= max_frames``; ``rows`` are positions in ``clips``."""
    for rows, frames, lengths in array_batches(clips, max_frames):
        yield rows, torch.from_numpy(frames), torch.from_numpy(lengths)


class _VideoModel:
    """A loaded video checkpoint and the featurizer its recipe trained with (uploads
    over the recipe's ``max_frames`` or ``max_seconds`` are refused, not cut)."""

    kinds: tuple[str, ...] = ()

    def __init__(self, checkpoint: str | Path, *, device: str = "cpu", max_frames: int = 4096) -> None:
        loaded = load_inference(checkpoint, device=device)
        model = loaded.recipe.model
        if model.input != "video" or model.kind not in self.kinds:
            raise ValueError(f"{checkpoint}: a {model.kind}/{model.input} checkpoint, not {' or '.join(self.kinds)}/video")
        self.loaded = loaded
        self.model = loaded.model
        self.recipe = loaded.recipe
        self.featurizer = VideoFeaturizer(loaded.recipe.data.video, refuse_longer=True)
        self.device = device
        self.max_frames = max_frames

    def featurize(self, blobs: list[bytes], names: list[str]) -> list[np.ndarray]:
        """Frames of each encoded clip; ``DataError`` (``ClipTooLong`` over a limit) names the bad one."""
        return [self.featurizer(blob, name).frames for blob, name in zip(blobs, names)]


class VideoClassifier(_VideoModel):
    kinds = ("seq2vec",)

    @property
    def labels(self) -> list[str]:
        return self.loaded.labels

    @torch.inference_mode()
    def probabilities(self, clips: list[np.ndarray]) -> np.ndarray:
        """``(len(clips), labels)``, in input order."""
        out = np.zeros((len(clips), len(self.labels)), dtype=np.float32)
        for rows, frames, lengths in clip_batches(clips, self.max_frames):
            logits = self.model(frames.to(self.device), lengths)
            out[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out

    def classify(self, blobs: list[bytes], names: list[str]) -> list[dict[str, Any]]:
        return predictions(self.probabilities(self.featurize(blobs, names)), self.labels)


class VideoCaptioner(_VideoModel):
    """vec2seq (one video vector) or seq2seq (attention over frames) captioning."""

    kinds = ("vec2seq", "seq2seq")

    def __init__(self, checkpoint: str | Path, **kwargs: Any) -> None:
        super().__init__(checkpoint, **kwargs)
        self.tokenizer = load_tokenizer(self.loaded.tokenizer_json)

    def passes(self, clips: list[np.ndarray], beam_size: int) -> Iterator[Pass]:
        """:func:`clip_batches` on the device, under ``max_frames / beam_size`` (each beam
        row holds a copy of its clip's encoder memory)."""
        budget = max(self.max_frames // beam_size, max((len(x) for x in clips), default=1))
        for rows, frames, lengths in clip_batches(clips, budget):
            yield rows, frames.to(self.device), lengths

    @torch.inference_mode()
    def generate_clips(self, clips: list[np.ndarray], *, beam_size: int | None = None,
                       max_length: int | None = None) -> list[list[Hypothesis]]:
        """Hypotheses per clip, best first, in input order; options default to the recipe's ``decode``."""
        beam_size = self.recipe.decode.beam_size if beam_size is None else beam_size
        options = dict(beam_size=beam_size, **self.recipe.decode.limits(max_length=max_length))
        out: list[list[Hypothesis]] = [[] for _ in clips]
        for rows, frames, lengths in self.passes(clips, beam_size):
            for r, hypotheses in zip(rows, generate(self.model, frames, lengths, **options)):
                out[r] = hypotheses
        return out

    def stream_clips(self, clips: list[np.ndarray], *, max_length: int | None = None) -> Iterator[dict[str, Any]]:
        """Greedy decoding as it goes: ``pipelines.streaming`` items, equal to
        ``generate_clips(clips, beam_size=1)``'s results."""
        detokenize = partial(decode, self.tokenizer)
        return stream_greedy(self.model, self.passes(clips, 1), detokenize, **self.recipe.decode.limits(max_length=max_length))

    def outputs(self, found: list[list[Hypothesis]]) -> list[dict[str, Any]]:
        return [{"text": decode(self.tokenizer, h[0].tokens), "score": float(h[0].score)} for h in found]

    def caption_clips(self, clips: list[np.ndarray], **options: Any) -> list[dict[str, Any]]:
        return self.outputs(self.generate_clips(clips, **options))

    def caption(self, blobs: list[bytes], names: list[str], **options: Any) -> list[dict[str, Any]]:
        return self.caption_clips(self.featurize(blobs, names), **options)
