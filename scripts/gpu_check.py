"""The CUDA paths on one GPU, in one command (``bash scripts/gpu_check.sh``): one JSON line.

    equivalence   a pp=2 1F1B encoder-decoder whose two stage processes share the GPU
                  (gloo, CUDA tensors staged through host memory), float64: losses and
                  weights after 3 steps vs one CPU process (rel 1e-6)
    pp1           one process on the GPU vs on the CPU, float32, same init and data:
                  the largest relative loss difference over 3 steps (cuDNN's kernels
                  differ from the CPU's, so this is a figure, checked at 1e-3)
    throughput    the Multi30k model (recipes/multi30k.yaml's model, its batch shape:
                  ~3,072 tokens a batch) training tokens/s on the GPU vs the CPU
    bf16          the same GPU model, ``train.precision: bf16`` autocast: tokens/s
    serve         Ray Serve with ``device: cuda`` (a replica reserving a GPU) over the
                  legacy translation checkpoint: one /generate request answered 200,
                  the same translation as the CPU predictor

``--device cpu --quick`` runs the same code on the CPU (what CI can check); without
CUDA and without ``--device cpu`` it prints ``{"cuda": false}`` and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from models import ModelConfig  # noqa: E402
from models.dropout import dropout_key  # noqa: E402
from pipelines import apps  # noqa: E402
from pipelines.config import Recipe, TrainConfig, load_recipe  # noqa: E402
from pipelines.engine.optim import build_optimizer  # noqa: E402
from pipelines.engine.schedules import StageRunner, broadcast_plan  # noqa: E402
from pipelines.engine.stage_plan import plan_stages  # noqa: E402
from pipelines.engine.topology import Topology  # noqa: E402
from pipelines.engine.worker import optimizer_step  # noqa: E402
from pipelines.precision import autocast  # noqa: E402

SMALL = ModelConfig(kind="seq2seq", embed_dim=16, hidden_size=16, num_layers=2, decoder_layers=2, dropout=0.2,
                    attention="luong")
SIZES = {"src_vocab_size": 50, "tgt_vocab_size": 45}
TRAIN = TrainConfig(max_steps=3, lr=0.01, warmup_steps=1, clip_norm=1.0, seed=5)
LEGACY = ROOT / "tests" / "fixtures" / "legacy" / "translate"


def batch(g: torch.Generator, rows: int, longest: int, sizes: dict[str, int]) -> dict[str, torch.Tensor]:
    """Padded translation rows: source and target lengths 3..``longest``."""
    src_len = torch.randint(3, longest + 1, (rows,), generator=g)
    tgt_len = torch.randint(3, longest + 1, (rows,), generator=g)

    def padded(lengths, vocab):
        x = torch.randint(4, vocab, (rows, int(lengths.max())), generator=g)
        return x.masked_fill(torch.arange(x.size(1))[None] >= lengths[:, None], 0)

    tgt = padded(tgt_len, sizes["tgt_vocab_size"])
    out = tgt.roll(-1, 1).masked_fill(torch.arange(tgt.size(1))[None] >= (tgt_len - 1)[:, None], 0)
    return {"src_tokens": padded(src_len, sizes["src_vocab_size"]), "src_lengths": src_len, "tgt_in": tgt,
            "tgt_out": out, "tgt_lengths": tgt_len}


def rows_of(steps: int, rows: int = 8, longest: int = 9, sizes=SIZES) -> list[dict[str, torch.Tensor]]:
    return [batch(torch.Generator().manual_seed(10 + s), rows, longest, sizes) for s in range(steps)]


def train_losses(device: torch.device, dtype: torch.dtype, steps: int) -> tuple[list[float], dict]:
    """One process: ``steps`` optimizer steps of SMALL on ``device`` (2 micro-batches)."""
    torch.set_default_dtype(dtype)
    try:
        task = apps.app_for(Recipe(model=SMALL))
        model = task.build(SMALL, SIZES, seed=TRAIN.seed).to(device).train()
        optimizer, scheduler = build_optimizer(list(model.parameters()), TRAIN)
        runner = StageRunner(model, Topology(0, 1, 1), device, task=task)
        losses = []
        for step, row in enumerate(rows_of(steps)):
            plan = task.step_plan(row, 2)
            loss = optimizer_step(runner, optimizer, scheduler, plan, schedule="1f1b", key=(TRAIN.seed, step),
                                  clip_norm=TRAIN.clip_norm)
            losses.append(loss / task.loss_units(plan))
        return losses, {k: v.detach().cpu() for k, v in model.state_dict().items()}
    finally:
        torch.set_default_dtype(torch.float32)


def _stage(rank: int, port: int, device: str, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        topology = Topology.create(rank, 1, 2)
        task = apps.app_for(Recipe(model=SMALL))
        plan = plan_stages(task.build(SMALL, SIZES).layer_costs(), 2)
        model = task.build(SMALL, SIZES, seed=TRAIN.seed, keep=plan.layers(rank)).to(device).train()
        optimizer, scheduler = build_optimizer(list(model.parameters()), TRAIN)
        runner = StageRunner(model, topology, torch.device(device), task=task)
        losses = []
        for step, row in enumerate(rows_of(TRAIN.max_steps)):
            step_plan = broadcast_plan(task.step_plan(row, 2) if rank == 0 else None, topology, torch.device("cpu"))
            loss = optimizer_step(runner, optimizer, scheduler, step_plan, schedule="1f1b", key=(TRAIN.seed, step),
                                  clip_norm=TRAIN.clip_norm)
            losses.append(loss / task.loss_units(step_plan) if rank == 1 else 0.0)
        out[rank] = {"losses": losses, "staged": runner.transport.host_staging,
                     "state": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    finally:
        dist.destroy_process_group()


def check_equivalence(device: str) -> dict:
    reference, ref_state = train_losses(torch.device("cpu"), torch.float64, TRAIN.max_steps)
    with mp.get_context("spawn").Manager() as manager:
        out = manager.dict()
        mp.start_processes(_stage, args=(_free_port(), device, out), nprocs=2, start_method="spawn")
        results = dict(out)
    state = {**results[0]["state"], **results[1]["state"]}
    worst = max(float(((state[k] - v).abs() / (v.abs() + 1e-8)).max()) for k, v in ref_state.items())
    loss_gap = max(abs(a - b) / abs(b) for a, b in zip(results[1]["losses"], reference))
    return {"ok": loss_gap < 1e-6 and worst < 1e-5, "loss_rel_diff": loss_gap, "weight_rel_diff": worst,
            "host_staging": results[0]["staged"], "losses": reference}


def check_pp1(device: str) -> dict:
    cpu, _ = train_losses(torch.device("cpu"), torch.float32, 3)
    gpu, _ = train_losses(torch.device(device), torch.float32, 3)
    gap = max(abs(a - b) / abs(b) for a, b in zip(gpu, cpu))
    return {"ok": gap < 1e-3, "loss_rel_diff": gap, "cpu": cpu, "device": gpu}


def tokens_per_s(device: torch.device, steps: int, precision: str = "float32") -> float:
    """Training tokens/s of recipes/multi30k.yaml's model on Multi30k-shaped batches
    (64 rows of up to 24 tokens: ~1,000 target tokens a batch), after one warm-up step."""
    recipe = load_recipe(ROOT / "recipes" / "multi30k.yaml")
    sizes = {"src_vocab_size": 8000, "tgt_vocab_size": 8000}
    task = apps.app_for(recipe)
    model = task.build(recipe.model, sizes, seed=1).to(device).train()
    optimizer, _ = build_optimizer(list(model.parameters()), recipe.train)
    data = rows_of(steps + 1, rows=64, longest=24, sizes=sizes)
    tokens, started = 0, 0.0
    for step, row in enumerate(data):
        if step == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started, tokens = time.perf_counter(), 0
        plan = task.step_plan(row, 1)
        src, tgt = (t.to(device) for t in plan.tokens[0])
        with dropout_key(1, step, 0), autocast(precision, device):
            out = model((src, tgt), plan.lengths[0])
            loss = task.loss(out.float(), plan.labels[0].to(device), 0.1)
        optimizer.zero_grad()
        (loss / task.loss_units(plan)).backward()
        optimizer.step()
        tokens += int(task.loss_units(plan))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return tokens / (time.perf_counter() - started)


def check_throughput(device: str, quick: bool) -> dict:
    # The CPU arm on every core, unless OMP_NUM_THREADS says otherwise (the test suite sets
    # 1: on a loaded machine a second thread only spins waiting for a core).
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1)
    cpu = tokens_per_s(torch.device("cpu"), 2 if quick else 5)
    dev = tokens_per_s(torch.device(device), 2 if quick else 40)
    result = {"ok": True, "cpu_tokens_per_s": round(cpu), "device_tokens_per_s": round(dev),
              "speedup": round(dev / cpu, 2), "cpu_threads": torch.get_num_threads()}
    if torch.device(device).type == "cuda":
        bf16 = tokens_per_s(torch.device(device), 40 if not quick else 2, "bf16")
        result.update(bf16_tokens_per_s=round(bf16), bf16_speedup=round(bf16 / dev, 2))
    return result


def check_serve(device: str) -> dict:
    """Serve the legacy translation checkpoint on ``device``: one request, compared
    with the CPU predictor's answer in this process."""
    import urllib.request

    import ray
    from ray import serve

    from serving.app import APP_NAME, build_app
    from serving.placement import ReplicaDevice

    text = json.loads((LEGACY / "inputs" / "inputs.json").read_text())[0]
    expected = json.loads((LEGACY / "expected.json").read_text())["beam_1"][0]
    ray.init(num_cpus=4, num_gpus=1 if device == "cuda" else 0, include_dashboard=False, log_to_driver=False)
    try:
        placement = ReplicaDevice(device, 1.0 if device == "cuda" else None)
        started = time.perf_counter()
        serve.run(build_app([str(LEGACY / "checkpoint")], placement=placement), name=APP_NAME, route_prefix="/")
        ready_s = time.perf_counter() - started
        with urllib.request.urlopen("http://127.0.0.1:8000/v1/models", timeout=60) as response:
            name = json.loads(response.read())["models"][0]["name"]
        request = urllib.request.Request(f"http://127.0.0.1:8000/v1/models/{name}/generate", method="POST",
                                         data=json.dumps({"inputs": [text], "beam_size": 1}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            status, body = response.status, json.loads(response.read())
        got = body["outputs"][0] if "outputs" in body else body
        same = got.get("text") == expected["text"]
        return {"ok": status == 200 and same, "status": status, "ready_s": round(ready_s, 1),
                "same_as_cpu_predictor": same}
    finally:
        serve.shutdown()
        ray.shutdown()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHECKS = {"equivalence": lambda a: check_equivalence(a.device), "pp1": lambda a: check_pp1(a.device),
          "throughput": lambda a: check_throughput(a.device, a.quick), "serve": lambda a: check_serve(a.device)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (the same code, for CI)")
    parser.add_argument("--quick", action="store_true", help="fewer timed steps")
    parser.add_argument("--only", nargs="*", choices=list(CHECKS), help="run these checks only")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"cuda": False, "torch": torch.__version__}))
        return 0
    report = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "torch": torch.__version__,
              "checks": {}}
    started = time.perf_counter()
    for name in args.only or list(CHECKS):
        tick = time.perf_counter()
        try:
            result = CHECKS[name](args)
        except Exception as error:  # noqa: BLE001 - one failed check must not hide the others
            result = {"ok": False, "error": f"{type(error).__name__}: {error}",
                      "trace": traceback.format_exc().splitlines()[-6:]}
        result["seconds"] = round(time.perf_counter() - tick, 1)
        report["checks"][name] = result
    report["ok"] = all(c["ok"] for c in report["checks"].values())
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
