"""Length bucketing vs. random batching: padding fraction and training tokens/s (text)
or frames/s (audio).

Acceptance items: on SST-2 and on Multi30k source sentences, padding fraction and
training tokens/s with length bucketing vs. random batching, same model, one run; and
the same extended to audio frames (FSDD spoken digits: padding fraction, frames/s).
Goal: padding <= 5% with bucketing, and >= 1.5x tokens/s (frames/s).

For each dataset, in one process::

    text:  records --Ray Data--> tokenizer (trained on the split) --featurize--> rows {ids, length, label}
    audio: audio folder --list_audio_folder--> featurize_audio (decode, log-mel; Ray Data)
           --> rows {ids: frames (T, n_mels) float32, length: T frames, label}

        --bucket(sort=True)-->  bucketed batches  ┐  same budget (text: max_tokens tokens,
        --bucket(sort=False)--> random batches    ┘  audio: max_frames frames), same pools, same seeds

    then one seq2vec model per batching (same config, same init seed) trains in
    interleaved wall-clock windows  B R R B B R ...  (ABBA order, so a drift in machine
    load hits both arms alike); throughput = real (non-pad) units / seconds of
    forward + backward + clip + optimizer step, median over each arm's windows.

The unit is the token for text and the log-mel frame (10 ms) for audio; padding is
counted in the same unit. Audio batches go to the model as the training step feeds them
(``pipelines.apps.objectives.Labels.step_plan`` for audio): frames ``(B, 4 L, n_mels)``
float32 with ``L = frames // 4`` (the convolutional front end subsamples 4x, so the LSTMs
run ``L`` steps); frames/s counts the real frames, ``sum(frame lengths)``. The audio model
has the recipe's shape (``recipes/fsdd_digits.yaml``: front end 32 channels -> 128, 2 LSTM
layers, bidirectional bottom, SpecAugment on) at a third of its width (LSTMs of 128, the
recipe's are 384, so the figures stay comparable with earlier runs); the featurization is
the recipe's (8 kHz, 40 mel bands, recordings up to 3 s).

Ray is used for the data path only (the project's own ``read_split`` / ``featurize`` /
``list_audio_folder`` / ``featurize_audio`` / ``bucket`` / ``padding_stats``); the
batches are then pulled into this process and Ray is shut down before timing, so its
idle workers do not share the CPU with the model.

Usage, from the repository root::

    python bench/bucketing.py                 # full run (~8 min), writes bench/results/bucketing.{json,png}
    python bench/bucketing.py --quick --out /tmp/b.json   # smoke run (seconds of timing; Ray Data start-up dominates)

Multi30k has no labels; its source sentences get a dummy label (``short``/``long`` by
word count), which only gives the classifier head something to fit: the measurement is
throughput. FSDD's label is the spoken digit (the file name's first field). Padding is
counted over every batch of the split; tokens/s and frames/s over the steps run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
import torch.nn.functional as F

from models import build_seq2vec
from models.config import SUBSAMPLING, ModelConfig
from models.frontends import log_mel, tokens
from pipelines import console
from pipelines.apps.text_classify.data import featurize
from pipelines.apps.text_classify.generate import write_sentiment
from pipelines.config import AudioConfig, BatchingConfig, DataConfig, TokenizerConfig, TrainConfig
from pipelines.engine.optim import build_optimizer
from pipelines.media.audio.folders import featurize_audio, list_audio_folder
from pipelines.media.bucketing import bucket, padding_stats
from pipelines.media.columns import distinct
from pipelines.media.sources import check_records, read_split
from pipelines.media.tokenization import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is a folder of scripts; bench.machine is shared
from bench.machine import run_info, write_report  # noqa: E402

DEFAULT_DATA_ROOT = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "bench" / "results" / "bucketing.json"
GOAL_PADDING = 0.05
GOAL_SPEEDUP = 1.5


@dataclass(kw_only=True)
class Settings:
    max_tokens: int = 2048
    """Text: token budget per batch, padding included (rows * longest <= max_tokens)."""
    max_frames: int = 4096
    """Audio: frame budget per batch, padding included (as ``batching.max_tokens`` of
    ``recipes/fsdd_digits.yaml``)."""
    max_batch_size: int = 4096
    """Large, so the token budget alone decides the batch size."""
    pool_size: int = 4096
    max_length: int = 128
    vocab_size: int = 8000
    model: ModelConfig = field(
        default_factory=lambda: ModelConfig(cell="lstm", embed_dim=128, hidden_size=256, num_layers=2)
    )
    """The text seq2vec model both arms train (GNMT-style bidirectional bottom layer, mean pooling)."""
    audio: AudioConfig = field(default_factory=lambda: AudioConfig(sample_rate=8000, n_mels=40, max_seconds=3.0))
    """Audio featurization (``data.audio`` of ``recipes/fsdd_digits.yaml``)."""
    audio_model: ModelConfig = field(default_factory=lambda: ModelConfig(
        input="audio", cell="lstm", embed_dim=128, frontend_channels=32, hidden_size=128, num_layers=2,
        bidirectional_bottom=True, dropout=0.2, pooling="mean",
        spec_freq_masks=2, spec_freq_width=6, spec_time_masks=2, spec_time_width=8,
    ))
    """The audio seq2vec model both arms train (``recipes/fsdd_digits.yaml``'s shape, narrower)."""
    lr: float = 2e-3
    clip_norm: float = 1.0
    seed: int = 0
    threads: int = 1
    """torch intra-op threads (the training workers' default, ``parallel.threads_per_worker``)."""
    window_s: float = 15.0
    """Wall-clock length of one timing window."""
    windows: int = 3
    """Timing windows per arm (bucketed, random), interleaved B R R B B R ..."""
    warmup_steps: int = 3
    """Untimed steps per arm before the first window."""
    max_steps_per_window: int = 0
    """0 = bounded by ``window_s`` only."""
    subset: int = 0
    """Use only the first N examples of each dataset (0 = all)."""
    fallback_examples: int = 4000
    """With no shared data: generated sentences per text stand-in."""
    fallback_speakers: int = 3
    fallback_takes: int = 10
    """With no shared data: synthetic recordings per digit are speakers x takes."""


QUICK_SUBSET = 600
"""``--quick``: examples a dataset (FSDD: spread evenly over its files, so every digit stays in)."""


def quick_settings() -> Settings:
    return Settings(
        window_s=1.0, windows=1, warmup_steps=1, max_steps_per_window=3, subset=QUICK_SUBSET,
        fallback_examples=QUICK_SUBSET, fallback_speakers=1, fallback_takes=4, vocab_size=2000,
        model=ModelConfig(cell="lstm", embed_dim=32, hidden_size=64, num_layers=2),
        audio_model=ModelConfig(
            input="audio", cell="lstm", embed_dim=32, frontend_channels=8, hidden_size=64, num_layers=2,
            dropout=0.2, spec_freq_masks=2, spec_freq_width=6, spec_time_masks=2, spec_time_width=8,
        ),
    )


# ---------------------------------------------------------------------------- data


@dataclass
class Source:
    name: str
    path: Path
    note: str
    kind: str = "text"
    """``text`` (a file, read by ``READERS[name]``) or ``audio`` (an audio folder)."""


def _sst2_records(path: Path) -> ray.data.Dataset:
    return read_split(DataConfig(train=str(path), valid="", format="labeled-lines"), "train")


def _source_sentence_records(path: Path) -> ray.data.Dataset:
    """One sentence a line, no label -> records ``{text, label, origin, error}``.

    ``read_split`` has no unlabeled one-sentence-a-line format, so this reads with
    ``read_text``; the dummy label is ``long`` for 13+ words, else ``short`` (a
    length-correlated label gives the head something to fit; only throughput is measured).
    """

    def to_records(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t).strip() for t in batch["text"]]
        return {
            "text": np.array(texts, dtype=object),
            "label": np.array(["long" if len(t.split()) >= 13 else "short" for t in texts], dtype=object),
            "origin": np.array([str(path)] * len(texts), dtype=object),
            "error": np.array(["" if t else "empty text" for t in texts], dtype=object),
        }

    return ray.data.read_text(str(path)).map_batches(to_records, batch_format="numpy")


READERS = {"sst2": _sst2_records, "multi30k-src": _source_sentence_records,
           "FALLBACK:sst2": _sst2_records, "FALLBACK:m30k": _source_sentence_records}


def find_sources(data_root: Path) -> tuple[list[Source], list[str]]:
    """The datasets present under ``data_root``, and a note for each one missing."""
    wanted = [
        Source("sst2", data_root / "sst2" / "stsa.binary.train", "SST-2 train sentences (labeled)"),
        Source("multi30k-src", data_root / "multi30k" / "train.en", "Multi30k train.en, dummy labels"),
        Source("fsdd-frames", data_root / "fsdd" / "recordings",
               "FSDD training recordings (8 kHz WAV), log-mel frames, digit labels", kind="audio"),
    ]

    def present(source: Source) -> bool:
        return source.path.is_dir() if source.kind == "audio" else source.path.is_file()

    found = [s for s in wanted if present(s)]
    missing = [f"{s.name}: {s.path} not found, skipped" for s in wanted if not present(s)]
    return found, missing


def fallback_sources(folder: Path, settings: Settings) -> list[Source]:
    """Generated stand-ins for the three datasets, written into ``folder``, for a machine
    without the shared data (CI, a fresh clone): the same readers and code paths on other
    data, every name prefixed ``FALLBACK``. SST-2: the generated sentiment reviews
    (labeled lines); Multi30k sources: the English side of the generated number
    sentences; FSDD: synthetic spoken digits (``{digit}_s{speaker}_{take}.wav``, 8 kHz)."""
    from pipelines.apps.translate.generate import write_translation
    from pipelines.media.audio.synthetic import write_synthetic_recordings

    size, seed = settings.fallback_examples, settings.seed
    recordings = write_synthetic_recordings(folder / "fsdd", speakers=settings.fallback_speakers,
                                            takes=range(settings.fallback_takes))
    return [
        Source("FALLBACK:sst2", write_sentiment(folder / "sst2", size=size, seed=seed) / "train.txt",
               "FALLBACK for SST-2: pipelines.apps.text_classify.generate sentiment reviews (labeled)"),
        Source("FALLBACK:m30k", write_translation(folder / "multi30k", size=size, seed=seed) / "train.en",
               "FALLBACK for Multi30k train.en: pipelines.apps.translate.generate number sentences, dummy labels"),
        Source("FALLBACK:fsdd", recordings,
               "FALLBACK for FSDD: pipelines.media.audio.synthetic spoken digits (8 kHz WAV), digit labels",
               kind="audio"),
    ]


# One batch as the timing loop feeds it: (model input, model lengths, labels,
# real units (tokens or frames), padded slots in that unit).
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]


def text_batch(row: dict[str, Any]) -> Batch:
    """Token ids ``(B, T)`` int64 and token lengths, as the text training step feeds them."""
    tokens = torch.tensor(np.asarray(row["tokens"]), dtype=torch.int64)
    lengths = torch.tensor(np.asarray(row["lengths"]), dtype=torch.int64)
    labels = torch.tensor(np.asarray(row["labels"]), dtype=torch.int64)
    return tokens, lengths, labels, int(lengths.sum()), tokens.numel()


def audio_batch(row: dict[str, Any]) -> Batch:
    """Frames ``(B, 4 max(L), n_mels)`` float32 and subsampled lengths ``L = frames // 4``,
    as the audio classifier's ``step_plan`` feeds them; counts are in frames."""
    frame_lengths = torch.tensor(np.asarray(row["lengths"]), dtype=torch.int64)
    steps = frame_lengths // SUBSAMPLING
    frames = torch.tensor(np.asarray(row["tokens"]), dtype=torch.float32)[:, : int(steps.max()) * SUBSAMPLING]
    labels = torch.tensor(np.asarray(row["labels"]), dtype=torch.int64)
    return frames, steps, labels, int(frame_lengths.sum()), frames.shape[0] * frames.shape[1]


@dataclass
class Prepared:
    name: str
    note: str
    examples: int
    num_labels: int
    featurize_s: float
    arms: dict[str, dict[str, Any]]
    """``bucketed``/``random`` -> {"batches": [row dicts], "stats": PaddingStats, "bucket_s": float}."""
    unit: str
    """What lengths, padding and throughput count: ``tokens`` (text) or ``frames`` (audio)."""
    model: ModelConfig
    to_batch: Callable[[dict[str, Any]], Batch]
    """Batch row -> what the model is fed (:func:`text_batch` / :func:`audio_batch`)."""
    max_tokens: int
    """The budget both batchings were cut under, in ``unit``."""
    vocab_size: int = 0
    """Text: the tokenizer's vocabulary."""
    feature_dim: int = 0
    """Audio: mel bands per frame."""


def bucket_both(features: ray.data.Dataset, max_tokens: int, settings: Settings) -> dict[str, dict[str, Any]]:
    """Bucket ``features`` twice under the same budget: sorted (bucketed) and not (random)."""
    arms: dict[str, dict[str, Any]] = {}
    for arm, sort in (("bucketed", True), ("random", False)):
        tick = time.perf_counter()
        config = BatchingConfig(
            max_tokens=max_tokens,
            max_batch_size=settings.max_batch_size,
            pool_size=settings.pool_size,
            sort=sort,
        )
        batches = bucket(features, config, seed=settings.seed)
        stats = padding_stats(batches)
        rows = list(batches.iter_rows())
        arms[arm] = {"batches": rows, "stats": stats, "bucket_s": time.perf_counter() - tick}
    return arms


def prepare(source: Source, reader, settings: Settings) -> Prepared:
    """Read, train the tokenizer, featurize once, then bucket twice (sorted / random)."""
    started = time.perf_counter()
    records = reader(source.path)
    if settings.subset:
        records = records.limit(settings.subset)
    checked = check_records(records, "error", source.name)
    labels = distinct(checked.dataset, "label")

    def texts() -> Iterator[str]:
        for batch in checked.dataset.iter_batches(batch_size=4096, batch_format="pyarrow"):
            yield from batch.column("text").to_pylist()

    tokenizer = train_tokenizer(texts(), TokenizerConfig(vocab_size=settings.vocab_size))
    features = featurize(checked.dataset, tokenizer, labels, settings.max_length).materialize()
    features = features.drop_columns(["truncated"]).materialize()
    featurize_s = time.perf_counter() - started
    return Prepared(
        source.name, source.note, checked.rows, len(labels), featurize_s,
        bucket_both(features, settings.max_tokens, settings), unit="tokens", model=settings.model,
        to_batch=text_batch, max_tokens=settings.max_tokens, vocab_size=tokenizer.get_vocab_size(),
    )


def prepare_audio(source: Source, settings: Settings) -> Prepared:
    """List the folder, decode + log-mel in Ray Data, then bucket twice (sorted / random)
    under the frame budget; rows as ``prepare_audio_classification`` makes them."""
    started = time.perf_counter()
    records = list_audio_folder(source.path, target="label")
    if settings.subset and settings.subset < len(records):
        # evenly spaced over the (name-sorted) files, so every digit and speaker stays in
        picks = np.linspace(0, len(records) - 1, settings.subset).round().astype(int)
        records = [records[i] for i in picks]
    checked = featurize_audio(records, settings.audio, source.name, "error")
    labels = distinct(checked.dataset, "label")
    ids = {name: i for i, name in enumerate(labels)}

    def to_rows(batch: dict[str, np.ndarray]) -> dict[str, Any]:
        return {"ids": list(batch["features"]), "length": batch["length"],
                "label": np.array([ids[lab] for lab in batch["label"]], dtype=np.int64)}

    features = checked.dataset.map_batches(to_rows, batch_format="numpy", batch_size=256).materialize()
    featurize_s = time.perf_counter() - started
    return Prepared(
        source.name, source.note, checked.rows, len(labels), featurize_s,
        bucket_both(features, settings.max_frames, settings), unit="frames", model=settings.audio_model,
        to_batch=audio_batch, max_tokens=settings.max_frames, feature_dim=settings.audio.n_mels,
    )


# ---------------------------------------------------------------------------- timing


class Arm:
    """One model + optimizer training on one batching, batches taken in order, cycling.

    ``prepared.to_batch`` turns batch rows into model input (token ids, or frames with
    subsampled lengths); counts are in ``prepared.unit`` (tokens or frames)."""

    def __init__(self, batches: list[dict[str, Any]], prepared: Prepared, settings: Settings) -> None:
        self.batches = [prepared.to_batch(b) for b in batches]
        self.unit = prepared.unit
        self.next = 0
        torch.manual_seed(settings.seed)  # dropout masks draw from the global RNG
        frontend = tokens(prepared.vocab_size) if prepared.vocab_size else log_mel(prepared.feature_dim)
        self.model = build_seq2vec(  # the same initial weights for both arms
            prepared.model, frontend=frontend, num_labels=prepared.num_labels, seed=settings.seed,
        )
        self.model.train()
        train = TrainConfig(lr=settings.lr, warmup_steps=0, schedule="constant", clip_norm=settings.clip_norm)
        self.optimizer, _ = build_optimizer(self.model.parameters(), train)
        self.clip_norm = settings.clip_norm
        self.windows: list[dict[str, float]] = []

    def step(self) -> tuple[int, int]:
        """One optimizer step on the next batch; returns (real tokens/frames, padded slots)."""
        inputs, lengths, labels, n_real, n_slots = self.batches[self.next]
        self.next = (self.next + 1) % len(self.batches)
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(inputs, lengths)
        loss = F.cross_entropy(logits, labels, reduction="sum") / len(labels)
        loss.backward()
        if self.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        self.optimizer.step()
        return n_real, n_slots

    def window(self, seconds: float, max_steps: int) -> dict[str, float]:
        steps = real = slots = 0
        wall = cpu = 0.0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline and (not max_steps or steps < max_steps):
            tick, cpu_tick = time.perf_counter(), time.process_time()
            n_real, n_slots = self.step()
            wall += time.perf_counter() - tick
            cpu += time.process_time() - cpu_tick
            steps, real, slots = steps + 1, real + n_real, slots + n_slots
        unit = self.unit
        result = {
            "steps": steps,
            unit: real,
            "padded_slots": slots,
            "seconds": round(wall, 3),
            "cpu_seconds": round(cpu, 3),
            f"{unit}_per_s": real / wall if wall else 0.0,
            f"{unit}_per_cpu_s": real / cpu if cpu else 0.0,
        }
        self.windows.append(result)
        return result


def abba_order(windows: int) -> list[str]:
    """``B R R B B R R B ...``: each arm goes first in half of the pairs."""
    order: list[str] = []
    for i in range(windows):
        order += ["bucketed", "random"] if i % 2 == 0 else ["random", "bucketed"]
    return order


UNIT_ABBREV = {"tokens": "tok", "frames": "frm"}


def measure(prepared: Prepared, settings: Settings) -> dict[str, Any]:
    """Time both arms in ABBA windows; the result's throughput keys are named by the
    unit: ``tokens_per_s`` etc. for text, ``frames_per_s`` etc. for audio."""
    unit, abbrev = prepared.unit, UNIT_ABBREV[prepared.unit]
    arms = {name: Arm(prepared.arms[name]["batches"], prepared, settings) for name in ("bucketed", "random")}
    for arm in arms.values():
        for _ in range(settings.warmup_steps):
            arm.step()
    for name in abba_order(settings.windows):
        w = arms[name].window(settings.window_s, settings.max_steps_per_window)
        print(
            f"  {prepared.name:<13} {name:<8} {w['steps']:>4} steps {w['seconds']:>6.1f}s "
            f"{w[f'{unit}_per_s']:>8,.0f} {abbrev}/s  ({w[f'{unit}_per_cpu_s']:,.0f} {abbrev}/cpu-s)",
            flush=True,
        )
    sizes = {"vocab_size": prepared.vocab_size} if unit == "tokens" else {"feature_dim": prepared.feature_dim}
    result: dict[str, Any] = {"dataset": prepared.name, "note": prepared.note, "unit": unit,
                              "max_" + unit: prepared.max_tokens, "examples": prepared.examples,
                              "num_labels": prepared.num_labels, **sizes,
                              "featurize_s": round(prepared.featurize_s, 2)}
    for name, arm in arms.items():
        stats = prepared.arms[name]["stats"]
        lengths = [len(b[1]) for b in arm.batches]
        widths = [b[0].shape[1] for b in arm.batches]
        result[name] = {
            "batches": stats.batches,
            "mean_batch_size": round(stats.mean_batch_size, 2),
            "mean_padded_width": round(float(np.mean(widths)), 2),
            "rows_min_max": [int(min(lengths)), int(max(lengths))],
            unit: stats.tokens,
            "padded_slots": stats.padded_slots,
            "padding_fraction": round(stats.padding_fraction, 4),
            "bucket_s": round(prepared.arms[name]["bucket_s"], 2),
            f"{unit}_per_s": round(statistics.median(w[f"{unit}_per_s"] for w in arm.windows), 1),
            f"{unit}_per_cpu_s": round(statistics.median(w[f"{unit}_per_cpu_s"] for w in arm.windows), 1),
            f"{unit}_per_s_pooled": round(
                sum(w[unit] for w in arm.windows) / max(sum(w["seconds"] for w in arm.windows), 1e-9), 1
            ),
            "cpu_share": round(
                sum(w["cpu_seconds"] for w in arm.windows) / max(sum(w["seconds"] for w in arm.windows), 1e-9), 3
            ),
            "windows": arm.windows,
        }
    b, r = result["bucketed"], result["random"]
    per_s, per_cpu_s = f"{unit}_per_s", f"{unit}_per_cpu_s"
    result["speedup"] = round(b[per_s] / r[per_s], 3) if r[per_s] else None
    result["speedup_cpu"] = round(b[per_cpu_s] / r[per_cpu_s], 3) if r[per_cpu_s] else None
    # On a shared machine the wall-clock ratio also measures who got the CPU (see
    # ``cpu_share``); the goal counts as met only when both ratios reach it.
    both = [x for x in (result["speedup"], result["speedup_cpu"]) if x is not None]
    result["goals"] = {
        "padding_le_5pct": b["padding_fraction"] <= GOAL_PADDING,
        "speedup_ge_1_5x": len(both) == 2 and min(both) >= GOAL_SPEEDUP,
    }
    return result


# ---------------------------------------------------------------------------- report


def table(results: list[dict[str, Any]]) -> str:
    """One line per dataset and batching; ``unit`` says what ``mean T``, ``padding``,
    ``per s`` and ``per cpu-s`` count: tokens (tok) or log-mel frames (frm)."""
    head = (
        f"{'dataset':<14}{'unit':<5}{'batching':<10}{'batches':>8}{'mean B':>8}{'mean T':>8}"
        f"{'padding':>9}{'per s':>9}{'per cpu-s':>11}{'cpu%':>6}{'speedup':>9}{'(cpu)':>7}  goal"
    )
    lines = [head, "-" * len(head)]
    for res in results:
        unit = res["unit"]
        for name in ("bucketed", "random"):
            arm = res[name]
            if name == "bucketed":
                speed = f"{res['speedup']:.2f}x" if res["speedup"] else "n/a"
                speed_cpu = f"{res['speedup_cpu']:.2f}x" if res["speedup_cpu"] else "n/a"
                ok = res["goals"]
                goal = (
                    f"pad<=5% {'yes' if ok['padding_le_5pct'] else 'NO'}, "
                    f">=1.5x {'yes' if ok['speedup_ge_1_5x'] else 'NO'}"
                )
            else:
                speed, speed_cpu, goal = "", "", ""
            first = name == "bucketed"
            lines.append(
                f"{res['dataset'] if first else '':<14}{UNIT_ABBREV[unit] if first else '':<5}{name:<10}"
                f"{arm['batches']:>8}{arm['mean_batch_size']:>8.1f}{arm['mean_padded_width']:>8.1f}"
                f"{arm['padding_fraction']:>8.1%}{arm[f'{unit}_per_s']:>9,.0f}{arm[f'{unit}_per_cpu_s']:>11,.0f}"
                f"{arm['cpu_share']:>6.0%}{speed:>9}{speed_cpu:>7}  {goal}"
            )
    lines.append("per s, per cpu-s: real (non-pad) tokens (tok) or log-mel frames (frm) per second of "
                 "forward+backward+step; mean T and padding in the same unit")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["dataset"] for r in results]
    units = [f"{r['dataset']}\n({r['unit']}/s)" for r in results]
    per_s = [f"{r['unit']}_per_s" for r in results]
    x = np.arange(len(names))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(4 + 2.5 * len(names), 3.5))
    for offset, arm in ((-0.2, "bucketed"), (0.2, "random")):
        ax1.bar(x + offset, [100 * r[arm]["padding_fraction"] for r in results], 0.4, label=arm)
        ax2.bar(x + offset, [r[arm][key] for r, key in zip(results, per_s)], 0.4, label=arm)
    ax1.axhline(100 * GOAL_PADDING, color="k", ls="--", lw=0.8)
    ax1.set(title="padding (% of slots)", xticks=x, xticklabels=names, ylim=(0, 100))
    ax2.set(title="training throughput (real tokens or frames /s)", xticks=x, xticklabels=units)
    values = [r[arm][key] for r, key in zip(results, per_s) for arm in ("bucketed", "random") if r[arm][key] > 0]
    if values and max(values) > 10 * min(values):  # frames/s and tokens/s differ in scale
        ax2.set_yscale("log")
    for r, key, xi in zip(results, per_s, x):
        if r["speedup"]:
            ax2.annotate(f"{r['speedup']:.2f}x", (xi, max(r["bucketed"][key], r["random"][key])),
                         ha="center", va="bottom")
    ax1.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- run


def run_benchmark(data_root: Path, settings: Settings) -> dict[str, Any]:
    """Prepare every dataset found (Ray), then time both batchings (no Ray). Returns the report."""
    torch.set_num_threads(settings.threads)
    load_start = list(os.getloadavg())  # with the end's: was the machine quiet throughout?
    sources, notes = find_sources(data_root)
    fallback_dir = None
    if not sources:
        fallback_dir = tempfile.TemporaryDirectory(prefix="rayseq-bench-")
        sources = fallback_sources(Path(fallback_dir.name), settings)
        notes.append(f"no shared data under {data_root}: used generated stand-ins instead (FALLBACK:*), "
                     "not the benchmark's datasets")
        print(f"NOTE: {notes[-1]}", flush=True)

    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    try:
        prepared = []
        for source in sources:
            print(f"preparing {source.name} ({source.path}) ...", flush=True)
            if source.kind == "audio":
                prepared.append(prepare_audio(source, settings))
            else:
                prepared.append(prepare(source, READERS[source.name], settings))
    finally:
        if started_ray:
            ray.shutdown()
    if fallback_dir is not None:
        fallback_dir.cleanup()

    print(f"timing: {settings.windows} window(s) of {settings.window_s:g}s per arm, "
          f"torch threads {torch.get_num_threads()}", flush=True)
    results = [measure(p, settings) for p in prepared]
    settings_dict = asdict(settings)
    return {
        "name": "bucketing",
        "goal": {"padding_max": GOAL_PADDING, "speedup_min": GOAL_SPEEDUP},
        **run_info(torch_threads=torch.get_num_threads(), load_avg_at_start=load_start,
                   load_avg_at_end=list(os.getloadavg())),
        "data_root": str(data_root),
        "notes": notes,
        "settings": settings_dict,
        "results": results,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                        help="folder holding sst2/, multi30k/ and fsdd/recordings/ (default: ../shared/data "
                             "from the repo root)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_SUBSET} examples a dataset, tiny models, 3 timed steps per arm; "
                             "writes only with --out")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"report JSON (default {DEFAULT_OUT.relative_to(ROOT)}; none with --quick); "
                             "a .png goes beside it")
    parser.add_argument("--window-s", type=float, default=None, help="seconds per timing window (default 15)")
    parser.add_argument("--windows", type=int, default=None, help="timing windows per arm (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default 1)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="text: token budget per batch, padding included, for both batchings (default 2048)")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="audio: frame budget per batch, padding included, for both batchings (default 4096)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    console.prepare()
    # Ray Data re-reads this on every execution; otherwise it logs a line per dataset run.
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
    settings = quick_settings() if args.quick else Settings()
    for name in ("window_s", "windows", "threads", "max_tokens", "max_frames"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)

    report = run_benchmark(args.data_root, settings)
    report["quick"] = args.quick
    print()
    print(table(report["results"]))
    for note in report["notes"]:
        print(f"note: {note}")
    if args.quick:
        print(f"note: --quick smoke run ({QUICK_SUBSET} examples a dataset, tiny models, 3 steps): "
              "not the benchmark's numbers")
    if out is not None:
        write_report(out, report)
        if report["results"]:
            plot(report["results"], out.with_suffix(".png"))
            print(f"wrote {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
