"""deploy/: the Dockerfile, the KubeRay manifests and the Serve config agree with each
other and with this checkout (no Ray cluster, no Kubernetes needed).

What a cluster would only find out at apply time: a Ray version or image that differs
between pods, a GPU count that does not fit the training run, a recipe or ``--set`` key
that does not exist, a RayService serving something else than deploy/serve_config.yaml
or than what the RayJobs wrote.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
import sys
from pathlib import PurePosixPath

import ray
import yaml

from conftest import ROOT

DEPLOY = ROOT / "deploy"
KUBERAY = DEPLOY / "kuberay"
GPU = "nvidia.com/gpu"


def manifests() -> list[dict]:
    """Every Kubernetes object in deploy/kuberay/*.yaml."""
    return [doc for path in sorted(KUBERAY.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(kind: str) -> list[dict]:
    return [doc for doc in manifests() if doc["kind"] == kind]


def the_one(kind: str) -> dict:
    (found,) = of_kind(kind)
    return found


def cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec" if doc["kind"] == "RayJob" else "rayClusterConfig"]


def pod_specs(node) -> list[dict]:
    """Every pod spec (a mapping with ``containers``) anywhere inside ``node``."""
    if isinstance(node, list):
        return [spec for item in node for spec in pod_specs(item)]
    if not isinstance(node, dict):
        return []
    own = [node] if isinstance(node.get("containers"), list) else []
    return own + [spec for value in node.values() for spec in pod_specs(value)]


def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def declared_image() -> str:
    (image,) = re.findall(r"^# image: (\S+)$", dockerfile(), flags=re.MULTILINE)
    return image


def pinned(package: str) -> str:
    (version,) = re.findall(rf"^{package}==(\S+)$", (ROOT / "constraints.txt").read_text(), flags=re.MULTILINE)
    return version


def train_command(rayjob: dict) -> tuple[str, argparse.Namespace]:
    """``(module, parsed arguments)`` of the RayJob's ``python -m MODULE ...``. KubeRay
    pastes the entrypoint into a shell command, so anything after one command (``&&``,
    ``;``) would run in its submitter pod, not on Ray: here it is an unknown argument."""
    from pipelines.train import add_train_arguments

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    python, dash_m, module, *args = shlex.split(rayjob["spec"]["entrypoint"])
    assert (python, dash_m) == ("python", "-m"), rayjob["spec"]["entrypoint"]
    parsed, unknown = parser.parse_known_args(args)
    assert not unknown, f"{rayjob['metadata']['name']}: not arguments of {module}: {unknown}"
    return module, parsed


def train_commands() -> list[tuple[str, argparse.Namespace]]:
    """What every RayJob runs, in file order."""
    return [train_command(rayjob) for rayjob in of_kind("RayJob")]


def load_serve_config() -> dict:
    return yaml.safe_load((DEPLOY / "serve_config.yaml").read_text())


def rayservice_serve_config() -> dict:
    return yaml.safe_load(the_one("RayService")["spec"]["serveConfigV2"])


def without_checkpoints_or_device(applications: list[dict]) -> list[dict]:
    """The applications with each checkpoint path replaced by a placeholder and the
    replicas' device left out (the Serve config runs anywhere, the RayService on GPUs)."""
    stripped = yaml.safe_load(yaml.safe_dump(applications))
    for app in stripped:
        app["args"]["checkpoints"] = ["CHECKPOINT"] * len(app["args"]["checkpoints"])
        for key in ("device", "gpus_per_replica"):
            app["args"].pop(key, None)
    return stripped


def placement(args: dict):
    from serving.placement import ReplicaDevice

    return ReplicaDevice(args.get("device", "cpu"), args.get("gpus_per_replica"))


def limit(container: dict, resource: str) -> float:
    return float(container["resources"]["limits"].get(resource, 0))


# ---------------------------------------------------------------- image


def test_manifests_are_kuberay_v1_for_the_installed_ray():
    docs = of_kind("RayJob") + of_kind("RayService")
    assert {doc["kind"] for doc in docs} == {"RayJob", "RayService"}
    for doc in docs:
        assert doc["apiVersion"] == "ray.io/v1", doc["metadata"]["name"]
        assert cluster_spec(doc)["rayVersion"] == ray.__version__, doc["metadata"]["name"]


def test_dockerfile_builds_on_the_matching_ray_image_with_the_pinned_packages():
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    (base,) = re.findall(r"^ARG RAY_IMAGE=(\S+)$", dockerfile(), flags=re.MULTILINE)
    assert base.startswith(f"rayproject/ray:{ray.__version__}-{python}-"), base
    assert re.search(rf"\btorch=={re.escape(pinned('torch'))}\b", dockerfile())
    assert "pip install --no-cache-dir -c constraints.txt ." in dockerfile()
    # The RayJob names its recipes relative to the working directory Ray starts in.
    assert re.search(r"^COPY (--\S+ )*recipes recipes$", dockerfile(), flags=re.MULTILINE)


def test_every_pod_runs_the_image_the_dockerfile_builds():
    image = declared_image()
    specs = pod_specs(manifests())
    assert len(specs) >= 7  # 2 RayJobs' heads and workers, the RayService's, the file pod
    assert {container["image"] for spec in specs for container in spec["containers"]} == {image}


# ---------------------------------------------------------------- training


def test_rayjobs_run_existing_modules_on_existing_recipes_with_known_keys():
    from pipelines.config import load_recipe

    commands = train_commands()
    assert commands
    for module, args in commands:
        assert importlib.util.find_spec(module) is not None, module
        assert PurePosixPath(args.recipe).parts[0] == "recipes", args.recipe
        assert (ROOT / args.recipe).is_file(), args.recipe
        load_recipe(ROOT / args.recipe, args.overrides)  # ConfigError names an unknown key


def test_gpu_workers_have_one_gpu_each_and_each_run_fits_its_cluster():
    from pipelines.config import load_recipe

    recipes = []
    for rayjob in of_kind("RayJob"):
        spec = cluster_spec(rayjob)
        head = spec["headGroupSpec"]["template"]["spec"]["containers"]
        assert all(GPU not in c.get("resources", {}).get("limits", {}) for c in head)
        gpu_workers = 0
        for group in spec["workerGroupSpecs"]:
            (container,) = group["template"]["spec"]["containers"]
            resources = container["resources"]
            assert int(resources["limits"][GPU]) == 1 and int(resources["requests"][GPU]) == 1, group["groupName"]
            assert group["minReplicas"] == group["replicas"] == group["maxReplicas"], "a run needs all its workers"
            gpu_workers += group["replicas"]
        _, args = train_command(rayjob)
        recipe = load_recipe(ROOT / args.recipe, args.overrides)
        assert recipe.parallel.use_gpu, recipe.name
        assert recipe.parallel.world_size == gpu_workers, (
            f"{recipe.name}: dp * pp = {recipe.parallel.world_size} workers, {gpu_workers} GPUs")
        recipes.append(recipe)
    assert any(recipe.parallel.pp >= 2 for recipe in recipes), "one run should be pipeline-parallel"


# ---------------------------------------------------------------- serving


def test_serve_config_validates_against_serve_schema():
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(load_serve_config())
    ServeDeploySchema.model_validate(rayservice_serve_config())


def test_rayservice_serves_the_serve_config_application():
    service = rayservice_serve_config()
    assert set(service) == {"applications"}, "leave http_options to Serve's default, 0.0.0.0:8000"
    assert (without_checkpoints_or_device(service["applications"])
            == without_checkpoints_or_device(load_serve_config()["applications"]))


def test_rayservice_serves_what_the_rayjobs_train_from_the_same_volume():
    (app,) = rayservice_serve_config()["applications"]
    outputs = [str(args.output) for _, args in train_commands()]
    assert app["args"]["checkpoints"] == [f"{output}/checkpoint" for output in outputs]
    claim = the_one("PersistentVolumeClaim")
    assert "ReadWriteMany" in claim["spec"]["accessModes"]  # every node reads data and writes checkpoints
    for doc in of_kind("RayJob") + of_kind("RayService"):
        for spec in pod_specs(doc):
            claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]}
            (mount,) = [m for c in spec["containers"] for m in c["volumeMounts"]
                        if claims.get(m["name"]) == claim["metadata"]["name"]]
            assert all(output.startswith(mount["mountPath"] + "/") for output in outputs), doc["metadata"]["name"]


def test_rayservice_workers_hold_the_most_replicas():
    """Serve would keep replicas pending that no worker pod can hold: model replicas
    that reserve GPUs fit only on GPU pods, with their CPUs."""
    from serving.app import Ingress
    from serving.deployments import ModelServer

    (app,) = rayservice_serve_config()["applications"]
    options = app["args"]["deployment_options"]
    default_cpus = ModelServer.ray_actor_options["num_cpus"]  # every checkpoint's model deployment
    model_cpus = options.get("ray_actor_options", {}).get("num_cpus", default_cpus)
    model_gpus = placement(app["args"]).num_gpus
    most_models = len(app["args"]["checkpoints"]) * options["autoscaling_config"]["max_replicas"]
    (ingress,) = [d for d in app["deployments"] if d["name"] == "Ingress"]
    ingress_cpus = ingress["autoscaling_config"]["max_replicas"] * Ingress.ray_actor_options["num_cpus"]
    spec = cluster_spec(the_one("RayService"))
    pods = [(group["maxReplicas"], container) for group in spec["workerGroupSpecs"]
            for container in group["template"]["spec"]["containers"]]
    capacity = sum(n * limit(c, "cpu") for n, c in pods)
    assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0"
    assert most_models * model_cpus + ingress_cpus <= capacity, f"replicas need more CPUs than the pods' {capacity}"
    if model_gpus:
        gpu_pods = [(n, c) for n, c in pods if limit(c, GPU)]
        gpus = sum(n * limit(c, GPU) for n, c in gpu_pods)
        assert most_models * model_gpus <= gpus, f"{most_models} model replicas need {most_models * model_gpus} GPUs"
        for _, c in gpu_pods:  # the replicas a pod's GPUs admit must find their CPUs there too
            assert limit(c, GPU) // model_gpus * model_cpus <= limit(c, "cpu")


def test_rayservice_model_replicas_reserve_gpus_on_gpu_pods():
    """Built as the cluster builds it (the two checkpoints swapped for local stand-ins of
    the same applications): every model deployment asks Ray for its GPU share, the
    ingress for none, and the GPU pods offer GPUs as the training pods do."""
    from serving.app import app_builder

    (app,) = rayservice_serve_config()["applications"]
    share = placement(app["args"]).num_gpus
    assert share > 0, "the RayService serves on GPUs"
    legacy = ROOT / "tests" / "fixtures" / "legacy"
    args = {**app["args"], "checkpoints": [str(legacy / "text_classify" / "checkpoint"),
                                           str(legacy / "translate" / "checkpoint")]}
    ingress = app_builder(args)._bound_deployment
    assert "num_gpus" not in ingress.ray_actor_options
    models = [model._bound_deployment for _, model in ingress.init_args[0]]
    assert len(models) == 2
    for model in models:
        assert model.ray_actor_options["num_gpus"] == share and model.init_args[3] == "cuda", model.name
    spec = cluster_spec(the_one("RayService"))
    head = spec["headGroupSpec"]["template"]["spec"]["containers"]
    assert all(GPU not in c.get("resources", {}).get("limits", {}) for c in head)
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if any(limit(c, GPU) for c in g["template"]["spec"]["containers"])]
    assert [g["groupName"] for g in gpu_groups] == ["gpu-serve"]
    for group in gpu_groups:
        (container,) = group["template"]["spec"]["containers"]
        assert container["resources"]["limits"][GPU] == container["resources"]["requests"][GPU] == 1
        assert group["minReplicas"] >= 1, "a model replica is always up"
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in group["template"]["spec"]["tolerations"]
