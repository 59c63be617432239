"""The training loop each Ray Train worker runs.

A step: take this replica's next batch, split it into ``parallel.microbatches`` rows
chunks, accumulate ``sum(loss) / examples_in_step_over_all_replicas`` gradients,
all-reduce them over the data-parallel replicas, clip by the global norm, step.
Dividing by the global example count makes ``dp`` replicas compute exactly the gradient
a single process would on the concatenated batch. Dropout masks are keyed by (seed,
step, micro-batch, layer): see ``models.dropout``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import torch
import torch.distributed as dist
import torch.nn.functional as F

from models import build_seq2vec
from models.dropout import dropout_key
from pipelines.checkpoint import load_train_shard, read_train_state, save_train_shard, write_train_state
from pipelines.config import Recipe, recipe_from_dict
from pipelines.ingest import shuffled_epochs
from pipelines.optim import build_optimizer


def _all_reduce(values: list[float]) -> list[float]:
    """Sum ``values`` over all workers (identity with one worker)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def _all_reduce_grads(model: torch.nn.Module) -> None:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def _tensors(row: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    tokens = torch.from_numpy(np.asarray(row["tokens"], dtype=np.int64)).to(device)
    lengths = torch.from_numpy(np.asarray(row["lengths"], dtype=np.int64))
    labels = torch.from_numpy(np.asarray(row["labels"], dtype=np.int64)).to(device)
    return tokens, lengths, labels


def evaluate(model: torch.nn.Module, iterator, device: torch.device) -> dict[str, float]:
    """Validation loss and accuracy over every replica's share of the validation split."""
    model.eval()
    loss_sum, correct, count = 0.0, 0.0, 0.0
    with torch.no_grad():
        for row in iterator.iter_rows() if iterator is not None else []:
            tokens, lengths, labels = _tensors(row, device)
            logits = model(tokens, lengths)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(-1) == labels).sum().item()
            count += len(labels)
    model.train()
    loss_sum, correct, count = _all_reduce([loss_sum, correct, count])
    if count == 0:
        return {}
    return {"val_loss": loss_sum / count, "val_accuracy": correct / count, "val_examples": int(count)}


def _progress_line(step: int, total: int, loss: float, lr: float, tokens_per_s: float, started: float, first_step: int) -> str:
    done = step - first_step
    eta = (time.perf_counter() - started) / max(done, 1) * (total - step)
    return (
        f"step {step}/{total} | loss {loss:.4f} | lr {lr:.2e} | "
        f"{tokens_per_s:,.0f} tok/s | eta {int(eta // 60)}m{int(eta % 60):02d}s"
    )


def train_loop_per_worker(config: dict[str, Any]) -> None:
    recipe: Recipe = recipe_from_dict(config["recipe"])
    train_cfg = recipe.train
    torch.set_num_threads(recipe.parallel.threads_per_worker)
    context = ray.train.get_context()
    rank = context.get_world_rank()
    pp = recipe.parallel.pp
    stage, dp_rank = rank % pp, rank // pp
    device = ray.train.torch.get_device() if recipe.parallel.use_gpu else torch.device("cpu")

    torch.manual_seed(train_cfg.seed)  # same initial weights on every replica
    model = build_seq2vec(recipe.model, vocab_size=config["vocab_size"], num_labels=config["num_labels"]).to(device)
    optimizer, scheduler = build_optimizer(model.parameters(), train_cfg)

    step, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            load_train_shard(Path(directory), stage, model, optimizer, scheduler)
            state = read_train_state(Path(directory))
            step, history = state["step"], state["history"]
        if rank == 0:
            print(f"resumed from checkpoint at step {step}")

    train_rows = shuffled_epochs(
        ray.train.get_dataset_shard("train"), seed=train_cfg.seed, buffer=train_cfg.shuffle_buffer
    )
    valid_iterator = ray.train.get_dataset_shard("valid") if config["has_valid"] else None
    model.train()
    window = {"loss": 0.0, "examples": 0.0, "tokens": 0.0, "seconds": 0.0}
    totals = {"tokens": 0.0, "seconds": 0.0}
    started, first_step = time.perf_counter(), step
    epoch = 0
    while step < train_cfg.max_steps:
        epoch, row = next(train_rows)
        tick = time.perf_counter()
        tokens, lengths, labels = _tensors(row, device)
        examples, = _all_reduce([float(len(labels))])
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        chunks = np.array_split(np.arange(len(labels)), min(recipe.parallel.microbatches, len(labels)))
        for micro, rows in enumerate(chunks):
            rows_t = torch.from_numpy(rows)
            width = int(lengths[rows_t].max())
            with dropout_key(train_cfg.seed, step, micro):
                logits = model(tokens[rows_t.to(device), :width], lengths[rows_t])
            loss = F.cross_entropy(
                logits, labels[rows_t.to(device)], reduction="sum", label_smoothing=train_cfg.label_smoothing
            )
            (loss / examples).backward()
            loss_sum += loss.item()
        _all_reduce_grads(model)
        if train_cfg.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.clip_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        step += 1
        elapsed = time.perf_counter() - tick
        window["loss"] += loss_sum
        window["examples"] += len(labels)
        window["tokens"] += float(lengths.sum())
        window["seconds"] += elapsed

        last = step == train_cfg.max_steps
        if step % train_cfg.log_every == 0 or step % train_cfg.eval_every == 0 or last:
            loss_total, examples_total, tokens_total, seconds = _all_reduce(
                [window["loss"], window["examples"], window["tokens"], window["seconds"]]
            )
            seconds /= context.get_world_size()  # replicas run concurrently
            tokens_per_s = tokens_total / seconds if seconds else 0.0
            totals["tokens"] += tokens_total
            totals["seconds"] += seconds
            train_loss = loss_total / examples_total
            if rank == 0:
                print(_progress_line(step, train_cfg.max_steps, train_loss, lr, tokens_per_s, started, first_step), flush=True)
            entry = {"step": step, "epoch": epoch, "train_loss": train_loss, "lr": lr, "tokens_per_s": tokens_per_s}
            window = dict.fromkeys(window, 0.0)
            if step % train_cfg.eval_every == 0 or last:
                entry.update(evaluate(model, valid_iterator, device))
                if rank == 0 and "val_accuracy" in entry:
                    print(f"step {step} | val_loss {entry['val_loss']:.4f} | val_accuracy {entry['val_accuracy']:.4f}", flush=True)
            history.append(entry)
            if step % train_cfg.eval_every == 0 or last:
                run_tokens_per_s = totals["tokens"] / totals["seconds"] if totals["seconds"] else 0.0
                metrics = {**entry, "run_tokens_per_s": run_tokens_per_s}
                state = {"step": step, "epoch": epoch, "history": history}
                _report(stage if dp_rank == 0 else None, rank, state, model, optimizer, scheduler, metrics)


def _report(stage, rank, state, model, optimizer, scheduler, metrics) -> None:
    """Every worker reports (it is a barrier); dp rank 0 of each stage writes that
    stage's shard, world rank 0 the step and history."""
    if stage is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        save_train_shard(directory, stage, model, optimizer, scheduler)
        if rank == 0:
            write_train_state(directory, state)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
