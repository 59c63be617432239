"""The training loop each Ray Train worker runs: one pipeline stage of one replica.

A step: stage 0 of each replica takes its next batch and splits it into
``parallel.microbatches`` row chunks; the step plan (lengths, labels) goes to every
stage of the replica; the schedule (``pipelines.engine.schedules``) runs forwards and
backwards, accumulating ``sum(loss) / units_in_step_over_all_replicas`` gradients
(units: examples for seq2vec, target tokens for seq2seq: the application's
``loss_units``, handed in as ``task``);
each stage all-reduces its gradients over its data-parallel replicas, clips by the norm
over all stages, and steps its own optimizer. With ``pp = dp = 1`` this is plain
gradient accumulation, through the same code.

Dropout masks are keyed by (seed, step, micro-batch, layer) and layer weights by
(seed, layer), so any ``pp`` trains the same model as one process.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import ray.train
import torch

from pipelines.config import Recipe, recipe_from_dict
from pipelines.engine.averaging import ParameterAverage
from pipelines.engine.ingest import shuffled_epochs
from pipelines.engine.loss_scale import LossScale
from pipelines.engine.optim import build_optimizer
from pipelines.engine.schedules import StageRunner, all_reduce_gradients, broadcast_plan, clip_global_norm
from pipelines.engine.shards import load_train_shard, read_train_state, save_train_shard, write_train_state
from pipelines.engine.stage_plan import StagePlan, plan_stages
from pipelines.engine.tensorboard import RunBoard
from pipelines.engine.topology import Topology
from pipelines.errors import ConfigError

TIMELINE_STEPS = 10


def layer_cost(layer: torch.nn.Module, balance: str) -> float:
    if balance == "params":
        return float(sum(p.numel() for p in layer.parameters()))
    return layer.flops_per_token()


def plan_for(recipe: Recipe, task, sizes: dict[str, int]) -> StagePlan:
    """Cut ``task``'s model into ``parallel.pp`` stages by ``parallel.balance``. Layers
    are built one at a time to be measured, so no worker ever holds the whole model.
    ``sizes``: the vocabulary/label counts the application's builder takes."""
    factories = task.layer_factories(recipe.model, sizes)
    plan = plan_stages([layer_cost(factory(), recipe.parallel.balance) for factory in factories], recipe.parallel.pp)
    tied = task.tied_layers(recipe.model)
    if tied is not None:
        embed, generator = tied
        if plan.stage_of(embed) != plan.stage_of(generator):
            raise ConfigError(
                f"model.tie_embeddings: the target embedding (layer {embed}) and the output layer (layer {generator}) "
                f"land on stages {plan.stage_of(embed)} and {plan.stage_of(generator)}; use fewer stages or untie them"
            )
    return plan


def build_stage(recipe: Recipe, task, plan: StagePlan, stage: int, sizes: dict[str, int]) -> torch.nn.Module:
    return task.build(recipe.model, sizes, seed=recipe.train.seed, keep=plan.layers(stage))


def optimizer_step(runner: StageRunner, optimizer, scheduler, plan, *, schedule: str, key: tuple[int, ...],
                   clip_norm: float, average: ParameterAverage | None = None,
                   loss_scale: LossScale | None = None) -> float:
    """One optimizer step of this stage; the summed loss on the last stage, else 0.
    With ``loss_scale`` (fp16) the loss is scaled up, the gradients unscaled, and a step
    whose gradients overflowed on any stage is skipped by every stage."""
    topology = runner.topology
    params = [p for group in optimizer.param_groups for p in group["params"]]
    units = torch.tensor([runner.task.loss_units(plan)], dtype=torch.float64)
    topology.all_reduce(units, "data")
    optimizer.zero_grad(set_to_none=True)
    scale = loss_scale.scale if loss_scale is not None else 1.0
    loss_sum = runner.train_step(plan, schedule=schedule, key=key, denominator=float(units) / scale)
    all_reduce_gradients(params, topology)
    if loss_scale is not None:
        finite = loss_scale.unscale_and_check(params, topology)
        loss_scale.update(finite)
        if not finite:
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()  # the schedule follows steps taken or skipped, as on every stage
            return loss_sum
    clip_global_norm(params, clip_norm, topology)
    optimizer.step()
    scheduler.step()
    if average is not None:
        average.update()
    return loss_sum


def evaluate(runner: StageRunner, topology: Topology, iterator, microbatches: int,
             average: ParameterAverage | None = None) -> dict[str, float]:
    """Validation loss and accuracy (seq2seq: per target token, and perplexity) over every
    replica's share of the validation split; of the parameter average when there is one."""
    if average is not None:
        with average.swapped_in():
            return evaluate(runner, topology, iterator, microbatches)
    runner.module.eval()
    totals = torch.zeros(runner.task.eval_width, dtype=torch.float64)
    rows = iter(iterator.iter_rows()) if topology.is_first and iterator is not None else iter(())
    while True:
        row = next(rows, None)
        plan = runner.task.step_plan(row, microbatches) if row is not None else None
        plan = broadcast_plan(plan, topology, runner.device)
        if not plan.lengths:
            break
        totals += torch.tensor(runner.evaluate_step(plan), dtype=torch.float64)
    runner.module.train()
    topology.all_reduce(totals, "world")
    loss_sum, correct, count, *more = totals.tolist()
    if count == 0:
        return {}
    return runner.task.validation_metrics(loss_sum, correct, count, *more)


def _progress_line(step: int, total: int, loss: float, lr: float, tokens_per_s: float, started: float,
                   first_step: int) -> str:
    eta = (time.perf_counter() - started) / max(step - first_step, 1) * (total - step)
    return (
        f"step {step}/{total} | loss {loss:.4f} | lr {lr:.2e} | "
        f"{tokens_per_s:,.0f} tok/s | eta {int(eta // 60)}m{int(eta % 60):02d}s"
    )


def init_matching(model: torch.nn.Module, weights: Path) -> tuple[int, int, list[str]]:
    """Copy the tensors of ``weights`` (a ``model.pt``) whose names and shapes match
    ``model``'s; returns ``(copied, model's tensors, same name but another shape)``, the
    last as ``name (checkpoint shape -> model shape)``. Stages use the whole model's
    parameter names, so each stage takes exactly its own layers' share."""
    source = torch.load(weights, map_location="cpu", weights_only=True)
    own = model.state_dict()
    matching = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    reshaped = [f"{k} ({tuple(v.shape)} -> {tuple(own[k].shape)})"
                for k, v in source.items() if k in own and own[k].shape != v.shape]
    model.load_state_dict(matching, strict=False)
    return len(matching), len(own), reshaped


def init_named(model: torch.nn.Module, initial: dict[str, torch.Tensor]) -> None:
    """Set the parameters named in ``initial`` that this stage holds (pretrained vectors)."""
    own = model.state_dict()
    for name, value in initial.items():
        if name in own:
            if own[name].shape != value.shape:
                raise RuntimeError(f"{name}: initial value of shape {tuple(value.shape)}, the model's is "
                                   f"{tuple(own[name].shape)}")
            with torch.no_grad():
                own[name].copy_(value)


def init_from_line(stage: int, loaded: int, total: int, reshaped: list[str], source: str) -> str:
    """The log line of ``train.init_from``: how many tensors came, and which ones the
    checkpoint has in another shape (a width changed on one side only is the usual cause,
    and leaves those layers at their random init)."""
    line = f"stage {stage}: {loaded} of {total} parameter tensors from {source}"
    if reshaped:
        shown = ", ".join(reshaped[:3]) + (f", ... ({len(reshaped)} in all)" if len(reshaped) > 3 else "")
        line += f"; not taken, another shape there: {shown}"
    return line


def train_loop_per_worker(config: dict[str, Any]) -> None:
    recipe: Recipe = recipe_from_dict(config["recipe"])
    train_cfg, parallel = recipe.train, recipe.parallel
    torch.set_num_threads(parallel.threads_per_worker)
    context = ray.train.get_context()
    device = ray.train.torch.get_device() if parallel.use_gpu else torch.device("cpu")
    if device.type == "cuda":  # before any NCCL call: batched P2P hangs without it (batch_isend_irecv's docs)
        torch.cuda.set_device(device)
    topology = Topology.create(context.get_world_rank(), parallel.dp, parallel.pp)
    if parallel.dtype == "float64":
        torch.set_default_dtype(torch.float64)

    sizes, task = config["sizes"], config["task"]
    plan = plan_for(recipe, task, sizes)
    if topology.rank == 0 and parallel.pp > 1:
        print(f"stage plan ({parallel.pp} stages, {parallel.schedule}, {parallel.microbatches} micro-batches):\n"
              + plan.describe(), flush=True)
    model = build_stage(recipe, task, plan, topology.stage, sizes)
    if config.get("initial") and ray.train.get_checkpoint() is None:
        init_named(model, config["initial"])
    if train_cfg.init_from and ray.train.get_checkpoint() is None:
        loaded, total, reshaped = init_matching(model, Path(train_cfg.init_from) / "model.pt")
        print(init_from_line(topology.stage, loaded, total, reshaped, train_cfg.init_from), flush=True)
    model = model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]  # frozen embeddings stay out
    if not trainable:
        raise ConfigError(f"stage {topology.stage} holds only frozen parameters (layers "
                          f"{list(plan.layers(topology.stage))}): use fewer stages or model.freeze_embeddings=false")
    optimizer, scheduler = build_optimizer(trainable, train_cfg)
    average = ParameterAverage(model, train_cfg.ema_decay) if train_cfg.ema_decay else None
    runner = StageRunner(model, topology, device, label_smoothing=train_cfg.label_smoothing,
                         time_chunks=parallel.time_chunks, task=task, precision=train_cfg.precision)
    loss_scale = LossScale() if train_cfg.precision == "fp16" else None

    step, epoch, history = 0, 0, []
    board = None  # TensorBoard: world rank 0 writes the run's event files as it goes
    if topology.rank == 0 and config.get("run_dir"):
        board = RunBoard(Path(config["run_dir"]) / "tensorboard", config["recipe"], config.get("padding_fraction"))
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            load_train_shard(Path(directory), topology.stage, model, optimizer, scheduler, average, loss_scale)
            state = read_train_state(Path(directory))
            step, epoch, history = state["step"], state["epoch"], state["history"]
        if topology.rank == 0:
            print(f"resumed from checkpoint at step {step}", flush=True)

    train_rows = None
    if topology.is_first:
        train_rows = shuffled_epochs(ray.train.get_dataset_shard("train"), seed=train_cfg.seed,
                                     buffer=train_cfg.shuffle_buffer, first_epoch=epoch)
    valid_iterator = ray.train.get_dataset_shard("valid") if config["has_valid"] and topology.is_first else None
    model.train()
    window = torch.zeros(4, dtype=torch.float64)  # loss, loss units, tokens, seconds (last stages)
    run_totals = [0.0, 0.0]  # tokens, seconds
    started, first_step = time.perf_counter(), step
    while step < train_cfg.max_steps:
        tick = time.perf_counter()
        step_plan = None
        if topology.is_first:
            epoch, row = next(train_rows)
            step_plan = runner.task.step_plan(row, parallel.microbatches)
        step_plan = broadcast_plan(step_plan, topology, device)
        runner.timeline.enabled = parallel.timeline and step >= train_cfg.max_steps - TIMELINE_STEPS
        runner.timeline.step = step
        lr = scheduler.get_last_lr()[0]
        loss_sum = optimizer_step(runner, optimizer, scheduler, step_plan, schedule=parallel.schedule,
                                  key=(train_cfg.seed, step), clip_norm=train_cfg.clip_norm, average=average,
                                  loss_scale=loss_scale)
        runner.timeline.enabled = False  # evaluation forwards are not part of the step
        step += 1
        if topology.is_last:
            window += torch.tensor([loss_sum, runner.task.loss_units(step_plan), step_plan.tokens_count,
                                    time.perf_counter() - tick],
                                   dtype=torch.float64)

        last = step == train_cfg.max_steps
        evaluate_now = step % train_cfg.eval_every == 0 or last
        if step % train_cfg.log_every == 0 or evaluate_now:
            topology.all_reduce(window, "world")
            loss_total, units_total, tokens_total, seconds = window.tolist()
            seconds /= parallel.dp  # replicas run side by side
            tokens_per_s = tokens_total / seconds if seconds else 0.0
            run_totals[0] += tokens_total
            run_totals[1] += seconds
            entry = {"step": step, "epoch": epoch, "train_loss": loss_total / units_total, "lr": lr,
                     "tokens_per_s": tokens_per_s}
            if topology.rank == 0:
                print(_progress_line(step, train_cfg.max_steps, entry["train_loss"], lr, tokens_per_s, started,
                                     first_step), flush=True)
            window.zero_()
            if evaluate_now:
                entry.update(evaluate(runner, topology, valid_iterator, parallel.microbatches, average))
                metric = runner.task.metric
                if topology.rank == 0 and metric in entry:
                    print(f"step {step} | val_loss {entry['val_loss']:.4f} | {metric} {entry[metric]:.4f}", flush=True)
            history.append(entry)
            if board is not None:
                board.log(entry)
            if evaluate_now:
                metrics = {**entry, "run_tokens_per_s": run_totals[0] / run_totals[1] if run_totals[1] else 0.0}
                _report(topology, {"step": step, "epoch": epoch, "history": history}, runner, optimizer, scheduler,
                        metrics, average, loss_scale)
    if board is not None:
        board.close(history[-1] if history else {})


def _report(topology: Topology, state, runner: StageRunner, optimizer, scheduler, metrics,
            average: ParameterAverage | None, loss_scale: LossScale | None = None) -> None:
    """Every worker reports (it is a barrier); dp rank 0 of each stage writes that
    stage's shard (and timeline, if recorded), world rank 0 the step, epoch and history."""
    if topology.dp_rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        save_train_shard(directory, topology.stage, runner.module, optimizer, scheduler, average, loss_scale)
        if runner.timeline.spans:
            (directory / f"timeline.stage{topology.stage}.json").write_text(runner.timeline.to_json())
        if topology.rank == 0:
            write_train_state(directory, state)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
