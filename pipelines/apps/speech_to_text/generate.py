"""The ``speech`` dataset: spoken digit strings joined from FSDD-style recordings
(``{digit}_{speaker}_{take}.wav``), with transcripts in a manifest."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

from pipelines.apps.base import DatasetGenerator
from pipelines.errors import ConfigError
from pipelines.media.audio.synthetic import audio_seconds, list_recordings, parse_takes, write_digit_utterances


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recordings", type=Path, help="folder of {digit}_{speaker}_{take}.wav|.flac")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--count", type=int, required=True, help="number of utterances")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--takes", help="recordings to use, e.g. 10-49 or 5,7,9-12 (default: all)")
    parser.add_argument("--min-digits", type=int, default=1)
    parser.add_argument("--max-digits", type=int, default=7)
    parser.add_argument("--snr-db", type=float, default=30.0, help="white noise this far below the signal")


def command(args: argparse.Namespace) -> dict[str, Any]:
    out = write_digit_utterances(args.recordings, args.out_dir, count=args.count, seed=args.seed,
                                 takes=args.takes, min_digits=args.min_digits, max_digits=args.max_digits,
                                 snr_db=args.snr_db)
    with open(out / "manifest.csv", newline="") as f:
        wavs = [out / row["path"] for row in csv.DictReader(f)]
    return {"output": str(out), "files": len(wavs), "seconds": round(audio_seconds(wavs), 2)}


def for_recipe(data, root: Path) -> None:
    """Training utterances from every take but ``valid_takes``, validation (``data.valid``)
    from those alone: validation audio is never heard in training."""
    gen = data.generate
    recordings = list_recordings(gen.recordings)
    held_out = parse_takes(gen.valid_takes)
    train_takes = ",".join(str(t) for t in sorted({r.take for r in recordings} - held_out))
    if not train_takes:
        raise ConfigError(f"data.generate.valid_takes={gen.valid_takes!r} leaves no take for training")
    write_digit_utterances(gen.recordings, root / data.train, count=gen.size, seed=gen.seed, takes=train_takes)
    if data.valid:
        write_digit_utterances(gen.recordings, root / data.valid, count=max(gen.size // 4, 1), seed=gen.seed + 1,
                               takes=gen.valid_takes)


def check(generate) -> None:
    if not generate.recordings:
        raise ConfigError("data.generate.recordings: the speech generator needs an FSDD-style recordings folder")


SPEECH = DatasetGenerator(name="speech", help="spoken digit strings from an FSDD-style recordings folder",
                          write=for_recipe, add_arguments=add_arguments, command=command, check=check)
