"""``rayseq generate KIND``: the command line of every built-in dataset generator.

    speech   spoken digit strings from FSDD-style recordings   (pipelines.audio_generate)
    digits   synthetic FSDD-style digit recordings             (pipelines.audio_generate)
    video    moving-shape clips with labels and captions       (pipelines.video_generate)
    sentiment, translation   text datasets                     (pipelines.generate)

Each prints a JSON summary naming the folder and what was written; a bad argument is a
:class:`~pipelines.errors.ConfigError`, one line on stderr.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

from pipelines.audio_generate import audio_seconds, parse_takes, write_digit_utterances, write_synthetic_recordings
from pipelines.errors import ConfigError


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="kind", required=True)
    speech = kinds.add_parser("speech", help="spoken digit strings from an FSDD-style recordings folder")
    speech.add_argument("recordings", type=Path, help="folder of {digit}_{speaker}_{take}.wav|.flac")
    speech.add_argument("out_dir", type=Path)
    speech.add_argument("--count", type=int, required=True, help="number of utterances")
    speech.add_argument("--seed", type=int, required=True)
    speech.add_argument("--takes", help="recordings to use, e.g. 10-49 or 5,7,9-12 (default: all)")
    speech.add_argument("--min-digits", type=int, default=1)
    speech.add_argument("--max-digits", type=int, default=7)
    speech.add_argument("--snr-db", type=float, default=30.0, help="white noise this far below the signal")

    digits = kinds.add_parser("digits", help="synthetic FSDD-style recordings (not speech; for tests and demos)")
    digits.add_argument("out_dir", type=Path)
    digits.add_argument("--speakers", type=int, default=3)
    digits.add_argument("--takes", default="0-9", help="take numbers to write, e.g. 0-9")

    for name, text in (("sentiment", "labeled-lines reviews"), ("translation", "English-German number sentences")):
        sub = kinds.add_parser(name, help=f"synthetic {text} (see pipelines/generate.py)")
        sub.add_argument("out_dir", type=Path)
        sub.add_argument("--size", type=int, default=4000, help="training examples; validation gets size // 4")
        sub.add_argument("--seed", type=int, default=0)

    video = kinds.add_parser("video", help="synthetic clips of a shape moving around a square "
                                           "(see pipelines/video_generate.py)")
    video.add_argument("out_dir", type=Path)
    video.add_argument("--count", type=int, required=True, help="number of clips")
    video.add_argument("--seed", type=int, required=True)
    video.add_argument("--size", type=int, default=64, help="frame width and height in pixels (even)")
    video.add_argument("--fps", type=int, default=10)
    video.add_argument("--images", action="store_true", help="write folders of PNG frames instead of MP4")


def generate_command(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``rayseq generate KIND``; the summary names the folder and what was written."""
    if args.kind == "speech":
        out = write_digit_utterances(args.recordings, args.out_dir, count=args.count, seed=args.seed,
                                     takes=args.takes, min_digits=args.min_digits, max_digits=args.max_digits,
                                     snr_db=args.snr_db)
        with open(out / "manifest.csv", newline="") as f:
            wavs = [out / row["path"] for row in csv.DictReader(f)]
        return {"output": str(out), "files": len(wavs), "seconds": round(audio_seconds(wavs), 2)}
    if args.kind == "digits":
        takes = sorted(parse_takes(args.takes))
        out = write_synthetic_recordings(args.out_dir, speakers=args.speakers, takes=takes)
        wavs = [out / f"{d}_s{s}_{t}.wav" for s in range(args.speakers) for d in range(10) for t in takes]
        return {"output": str(out), "files": len(wavs), "seconds": round(audio_seconds(wavs), 2)}
    if args.kind == "video":
        from pipelines.video_generate import video_command

        return video_command(args.out_dir, count=args.count, seed=args.seed, size=args.size, fps=args.fps,
                             images=args.images)
    return _generate_text(args.kind, args.out_dir, size=args.size, seed=args.seed)


def _generate_text(kind: str, out_dir: Path, *, size: int, seed: int) -> dict[str, Any]:
    """The text generators of :mod:`pipelines.generate`; their ``ValueError`` (size too
    large) becomes a :class:`ConfigError` so the CLI prints it as one line."""
    from pipelines.generate import GENERATORS

    if size < 1:
        raise ConfigError(f"size must be >= 1, got {size}")
    try:
        out = GENERATORS[kind](out_dir, size=size, seed=seed)
    except ValueError as err:
        raise ConfigError(f"{kind}: {err}") from err
    files = sorted(p.name for p in out.iterdir() if p.name.startswith(("train.", "valid.")))
    return {"output": str(out), "files": len(files)}
