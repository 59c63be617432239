"""Captioned canvases of 2-4 real handwritten MNIST digits whose captions need the layout.

Source: a folder of MNIST-style PNGs named ``<digit>_<index>.png`` (digit 0-9, index an
integer; 28x28 8-bit grayscale, white on black), e.g. ``/work/shared/data/mnist/train``.
Every entry of the folder must parse and every decoded file must be a 28x28 ``L`` image,
else :class:`~pipelines.errors.DataError` naming the file: a stray file is a mistake to
report, not to skip. ``index_range=(lo, hi)`` (inclusive) keeps only files with an index
in range, so training and held-out canvases come from *different* images of the same
folder (e.g. ``(0, 999)`` and ``(1000, 1199)``); only kept files are decoded. Every digit
needs at least one kept file (else DataError naming the digit), so any caption can occur.

Canvas: 64x64 grayscale, black, a 2x2 grid of 32x32 cells numbered in reading order
(0 top left, 1 top right, 2 bottom left, 3 bottom right). Each canvas draws, uniformly:
k in {2, 3, 4}; k distinct cells; per cell a digit class 0-9 (repeats allowed), an
image of that class, and an x and y offset of 0..4 px, so the 28x28 digit stays inside
its cell. Digits are pasted with max() blending (cells never overlap, so this is a plain
paste, but strokes would never be erased if they did).

Caption grammar (words separated by single spaces; "," is a word)::

    caption := item ( " , " item )*          1..4 items (2..4 here), in cell order
    item    := DIGIT ROW COLUMN
    DIGIT   := zero | one | two | three | four | five | six | seven | eight | nine
    ROW     := top | bottom
    COLUMN  := left | right

e.g. ``seven top left , two bottom right``. Each item names where its digit is, so two
canvases with the same digits in a different layout get different captions by
construction: a captioner must read the layout, not just the set of digits.

:func:`write_digit_captions` writes ``out/images/00000.png``... (64x64 grayscale PNG) and
``out/manifest.csv``::

    path,caption
    images/00000.png,"seven top left , two bottom right"

(CSV-quoted as soon as it has two or more items, since "," is one of its words).
Files are sorted by name and all draws come from one ``random.Random(seed)``, so the
same source files, ``count``, ``seed`` and ``index_range`` give the same bytes.
"""

from __future__ import annotations

import csv
import random
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipelines.errors import ConfigError, DataError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ROWS = ("top", "bottom")
COLUMNS = ("left", "right")

CANVAS = 64
"""Canvas side in pixels: a 2x2 grid of CELL x CELL cells."""
CELL = 32
DIGIT = 28
"""Side of a source digit image; CELL - DIGIT is the largest offset in a cell."""
MAX_OFFSET = CELL - DIGIT
DIGITS_PER_CANVAS = (2, 3, 4)

_NAME = re.compile(r"([0-9])_([0-9]+)\.png")

Layout = list[tuple[int, int]]
"""``(cell, digit)`` pairs; cell 0-3 in reading order (row = cell // 2, column = cell % 2)."""


class DigitImages(Mapping[int, tuple[np.ndarray, ...]]):
    """The digit images of an MNIST-style folder: ``images[digit]`` is a tuple of 28x28
    uint8 arrays, in file name order; ``files`` are the kept paths, sorted by name."""

    def __init__(self, folder: Path, index_range: tuple[int, int] | None = None) -> None:
        folder = Path(folder)
        self.folder = folder
        self.index_range = _check_range(index_range)
        if not folder.is_dir():
            raise DataError(f"{folder}: no such folder of digit images")
        kept: list[tuple[int, Path]] = []
        for path in sorted(folder.iterdir(), key=lambda p: p.name):
            match = _NAME.fullmatch(path.name)
            if match is None or not path.is_file():
                raise DataError(f"{path}: not a digit image; expected <digit>_<index>.png with digit 0-9")
            digit, index = int(match.group(1)), int(match.group(2))
            if self.index_range is None or self.index_range[0] <= index <= self.index_range[1]:
                kept.append((digit, path))
        by_digit: dict[int, list[np.ndarray]] = {d: [] for d in range(10)}
        for digit, path in kept:
            by_digit[digit].append(_read_digit(path))
        for digit, images in by_digit.items():
            if not images:
                where = "" if self.index_range is None else f" with an index in {list(self.index_range)}"
                raise DataError(f"{folder}: no image of digit {digit}{where}")
        self.files: tuple[Path, ...] = tuple(path for _, path in kept)
        self._images = {d: tuple(images) for d, images in by_digit.items()}

    def __getitem__(self, digit: int) -> tuple[np.ndarray, ...]:
        return self._images[digit]

    def __iter__(self) -> Iterator[int]:
        return iter(self._images)

    def __len__(self) -> int:
        return len(self._images)


def caption_of(layout: Sequence[tuple[int, int]]) -> str:
    """The caption of ``(cell, digit)`` pairs, in reading order whatever their order."""
    cells = [cell for cell, _ in layout]
    if not layout or len(set(cells)) != len(cells) or any(c not in range(4) for c in cells):
        raise ValueError(f"layout needs 1-4 distinct cells in 0..3, got {list(layout)}")
    if any(d not in range(10) for _, d in layout):
        raise ValueError(f"layout digits must be 0-9, got {list(layout)}")
    return " , ".join(
        f"{DIGIT_WORDS[digit]} {ROWS[cell // 2]} {COLUMNS[cell % 2]}" for cell, digit in sorted(layout)
    )


def compose(rng: random.Random, pool: Mapping[int, Sequence[np.ndarray]]) -> tuple[np.ndarray, Layout]:
    """One canvas (uint8, 64x64) and its layout, ``(cell, digit)`` pairs in reading order.

    ``pool[d]`` are the 28x28 uint8 images of digit ``d`` (e.g. a :class:`DigitImages`).
    """
    canvas = np.zeros((CANVAS, CANVAS), dtype=np.uint8)
    k = rng.choice(DIGITS_PER_CANVAS)
    layout: Layout = []
    for cell in sorted(rng.sample(range(4), k)):
        digit = rng.randrange(10)
        image = rng.choice(pool[digit])
        dx, dy = rng.randint(0, MAX_OFFSET), rng.randint(0, MAX_OFFSET)
        y, x = (cell // 2) * CELL + dy, (cell % 2) * CELL + dx
        region = canvas[y : y + DIGIT, x : x + DIGIT]
        np.maximum(region, image, out=region)
        layout.append((cell, digit))
    return canvas, layout


def write_digit_captions(
    source: Path,
    out: Path,
    *,
    count: int,
    seed: int,
    index_range: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Write ``count`` captioned canvases under ``out`` (see the module docstring)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"--count must be an integer >= 1, got {count!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"--seed must be an integer >= 0, got {seed!r}")
    index_range = _check_range(index_range)
    source, out = Path(source), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: output folder exists and is not empty; refusing to overwrite it")
    pool = DigitImages(source, index_range)  # every error is raised before anything is written

    rng = random.Random(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    sizes: Counter[int] = Counter()
    rows = []
    for i in range(count):
        canvas, layout = compose(rng, pool)
        rel = f"images/{i:05d}.png"
        Image.fromarray(canvas).save(out / rel, format="PNG")
        rows.append((rel, caption_of(layout)))
        sizes[len(layout)] += 1
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["path", "caption"])
        writer.writerows(rows)
    return {
        "folder": str(out),
        "images": count,
        "manifest": str(manifest),
        "digits_per_canvas": {k: sizes[k] for k in DIGITS_PER_CANVAS},
        "source_images": len(pool.files),
        "index_range": None if index_range is None else list(index_range),
    }


def _check_range(index_range: tuple[int, int] | None) -> tuple[int, int] | None:
    if index_range is None:
        return None
    try:
        lo, hi = index_range
    except (TypeError, ValueError):
        raise ConfigError(f"--index-range must be two integers LO HI, got {index_range!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) or not 0 <= lo <= hi:
        raise ConfigError(f"--index-range must be integers 0 <= LO <= HI, got {index_range!r}")
    return lo, hi


def _read_digit(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            mode, size = image.mode, image.size
            array = np.array(image, dtype=np.uint8) if mode == "L" else None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a decodable PNG ({exc})") from None
    if array is None or size != (DIGIT, DIGIT):
        raise DataError(
            f"{path}: expected a {DIGIT}x{DIGIT} 8-bit grayscale image, got {size[0]}x{size[1]} mode {mode}"
        )
    return array
