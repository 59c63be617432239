"""Entity-level precision, recall and F1 (CoNLL's figures, as conlleval and ``seqeval``'s
default mode compute them): an entity counts as found only when its type and both
boundaries match a gold one exactly; micro-averaged over all entities, and per type."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pipelines.media.tags import Span, spans


@dataclass
class EntityCounts:
    """Matched, predicted and gold entities, in all and per type."""

    found: Counter = field(default_factory=Counter)
    predicted: Counter = field(default_factory=Counter)
    gold: Counter = field(default_factory=Counter)
    sentences: int = 0
    tokens: int = 0
    correct_tags: int = 0

    def add(self, gold_tags: Sequence[str], predicted_tags: Sequence[str]) -> None:
        """One sentence's gold and predicted tags (any scheme each: compared as spans)."""
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(f"{len(predicted_tags)} predicted tags for {len(gold_tags)} tokens")
        self.add_spans(spans(gold_tags), spans(predicted_tags))
        self.tokens += len(gold_tags)
        self.correct_tags += sum(a == b for a, b in zip(gold_tags, predicted_tags))

    def add_spans(self, gold: Iterable[Span], predicted: Iterable[Span]) -> None:
        gold, predicted = set(gold), set(predicted)
        self.sentences += 1
        for kind, *_ in gold:
            self.gold[kind] += 1
        for kind, *_ in predicted:
            self.predicted[kind] += 1
        for kind, *_ in gold & predicted:
            self.found[kind] += 1

    @staticmethod
    def _prf(found: int, predicted: int, gold: int) -> dict[str, float]:
        precision = found / predicted if predicted else 0.0
        recall = found / gold if gold else 0.0
        f1 = 2 * found / (predicted + gold) if predicted + gold else 0.0
        return {"precision": round(100 * precision, 2), "recall": round(100 * recall, 2), "f1": round(100 * f1, 2)}

    def report(self) -> dict:
        """``{f1, precision, recall}`` (x 100), entity counts and ``per_type``."""
        totals = self._prf(sum(self.found.values()), sum(self.predicted.values()), sum(self.gold.values()))
        per_type = {kind: {**self._prf(self.found[kind], self.predicted[kind], self.gold[kind]),
                           "gold": self.gold[kind], "predicted": self.predicted[kind]}
                    for kind in sorted(set(self.gold) | set(self.predicted))}
        return {**totals, "examples": self.sentences, "gold_entities": sum(self.gold.values()),
                "predicted_entities": sum(self.predicted.values()),
                "tag_accuracy": round(self.correct_tags / self.tokens, 4) if self.tokens else 0.0,
                "per_type": per_type}
