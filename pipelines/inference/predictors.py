"""The predictor interface every application's inference implements, and its two shapes.

``rayseq eval`` (inside Ray Data ``map_batches``), the end-of-training scores, Ray Serve
and the benchmarks all drive a loaded checkpoint through the same three calls::

    rows(inputs)            texts -> token ids; uploads ``(name, bytes)`` -> frames
    run(rows, **options)    one JSON-able answer per row, in order
    stream(rows, **options) greedy decoding as it goes (decoders only)

and ``predict(inputs, **options)`` is ``run(rows(inputs))``. Rows of any medium batch the
same way: sorted by length and cut under a budget of ``rows * longest`` positions
(tokens, or frames), then put back in input order::

    Classifier:  rows -> batches -> model -> softmax -> {"label", "score", "scores"}
    Decoder:     rows -> passes (budget / beam) -> models.decoding.generate (greedy or
                 beam) -> hypotheses -> {"text", "score"}

An application whose answers are neither (the tagger: ``{"tokens", "tags",
"entities"}``) subclasses :class:`LoadedPredictor` itself.

Decoding options a call leaves out (``beam_size``, ``max_length``, GNMT ``alpha``,
``max_length_ratio``) come from the checkpoint recipe's ``decode`` section.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from models.decoding import Hypothesis, generate
from pipelines.inference.streaming import Pass, stream_greedy

Batch = tuple[np.ndarray, torch.Tensor, torch.Tensor]
"""``(rows, inputs (B, ...) on the device, lengths (B,) int64 on the CPU)``; ``rows``
are positions in the list the batch was cut from."""


def predictions(probs: np.ndarray, labels: list[str]) -> list[dict[str, Any]]:
    """``(inputs, labels)`` probabilities -> the HTTP contract's prediction objects."""
    return [
        {
            "label": labels[int(row.argmax())],
            "score": float(row.max()),
            "scores": {name: float(p) for name, p in zip(labels, row)},
        }
        for row in probs
    ]


def item_seed(seed: int, item: int) -> int:
    """The generator seed of item ``item`` (a word, a sample) of a request sampled with
    ``seed``: each item's draws depend on the request's seed and its own position only,
    not on what else shares the batch."""
    return int(np.random.SeedSequence([seed, item]).generate_state(1, np.uint64)[0] >> 1)


class LoadedPredictor:
    """A loaded checkpoint (``pipelines.checkpoint.InferenceCheckpoint``) in eval mode on
    its device; ``budget`` bounds one forward pass in row units (tokens or frames)."""

    default_budget = 8192

    def __init__(self, loaded, *, budget: int | None = None) -> None:
        budget = self.default_budget if budget is None else budget
        if budget < 1:
            raise ValueError(f"the batch budget must be >= 1, got {budget}")
        self.loaded = loaded
        self.model = loaded.model
        self.recipe = loaded.recipe
        self.device = loaded.device
        self.budget = budget

    def rows(self, inputs: list) -> list:
        raise NotImplementedError

    def batches(self, rows: list, budget: int) -> Iterator[Batch]:
        """``rows`` sorted by length, ``rows * longest <= budget``, on the device."""
        raise NotImplementedError

    def run(self, rows: list, **options: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def predict(self, inputs: list, **options: Any) -> list[dict[str, Any]]:
        return self.run(self.rows(inputs), **options)


class Classifier(LoadedPredictor):
    """seq2vec: ``run(rows)`` -> ``{"label", "score", "scores"}`` per row."""

    @property
    def labels(self) -> list[str]:
        return self.loaded.labels

    @torch.inference_mode()
    def probabilities(self, rows: list) -> np.ndarray:
        """``(len(rows), labels)`` probabilities, in input order."""
        out = np.zeros((len(rows), len(self.labels)), dtype=np.float32)
        for index, inputs, lengths in self.batches(rows, self.budget):
            logits = self.model(inputs, lengths)
            out[index] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out

    def run(self, rows: list, **options: Any) -> list[dict[str, Any]]:
        if options:
            raise TypeError(f"a classifier takes no options, got {sorted(options)}")
        return predictions(self.probabilities(rows), self.labels)


class Decoder(LoadedPredictor):
    """seq2seq and vec2seq: ``run(rows, beam_size=, max_length=)`` -> ``{"text", "score"}``
    per row (best hypothesis; ``score``: GNMT's length-normalised log-probability).

    A pass holds at most ``budget / beam_size`` source positions: each beam row keeps a
    copy of its source's encoder memory, which every decoder step attends over."""

    def detokenize(self, tokens: list[int]) -> str:
        raise NotImplementedError

    def passes(self, rows: list, beam_size: int) -> Iterator[Pass]:
        if not rows:
            return
        yield from self.batches(rows, max(self.budget // beam_size, max(len(x) for x in rows)))

    def _search(self, inputs: torch.Tensor, lengths: torch.Tensor, **options: Any) -> list[list[Hypothesis]]:
        """One pass's hypotheses (the model's own search: beam or greedy)."""
        return generate(self.model, inputs, lengths, **options)

    def _rows_per_source(self, beam_size: int) -> int:
        return beam_size

    @torch.inference_mode()
    def search(self, rows: list, *, beam_size: int | None = None, alpha: float | None = None,
               max_length: int | None = None, max_length_ratio: float | None = None,
               min_length: int | None = None, no_repeat_ngram: int | None = None,
               n_best: int = 1) -> list[list[Hypothesis]]:
        """``n_best`` hypotheses per row (best first), in input order. ``max_length`` caps
        output tokens, as does ``max_length_ratio * source length + 10``; options left as
        None take the recipe's ``decode`` values (``min_length`` and ``no_repeat_ngram``
        too, capped at ``max_length``)."""
        decode = self.recipe.decode
        beam_size = decode.beam_size if beam_size is None else beam_size
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        limits = decode.limits(alpha=alpha, max_length=max_length, max_length_ratio=max_length_ratio)
        if min_length is not None:
            limits["min_length"] = min_length
        if no_repeat_ngram is not None:
            limits["no_repeat_ngram"] = no_repeat_ngram
        limits["min_length"] = min(limits["min_length"], limits["max_length"])
        options = dict(beam_size=beam_size, n_best=n_best, **limits)
        out: list[list[Hypothesis]] = [[] for _ in rows]
        for index, inputs, lengths in self.passes(rows, self._rows_per_source(beam_size)):
            for r, hypotheses in zip(index, self._search(inputs, lengths, **options)):
                out[r] = hypotheses
        return out

    def outputs(self, found: list[list[Hypothesis]]) -> list[dict[str, Any]]:
        """``{"text", "score"}`` of each row's best hypothesis."""
        return [{"text": self.detokenize(h[0].tokens), "score": float(h[0].score)} for h in found]

    def run(self, rows: list, **options: Any) -> list[dict[str, Any]]:
        return self.outputs(self.search(rows, **options))

    def stream(self, rows: list, *, alpha: float | None = None, max_length: int | None = None,
               max_length_ratio: float | None = None) -> Iterator[dict[str, Any]]:
        """Greedy decoding of ``rows`` as it goes (``pipelines.inference.streaming``
        items: each output token with the text it adds, then ``{"text", "score"}`` per
        row), equal to ``run(rows, beam_size=1)``'s results."""
        limits = self.recipe.decode.limits(alpha=alpha, max_length=max_length, max_length_ratio=max_length_ratio)
        return stream_greedy(self.model, self.passes(rows, 1), self.detokenize, **limits)
