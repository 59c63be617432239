"""Summarization next to translation: training tokens/s and decoding sentences/s of the
two text-to-text applications, measured side by side in one process.

Per application, its own data, vocabulary and model (the recipe's ``model`` section)::

    translate   a given checkpoint's recipe and data (--translator); else recipes/multi30k.yaml
                on Multi30k train/val (../shared/data/multi30k); else recipes/demo_translation.yaml
                on the generated translation set
    summarize   likewise: --summarizer; recipes/dialogsum.yaml on DialogSum train/dev;
                recipes/demo_summarize.yaml on generated dialogues

- **Training**: the application's own featurizer on the first ``--examples`` training
  pairs (tokenizer or word vocabulary trained on them), batches under the recipe's token
  budget from length-sorted pools (what bucketing makes), forward + backward + clip +
  Adam step. Windows of ``--window`` seconds alternate between the applications (ABBA),
  and figures are medians over windows: ``tokens/s`` counts real source + target tokens,
  ``target tokens/s`` the target side alone, ``examples/s`` pairs.
- **Decoding**: the application's predictor (what eval and Serve run) on ``--sentences``
  validation sources, the recipe's ``decode`` (beam, and for summaries its minimum length
  and n-gram blocking) in passes of ``max_tokens`` source tokens; ``sentences/s`` and
  output ``tokens/s``, median over rounds whose order flips. The model decoded is a
  checkpoint (``--translator``, ``--summarizer``) when given, else the one the training
  arm just trained (a few minutes of training: timings of real lengths only once it
  stops where a summary stops; ``capped`` counts outputs that ran to ``max_length``).

Usage, from the repository root::

    python bench/text2text.py                     # about 10 min on 2 cores
    python bench/text2text.py --summarizer runs/dialogsum/checkpoint --translator runs/multi30k/checkpoint
    python bench/text2text.py --quick --out /tmp/text2text.json     # the smoke run CI makes

Writes ``bench/results/text2text.json`` (``--quick`` only with ``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import run_info, write_report  # noqa: E402
from pipelines import apps  # noqa: E402
from pipelines.config import Recipe  # noqa: E402
from pipelines.media.bucketing import pad_batch  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "bench" / "results" / "text2text.json"


@dataclass
class Application:
    """One side of the comparison: its recipe, pairs and featurized batches."""

    name: str
    recipe: Recipe
    data: str
    train: list[tuple[str, str]]
    valid: list[str]
    batches: list[dict[str, torch.Tensor]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


def _jsonl_pairs(path: Path, source: str, target: str, count: int) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()[:count]]
    return [(r[source], r[target]) for r in rows]


def _lines(path: Path, count: int) -> list[str]:
    return [line.rstrip("\n") for line in path.open(encoding="utf-8")][:count]


def recipe_pairs(recipe: Recipe, which: str, count: int) -> list[tuple[str, str]]:
    """The first ``count`` pairs of a recipe's ``train`` or ``valid`` split: ``parallel``
    files or JSON lines with its source/target columns (what these two recipes read)."""
    from pipelines.media.sources import resolve

    data = recipe.data
    path = resolve(data.root, data.train if which == "train" else data.valid)
    if data.source_lang:
        return list(zip(_lines(path.with_name(f"{path.name}.{data.source_lang}"), count),
                        _lines(path.with_name(f"{path.name}.{data.target_lang}"), count)))
    return _jsonl_pairs(path, data.source_column, data.target_column, count)


def applications(examples: int, sentences: int, quick: bool, scratch: Path,
                 checkpoints: dict[str, Path | None]) -> list[Application]:
    """Translation and summarization: a checkpoint's own recipe and data when one is given,
    else the real-data recipe when its data is here (not in quick mode), else the demo
    recipe on data generated into ``scratch``."""
    from pipelines.apps.summarize.generate import write_dialogues
    from pipelines.apps.translate.generate import write_translation
    from pipelines.config import load_recipe

    sides = {"translate": ("multi30k.yaml", SHARED / "multi30k", "demo_translation.yaml", write_translation),
             "summarize": ("dialogsum.yaml", SHARED / "dialogsum", "demo_summarize.yaml", write_dialogues)}
    out = []
    for name, (real, folder, demo, write) in sides.items():
        if checkpoints.get(name):
            recipe, data = load_recipe(checkpoints[name] / "config.yaml"), "the checkpoint's"
        elif folder.is_dir() and not quick:
            recipe, data = load_recipe(ROOT / "recipes" / real), folder.name
            recipe.data.root = str(folder)
        else:
            recipe, data = load_recipe(ROOT / "recipes" / demo), "generated"
            recipe.data.root = str(write(scratch / name, size=min(examples, 4000), seed=0))
        if data == "the checkpoint's":
            data = f"checkpoint's: {Path(recipe.data.root).name}"
        out.append(Application(name, recipe, data,
                               recipe_pairs(recipe, "train", examples),
                               [s for s, _ in recipe_pairs(recipe, "valid", sentences)]))
    return out


def featurize(app: Application) -> None:
    """Tokenizer(s) on the training pairs, featurized rows, batches under the token budget."""
    data = app.recipe.data
    batch = {"source": np.array([s for s, _ in app.train]), "target": np.array([t for _, t in app.train]),
             "index": np.arange(len(app.train))}
    if app.name == "summarize":
        from pipelines.apps.summarize.data import FeaturizeCopyPairs
        from pipelines.apps.summarize.words import train_word_tokenizer

        tokenizer = train_word_tokenizer([t for pair in app.train for t in pair], app.recipe.tokenizer)
        features = FeaturizeCopyPairs(tokenizer.to_str(), data.max_length, data.target_max_length)(batch)
        app.files, app.sizes = {"tokenizer.json": tokenizer.to_str()}, {"vocab_size": tokenizer.get_vocab_size()}
    else:
        from pipelines.media.pairs import FeaturizePairs
        from pipelines.media.tokenization import train_translation_tokenizers, translation_tokenizer_files

        tokenizers = train_translation_tokenizers(lambda: (s for s, _ in app.train), lambda: (t for _, t in app.train),
                                                  app.recipe.tokenizer)
        features = FeaturizePairs(tokenizers.source.to_str(), tokenizers.target.to_str(), data.max_length,
                                  data.target_max_length)(batch)
        src, tgt = tokenizers.vocab_sizes
        app.files, app.sizes = translation_tokenizer_files(tokenizers), {"src_vocab_size": src, "tgt_vocab_size": tgt}
    order = np.argsort(features["src_length"], kind="stable")
    budget, most = app.recipe.batching.max_tokens, app.recipe.batching.max_batch_size
    rows: list[int] = []
    for i in order.tolist():
        longest = max([int(features["src_length"][i]), *(int(features["src_length"][r]) for r in rows[-1:])])
        if rows and (len(rows) + 1 > most or (len(rows) + 1) * longest > budget):
            app.batches.append(_batch(features, rows))
            rows = []
        rows.append(i)
    if rows:
        app.batches.append(_batch(features, rows))
    np.random.default_rng(0).shuffle(app.batches)


def _batch(features: dict[str, Any], rows: list[int]) -> dict[str, torch.Tensor]:
    tgt = [features["tgt_ids"][r] for r in rows]
    return {"src": torch.as_tensor(pad_batch([features["src_ids"][r] for r in rows]), dtype=torch.int64),
            "src_lengths": torch.as_tensor(features["src_length"][rows]),
            "tgt_in": torch.as_tensor(pad_batch([t[:-1] for t in tgt]), dtype=torch.int64),
            "tgt_out": torch.as_tensor(pad_batch([t[1:] for t in tgt]), dtype=torch.int64),
            "tgt_lengths": torch.tensor([len(t) - 1 for t in tgt])}


class Trainer:
    """One application's model and optimizer, stepping through its batches in a loop."""

    def __init__(self, app: Application) -> None:
        self.app, self.task = app, apps.app_for(app.recipe)
        self.model = self.task.build(app.recipe.model, app.sizes, seed=0).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=app.recipe.train.lr)
        self.next = 0

    def window(self, seconds: float) -> dict[str, float]:
        tokens = target = examples = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            b = self.app.batches[self.next % len(self.app.batches)]
            self.next += 1
            out = self.model((b["src"], b["tgt_in"]), (b["src_lengths"], b["tgt_lengths"]))
            loss = self.task.loss(out, b["tgt_out"], 0.0)
            self.optimizer.zero_grad()
            (loss / b["tgt_lengths"].sum()).backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 2.0)
            self.optimizer.step()
            target += int(b["tgt_lengths"].sum())
            tokens += int(b["src_lengths"].sum()) + int(b["tgt_lengths"].sum())
            examples += len(b["src_lengths"])
        wall = time.perf_counter() - start
        return {"tokens_per_s": tokens / wall, "target_tokens_per_s": target / wall, "examples_per_s": examples / wall}

    def export(self, folder: Path) -> Path:
        from pipelines.checkpoint import export_inference

        shards = folder / f"{self.app.name}-train"
        shards.mkdir(parents=True)
        torch.save(self.model.state_dict(), shards / "model.stage0.pt")
        return export_inference(shards, folder / self.app.name, recipe=self.app.recipe, app=self.task,
                                files=self.app.files, meta=dict(self.app.sizes))


def decode_round(predictor, texts: list[str]) -> dict[str, float]:
    start = time.perf_counter()
    outputs = predictor.run(predictor.rows(texts))
    wall = time.perf_counter() - start
    lengths = [len(o["text"].split()) for o in outputs]
    return {"sentences_per_s": len(texts) / wall, "words_per_s": sum(lengths) / wall,
            "mean_words": sum(lengths) / len(lengths)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: generated data, tiny models, seconds")
    parser.add_argument("--examples", type=int, default=4000, help="training pairs featurized per application")
    parser.add_argument("--sentences", type=int, default=100, help="validation sources decoded per round")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of one training window")
    parser.add_argument("--windows", type=int, default=4, help="training windows per application")
    parser.add_argument("--rounds", type=int, default=3, help="decoding rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--translator", type=Path)
    parser.add_argument("--summarizer", type=Path)
    parser.add_argument("--out", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.examples, args.sentences, args.window, args.windows, args.rounds = 400, 8, 1.0, 2, 1
    torch.set_num_threads(args.threads)
    from pipelines.checkpoint import load_predictor

    with tempfile.TemporaryDirectory() as scratch:
        given = {"translate": args.translator, "summarize": args.summarizer}
        chosen = applications(args.examples, args.sentences, args.quick, Path(scratch), given)
        for app in chosen:
            featurize(app)
        trainers = [Trainer(app) for app in chosen]
        windows: dict[str, list[dict[str, float]]] = {app.name: [] for app in chosen}
        for w in range(args.windows):
            for trainer in (trainers if w % 2 == 0 else trainers[::-1]):
                windows[trainer.app.name].append(trainer.window(args.window))
        predictors = {}
        for trainer in trainers:
            path = given[trainer.app.name] or trainer.export(Path(scratch) / "checkpoints")
            predictors[trainer.app.name] = load_predictor(path)
            predictors[trainer.app.name].refuse_longer = False  # scored as eval does: long sources cut
        rounds: dict[str, list[dict[str, float]]] = {app.name: [] for app in chosen}
        for r in range(args.rounds):
            for app in (chosen if r % 2 == 0 else chosen[::-1]):
                rounds[app.name].append(decode_round(predictors[app.name], app.valid))

    def median(rows: list[dict[str, float]], key: str) -> float:
        return round(statistics.median(row[key] for row in rows), 2)

    results = []
    for app, trainer in zip(chosen, trainers):
        decode = app.recipe.decode
        results.append({
            "application": app.name, "data": app.data, "examples": len(app.train),
            "model": {k: getattr(app.recipe.model, k) for k in ("kind", "embed_dim", "hidden_size", "num_layers",
                                                                "decoder_layers")},
            "checkpoint": str(given[app.name]) if given[app.name] else f"trained here ({trainer.next} steps)",
            "train": {k: median(windows[app.name], k) for k in ("tokens_per_s", "target_tokens_per_s",
                                                                 "examples_per_s")},
            "decode": {"beam_size": decode.beam_size, "min_length": decode.min_length,
                       "no_repeat_ngram": decode.no_repeat_ngram, "sentences": len(app.valid),
                       **{k: median(rounds[app.name], k) for k in ("sentences_per_s", "words_per_s", "mean_words")}},
        })
    print(f"{'application':<11} {'data':<21} {'train tok/s':>11} {'target tok/s':>12} {'ex/s':>7} "
          f"{'decode sent/s':>13} {'words/s':>8} {'words':>6}")
    for r in results:
        print(f"{r['application']:<11} {r['data']:<21} {r['train']['tokens_per_s']:>11,.0f} "
              f"{r['train']['target_tokens_per_s']:>12,.0f} {r['train']['examples_per_s']:>7.1f} "
              f"{r['decode']['sentences_per_s']:>13.2f} {r['decode']['words_per_s']:>8.1f} "
              f"{r['decode']['mean_words']:>6.1f}")
    report = {**run_info(torch_threads=args.threads), "quick": args.quick,
              "settings": vars(args) | {"out": str(args.out)}, "results": results}
    out = args.out or (None if args.quick else DEFAULT_OUT)
    if out is not None:
        write_report(out, json.loads(json.dumps(report, default=str)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
