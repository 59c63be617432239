"""``rayseq eval`` of a conditional generator: does it write what was asked, fluently and
variedly?

- ``perplexity``: of the validation texts given their own condition (nats per token,
  end of text included, exponentiated), the figure a language model is compared on;
- ``generation.num_samples`` samples per condition (the recipe's temperature, top-k,
  top-p; sample ``j`` seeded ``item_seed(generation.seed, j)``), then
  - ``condition_accuracy``: the share of samples that ``generation.classifier`` (a text
    classifier trained separately on real text) labels with the condition asked for;
  - ``sample_perplexity``: the samples' perplexity under ``generation.language_model`` (an
    unconditioned model, trained separately), with ``lm_perplexity``, that model's own on
    the validation texts: a conditioned model should beat it;
  - ``distinct_1``/``distinct_2`` over all samples and ``self_bleu`` (mean over
    conditions; higher is less diverse): ``pipelines.scoring.diversity``;
- ``greedy`` and ``beam`` (``decode.beam_size``): the most probable text per condition,
  for comparison.

With ``--predictions``, one JSON line per sample (condition, text, score, judged label).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.errors import ConfigError


def validation_records(recipe) -> list[dict[str, str]]:
    """The validation records ``{text, label, origin}`` as training read them (the
    ``data.valid`` split, or the part ``data.valid_fraction`` carves out), else none."""
    from pipelines.media.sources import check_records, read_checked_splits, read_split

    data = recipe.data
    if data.valid_fraction:
        _, valid, _ = read_checked_splits(data)
    elif data.valid:  # the training file is not read (rayseq eval has only the file to score)
        valid = check_records(read_split(data, "valid"), data.on_bad_record, "eval")
    else:
        return []
    return list(valid.dataset.select_columns(["text", "label", "origin"]).iter_rows())


def _perplexity(nll: float, tokens: int) -> float | None:
    return math.exp(min(nll / tokens, 50.0)) if tokens else None


def _validation_perplexity(model, records: list[dict[str, str]]) -> float | None:
    """Of ``records`` given their own condition (an unconditioned model: its only one)."""
    from pipelines.apps.text_generate.data import UNCONDITIONED

    if not records:
        return None
    if model.conditions == [UNCONDITIONED]:
        ids = [0] * len(records)
    else:
        ids = [model.condition_id(r["label"], f"{r['origin']}: label") for r in records]
    return _perplexity(*model.log_likelihood([r["text"] for r in records], ids))


def _classifier(path: str, conditions: list[str], device: str):
    from pipelines.checkpoint import load_predictor

    judge = load_predictor(Path(path), device=device)
    if judge.loaded.app.name != "text_classify":
        raise ConfigError(f"generation.classifier: {path} is a {judge.loaded.app.name} model; it must be a text "
                          "classifier (app text_classify)")
    missing = [c for c in conditions if c not in judge.loaded.labels]
    if missing:
        raise ConfigError(f"generation.classifier: {path} has labels {judge.loaded.labels}, not the conditions "
                          f"{missing}; train it with the same data.label_names")
    return judge


def _language_model(path: str, device: str):
    from pipelines.apps.text_generate.data import UNCONDITIONED
    from pipelines.checkpoint import load_predictor

    lm = load_predictor(Path(path), device=device)
    if lm.loaded.app.name != "text_generate" or lm.conditions != [UNCONDITIONED]:
        raise ConfigError(f"generation.language_model: {path} must be an unconditioned language model (app "
                          "text_generate trained with generation.conditioned=false)")
    return lm


def evaluate(checkpoint: Path, recipe, predictions: Path | None = None, *, judged: bool = True,
             device: str = "cpu") -> dict[str, Any]:
    """The figures above; ``judged=False`` leaves out those needing other checkpoints."""
    from pipelines.apps.text_generate.predictor import ConditionalGenerator
    from pipelines.checkpoint import load_predictor
    from pipelines.inference.predictors import item_seed
    from pipelines.scoring.diversity import distinct_n, self_bleu

    g = recipe.generation
    model = load_predictor(checkpoint, device=device)
    if not isinstance(model, ConditionalGenerator):
        raise ConfigError(f"{checkpoint}: a {model.loaded.app.name} model, not a conditional generator")
    judge = _classifier(g.classifier, model.conditions, device) if judged and g.classifier else None
    lm = _language_model(g.language_model, device) if judged and g.language_model else None
    records = validation_records(recipe)

    jobs = [(c, j) for c in range(len(model.conditions)) for j in range(g.num_samples)]
    drawn = model.sample([c for c, _ in jobs], [item_seed(g.seed, j) for _, j in jobs], temperature=g.temperature,
                         top_k=g.top_k, top_p=g.top_p, max_length=g.max_length,
                         min_length=g.min_length)  # the eval recipe's, --set included
    texts = [model.detokenize(h.tokens) for h in drawn]
    asked = [model.conditions[c] for c, _ in jobs]
    words = [text.split() for text in texts]
    heard = [p["label"] for p in judge.predict(texts)] if judge is not None else None

    per_condition: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(model.conditions):
        members = [i for i, (cc, _) in enumerate(jobs) if cc == c]
        group = [words[i] for i in members]
        per_condition[name] = {
            "condition_accuracy": None if heard is None else float(np.mean([heard[i] == name for i in members])),
            "distinct_2": distinct_n(group, 2), "self_bleu": self_bleu(group),
            "mean_words": float(np.mean([len(w) for w in group])),
            "examples": [texts[i] for i in members[:3]],
        }
    conditions = list(range(len(model.conditions)))
    limits = {"max_length": g.max_length, "min_length": g.min_length}
    greedy = model.search(conditions, beam_size=1, **limits)
    beam = model.search(conditions, beam_size=recipe.decode.beam_size, **limits)
    report: dict[str, Any] = {
        "condition_accuracy": None if heard is None else float(np.mean([h == a for h, a in zip(heard, asked)])),
        "perplexity": _validation_perplexity(model, records),
        "sample_perplexity": None if lm is None else _perplexity(*lm.log_likelihood(texts, [0] * len(texts))),
        "lm_perplexity": None if lm is None else _validation_perplexity(lm, records),
        "distinct_1": distinct_n(words, 1),
        "distinct_2": distinct_n(words, 2),
        "self_bleu": float(np.mean([v["self_bleu"] for v in per_condition.values()])),
        "mean_words": float(np.mean([len(w) for w in words])),
        "examples": len(texts),
        "validation_texts": len(records),
        "sampling": {"temperature": g.temperature, "top_k": g.top_k, "top_p": g.top_p, "seed": g.seed,
                     "max_length": g.max_length, "min_length": g.min_length, "per_condition": g.num_samples},
        "judges": {"classifier": g.classifier or None, "language_model": g.language_model or None},
        "conditions": per_condition,
        "greedy": {name: model.detokenize(h[0].tokens) for name, h in zip(model.conditions, greedy)},
        "beam": {name: model.detokenize(h[0].tokens) for name, h in zip(model.conditions, beam)},
    }
    if predictions is not None:
        with predictions.open("w", encoding="utf-8") as out:
            for i, ((_, j), text, h) in enumerate(zip(jobs, texts, drawn)):
                out.write(json.dumps({"condition": asked[i], "sample": j, "text": text, "score": round(h.score, 4),
                                      "judged": None if heard is None else heard[i]}) + "\n")
        report["predictions"] = str(predictions)
    return report
