"""Captioned canvases of handwritten digits (pipelines.media.image.digit_canvas); no Ray."""

from __future__ import annotations

import csv
import itertools
import random
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATA
from pipelines.errors import ConfigError, DataError
from pipelines.media.image.digit_canvas import (
    DIGIT_WORDS,
    DigitImages,
    caption_of,
    compose,
    write_digit_captions,
)

ITEM = r"(zero|one|two|three|four|five|six|seven|eight|nine) (top|bottom) (left|right)"
CAPTION = re.compile(rf"{ITEM}( , {ITEM}){{1,3}}")


def fake_mnist(folder: Path, indices=range(3), constant: bool = False) -> Path:
    """28x28 L PNGs ``<digit>_<index>.png``: random noise in 1..255 (so a digit's extent
    is visible), or, with ``constant``, one value per file that encodes (digit, index)."""
    folder.mkdir(parents=True)
    gen = np.random.default_rng(0)
    for digit in range(10):
        for index in indices:
            if constant:
                pixels = np.full((28, 28), _code(digit, index), dtype=np.uint8)
            else:
                pixels = gen.integers(1, 256, size=(28, 28), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{digit}_{index:06d}.png")
    return folder


def _code(digit: int, index: int) -> int:
    return 1 + digit * 10 + index  # index < 10


def parse(caption: str) -> list[tuple[int, int]]:
    """The (cell, digit) layout a caption describes, in caption order."""
    layout = []
    for item in caption.split(" , "):
        word, row, col = item.split(" ")
        layout.append((("top", "bottom").index(row) * 2 + ("left", "right").index(col), DIGIT_WORDS.index(word)))
    return layout


def read_manifest(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["path", "caption"]
        return list(reader)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    src = fake_mnist(tmp_path / "src")
    a = write_digit_captions(src, tmp_path / "a", count=12, seed=3)
    b = write_digit_captions(src, tmp_path / "b", count=12, seed=3)
    write_digit_captions(src, tmp_path / "c", count=12, seed=4)
    assert a["images"] == 12 and sum(a["digits_per_canvas"].values()) == 12
    assert a["source_images"] == 30 and a["index_range"] is None
    assert a["manifest"] == str(tmp_path / "a" / "manifest.csv")
    assert {k: v for k, v in a.items() if k not in ("folder", "manifest")} == {
        k: v for k, v in b.items() if k not in ("folder", "manifest")
    }
    names = sorted(p.name for p in (tmp_path / "a" / "images").iterdir())
    assert names == [f"{i:05d}.png" for i in range(12)]
    assert sorted(p.name for p in (tmp_path / "b" / "images").iterdir()) == names
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (tmp_path / "b" / "manifest.csv").read_bytes()
    for name in names:
        assert (tmp_path / "a" / "images" / name).read_bytes() == (tmp_path / "b" / "images" / name).read_bytes()
    assert (tmp_path / "a" / "manifest.csv").read_bytes() != (tmp_path / "c" / "manifest.csv").read_bytes()
    assert any(
        (tmp_path / "a" / "images" / n).read_bytes() != (tmp_path / "c" / "images" / n).read_bytes() for n in names
    )


def test_captions_follow_the_grammar_in_reading_order(tmp_path):
    assert caption_of([(3, 2), (0, 7)]) == "seven top left , two bottom right"
    assert caption_of([(2, 0), (1, 9), (3, 5), (0, 1)]) == (
        "one top left , nine top right , zero bottom left , five bottom right"
    )
    src = fake_mnist(tmp_path / "src")
    out = tmp_path / "out"
    write_digit_captions(src, out, count=40, seed=0)
    rows = read_manifest(out)
    assert [r["path"] for r in rows] == [f"images/{i:05d}.png" for i in range(40)]
    for row in rows:
        assert CAPTION.fullmatch(row["caption"]), row["caption"]
        cells = [cell for cell, _ in parse(row["caption"])]
        assert cells == sorted(set(cells))  # reading order, each cell once
        with Image.open(out / row["path"]) as image:
            assert image.format == "PNG" and image.mode == "L" and image.size == (64, 64)
    # compose's layout is in reading order too, and its caption round-trips
    rng = random.Random(1)
    pool = DigitImages(src)
    for _ in range(50):
        _, layout = compose(rng, pool)
        assert [c for c, _ in layout] == sorted({c for c, _ in layout})
        assert parse(caption_of(layout)) == layout


def test_same_digits_in_another_layout_get_another_caption():
    assert caption_of([(0, 7), (3, 2)]) != caption_of([(0, 2), (3, 7)])  # swapped
    assert caption_of([(0, 7), (3, 2)]) != caption_of([(1, 7), (2, 2)])  # moved
    for digits in [(7, 2), (3, 3), (1, 4, 1), (0, 5, 8, 5)]:
        layouts = {
            tuple(sorted(zip(cells, digits))) for cells in itertools.permutations(range(4), len(digits))
        }
        captions = {caption_of(list(layout)) for layout in layouts}
        assert len(captions) == len(layouts) > 1
        bag = sorted(DIGIT_WORDS[d] for d in digits)  # same set of digit words every time
        assert all(sorted(item.split(" ")[0] for item in c.split(" , ")) == bag for c in captions)


def test_digits_are_pasted_whole_inside_their_cells(tmp_path):
    pool = DigitImages(fake_mnist(tmp_path / "src"))
    rng = random.Random(7)
    sizes = set()
    for _ in range(150):
        canvas, layout = compose(rng, pool)
        assert canvas.dtype == np.uint8 and canvas.shape == (64, 64)
        assert len(layout) in (2, 3, 4)
        sizes.add(len(layout))
        digits = dict(layout)
        for cell in range(4):
            crop = canvas[(cell // 2) * 32 : (cell // 2) * 32 + 32, (cell % 2) * 32 : (cell % 2) * 32 + 32]
            if cell not in digits:
                assert not crop.any()
                continue
            # noise is 1..255, so the nonzero box is where the 28x28 digit went
            ys, xs = np.nonzero(crop)
            dy, dx = ys.min(), xs.min()
            assert 0 <= dy <= 4 and 0 <= dx <= 4 and ys.max() == dy + 27 and xs.max() == dx + 27
            pasted = crop[dy : dy + 28, dx : dx + 28]
            assert any(np.array_equal(pasted, image) for image in pool[digits[cell]])
    assert sizes == {2, 3, 4}


def test_index_range_keeps_only_files_in_range(tmp_path):
    src = fake_mnist(tmp_path / "src", indices=range(4), constant=True)
    kept = DigitImages(src, (2, 3))
    assert len(kept.files) == 20
    assert {int(p.stem.split("_")[1]) for p in kept.files} == {2, 3}

    def indices_seen(out: Path) -> set[int]:
        values = set()
        for path in (out / "images").iterdir():
            values |= set(np.unique(np.array(Image.open(path)))) - {0}
        return {(int(v) - 1) % 10 for v in values}

    held = write_digit_captions(src, tmp_path / "held", count=60, seed=0, index_range=(2, 3))
    assert held["source_images"] == 20 and held["index_range"] == [2, 3]
    assert indices_seen(tmp_path / "held") == {2, 3}
    write_digit_captions(src, tmp_path / "train", count=60, seed=0, index_range=(0, 1))
    assert indices_seen(tmp_path / "train") == {0, 1}
    everything = write_digit_captions(src, tmp_path / "all", count=60, seed=0)
    assert everything["source_images"] == 40
    assert indices_seen(tmp_path / "all") == {0, 1, 2, 3}
    # the pixel value names the digit too: the caption's digits are the pasted images'
    for row in read_manifest(tmp_path / "held"):
        canvas = np.array(Image.open(tmp_path / "held" / row["path"]))
        for cell, digit in parse(row["caption"]):
            crop = canvas[(cell // 2) * 32 :][:32, (cell % 2) * 32 :][:, :32]
            assert {(int(v) - 1) // 10 for v in np.unique(crop) if v} == {digit}


def test_bad_file_name_is_a_data_error_naming_it(tmp_path):
    src = fake_mnist(tmp_path / "src")
    (src / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="notes.txt"):
        DigitImages(src)
    (src / "notes.txt").unlink()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(src / "12_000001.png")  # two-digit "digit"
    with pytest.raises(DataError, match="12_000001.png"):
        write_digit_captions(src, tmp_path / "out", count=2, seed=0)
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize("kind", ["garbage", "size", "rgb"])
def test_undecodable_or_wrong_image_is_a_data_error_naming_it(tmp_path, kind):
    src = fake_mnist(tmp_path / "src")
    bad = src / "3_000005.png"
    if kind == "garbage":
        bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    elif kind == "size":
        Image.fromarray(np.zeros((28, 27), np.uint8)).save(bad)
    else:
        Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(bad)
    with pytest.raises(DataError, match="3_000005.png"):
        DigitImages(src)
    # outside the index range the file is not decoded (held-out files are not read)
    assert len(DigitImages(src, (0, 2)).files) == 30


def test_missing_digit_is_a_data_error_naming_it(tmp_path):
    src = fake_mnist(tmp_path / "src")
    for path in src.glob("4_*.png"):
        path.unlink()
    with pytest.raises(DataError, match="digit 4"):
        DigitImages(src)
    with pytest.raises(DataError, match="digit 0"):
        DigitImages(fake_mnist(tmp_path / "full"), (5, 9))


def test_bad_count_seed_or_range_is_a_config_error(tmp_path):
    src = fake_mnist(tmp_path / "src")
    with pytest.raises(ConfigError, match="--count"):
        write_digit_captions(src, tmp_path / "a", count=0, seed=0)
    with pytest.raises(ConfigError, match="--seed"):
        write_digit_captions(src, tmp_path / "b", count=1, seed=-1)
    with pytest.raises(ConfigError, match="--index-range"):
        write_digit_captions(src, tmp_path / "c", count=1, seed=0, index_range=(5, 2))
    assert not any((tmp_path / n).exists() for n in "abc")


def test_refuses_to_overwrite_a_non_empty_folder(tmp_path):
    src = fake_mnist(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    write_digit_captions(src, out, count=1, seed=0)  # an empty folder is fine
    before = (out / "manifest.csv").read_bytes()
    with pytest.raises(ConfigError, match=re.escape(str(out))):
        write_digit_captions(src, out, count=3, seed=1)
    assert (out / "manifest.csv").read_bytes() == before


def test_real_mnist_canvases(tmp_path):
    src = SHARED_DATA / "mnist" / "train"
    if not src.is_dir():
        pytest.skip(f"{src} not present")
    out = tmp_path / "out"
    summary = write_digit_captions(src, out, count=20, seed=0, index_range=(1000, 1199))
    assert summary["source_images"] == 2000 and summary["images"] == 20
    rows = read_manifest(out)
    assert len(rows) == 20
    for row in rows:
        assert CAPTION.fullmatch(row["caption"]), row["caption"]
        canvas = np.array(Image.open(out / row["path"]))
        assert canvas.shape == (64, 64) and canvas.dtype == np.uint8
        cells = dict(parse(row["caption"]))
        for cell in range(4):
            crop = canvas[(cell // 2) * 32 :][:32, (cell % 2) * 32 :][:, :32]
            assert (crop.max() > 128) == (cell in cells)  # strokes exactly in captioned cells
