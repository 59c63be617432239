"""Serving under load: rayseq's Ray Serve app (batched, separate, unbatched) vs. a plain FastAPI process.

Acceptance items (issue 8): "closed-loop load generator (bounded count and time,
loopback only) with a concurrency sweep (1, 8, 32, 128), reporting req/s, p50/p95/p99
latency and errors, for: rayseq's Serve app batched, unbatched, and a plain
FastAPI+uvicorn single process serving the same checkpoint with the same inference code
(the peer). One run, table + bench/results/serve.json + a PNG of latency vs throughput.
Both classify and generate (beam 4)." Goals at concurrency 32: batched >= 1.0x the
peer's req/s with p99 no worse, for classify and generate; generate batched >= 2x
unbatched. Issue 28 (item 3): "Serve at 1 client >= 0.9x the plain peer's req/s for
classify and generate, while keeping >= 2x at 32 clients" (``goals``).

**Servers.** Each arm serves both quickstart checkpoints (``recipes/demo_sentiment.yaml``:
3-layer LSTM classifier; ``recipes/demo_translation.yaml``: LSTM encoder-decoder with
attention), one arm at a time, on the same loopback port range::

    batched    rayseq serve SENTIMENT TRANSLATION              (local Ray, the defaults)
    separate   rayseq serve ... --separate-models              (a deployment per model)
    unbatched  rayseq serve ... --no-batching                  (each request alone)
    peer       python bench/serve_peer.py SENTIMENT TRANSLATION  (one uvicorn process)

**Load.** ``bench/load.py``: ``c`` closed-loop clients on keep-alive connections, each
request one input (a validation sentence, cycled; generate asks for ``beam_size`` 4),
for ``--warmup`` s unmeasured then ``--seconds`` s measured per level, levels 1, 8, 32,
128. Latency is the client's (send to last byte). Each server's CPU time over the
window is read from /proc for each of its processes (proxy, ingress, model replicas,
the rest of Ray), so the table also says where the time goes. On a machine shared with
other work, ``--rounds N`` starts every arm's server at once and measures each level in
N slices of ``--seconds``, the arms taking turns in ABBA order, so that whatever else
runs weighs on every arm alike; a row then sums its slices.

Usage, from the repository root::

    python bench/serve.py                 # ~10 min on 2 cores (trains the two demos first if needed)
    python bench/serve.py --quick --out /tmp/serve.json   # smoke run
    python bench/serve.py --arms batched,unbatched,peer --rounds 4 --seconds 3   # arms interleaved

Writes ``bench/results/serve.json`` and ``serve.png``; ``--quick`` writes only with ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import LoadResult, run_load  # noqa: E402
from bench.machine import run_info, write_report  # noqa: E402
from pipelines.runtime import free_port  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "serve.json"
RECIPES = {"classify": "recipes/demo_sentiment.yaml", "generate": "recipes/demo_translation.yaml"}
ARMS = ("batched", "separate", "unbatched", "peer")
BEAM_SIZE = 4


# ------------------------------------------------------------------ checkpoints and bodies


def checkpoints(work: Path) -> dict[str, Path]:
    """Each task's checkpoint under ``work``, trained with its recipe if missing."""
    found = {}
    for task, recipe in RECIPES.items():
        out = work / Path(recipe).stem
        if not (out / "checkpoint" / "meta.json").exists():
            print(f"training {recipe} -> {out} (once)", flush=True)
            subprocess.run([sys.executable, "-m", "pipelines.cli", "train", recipe, "--output", str(out)],
                           cwd=ROOT, check=True, env=_without_ray_address())
        found[task] = out / "checkpoint"
    return found


def request_bodies(ckpts: dict[str, Path], count: int = 256) -> dict[str, list[bytes]]:
    """One-input request bodies per task from each recipe's validation split."""
    from pipelines.config import load_recipe

    bodies = {}
    for task, ckpt in ckpts.items():
        recipe = load_recipe(str(ckpt.parent / "config.yaml"), [])
        data = Path(recipe.data.root or ckpt.parent / "data")  # generated data: <output>/data
        if task == "classify":  # labeled lines: "<label> <text>"
            texts = [line.split(" ", 1)[1] for line in (data / recipe.data.valid).read_text().splitlines()
                     if " " in line]
            bodies[task] = [json.dumps({"inputs": [t]}).encode() for t in texts[:count]]
        else:
            lines = (data / f"{recipe.data.valid}.{recipe.data.source_lang}").read_text().splitlines()
            bodies[task] = [json.dumps({"inputs": [t], "beam_size": BEAM_SIZE}).encode() for t in lines[:count]]
    return bodies


# ------------------------------------------------------------------ servers


def _without_ray_address() -> dict[str, str]:
    """Each Serve arm starts its own local Ray, so its processes are the server's children."""
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


class Server:
    """One arm's server process (and, for Serve, the local Ray it starts) on a free port."""

    def __init__(self, arm: str, ckpts: dict[str, Path], serve_args: list[str] | None = None) -> None:
        self.arm, self.port = arm, free_port()
        paths = [str(p) for p in ckpts.values()]
        if arm == "peer":
            command = [sys.executable, "bench/serve_peer.py", *paths]
        else:
            command = [sys.executable, "-m", "pipelines.cli", "serve", *paths]
            command += {"unbatched": ["--no-batching"], "separate": ["--separate-models"]}.get(arm, [])
            command += serve_args or []
        self.log = open(ROOT / "runs" / f"bench_serve_{arm}.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([*command, "--port", str(self.port)], cwd=ROOT, stdout=self.log,
                                        stderr=subprocess.STDOUT, env=_without_ray_address(),
                                        start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, routes: dict[str, tuple[str, bytes]], timeout_s: float = 180) -> None:
        """Until every route answers 200 (models loaded, replicas up)."""
        import httpx

        deadline = time.monotonic() + timeout_s
        pending = dict(routes)
        while pending:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.arm} server exited; see runs/bench_serve_{self.arm}.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.arm} server not ready after {timeout_s} s: {sorted(pending)}")
            for task, (path, body) in list(pending.items()):
                with contextlib.suppress(httpx.HTTPError):
                    r = httpx.post(self.url + path, content=body, headers={"content-type": "application/json"},
                                   timeout=30)
                    if r.status_code == 200:
                        del pending[task]
            time.sleep(0.5)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) so far of every live process of the server, by role."""
        totals: dict[str, float] = defaultdict(float)
        for pid in _session_processes(self.process.pid):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            ticks = int(stat[11]) + int(stat[12])  # utime, stime (proc_pid_stat(5) fields 14, 15)
            totals[_role(cmdline, self.arm)] += ticks / os.sysconf("SC_CLK_TCK")
        return dict(totals)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        for pid in _session_processes(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()
        self.log.close()


def _role(cmdline: str, arm: str) -> str:
    if arm == "peer":
        return "peer process"
    if "ProxyActor" in cmdline or "haproxy" in cmdline:
        return "proxy"
    if "ServeReplica" in cmdline:
        return "ingress" if ":Ingress" in cmdline else "model replicas"  # the models are in the ingress unless separate
    return "rest of Ray"


def _session_processes(session: int) -> list[int]:
    """Live processes of the server's session (Ray gives workers groups of their own, not sessions)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


# ------------------------------------------------------------------ measuring


def measure(server: Server, path: str, bodies: list[bytes], concurrency: int, seconds: float,
            warmup_s: float) -> tuple[LoadResult, dict[str, float]]:
    """One load level: the load result, and the server's CPU seconds over the window by role."""
    before = {}

    async def load():
        await asyncio.sleep(0)
        return await run_load(server.url + path, bodies, concurrency=concurrency, seconds=seconds,
                              warmup_s=warmup_s, timeout_s=30)

    async def sample_cpu():
        await asyncio.sleep(warmup_s)
        before.update(server.cpu_seconds())

    async def both():
        result, _ = await asyncio.gather(load(), sample_cpu())
        return result

    result = asyncio.run(both())
    after = server.cpu_seconds()
    return result, {role: after.get(role, 0.0) - before.get(role, 0.0) for role in after}


def summarize(slices: list[tuple[LoadResult, dict[str, float]]]) -> dict[str, Any]:
    """One row from a level's measured slices (one, or one per round with ``--rounds``):
    their requests, latencies and CPU together, plus CPU ms per successful request by role."""
    first = slices[0][0]
    result = LoadResult(concurrency=first.concurrency, seconds=sum(r.seconds for r, _ in slices),
                        ok=sum(r.ok for r, _ in slices), errors=sum(r.errors for r, _ in slices),
                        error_kinds=dict(sum((Counter(r.error_kinds) for r, _ in slices), Counter())),
                        latencies_ms=[ms for r, _ in slices for ms in r.latencies_ms])
    cpu: dict[str, float] = defaultdict(float)
    for _, used in slices:
        for role, s in used.items():
            cpu[role] += s
    row = result.summary()
    if len(slices) > 1:
        row["slices"] = len(slices)
    row["server_cpu_ms_per_request"] = round(1e3 * sum(cpu.values()) / max(result.ok, 1), 2)
    row["cpu_ms_per_request_by_role"] = {role: round(1e3 * s / max(result.ok, 1), 2) for role, s in sorted(cpu.items())}
    return row


def run_arms(arms: list[str], ckpts: dict[str, Path], bodies: dict[str, list[bytes]], routes: dict[str, str],
             levels: list[int], seconds: float, warmup_s: float, serve_args: list[str],
             rounds: int = 1) -> list[dict[str, Any]]:
    """Every arm at every level. With ``rounds`` 1, one arm's server at a time; with more,
    all arms' servers up together and each level measured in ``rounds`` slices of
    ``seconds``, the arms taking turns (ABBA order), so that load from other work on a
    shared machine falls on every arm alike."""
    if rounds == 1:
        rows = []
        for arm in arms:
            with running([arm], ckpts, bodies, routes, serve_args) as servers:
                for task in routes:
                    for level in levels:
                        row = {"task": task, "arm": arm, **summarize(
                            [measure(servers[arm], routes[task], bodies[task], level, seconds, warmup_s)])}
                        print(format_row(row), flush=True)
                        rows.append(row)
        return rows
    rows = []
    with running(arms, ckpts, bodies, routes, serve_args) as servers:
        for task in routes:
            for level in levels:
                slices: dict[str, list] = {arm: [] for arm in arms}
                for turn in range(rounds):
                    for arm in (arms if turn % 2 == 0 else arms[::-1]):
                        slices[arm].append(measure(servers[arm], routes[task], bodies[task], level, seconds,
                                                   warmup_s))
                for arm in arms:
                    row = {"task": task, "arm": arm, **summarize(slices[arm])}
                    print(format_row(row), flush=True)
                    rows.append(row)
    return rows


@contextlib.contextmanager
def running(arms: list[str], ckpts: dict[str, Path], bodies: dict[str, list[bytes]], routes: dict[str, str],
            serve_args: list[str]):
    """``{arm: Server}``, each ready to answer every route; all stopped on the way out."""
    servers: dict[str, Server] = {}
    try:
        for arm in arms:
            started = time.monotonic()
            servers[arm] = Server(arm, ckpts, serve_args)
            servers[arm].wait_ready({task: (routes[task], bodies[task][0]) for task in routes})
            print(f"[{arm}] ready in {time.monotonic() - started:.0f} s", flush=True)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


# ------------------------------------------------------------------ report


HEADER = (f"{'task':<9} {'arm':<10} {'c':>4} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'errors':>7} {'cpu ms/req':>10}")


def format_row(row: dict[str, Any]) -> str:
    def ms(v):
        return f"{v:8.1f}" if v is not None else f"{'-':>8}"

    return (f"{row['task']:<9} {row['arm']:<10} {row['concurrency']:>4} {row['rps']:8.1f} {ms(row['p50_ms'])} "
            f"{ms(row['p95_ms'])} {ms(row['p99_ms'])} {row['errors']:>7} {row['server_cpu_ms_per_request']:10.2f}")


def goals(rows: list[dict[str, Any]], level: int = 32) -> dict[str, Any]:
    """The acceptance ratios from whatever arms ran: issue 8's at ``level`` clients
    (batched >= 1.0x the peer's req/s with p99 no worse; generate batched >= 2x
    unbatched), issue 28's (batched >= 0.9x the peer at 1 client, >= 2x at 32), and the
    batched arm's req/s over the peer's and the unbatched arm's at every level."""
    at = {(r["task"], r["arm"], r["concurrency"]): r for r in rows}
    out: dict[str, Any] = {"concurrency": level}
    for task in RECIPES:
        batched, peer, alone = (at.get((task, arm, level)) for arm in ("batched", "peer", "unbatched"))
        if batched and peer and peer["rps"]:
            out[f"{task}_batched_vs_peer_rps"] = round(batched["rps"] / peer["rps"], 3)
            out[f"{task}_batched_p99_ms"], out[f"{task}_peer_p99_ms"] = batched["p99_ms"], peer["p99_ms"]
            out[f"{task}_goal_met"] = batched["rps"] >= peer["rps"] and batched["p99_ms"] <= peer["p99_ms"]
        if batched and alone and alone["rps"]:
            out[f"{task}_batched_vs_unbatched_rps"] = round(batched["rps"] / alone["rps"], 3)
    if "generate_batched_vs_unbatched_rps" in out:
        out["generate_batching_goal_met"] = out["generate_batched_vs_unbatched_rps"] >= 2.0
    ratios: dict[str, dict[str, float]] = {}
    for (task, arm, c), row in sorted(at.items()):
        batched = at.get((task, "batched", c))
        if arm != "batched" and batched and row["rps"]:
            ratios.setdefault(f"{task}_batched_vs_{arm}_rps", {})[str(c)] = round(batched["rps"] / row["rps"], 3)
    out["ratios_by_concurrency"] = ratios
    for task in RECIPES:
        vs_peer = ratios.get(f"{task}_batched_vs_peer_rps", {})
        if "1" in vs_peer:
            out[f"{task}_one_client_goal_met"] = vs_peer["1"] >= 0.9  # issue 28: no latency tax at low load
        if "32" in vs_peer:
            out[f"{task}_32_clients_2x_goal_met"] = vs_peer["32"] >= 2.0  # ... keeping the batching win
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in RECIPES if any(r["task"] == t for r in rows)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for arm in ARMS:
            points = sorted((r for r in rows if r["task"] == task and r["arm"] == arm and r["ok"]),
                            key=lambda r: r["concurrency"])
            if not points:
                continue
            line = ax.plot([p["rps"] for p in points], [p["p99_ms"] for p in points], "o-", label=f"{arm} p99")[0]
            ax.plot([p["rps"] for p in points], [p["p50_ms"] for p in points], "o--", color=line.get_color(),
                    alpha=0.5, label=f"{arm} p50")
            for p in points:
                ax.annotate(f"c={p['concurrency']}", (p["rps"], p["p99_ms"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_yscale("log")
        ax.set_xlabel("throughput (req/s)")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{task}" + (f" (beam {BEAM_SIZE})" if task == "generate" else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/bench_serve", help="where the demo checkpoints are (or get trained)")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--tasks", default=",".join(RECIPES))
    parser.add_argument("--concurrency", default="1,8,32,128")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each level")
    parser.add_argument("--serve-args", default="", help="more `rayseq serve` options for the rayseq arms, "
                                                             "e.g. '--batch-wait-timeout-s 0.001'")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with more than 1: all arms' servers up together, each level measured in this many "
                             "slices of --seconds, the arms taking turns (ABBA), for a machine shared with other "
                             "work; the default runs one arm's server at a time")
    parser.add_argument("--quick", action="store_true", help="smoke run: levels 1 and 8, 2 s each")
    parser.add_argument("--out", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.concurrency, args.seconds, args.warmup = "1,8", 2.0, 1.0
    levels = [int(c) for c in args.concurrency.split(",")]
    tasks = args.tasks.split(",")
    work = ROOT / args.work
    ckpts = checkpoints(work)
    bodies = request_bodies(ckpts)
    from serving.catalog import read_cards

    names = {card.task: card.name for card in read_cards([str(p) for p in ckpts.values()])}
    routes = {task: f"/v1/models/{names[task]}/{task}" for task in tasks}

    info = run_info(torch_threads="server defaults")
    print(HEADER, flush=True)
    rows = run_arms(args.arms.split(","), ckpts, bodies, routes, levels, args.seconds, args.warmup,
                    shlex.split(args.serve_args), rounds=args.rounds)
    summary = goals(rows)
    print("\n" + HEADER)
    for row in rows:
        print(format_row(row))
    print(json.dumps(summary, indent=1))
    out = Path(args.out) if args.out else (None if args.quick else DEFAULT_OUT)
    if out is not None:
        report = {**info, "settings": {"levels": levels, "seconds": args.seconds, "warmup_s": args.warmup,
                                       "rounds": args.rounds, "serve_args": args.serve_args,
                                       "beam_size": BEAM_SIZE, "inputs_per_request": 1,
                                       "checkpoints": {t: str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p)
                                                       for t, p in ckpts.items()}},
                  "goals": summary, "rows": rows}
        write_report(out, report)
        plot(rows, out.with_suffix(".png"))
        print(f"wrote {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
