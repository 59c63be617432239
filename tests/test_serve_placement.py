"""``rayseq serve --device cuda``: which deployment reserves GPUs, how many, and the
device its replicas load models on (``serving.placement``), checked on the built Serve
application without Ray; the CUDA test skips without a GPU."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import torch

from pipelines.cli import build_parser, main
from pipelines.errors import ConfigError
from serving.app import app_builder, build_app
from serving.catalog import read_cards
from serving.cli import placement_from_args
from serving.deployments import ModelServer
from serving.limits import ServeLimits
from serving.placement import ReplicaDevice

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
CLASSIFIER = LEGACY / "text_classify" / "checkpoint"
NO_CUDA = "--device cuda: no CUDA device here (torch.cuda.is_available() is false)"


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def deployments(app) -> dict[str, tuple[dict, tuple, dict]]:
    """``{name: (ray_actor_options, init args, init kwargs)}`` of the app's deployments."""
    ingress = app._bound_deployment
    found = {ingress.name: (ingress.ray_actor_options, ingress.init_args, ingress.init_kwargs)}
    for _, model in ingress.init_args[0]:
        if model is not None:
            bound = model._bound_deployment
            found[bound.name] = (bound.ray_actor_options, bound.init_args, bound.init_kwargs)
    return found


# ---------------------------------------------------------------- the settings


@pytest.mark.parametrize("device, gpus, message", [
    ("cuda:1", None, r"^device cuda:1: expected cpu or cuda \(a replica runs on the GPU Ray reserves for it"),
    ("gpu", None, r"^device gpu: expected cpu or cuda$"),
    ("cpu", 0.5, r"^gpus_per_replica is read with device cuda only \(got device cpu\)"),
    ("cuda", 0, r"^gpus_per_replica must be a number of GPUs > 0 \(a fraction shares one\), got 0"),
    ("cuda", True, r"^gpus_per_replica must be a number of GPUs > 0"),
])
def test_bad_placements_are_refused_naming_the_setting(device, gpus, message):
    with pytest.raises(ConfigError, match=message):
        ReplicaDevice(device, gpus)


def test_cuda_adds_the_gpus_to_the_actor_options_it_is_given_or_the_default():
    default = {"num_cpus": 0.5}
    assert ReplicaDevice().options({"num_replicas": 2}, default) == {"num_replicas": 2}  # CPU: nothing added
    assert ReplicaDevice("cuda").options({}, default) == {"ray_actor_options": {"num_cpus": 0.5, "num_gpus": 1}}
    given = {"ray_actor_options": {"num_cpus": 2}}
    assert ReplicaDevice("cuda", 0.25).options(given, default) == {
        "ray_actor_options": {"num_cpus": 2, "num_gpus": 0.25}
    }
    assert given == {"ray_actor_options": {"num_cpus": 2}}  # not modified in place
    explicit = {"ray_actor_options": {"num_gpus": 2}}
    assert ReplicaDevice("cuda").options(explicit, default) == explicit


@pytest.mark.parametrize("placement, num_gpus", [(ReplicaDevice("cuda"), 0), (ReplicaDevice("cuda", 0.5), 1)])
def test_gpus_set_in_two_places_must_agree(placement, num_gpus):
    with pytest.raises(ConfigError, match=rf"ray_actor_options.num_gpus {num_gpus} disagrees with device cuda"):
        placement.options({"ray_actor_options": {"num_gpus": num_gpus}}, {})


# ---------------------------------------------------------------- the built application


def test_on_cuda_the_ingress_holding_the_models_reserves_a_gpu_and_loads_them_on_cuda():
    (options, _, kwargs), = deployments(build_app([CLASSIFIER], placement=ReplicaDevice("cuda"))).values()
    assert options == {"num_cpus": 0.5, "num_gpus": 1} and kwargs["device"] == "cuda"


def test_with_separate_models_only_the_model_deployments_reserve_gpus():
    found = deployments(build_app([CLASSIFIER], separate_models=True, placement=ReplicaDevice("cuda", 0.5)))
    assert found["classify-demo_sentiment"][0] == {"num_cpus": 0.5, "num_gpus": 0.5}
    assert found["classify-demo_sentiment"][1][3] == "cuda"  # ModelServer(card, limits, batching, device)
    assert "num_gpus" not in found["Ingress"][0]


@pytest.mark.parametrize("separate_models", [False, True])
def test_on_cpu_no_deployment_asks_for_a_gpu(separate_models):
    found = deployments(build_app([CLASSIFIER], separate_models=separate_models))
    assert all("num_gpus" not in options for options, _, _ in found.values())


def test_a_serve_config_asks_for_gpus_in_its_args():
    app = app_builder({"checkpoints": [str(CLASSIFIER)], "separate_models": True, "device": "cuda",
                       "gpus_per_replica": 0.5})
    assert deployments(app)["classify-demo_sentiment"][0]["num_gpus"] == 0.5
    with pytest.raises(ConfigError, match=r"^serve args: device cuda:0: expected cpu or cuda"):
        app_builder({"checkpoints": [str(CLASSIFIER)], "device": "cuda:0"})


# ---------------------------------------------------------------- the command line


def serve_args(*flags: str):
    return build_parser().parse_args(["serve", str(CLASSIFIER), *flags])


def test_serve_checks_the_local_gpu_but_not_a_clusters(no_cuda, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert placement_from_args(serve_args()).num_gpus == 0
    with pytest.raises(ConfigError, match=r"^--device cuda: no CUDA device here"):
        placement_from_args(serve_args("--device", "cuda"))
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # GPUs on other nodes, or yet to be started
    assert placement_from_args(serve_args("--device", "cuda", "--gpus-per-replica", "0.5")).num_gpus == 0.5
    with pytest.raises(ConfigError, match=r"^--gpus-per-replica is read with --device cuda only"):
        placement_from_args(serve_args("--gpus-per-replica", "0.5"))


def test_rayseq_serve_on_cuda_without_a_gpu_exits_2_before_ray_starts(no_cuda, monkeypatch, capsys):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["serve", str(CLASSIFIER), "--device", "cuda"]) == 2
    assert capsys.readouterr().err.strip() == f"rayseq: error: {NO_CUDA}"


def test_a_replica_placed_without_a_gpu_fails_naming_the_setting(no_cuda):
    (card,) = read_cards([CLASSIFIER])
    with pytest.raises(ConfigError, match=r"^device cuda: no CUDA device here"):
        ModelServer.func_or_class(card, ServeLimits(), False, "cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_model_server_on_cuda_answers_as_on_cpu():
    (card,) = read_cards([CLASSIFIER])
    texts = json.loads((LEGACY / "text_classify" / "inputs" / "inputs.json").read_text())
    cpu = ModelServer.func_or_class(card, ServeLimits(), False, "cpu")
    gpu = ModelServer.func_or_class(card, ServeLimits(), False, "cuda")
    assert next(gpu.model.model.parameters()).is_cuda
    for a, b in zip(asyncio.run(cpu.answer(texts)), asyncio.run(gpu.answer(texts)), strict=True):
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-4)
