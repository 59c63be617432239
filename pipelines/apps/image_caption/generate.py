"""The ``digit-captions`` dataset: canvases of 2-4 real handwritten digits captioned with
where each one is (``pipelines.media.image.digit_canvas``), as an image folder.

    rayseq generate digit-captions MNIST_FOLDER OUT --count N --seed S [--index-range LO-HI]

``--index-range`` keeps the source images whose index is in ``LO..HI``, so a training
and a held-out folder can be drawn from different handwriting: ``0-999`` to train,
``1000-1199`` (with another seed) to validate, as ``recipes/digit_captions.yaml`` does.

Not a recipe's ``data.generate``: it composes from a folder of real digits the recipe
does not hold, and training and validation need two source ranges; a recipe naming it
is refused with the two commands to run instead.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from pipelines.apps.base import DatasetGenerator
from pipelines.errors import ConfigError

NAME = "digit-captions"

_RANGE = re.compile(r"\s*(\d+)\s*-\s*(\d+)\s*")

_RUN_FIRST = (f"data.generate.name: {NAME} composes canvases from a folder of MNIST digits, so it is not "
              f"generated at training time: run `rayseq generate {NAME} MNIST_FOLDER ROOT/train --count 20000 "
              f"--seed 1 --index-range 0-999` and `rayseq generate {NAME} MNIST_FOLDER ROOT/valid --count 2000 "
              f"--seed 2 --index-range 1000-1199`, then train with data.root=ROOT and data.generate unset "
              f"(recipes/digit_captions.yaml)")


def parse_index_range(text: str | None) -> tuple[int, int] | None:
    """``"0-999"`` -> ``(0, 999)`` (inclusive); None stays None; anything else is a ConfigError."""
    if text is None:
        return None
    match = _RANGE.fullmatch(text)
    if match is None or int(match[1]) > int(match[2]):
        raise ConfigError(f"--index-range must be LO-HI with 0 <= LO <= HI, e.g. 0-999; got {text!r}")
    return int(match[1]), int(match[2])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mnist", type=Path, metavar="MNIST_FOLDER",
                        help="folder of <digit>_<index>.png, 28x28 grayscale (e.g. shared/data/mnist/train)")
    parser.add_argument("out_dir", type=Path, metavar="OUT", help="new (or empty) folder to write")
    parser.add_argument("--count", type=int, required=True, help="number of canvases")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--index-range", metavar="LO-HI",
                        help="use only source images with an index in LO..HI, e.g. 0-999 (default: all)")


def command(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.media.image.digit_canvas import write_digit_captions

    summary = write_digit_captions(args.mnist, args.out_dir, count=args.count, seed=args.seed,
                                   index_range=parse_index_range(args.index_range))
    return {"output": summary.pop("folder"), **summary}


def refuse(*_: Any) -> None:
    raise ConfigError(_RUN_FIRST)


DIGIT_CAPTIONS = DatasetGenerator(name=NAME, help="captioned canvases of 2-4 real handwritten digits (MNIST folder)",
                                  write=refuse, add_arguments=add_arguments, command=command, check=refuse)
