"""``rayseq compose CHECKPOINT``: sample music from a music checkpoint, as a MIDI file and
a piano-roll PNG.

    rayseq compose CHECKPOINT --out piece.mid [--primer FILE] [--primer-steps N]
                   [--steps 64] [--temperature 1.0] [--top-k 0] [--seed 0] [--roll piece.png]

The primer is the first ``--primer-steps`` chords of a piece (a chorale CSV or a MIDI
file, read as training data is); without ``--primer`` the music starts from nothing. The
same checkpoint, primer, options and seed give the same music (the compose route's too).
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path
from typing import Any

from pipelines.devices import add_device_argument, checked_device
from pipelines.errors import ConfigError, DataError


def add_compose_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a music model's inference checkpoint (<run>/checkpoint)")
    parser.add_argument("--out", type=Path, required=True, help="the MIDI file to write (primer, then sampled chords)")
    parser.add_argument("--primer", type=Path, help="a piece (.csv of 4 pitches a row, or .mid) to continue")
    parser.add_argument("--primer-steps", type=int, default=32,
                        help="chords of the primer to use, from its start (default 32: two bars)")
    parser.add_argument("--steps", type=int, default=64, help="chords to sample (16 a bar of 4/4; default 64)")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0: the most probable")
    parser.add_argument("--top-k", type=int, default=0, help="draw among the k most probable pitches (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--roll", type=Path, help="also draw the piece as a piano-roll PNG here")
    add_device_argument(parser)


def read_primer(path: Path, steps: int) -> list[list[int]]:
    """The first ``steps`` chords of the piece at ``path``; DataError naming what is wrong."""
    from pipelines.media.chorales import parse_piece

    if not path.is_file():
        raise DataError(f"--primer: file not found: {path}")
    piece = parse_piece(path.read_bytes(), str(path))
    if piece["error"]:
        raise DataError(f"--primer: {path}: {piece['error']}")
    return piece["chords"][:steps]


def compose_command(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.checkpoint import load_predictor
    from pipelines.media.chorales import piano_roll_png

    if args.steps < 1 or args.primer_steps < 0 or args.top_k < 0 or args.temperature < 0:
        raise ConfigError("--steps must be >= 1, and --primer-steps, --top-k and --temperature >= 0")
    predictor = load_predictor(args.checkpoint, device=checked_device(args.device))
    if predictor.loaded.app.name != "music":
        raise ConfigError(f"{args.checkpoint}: a {predictor.loaded.app.name} model; compose needs a music model")
    primer = read_primer(args.primer, args.primer_steps) if args.primer else []
    answer = predictor.predict([primer], steps=args.steps, temperature=args.temperature, top_k=args.top_k,
                               seed=args.seed)[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(base64.b64decode(answer["midi_base64"]))
    summary = {"midi": str(args.out), "primer_steps": answer["primer_steps"], "steps": len(answer["chords"]),
               "seed": args.seed}
    if args.roll:
        args.roll.parent.mkdir(parents=True, exist_ok=True)
        args.roll.write_bytes(piano_roll_png(primer + answer["chords"], primer_steps=len(primer),
                                             title=f"{args.checkpoint.parent.name}: seed {args.seed}, "
                                                   f"temperature {args.temperature:g}"))
        summary["roll"] = str(args.roll)
    return summary
