"""``--device``: the torch device a command runs its model on (``rayseq eval``,
``sample``, ``compose``, ``synthesize``; ``serve`` takes ``cpu`` or ``cuda``).

    cpu          the default
    cuda         the current CUDA device (cuda:0 unless CUDA_VISIBLE_DEVICES says otherwise)
    cuda:N       CUDA device N of this process

A device is checked when the command starts, before any model loads, so a machine
without the GPU asked for fails in a second with one line naming the flag.

Ray actors and Serve replicas that reserve GPUs (``num_gpus``) see only those: Ray
sets their ``CUDA_VISIBLE_DEVICES``, so inside them the reserved GPU is ``cuda``
(:func:`actor_device`) whatever index the command line named; Ray chooses which GPU.
"""

from __future__ import annotations

import argparse
import re

from pipelines.errors import ConfigError

_DEVICE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")

DEVICE_HELP = "cpu (default), cuda or cuda:N: where the model runs"


def parse_device(value: str, *, flag: str = "--device") -> str:
    """``value`` in canonical form (``cpu``, ``cuda``, ``cuda:N``); the syntax only."""
    match = _DEVICE.match(value.strip().lower())
    if match is None or (match.group(1) == "cpu" and match.group(2) is not None):
        raise ConfigError(f"{flag} {value}: expected cpu, cuda or cuda:N")
    return match.group(0)


def check_available(device: str, *, flag: str = "--device") -> str:
    """``device`` if this process can use it, else a :class:`ConfigError` naming ``flag``."""
    if not device.startswith("cuda"):
        return device
    import torch  # here: every command's parser imports this module

    if not torch.cuda.is_available():
        raise ConfigError(f"{flag} {device}: no CUDA device here (torch.cuda.is_available() is false)")
    index = torch.device(device).index
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise ConfigError(f"{flag} {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return device


def checked_device(value: str, *, flag: str = "--device") -> str:
    """:func:`parse_device`, then :func:`check_available`."""
    return check_available(parse_device(value, flag=flag), flag=flag)


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def actor_device(device: str) -> str:
    """The device inside a Ray actor that reserved a GPU for ``device``: ``cuda``, the
    one Ray assigned it (its only visible one), or ``cpu``."""
    return "cuda" if is_cuda(device) else "cpu"


def actor_gpus(device: str) -> dict[str, float]:
    """Ray options an actor running a model on ``device`` adds: one GPU for CUDA,
    nothing for the CPU (so CPU runs ask Ray for exactly what they did before)."""
    return {"num_gpus": 1} if is_cuda(device) else {}


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", metavar="DEVICE", help=DEVICE_HELP)
