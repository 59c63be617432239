"""``train.precision``: the recipe key's checks and ``pipelines.precision``'s autocast
contexts, the engine's fp16 loss scale, and the engine under bf16. No Ray; the CUDA tests
skip without a GPU."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from models.layers import RecurrentLayer
from pipelines.config import load_recipe
from pipelines.engine.loss_scale import LossScale
from pipelines.engine.topology import Topology
from pipelines.errors import ConfigError
from pipelines.precision import autocast

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "demo_sentiment.yaml"
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def recipe(*overrides: str):
    return load_recipe(RECIPE, list(overrides))


# ---------------------------------------------------------------- the recipe key


def test_precision_defaults_to_float32_and_bf16_is_allowed_on_cpu():
    assert recipe().train.precision == "float32"
    assert recipe("train.precision=bf16").train.precision == "bf16"
    assert recipe("train.precision=fp16", "parallel.use_gpu=true").train.precision == "fp16"


@pytest.mark.parametrize("overrides, message", [
    (["train.precision=fp32"], r"train\.precision: 'fp32' is not one of float32, bf16, fp16"),
    (["train.precision=fp16"], r"train\.precision: fp16 needs parallel\.use_gpu: true .*on CPU use bf16"),
    (["train.precision=bf16", "parallel.dtype=float64"],
     r"train\.precision: bf16 needs parallel\.dtype float32, got float64"),
])
def test_bad_precisions_are_refused_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        recipe(*overrides)


# ---------------------------------------------------------------- autocast on CPU


def test_float32_is_no_autocast():
    assert isinstance(autocast("float32", "cpu"), contextlib.nullcontext)
    with autocast("float32", "cpu"):
        assert torch.nn.functional.linear(torch.randn(2, 3), torch.randn(4, 3)).dtype == torch.float32


def test_bf16_autocast_trains_a_recurrent_layer_on_cpu_with_float32_weights():
    torch.manual_seed(0)
    layer = RecurrentLayer(cell="lstm", input_size=4, hidden_size=4, bidirectional=True, residual=False,
                           dropout=0.0, stream=0)
    x = torch.randn(3, 5, 4)
    with autocast("bf16", torch.device("cpu")):
        y = layer(x, torch.tensor([5, 5, 5]))  # dense: oneDNN's bfloat16 LSTM
        head = torch.nn.functional.linear(y, torch.randn(2, 8))
    assert head.dtype == torch.bfloat16
    head.float().sum().backward()
    assert all(p.dtype == torch.float32 and p.grad is not None and torch.isfinite(p.grad).all()
               for p in layer.parameters())


def test_fp16_autocast_is_refused_on_cpu():
    with pytest.raises(ValueError, match=r"fp16 runs on CUDA only, not on cpu"):
        autocast("fp16", "cpu")
    with pytest.raises(ValueError, match=r"train\.precision: 'half' is not one of"):
        autocast("half", "cpu")


# ---------------------------------------------------------------- CUDA


@CUDA
@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_cuda_autocast_runs_packed_and_dense_recurrent_layers_in_low_precision(precision, dtype):
    layer = RecurrentLayer(cell="lstm", input_size=8, hidden_size=8, bidirectional=True, residual=False,
                           dropout=0.0, stream=0).cuda()
    x = torch.randn(4, 6, 8, device="cuda")
    for lengths in ([6, 6, 6, 6], [6, 2, 5, 3]):  # dense (no padding), packed
        with autocast(precision, "cuda"):
            y = layer(x, torch.tensor(lengths))
        assert y.dtype == dtype, lengths


# ---------------------------------------------------------------- the engine's loss scale


def _linear_step(scale: LossScale | None, inputs: torch.Tensor) -> tuple[torch.nn.Linear, bool]:
    """One optimizer step of a seeded linear model through the loss-scale path."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    factor = scale.scale if scale is not None else 1.0
    (layer(inputs).pow(2).mean() * factor).backward()
    finite = True
    if scale is not None:
        finite = scale.unscale_and_check(list(layer.parameters()), Topology(0, 1, 1))
        scale.update(finite)
    if finite:
        optimizer.step()
    return layer, finite


def test_a_power_of_two_loss_scale_steps_exactly_as_unscaled():
    x = torch.randn(8, 4)
    plain, _ = _linear_step(None, x)
    scaled, finite = _linear_step(LossScale(), x)
    assert finite and torch.equal(plain.weight, scaled.weight) and torch.equal(plain.bias, scaled.bias)


def test_an_overflowed_step_is_skipped_and_the_scale_backs_off_then_grows():
    scale = LossScale(growth_interval=2)
    layer, finite = _linear_step(scale, torch.full((8, 4), 1e30))  # (1e30 * 4)^2 overflows float32
    torch.manual_seed(0)
    assert not finite and torch.equal(layer.weight, torch.nn.Linear(4, 1).weight)  # untouched
    assert scale.scale == 2.0**15 and scale.skipped == 1
    for _ in range(2):
        _linear_step(scale, torch.randn(8, 4))
    assert scale.scale == 2.0**16 and scale.clean_steps == 0
    restored = LossScale(growth_interval=2)
    restored.load_state_dict(scale.state_dict())
    assert restored == scale
