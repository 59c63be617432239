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
