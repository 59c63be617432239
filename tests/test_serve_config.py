"""deploy/serve_config.yaml: valid for Serve, and deployed as ``serve deploy`` does it.

The file is loaded as shipped, its two checkpoints swapped for the tiny ones (and the
HTTP port for a free one), written out and handed to the ``serve deploy`` CLI, which
sends it to the session head's dashboard; the controller then builds the app from
``import_path`` on the cluster, as it would on a real one (or under ``serve run``).
"""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import ROOT, free_port
from pipelines.errors import ConfigError

pytestmark = pytest.mark.serve  # Ray Serve on the shared head: the Ray tier's shards keep these files together

SERVE_CONFIG = ROOT / "deploy" / "serve_config.yaml"
MODEL_DEPLOYMENTS = ("classify-tiny_sentiment", "generate-tiny_translation")
TEXTS = ["a warm and funny film", "the plot was not good but the acting was great"]


def load_serve_config() -> dict:
    return yaml.safe_load(SERVE_CONFIG.read_text())


def the_app(config: dict) -> dict:
    (app,) = config["applications"]
    return app


@pytest.fixture(scope="module")
def stand_ins(tiny_checkpoint, tiny_translator) -> dict[str, Path]:
    """The tiny checkpoint that stands in for each checkpoint the file names."""
    return {"runs/quickstart/demo_sentiment/checkpoint": tiny_checkpoint,
            "runs/quickstart/demo_translation/checkpoint": tiny_translator}


def with_checkpoints(config: dict, stand_ins: dict[str, Path]) -> dict:
    """``config`` with each checkpoint replaced by its stand-in."""
    config = copy.deepcopy(config)
    args = the_app(config)["args"]
    assert set(args["checkpoints"]) == set(stand_ins)
    args["checkpoints"] = [str(stand_ins[path]) for path in args["checkpoints"]]
    return config


# ---------------------------------------------------------------- no Ray


def test_serve_config_validates_and_builds_with_its_limits_and_options(stand_ins):
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    from serving.app import app_builder

    config = with_checkpoints(load_serve_config(), stand_ins)
    ServeDeploySchema.model_validate(config)
    assert isinstance(app_builder(the_app(config)["args"]), Application)


@pytest.mark.parametrize(("options", "message"), [
    ({"max_replicas": 4}, r"unknown key\(s\) \['max_replicas'\]; known: \['num_replicas', 'autoscaling_config'"),
    ({"autoscaling_config": {"max_replica": 4}}, r"autoscaling_config: unknown key\(s\) \['max_replica'\]"),
    ({"autoscaling_config": {"min_replicas": 3, "max_replicas": 1}},
     r"max_replicas \(1\) must be greater than or equal to min_replicas \(3\)"),
    ({"num_replicas": 2, "autoscaling_config": {"max_replicas": 4}},
     "num_replicas is not allowed when autoscaling_config is provided"),
    ({"ray_actor_options": {"num_cpu": 1}}, "'num_cpu' in ray_actor_options is not allowed"),
])
def test_deployment_options_fail_the_build_naming_the_problem(tiny_checkpoint, options, message):
    from serving.app import app_builder

    with pytest.raises(ConfigError, match=message):
        app_builder({"checkpoints": [str(tiny_checkpoint)], "deployment_options": options})


# ---------------------------------------------------------------- on Ray Serve


@dataclass(frozen=True)
class Deployed:
    config: dict
    """What was deployed: the shipped file with the tiny checkpoints."""
    details: dict
    """The dashboard's ``GET /api/serve/applications/`` once the app ran."""
    http: httpx.Client


@pytest.fixture(scope="module")
def deployed(ray_head, stand_ins, tmp_path_factory):
    from ray import serve
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    config = with_checkpoints(load_serve_config(), stand_ins)
    config["http_options"]["port"] = free_port()  # ignored if Serve already runs: its port is read back
    path = tmp_path_factory.mktemp("serve-config") / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    app_name = the_app(config)["name"]

    serve_was_running = bool(serve.status().proxies)
    serve_deploy(path, ray_head["dashboard"])
    try:
        wait_until_running(app_name)
        details = ServeSubmissionClient(ray_head["dashboard"]).get_serve_details()
        url = f"http://127.0.0.1:{details['http_options']['port']}"
        with httpx.Client(base_url=url, timeout=60) as http:
            yield Deployed(config=config, details=details, http=http)
    finally:
        serve.delete(app_name)
        # Serve keeps the HTTP port it started with; if this test started it, stop it
        # again (no app is left) so a later serve.start() gets the port it asks for.
        if not serve_was_running and not serve.status().applications:
            serve.shutdown()


def serve_deploy(config_path: Path, dashboard: str) -> None:
    """What a user types: ``serve deploy FILE --address DASHBOARD``."""
    serve_cli = Path(sys.executable).with_name("serve")
    done = subprocess.run([str(serve_cli), "deploy", str(config_path), "--address", dashboard],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr


def wait_until_running(app_name: str, timeout_s: float = 240) -> None:
    from ray import serve

    deadline = time.time() + timeout_s
    while True:
        app = serve.status().applications.get(app_name)
        if app is not None and app.status == "RUNNING":
            return
        if app is not None and app.status == "DEPLOY_FAILED":
            pytest.fail(f"{app_name} failed to deploy: {app.message}")
        if time.time() > deadline:
            pytest.fail(f"{app_name} not RUNNING after {timeout_s} s: {app}")
        time.sleep(1)


@pytest.mark.ray
def test_deployed_config_answers_every_route(deployed, tiny_checkpoint):
    from pipelines.apps.text_classify.predictor import TextClassifier
    from pipelines.checkpoint import load_inference

    http = deployed.http
    assert http.get("/healthz").json() == {"status": "ok"}
    models = http.get("/v1/models").json()["models"]
    assert [(m["name"], m["task"]) for m in models] == [("tiny_sentiment", "classify"),
                                                         ("tiny_translation", "generate")]

    classified = http.post("/v1/models/tiny_sentiment/classify", json={"inputs": TEXTS})
    assert classified.status_code == 200, classified.text
    want = TextClassifier(load_inference(tiny_checkpoint)).predict(TEXTS)
    for got, expected in zip(classified.json()["predictions"], want, strict=True):
        assert got["label"] == expected["label"]
        assert got["scores"] == pytest.approx(expected["scores"], abs=1e-5)

    generated = http.post("/v1/models/tiny_translation/generate",
                          json={"inputs": ["forty-two", "three hundred and five"], "beam_size": 2, "max_length": 8})
    assert generated.status_code == 200, generated.text
    outputs = generated.json()["outputs"]
    assert len(outputs) == 2 and all(isinstance(o["text"], str) and isinstance(o["score"], float) for o in outputs)


@pytest.mark.ray
def test_the_config_limits_reached_the_ingress(deployed):
    limits = the_app(deployed.config)["args"]["limits"]
    most = limits["max_inputs"]
    too_many = deployed.http.post("/v1/models/tiny_sentiment/classify", json={"inputs": ["ok"] * (most + 1)})
    assert too_many.status_code == 422
    assert too_many.json()["error"] == f"inputs: has {most + 1} items; the limit is {most}"
    too_wide = deployed.http.post("/v1/models/tiny_translation/generate",
                                  json={"inputs": ["five"], "beam_size": limits["max_beam_size"] + 1})
    assert too_wide.status_code == 422, too_wide.text
    assert "beam_size" in too_wide.json()["error"] and str(limits["max_beam_size"]) in too_wide.json()["error"]


@pytest.mark.ray
def test_autoscaling_options_reached_the_deployments(deployed):
    from ray import serve

    app = the_app(deployed.config)
    deployments = deployed.details["applications"][app["name"]]["deployments"]
    assert set(deployments) == {*MODEL_DEPLOYMENTS, "Ingress"}
    wanted = {name: app["args"]["deployment_options"]["autoscaling_config"] for name in MODEL_DEPLOYMENTS}
    wanted.update({entry["name"]: entry["autoscaling_config"] for entry in app["deployments"]})
    for name, autoscaling in wanted.items():
        got = deployments[name]["deployment_config"]["autoscaling_config"]
        assert {key: got[key] for key in autoscaling} == autoscaling, name
    statuses = serve.status().applications[app["name"]].deployments
    assert {name: status.status for name, status in statuses.items()} == dict.fromkeys(wanted, "HEALTHY")
