"""Pipeline parallelism on CPU: rayseq's engine vs. one process vs. torch.distributed.pipelining.

Acceptance item: one run, same model and data: tokens/s of pp=1 (one thread) vs. pp=2
(one thread each) for GPipe, 1F1B and wavefront; the same stages under PyTorch's own
``torch.distributed.pipelining`` (ScheduleGPipe / Schedule1F1B) on fixed shapes and on
bucketed variable-length data (which it must pad to a static shape); measured bubble vs.
the theoretical ``(p - 1) / (m + p - 1)`` (wavefront: ``(p - 1) / (m k + p - 1)`` with ``k``
time chunks per micro-batch). Goals (issue 28): pp=2 >= 1.7x pp=1; >= 1.1x
torch.distributed.pipelining on fixed shapes and >= 1.3x on bucketed data; measured
bubble within 5 points of theory.

Two worker processes (gloo, no Ray: the engine itself, as in
``tests/test_pipeline_equivalence.py``) hold every arm's stage for the whole run::

    rank 0: stage 0 of each pp=2 arm, and the whole model of each pp=1 arm
    rank 1: stage 1 of each pp=2 arm (idle in a barrier while a pp=1 arm runs)

    for round r:                       arms interleaved, order reversed every other round
        for data in (fixed, bucketed):
            for arm:   barrier | steps over this round's slice of the data | barrier

Arms (same seq2vec model, same init seed, AdamW + global-norm clipping every step):

    rayseq pp=1 m=1     plain single-process training, the baseline
    rayseq pp=1 m=M     the same with M micro-batches of gradient accumulation
    rayseq gpipe/1f1b   pipelines.engine.schedules.StageRunner, pp=2, M micro-batches, dynamic shapes
    rayseq wavefront    pipelines.engine.wavefront: the same M micro-batches, each cut into K time chunks
      m=M k=K           (and wider units: fewer, fuller micro-batches, e.g. m=2 k=4 and m=1 k=8,
                        ``Settings.wide_wavefront``: the pipeline still fills over m*k units, and
                        every GEMM sees B/m rows instead of B/M)
    torch  gpipe/1f1b   torch.distributed.pipelining PipelineStage + ScheduleGPipe/Schedule1F1B

Data (synthetic, deterministic): ``fixed`` is B x T full-length rows, the same tensors for
every arm. ``bucketed`` draws SST-2-like lengths (5..60 tokens), cuts them with
``pipelines.media.bucketing.plan_batches(sort=True)`` under a token budget; rayseq runs those
batches as they are (and trims each micro-batch to its own longest row), while
torch.distributed.pipelining, whose P2P buffers have one static shape, gets the same
examples in the same order re-cut into ``(rows, global max length)`` batches, with
``rows`` = the bucketed batches' mean row count rounded to a multiple of M (the same
examples per optimizer step).

tokens/s counts real (non-pad) tokens over a window's wall clock (barrier to barrier);
the median over rounds is reported, and speedups are medians of per-round ratios (arms
of one round ran minutes apart at most). The bubble comes from per-stage timelines of
every timed step (``pipelines.engine.timeline.bubble_fraction``: the part of each step's window,
optimizer step excluded, a stage spends outside forward/backward); torch's stages are
timed by wrapping ``forward_one_chunk``/``backward_one_chunk``. On a shared machine each
window also records every process's CPU share (CPU time / wall) and its compute thread's
run-queue wait (``/proc/thread-self/schedstat``: runnable but not running, i.e. time other
jobs took).

Because other jobs' load decides the wall clock of a 2-process arm far more than the
engine does, every number also comes as a *dedicated-core estimate*: each forward and
backward is timed in thread CPU seconds, and the step is replayed on an idle core per
process (``simulate_step``: each stage runs its ops in the order it ran them, waiting only
on its neighbour; messages free; plus the slower stage's remaining step work). pp=1 is its
step's CPU time. The simulation works on whole micro-batches, so it has no estimate for
the wavefront arm (n/a). This is a model, labeled as such; the goals are judged on the measurement.

A second section times the translation model (``models.seq2seq``: GNMT-style LSTM
encoder-decoder with attention) in the same two workers: pp=1, pp=2 1F1B and pp=2
wavefront (the decoder streams over target chunks: ``pipelines.engine.wavefront``) side by
side, interleaved per round as above, on fixed-shape ``(rows, source, target)`` batches;
its tokens count source and target tokens, as training's progress line does.

Usage, from the repository root::

    python bench/pipeline.py            # full run (7-10 min on 2 shared cores): bench/results/pipeline.{json,png}
    python bench/pipeline.py --quick --out /tmp/p.json   # smoke run (about a minute), tiny model
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is a folder of scripts; bench.machine is shared
from bench.machine import run_info, write_report  # noqa: E402
from pipelines.runtime import free_port  # noqa: E402

if str(ROOT) not in sys.path:  # spawned workers import this file by path
    sys.path.insert(0, str(ROOT))

from models import ModelConfig, build_seq2vec  # noqa: E402
from models.dropout import dropout_key  # noqa: E402
from models.frontends import tokens  # noqa: E402
from pipelines.apps.text_classify.app import APP as TEXT_CLASSIFY  # noqa: E402
from pipelines.apps.translate.app import APP as TRANSLATE  # noqa: E402
from pipelines.config import TrainConfig  # noqa: E402
from pipelines.engine.microbatches import split_batch  # noqa: E402
from pipelines.engine.optim import build_optimizer  # noqa: E402
from pipelines.engine.p2p import Transport  # noqa: E402
from pipelines.engine.schedules import StageRunner, broadcast_plan, clip_global_norm  # noqa: E402
from pipelines.engine.stage_plan import plan_stages  # noqa: E402
from pipelines.engine.timeline import Timeline, bubble_fraction, theoretical_bubble  # noqa: E402
from pipelines.engine.topology import Topology  # noqa: E402
from pipelines.engine.worker import optimizer_step  # noqa: E402
from pipelines.media.bucketing import pad_batch, plan_batches  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "pipeline.json"
GOAL_PP_SPEEDUP = 1.7
GOAL_VS_TORCH_FIXED = 1.1
GOAL_VS_TORCH_BUCKETED = 1.3
GOAL_BUBBLE_POINTS = 0.05
DATASETS = ("fixed", "bucketed")

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # tokens (B, T), lengths (B,), labels (B,)


@dataclass(kw_only=True)
class Settings:
    model: ModelConfig = field(default_factory=lambda: ModelConfig(
        cell="lstm", embed_dim=256, hidden_size=256, num_layers=4, bidirectional_bottom=False,
        dropout=0.1, pooling="mean"))
    """4 equal LSTM layers (no bidirectional bottom), so pp=2 cuts at 50/50 of the cost."""
    vocab_size: int = 8000
    num_labels: int = 2
    microbatches: int = 8
    """M: theory bubble 1/9 at pp=2; with M=4 (1/5) even an ideal pipeline tops out at 1.6x."""
    time_chunks: int = 4
    """K: time chunks per micro-batch under the wavefront schedule (theory bubble 1/33)."""
    wide_wavefront: tuple[tuple[int, int], ...] = ((2, 4), (1, 8))
    """More wavefront arms, ``(m, k)`` each: fewer, fuller micro-batches over as many units."""
    fixed_batch: tuple[int, int] = (128, 32)
    """(rows, time) of every fixed-shape batch: 4096 tokens, the bucketed budget."""
    max_tokens: int = 4096
    """Bucketed token budget: rows * longest <= max_tokens (the recipe default)."""
    max_batch_size: int = 256
    pool_size: int = 4096
    examples: int = 8192
    """Bucketed examples generated (about 45 batches; each round uses its own slice)."""
    length_mean: float = 21.0
    length_sd: float = 9.0
    length_range: tuple[int, int] = (5, 60)
    """SST-2 train: mean 19.3 words (BPE tokens a little more), p95 36, max 52."""
    steps_per_window: int = 5
    """Batches per arm per round (the pp=1 arm takes about 1.5 s a batch here)."""
    rounds: int = 4
    warmup_steps: int = 2
    """Untimed steps per arm before round 0 (torch infers its stage shapes here)."""
    lr: float = 1e-3
    clip_norm: float = 1.0
    seed: int = 0
    threads: int = 1
    """torch intra-op threads per process ("one thread each")."""
    seq2seq: Seq2SeqSettings = field(default_factory=lambda: Seq2SeqSettings())


@dataclass(kw_only=True)
class Seq2SeqSettings:
    """The translation section: its model, batches and pp=2 arms."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig(
        kind="seq2seq", cell="lstm", embed_dim=256, hidden_size=256, num_layers=2, decoder_layers=4,
        attention="luong", dropout=0.1))
    """A bidirectional bottom and one more encoder layer, 4 decoder layers: the planner
    cuts pp=2 inside the decoder, so (h, context) chunks cross the cut."""
    vocab_size: int = 8000
    batch: tuple[int, int, int] = (64, 32, 32)
    """(rows, source steps, target steps) of every batch, all rows full length."""
    arms: tuple[tuple[str, int, int], ...] = (("1f1b", 4, 1), ("wavefront", 4, 4), ("wavefront", 2, 4),
                                              ("wavefront", 1, 8))
    """pp=2 arms ``(schedule, m, k)``; pp=1 runs with m=1."""
    steps_per_window: int = 3


def quick_settings() -> Settings:
    return Settings(
        model=ModelConfig(cell="lstm", embed_dim=32, hidden_size=32, num_layers=4, bidirectional_bottom=False,
                          dropout=0.1, pooling="mean"),
        vocab_size=500, microbatches=4, fixed_batch=(32, 16), max_tokens=512, max_batch_size=64,
        pool_size=512, examples=512, steps_per_window=2, rounds=1, warmup_steps=1,
        seq2seq=Seq2SeqSettings(
            model=ModelConfig(kind="seq2seq", cell="lstm", embed_dim=16, hidden_size=16, num_layers=2,
                              decoder_layers=3, dropout=0.1),
            vocab_size=200, batch=(16, 8, 8), arms=(("1f1b", 2, 1), ("wavefront", 2, 4)), steps_per_window=2),
    )


# ---------------------------------------------------------------------------- data


def fixed_batches(settings: Settings, count: int) -> list[Batch]:
    rows, width = settings.fixed_batch
    g = torch.Generator().manual_seed(settings.seed)
    return [
        (torch.randint(4, settings.vocab_size, (rows, width), generator=g),
         torch.full((rows,), width, dtype=torch.int64),
         torch.randint(0, settings.num_labels, (rows,), generator=g))
        for _ in range(count)
    ]


def bucketed_batches(settings: Settings) -> list[Batch]:
    """SST-2-like lengths (gamma, clipped), cut by the project's bucketing, batches shuffled."""
    rng = np.random.default_rng(settings.seed)
    shape = (settings.length_mean / settings.length_sd) ** 2
    low, high = settings.length_range
    lengths = np.clip(np.rint(rng.gamma(shape, settings.length_mean / shape, settings.examples)), low, high)
    lengths = lengths.astype(np.int64)
    ids = [rng.integers(4, settings.vocab_size, n) for n in lengths]
    labels = rng.integers(0, settings.num_labels, settings.examples)
    batches: list[Batch] = []
    for start in range(0, settings.examples, settings.pool_size):
        pool = np.arange(start, min(start + settings.pool_size, settings.examples))
        for rows in plan_batches(lengths[pool], max_tokens=settings.max_tokens,
                                 max_batch_size=settings.max_batch_size, sort=True):
            picked = pool[rows]
            batches.append((torch.from_numpy(pad_batch([ids[i] for i in picked]).astype(np.int64)),
                            torch.from_numpy(lengths[picked]), torch.from_numpy(labels[picked])))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def static_batches(batches: list[Batch], rows: int, width: int) -> list[Batch]:
    """The same examples, in the same order, re-cut into ``(rows, width)`` batches (what a
    static-shape pipeline needs); the last batch wraps around to the slice's first rows."""
    lengths = torch.cat([b[1] for b in batches])
    labels = torch.cat([b[2] for b in batches])
    tokens = torch.zeros(len(lengths), width, dtype=torch.int64)
    row = 0
    for t, n, _ in batches:
        tokens[row : row + len(n), : t.size(1)] = t
        row += len(n)
    count = -(-len(lengths) // rows)
    pick = torch.arange(count * rows) % len(lengths)
    return [(tokens[p], lengths[p], labels[p]) for p in pick.split(rows)]


@dataclass
class Workload:
    """Per dataset: each round's slice of batches, as rayseq and as torch get them."""

    slices: dict[str, list[list[Batch]]]
    """``rayseq``/``torch`` -> [round] -> batches."""
    info: dict[str, Any]


def make_workloads(settings: Settings) -> dict[str, Workload]:
    s, m = settings.steps_per_window, settings.microbatches
    fixed = fixed_batches(settings, s * settings.rounds)
    fixed_slices = [fixed[r * s : (r + 1) * s] for r in range(settings.rounds)]
    rows, width = settings.fixed_batch
    out = {"fixed": Workload({"rayseq": fixed_slices, "torch": fixed_slices},
                             {"batch": [rows, width], "padding_fraction": 0.0})}

    bucketed = bucketed_batches(settings)
    needed = s * settings.rounds
    if len(bucketed) < needed:
        raise ValueError(f"bucketed data has {len(bucketed)} batches, rounds * steps_per_window needs {needed}: "
                         f"raise examples ({settings.examples})")
    global_width = int(max(int(b[1].max()) for b in bucketed))
    mean_rows = statistics.mean(len(b[1]) for b in bucketed)
    static_rows = max(m, int(round(mean_rows / m)) * m)
    dynamic = [bucketed[r * s : (r + 1) * s] for r in range(settings.rounds)]
    static = [static_batches(slice_, static_rows, global_width) for slice_ in dynamic]
    used_dynamic = [b for sl in dynamic for b in sl]
    used_static = [b for sl in static for b in sl]
    real = sum(int(b[1].sum()) for b in used_dynamic)
    trimmed = sum(sum(int(p.numel()) for p in split_batch(*b, m).tokens) for b in used_dynamic)
    out["bucketed"] = Workload({"rayseq": dynamic, "torch": static}, {
        "batches_total": len(bucketed),
        "rows_mean": round(mean_rows, 1),
        "rows_min_max": [min(len(b[1]) for b in bucketed), max(len(b[1]) for b in bucketed)],
        "global_max_length": global_width,
        "mean_length": round(float(torch.cat([b[1] for b in bucketed]).float().mean()), 2),
        "rayseq_padding_fraction": round(1 - real / sum(b[0].numel() for b in used_dynamic), 4),
        "rayseq_padding_after_microbatch_trim": round(1 - real / trimmed, 4),
        "torch_static_batch": [static_rows, global_width],
        "torch_static_steps_per_round": [len(sl) for sl in static],
        "torch_padding_fraction": round(1 - sum(int(b[1].sum()) for b in used_static)
                                        / sum(b[0].numel() for b in used_static), 4),
    })
    return out


# ---------------------------------------------------------------------------- arms


@dataclass(frozen=True)
class ArmSpec:
    engine: str
    """``rayseq`` or ``torch``."""
    pp: int
    microbatches: int
    schedule: str
    time_chunks: int = 1
    """``k``: time chunks per micro-batch (wavefront only)."""

    @property
    def name(self) -> str:
        if self.pp == 1:
            return f"rayseq pp=1 m={self.microbatches}"
        if self.schedule == "wavefront":
            return f"rayseq wavefront m={self.microbatches} k={self.time_chunks}"
        return f"{self.engine} {self.schedule}"

    @property
    def slug(self) -> str:
        """The arm's prefix in the report's speedup and goal keys."""
        if self.schedule == "wavefront":
            return f"wavefront_m{self.microbatches}_k{self.time_chunks}"
        return self.schedule if self.engine == "rayseq" else f"torch_{self.schedule}"

    @property
    def units(self) -> int:
        """What the pipeline fills over: micro-batches (times time chunks, wavefront)."""
        return self.microbatches * (self.time_chunks if self.schedule == "wavefront" else 1)


def arm_specs(settings: Settings) -> list[ArmSpec]:
    m = settings.microbatches
    wavefronts = [ArmSpec("rayseq", 2, mw, "wavefront", k)
                  for mw, k in dict.fromkeys(((m, settings.time_chunks), *settings.wide_wavefront))]
    return [ArmSpec("rayseq", 1, 1, "gpipe"), ArmSpec("rayseq", 1, m, "gpipe"),
            ArmSpec("rayseq", 2, m, "gpipe"), ArmSpec("rayseq", 2, m, "1f1b"), *wavefronts,
            ArmSpec("torch", 2, m, "gpipe"), ArmSpec("torch", 2, m, "1f1b")]


def _stage_model(settings: Settings, pp: int, stage: int) -> nn.Module:
    frontend = tokens(settings.vocab_size)
    costs = build_seq2vec(settings.model, frontend=frontend, num_labels=settings.num_labels).layer_costs()
    keep = plan_stages(costs, pp).layers(stage)
    return build_seq2vec(settings.model, frontend=frontend, num_labels=settings.num_labels,
                         seed=settings.seed, keep=keep).train()


def _train_config(settings: Settings) -> TrainConfig:
    return TrainConfig(lr=settings.lr, warmup_steps=0, schedule="constant", clip_norm=settings.clip_norm,
                       seed=settings.seed)


class OpLog:
    """Thread CPU seconds of each forward/backward ``(step, kind, micro, cpu_s)`` and of each
    whole step ``(step, cpu_s)``: what the work costs, whoever else shares the cores."""

    def __init__(self) -> None:
        self.enabled = False
        self.step = 0
        self.ops: list[tuple[int, str, int, float]] = []
        self.steps: list[tuple[int, float]] = []

    def wrap(self, obj, method: str, kind: str, micro_arg: int, timeline: Timeline | None = None) -> None:
        """Replace ``obj.method`` by a timed call; ``args[micro_arg]`` is the micro-batch;
        with ``timeline``, also record the wall-clock span there."""
        inner = getattr(obj, method)

        def timed(*args, **kwargs):
            wall, cpu = Timeline.now(), time.thread_time()
            result = inner(*args, **kwargs)
            if self.enabled:
                self.ops.append((self.step, kind, int(args[micro_arg]), time.thread_time() - cpu))
            if timeline is not None:
                timeline.record(kind, int(args[micro_arg]), wall)
            return result

        setattr(obj, method, timed)


class RayseqArm:
    """rayseq's engine: the worker loop's step (broadcast plan, schedule, clip, AdamW), on
    the seq2vec model (``task``: text classification) or another application's stage."""

    def __init__(self, spec: ArmSpec, settings: Settings, topology: Topology, *, task=TEXT_CLASSIFY,
                 model: nn.Module | None = None) -> None:
        self.spec, self.settings, self.topology, self.task = spec, settings, topology, task
        model = model if model is not None else _stage_model(settings, spec.pp, topology.stage)
        self.optimizer, self.scheduler = build_optimizer(model.parameters(), _train_config(settings))
        self.runner = StageRunner(model, topology, torch.device("cpu"), time_chunks=max(spec.time_chunks, 1),
                                  task=task)
        self.timeline = self.runner.timeline
        self.log = OpLog()
        # forward(plan, i, ...): recv + compute + isend; backward(i)
        runs = self.runner.wavefront if spec.schedule == "wavefront" else self.runner
        self.log.wrap(runs, "forward", "forward", 1)
        self.log.wrap(runs, "backward", "backward", 0)
        self.steps = 0

    def step(self, batch: Batch | dict[str, torch.Tensor]) -> None:
        plan = None
        if self.topology.is_first:
            m = self.spec.microbatches
            plan = self.task.step_plan(batch, m) if isinstance(batch, dict) else split_batch(*batch, m)
        plan = broadcast_plan(plan, self.topology, torch.device("cpu"))
        self.timeline.step = self.steps
        optimizer_step(self.runner, self.optimizer, self.scheduler, plan, schedule=self.spec.schedule,
                       key=(self.settings.seed, self.steps), clip_norm=self.settings.clip_norm)
        self.steps += 1


class _PipeliningStage(nn.Module):
    """A rayseq stage as torch.distributed.pipelining wants it: activations in and out
    positionally; ``lengths (B,)`` a keyword that ``schedule.step`` hands every stage (and
    chunks along rows like the inputs). Dropout keyed per call, as rayseq keys it."""

    def __init__(self, module: nn.Module, seed: int) -> None:
        super().__init__()
        self.module, self.seed, self.calls = module, seed, 0

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        with dropout_key(self.seed, self.calls):
            # Its P2P buffers must be contiguous; the dense RNN path returns a view.
            return self.module(x, lengths).contiguous()


class TorchArm:
    """The same stage under ``torch.distributed.pipelining`` (static P2P shapes)."""

    def __init__(self, spec: ArmSpec, settings: Settings, topology: Topology) -> None:
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

        self.spec, self.settings, self.topology = spec, settings, topology
        module = _PipeliningStage(_stage_model(settings, spec.pp, topology.stage), settings.seed)
        self.params = list(module.parameters())
        self.optimizer, self.scheduler = build_optimizer(self.params, _train_config(settings))
        stage = PipelineStage(module, topology.stage, spec.pp, torch.device("cpu"))
        self.timeline = Timeline(stage=topology.stage)
        self.log = OpLog()
        self.log.wrap(stage, "forward_one_chunk", "forward", 0, self.timeline)
        self.log.wrap(stage, "backward_one_chunk", "backward", 0, self.timeline)
        cls = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[spec.schedule]
        # Summed loss over the step's examples, as rayseq's engine; no 1/m rescaling.
        self.schedule = cls(stage, n_microbatches=spec.microbatches, loss_fn=self._loss, scale_grads=False)
        self.denominator = 1.0
        self.steps = 0

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, reduction="sum") / self.denominator

    def step(self, batch: Batch) -> None:
        tokens, lengths, labels = batch  # every rank holds the data: no plan to broadcast
        self.denominator = float(len(labels))
        self.timeline.step = self.steps
        self.optimizer.zero_grad(set_to_none=True)
        if self.topology.is_first:
            self.schedule.step(tokens, lengths=lengths)
        else:
            self.schedule.step(lengths=lengths, target=labels, return_outputs=False)
        clip_global_norm(self.params, self.settings.clip_norm, self.topology)
        self.optimizer.step()
        self.scheduler.step()
        self.steps += 1


# ---------------------------------------------------------------------------- worker


def _runqueue_wait_s() -> float:
    """Seconds the calling (compute) thread spent runnable but not running: CPU time
    other jobs took from it (``/proc/thread-self/schedstat``, field 2). 0 where absent."""
    try:
        return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _window(arm, batches: list[Batch], runs_here: bool) -> dict[str, float]:
    """Barrier, the arm's steps over ``batches`` (if this rank has a part in it), barrier."""
    dist.barrier()
    transport = getattr(getattr(arm, "runner", None), "transport", None)  # rayseq's: counts header reads
    headers = (transport.headers, transport.header_s) if transport is not None else (0, 0.0)
    wall, cpu, wait = time.perf_counter(), time.process_time(), _runqueue_wait_s()
    if runs_here:
        arm.timeline.enabled = arm.log.enabled = True
        for batch in batches:
            arm.log.step = arm.steps
            cpu_step = time.thread_time()
            arm.step(batch)
            arm.log.steps.append((arm.log.step, time.thread_time() - cpu_step))
        arm.timeline.enabled = arm.log.enabled = False
    dist.barrier()
    done = (transport.headers, transport.header_s) if transport is not None else (0, 0.0)
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
            "wait_s": _runqueue_wait_s() - wait,
            "headers": done[0] - headers[0], "header_s": done[1] - headers[1]}


def _worker(rank: int, settings: Settings, port: int, out_path: str) -> None:
    torch.set_num_threads(settings.threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(minutes=10))
    try:
        _run(rank, settings, Path(out_path))
    finally:
        dist.destroy_process_group()


def _run(rank: int, settings: Settings, out_path: Path) -> None:
    pipeline = Topology.create(rank, 1, 2)
    alone = Topology(rank=0, dp=1, pp=1)
    workloads = make_workloads(settings)
    specs = arm_specs(settings)
    arms: dict[tuple[str, str], Any] = {}
    for data in DATASETS:  # one model per arm and dataset (torch's stage shapes are per dataset)
        for spec in specs:
            if spec.pp == 1:
                arms[data, spec.name] = RayseqArm(spec, settings, alone) if rank == 0 else None
            elif spec.engine == "rayseq":
                arms[data, spec.name] = RayseqArm(spec, settings, pipeline)
            else:
                arms[data, spec.name] = TorchArm(spec, settings, pipeline)

    def runs_here(spec: ArmSpec) -> bool:
        return spec.pp == 2 or rank == 0

    started = time.perf_counter()
    for (data, name), arm in arms.items():
        spec = next(s for s in specs if s.name == name)
        batches = workloads[data].slices[spec.engine][0][: settings.warmup_steps]
        _window(arm, batches, runs_here(spec))
        if arm is not None:
            arm.timeline.spans.clear()
            arm.log.ops.clear()
            arm.log.steps.clear()
    warmup_s = time.perf_counter() - started

    windows = []
    for r in range(settings.rounds):
        order = [(d, s) for d in DATASETS for s in specs]
        for data, spec in (order if r % 2 == 0 else order[::-1]):
            batches = workloads[data].slices[spec.engine][r]
            result = _window(arms[data, spec.name], batches, runs_here(spec))
            per_rank = [None, None]
            dist.all_gather_object(per_rank, result)
            tokens = sum(int(b[1].sum()) for b in batches)
            window = {"round": r, "data": data, "arm": spec.name, "steps": len(batches), "tokens": tokens,
                      "first_step": arms[data, spec.name].steps - len(batches) if rank == 0 else None,
                      "wall_s": round(per_rank[0]["wall_s"], 3), "tokens_per_s": tokens / per_rank[0]["wall_s"],
                      "cpu_s": [round(p["cpu_s"], 3) for p in per_rank],
                      "cpu_share": [round(p["cpu_s"] / p["wall_s"], 3) for p in per_rank],
                      "wait_share": [round(p["wait_s"] / p["wall_s"], 3) for p in per_rank],
                      "headers": [p["headers"] for p in per_rank],
                      "header_s": [round(p["header_s"], 4) for p in per_rank]}
            windows.append(window)
            if rank == 0:
                print(f"  round {r} {data:<9}{spec.name:<18}{len(batches):>3} steps {window['wall_s']:>6.1f}s "
                      f"{window['tokens_per_s']:>7,.0f} tok/s  cpu {window['cpu_share'][0]:.0%}/"
                      f"{window['cpu_share'][1]:.0%}  run-queue wait {window['wait_share'][0]:.0%}/"
                      f"{window['wait_share'][1]:.0%}", flush=True)

    seq2seq = run_seq2seq(rank, settings, pipeline, alone)
    probe = header_probe(rank, settings, pipeline)
    timelines, oplogs = {}, {}
    for (data, name), arm in arms.items():
        mine = (arm.timeline.spans, arm.log.ops, arm.log.steps) if arm is not None else ([], [], [])
        gathered = [None, None]
        dist.all_gather_object(gathered, mine)
        if gathered[1][0]:
            timelines[f"{data}/{name}"] = {0: gathered[0][0], 1: gathered[1][0]}
        oplogs[f"{data}/{name}"] = {k: {"ops": g[1], "steps": g[2]} for k, g in enumerate(gathered) if g[2]}
    if rank == 0:
        out_path.write_text(json.dumps({"windows": windows, "timelines": timelines, "oplogs": oplogs,
                                        "warmup_s": warmup_s, "header_probe": probe, "seq2seq": seq2seq,
                                        "workloads": {d: w.info for d, w in workloads.items()}}))


# ---------------------------------------------------------------------------- seq2seq


def seq2seq_specs(settings: Settings) -> list[ArmSpec]:
    return [ArmSpec("rayseq", 1, 1, "gpipe"),
            *(ArmSpec("rayseq", 2, m, schedule, k) for schedule, m, k in settings.seq2seq.arms)]


def seq2seq_batches(settings: Settings, count: int) -> list[dict[str, torch.Tensor]]:
    """Translation batch rows as bucketing makes them (``tgt_in = [BOS] y``, ``tgt_out =
    y [EOS]``, here random ids), every row full length."""
    s2s = settings.seq2seq
    rows, source, target = s2s.batch
    g = torch.Generator().manual_seed(settings.seed + 1)
    out = []
    for _ in range(count):
        y = torch.randint(4, s2s.vocab_size, (rows, target), generator=g)
        out.append({"src_tokens": torch.randint(4, s2s.vocab_size, (rows, source), generator=g),
                    "src_lengths": torch.full((rows,), source), "tgt_in": y.roll(1, 1), "tgt_out": y,
                    "tgt_lengths": torch.full((rows,), target)})
    return out


def _seq2seq_arm(spec: ArmSpec, settings: Settings, topology: Topology) -> RayseqArm:
    s2s, sizes = settings.seq2seq, {"src_vocab_size": settings.seq2seq.vocab_size,
                                    "tgt_vocab_size": settings.seq2seq.vocab_size}
    keep = plan_stages(TRANSLATE.build(s2s.model, sizes).layer_costs(), spec.pp).layers(topology.stage)
    model = TRANSLATE.build(s2s.model, sizes, seed=settings.seed, keep=keep)
    return RayseqArm(spec, settings, topology, task=TRANSLATE, model=model.train())


def run_seq2seq(rank: int, settings: Settings, pipeline: Topology, alone: Topology) -> dict[str, Any]:
    """The translation section: every arm warmed up, then ``rounds`` interleaved windows
    (order reversed every other round); windows, stage timelines and the stage plan."""
    s2s, specs = settings.seq2seq, seq2seq_specs(settings)
    arms = {spec.name: (_seq2seq_arm(spec, settings, pipeline) if spec.pp == 2 else
                        _seq2seq_arm(spec, settings, alone) if rank == 0 else None) for spec in specs}
    steps = s2s.steps_per_window
    data = seq2seq_batches(settings, steps * settings.rounds + settings.warmup_steps)
    warmup, rounds = data[: settings.warmup_steps], data[settings.warmup_steps :]
    for spec in specs:
        _window(arms[spec.name], warmup, spec.pp == 2 or rank == 0)
        if arms[spec.name] is not None:
            arms[spec.name].timeline.spans.clear()
    windows = []
    for r in range(settings.rounds):
        batches = rounds[r * steps : (r + 1) * steps]
        tokens = sum(int(b["src_lengths"].sum() + b["tgt_lengths"].sum()) for b in batches)
        for spec in specs if r % 2 == 0 else specs[::-1]:
            wall = _window(arms[spec.name], batches, spec.pp == 2 or rank == 0)["wall_s"]
            windows.append({"round": r, "arm": spec.name, "steps": len(batches), "tokens": tokens,
                            "wall_s": round(wall, 3), "tokens_per_s": tokens / wall})
            if rank == 0:
                print(f"  round {r} seq2seq  {spec.name:<26}{len(batches):>3} steps {wall:>6.1f}s "
                      f"{tokens / wall:>7,.0f} tok/s", flush=True)
    timelines = {}
    for spec in specs[1:]:
        gathered = [None, None]
        dist.all_gather_object(gathered, arms[spec.name].timeline.spans)
        timelines[spec.name] = {0: gathered[0], 1: gathered[1]}
    sizes = {"src_vocab_size": s2s.vocab_size, "tgt_vocab_size": s2s.vocab_size}
    model = TRANSLATE.build(s2s.model, sizes)
    names = [type(layer).__name__ for layer in model.layers.values()]
    return {"windows": windows, "timelines": timelines,
            "stage_plan": plan_stages(model.layer_costs(), 2).describe(names).splitlines()}


def summarize_seq2seq(raw: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Per arm: median tokens/s, the median over rounds of its ratio to pp=1 and to 1F1B,
    measured and theoretical bubble."""
    rows, specs = raw["windows"], seq2seq_specs(settings)
    ratio = partial(_ratio, rows, settings.rounds)
    pp1 = specs[0].name
    onef1b = next((s.name for s in specs if s.schedule == "1f1b"), None)
    arms = {}
    for spec in specs:
        mine = [w["tokens_per_s"] for w in rows if w["arm"] == spec.name]
        entry = {"pp": spec.pp, "schedule": spec.schedule, "microbatches": spec.microbatches,
                 "time_chunks": spec.time_chunks, "tokens_per_s": round(_median(mine), 1),
                 "tokens_per_s_windows": [round(v, 1) for v in mine],
                 "vs_pp1": ratio(spec.name, pp1, "tokens_per_s") if spec.pp == 2 else 1.0}
        if spec.pp == 2:
            stages = {int(k): [tuple(s) for s in v] for k, v in raw["timelines"][spec.name].items()}
            entry["vs_1f1b"] = ratio(spec.name, onef1b, "tokens_per_s") if onef1b else None
            entry["bubble"] = round(bubble_fraction(stages), 4)
            entry["bubble_theory"] = round(theoretical_bubble(2, spec.units), 4)
            steps = len({span[1] for span in stages[0]})
            entry["compute_s_per_step"] = [  # forward + backward spans: the work, apart from waiting
                round(sum(span[4] - span[3] for span in stages[r] if span[0] in ("forward", "backward")) / steps, 4)
                for r in (0, 1)]
        arms[spec.name] = entry
    rows_, source, target = settings.seq2seq.batch
    return {"model": asdict(settings.seq2seq.model), "batch": {"rows": rows_, "source": source, "target": target},
            "stage_plan": raw["stage_plan"], "arms": arms}


def seq2seq_table(result: dict[str, Any]) -> str:
    lines = [f"seq2seq (translation, batch {result['batch']}): " + " | ".join(result["stage_plan"]),
             f"{'arm':<28}{'tok/s':>8}{'x pp=1':>8}{'x 1f1b':>8}{'bubble':>8}{'theory':>8}"]
    for name, arm in result["arms"].items():
        pp1, onef1b = (f"{arm[k]:.2f}x" if arm.get(k) is not None else "" for k in ("vs_pp1", "vs_1f1b"))
        bubble = f"{arm['bubble']:.1%}" if "bubble" in arm else ""
        theory = f"{arm['bubble_theory']:.1%}" if "bubble_theory" in arm else ""
        lines.append(f"{name:<28}{arm['tokens_per_s']:>8,.0f}{pp1:>8}{onef1b:>8}{bubble:>8}{theory:>8}")
    return "\n".join(lines)


def header_probe(rank: int, settings: Settings, topology: Topology, reps: int = 30) -> dict[str, Any]:
    """What a shape header costs by itself: stage 1 receives an activation of the
    bench's shapes (a 1F1B micro-batch, a wavefront chunk) that stage 0 has already
    sent, once announced by a header (read with a blocking receive before the payload
    is posted) and once headless (the shape passed in, as a gradient's is). Median
    milliseconds of each receive; the difference is the header's own cost per message."""
    transport = Transport.over_torch(topology, torch.device("cpu"))
    rows, width = settings.fixed_batch
    m, k, hidden = settings.microbatches, settings.time_chunks, settings.model.hidden_size
    shapes = {"1f1b": (rows // m, width, hidden), "wavefront": (rows // m, -(-width // k), hidden)}
    out: dict[str, Any] = {}
    for name, shape in shapes.items():
        x = torch.randn(shape)
        times: dict[str, list[float]] = {"headed": [], "headless": []}
        for _ in range(reps):
            for kind in times:
                dist.barrier()
                if rank == 0:
                    transport.post(x, topology.stage_rank(1), headed=kind == "headed")
                    transport.ship()
                    transport.flush()
                else:
                    time.sleep(0.002)  # the message is out before the receive
                    start = time.perf_counter()
                    transport.receive(topology.stage_rank(0), None if kind == "headed" else [x])
                    times[kind].append(time.perf_counter() - start)
        if rank == 1:
            headed, headless = (1e3 * statistics.median(times[k]) for k in ("headed", "headless"))
            out[name] = {"shape": list(shape), "headed_ms": round(headed, 4), "headless_ms": round(headless, 4),
                         "header_ms": round(headed - headless, 4)}
    gathered = [None, None]
    dist.all_gather_object(gathered, out)
    return gathered[1]


# ---------------------------------------------------------------------------- report


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def simulate_step(stages: dict[int, list[tuple[str, int, float]]]) -> tuple[float, list[float]]:
    """Makespan of one step's pipeline on dedicated cores, and each stage's busy seconds.

    Each stage runs its ops ``(kind, micro, seconds)`` in the order it ran them (its
    schedule); ``forward`` of micro ``i`` waits for the stage before, ``backward`` for the
    stage after (the last stage's for its own forward); messages are free.
    """
    p = len(stages)
    end: dict[tuple[str, int, int], float] = {}
    free, busy, pos = [0.0] * p, [0.0] * p, [0] * p
    left = sum(len(ops) for ops in stages.values())
    while left:
        progressed = False
        for s in range(p):
            while pos[s] < len(stages[s]):
                kind, i, cost = stages[s][pos[s]]
                dep = (("forward", s - 1, i) if kind == "forward" and s > 0 else
                       ("backward", s + 1, i) if kind == "backward" and s < p - 1 else None)
                if dep is not None and dep not in end:
                    break
                start = max(free[s], end[dep] if dep else 0.0)
                free[s] = end[kind, s, i] = start + cost
                busy[s] += cost
                pos[s] += 1
                left -= 1
                progressed = True
        if not progressed:
            raise RuntimeError(f"recorded op orders deadlock: {stages}")
    return max(free), busy


def dedicated_estimate(oplog: dict[str, Any], first: int, count: int) -> tuple[float, list[float]]:
    """Seconds the steps ``first .. first + count - 1`` would take with a core per
    process: pp=1, the step's CPU time; pp=2, the simulated pipeline plus the slower
    stage's remaining step work (plan broadcast, clipping, AdamW). Also the per-step
    simulated bubbles."""
    total, bubbles = 0.0, []
    ranks = sorted(oplog, key=int)
    for step in range(first, first + count):
        step_cpu = {r: next(c for k, c in oplog[r]["steps"] if k == step) for r in ranks}
        if len(ranks) == 1:
            total += step_cpu[ranks[0]]
            continue
        ops = {int(r): [(kind, micro, c) for k, kind, micro, c in oplog[r]["ops"] if k == step] for r in ranks}
        makespan, busy = simulate_step(ops)
        total += makespan + max(step_cpu[r] - busy[int(r)] for r in ranks)
        bubbles += [1 - b / makespan for b in busy]
    return total, bubbles


def _cpu_profile(oplog: dict[str, Any], m: int) -> dict[str, Any]:
    """Per stage: forward/backward CPU per step, whole-step CPU per step, and the median
    CPU milliseconds of each micro-batch's forward and backward (how even they are)."""
    steps = len(oplog["0"]["steps"])
    ranks = ("0", "1")

    def op_ms(rank: str, kind: str, micro: int) -> float:
        costs = [o[3] for o in oplog[rank]["ops"] if o[1] == kind and o[2] == micro]
        return round(1e3 * (_median(costs) or 0.0), 1)

    return {
        "stage_cpu_s_per_step": [round(sum(o[3] for o in oplog[r]["ops"]) / steps, 4) for r in ranks],
        "step_cpu_s_per_step": [round(sum(c for _, c in oplog[r]["steps"]) / steps, 4) for r in ranks],
        "op_cpu_ms_by_micro": {f"stage{r}": {kind: [op_ms(r, kind, i) for i in range(m)]
                                             for kind in ("forward", "backward")} for r in ranks},
    }


def _ratio(rows: list[dict[str, Any]], rounds: int, a: str, b: str | tuple[str, str], key: str) -> float | None:
    """Median over rounds of a's value / b's (b a pair: the better of the two)."""
    per_round = []
    for r in range(rounds):
        value = {w["arm"]: w[key] for w in rows if w["round"] == r}
        bases = [value.get(x) for x in (b if isinstance(b, tuple) else (b,))]
        if value.get(a) and all(bases):
            per_round.append(value[a] / max(bases))
    return round(_median(per_round), 3) if per_round else None


def summarize(raw: dict[str, Any], settings: Settings) -> dict[str, Any]:
    m = settings.microbatches
    specs = arm_specs(settings)
    wavefronts = [spec for spec in specs if spec.schedule == "wavefront"]
    results: dict[str, Any] = {}
    for data in DATASETS:
        rows = [w for w in raw["windows"] if w["data"] == data]
        for w in rows:
            oplog = raw["oplogs"][f"{data}/{w['arm']}"]
            if w["arm"].startswith("rayseq wavefront"):  # no chunk-level simulation
                w["dedicated_s"] = w["dedicated_tokens_per_s"] = w["dedicated_bubble"] = None
            else:
                seconds, bubbles = dedicated_estimate(oplog, w["first_step"], w["steps"])
                w["dedicated_s"] = round(seconds, 3)
                w["dedicated_tokens_per_s"] = w["tokens"] / seconds
                w["dedicated_bubble"] = _median(bubbles)
            pp1 = w["arm"].startswith("rayseq pp=1")
            w["tokens_per_cpu_s"] = w["tokens"] / (w["cpu_s"][0] if pp1 else sum(w["cpu_s"]))
        arms: dict[str, Any] = {}
        for spec in specs:
            mine = [w for w in rows if w["arm"] == spec.name]
            entry = {
                "engine": spec.engine, "pp": spec.pp, "microbatches": spec.microbatches, "schedule": spec.schedule,
                "time_chunks": spec.time_chunks, "slug": spec.slug,
                "tokens_per_s": round(_median([w["tokens_per_s"] for w in mine]), 1),
                "tokens_per_s_windows": [round(w["tokens_per_s"], 1) for w in mine],
                "dedicated_tokens_per_s": _round(_median([w["dedicated_tokens_per_s"] for w in mine
                                                          if w["dedicated_tokens_per_s"] is not None]), 1),
                "tokens_per_cpu_s": round(_median([w["tokens_per_cpu_s"] for w in mine]), 1),
                "cpu_share": [round(_median([w["cpu_share"][i] for w in mine]), 3) for i in (0, 1)],
                "wait_share": [round(_median([w["wait_share"][i] for w in mine]), 3) for i in (0, 1)],
            }
            if spec.engine == "rayseq" and spec.pp == 2:
                # Stage 1 reads a header per activation; the seconds it was blocked in
                # those reads (waiting for stage 0's compute included), per step and as
                # a share of the window.
                entry["headers_per_step"] = _median([w["headers"][1] / w["steps"] for w in mine])
                entry["header_wait_ms_per_step"] = round(_median([1e3 * w["header_s"][1] / w["steps"]
                                                                  for w in mine]), 2)
                entry["header_wait_share"] = round(_median([w["header_s"][1] / w["wall_s"] for w in mine]), 4)
            stages = raw["timelines"].get(f"{data}/{spec.name}")
            if stages:
                stages = {int(k): [tuple(s) for s in v] for k, v in stages.items()}
                entry["bubble"] = round(bubble_fraction(stages), 4)
                entry["dedicated_bubble"] = _round(_median([w["dedicated_bubble"] for w in mine
                                                            if w["dedicated_bubble"] is not None]), 4)
                entry["bubble_theory"] = round(theoretical_bubble(2, spec.units), 4)
                entry.update(_cpu_profile(raw["oplogs"][f"{data}/{spec.name}"], spec.microbatches))
            arms[spec.name] = entry

        ratio = partial(_ratio, rows, settings.rounds)

        pp1, accum = "rayseq pp=1 m=1", f"rayseq pp=1 m={m}"
        torch_best = ("torch gpipe", "torch 1f1b")
        speedups: dict[str, dict[str, float | None]] = {}
        for basis, key in (("measured", "tokens_per_s"), ("dedicated_estimate", "dedicated_tokens_per_s")):
            sp = {f"pp1_m{m}_vs_pp1_m1": ratio(accum, pp1, key)}
            for engine in ("rayseq", "torch"):
                for schedule in ("gpipe", "1f1b"):
                    prefix = schedule if engine == "rayseq" else f"torch_{schedule}"
                    sp[f"{prefix}_vs_pp1"] = ratio(f"{engine} {schedule}", (pp1, accum), key)
                    sp[f"{prefix}_vs_pp1_m1"] = ratio(f"{engine} {schedule}", pp1, key)
                    if engine == "rayseq":
                        sp[f"{schedule}_vs_torch"] = ratio(f"rayseq {schedule}", f"torch {schedule}", key)
            # the wavefront has no torch counterpart: compared with torch's faster schedule
            for spec in wavefronts:
                sp[f"{spec.slug}_vs_pp1"] = ratio(spec.name, (pp1, accum), key)
                sp[f"{spec.slug}_vs_pp1_m1"] = ratio(spec.name, pp1, key)
                sp[f"{spec.slug}_vs_torch"] = ratio(spec.name, torch_best, key)
            speedups[basis] = sp
        speedups["tokens_per_cpu_s"] = {f"{s}_vs_torch": ratio(f"rayseq {s}", f"torch {s}", "tokens_per_cpu_s")
                                        for s in ("gpipe", "1f1b")}
        for spec in wavefronts:
            speedups["tokens_per_cpu_s"][f"{spec.slug}_vs_torch"] = ratio(spec.name, torch_best, "tokens_per_cpu_s")
        goal_torch = GOAL_VS_TORCH_FIXED if data == "fixed" else GOAL_VS_TORCH_BUCKETED
        goals = {}
        for spec in [s for s in specs if s.engine == "rayseq" and s.pp == 2]:
            arm, slug = arms[spec.name], spec.slug
            for goal, name, key in (
                (GOAL_PP_SPEEDUP, f"{slug}_pp2_ge_{GOAL_PP_SPEEDUP}x_pp1", f"{slug}_vs_pp1"),
                (goal_torch, f"{slug}_ge_{goal_torch}x_torch", f"{slug}_vs_torch"),
            ):
                measured, estimate = speedups["measured"][key], speedups["dedicated_estimate"][key]
                goals[name] = {"measured": measured, "dedicated_estimate": estimate,
                               "met": (measured or 0) >= goal, "met_by_estimate": (estimate or 0) >= goal}
            goals[f"{slug}_bubble_within_5_points"] = {
                "measured": arm["bubble"], "dedicated_estimate": arm["dedicated_bubble"],
                "theory": arm["bubble_theory"],
                "met": abs(arm["bubble"] - arm["bubble_theory"]) <= GOAL_BUBBLE_POINTS,
                "met_by_estimate": arm["dedicated_bubble"] is not None
                and abs(arm["dedicated_bubble"] - arm["bubble_theory"]) <= GOAL_BUBBLE_POINTS}
        results[data] = {"workload": raw["workloads"][data], "arms": arms, "speedups": speedups, "goals": goals}
    return results


def table(results: dict[str, Any], settings: Settings, probe: dict[str, Any] | None = None) -> str:
    """One row per arm: measured wall clock on this machine | estimate with a dedicated core
    per process (per-op CPU time, simulated schedule) | CPU diagnostics."""
    m = settings.microbatches
    head = (f"{'':<39}{'measured (shared machine)':^33}|{'dedicated-core estimate':^33}|\n"
            f"{'data':<9}{'arm':<26}{'pp':>2}{'m':>2}{'tok/s':>8}{'x pp=1':>8}{'x torch':>8}{'bubble':>8} |"
            f"{'tok/s':>7}{'x pp=1':>8}{'x torch':>8}{'bubble':>8} |{'theory':>7}{'tok/cpu-s':>10}"
            f"{'cpu% r0/r1':>11}{'wait% r0/r1':>12}{'hdr ms/step':>12}")
    lines = [head, "-" * len(head.splitlines()[1])]

    def x(value: float | None) -> str:
        return f"{value:.2f}x" if value is not None else "n/a"

    for data in DATASETS:
        res = results[data]
        for name, arm in res["arms"].items():
            label = data if name == "rayseq pp=1 m=1" else ""
            cols = []
            for basis, key in (("measured", "tokens_per_s"), ("dedicated_estimate", "dedicated_tokens_per_s")):
                sp = res["speedups"][basis]
                if arm["pp"] == 1:
                    x_pp1 = "1.00x" if arm["microbatches"] == 1 else x(sp[f"pp1_m{m}_vs_pp1_m1"])
                else:
                    x_pp1 = x(sp[f"{arm['slug']}_vs_pp1"])
                x_torch = x(sp[f"{arm['slug']}_vs_torch"]) if arm["engine"] == "rayseq" and arm["pp"] == 2 else ""
                bubble_key = "bubble" if basis == "measured" else "dedicated_bubble"
                bubble = f"{arm[bubble_key]:.1%}" if arm.get(bubble_key) is not None else ""
                width = 8 if basis == "measured" else 7
                value = f"{arm[key]:,.0f}" if arm[key] is not None else "n/a"
                cols.append(f"{value:>{width}}{x_pp1:>8}{x_torch:>8}{bubble:>8}")
            theory = f"{arm['bubble_theory']:.1%}" if "bubble_theory" in arm else ""
            ranks = (0, 1) if arm["pp"] == 2 else (0,)
            cpu = "/".join(f"{arm['cpu_share'][r]:.0%}" for r in ranks)
            wait = "/".join(f"{arm['wait_share'][r]:.0%}" for r in ranks)
            header = f"{arm['header_wait_ms_per_step']:.1f}" if "header_wait_ms_per_step" in arm else ""
            lines.append(f"{label:<9}{name:<26}{arm['pp']:>2}{arm['microbatches']:>2}{cols[0]} |{cols[1]} |"
                         f"{theory:>7}{arm['tokens_per_cpu_s']:>10,.0f}{cpu:>11}{wait:>12}{header:>12}")
    lines.append("")
    lines.append(f"x pp=1: vs. the faster pp=1 arm (m=1 or m={m}) of the same round; x torch: vs. the same schedule "
                 "under torch.distributed.pipelining (wavefront: the faster torch schedule); hdr ms/step: stage 1 "
                 "blocked reading shape headers (waiting for stage 0 included)")
    for name, one in (probe or {}).items():
        lines.append(f"header probe {name:<10} {one['shape']}: receive {one['headed_ms']:.3f} ms with its header, "
                     f"{one['headless_ms']:.3f} ms without: {one['header_ms']:.3f} ms per header")
    for data in DATASETS:
        for name, goal in results[data]["goals"].items():
            theory = f"theory {goal['theory']}  " if "theory" in goal else ""
            verdict = "met" if goal["met"] else "MISSED"
            estimate = "met" if goal["met_by_estimate"] else "missed"
            lines.append(f"goal {data:<9}{name:<40} measured {goal['measured']!s:<7} "
                         f"estimate {goal['dedicated_estimate']!s:<7}{theory}{verdict} (estimate: {estimate})")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 3.8), sharey=True)
    for ax, (data, res) in zip(np.atleast_1d(axes), results.items()):
        names = [n for n, a in res["arms"].items() if a.get("available", True)]
        x = np.arange(len(names))
        for offset, key, label in ((-0.2, "tokens_per_s", "measured (shared machine)"),
                                   (0.2, "dedicated_tokens_per_s", "dedicated-core estimate")):
            ax.bar(x + offset, [res["arms"][n][key] or 0.0 for n in names], 0.4, label=label)
        best_pp1 = max(res["arms"][n]["dedicated_tokens_per_s"] for n in names if res["arms"][n]["pp"] == 1)
        ax.axhline(best_pp1 * GOAL_PP_SPEEDUP, color="k", ls="--", lw=0.8)
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{data}: training tokens/s (dashed: {GOAL_PP_SPEEDUP}x best pp=1 estimate)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- run


def run_benchmark(settings: Settings) -> dict[str, Any]:
    """Spawn the two workers, time every arm, return the report."""
    load_start = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="rayseq-bench-") as tmp:
        raw_path = Path(tmp) / "raw.json"
        started = time.perf_counter()
        mp.spawn(_worker, args=(settings, free_port(), str(raw_path)), nprocs=2, join=True)
        elapsed = time.perf_counter() - started
        raw = json.loads(raw_path.read_text())
    return {
        "name": "pipeline",
        "goal": {"pp2_vs_pp1_min": GOAL_PP_SPEEDUP, "vs_torch_fixed_min": GOAL_VS_TORCH_FIXED,
                 "vs_torch_bucketed_min": GOAL_VS_TORCH_BUCKETED, "bubble_max_points": GOAL_BUBBLE_POINTS},
        **run_info(torch_threads_per_process=settings.threads, load_avg_at_start=load_start,
                   load_avg_at_end=list(os.getloadavg())),
        "elapsed_s": round(elapsed, 1),
        "warmup_s": round(raw["warmup_s"], 1),
        "settings": asdict(settings),
        "theoretical_bubble": round(theoretical_bubble(2, settings.microbatches), 4),
        "results": summarize(raw, settings),
        "seq2seq": summarize_seq2seq(raw["seq2seq"], settings),
        "header_probe": raw["header_probe"],
        "windows": raw["windows"],
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run (tiny model, 1 round); writes only with --out")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"report JSON (default {DEFAULT_OUT.relative_to(ROOT)}; none with --quick); "
                             "a .png goes beside it")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds (default 4)")
    parser.add_argument("--microbatches", type=int, default=None, help="micro-batches per step (default 8)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    settings = quick_settings() if args.quick else Settings()
    for name in ("rounds", "microbatches"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)
    print(f"pipeline benchmark: {settings.rounds} round(s), {settings.steps_per_window} steps per arm per round, "
          f"m={settings.microbatches}, {settings.threads} torch thread(s) per process, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    report = run_benchmark(settings)
    report["quick"] = args.quick
    print()
    print(table(report["results"], settings, report["header_probe"]))
    print()
    print(seq2seq_table(report["seq2seq"]))
    if args.quick:
        print("note: --quick smoke run (tiny model, 1 round): not the benchmark's numbers")
    if out is not None:
        write_report(out, report)
        plot(report["results"], out.with_suffix(".png"))
        print(f"wrote {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
