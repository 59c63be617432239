"""Dynamic loss scaling for ``train.precision: fp16``, agreed by every stage.

float16 gradients underflow unless the loss is scaled up before the backward pass. Under
pipeline parallelism the loss exists on the last stage only, but its scale rides the
gradients back through every stage, so all stages must unscale by the same factor and
skip the same steps: ``torch.amp.GradScaler`` keeps a per-process scale and inf check,
which would let the stages' weights drift apart. So the scale is a power of two (scaling
and unscaling are exact), overflow is checked per stage and summed over the world, and
every stage applies the same update:

    overflow anywhere   skip the optimizer step, halve the scale
    ``growth_interval`` clean steps in a row   double it
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipelines.engine.topology import Topology


@dataclass
class LossScale:
    scale: float = 2.0**16
    growth_interval: int = 2000
    clean_steps: int = 0
    skipped: int = 0

    def unscale_and_check(self, parameters: list[torch.nn.Parameter], topology: Topology) -> bool:
        """Divide this stage's gradients by the scale; whether every stage's are finite
        (the same answer on every worker)."""
        grads = [p.grad for p in parameters if p.grad is not None]
        device = grads[0].device if grads else torch.device("cpu")
        bad = torch.zeros(1, dtype=torch.float64, device=device)
        for g in grads:
            g.div_(self.scale)
            bad += (~torch.isfinite(g)).any().double()
        topology.all_reduce(bad, "world")
        return float(bad) == 0.0

    def update(self, finite: bool) -> None:
        if not finite:
            self.scale, self.clean_steps = self.scale / 2, 0
            self.skipped += 1
            return
        self.clean_steps += 1
        if self.clean_steps == self.growth_interval:
            self.scale, self.clean_steps = self.scale * 2, 0

    def state_dict(self) -> dict[str, float]:
        return {"scale": self.scale, "clean_steps": self.clean_steps, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.scale, self.clean_steps, self.skipped = state["scale"], int(state["clean_steps"]), int(state["skipped"])
