"""Data preparation at scale: how translation data preparation's time and memory grow
with the corpus (issue 28 item 4).

For each corpus size (default 30k, 300k and 3M sentence pairs), in one process::

    write the corpus once (WORK/pairs-<size>/train.{en,de} + val.{en,de})
    Translate.prepare(recipe)        the project's own path: read + check (Ray Data),
                                     tokenizer training, featurize, bucket (or, past
                                     batching.stream's threshold, the streaming plan)
    iterate the training batches once, as a Ray Train worker does (streaming_split +
    the worker's seeded shuffle buffer), counting batches, pairs and tokens

Corpora are Multi30k-shaped: the train pairs of ``--data-root``/multi30k (29,000) copied
until the size is reached, each copy's lines ending in a marker of its own (`` ~<copy>``)
so no two lines are equal; without Multi30k the number sentences of
``pipelines.apps.translate.generate`` (seeded) stand in, labeled ``FALLBACK:numbers``.
Validation is Multi30k's val (1,014 pairs; or a generated quarter-size split, capped at
2,000) at every size, so the figures grow with the training split alone.

Measured, per size:

- wall seconds of preparation, total and per stage (``PreparedData.stage_s``: read +
  check, tokenizer, featurize, bucket, valid), and per pair (microseconds);
- peak driver RSS: ``/proc/self/status`` VmRSS sampled every 50 ms in a thread during
  preparation (and separately during the iteration; per stage from a 0.5 s timeline), and
  VmHWM (the kernel's peak, reset per size through ``/proc/self/clear_refs``); the Ray
  worker processes are not counted;
- object-store bytes: ``object_store_bytes_used`` of the raylet's store stats (what
  ``ray memory --stats-only`` prints), sampled every 0.5 s (peak) and read after
  preparation (what stays pinned for training), plus bytes spilled to disk;
- iteration: training batches/s, pairs/s and tokens/s of one epoch through
  ``streaming_split(1)`` and ``pipelines.engine.ingest.shuffled_epochs``.

Each size runs in a fresh local Ray instance (2 CPUs, as the machine; a process already
connected to Ray, as the smoke test, uses that one). Usage, from the
repository root::

    python bench/ingest.py                          # 30k, 300k, 3M; writes bench/results/ingest.json
    python bench/ingest.py --sizes 30000,300000     # some sizes
    python bench/ingest.py --quick --out /tmp/i.json  # smoke run: 2,000 and 6,000 pairs, seconds
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is a folder of scripts; bench.machine is shared
from bench.machine import run_info, write_report  # noqa: E402

DEFAULT_DATA_ROOT = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "bench" / "results" / "ingest.json"
DEFAULT_WORK = Path("/tmp/ingest_work")
SIZES = (30_000, 300_000, 3_000_000)
QUICK_SIZES = (2_000, 6_000)
GOAL_DRIVER_BYTES = 2 * 1024**3
GOAL_PER_PAIR_RATIO = 1.2


@dataclass(kw_only=True)
class Settings:
    sizes: list[int] = field(default_factory=lambda: list(SIZES))
    recipe: dict[str, Any] = field(default_factory=lambda: {
        "name": "ingest",
        "data": {"train": "train", "valid": "val", "format": "parallel", "source_lang": "en",
                 "target_lang": "de", "max_length": 64},
        "tokenizer": {"kind": "bpe", "vocab_size": 6000, "min_frequency": 2, "lowercase": False, "joint": True},
        "model": {"kind": "seq2seq", "attention": "luong"},
        "batching": {"max_tokens": 3072, "max_batch_size": 128, "pool_size": 8192},
        "train": {"seed": 0},
    })
    """``recipes/multi30k.yaml``'s data, tokenizer and batching (the keys preparation reads)."""
    overrides: list[str] = field(default_factory=list)
    """``KEY=VALUE`` recipe overrides (``--set``), e.g. ``batching.stream=false``."""
    num_cpus: int = 2
    iterate: bool = True


# ---------------------------------------------------------------------------- corpora


def write_corpus(work: Path, size: int, data_root: Path) -> tuple[Path, str]:
    """``work/<kind>-<size>/{train,val}.{en,de}``, written once; ``(folder, kind)``."""
    multi30k = data_root / "multi30k"
    kind = "multi30k" if (multi30k / "train.en").is_file() and (multi30k / "train.de").is_file() else "numbers"
    folder = work / f"{kind}-{size}"
    done = folder / ".complete"
    if done.exists():
        return folder, kind
    folder.mkdir(parents=True, exist_ok=True)
    print(f"writing a corpus of {size:,} pairs ({kind}) in {folder} ...", flush=True)
    if kind == "multi30k":
        sides = {lang: (multi30k / f"train.{lang}").read_text(encoding="utf-8").splitlines() for lang in ("en", "de")}
        valid = {lang: (multi30k / f"val.{lang}").read_text(encoding="utf-8") for lang in ("en", "de")}
    else:
        sides, valid = generated_pairs(size)
    base = len(sides["en"])
    for lang in ("en", "de"):
        lines = sides[lang]
        with (folder / f"train.{lang}").open("w", encoding="utf-8") as out:
            for start in range(0, size, base):
                copy = start // base
                chunk = lines[:min(base, size - start)]
                out.write("".join(f"{line} ~{copy}\n" for line in chunk))
        (folder / f"val.{lang}").write_text(valid[lang], encoding="utf-8")
    done.write_text("")
    return folder, kind


def generated_pairs(size: int) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The ``translation`` generator's sentences (a few thousand distinct; copies are
    marked like Multi30k's) and a validation split of them."""
    from pipelines.apps.translate.generate import TRANSLATION_NUMBERS, number_sentence

    rng = random.Random(0)
    pairs = [number_sentence(n, rng) for n in rng.sample(TRANSLATION_NUMBERS, len(TRANSLATION_NUMBERS))]
    valid = pairs[:min(2000, max(1, size // 4))]
    train = pairs[len(valid):]
    return ({"en": [s for s, _ in train], "de": [t for _, t in train]},
            {"en": "".join(f"{s}\n" for s, _ in valid), "de": "".join(f"{t}\n" for _, t in valid)})


# ---------------------------------------------------------------------------- measuring


def rss_bytes() -> tuple[int, int]:
    """This process's ``(VmRSS, VmHWM)`` in bytes."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, value = line.split(":")
            fields[name] = int(value.split()[0]) * 1024
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def store_stats() -> dict[str, int]:
    """The object store's bytes in use and spilled (the raylet's stats, as ``ray memory``)."""
    import ray
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    stats = get_memory_info_reply(get_state_from_address(ray.get_runtime_context().gcs_address)).store_stats
    return {"used": int(stats.object_store_bytes_used), "spilled": int(stats.spilled_bytes_total)}


class Sampler:
    """Peak driver RSS (every 50 ms) and object-store bytes (every 0.5 s) while running."""

    def __init__(self) -> None:
        self.peak_rss = 0
        self.peak_store = 0
        self.started = time.perf_counter()
        self.timeline: list[tuple[float, int]] = []
        """``(seconds since start, driver RSS)`` every 0.5 s, for each stage's peak."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(store=True)

    def _sample(self, store: bool) -> None:
        rss = rss_bytes()[0]
        self.peak_rss = max(self.peak_rss, rss)
        if store:
            self.timeline.append((time.perf_counter() - self.started, rss))
            try:
                self.peak_store = max(self.peak_store, store_stats()["used"])
            except Exception:  # noqa: BLE001 - a stats call that fails mid-shutdown loses one sample
                pass

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(0.05):
            self._sample(store=tick % 10 == 0)
            tick += 1


def iterate_once(train, batches: int, seed: int) -> dict[str, Any]:
    """One epoch of training batches as a worker takes them: a streaming split and the
    worker's seeded shuffle buffer (``train.shuffle_buffer``'s default, 64)."""
    from pipelines.engine.ingest import shuffled_epochs

    split = train.streaming_split(1, equal=True)[0]
    rows = shuffled_epochs(split, seed=seed, buffer=64)
    pairs = tokens = 0
    started = time.perf_counter()
    for _ in range(batches):
        _, row = next(rows)
        pairs += len(row["src_lengths"])
        tokens += int(row["src_lengths"].sum()) + int(row["tgt_lengths"].sum())
    seconds = time.perf_counter() - started
    rows.close()
    return {"batches": batches, "pairs": pairs, "tokens": tokens, "seconds": round(seconds, 2),
            "batches_per_s": round(batches / seconds, 1), "pairs_per_s": round(pairs / seconds),
            "tokens_per_s": round(tokens / seconds)}


def measure(size: int, folder: Path, settings: Settings) -> dict[str, Any]:
    """Prepare ``folder``'s corpus in a fresh local Ray instance; the figures."""
    import ray

    from pipelines import apps
    from pipelines.config import apply_overrides, recipe_from_dict

    raw = {**settings.recipe, "data": {**settings.recipe["data"], "root": str(folder)}}
    recipe = recipe_from_dict(apply_overrides(raw, settings.overrides))
    started_ray = not ray.is_initialized()  # a test's session head is joined and left running
    if started_ray:
        ray.init(address="local", num_cpus=settings.num_cpus, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # as pipelines.runtime.init_ray
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    try:
        reset_peak_rss()
        rss_before = rss_bytes()[0]
        with Sampler() as sampler:
            started = time.perf_counter()
            data = apps.app_for(recipe).prepare(recipe)
            wall = time.perf_counter() - started
        after = store_stats()
        stage_peaks, start = {}, 0.0
        for stage, seconds in data.stage_s.items():  # the stages ran in this order
            inside = [rss for t, rss in sampler.timeline if start <= t <= start + seconds + 0.5]
            stage_peaks[stage] = max(inside, default=0)
            start += seconds
        result: dict[str, Any] = {
            "pairs": data.report["train_examples"],
            "streamed": bool(data.report.get("streamed", False)),
            "wall_s": round(wall, 2),
            "us_per_pair": round(1e6 * wall / size, 1),
            "stage_s": data.stage_s,
            "driver_rss_before_bytes": rss_before,
            "driver_rss_peak_bytes": sampler.peak_rss,
            "driver_hwm_bytes": rss_bytes()[1],
            "driver_rss_peak_by_stage_bytes": stage_peaks,
            "object_store_peak_bytes": sampler.peak_store,
            "object_store_after_bytes": after["used"],
            "object_store_spilled_bytes": after["spilled"],
            "train_batches": data.batches,
            "report": data.report,
        }
        if settings.iterate:
            with Sampler() as during:
                result["iterate"] = iterate_once(data.train, data.batches, recipe.train.seed)
            result["iterate"]["driver_rss_peak_bytes"] = during.peak_rss
            result["iterate"]["object_store_peak_bytes"] = during.peak_store
        return result
    finally:
        if started_ray:
            ray.shutdown()


def mib(value: int) -> str:
    return f"{value / 1024**2:,.0f}"


def table(results: list[dict[str, Any]]) -> str:
    head = (f"{'pairs':>10} {'mode':>7} {'wall s':>8} {'us/pair':>8} {'read':>7} {'tok':>7} {'feat':>7} "
            f"{'bucket':>7} {'valid':>6} {'drv MiB':>8} {'store MiB':>9} {'kept MiB':>8} {'spill MiB':>9} "
            f"{'batch/s':>8} {'pairs/s':>8}")
    lines = [head, "-" * len(head)]
    for r in results:
        s = r["stage_s"]
        it = r.get("iterate", {})
        lines.append(
            f"{r['pairs']:>10,} {'stream' if r['streamed'] else 'whole':>7} {r['wall_s']:>8.1f} "
            f"{r['us_per_pair']:>8.1f} {s.get('read', 0):>7.1f} {s.get('tokenizer', 0):>7.1f} "
            f"{s.get('featurize', 0):>7.1f} {s.get('bucket', 0):>7.1f} {s.get('valid', 0):>6.1f} "
            f"{mib(r['driver_rss_peak_bytes']):>8} {mib(r['object_store_peak_bytes']):>9} "
            f"{mib(r['object_store_after_bytes']):>8} {mib(r['object_store_spilled_bytes']):>9} "
            f"{it.get('batches_per_s', 0):>8.1f} {it.get('pairs_per_s', 0):>8,}")
    return "\n".join(lines)


def goals(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals against what ran: driver memory of the largest size, and each
    size's time per pair against the smallest's."""
    if not results:
        return {}
    first, last = results[0], results[-1]
    ratios = {str(r["pairs"]): round(r["us_per_pair"] / first["us_per_pair"], 3) for r in results}
    return {
        "largest_pairs": last["pairs"],
        "largest_driver_rss_peak_bytes": last["driver_rss_peak_bytes"],
        "driver_under_2gib": last["driver_rss_peak_bytes"] < GOAL_DRIVER_BYTES,
        "per_pair_ratio_to_smallest": ratios,
        "per_pair_within_20pct": all(v <= GOAL_PER_PAIR_RATIO for v in ratios.values()),
    }


def run_benchmark(settings: Settings, data_root: Path, work: Path) -> dict[str, Any]:
    load_start = list(os.getloadavg())
    results, notes = [], []
    for size in settings.sizes:
        folder, kind = write_corpus(work, size, data_root)
        if kind != "multi30k" and not notes:
            notes.append(f"no Multi30k under {data_root}: generated number sentences instead (FALLBACK:numbers)")
            print(f"NOTE: {notes[-1]}", flush=True)
        print(f"preparing {size:,} pairs ...", flush=True)
        result = {"size": size, "corpus": kind if kind == "multi30k" else "FALLBACK:numbers",
                  **measure(size, folder, settings)}
        results.append(result)
        print(table([result]).splitlines()[-1], flush=True)
    return {
        "name": "ingest",
        "goal": {"driver_rss_max_bytes": GOAL_DRIVER_BYTES, "per_pair_ratio_max": GOAL_PER_PAIR_RATIO},
        **run_info(load_avg_at_start=load_start, load_avg_at_end=list(os.getloadavg())),
        "data_root": str(data_root),
        "work": str(work),
        "notes": notes,
        "settings": asdict(settings),
        "results": results,
        "goals": goals(results),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                        help="folder holding multi30k/ (default: ../shared/data from the repo root)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK,
                        help=f"where the corpora are written once and reused (default {DEFAULT_WORK})")
    parser.add_argument("--sizes", type=str, default=None,
                        help="comma-separated training pairs per corpus (default 30000,300000,3000000)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override, e.g. batching.stream=false (repeatable)")
    parser.add_argument("--no-iterate", action="store_true", help="skip iterating the prepared batches")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {' and '.join(map(str, QUICK_SIZES))} pairs; writes only with --out")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"report JSON (default {DEFAULT_OUT.relative_to(ROOT)}; none with --quick)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipelines import console

    console.prepare()
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
    settings = Settings(overrides=list(args.overrides), iterate=not args.no_iterate)
    if args.quick:
        settings.sizes = list(QUICK_SIZES)
    if args.sizes:
        settings.sizes = [int(x) for x in args.sizes.split(",")]
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)
    report = run_benchmark(settings, args.data_root, args.work)
    report["quick"] = args.quick
    print()
    print(table(report["results"]))
    print("stages: read = read + check both splits; tok = tokenizer training; feat = featurize (+ truncation "
          "count); bucket = bucket + padding stats (streaming: the counting pass); drv = peak driver RSS; "
          "store = peak object-store bytes; kept = bytes still in the store after preparation")
    for name, value in report["goals"].items():
        print(f"goal {name}: {value}")
    for note in report["notes"]:
        print(f"note: {note}")
    if args.quick:
        print("note: --quick smoke run (small corpora): not the benchmark's numbers")
    if out is not None:
        write_report(out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
