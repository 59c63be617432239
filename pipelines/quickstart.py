"""The quickstart, end to end on one machine (``bash scripts/quickstart.sh``):

1. start a local Ray instance,
2. generate the demo sentiment data and train ``recipes/demo_sentiment.yaml``,
3. evaluate the checkpoint on the validation file (``rayseq eval``'s code),
4. serve it with Ray Serve, send a real HTTP request, print the answer,
5. shut everything down.

The last stdout line is a JSON summary of all of it.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

from pipelines.config import load_recipe

EXAMPLES = [
    "the acting was not dull",
    "honestly , the plot seemed brilliant , but the ending was awful",
    "the cast was truly charming from start to finish",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(recipe_path: str, output: Path, overrides: list[str]) -> dict:
    import httpx
    import ray
    from ray import serve

    from pipelines.evaluate import evaluate_checkpoint
    from pipelines.runtime import init_ray
    from pipelines.train import run_training
    from serving.app import APP_NAME, build_app

    recipe = load_recipe(recipe_path, overrides)
    print("== 1/4 local Ray", flush=True)
    init_ray()
    print(f"== 2/4 train {recipe_path} -> {output}", flush=True)
    trained = run_training(recipe, output)
    print(json.dumps(trained), flush=True)
    checkpoint = Path(trained["checkpoint"])

    print("== 3/4 evaluate on the validation file", flush=True)
    evaluated = evaluate_checkpoint(checkpoint, Path(recipe.data.root) / recipe.data.valid)
    print(json.dumps(evaluated), flush=True)

    port = _free_port()
    print(f"== 4/4 serve on http://127.0.0.1:{port}", flush=True)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app([checkpoint]), name=APP_NAME, route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        models = httpx.get(f"{base}/v1/models", timeout=30).json()["models"]
        name = models[0]["name"]
        started = time.perf_counter()
        response = httpx.post(f"{base}/v1/models/{name}/classify", json={"inputs": EXAMPLES}, timeout=60)
        latency_ms = (time.perf_counter() - started) * 1000
        response.raise_for_status()
        print(f"POST {base}/v1/models/{name}/classify  ({latency_ms:.0f} ms)")
        for text, prediction in zip(EXAMPLES, response.json()["predictions"]):
            print(f"  {prediction['label']:>8} {prediction['score']:.3f}  {text}")
    finally:
        serve.shutdown()
        ray.shutdown()
    return {
        "train_loss": trained["train_loss"],
        "val_accuracy": trained.get("val_accuracy"),
        "eval_accuracy": evaluated["accuracy"],
        "examples": evaluated["examples"],
        "tokens_per_s": trained["tokens_per_s"],
        "padding_fraction": trained["padding_fraction"],
        "served_predictions": [p["label"] for p in response.json()["predictions"]],
        "checkpoint": str(checkpoint),
    }


def main(argv: list[str] | None = None) -> int:
    from pipelines.cli import run_and_report

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/demo_sentiment.yaml")
    parser.add_argument("--output", type=Path, default=Path("runs") / f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    return run_and_report(lambda: run(args.recipe, args.output, args.overrides))


if __name__ == "__main__":
    sys.exit(main())
