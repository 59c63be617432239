"""Where model replicas run: the device a replica loads its models on, and the GPUs it
reserves for that (``rayseq serve --device cuda [--gpus-per-replica G]``, or a Serve
config's ``args: {device: cuda, gpus_per_replica: G}``).

    device cpu     replicas ask Ray for CPUs only (``ray_actor_options`` unchanged)
    device cuda    the deployment holding the models (the ingress, or with
                   ``separate_models`` each model deployment) adds ``num_gpus: G``
                   (default 1; a fraction lets small RNNs share a GPU) to its
                   ``ray_actor_options``; Ray then places replicas on GPU nodes only
                   and sets each one's ``CUDA_VISIBLE_DEVICES``, so ``cuda`` inside a
                   replica is the GPU Ray reserved for it

No GPU index: Ray picks the GPU, and an index would name a device the replica cannot
see. An explicit ``ray_actor_options.num_gpus`` in ``deployment_options`` is kept, as
long as it agrees with ``gpus_per_replica``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.errors import ConfigError

SERVE_DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class ReplicaDevice:
    device: str = "cpu"
    """``cpu`` or ``cuda``: where each replica runs its models."""
    gpus: float | None = None
    """GPUs each replica reserves with ``device: cuda`` (None: 1)."""
    names: tuple[str, str] = ("device", "gpus_per_replica")
    """How errors name the two settings: the flags or the Serve config's args."""

    def __post_init__(self) -> None:
        device_name, gpus_name = self.names
        if self.device not in SERVE_DEVICES:
            hint = (" (a replica runs on the GPU Ray reserves for it, which it sees as cuda; no index)"
                    if str(self.device).startswith("cuda:") else "")
            raise ConfigError(f"{device_name} {self.device}: expected cpu or cuda{hint}")
        if self.gpus is None:
            return
        if self.device != "cuda":
            raise ConfigError(f"{gpus_name} is read with {device_name} cuda only (got {device_name} {self.device})")
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, (int, float)) or self.gpus <= 0:
            raise ConfigError(f"{gpus_name} must be a number of GPUs > 0 (a fraction shares one), got {self.gpus!r}")

    @property
    def num_gpus(self) -> float:
        """What a replica holding models asks Ray for."""
        if self.device != "cuda":
            return 0
        return 1 if self.gpus is None else self.gpus

    def options(self, options: Mapping[str, Any], default_actor_options: Mapping[str, Any]) -> dict[str, Any]:
        """Serve ``options`` of a deployment that holds models, with its GPU reservation.
        ``default_actor_options``: the deployment's own, which a given
        ``ray_actor_options`` replaces whole (as Serve does)."""
        if not self.num_gpus:
            return dict(options)
        actor = dict(options.get("ray_actor_options") or default_actor_options)
        given = actor.get("num_gpus")
        if given is not None and (given <= 0 or (self.gpus is not None and given != self.gpus)):
            raise ConfigError(f"deployment_options.ray_actor_options.num_gpus {given} disagrees with "
                              f"{self.names[0]} cuda, {self.names[1]} {self.num_gpus}: set the GPUs in one place")
        actor.setdefault("num_gpus", self.num_gpus)
        return {**options, "ray_actor_options": actor}
