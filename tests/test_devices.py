"""``--device`` of the model-running commands (``pipelines.devices``): parsing, the checks
on a machine without the GPU asked for, and the device reaching the model (in this
process, and in the Ray Data actors of ``rayseq eval``, which then reserve a GPU). No
Ray; the CUDA tests skip without a GPU."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from pipelines import devices, evaluate
from pipelines.checkpoint import load_inference, load_predictor
from pipelines.cli import main
from pipelines.errors import ConfigError
from pipelines.scoring import records

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
CLASSIFIER = LEGACY / "text_classify" / "checkpoint"
TRANSLATOR = LEGACY / "translate" / "checkpoint"
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
NO_CUDA = "--device cuda: no CUDA device here (torch.cuda.is_available() is false)"


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as one without CUDA, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("value, device",
                         [("cpu", "cpu"), ("cuda", "cuda"), ("cuda:1", "cuda:1"), (" CUDA:0", "cuda:0")])
def test_devices_parse_to_canonical_names(value, device):
    assert devices.parse_device(value) == device


@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:x", "cpu:0", "mps", ""])
def test_other_devices_are_refused_naming_the_flag(value):
    with pytest.raises(ConfigError, match=rf"^--device {value}: expected cpu, cuda or cuda:N$"):
        devices.parse_device(value)


def test_cuda_without_a_gpu_is_refused_with_the_reason(no_cuda):
    assert devices.checked_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match=f"^{re.escape(NO_CUDA)}$"):
        devices.checked_device("cuda")


def test_a_cuda_index_past_the_last_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert devices.checked_device("cuda:1") == "cuda:1"
    with pytest.raises(ConfigError, match=r"--device cuda:2: this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        devices.checked_device("cuda:2")


def test_ray_actors_reserve_a_gpu_and_use_the_one_they_get():
    assert devices.actor_gpus("cuda:1") == {"num_gpus": 1} and devices.actor_device("cuda:1") == "cuda"
    assert devices.actor_gpus("cpu") == {} and devices.actor_device("cpu") == "cpu"


# ---------------------------------------------------------------- commands


@pytest.mark.parametrize("argv", [
    ["eval", "/nonexistent/checkpoint", "--data", "x.txt", "--device", "cuda"],
    ["sample", "/nonexistent/checkpoint", "--condition", "positive", "--device", "cuda"],
    ["compose", "/nonexistent/checkpoint", "--out", "x.mid", "--device", "cuda"],
    ["synthesize", "/nonexistent/checkpoint", "one", "--speaker", "theo", "--out", "x.wav", "--device", "cuda"],
])
def test_commands_refuse_cuda_without_a_gpu_before_reading_the_checkpoint(argv, no_cuda, capsys):
    """The device is checked first: the missing checkpoint would be another error."""
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"rayseq: error: {NO_CUDA}"


def test_eval_hands_the_device_to_the_application(monkeypatch, tmp_path):
    got = {}

    def score(checkpoint, recipe, predictions, *, device):
        got["device"] = device
        return {}

    monkeypatch.setattr(evaluate, "checked_device", lambda value: value)  # as if this machine had two GPUs
    monkeypatch.setattr(evaluate, "init_ray", lambda: None)
    monkeypatch.setattr(load_inference(CLASSIFIER).app, "score", score)
    evaluate.evaluate_checkpoint(CLASSIFIER, tmp_path / "data.txt", device="cuda:1")
    assert got == {"device": "cuda:1"}


class Dataset:
    """What ``records.classified``/``decoded`` ask of a Ray dataset, recorded."""

    def __init__(self) -> None:
        self.asked: dict = {}

    def map_batches(self, fn, **kwargs):
        self.asked = kwargs
        return self

    def iter_rows(self):
        return iter([])


@pytest.mark.parametrize("device, gpus, inside", [("cpu", None, "cpu"), ("cuda:1", 1, "cuda")])
def test_eval_actors_reserve_a_gpu_for_cuda_and_load_the_model_on_it(device, gpus, inside):
    for score in (lambda data: records.classified(CLASSIFIER, data, inputs="text", encoded=True, device=device),
                  lambda data: records.decoded(TRANSLATOR, data, inputs="source", target="target", options={},
                                               encoded=True, device=device)):
        data = Dataset()
        score(data)
        assert data.asked.get("num_gpus") == gpus
        assert data.asked["fn_constructor_kwargs"]["device"] == inside


def test_an_eval_actor_loads_its_predictor_on_the_device_it_is_given():
    actor = records.Classify(str(CLASSIFIER), "text", encoded=True, max_length=None, device="cpu")
    assert actor.predictor.device == "cpu" and next(actor.predictor.model.parameters()).device.type == "cpu"


# ---------------------------------------------------------------- CUDA


@CUDA
def test_a_classifier_on_cuda_answers_as_on_cpu():
    texts = json.loads((LEGACY / "text_classify" / "inputs" / "inputs.json").read_text())
    cpu, gpu = load_predictor(CLASSIFIER), load_predictor(CLASSIFIER, device="cuda")
    assert next(gpu.model.parameters()).is_cuda
    for a, b in zip(cpu.predict(texts), gpu.predict(texts), strict=True):
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-4)


@CUDA
def test_a_translator_on_cuda_decodes_as_on_cpu():
    texts = json.loads((LEGACY / "translate" / "inputs" / "inputs.json").read_text())
    cpu, gpu = load_predictor(TRANSLATOR), load_predictor(TRANSLATOR, device="cuda")
    for beam in (1, 3):
        assert [a["text"] for a in cpu.predict(texts, beam_size=beam)] == \
               [b["text"] for b in gpu.predict(texts, beam_size=beam)]


# ---------------------------------------------------------------- on Ray


def labelled_as_predicted(tmp_path: Path) -> Path:
    """The fixture's texts, each labelled with what the checkpoint predicted when written."""
    texts = json.loads((LEGACY / "text_classify" / "inputs" / "inputs.json").read_text())
    expected = json.loads((LEGACY / "text_classify" / "expected.json").read_text())["classify"]
    data = tmp_path / "valid.txt"
    data.write_text("".join(f"{e['label']} {text}\n" for text, e in zip(texts, expected, strict=True)))
    return data


@pytest.mark.ray
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_eval_scores_on_the_device_through_ray_data(ray_head, tmp_path, device):
    """The device reaches the Ray Data actors (a GPU reserved for cuda): every record
    scored as the checkpoint predicted it."""
    data = labelled_as_predicted(tmp_path)
    result = evaluate.evaluate_checkpoint(CLASSIFIER, data, device=device)
    assert result["accuracy"] == 1.0 and result["examples"] == len(data.read_text().splitlines())
