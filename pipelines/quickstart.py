"""The quickstart, end to end on one machine (``bash scripts/quickstart.sh``):

1. start a local Ray instance,
2. generate the demo data and train both embedded defaults: ``recipes/demo_sentiment.yaml``
   (seq2vec: review -> sentiment) and ``recipes/demo_translation.yaml`` (seq2seq: English
   sentences with numbers in words -> German, attention + beam search),
3. evaluate each checkpoint on its validation split (``rayseq eval``'s code: accuracy;
   BLEU, chrF and exact match),
4. serve both from one Ray Serve application, send real HTTP requests to the classify and
   generate routes, print the answers,
5. shut everything down.

The last stdout line is a JSON summary of all of it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pipelines.config import load_recipe
from pipelines.runtime import free_port

RECIPES = ("recipes/demo_sentiment.yaml", "recipes/demo_translation.yaml")
EXAMPLES = {
    "classify": [
        "the acting was not dull",
        "honestly , the plot seemed brilliant , but the ending was awful",
        "the cast was truly charming from start to finish",
    ],
    "generate": ["We have forty-two cats.", "She sells three thousand, nine hundred and seventy-one books.",
                 "They see eight hundred and sixteen birds."],
}


def _valid_path(recipe) -> Path:
    return Path(recipe.data.root) / recipe.data.valid


def run(recipe_paths: list[str], output: Path, overrides: list[str]) -> dict:
    import httpx
    import ray

    from pipelines import console
    from pipelines.runtime import init_ray, use_serve_throughput_mode

    use_serve_throughput_mode()  # before ray.serve is imported: what `rayseq serve` runs
    from ray import serve

    from pipelines.evaluate import evaluate_checkpoint
    from pipelines.train import run_training
    from serving.app import APP_NAME, build_app

    recipes = [(path, load_recipe(path, overrides)) for path in recipe_paths]
    print("== 1/4 local Ray", flush=True)
    init_ray()
    summary: dict = {}
    checkpoints = []
    for path, recipe in recipes:
        print(f"== 2/4 train {path} -> {output / recipe.name}", flush=True)
        trained = run_training(recipe, output / recipe.name)
        print(json.dumps(trained), flush=True)
        checkpoints.append(Path(trained["checkpoint"]))
        print(f"== 3/4 evaluate {recipe.name} on its validation split", flush=True)
        evaluated = evaluate_checkpoint(checkpoints[-1], _valid_path(recipe),
                                        fmt=recipe.data.format if recipe.data.format == "parallel" else "auto")
        print(json.dumps(evaluated), flush=True)
        summary[recipe.name] = {
            "train_loss": trained["train_loss"],
            **{k: v for k, v in trained.items() if k.startswith("val_") and k not in ("val_tokens", "val_examples")},
            **{f"eval_{k}": v for k, v in evaluated.items() if k in ("accuracy", "bleu", "chrf", "exact_match")},
            "examples": evaluated["examples"],
            "tokens_per_s": trained["tokens_per_s"],
            "padding_fraction": trained["padding_fraction"],
            "train_wall_s": trained["wall_s"],
        }

    port = free_port()
    print(f"== 4/4 serve both models on http://127.0.0.1:{port}", flush=True)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=console.serve_system_logging())
        serve.run(build_app(checkpoints), name=APP_NAME, route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        for model in httpx.get(f"{base}/v1/models", timeout=30).json()["models"]:
            route, inputs = model["task"], EXAMPLES[model["task"]]
            started = time.perf_counter()
            response = httpx.post(f"{base}/v1/models/{model['name']}/{route}", json={"inputs": inputs}, timeout=120)
            latency_ms = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            print(f"POST {base}/v1/models/{model['name']}/{route}  ({latency_ms:.0f} ms)")
            if route == "classify":
                answers = response.json()["predictions"]
                for text, prediction in zip(inputs, answers):
                    print(f"  {prediction['label']:>8} {prediction['score']:.3f}  {text}")
                summary[model["name"]]["served"] = [p["label"] for p in answers]
            else:
                answers = response.json()["outputs"]
                for text, out in zip(inputs, answers):
                    print(f"  {text}  ->  {out['text']}  ({out['score']:.3f})")
                summary[model["name"]]["served"] = [o["text"] for o in answers]
    finally:
        serve.shutdown()
        ray.shutdown()
    return summary


def main(argv: list[str] | None = None) -> int:
    from pipelines.console import add_verbose_argument, set_verbose
    from pipelines.errors import run_and_report

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", dest="recipes", action="append", default=None,
                        help=f"recipe(s) to run (default: {' and '.join(RECIPES)})")
    parser.add_argument("--output", type=Path, default=Path("runs") / f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of every recipe run")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    set_verbose(args.verbose)
    return run_and_report(lambda: run(args.recipes or list(RECIPES), args.output, args.overrides))


if __name__ == "__main__":
    sys.exit(main())
