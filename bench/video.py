"""Video: ingest throughput (Ray Data vs. a plain PyAV loop) and the frame-order ablation.

Acceptance items (issue 7): "Ingest benchmark: frames/s decoded and featurized by Ray
Data on 2 cores vs. a plain single-process PyAV loop, one run" and "an ablation in the
benchmark showing a frame-average (no RNN) model near chance on the same data".

**Ingest.** The same generated H.264 clips (8-20 frames, ``rayseq generate video``):
1,000 at 64x64 (the training data: per-clip overhead dominates) and 200 at 256x256
(decoding dominates), decoded and resized to 32x32 RGB uint8 two ways, in alternating
rounds::

    plain:    for path in clips: av.open -> decode (1 thread) -> to_ndarray(32x32, AREA)
    ray-data: featurize_video(records): ray.data.from_items -> map_batches(featurize_clips,
              batch_size=8) -> materialize (what `rayseq train` runs; the Ray instance is
              started before timing)

Both produce the same frames (checked on every clip); frames/s = frames / wall seconds.

**Ablation.** ``recipes/video_classify.yaml`` trained twice on the same generated
clips with the same seed and steps, through ``rayseq train``: the CNN+LSTM model, and
``model.num_layers=0``, whose head averages the per-frame CNN vectors (a bag of frames:
it sees every frame, so it knows at least what the average frame would tell it, but not
their order). The clips' classes are the order of four moves around a loop; every class
visits the same positions, so without order the best a model can do is chance (1/8).

Usage, from the repository root::

    python bench/video.py            # ~25 min on 2 cores: 1,000-clip ingest, two 600-step trainings (the recipe)
    python bench/video.py --quick --out /tmp/video.json   # smoke run (about a minute: two tiny trainings)
    python bench/video.py --part ingest --work runs/bench_video   # redo one part, keep the other

Each part is its own side-by-side measurement and records its date and machine.

Writes ``bench/results/video.json`` (+ ``video.png``); ``--quick`` writes only with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import run_info, write_report  # noqa: E402
from pipelines.config import VideoConfig  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "video.json"
CHANCE = 1 / 8


@dataclass(kw_only=True)
class Settings:
    clips: int = 1000
    """64x64 clips decoded by each ingest arm (the training data's size: overhead-bound)."""
    large_clips: int = 200
    """256x256 clips decoded by each ingest arm (16x the pixels: decode-bound)."""
    rounds: int = 3
    """Ingest rounds; arms alternate order every round, figures are medians."""
    size: int = 32
    """Frame side after resizing (the recipe's data.video.size)."""
    train_clips: int = 4000
    """Generated training clips for the ablation (validation: a quarter, next seed)."""
    steps: int = 600
    """Training steps of each ablation arm."""
    threads: int = 2
    """torch threads of each training (one training at a time)."""
    overrides: tuple[str, ...] = ()
    """More ``--set`` overrides for both trainings (``--quick``: a tiny model)."""
    together: bool = False
    """Run the ablation's two trainings at once when they join one cluster (``RAY_ADDRESS``;
    ``--quick``): their wall times then share the machine and are not comparable."""


QUICK = Settings(clips=16, large_clips=4, rounds=1, train_clips=64, steps=8, threads=1, together=True,
                 overrides=("model.frontend_channels=4", "model.embed_dim=16", "model.hidden_size=16",
                            "train.warmup_steps=2", "train.log_every=4"))
"""The smoke run: the same steps on a handful of clips, a tiny model, 8 training steps
(both trainings at once when ``RAY_ADDRESS`` names a cluster)."""


def plain_pyav(paths: list[Path], size: int) -> list:
    """The peer: one process, one clip after another, PyAV straight."""
    import av

    clips = []
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            clips.append([frame.to_ndarray(width=size, height=size, format="rgb24", interpolation="AREA", threads=1)
                          for frame in container.decode(stream)])
    return clips


def ray_data(records: list[dict[str, str]], config: VideoConfig):
    from pipelines.media.video.folders import featurize_video

    return featurize_video(records, config, "bench", "error")


def measure_ingest(folder: Path, clips: int, settings: Settings) -> dict[str, Any]:
    """Both arms on the first ``clips`` clips of ``folder`` (Ray already started)."""
    import av
    import numpy as np

    from pipelines.media.video.folders import list_video_folder

    records = list_video_folder(folder, target="label")[:clips]
    paths = [Path(r["path"]) for r in records]
    config = VideoConfig(size=settings.size, max_frames=64)
    seconds: dict[str, list[float]] = {"plain": [], "ray-data": []}
    frames = 0
    for round_ in range(settings.rounds):
        for arm in (("plain", "ray-data") if round_ % 2 == 0 else ("ray-data", "plain")):
            started = time.perf_counter()
            if arm == "plain":
                plain = plain_pyav(paths, settings.size)
            else:
                split = ray_data(records, config)
                featurized = sorted(split.dataset.iter_rows(), key=lambda r: int(r["index"]))
            seconds[arm].append(time.perf_counter() - started)
            print(f"  {folder.name} round {round_ + 1} {arm:<8} {seconds[arm][-1]:6.2f}s", flush=True)
    frames = sum(len(c) for c in plain)
    same = all(np.array_equal(np.stack(p), r["frames"]) for p, r in zip(plain, featurized))
    arms = {arm: {"seconds": [round(s, 3) for s in values], "median_s": round(statistics.median(values), 3),
                  "frames_per_s": round(frames / statistics.median(values), 1)} for arm, values in seconds.items()}
    with av.open(str(paths[0])) as container:
        source = f"{container.streams.video[0].width}x{container.streams.video[0].height}"
    return {"source": source, "clips": len(records), "frames": frames, "same_frames": same, "arms": arms,
            "speedup": round(arms["ray-data"]["frames_per_s"] / arms["plain"]["frames_per_s"], 3)}


ABLATION = {"cnn_rnn": [], "bag_of_frames": ["model.num_layers=0"]}
"""The ablation's arms: their ``--set`` overrides of the recipe."""


def start_arm(name: str, data_root: Path, out: Path, settings: Settings) -> subprocess.Popen:
    """``rayseq train`` of one ablation arm, started; its output goes to ``out/<name>.out``
    and ``.err`` (files, not pipes: two trainings at once never wait on a full pipe)."""
    overrides = [f"data.root={data_root}", "data.generate=null", f"train.max_steps={settings.steps}",
                 f"parallel.threads_per_worker={settings.threads}", *settings.overrides, *ABLATION[name]]
    command = [sys.executable, "-m", "pipelines.cli", "train", "recipes/video_classify.yaml",
               *[a for o in overrides for a in ("--set", o)], "--output", str(out / name)]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{name}.out", "w") as stdout, open(out / f"{name}.err", "w") as stderr:
        return subprocess.Popen(command, cwd=ROOT, stdout=stdout, stderr=stderr)


def finish_arm(name: str, run: subprocess.Popen, out: Path, started: float) -> dict[str, Any]:
    """Wait for an arm's training; its summary (the last line of its output)."""
    run.wait()
    if run.returncode != 0:
        raise SystemExit(f"{name} training failed:\n{(out / f'{name}.err').read_text()[-3000:]}")
    summary = json.loads((out / f"{name}.out").read_text().strip().splitlines()[-1])
    print(f"  {name:<14} val_accuracy {summary['val_accuracy']:.4f}  ({time.perf_counter() - started:.0f} s)",
          flush=True)
    keep = ("steps", "train_loss", "val_loss", "val_accuracy", "val_examples", "tokens_per_s", "wall_s")
    return {"overrides": ABLATION[name], **{k: summary[k] for k in keep}}


def ensure_data(settings: Settings, work: Path) -> Path:
    from pipelines.media.video.synthetic import write_moving_shapes

    data = work / "data"
    if not (data / "valid" / "manifest.csv").is_file():
        print(f"generating {settings.train_clips} + {settings.train_clips // 4} clips in {data}", flush=True)
        write_moving_shapes(data / "valid", count=max(settings.train_clips // 4, settings.clips), seed=1)
        write_moving_shapes(data / "train", count=settings.train_clips, seed=0)
    if not (data / "large" / "manifest.csv").is_file():
        write_moving_shapes(data / "large", count=settings.large_clips, seed=2, size=256)
    return data


def run_ingest(settings: Settings, data: Path) -> dict[str, Any]:
    import ray

    from pipelines.runtime import init_ray

    print(f"ingest: {settings.rounds} round(s)", flush=True)
    started = time.perf_counter()
    started_ray = not ray.is_initialized()  # else joined as it is (a caller's, e.g. a test session's)
    init_ray()
    ray_start_s = time.perf_counter() - started
    try:
        workloads = [measure_ingest(data / "valid", settings.clips, settings),
                     measure_ingest(data / "large", settings.large_clips, settings)]
        return {"workloads": workloads, "ray_start_s": round(ray_start_s, 2), **run_info()}
    finally:
        if started_ray:
            ray.shutdown()  # the trainings start their own (or join RAY_ADDRESS's cluster)


def run_ablation(settings: Settings, data: Path, work: Path) -> dict[str, Any]:
    """Both arms' trainings, one after the other; with ``settings.together`` at once when
    both join one cluster (``RAY_ADDRESS``; without it each would start a Ray instance)."""
    together = settings.together and bool(os.environ.get("RAY_ADDRESS"))
    print(f"ablation: {settings.steps} steps each, same data and seed"
          + (", both trainings at once" if together else ""), flush=True)
    results: dict[str, Any] = {}
    runs = work / "runs"
    if together:  # a tiny run is mostly start-up, which overlaps well
        started = time.perf_counter()
        running = {name: start_arm(name, data, runs, settings) for name in ABLATION}
        try:
            results = {name: finish_arm(name, run, runs, started) for name, run in running.items()}
        finally:  # one failed: stop the other
            for run in running.values():
                if run.poll() is None:
                    run.kill()
                    run.wait()
    else:
        for name in ABLATION:
            started = time.perf_counter()
            results[name] = finish_arm(name, start_arm(name, data, runs, settings), runs, started)
    return {**results, **run_info(torch_threads_per_training=settings.threads, trainings_together=together)}


def run(settings: Settings, work: Path, part: str, previous: dict[str, Any]) -> dict[str, Any]:
    """Both parts, or one of them (the other kept from ``previous``, the last report):
    each part is a side-by-side measurement of its own and records when and where it ran."""
    data = ensure_data(settings, work)
    for key in ("ingest", "ablation"):  # reports from before parts kept date and machine at the top
        if previous.get(key) and "machine" not in previous[key]:
            previous[key].update({k: previous[k] for k in ("date", "command", "machine") if k in previous})
    report = {"name": "video", "settings": asdict(settings), "data": str(data), "chance": CHANCE,
              "ingest": previous.get("ingest"), "ablation": previous.get("ablation")}
    if part in ("all", "ingest"):
        report["ingest"] = run_ingest(settings, data)
    if part in ("all", "ablation"):
        report["ablation"] = run_ablation(settings, data, work)
    missing = [k for k in ("ingest", "ablation") if report[k] is None]
    if missing:
        raise SystemExit(f"no {' or '.join(missing)} results: run with --part all first")
    return report


def table(report: dict[str, Any]) -> str:
    ingest, ablation = report["ingest"], report["ablation"]
    lines = [f"ingest (decode + resize to {report['settings']['size']}px RGB uint8, "
             f"{ingest['machine']['cpu_count']} CPUs)",
             f"{'source':<10}{'clips':>7}{'frames':>8}{'plain f/s':>12}{'ray-data f/s':>14}{'ratio':>8}{'same':>6}"]
    for w in ingest["workloads"]:
        plain, ray_data = w["arms"]["plain"]["frames_per_s"], w["arms"]["ray-data"]["frames_per_s"]
        lines.append(f"{w['source']:<10}{w['clips']:>7}{w['frames']:>8}{plain:>12,.0f}{ray_data:>14,.0f}"
                     f"{w['speedup']:>7.2f}x{str(w['same_frames']):>6}")
    lines.append("")
    lines.append(f"ablation (chance {report['chance']:.3f})")
    lines.append(f"{'model':<16}{'val acc':>10}{'val loss':>10}{'wall s':>10}")
    for name in ("cnn_rnn", "bag_of_frames"):
        r = ablation[name]
        lines.append(f"{name:<16}{r['val_accuracy']:>10.4f}{r['val_loss']:>10.3f}{r['wall_s']:>10.0f}")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    workloads = report["ingest"]["workloads"]
    x = np.arange(len(workloads))
    for offset, arm, colour in ((-0.2, "plain", "#999999"), (0.2, "ray-data", "#3b7dd8")):
        ax1.bar(x + offset, [w["arms"][arm]["frames_per_s"] for w in workloads], 0.4, label=arm, color=colour)
    ax1.set_xticks(x, [f"{w['source']} clips" for w in workloads])
    ax1.set_ylabel("frames/s (decode + resize)")
    ax1.set_title(f"ingest, {report['ingest']['machine']['cpu_count']} CPUs")
    ax1.legend()
    ablation = report["ablation"]
    ax2.bar(["CNN + LSTM", "bag of frames"], [ablation[k]["val_accuracy"] for k in ("cnn_rnn", "bag_of_frames")],
            color=["#3b7dd8", "#999999"])
    ax2.axhline(report["chance"], color="k", linestyle="--", linewidth=1, label="chance")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("validation accuracy")
    ax2.set_title(f"moving shapes, {report['settings']['steps']} steps")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run; writes only with --out")
    parser.add_argument("--work", type=Path, help="folder for generated clips and runs (default: a temp folder; "
                                                  "reused when it already holds the clips)")
    parser.add_argument("--out", type=Path, help=f"report path (default {DEFAULT_OUT.relative_to(ROOT)})")
    parser.add_argument("--part", choices=("all", "ingest", "ablation"), default="all",
                        help="run one part and keep the other from the existing report")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = QUICK if args.quick else Settings()
    os.chdir(ROOT)
    out = args.out or (None if args.quick else DEFAULT_OUT)
    previous = json.loads(out.read_text()) if args.part != "all" and out is not None and out.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="rayseq-video-bench-") as tmp:
        report = run(settings, args.work or Path(tmp), args.part, previous)
    report["quick"] = args.quick
    print(table(report))
    if args.quick:
        print("note: --quick smoke run (16 + 4 clips, tiny model, 8 training steps): not the benchmark's numbers")
    if out is not None:
        write_report(out, report)
        plot(report, out.with_suffix(".png"))
        print(f"wrote {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
