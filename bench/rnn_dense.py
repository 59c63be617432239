"""Dense vs packed RNN calls by padding share: where ``models.layers.DENSE_MAX_PADDING`` sits.

A :class:`models.layers.RecurrentLayer` runs a batch either packed (padded steps skipped,
one small matrix product per step) or dense over the padded rectangle (every step's input
projection in one matrix product, padded outputs zeroed). Both give the same numbers
(tests/test_models.py); this measures which is faster as the padding share grows.

In one process, 1 thread, for an LSTM and a GRU stack shaped like bench/bucketing.py's
model (bidirectional bottom layer + one unidirectional layer, 256 wide, 128-wide inputs),
``rows`` rows of ``width`` steps with lengths drawn to reach each padding share::

    for padding in 0 .. 0.5:  forward + backward, packed and dense, alternating order,
                              median of rounds (each the median of reps)

Usage, from the repository root::

    python bench/rnn_dense.py            # ~5 min; writes bench/results/rnn_dense.json
    python bench/rnn_dense.py --quick --out /tmp/rnn_dense.json   # smoke run (seconds; writes only with --out)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch
from torch import nn

from models.layers import DENSE_MAX_PADDING, RecurrentLayer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is a folder of scripts
from bench.machine import run_info, write_report  # noqa: E402

PADDINGS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)


def stack(cell: str) -> nn.ModuleList:
    common = dict(cell=cell, hidden_size=256, residual=False, dropout=0.0)
    return nn.ModuleList([
        RecurrentLayer(input_size=128, bidirectional=True, stream=0, **common),
        RecurrentLayer(input_size=512, bidirectional=False, stream=1, **common),
    ])


def lengths_for(padding: float, rows: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """Lengths uniform in ``[width - 2 * padding * width, width]`` (one row full), so the
    padded share is about ``padding``."""
    short = max(0, min(width - 1, round(2 * padding * width)))
    lengths = width - torch.randint(0, short + 1, (rows,), generator=gen)
    lengths[0] = width
    return lengths


def step_seconds(layers: nn.ModuleList, x: torch.Tensor, lengths: torch.Tensor, dense: bool, reps: int) -> float:
    with mock.patch.object(RecurrentLayer, "_runs_dense", staticmethod(lambda *a: dense)):
        times = []
        for _ in range(reps + 1):  # the first is a warm-up
            start = time.perf_counter()
            y = x
            for layer in layers:
                y = layer(y, lengths)
            y.sum().backward()
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None, help="rows per batch (default 86; --quick 16)")
    parser.add_argument("--width", type=int, default=None, help="steps of the longest row (default 30; --quick 12)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5; --quick 1)")
    parser.add_argument("--reps", type=int, default=None, help="reps per round (default 3; --quick 1)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 16 rows of 12 steps, 1 round, 1 rep; writes only with --out")
    parser.add_argument("--out", type=Path, default=None)
    return parser


FULL = {"rows": 86, "width": 30, "rounds": 5, "reps": 3}
QUICK = {"rows": 16, "width": 12, "rounds": 1, "reps": 1}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    results = []
    print(f"{'cell':5} {'padding':>8} {'packed ms':>10} {'dense ms':>9} {'dense speedup':>14}")
    for cell in ("lstm", "gru"):
        layers = stack(cell)
        for target in PADDINGS:
            # Seeded by the target alone: the LSTM and the GRU get the same lengths.
            lengths = lengths_for(target, args.rows, args.width, torch.Generator().manual_seed(int(target * 1000)))
            x = torch.randn(args.rows, args.width, 128, requires_grad=True)
            timings: dict[str, list[float]] = {"packed": [], "dense": []}
            for r in range(args.rounds):
                for arm in ("packed", "dense") if r % 2 == 0 else ("dense", "packed"):
                    timings[arm].append(step_seconds(layers, x, lengths, arm == "dense", args.reps))
            padding = 1.0 - float(lengths.sum()) / (args.rows * args.width)
            packed, dense = statistics.median(timings["packed"]), statistics.median(timings["dense"])
            results.append({"cell": cell, "padding": round(padding, 4), "packed_s": packed,
                            "dense_s": dense, "dense_speedup": packed / dense,
                            "packed_s_rounds": timings["packed"], "dense_s_rounds": timings["dense"]})
            print(f"{cell:5} {padding:8.3f} {packed * 1e3:10.1f} {dense * 1e3:9.1f} {packed / dense:13.2f}x")
    out = args.out or (None if args.quick else Path(__file__).parent / "results" / "rnn_dense.json")
    if out is not None:
        report = {"name": "rnn_dense", **run_info(threads=1), "quick": args.quick,
                  "dense_max_padding": DENSE_MAX_PADDING,
                  "settings": {"rows": args.rows, "width": args.width, "rounds": args.rounds,
                               "reps": args.reps, "hidden_size": 256, "input_size": 128},
                  "results": results}
        write_report(out, report)
    if args.quick:
        print("note: --quick smoke run (16 rows of 12 steps, 1 round): not the benchmark's numbers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
