"""Pure inference on a seq2seq checkpoint: source texts in, detokenized translations out.

Shared by ``rayseq eval`` (inside Ray Data ``map_batches``), the Serve deployment, the
end-of-training BLEU and ``bench/decode.py``, so all of them decode the same way::

    texts -> source tokenizer -> ids (one list per text, cut to data.max_length)
          -> length-sorted batches under a token budget (src_tokens (B, S), PAD-padded)
          -> models.decoding.generate (greedy or beam) -> Hypothesis lists, input order
          -> target tokenizer -> {"text", "score"} per text

Decoding options a call leaves out come from the checkpoint recipe's ``decode`` section
(beam size, GNMT length penalty ``alpha``, output length caps), so eval, serving and
benchmarks decode a checkpoint the way its recipe says unless told otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from models.decoding import Hypothesis, generate
from pipelines.bucketing import length_sorted_batches
from pipelines.checkpoint import load_inference
from pipelines.config import DecodeConfig
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

    @torch.inference_mode()
    def generate_ids(self, ids: list[list[int]], *, beam_size: int | None = None, alpha: float | None = None,
                     max_length: int | None = None, max_length_ratio: float | None = None,
                     n_best: int = 1) -> list[list[Hypothesis]]:
        """``n_best`` hypotheses per source (best first), in input order.

        Sources run sorted by length in batches of at most ``max_tokens / beam_size``
        padded source tokens (each beam holds a copy of its sentence's encoder memory);
        sorting keeps padding, and the steps a short sentence waits for a long one, small.
        ``max_length`` caps output tokens, as does ``max_length_ratio * source length + 10``.
        Options left as None take the recipe's ``decode`` values.
        """
        d = self.defaults
        beam_size = d.beam_size if beam_size is None else beam_size
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        options = dict(
            beam_size=beam_size, n_best=n_best,
            alpha=d.alpha if alpha is None else alpha,
            max_length=d.max_length if max_length is None else max_length,
            max_length_ratio=d.max_length_ratio if max_length_ratio is None else max_length_ratio,
        )
        out: list[list[Hypothesis]] = [[] for _ in ids]
        if not ids:
            return out
        budget = max(self.max_tokens // beam_size, max(len(x) for x in ids))
        for rows, tokens, lengths in length_sorted_batches(ids, budget):
            found = generate(self.model, torch.from_numpy(tokens).to(self.device), torch.from_numpy(lengths), **options)
            for r, hypotheses in zip(rows, found):
                out[r] = hypotheses
        return out

    def detokenize(self, tokens: list[int]) -> str:
        return decode(self.tokenizers.target, tokens)

    def outputs(self, found: list[list[Hypothesis]]) -> list[dict[str, Any]]:
        """The HTTP contract's output objects ``{"text", "score"}`` of each source's best
        hypothesis (``score``: GNMT's length-normalised log-probability)."""
        return [{"text": self.detokenize(h[0].tokens), "score": float(h[0].score)} for h in found]

    def translate(self, texts: list[str], **options: Any) -> list[dict[str, Any]]:
        """``{"text", "score"}`` per text, in order; ``options`` as for :meth:`generate_ids`."""
        return self.outputs(self.generate_ids(self.encode(texts), **options))
