"""cluster.yaml is a valid Ray autoscaler config (Ray's own JSON schema) and keeps the
properties rayseq relies on."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import ray
import yaml

from conftest import ROOT


def load_cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_validates_against_ray_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(load_cluster(), schema)


def test_gpu_workers_have_one_gpu_each_and_scale_to_zero():
    config = load_cluster()
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    gpu = [t for t in types.values() if t["resources"].get("GPU")]
    assert gpu and all(t["resources"]["GPU"] == 1 and t["min_workers"] == 0 for t in gpu)
    assert config["idle_timeout_minutes"] > 0
    assert sum(t.get("max_workers", 0) for t in types.values()) >= 2


def test_setup_installs_the_pinned_dependencies_and_dashboard_stays_local():
    config = load_cluster()
    setup = " ".join(config["setup_commands"])
    assert "constraints.txt" in setup and "torch==2.13.0" in setup
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head


def test_gpu_serving_nodes_are_labelled_and_fit_under_the_cluster_cap():
    config = load_cluster()
    types = config["available_node_types"]
    serving = types["gpu_serve"]["resources"]
    assert serving["GPU"] == 1 and serving["gpu_serve"] == serving["GPU"]  # the label counts GPUs
    assert not any(t["resources"].get("gpu_serve") for name, t in types.items() if name != "gpu_serve")
    assert sum(t.get("max_workers", 0) for t in types.values()) <= config["max_workers"]


def test_the_documented_serve_options_put_gpu_replicas_on_the_serving_nodes():
    """cluster.yaml's comment says how a Serve config keeps model replicas on gpu_serve
    nodes: those options, built, reserve the GPU share and the label together."""
    from serving.app import app_builder

    (line,) = [line for line in (ROOT / "cluster.yaml").read_text().splitlines()
               if line.lstrip("# ").startswith("deployment_options:")]
    options = yaml.safe_load(line.lstrip("# "))["deployment_options"]
    checkpoint = ROOT / "tests" / "fixtures" / "legacy" / "text_classify" / "checkpoint"
    app = app_builder({"checkpoints": [str(checkpoint)], "separate_models": True, "device": "cuda",
                       "gpus_per_replica": 0.5, "deployment_options": options})
    (_, model), = app._bound_deployment.init_args[0]
    actor = model._bound_deployment.ray_actor_options
    assert actor["num_gpus"] == 0.5 and actor["resources"] == {"gpu_serve": 0.5}
    assert set(actor["resources"]) <= set(load_cluster()["available_node_types"]["gpu_serve"]["resources"])
