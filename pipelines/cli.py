"""``rayseq``: train, evaluate and serve recurrent sequence models on Ray.

    rayseq train RECIPE.yaml [--set KEY=VALUE ...] [--output DIR]
    rayseq eval CHECKPOINT --data PATH [--format FORMAT] [--set KEY=VALUE ...] [--predictions FILE] [--device cuda]
    rayseq serve CHECKPOINT [CHECKPOINT ...] [--host 127.0.0.1] [--port 8000] [--device cuda]
    rayseq compose CHECKPOINT --out PIECE.mid [--primer FILE] [--steps 64] [--seed 0] [--roll PIECE.png]
    rayseq synthesize CHECKPOINT "four one seven" --speaker theo --out SPEECH.wav [--seed 0]
    rayseq sample CHECKPOINT --condition positive [--num-samples 5] [--temperature 0.8] [--top-p 0.9] [--seed 0]
    rayseq generate speech RECORDINGS OUT_DIR --count N --seed S [--takes 10-49]
                           [--min-digits 1] [--max-digits 7] [--snr-db 30]
    rayseq generate digits OUT_DIR [--speakers 3] [--takes 0-9]
    rayseq generate video OUT_DIR --count N --seed S [--size 64] [--fps 10] [--images]
    rayseq generate digit-captions MNIST_FOLDER OUT_DIR --count N --seed S [--index-range 0-999]
    rayseq generate {sentiment,translation} OUT_DIR [--size N] [--seed S]
"""

from __future__ import annotations

import argparse
import sys

from pipelines.errors import run_and_report


def build_parser() -> argparse.ArgumentParser:
    from pipelines.apps.music.compose import add_compose_arguments
    from pipelines.apps.speech_synthesis.synthesize import add_synthesize_arguments
    from pipelines.apps.text_generate.sample import add_sample_arguments
    from pipelines.console import add_verbose_argument
    from pipelines.evaluate import add_eval_arguments
    from pipelines.generate_cli import add_generate_arguments
    from pipelines.train import add_train_arguments
    from serving.cli import add_serve_arguments

    parser = argparse.ArgumentParser(prog="rayseq", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_arguments(commands.add_parser("train", help="train a recipe"))
    add_eval_arguments(commands.add_parser("eval", help="score a checkpoint on a dataset"))
    add_serve_arguments(commands.add_parser("serve", help="serve checkpoints over HTTP with Ray Serve"))
    add_generate_arguments(commands.add_parser("generate", help="write a synthetic or derived dataset"))
    add_compose_arguments(commands.add_parser("compose", help="sample music from a music checkpoint (MIDI, PNG)"))
    add_synthesize_arguments(commands.add_parser("synthesize",
                                                 help="say words with a speech synthesis checkpoint (WAV)"))
    add_sample_arguments(commands.add_parser("sample", help="write texts with a conditional generator"))
    for command in commands.choices.values():
        add_verbose_argument(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipelines.console import set_verbose

    args = build_parser().parse_args(argv)
    set_verbose(args.verbose)
    if args.command == "train":
        from pipelines.train import train_command

        return run_and_report(lambda: train_command(args))
    if args.command == "eval":
        from pipelines.evaluate import eval_command

        return run_and_report(lambda: eval_command(args))
    if args.command == "compose":
        from pipelines.apps.music.compose import compose_command

        return run_and_report(lambda: compose_command(args))
    if args.command == "synthesize":
        from pipelines.apps.speech_synthesis.synthesize import synthesize_command

        return run_and_report(lambda: synthesize_command(args))
    if args.command == "sample":
        from pipelines.apps.text_generate.sample import sample_command

        return run_and_report(lambda: sample_command(args))
    if args.command == "generate":
        from pipelines.generate_cli import generate_command

        return run_and_report(lambda: generate_command(args))
    from serving.cli import serve_command

    return run_and_report(lambda: serve_command(args))


if __name__ == "__main__":
    sys.exit(main())
