"""Pure inference on a seq2seq checkpoint: source texts in, detokenized translations out.

Shared by ``rayseq eval`` (inside Ray Data ``map_batches``), the Serve deployment, the
end-of-training BLEU and ``bench/decode.py``, so all of them decode the same way::

    texts -> source tokenizer -> ids (one list per text, cut to data.max_length)
          -> length-sorted batches under a token budget (src_tokens (B, S), PAD-padded)
          -> models.decoding.generate (greedy or beam) -> Hypothesis lists, input order
          -> target tokenizer -> {"text", "score"} per text

``stream`` / ``stream_ids`` run the same passes greedily and hand out each output token
and the text it adds as it is decoded (``pipelines.streaming``), for streamed responses.

Decoding options a call leaves out come from the checkpoint recipe's ``decode`` section
(beam size, GNMT length penalty ``alpha``, output length caps), so eval, serving and
benchmarks decode a checkpoint the way its recipe says unless told otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch

from models.decoding import Hypothesis, generate
from pipelines.bucketing import length_sorted_batches
from pipelines.checkpoint import load_inference
from pipelines.config import DecodeConfig
from pipelines.streaming import Pass, stream_greedy
from pipelines.tokenization import decode, encode_batch, load_translation_tokenizers


class Translator:
    """A loaded seq2seq checkpoint, in eval mode on ``device``.

    ``max_tokens`` bounds one decoding pass: ``beam_size * rows * longest_source``, i.e.
    the encoder memory ``(rows * beam_size, S, H_mem)`` every decoder step attends over.
    """

    def __init__(self, checkpoint: str | Path, *, device: str = "cpu", max_tokens: int = 8192) -> None:
        loaded = load_inference(checkpoint, device=device)
        if loaded.meta.get("kind") != "seq2seq":
            raise ValueError(f"{checkpoint}: a {loaded.meta.get('kind')} checkpoint, not seq2seq")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.model = loaded.model
        self.recipe = loaded.recipe
        self.tokenizers = load_translation_tokenizers(loaded.path)
        self.max_length = loaded.recipe.data.max_length  # source tokens kept per text
        self.device = device
        self.max_tokens = max_tokens

    @property
    def defaults(self) -> DecodeConfig:
        """The recipe's ``decode`` settings: what :meth:`generate_ids` uses for options left out."""
        return self.recipe.decode

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Source token ids of each text (cut to the recipe's ``data.max_length``; a text
        that tokenizes to nothing becomes ``[UNK]``, so every source has a step)."""
        return encode_batch(self.tokenizers.source, texts, self.max_length)[0]

    def passes(self, ids: list[list[int]], beam_size: int) -> Iterator[Pass]:
        """``(rows, src_tokens (B, S) on the device, src_lengths (B,))`` sorted by length,
        at most ``max_tokens / beam_size`` padded source tokens a pass (each beam holds a
        copy of its sentence's encoder memory); ``rows`` are positions in ``ids``."""
        if not ids:
            return
        budget = max(self.max_tokens // beam_size, max(len(x) for x in ids))
        for rows, tokens, lengths in length_sorted_batches(ids, budget):
            yield rows, torch.from_numpy(tokens).to(self.device), torch.from_numpy(lengths)

    @torch.inference_mode()
    def generate_ids(self, ids: list[list[int]], *, beam_size: int | None = None, alpha: float | None = None,
                     max_length: int | None = None, max_length_ratio: float | None = None,
                     n_best: int = 1) -> list[list[Hypothesis]]:
        """``n_best`` hypotheses per source (best first), in input order.

        Sources run in the length-sorted :meth:`passes`: sorting keeps padding, and the
        steps a short sentence waits for a long one, small.
        ``max_length`` caps output tokens, as does ``max_length_ratio * source length + 10``.
        Options left as None take the recipe's ``decode`` values.
        """
        beam_size = self.defaults.beam_size if beam_size is None else beam_size
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        options = dict(beam_size=beam_size, n_best=n_best,
                       **self.defaults.limits(alpha=alpha, max_length=max_length, max_length_ratio=max_length_ratio))
        out: list[list[Hypothesis]] = [[] for _ in ids]
        for rows, src_tokens, src_lengths in self.passes(ids, beam_size):
            for r, hypotheses in zip(rows, generate(self.model, src_tokens, src_lengths, **options)):
                out[r] = hypotheses
        return out

    def stream_ids(self, ids: list[list[int]], *, alpha: float | None = None, max_length: int | None = None,
                   max_length_ratio: float | None = None) -> Iterator[dict[str, Any]]:
        """Greedy decoding of ``ids`` as it goes: ``pipelines.streaming`` items (each output
        token with the text it adds, then ``{"text", "score"}`` per source), equal to
        ``generate_ids(ids, beam_size=1)``'s results. Options as for :meth:`generate_ids`."""
        limits = self.defaults.limits(alpha=alpha, max_length=max_length, max_length_ratio=max_length_ratio)
        return stream_greedy(self.model, self.passes(ids, beam_size=1), self.detokenize, **limits)

    def detokenize(self, tokens: list[int]) -> str:
        return decode(self.tokenizers.target, tokens)

    def outputs(self, found: list[list[Hypothesis]]) -> list[dict[str, Any]]:
        """The HTTP contract's output objects ``{"text", "score"}`` of each source's best
        hypothesis (``score``: GNMT's length-normalised log-probability)."""
        return [{"text": self.detokenize(h[0].tokens), "score": float(h[0].score)} for h in found]

    def translate(self, texts: list[str], **options: Any) -> list[dict[str, Any]]:
        """``{"text", "score"}`` per text, in order; ``options`` as for :meth:`generate_ids`."""
        return self.outputs(self.generate_ids(self.encode(texts), **options))

    def stream(self, texts: list[str], **options: Any) -> Iterator[dict[str, Any]]:
        """:meth:`translate` with greedy search, streamed: items as :meth:`stream_ids`
        gives them (``index`` is the text's position); joined, an index's ``delta`` values
        give its greedy ``text``."""
        return self.stream_ids(self.encode(texts), **options)
