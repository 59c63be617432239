"""``rayseq sample CHECKPOINT --condition NAME``: texts from a conditional generator.

    rayseq sample CHECKPOINT --condition positive [--num-samples 5] [--temperature 0.8]
                  [--top-k 0] [--top-p 0.9] [--seed 0] [--max-length 48] [--min-length 0]
                  [--beam-size K]

Prints one text a line (to stderr, with its score), and the JSON answer as the last line
on stdout; the same checkpoint, condition, options and seed give the same texts (the
generate route's too). Options left out take the recipe's ``generation`` values.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipelines.devices import add_device_argument, checked_device
from pipelines.errors import ConfigError


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path,
                        help="a conditional generator's inference checkpoint (<run>/checkpoint)")
    parser.add_argument("--condition", required=True, help="what to write: one of the model's conditions")
    parser.add_argument("--num-samples", type=int, default=5)
    parser.add_argument("--temperature", type=float, help="0: the most probable token each step")
    parser.add_argument("--top-k", type=int, help="draw among the k most probable tokens (0: all)")
    parser.add_argument("--top-p", type=float, help="nucleus: the fewest tokens whose probability reaches p")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-length", type=int, help="most tokens a text has")
    parser.add_argument("--min-length", type=int, help="fewest tokens a text has")
    parser.add_argument("--beam-size", type=int, help="search instead: the beam's num-samples most probable texts")
    add_device_argument(parser)


def sample_command(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.checkpoint import load_predictor
    from pipelines.config import GenerationConfig

    predictor = load_predictor(args.checkpoint, device=checked_device(args.device))
    if predictor.loaded.app.name != "text_generate":
        raise ConfigError(f"{args.checkpoint}: a {predictor.loaded.app.name} model; sample needs a conditional "
                          "generator (app text_generate)")
    if args.num_samples < 1 or args.seed < 0 or (args.beam_size is not None and args.beam_size < 1):
        raise ConfigError(f"--num-samples and --beam-size must be >= 1 and --seed >= 0, got {args.num_samples}, "
                          f"{args.beam_size}, {args.seed}")
    defaults = predictor.generation
    GenerationConfig(  # the options checked as a recipe's generation section would be
        temperature=defaults.temperature if args.temperature is None else args.temperature,
        top_k=defaults.top_k if args.top_k is None else args.top_k,
        top_p=defaults.top_p if args.top_p is None else args.top_p,
        max_length=defaults.max_length if args.max_length is None else args.max_length,
        min_length=defaults.min_length if args.min_length is None else args.min_length)
    rows = predictor.rows([args.condition])
    answer = predictor.run(rows, num_samples=args.num_samples, temperature=args.temperature, top_k=args.top_k,
                           top_p=args.top_p, seed=args.seed, max_length=args.max_length,
                           min_length=args.min_length, beam_size=args.beam_size)[0]
    for output in answer["outputs"]:
        print(f"{output['score']:8.3f}  {output['text']}", file=sys.stderr, flush=True)
    return {"condition": args.condition, "seed": args.seed, **answer}
