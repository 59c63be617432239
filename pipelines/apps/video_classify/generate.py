"""The ``video`` dataset: synthetic clips of a shape moving around a square, with a label
(its path) and a caption each (``pipelines.media.video.synthetic``); the video
classifier and the captioner both train on it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipelines.apps.base import DatasetGenerator
from pipelines.media.video.synthetic import video_command, write_moving_shapes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--count", type=int, required=True, help="number of clips")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--size", type=int, default=64, help="frame width and height in pixels (even)")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--images", action="store_true", help="write folders of PNG frames instead of MP4")


def command(args: argparse.Namespace) -> dict[str, Any]:
    return video_command(args.out_dir, count=args.count, seed=args.seed, size=args.size, fps=args.fps,
                         images=args.images)


def for_recipe(data, root: Path) -> None:
    """Validation from the next seed, so never seen in training."""
    gen = data.generate
    if data.valid:
        write_moving_shapes(root / data.valid, count=max(gen.size // 4, 1), seed=gen.seed + 1)
    write_moving_shapes(root / data.train, count=gen.size, seed=gen.seed)


VIDEO = DatasetGenerator(name="video", help="synthetic clips of a shape moving around a square "
                                            "(see pipelines/media/video/synthetic.py)",
                         write=for_recipe, add_arguments=add_arguments, command=command)
