"""Mixed precision for training (``train.precision``): the autocast context a stage runs
its forward passes (and losses) in, and the gradient scaler fp16 needs.

    float32   nothing changes: ``contextlib.nullcontext()``, no scaler
    bf16      ``torch.autocast(device.type, dtype=torch.bfloat16)``; no scaler (bfloat16
              has float32's exponent range, so gradients do not underflow)
    fp16      ``torch.autocast("cuda", dtype=torch.float16)`` with a
              ``torch.amp.GradScaler("cuda")``: small gradients underflow in float16's
              range unless the loss is scaled up first; CUDA only (CPU autocast has no
              float16 LSTM kernel: oneDNN refuses the primitive)

Parameters, optimizer state and checkpoints stay in ``parallel.dtype``: autocast only
picks the dtype of eligible ops inside the context (matmuls, convolutions, cuDNN RNNs).
The backward pass runs outside it, as PyTorch's AMP recipe says. Under pipeline
parallelism every stage holds its own scaler; with fp16 the engine must make the stages
agree on skipping a step whose gradients overflowed anywhere (an all-reduce of
``found_inf``), or the stages' weights drift apart.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from pipelines.config import PRECISIONS

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""The autocast dtype of each ``train.precision`` other than ``float32``."""


def autocast(precision: str, device: torch.device | str) -> ContextManager:
    """The context a forward pass on ``device`` runs in under ``precision``."""
    device = torch.device(device)
    _check(precision, device)
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device | str) -> torch.amp.GradScaler | None:
    """A fresh gradient scaler for fp16 (its state goes into training checkpoints with
    the optimizer's), else None: float32 and bf16 step unscaled."""
    device = torch.device(device)
    _check(precision, device)
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def _check(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"train.precision: fp16 runs on CUDA only, not on {device} (CPU autocast has no float16 "
                         "LSTM kernel); use bf16")
