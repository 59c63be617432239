"""Declaring an application's built-in datasets (``DatasetGenerator``) without repeating
the command-line plumbing: text datasets take ``OUT_DIR [--size N] [--seed S]`` and
write ``size`` training and ``size // 4`` validation examples."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.apps.base import DatasetGenerator
from pipelines.errors import ConfigError


def text_dataset(name: str, help: str, write: Callable[..., Path],
                 check: Callable[[Any], None] = lambda generate: None, *, default_size: int = 4000) -> DatasetGenerator:
    """A generator ``write(out_dir, *, size, seed) -> out_dir`` of ``train.*`` and ``valid.*``
    files (or ``train/`` and ``valid/`` folders of them); its ``ValueError`` (size too
    large) becomes a one-line ConfigError."""

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("out_dir", type=Path)
        parser.add_argument("--size", type=int, default=default_size,
                            help="training examples; validation gets size // 4")
        parser.add_argument("--seed", type=int, default=0)

    def command(args: argparse.Namespace) -> dict[str, Any]:
        if args.size < 1:
            raise ConfigError(f"size must be >= 1, got {args.size}")
        try:
            out = write(args.out_dir, size=args.size, seed=args.seed)
        except ValueError as err:
            raise ConfigError(f"{name}: {err}") from err
        files = [p for p in out.rglob("*") if p.is_file()
                 and p.relative_to(out).parts[0].startswith(("train", "valid"))]
        return {"output": str(out), "files": len(files)}

    def for_recipe(data, root: Path) -> None:
        write(root, size=data.generate.size, seed=data.generate.seed)

    return DatasetGenerator(name=name, help=help, write=for_recipe, add_arguments=add_arguments, command=command,
                            check=check)
