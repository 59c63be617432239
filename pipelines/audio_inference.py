"""Pure inference on audio checkpoints: recordings in, labels or transcripts out.

Shared by ``rayseq eval`` (Ray Data ``map_batches`` over featurized folders), the Serve
deployments (uploaded files) and the end-of-training WER, so all of them hear and decode
the same way::

    bytes -> AudioFeaturizer (decode, resample, log-mel; the checkpoint's data.audio)
          -> frame-sorted batches under a frame budget, zero-padded (B, 4S, n_mels)
          -> classifier softmax | models.decoding.generate (attention: greedy or beam)
             | models.ctc.ctc_decode (CTC: best path or prefix beam search)
          -> {"label", "score", "scores"} | {"text", "score"}

``SpeechRecognizer.stream_features`` streams greedy transcripts token by token
(``pipelines.streaming``).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from models.ctc import ctc_decode
from models.decoding import Hypothesis, generate
from models.frontend import SUBSAMPLING
from pipelines.audio import AudioFeaturizer
from pipelines.bucketing import array_batches
from pipelines.checkpoint import load_inference
from pipelines.inference import predictions
from pipelines.streaming import Pass, stream_greedy
from pipelines.tokenization import decode, load_tokenizer


def frame_batches(features: list[np.ndarray], max_frames: int) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """``(rows, frames (B, 4S, n_mels) float32, steps (B,) int64)`` batches sorted by length,
    ``rows * longest <= max_frames``; ``rows`` are positions in ``features``."""
    for rows, frames, steps in array_batches(features, max_frames, per_step=SUBSAMPLING):
        yield rows, torch.from_numpy(frames.astype(np.float32, copy=False)), torch.from_numpy(steps)


class _AudioModel:
    """A loaded audio checkpoint and the featurizer its recipe trained with."""

    kind = ""

    def __init__(self, checkpoint: str | Path, *, device: str = "cpu", max_frames: int = 32768) -> None:
        loaded = load_inference(checkpoint, device=device)
        if loaded.recipe.model.input != "audio" or loaded.recipe.model.kind != self.kind:
            raise ValueError(f"{checkpoint}: a {loaded.recipe.model.kind}/{loaded.recipe.model.input} checkpoint, "
                             f"not {self.kind}/audio")
        self.loaded = loaded
        self.model = loaded.model
        self.recipe = loaded.recipe
        self.featurizer = AudioFeaturizer(loaded.recipe.data.audio)
        self.device = device
        self.max_frames = max_frames

    def featurize(self, blobs: list[bytes], names: list[str]) -> list[np.ndarray]:
        """Log-mel frames of each encoded recording; ``DataError`` names the bad one."""
        return [self.featurizer(blob, name)[0] for blob, name in zip(blobs, names)]


class AudioClassifier(_AudioModel):
    kind = "seq2vec"

    @property
    def labels(self) -> list[str]:
        return self.loaded.labels

    @torch.inference_mode()
    def probabilities(self, features: list[np.ndarray]) -> np.ndarray:
        """``(len(features), labels)``, in input order."""
        out = np.zeros((len(features), len(self.labels)), dtype=np.float32)
        for rows, frames, steps in frame_batches(features, self.max_frames):
            logits = self.model(frames.to(self.device), steps)
            out[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out

    def classify(self, blobs: list[bytes], names: list[str]) -> list[dict[str, Any]]:
        return predictions(self.probabilities(self.featurize(blobs, names)), self.labels)


class SpeechRecognizer(_AudioModel):
    kind = "seq2seq"

    def __init__(self, checkpoint: str | Path, **kwargs: Any) -> None:
        super().__init__(checkpoint, **kwargs)
        self.tokenizer = load_tokenizer(self.loaded.tokenizer_json)

    @property
    def ctc(self) -> bool:
        return self.recipe.model.decoder == "ctc"

    def passes(self, features: list[np.ndarray], rows_per_source: int) -> Iterator[Pass]:
        """:func:`frame_batches` on the device, under ``max_frames / rows_per_source``
        (the beam: each beam row holds a copy of its recording's encoder memory)."""
        budget = max(self.max_frames // rows_per_source, max((len(x) for x in features), default=1))
        for rows, frames, steps in frame_batches(features, budget):
            yield rows, frames.to(self.device), steps

    @torch.inference_mode()
    def generate_features(self, features: list[np.ndarray], *, beam_size: int | None = None,
                          max_length: int | None = None) -> list[list[Hypothesis]]:
        """Best hypotheses per recording, in input order; options default to the recipe's ``decode``."""
        beam_size = self.recipe.decode.beam_size if beam_size is None else beam_size
        out: list[list[Hypothesis]] = [[] for _ in features]
        for rows, frames, steps in self.passes(features, 1 if self.ctc else beam_size):
            found = (ctc_decode(self.model, frames, steps, beam_size=beam_size) if self.ctc
                     else generate(self.model, frames, steps, beam_size=beam_size, **self.recipe.decode.limits(max_length=max_length)))
            for r, hypotheses in zip(rows, found):
                out[r] = hypotheses[:1] if self.ctc else hypotheses
        return out

    def stream_features(self, features: list[np.ndarray], *, max_length: int | None = None) -> Iterator[dict[str, Any]]:
        """Greedy decoding as it goes: ``pipelines.streaming`` items, equal to
        ``generate_features(features, beam_size=1)``'s results. Attention decoders only:
        CTC has no step-by-step decoder to stream from."""
        if self.ctc:
            raise ValueError("streaming needs an attention decoder; this checkpoint's model.decoder is ctc")
        detokenize = partial(decode, self.tokenizer)
        return stream_greedy(self.model, self.passes(features, 1), detokenize, **self.recipe.decode.limits(max_length=max_length))

    def outputs(self, found: list[list[Hypothesis]]) -> list[dict[str, Any]]:
        return [{"text": decode(self.tokenizer, h[0].tokens), "score": float(h[0].score)} for h in found]

    def transcribe_features(self, features: list[np.ndarray], **options: Any) -> list[dict[str, Any]]:
        return self.outputs(self.generate_features(features, **options))

    def transcribe(self, blobs: list[bytes], names: list[str], **options: Any) -> list[dict[str, Any]]:
        return self.transcribe_features(self.featurize(blobs, names), **options)
