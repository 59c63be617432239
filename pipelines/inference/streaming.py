"""Streaming greedy generation: each output token and the text it adds, as the decoder makes them.

The streamed form of a generator's ``generate_*(..., beam_size=1)`` (``Translator``,
``SpeechRecognizer``, ``VideoCaptioner``): the same length-sorted passes and the same
greedy steps (:meth:`models.decoding.GreedySearch.steps`), so what it streams is exactly what
the non-streamed call returns. Items are plain dicts, ready for JSON lines or SSE::

    {"type": "token", "index": i, "token": 17, "delta": "fünf"}
        one per output token of input ``i`` (EOS not included), in order
    {"type": "final", "index": i, "delta": "", "text": "...", "score": -1.23, "tokens": [...]}
        once per input, after its last token (at the step its EOS came): ``text`` and
        ``score`` are the non-streamed ``{"text", "score"}``; ``delta`` is any text held
        back so far (normally none, see :class:`TextDeltas`)

Joining an input's ``delta`` values, its final item's included, gives its ``text``.
Inputs of one pass interleave step by step; passes run one after another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

from models.decoding import GreedySearch, GreedyStep, IncrementalDecoder
from models.layers import PAD_ID
from models.seq2seq import EOS_ID

Detokenize = Callable[[list[int]], str]
"""Output token ids (no BOS/EOS) -> text, as the non-streamed outputs make it."""

Pass = tuple[np.ndarray, torch.Tensor, torch.Tensor]
"""``(rows (B,), sources (B, S, ...) on the model's device, lengths (B,) int64 CPU)``:
one decoding pass, ``rows`` being the inputs' positions (as ``pipelines.media.bucketing`` makes them)."""


class TextDeltas:
    """The text each new token adds to one output.

    Subword pieces (BPE, WordPiece) join without spaces and the tokenizer's decoder
    decides where spaces go, so a token's own text is not its delta: the whole prefix
    is decoded each step (a few hundred tokens at most: cheap beside a decoder step) and
    the delta is what it adds to the text already sent. Text that does not extend what
    was sent (a byte-level decoder's incomplete character, shown as U+FFFD) is held back
    until it does; :meth:`rest` gives what is left at the end.

    Deltas join into the full text when the decoder only appends as tokens come, as
    rayseq's Metaspace decoders do (every tokenizer kind; tests check it). One that
    rewrote text already sent would leave the final item's ``text`` the only exact copy.
    """

    def __init__(self, detokenize: Detokenize) -> None:
        self.detokenize = detokenize
        self.tokens: list[int] = []
        self.sent = ""

    def add(self, token: int) -> str:
        """Append ``token``; the text to send now (may be empty)."""
        self.tokens.append(token)
        text = self.detokenize(self.tokens)
        if text.endswith("\ufffd") or not text.startswith(self.sent):
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta

    def rest(self) -> tuple[str, str]:
        """``(full text, what of it was not sent yet)``."""
        text = self.detokenize(self.tokens)
        return text, text[len(self.sent):] if text.startswith(self.sent) else ""


def stream_greedy(model: IncrementalDecoder, passes: Iterable[Pass], detokenize: Detokenize,
                  **limits: Any) -> Iterator[dict[str, Any]]:
    """Items (module docstring) of every input of ``passes``, decoded greedily with
    ``limits`` (``alpha``, ``max_length``, ``max_length_ratio``: see
    :func:`models.decoding.generate`). Bad limits raise here, before any item; then each
    ``next`` runs at most one decoder step (the first also encodes its pass)."""
    search = GreedySearch(**limits)
    return _stream_passes(model, passes, detokenize, search)


@torch.inference_mode()
def _stream_passes(model: IncrementalDecoder, passes: Iterable[Pass], detokenize: Detokenize,
                   search: GreedySearch) -> Iterator[dict[str, Any]]:
    for rows, sources, lengths in passes:
        texts = [TextDeltas(detokenize) for _ in rows]
        for step in search.steps(model, model.encode(sources, lengths), lengths):
            yield from _step_items(step, rows, texts)


def _step_items(step: GreedyStep, rows: np.ndarray, texts: list[TextDeltas]) -> Iterator[dict[str, Any]]:
    """A token item per row that decoded a token this step, a final item per row that ended."""
    tokens = step.tokens.tolist()  # the step's one host sync (two when some row ends)
    scores = step.scores.tolist() if EOS_ID in tokens else None
    for b, token in enumerate(tokens):
        if token == PAD_ID:  # ended at an earlier step (greedy search never picks PAD)
            continue
        index = int(rows[b])
        if token == EOS_ID:
            yield _final_item(index, texts[b], scores[b])
        else:
            yield {"type": "token", "index": index, "token": token, "delta": texts[b].add(token)}


def _final_item(index: int, text: TextDeltas, score: float) -> dict[str, Any]:
    full, rest = text.rest()
    return {"type": "final", "index": index, "delta": rest, "text": full, "score": score, "tokens": list(text.tokens)}
