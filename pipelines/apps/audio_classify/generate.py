"""The ``digits`` dataset: synthetic FSDD-style recordings (``{digit}_s{speaker}_{take}.wav``,
formant-synthesized; not speech), for tests and demos."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipelines.apps.base import DatasetGenerator
from pipelines.media.audio.synthetic import audio_seconds, parse_takes, write_synthetic_recordings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--speakers", type=int, default=3)
    parser.add_argument("--takes", default="0-9", help="take numbers to write, e.g. 0-9")


def command(args: argparse.Namespace) -> dict[str, Any]:
    takes = sorted(parse_takes(args.takes))
    out = write_synthetic_recordings(args.out_dir, speakers=args.speakers, takes=takes)
    wavs = [out / f"{d}_s{s}_{t}.wav" for s in range(args.speakers) for d in range(10) for t in takes]
    return {"output": str(out), "files": len(wavs), "seconds": round(audio_seconds(wavs), 2)}


def for_recipe(data, root: Path) -> None:
    """Three speakers, ``data.generate.size`` takes each; ``data.audio.valid_takes`` carves validation."""
    write_synthetic_recordings(root / data.train, speakers=3, takes=range(data.generate.size))


DIGITS = DatasetGenerator(name="digits", help="synthetic FSDD-style recordings (not speech; for tests and demos)",
                          write=for_recipe, add_arguments=add_arguments, command=command)
