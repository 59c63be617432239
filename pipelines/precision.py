"""Mixed precision for training (``train.precision``): the autocast context a stage runs
its forward passes (and losses) in.

    float32   nothing changes: ``contextlib.nullcontext()``
    bf16      ``torch.autocast(device.type, dtype=torch.bfloat16)``; no loss scale (bfloat16
              has float32's exponent range, so gradients do not underflow)
    fp16      ``torch.autocast("cuda", dtype=torch.float16)`` with a loss scale
              (``pipelines.engine.loss_scale``): small gradients underflow in float16's
              range unless the loss is scaled up first; CUDA only (CPU autocast has no
              float16 LSTM kernel: oneDNN refuses the primitive)

Parameters, optimizer state and checkpoints stay in ``parallel.dtype``: autocast only
picks the dtype of eligible ops inside the context (matmuls, convolutions, cuDNN RNNs).
The backward pass runs outside it, as PyTorch's AMP recipe says. The StageRunner runs
each forward and loss in :func:`autocast`.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import torch

from pipelines.config import PRECISIONS

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""The autocast dtype of each ``train.precision`` other than ``float32``."""


def autocast(precision: str, device: torch.device | str) -> AbstractContextManager:
    """The context a forward pass on ``device`` runs in under ``precision``."""
    device = torch.device(device)
    _check(precision, device)
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def _check(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"train.precision: fp16 runs on CUDA only, not on {device} (CPU autocast has no float16 "
                         "LSTM kernel); use bf16")
