"""Conditional generation inference: a condition in, sampled (or searched) texts out.

    condition name -> id -> Sampling (temperature, top-k, top-p; one seeded generator
        per sample) or greedy / beam search (``models.decoding``) -> tokenizer -> texts

Sample ``j`` of a request with seed ``s`` draws with the generator seeded by
``item_seed(s, j)``: the same checkpoint, condition, options and seed give the same
samples, and the first ``k`` of ``n`` samples are the ``k`` samples of a request for
``k``, whatever shares the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from models.decoding import Hypothesis, Sampling, generate
from models.seq2seq import UNK_ID, sequence_loss
from pipelines.errors import DataError
from pipelines.inference.predictors import LoadedPredictor, item_seed
from pipelines.media.bucketing import pad_batch
from pipelines.media.tokenization import decode, encode_targets, load_tokenizer


@dataclass(frozen=True)
class Prompt:
    """A row: one condition, one row unit of a serving batch whatever it asks for (as a
    music primer is): the predictor cuts its samples into passes of ``budget //
    max_length`` rows, so the budget bounds every forward pass all the same."""

    condition: int

    def __len__(self) -> int:
        return 1


class ConditionalGenerator(LoadedPredictor):
    """``rows(conditions)`` -> :class:`Prompt` s; ``run(rows, num_samples=, temperature=,
    top_k=, top_p=, seed=, max_length=, beam_size=)`` -> ``{"outputs": [{"text",
    "score"}]}`` per row. ``budget`` bounds one pass: samples x ``max_length`` steps."""

    def __init__(self, loaded, *, budget: int | None = None) -> None:
        super().__init__(loaded, budget=budget)
        self.tokenizer = load_tokenizer(loaded.tokenizer_json)
        self.conditions = list(loaded.meta["conditions"])
        self.generation = self.recipe.generation

    def condition_id(self, name: Any, where: str = "condition") -> int:
        if not isinstance(name, str) or name not in self.conditions:
            raise DataError(f"{where}: unknown condition {name!r}; the model has {', '.join(self.conditions)}")
        return self.conditions.index(name)

    def rows(self, inputs: list) -> list[Prompt]:
        where = "condition" if len(inputs) == 1 else "condition {}"
        return [Prompt(self.condition_id(name, where.format(i))) for i, name in enumerate(inputs)]

    def _limits(self, max_length: int | None, min_length: int | None) -> dict[str, Any]:
        """The search limits: ``min_length`` to ``max_length`` tokens whatever the
        (one-step) source; None takes the recipe's ``generation`` value."""
        longest = self.generation.max_length if max_length is None else max_length
        shortest = self.generation.min_length if min_length is None else min_length
        if longest < 1 or not 0 <= shortest <= longest:
            raise DataError(f"need 0 <= min_length <= max_length and max_length >= 1, got min_length {shortest}, "
                            f"max_length {longest}")
        return {"alpha": self.recipe.decode.alpha, "max_length": longest, "max_length_ratio": float(longest),
                "max_length_offset": 0, "min_length": shortest, "forbidden": (UNK_ID,)}  # a word, not "unknown"

    def _sources(self, conditions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        src = torch.tensor(conditions, dtype=torch.int64, device=self.device).unsqueeze(1)
        return src, torch.ones(len(conditions), dtype=torch.int64)

    @torch.inference_mode()
    def sample(self, conditions: list[int], seeds: list[int], *, temperature: float | None = None,
               top_k: int | None = None, top_p: float | None = None, max_length: int | None = None,
               min_length: int | None = None) -> list[Hypothesis]:
        """One sample per ``(conditions[i], seeds[i])``; options left as None take the
        recipe's ``generation`` values."""
        g = self.generation
        options = {"temperature": g.temperature if temperature is None else temperature,
                   "top_k": g.top_k if top_k is None else top_k, "top_p": g.top_p if top_p is None else top_p}
        limits = self._limits(max_length, min_length)
        per_pass = max(1, self.budget // limits["max_length"])
        found: list[Hypothesis] = []
        for start in range(0, len(conditions), per_pass):
            part = slice(start, start + per_pass)
            generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds[part]]
            strategy = Sampling(generators=generators, **options, **limits)
            found += [h[0] for h in strategy.search(self.model, *self._sources(conditions[part]))]
        return found

    @torch.inference_mode()
    def search(self, conditions: list[int], *, beam_size: int, n_best: int = 1, max_length: int | None = None,
               min_length: int | None = None) -> list[list[Hypothesis]]:
        """The ``n_best`` most probable texts per condition (greedy: ``beam_size`` 1)."""
        if not 1 <= n_best <= beam_size:
            raise DataError(f"num_samples: beam search returns at most beam_size ({beam_size}) texts, "
                            f"asked for {n_best}")
        limits = self._limits(max_length, min_length)
        per_pass = max(1, self.budget // (beam_size * limits["max_length"]))
        found: list[list[Hypothesis]] = []
        for start in range(0, len(conditions), per_pass):
            src, lengths = self._sources(conditions[start:start + per_pass])
            found += generate(self.model, src, lengths, beam_size=beam_size, n_best=n_best, **limits)
        return found

    def detokenize(self, tokens: list[int]) -> str:
        return decode(self.tokenizer, tokens)

    def run(self, rows: list[Prompt], *, num_samples: int = 1, temperature: float | None = None,
            top_k: int | None = None, top_p: float | None = None, seed: int = 0, max_length: int | None = None,
            min_length: int | None = None, beam_size: int | None = None, **_: Any) -> list[dict[str, Any]]:
        """``num_samples`` texts per row: sampled with ``seed``, or with ``beam_size`` the
        beam's best ``num_samples`` (best first)."""
        if beam_size is not None:
            found = self.search([r.condition for r in rows], beam_size=beam_size, n_best=num_samples,
                                max_length=max_length, min_length=min_length)
        else:
            drawn = self.sample([r.condition for r in rows for _ in range(num_samples)],
                                [item_seed(seed, j) for _ in rows for j in range(num_samples)],
                                temperature=temperature, top_k=top_k, top_p=top_p, max_length=max_length,
                                min_length=min_length)
            found = [drawn[i * num_samples:(i + 1) * num_samples] for i in range(len(rows))]
        return [{"outputs": [{"text": self.detokenize(h.tokens), "score": float(h.score)} for h in hypotheses]}
                for hypotheses in found]

    @torch.inference_mode()
    def log_likelihood(self, texts: list[str], conditions: list[int]) -> tuple[float, int]:
        """``(summed negative log-likelihood in nats, tokens)`` of ``texts`` given their
        conditions, end of text included (the training loss, without dropout); passes of
        length-sorted texts, ``rows * longest <= budget``."""
        targets, _ = encode_targets(self.tokenizer, texts, self.recipe.data.target_max_length)
        passes: list[list[int]] = [[]]
        for i in sorted(range(len(texts)), key=lambda i: len(targets[i])):
            if passes[-1] and (len(passes[-1]) + 1) * len(targets[i]) > self.budget:
                passes.append([])
            passes[-1].append(i)
        nll, tokens = 0.0, 0
        for part in passes if texts else []:
            batch = [targets[i] for i in part]
            tgt_in = torch.as_tensor(pad_batch([t[:-1] for t in batch]), dtype=torch.int64, device=self.device)
            tgt_out = torch.as_tensor(pad_batch([t[1:] for t in batch]), dtype=torch.int64, device=self.device)
            tgt_lengths = torch.tensor([len(t) - 1 for t in batch], dtype=torch.int64)
            src, src_lengths = self._sources([conditions[i] for i in part])
            logits = self.model((src, tgt_in), (src_lengths, tgt_lengths))
            nll += float(sequence_loss(logits.float(), tgt_out))
            tokens += int(tgt_lengths.sum())
        return nll, tokens
