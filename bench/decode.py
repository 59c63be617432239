"""Decoding throughput of a seq2seq checkpoint: greedy and beam 4/8, batched vs. one by one.

Acceptance item: sentences/s for greedy and beam 4/8, batched vs. one by one, one run.

In one process, on one checkpoint and one list of source sentences::

    source lines -> Translator.rows -> ids (cut to the recipe's data.max_length)
      batched:     Translator.search(all ids, beam_size=k)     length-sorted passes of at
                   most max_tokens / k padded source tokens (what the Serve deployment runs)
      one by one:  for each sentence, Translator.search([ids], beam_size=k)

    arms: k in (1 = greedy, 4, 8) x {batched, one by one}, each over all N sentences, in
    rounds whose arm order flips every other round (so a drift in machine load hits every
    arm alike); figures are medians over rounds.

sentences/s = N / wall seconds of the arm; tokens/s counts the output tokens of the best
hypotheses (EOS not counted). tokens per CPU-second (this process's CPU time) is far
less sensitive to other jobs on a shared machine; ``cpu%`` is CPU time over wall time.
Every option not varied here (alpha, max_length, max_length_ratio) is the recipe's
``decode`` setting. ``agree`` is the share of sentences whose batched and one-by-one
best hypotheses are the same tokens (batching must not change results).

An untrained model rarely emits EOS and decodes every sentence to the length cap, which
makes timings meaningless: the report counts the outputs that hit the cap
(``capped``), warns when most do, and then does not write the default report file
(an explicit ``--out`` still gets it). Train a model first.

Usage, from the repository root::

    python bench/decode.py        # runs/demo-translation/checkpoint on its validation sources
    python bench/decode.py --checkpoint runs/multi30k/checkpoint --data ../shared/data/multi30k/val.en
    python bench/decode.py --quick --checkpoint PATH --out /tmp/decode.json   # smoke run

Writes ``bench/results/decode.json`` (every figure, the command, the machine, the date
and the settings); ``--quick`` writes only with ``--out``. Exit status 2 when there is no
checkpoint or no source data, with what to run instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from models.decoding import Hypothesis
from pipelines.apps.translate.predictor import Translator
from pipelines.checkpoint import load_inference
from pipelines.config import Recipe, recipe_from_dict
from pipelines.media.bucketing import plan_batches
from pipelines.media.sources import resolve

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is a folder of scripts; bench.machine is shared
from bench.machine import run_info, write_report  # noqa: E402

DEFAULT_CHECKPOINT = ROOT / "runs" / "demo-translation" / "checkpoint"
FALLBACK_DATA = ROOT.parent / "shared" / "data" / "multi30k" / "val.en"
DEFAULT_OUT = ROOT / "bench" / "results" / "decode.json"
LENGTH_OFFSET = 10
"""``models.decoding``'s ``max_length_offset``: the cap is ``min(max_length, ratio * src + 10)``."""


@dataclass(kw_only=True)
class Settings:
    sentences: int = 200
    """Source sentences decoded by every arm (the first N non-empty lines of the data)."""
    repeats: int = 3
    """Rounds; every arm decodes all sentences once per round."""
    beams: tuple[int, ...] = (1, 4, 8)
    """Beam sizes compared; 1 is greedy search."""
    max_tokens: int = 8192
    """Batched arms' token budget (``Translator(budget=)``, the Serve default
    ``max_batch_tokens``): a pass holds at most ``max_tokens / beam`` padded source tokens."""
    threads: int = 1
    """torch intra-op threads (a Serve replica runs with 1)."""
    warmup: int = 8
    """Sentences each arm decodes, untimed, before the first round."""
    device: str = "cpu"


def quick_settings() -> Settings:
    return Settings(sentences=12, repeats=1, warmup=2)


# ---------------------------------------------------------------------------- inputs


def recorded_sources(recipe: Recipe) -> Path | None:
    """The validation source file named in a checkpoint's recipe (``data.valid`` as a
    ``parallel`` prefix: ``<root>/<valid>.<source_lang>``), when it exists."""
    data = recipe.data
    if not data.valid or not data.source_lang or data.format not in ("auto", "parallel"):
        return None
    prefix = resolve(data.root, data.valid)
    path = prefix.with_name(f"{prefix.name}.{data.source_lang}")
    return path if path.is_file() else None


def read_sources(path: Path, count: int) -> list[str]:
    """The first ``count`` non-empty lines of ``path``."""
    lines = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                lines.append(line.rstrip("\n"))
                if len(lines) == count:
                    break
    return lines


def training_summary(checkpoint: Path) -> dict[str, Any] | None:
    """``summary.json`` of the run the checkpoint came from (``<run>/checkpoint``), if any."""
    path = checkpoint.parent / "summary.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------- timing


def run_arm(translator: Translator, ids: list[list[int]], beam: int,
            batched: bool) -> tuple[float, float, list[list[Hypothesis]]]:
    """Decode ``ids`` once: ``(wall seconds, CPU seconds, hypotheses)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    if batched:
        found = translator.search(ids, beam_size=beam)
    else:
        found = [translator.search([x], beam_size=beam)[0] for x in ids]
    return time.perf_counter() - wall, time.process_time() - cpu, found


def arm_name(beam: int, batched: bool) -> str:
    return f"{'greedy' if beam == 1 else f'beam {beam}'} {'batched' if batched else 'one by one'}"


def measure(translator: Translator, ids: list[list[int]], settings: Settings) -> dict[str, Any]:
    """Every arm, ``settings.repeats`` rounds; per arm medians and per beam ratios."""
    arms = [(beam, batched) for beam in settings.beams for batched in (True, False)]
    for beam, batched in arms:  # warm-up: allocator, first-call overheads
        run_arm(translator, ids[: settings.warmup], beam, batched)
    rounds: dict[tuple[int, bool], list[dict[str, float]]] = {arm: [] for arm in arms}
    outputs: dict[tuple[int, bool], list[list[Hypothesis]]] = {}
    for r in range(settings.repeats):
        for beam, batched in arms if r % 2 == 0 else arms[::-1]:
            seconds, cpu_seconds, found = run_arm(translator, ids, beam, batched)
            tokens = sum(len(h[0].tokens) for h in found)
            rounds[beam, batched].append({"seconds": round(seconds, 4), "cpu_seconds": round(cpu_seconds, 4),
                                          "sentences_per_s": len(ids) / seconds, "tokens_per_s": tokens / seconds,
                                          "tokens_per_cpu_s": tokens / max(cpu_seconds, 1e-9)})
            outputs[beam, batched] = found
            print(f"  round {r + 1}/{settings.repeats} {arm_name(beam, batched):<22} {seconds:7.2f} s "
                  f"{len(ids) / seconds:8.1f} sent/s", flush=True)

    d = translator.recipe.decode
    src_lengths = np.array([len(x) for x in ids])
    caps = np.minimum(d.max_length, (src_lengths * d.max_length_ratio + LENGTH_OFFSET).astype(np.int64))
    results: dict[str, Any] = {"arms": [], "beams": []}
    for beam, batched in arms:
        windows, found = rounds[beam, batched], outputs[beam, batched]
        lengths = np.array([len(h[0].tokens) for h in found])
        results["arms"].append({
            "arm": arm_name(beam, batched), "beam_size": beam, "batched": batched,
            "sentences_per_s": round(statistics.median(w["sentences_per_s"] for w in windows), 2),
            "tokens_per_s": round(statistics.median(w["tokens_per_s"] for w in windows), 1),
            "tokens_per_cpu_s": round(statistics.median(w["tokens_per_cpu_s"] for w in windows), 1),
            "cpu_share": round(sum(w["cpu_seconds"] for w in windows) / sum(w["seconds"] for w in windows), 3),
            "output_tokens": int(lengths.sum()),
            "mean_output_length": round(float(lengths.mean()), 2),
            "length_capped_fraction": round(float((lengths >= caps).mean()), 4),
            "rounds": windows,
        })
    for beam in settings.beams:
        ratios = [b["sentences_per_s"] / o["sentences_per_s"] for b, o in zip(rounds[beam, True], rounds[beam, False])]
        batched_found, single_found = outputs[beam, True], outputs[beam, False]
        agree = np.mean([a[0].tokens == b[0].tokens for a, b in zip(batched_found, single_found)])
        budget = max(settings.max_tokens // beam, int(src_lengths.max()))
        passes = plan_batches(src_lengths, max_tokens=budget, max_batch_size=len(ids), sort=True)
        results["beams"].append({
            "beam_size": beam, "batched_speedup": round(statistics.median(ratios), 2),
            "agree": round(float(agree), 4), "batched_passes": len(passes),
            "mean_sentences_per_pass": round(len(ids) / len(passes), 1),
        })
    return results


# ---------------------------------------------------------------------------- report


def table(results: dict[str, Any]) -> str:
    head = (f"{'arm':<24}{'sent/s':>9}{'tok/s':>10}{'tok/cpu-s':>11}{'cpu%':>6}{'out len':>9}{'capped':>8}"
            f"{'batched x':>11}{'agree':>7}{'passes':>8}")
    lines = [head, "-" * len(head)]
    beams = {b["beam_size"]: b for b in results["beams"]}
    for arm in results["arms"]:
        extra = ""
        if arm["batched"]:
            b = beams[arm["beam_size"]]
            extra = f"{b['batched_speedup']:>10.2f}x{b['agree']:>7.0%}{b['batched_passes']:>8}"
        lines.append(f"{arm['arm']:<24}{arm['sentences_per_s']:>9,.1f}{arm['tokens_per_s']:>10,.0f}"
                     f"{arm['tokens_per_cpu_s']:>11,.0f}{arm['cpu_share']:>6.0%}{arm['mean_output_length']:>9.1f}"
                     f"{arm['length_capped_fraction']:>8.0%}{extra}")
    return "\n".join(lines)


def run_benchmark(checkpoint: Path, data: Path, settings: Settings) -> dict[str, Any]:
    torch.set_num_threads(settings.threads)
    load_start = list(os.getloadavg())
    translator = Translator(load_inference(checkpoint, device=settings.device), budget=settings.max_tokens)
    sources = read_sources(data, settings.sentences)
    ids = translator.rows(sources)
    d = translator.recipe.decode
    print(f"{checkpoint}: {translator.recipe.name}, {sum(p.numel() for p in translator.model.parameters()):,} "
          f"parameters; {len(sources)} sentences from {data} (mean {np.mean([len(x) for x in ids]):.1f} source "
          f"tokens); alpha {d.alpha}, max_length {d.max_length}, max_length_ratio {d.max_length_ratio}; "
          f"{settings.threads} torch thread(s), {os.cpu_count()} CPUs, load average {load_start[0]:.1f}", flush=True)
    results = measure(translator, ids, settings)
    notes = []
    capped = max(arm["length_capped_fraction"] for arm in results["arms"])
    if capped > 0.5:
        notes.append(f"{capped:.0%} of some arm's outputs hit the length cap: an untrained or undertrained model? "
                     "Its timings measure max-length decoding, not translation; do not publish them.")
    return {
        "name": "decode",
        **run_info(torch_threads=torch.get_num_threads(), device=settings.device, load_avg_at_start=load_start,
                   load_avg_at_end=list(os.getloadavg())),
        "checkpoint": str(checkpoint),
        "model": {"recipe": translator.recipe.name, "model": asdict(translator.recipe.model),
                  "parameters": sum(p.numel() for p in translator.model.parameters()),
                  "decode": asdict(d), "source_max_length": translator.max_length},
        "training": training_summary(checkpoint),
        "data": {"path": str(data), "sentences": len(sources),
                 "mean_source_tokens": round(float(np.mean([len(x) for x in ids])), 2)},
        "settings": asdict(settings),
        "notes": notes,
        "results": results,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help=f"seq2seq inference checkpoint (default {DEFAULT_CHECKPOINT.relative_to(ROOT)})")
    parser.add_argument("--data", type=Path, default=None,
                        help="text file, one source sentence a line (default: the checkpoint's validation "
                             f"sources, else {FALLBACK_DATA.relative_to(ROOT.parent)} from the repo's parent)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 12 sentences, 1 round; writes only with --out")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"report JSON (default {DEFAULT_OUT.relative_to(ROOT)}; none with --quick)")
    parser.add_argument("--sentences", type=int, default=None, help="sentences per arm (default 200)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 3)")
    parser.add_argument("--max-tokens", type=int, default=None, help="batched token budget (default 8192)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default 1)")
    parser.add_argument("--device", default=None, help="torch device (default cpu)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    settings = quick_settings() if args.quick else Settings()
    for name in ("sentences", "repeats", "max_tokens", "threads", "device"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    if settings.sentences < 1 or settings.repeats < 1 or settings.max_tokens < 1 or settings.threads < 1:
        parser.error("--sentences, --repeats, --max-tokens and --threads must be >= 1")

    checkpoint = args.checkpoint or DEFAULT_CHECKPOINT
    if not (checkpoint / "meta.json").is_file():
        print(f"error: no seq2seq checkpoint at {checkpoint}. Train one first, e.g.\n"
              f"    rayseq train recipes/demo_translation.yaml --output runs/demo-translation\n"
              f"(it writes runs/demo-translation/checkpoint), or pass --checkpoint PATH. An untrained model "
              f"decodes to the length cap, which would make the timings meaningless.", file=sys.stderr)
        return 2
    meta = json.loads((checkpoint / "meta.json").read_text())
    if meta.get("kind") != "seq2seq":
        print(f"error: {checkpoint} is a {meta.get('kind')} checkpoint; decoding needs a seq2seq one", file=sys.stderr)
        return 2
    data = args.data
    if data is None:
        recipe = recipe_from_dict(yaml.safe_load((checkpoint / "config.yaml").read_text()))
        data = recorded_sources(recipe) or (FALLBACK_DATA if FALLBACK_DATA.is_file() else None)
    if data is None or not data.is_file():
        print(f"error: no source sentences{f' at {data}' if data else ''}: pass --data FILE (one sentence a line)",
              file=sys.stderr)
        return 2
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)

    report = run_benchmark(checkpoint, data, settings)
    report["quick"] = args.quick
    print()
    print(table(report["results"]))
    for note in report["notes"]:
        print(f"note: {note}")
    if args.quick:
        print("note: --quick smoke run (12 sentences, 1 round): not the benchmark's numbers")
    if out is not None and report["notes"] and args.out is None:
        print(f"not writing {out.relative_to(ROOT)}: see the note above (pass --out to write anyway)")
        out = None
    if out is not None:
        write_report(out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
