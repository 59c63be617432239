"""``rayseq generate NAME``: the command line of every built-in dataset generator.

Each application declares its generators (``App.generators``; ``rayseq generate --help``
lists them all): ``sentiment`` (text classification), ``translation``, ``digits``
(spoken digits), ``speech`` (speech-to-text), ``video`` (video classification and
captioning), ``digit-captions`` (image captioning), ``entities`` (tagging), ``chorales``
(music). Each prints a JSON summary naming the folder and what was written; a bad
argument is a :class:`~pipelines.errors.ConfigError`, one line on stderr.
"""

from __future__ import annotations

import argparse
from typing import Any

from pipelines import apps


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="kind", required=True)
    for name, generator in apps.generators().items():
        generator.add_arguments(kinds.add_parser(name, help=generator.help))


def generate_command(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``rayseq generate NAME``; the summary names the folder and what was written."""
    return apps.generators()[args.kind].command(args)
