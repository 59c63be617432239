"""Stage plan: cut a model's ordered layer list into ``pp`` contiguous stages.

The cut minimises the most expensive stage (a pipeline runs at the pace of its slowest
stage), given each layer's estimated cost (``model.layer_costs()``, FLOPs per token).
Worker ``rank = dp_rank * pp + stage``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.errors import ConfigError


@dataclass(frozen=True)
class StagePlan:
    bounds: tuple[tuple[int, int], ...]
    """``(first, last + 1)`` layer indices of each stage."""
    costs: tuple[float, ...]
    """Each layer's cost, as planned with."""

    @property
    def pp(self) -> int:
        return len(self.bounds)

    def layers(self, stage: int) -> range:
        return range(*self.bounds[stage])

    def stage_of(self, layer: int) -> int:
        return next(s for s, (first, end) in enumerate(self.bounds) if first <= layer < end)

    def stage_cost(self, stage: int) -> float:
        return sum(self.costs[i] for i in self.layers(stage))

    def describe(self, names: list[str] | None = None) -> str:
        total = sum(self.costs) or 1.0
        lines = []
        for stage, (first, end) in enumerate(self.bounds):
            label = ", ".join(names[first:end]) if names else f"layers {first}..{end - 1}"
            lines.append(f"stage {stage}: {label}  ({100 * self.stage_cost(stage) / total:.0f}% of the cost)")
        return "\n".join(lines)


def plan_stages(costs: list[float], pp: int) -> StagePlan:
    """Contiguous cut of ``costs`` into ``pp`` non-empty stages minimising the maximum
    stage cost (dynamic programming; ties go to the earliest cut)."""
    n = len(costs)
    if pp < 1:
        raise ConfigError(f"parallel.pp must be >= 1, got {pp}")
    if pp > n:
        raise ConfigError(f"parallel.pp={pp} stages for a model of {n} layers: every stage needs a layer (pp <= {n})")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    # best[k][j]: minimal max-stage cost splitting the first j layers into k stages.
    best = [[inf] * (n + 1) for _ in range(pp + 1)]
    cut = [[0] * (n + 1) for _ in range(pp + 1)]
    best[0][0] = 0.0
    for k in range(1, pp + 1):
        for j in range(k, n + 1):
            for i in range(k - 1, j):
                value = max(best[k - 1][i], prefix[j] - prefix[i])
                if value < best[k][j] - 1e-9:
                    best[k][j], cut[k][j] = value, i
    bounds = []
    j = n
    for k in range(pp, 0, -1):
        i = cut[k][j]
        bounds.append((i, j))
        j = i
    return StagePlan(tuple(reversed(bounds)), tuple(float(c) for c in costs))
