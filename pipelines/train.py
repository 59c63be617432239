"""Train a recipe on Ray: ``python -m pipelines.train RECIPE [--set K=V ...] [--output DIR]``.

On one machine this starts a local Ray instance; inside ``ray job submit`` (``RAY_ADDRESS``
set) it joins that cluster::

    python -m pipelines.train recipes/demo_sentiment.yaml
    ray job submit --working-dir . -- python -m pipelines.train recipes/sst2.yaml \\
        --set data.root=/data/sst2 --set parallel.dp=2

The last stdout line is a JSON object with the run's figures (``docs/cli.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pipelines import apps
from pipelines.config import ParallelConfig, Recipe, load_recipe
from pipelines.engine.stage_plan import plan_stages
from pipelines.errors import ConfigError


def default_output(recipe: Recipe) -> Path:
    return Path("runs") / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def generate_dataset(recipe: Recipe, output: Path) -> None:
    """Write the recipe's generated dataset into ``data.root`` (default ``<output>/data``)
    unless it is already there, and point ``data.root`` at it."""
    gen, data = recipe.data.generate, recipe.data
    root = Path(data.root or output / "data")
    data.root = str(root)
    marker = data.train + (f".{data.source_lang}" if data.format == "parallel" else "")
    if (root / marker).exists():
        return
    apps.generators()[gen.name].write(data, root)
    print(f"generated {gen.name} data ({gen.size} training examples) in {root}", flush=True)


MAX_FAILURES = 2
"""Worker-group failures a run survives (restarting from its latest checkpoint)."""

REPORTED = ("valid_fraction", "valid_seed", "valid_lines", "pretrained_coverage")
"""Data report entries the run summary repeats where the data has them."""


def run_training(recipe: Recipe, output: Path) -> dict[str, Any]:
    """Prepare data, train with Ray Train, export the inference checkpoint; the summary."""
    import ray.train

    from pipelines.checkpoint import export_inference
    from pipelines.engine.failures import FailureReport
    from pipelines.engine.history import plot_history, write_history
    from pipelines.engine.ingest import ReplicaDataConfig
    from pipelines.engine.shards import read_train_state
    from pipelines.engine.worker import train_loop_per_worker
    from pipelines.runtime import init_ray, torch_trainer

    output = output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    check_depth(recipe)
    fit_workers(recipe)
    (output / "config.yaml").write_text(recipe.to_yaml())
    if recipe.train.init_from:
        init = Path(recipe.train.init_from).expanduser().resolve()
        if not (init / "model.pt").is_file():
            raise ConfigError(f"train.init_from: {recipe.train.init_from} is not a checkpoint folder (no model.pt)")
        recipe.train.init_from = str(init)
    if recipe.data.generate is not None:
        generate_dataset(recipe, output)

    init_ray()
    started = time.perf_counter()
    app = apps.app_for(recipe)
    print(f"preparing data with Ray Data ({recipe.data.format} from {recipe.data.root})", flush=True)
    data = app.prepare(recipe)
    print("data: " + ", ".join(f"{k}={v}" for k, v in data.report.items()), flush=True)
    parallel = recipe.parallel
    if data.batches % parallel.dp:
        print(
            f"note: {data.batches} training batches do not divide among dp={parallel.dp} "
            f"replicas; each epoch leaves out {data.batches % parallel.dp} (a different few each epoch)"
        )
    datasets = {"train": data.train}
    if data.valid is not None:
        datasets["valid"] = data.valid
    trainer = torch_trainer()(
        train_loop_per_worker,
        train_loop_config={
            "recipe": recipe.to_dict(),
            "task": app.training_task(data),  # the engine is handed the application; it never looks one up
            "sizes": data.sizes,
            "has_valid": data.valid is not None,
            "initial": data.initial,
            "run_dir": str(output),  # TensorBoard files (rank 0 writes them: on a cluster, its node)
            "padding_fraction": data.report.get("padding_fraction"),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=parallel.world_size,
            use_gpu=parallel.use_gpu,
            resources_per_worker=worker_resources(parallel),
        ),
        run_config=ray.train.RunConfig(
            name="train" if not recipe.train.storage else f"{recipe.name}-{output.name}",
            storage_path=recipe.train.storage or str(output),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=recipe.train.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=MAX_FAILURES),
            callbacks=[FailureReport(MAX_FAILURES)],
        ),
        datasets=datasets,
        dataset_config=ReplicaDataConfig(dp=parallel.dp, pp=parallel.pp),
    )
    print(f"training: {parallel.world_size} Ray Train worker{'s' if parallel.world_size > 1 else ''} "
          f"(dp={parallel.dp} x pp={parallel.pp}), {recipe.train.max_steps} steps; run folder {output}", flush=True)
    result = trainer.fit()
    wall = time.perf_counter() - started
    pipeline_figures = {}
    with result.checkpoint.as_directory() as directory:
        state = read_train_state(Path(directory))
        timelines = sorted(Path(directory).glob("timeline.stage*.json"))
        if timelines:
            pipeline_figures = write_timeline(timelines, output, recipe)
        checkpoint = export_inference(Path(directory), output / "checkpoint", recipe=recipe, app=app,
                                      files=data.files, meta=data.meta)
    history = state["history"]
    write_history(history, output / "metrics.jsonl")
    plot_history(history, output / "curves.png", recipe.name)
    last = history[-1]
    validation = {k: round(v, 6) for k, v in last.items() if k.startswith("val_")}
    print(f"checkpoint: {checkpoint}; final scores on the validation split", flush=True)
    validation.update(app.final_scores(checkpoint, recipe))
    summary = {
        "steps": state["step"],
        "train_loss": round(last["train_loss"], 6),
        **validation,
        "tokens_per_s": round(result.metrics.get("run_tokens_per_s", last["tokens_per_s"]), 1),
        "padding_fraction": data.report["padding_fraction"],
        "skipped_records": data.report["skipped_records"],
        **{k: data.report[k] for k in REPORTED if k in data.report},
        **pipeline_figures,
        "wall_s": round(wall, 1),
        "checkpoint": str(checkpoint),
        "tensorboard": str(output / "tensorboard"),
    }
    print(f"tensorboard: tensorboard --logdir {output / 'tensorboard'}", flush=True)
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


class _AnySize(dict):
    """Sizes for counting a model's layers before the data says them (the count never
    depends on vocabulary or label sizes)."""

    def __missing__(self, key: str) -> int:
        return 8


def check_depth(recipe: Recipe) -> None:
    """Refuse a pipeline deeper than the model has layers, before Ray starts (the stage
    planner would refuse it on every worker, after the data is prepared)."""
    try:
        layers = len(apps.app_for(recipe).layer_factories(recipe.model, _AnySize()))
    except Exception:  # noqa: BLE001 - an application that needs its data to say its layers: the workers check
        return
    plan_stages([1.0] * layers, recipe.parallel.pp)  # the stage planner's own refusal, with its message


def local_cpus() -> int:
    """CPUs of the Ray instance this process is connected to, or that one started here
    would get (the process's CPU affinity)."""
    import ray

    if ray.is_initialized():
        return int(ray.cluster_resources().get("CPU", 0))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def fit_workers(recipe: Recipe) -> None:
    """Make the Ray Train request fit where it will run. On a Ray instance rayseq starts
    itself, ``dp x pp`` workers of ``threads_per_worker`` CPUs each must fit this
    machine (Ray Train would otherwise wait for them forever): fewer threads per worker,
    said in one line, or refused with the arithmetic when even one each does not fit. On
    a cluster (``RAY_ADDRESS``) an autoscaler may add nodes: the request is said once."""
    parallel = recipe.parallel
    workers = parallel.world_size
    per_worker = worker_resources(parallel) or {}
    if os.environ.get("RAY_ADDRESS"):
        print(f"requesting {workers} Ray Train workers x {per_worker or {'GPU': 1}} (parallel.dp x parallel.pp = "
              f"{parallel.dp} x {parallel.pp}); on an autoscaling cluster training starts when nodes have joined",
              flush=True)
        return
    if parallel.use_gpu:
        return  # Ray Train asks one GPU a worker: its own error names a machine without them
    cpus = local_cpus()
    if workers > cpus:
        raise ConfigError(f"parallel.dp x parallel.pp = {parallel.dp} x {parallel.pp} = {workers} workers need "
                          f"at least {workers} CPUs (one thread each), this machine has {cpus}: lower parallel.pp or "
                          f"parallel.dp, or run on a cluster (RAY_ADDRESS)")
    if workers * parallel.threads_per_worker > cpus:
        fitted = cpus // workers
        print(f"note: {workers} workers x {parallel.threads_per_worker} threads (parallel.threads_per_worker) = "
              f"{workers * parallel.threads_per_worker} CPUs, this machine has {cpus}: {fitted} thread"
              f"{'s' if fitted > 1 else ''} per worker", flush=True)
        parallel.threads_per_worker = fitted


def worker_resources(parallel: ParallelConfig) -> dict[str, float] | None:
    """What each Ray Train worker reserves: its torch threads as CPUs (with ``use_gpu``,
    Ray Train's default of one GPU instead), plus ``parallel.resources_per_worker``."""
    cpus = {} if parallel.use_gpu else {"CPU": parallel.threads_per_worker}
    return {**cpus, **parallel.resources_per_worker} or None


def write_timeline(paths: list[Path], output: Path, recipe: Recipe) -> dict[str, float]:
    """Merge the stages' timelines: ``timeline.json`` (Perfetto), ``timeline.png``, and
    the measured vs. theoretical bubble fraction."""
    from pipelines.engine.timeline import (
        bubble_fraction,
        load_timelines,
        plot_gantt,
        theoretical_bubble,
        write_chrome_trace,
    )

    stages = load_timelines(paths)
    measured = bubble_fraction(stages)
    parallel = recipe.parallel
    units = parallel.microbatches * (parallel.time_chunks if parallel.schedule == "wavefront" else 1)
    theory = theoretical_bubble(parallel.pp, units)
    formula = "(p-1)/(m*k+p-1)" if parallel.schedule == "wavefront" else "(p-1)/(m+p-1)"
    write_chrome_trace(stages, output / "timeline.json")
    plot_gantt(stages, output / "timeline.png",
               f"{recipe.name}: pp={recipe.parallel.pp}, {recipe.parallel.schedule}, "
               f"m={recipe.parallel.microbatches}; bubble {measured:.2f} (theory {theory:.2f})")
    print(f"timeline: {output / 'timeline.json'} (open in Perfetto), {output / 'timeline.png'}; "
          f"measured bubble {measured:.3f}, theory {formula} = {theory:.3f}", flush=True)
    return {"bubble_fraction": round(measured, 4), "bubble_theory": round(theory, 4)}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/demo_sentiment.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key by dotted path (YAML scalar value); repeatable")
    parser.add_argument("--output", type=Path,
                        help="run folder (default runs/<recipe>-<timestamp>); an existing one resumes")


def train_command(args: argparse.Namespace) -> dict[str, Any]:
    recipe = load_recipe(args.recipe, args.overrides)
    output = args.output or default_output(recipe)
    print(f"recipe {args.recipe} resolved to:\n{recipe.to_yaml()}", flush=True)
    return run_training(recipe, output)


def main(argv: list[str] | None = None) -> int:
    from pipelines.console import add_verbose_argument, set_verbose
    from pipelines.errors import run_and_report

    parser = argparse.ArgumentParser(prog="python -m pipelines.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(parser)
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    set_verbose(args.verbose)
    return run_and_report(lambda: train_command(args))


if __name__ == "__main__":
    sys.exit(main())
