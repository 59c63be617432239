"""Who is who in a ``dp x pp`` run: ranks, and the process groups each worker talks in.

``rank = dp_rank * pp + stage``: the stages of one replica are neighbours in rank order
(on one node when a node holds a whole replica, so activations cross the fastest link).

    pipeline group of replica d:  ranks d*pp .. d*pp + pp - 1   (step plan, clip norm)
    data group of stage s:        ranks s, pp + s, 2*pp + s ... (gradient all-reduce)
    header group:                 every rank, gloo on the host  (P2P message headers)

Payloads go point to point on the default group (``pipelines.engine.p2p``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Topology:
    rank: int
    dp: int
    pp: int
    pipeline_group: object = None
    data_group: object = None
    header_group: object = None

    @property
    def stage(self) -> int:
        return self.rank % self.pp

    @property
    def dp_rank(self) -> int:
        return self.rank // self.pp

    @property
    def is_first(self) -> bool:
        return self.stage == 0

    @property
    def is_last(self) -> bool:
        return self.stage == self.pp - 1

    def stage_rank(self, stage: int) -> int:
        """Global rank of ``stage`` in this worker's replica."""
        return self.dp_rank * self.pp + stage

    @classmethod
    def create(cls, rank: int, dp: int, pp: int) -> Topology:
        """Every worker must call this (``new_group`` is collective over the world)."""
        topology = cls(rank, dp, pp)
        if not dist.is_initialized() or dp * pp == 1:
            return topology
        if dist.get_world_size() != dp * pp:
            raise ValueError(f"world size {dist.get_world_size()} != dp * pp ({dp} * {pp})")
        for d in range(dp):
            group = dist.new_group([d * pp + s for s in range(pp)])
            if d == topology.dp_rank:
                topology.pipeline_group = group
        for s in range(pp):
            group = dist.new_group([d * pp + s for d in range(dp)])
            if s == topology.stage:
                topology.data_group = group
        if pp > 1:
            topology.header_group = dist.new_group(backend="gloo")
            # NCCL builds the default group's communicator on its first use, and
            # batch_isend_irecv's first call must involve every rank: a barrier does.
            dist.barrier()
        return topology

    def all_reduce(self, tensor, group_name: str) -> None:
        """Sum ``tensor`` over ``pipeline``, ``data`` or ``world``; a no-op alone."""
        if not dist.is_initialized():
            return
        if group_name == "pipeline" and self.pp == 1 or group_name == "data" and self.dp == 1:
            return
        group = {"pipeline": self.pipeline_group, "data": self.data_group, "world": None}[group_name]
        if tensor.device.type == "cpu" and dist.get_backend(group) == "nccl":  # NCCL reduces GPU memory only
            staged = tensor.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(staged, group=group)
            tensor.copy_(staged)
            return
        dist.all_reduce(tensor, group=group)
