"""``train.ema_decay``: the parameter average's update, its swap in and out, and how it is
checkpointed (the served model file holds the average, resuming gets the raw weights
back). Its equality across pipeline stages is in test_pipeline_equivalence.py."""

from __future__ import annotations

import pytest
import torch

from pipelines.config import ConfigError, TrainConfig
from pipelines.engine.averaging import ParameterAverage
from pipelines.engine.optim import build_optimizer
from pipelines.engine.shards import load_train_shard, model_file, save_train_shard


def _module(value: float) -> torch.nn.Linear:
    module = torch.nn.Linear(2, 2)
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(value)
    return module


@pytest.mark.parametrize("decay, decays", [
    (0.9, [2 / 11, 3 / 12, 4 / 13, 5 / 14]),  # the warm-up: early weights fade fast
    (0.2, [2 / 11, 0.2, 0.2, 0.2]),  # then the decay asked for
])
def test_the_average_moves_towards_the_weights_with_a_warm_up(decay, decays):
    module = _module(0.0)
    average = ParameterAverage(module, decay=decay)
    expected = 0.0
    for value, d in zip([1.0, 2.0, 4.0, 4.0], decays):
        with torch.no_grad():
            module.weight.fill_(value)
        average.update()
        assert average.current_decay() == pytest.approx(d)  # the decay this update used
        expected = d * expected + (1 - d) * value
        assert float(average.shadow[0][0, 0]) == pytest.approx(expected)
        assert float(average.shadow[1][0]) == pytest.approx(0.0)  # the bias never moved


def test_the_swap_restores_the_raw_weights_even_after_an_error():
    module = _module(1.0)
    average = ParameterAverage(module, decay=0.5)
    with torch.no_grad():
        module.weight.fill_(3.0)
    with average.swapped_in():
        assert float(module.weight.detach()[0, 0]) == 1.0
    assert float(module.weight.detach()[0, 0]) == 3.0
    with pytest.raises(RuntimeError), average.swapped_in():
        raise RuntimeError("evaluation failed")
    assert float(module.weight.detach()[0, 0]) == 3.0 and float(average.shadow[0][0, 0]) == 1.0


def _trained(steps: int) -> tuple[torch.nn.Linear, torch.optim.Optimizer, object, ParameterAverage]:
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2)
    optimizer, scheduler = build_optimizer(module.parameters(), TrainConfig(max_steps=10, lr=0.1, warmup_steps=0))
    average = ParameterAverage(module, decay=0.8)
    for _ in range(steps):
        optimizer.zero_grad()
        module(torch.ones(4, 3)).pow(2).sum().backward()
        optimizer.step()
        scheduler.step()
        average.update()
    return module, optimizer, scheduler, average


def test_the_model_file_holds_the_average_and_resuming_gets_the_raw_weights(tmp_path):
    module, optimizer, scheduler, average = _trained(3)
    save_train_shard(tmp_path, 0, module, optimizer, scheduler, average)
    served = torch.load(tmp_path / model_file(0), weights_only=True)
    assert torch.equal(served["weight"], average.shadow[0])
    assert not torch.equal(served["weight"], module.weight.detach())

    resumed, optimizer2, scheduler2, average2 = _trained(0)
    load_train_shard(tmp_path, 0, resumed, optimizer2, scheduler2, average2)
    assert torch.equal(resumed.weight, module.weight) and torch.equal(average2.shadow[0], average.shadow[0])
    assert average2.updates == 3 and scheduler2.last_epoch == 3

    plain, optimizer3, scheduler3, _ = _trained(0)  # the same checkpoint, averaging now off
    load_train_shard(tmp_path, 0, plain, optimizer3, scheduler3)
    assert torch.equal(plain.weight, module.weight)


def test_averaging_turned_on_at_a_resume_starts_from_the_weights(tmp_path):
    module, optimizer, scheduler, _ = _trained(2)
    save_train_shard(tmp_path, 0, module, optimizer, scheduler)  # saved without an average
    resumed, optimizer2, scheduler2, average = _trained(0)
    load_train_shard(tmp_path, 0, resumed, optimizer2, scheduler2, average)
    assert torch.equal(resumed.weight, module.weight) and torch.equal(average.shadow[0], module.weight.detach())
    assert average.updates == 0


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_a_bad_decay_is_an_error_naming_the_option(decay):
    with pytest.raises(ConfigError, match=r"train\.ema_decay must be in \[0, 1\)"):
        TrainConfig(ema_decay=decay)
