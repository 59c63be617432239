"""``scripts/gpu_check.sh``: its checks run here on the CPU (the same code a GPU runs),
and in full where CUDA is. No Ray except the GPU run's serving check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def run_check(*args: str, timeout: int = 600) -> tuple[int, dict]:
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-2000:]
    return done.returncode, json.loads(lines[-1])


def test_checks_run_on_the_cpu_and_print_one_json_line():
    code, report = run_check("--device", "cpu", "--quick", "--only", "equivalence", "pp1", "throughput")
    assert code == 0, report
    assert report["ok"] and set(report["checks"]) == {"equivalence", "pp1", "throughput"}
    equivalence = report["checks"]["equivalence"]
    assert equivalence["loss_rel_diff"] < 1e-6 and equivalence["weight_rel_diff"] < 1e-5
    assert equivalence["host_staging"] is False  # CPU tensors go over gloo as they are
    assert report["checks"]["pp1"]["loss_rel_diff"] == 0.0  # CPU against CPU: the same numbers
    assert report["checks"]["throughput"]["cpu_tokens_per_s"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so_and_exits_0():
    code, report = run_check()
    assert code == 0 and report == {"cuda": False, "torch": torch.__version__}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_every_check_passes_on_the_gpu():
    code, report = run_check(timeout=900)
    assert code == 0 and report["ok"], report
    assert report["checks"]["equivalence"]["host_staging"] is True  # CUDA tensors over gloo
