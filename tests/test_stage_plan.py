"""Stage planning: contiguous, complete, balanced; clear errors. No Ray."""

from __future__ import annotations

import itertools

import pytest

from models import ModelConfig, build_seq2vec
from models.frontends import tokens
from pipelines.engine.stage_plan import plan_stages
from pipelines.errors import ConfigError


def brute_force_best(costs, pp):
    n = len(costs)
    best = float("inf")
    for cuts in itertools.combinations(range(1, n), pp - 1):
        edges = (0, *cuts, n)
        best = min(best, max(sum(costs[a:b]) for a, b in zip(edges, edges[1:])))
    return best


@pytest.mark.parametrize("costs", [[1, 1, 1, 1], [5, 1, 1, 1, 1, 5], [1, 10, 10, 10, 1], [3, 1, 4, 1, 5, 9, 2, 6]])
@pytest.mark.parametrize("pp", [1, 2, 3])
def test_plan_is_contiguous_complete_and_optimal(costs, pp):
    plan = plan_stages(costs, pp)
    assert plan.pp == pp
    covered = [i for s in range(pp) for i in plan.layers(s)]
    assert covered == list(range(len(costs)))
    assert all(len(plan.layers(s)) >= 1 for s in range(pp))
    assert max(plan.stage_cost(s) for s in range(pp)) == pytest.approx(brute_force_best(costs, pp))


def test_real_model_plan_balances_recurrent_layers():
    model = build_seq2vec(ModelConfig(embed_dim=64, hidden_size=64, num_layers=4), frontend=tokens(5000), num_labels=2)
    plan = plan_stages(model.layer_costs(), 2)
    # Embedding + bidirectional layer 0 + layer 1 are about as costly as layers 2, 3 + head.
    assert plan.bounds == ((0, 3), (3, 6))
    assert "stage 1: layers 3..5" in plan.describe()


def test_too_many_stages_shows_the_arithmetic():
    with pytest.raises(ConfigError, match=r"parallel.pp=5 stages for a model of 4 layers.*pp <= 4"):
        plan_stages([1, 1, 1, 1], 5)


@pytest.mark.parametrize("pp", [2, 3])
def test_each_stage_holds_about_one_pp_th_of_parameters_and_optimizer_state(pp):
    """Memory per worker ~ total / pp (+-10%) when the plan balances parameters: each
    stage builds only its own layers, and AdamW's state follows its parameters."""
    import torch

    from pipelines import apps
    from pipelines.config import recipe_from_dict
    from pipelines.engine.optim import build_optimizer
    from pipelines.engine.worker import build_stage, plan_for

    recipe = recipe_from_dict({
        "model": {"embed_dim": 96, "hidden_size": 96, "num_layers": 6, "bidirectional_bottom": False},
        "parallel": {"pp": pp, "balance": "params"},
    })
    app = apps.app_for(recipe)
    plan = plan_for(recipe, app, {"vocab_size": 200, "num_labels": 2})

    def stage_bytes(module) -> int:
        optimizer, _ = build_optimizer(module.parameters(), recipe.train)
        loss = sum(p.sum() for p in module.parameters())
        loss.backward()
        optimizer.step()  # materialises exp_avg and exp_avg_sq
        state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                    if torch.is_tensor(t))
        return state + sum(p.numel() * p.element_size() for p in module.parameters())

    per_stage = [stage_bytes(build_stage(recipe, app, plan, s, {"vocab_size": 200, "num_labels": 2}))
                 for s in range(pp)]
    whole = stage_bytes(build_seq2vec(recipe.model, frontend=tokens(200), num_labels=2))
    assert sum(per_stage) == pytest.approx(whole, rel=1e-3)
    for value in per_stage:
        assert value == pytest.approx(whole / pp, rel=0.10), (per_stage, whole)
