"""Synthetic moving-shape clips: geometry, order-only classes, MP4/PNG output, CLI (no Ray)."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from pipelines.cli import main
from pipelines.media.video.synthetic import (
    CLASSES,
    COLOURS,
    MANIFEST_HEADER,
    MOVES,
    SHAPES,
    caption,
    clip_label,
    clip_positions,
    geometry_ranges,
    render_clip,
    write_moving_shapes,
)

FOUR_MOVES = {
    "left-up": "left then up then right then down",
    "up-left": "up then left then down then right",
    "left-down": "left then down then right then up",
    "down-left": "down then left then up then right",
    "right-up": "right then up then left then down",
    "up-right": "up then right then down then left",
    "right-down": "right then down then left then up",
    "down-right": "down then right then up then left",
}
"""What each caption must say, written out rather than derived."""


def read_manifest(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def folder_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def nearest_colour(rgb: np.ndarray) -> str:
    return min(COLOURS, key=lambda name: float(np.sum((np.asarray(COLOURS[name]) - rgb) ** 2)))


@pytest.fixture(scope="module")
def mp4_set(tmp_path_factory) -> Path:
    return write_moving_shapes(tmp_path_factory.mktemp("mp4"), count=12, seed=5)


# --- geometry -------------------------------------------------------------------------


@pytest.mark.parametrize("side,per_side", [(14, 2), (17, 3), (22, 4), (26, 5), (13, 5), (5, 2)])
def test_all_classes_visit_the_same_positions_in_different_orders(side, per_side):
    paths = {label: clip_positions(label, corner_box=(3, 7), side=side, per_side=per_side) for label in CLASSES}
    reference = sorted(map(tuple, paths["left-up"]))
    for label, path in paths.items():
        assert path.shape == (4 * per_side, 2) and path.dtype.kind == "i"
        assert sorted(map(tuple, path)) == reference, label
    orders = {tuple(map(tuple, path)) for path in paths.values()}
    assert len(orders) == len(CLASSES)


@pytest.mark.parametrize("label", CLASSES)
def test_moves_follow_the_label_around_the_loop(label):
    per_side = 3
    path = clip_positions(label, corner_box=(10, 20), side=15, per_side=per_side)
    first, second = label.split("-")
    expected = [MOVES[first], MOVES[second], tuple(-v for v in MOVES[first]), tuple(-v for v in MOVES[second])]
    for k, move in enumerate(expected):  # every step along side k points the same way
        for t in range(k * per_side, (k + 1) * per_side):
            step = path[(t + 1) % len(path)] - path[t]
            assert tuple(np.sign(step)) == move, (label, t)
    corners = {tuple(path[k * per_side]) for k in range(4)}
    assert corners == {(10, 20), (25, 20), (25, 35), (10, 35)}
    x_start = 25 if first == "left" or second == "left" else 10
    y_start = 35 if first == "up" or second == "up" else 20
    assert tuple(path[0]) == (x_start, y_start)


def test_left_up_starts_bottom_right_and_goes_left_up_right_down():
    path = clip_positions("left-up", corner_box=(0, 0), side=4, per_side=2)
    assert path.tolist() == [[4, 4], [2, 4], [0, 4], [0, 2], [0, 0], [2, 0], [4, 0], [4, 2]]


@pytest.mark.parametrize("size", [16, 18, 32, 64, 66, 128])
def test_extreme_geometry_keeps_the_shape_inside_the_frame(size):
    ranges = geometry_ranges(size)
    side, box = ranges["side"][1], ranges["box"][1]
    room = size - side - box
    assert room >= 0 and ranges["side"][0] >= 1 and ranges["box"][0] >= 4
    for corner in [(0, 0), (room, room), (0, room)]:
        for label in CLASSES:
            for per_side in (2, 5):
                path = clip_positions(label, corner_box=corner, side=side, per_side=per_side)
                assert path.min() >= 0 and path.max() + box <= size


def test_geometry_scales_with_size():
    assert geometry_ranges(64) == {"side": (14, 26), "box": (22, 26)}
    assert geometry_ranges(128) == {"side": (28, 52), "box": (44, 52)}


def test_caption_reads_in_order():
    assert caption("left-up", "square", "red") == "a red square moves left then up then right then down"


def test_bad_label_is_named():
    with pytest.raises(ValueError, match="label must be one of .*'left-left'"):
        clip_positions("left-left", corner_box=(0, 0), side=10, per_side=2)


# --- rendering ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_frame_average_is_the_same_for_every_class(seed):
    """The exact per-pixel frame sum (noise-free) is class-independent, while the frames
    themselves and the average of the first half are not: order carries the class."""
    clips = {label: render_clip(np.random.default_rng(seed), label, size=64, noise=False) for label in CLASSES}
    sums = {label: frames.sum(axis=0, dtype=np.int64) for label, (frames, _) in clips.items()}
    halves = {label: frames[: len(frames) // 2].sum(axis=0, dtype=np.int64) for label, (frames, _) in clips.items()}
    reference = sums["left-up"]
    for label in CLASSES:
        np.testing.assert_array_equal(sums[label], reference, err_msg=label)
    assert len({halves[label].tobytes() for label in CLASSES}) == len(CLASSES)
    frames, info = clips["left-up"]
    assert not np.array_equal(frames[0], frames[info["frames"] // 4])  # the shape moves
    other = render_clip(np.random.default_rng(seed + 100), "left-up", size=64, noise=False)[0]
    assert other.shape != frames.shape or not np.array_equal(other.sum(axis=0, dtype=np.int64), reference)


def test_noise_is_drawn_apart_from_the_class():
    """With noise the averages match only up to rounding and clipping (each frame's noise
    goes with its index, not its position; saturated colours clip): within 3 of 255."""
    a, info_a = render_clip(np.random.default_rng(9), "up-right", size=32)
    b, info_b = render_clip(np.random.default_rng(9), "right-up", size=32)
    assert a.dtype == np.uint8 and a.shape == (info_a["frames"], 32, 32, 3)
    assert np.abs(a.mean(axis=0) - b.mean(axis=0)).max() < 3
    same = ("shape", "colour", "frames")
    assert [info_a[key] for key in same] == [info_b[key] for key in same]
    noise = a.astype(np.int16) - render_clip(np.random.default_rng(9), "up-right", size=32, noise=False)[0]
    assert 8 < noise.std() < 17


def test_render_draws_every_shape_colour_and_length():
    seen = [render_clip(np.random.default_rng([1, i]), CLASSES[i % 8], size=32, noise=False)[1] for i in range(120)]
    assert {info["shape"] for info in seen} == set(SHAPES)
    assert {info["colour"] for info in seen} == set(COLOURS)
    assert {info["frames"] for info in seen} == {8, 12, 16, 20}
    for info in seen:
        assert info["caption"] == f"a {info['colour']} {info['shape']} moves {FOUR_MOVES[info['label']]}"


def test_shape_centre_has_the_shape_colour():
    for i in range(24):
        frames, info = render_clip(np.random.default_rng([2, i]), "down-left", size=64, noise=False)
        half = info["box"] // 2
        for t in (0, info["frames"] - 1):
            x, y = info["positions"][t]
            centre = frames[t, y + half - 1:y + half + 1, x + half - 1:x + half + 1].reshape(-1, 3).mean(axis=0)
            assert np.abs(centre - COLOURS[info["colour"]]).max() < 3, (i, t)


def test_labels_are_balanced_in_every_prefix():
    labels = [clip_label(7, i) for i in range(83)]
    for n in (8, 16, 83):
        counts = Counter(labels[:n])
        assert set(counts) == set(CLASSES) and max(counts.values()) - min(counts.values()) <= 1
    assert labels[:8] != [clip_label(8, i) for i in range(8)]


# --- writing --------------------------------------------------------------------------


def test_mp4s_decode_to_the_manifest_frames_and_colours(mp4_set):
    rows = read_manifest(mp4_set)
    assert list(rows[0]) == list(MANIFEST_HEADER) and len(rows) == 12
    for index, row in enumerate(rows):
        frames = decode(mp4_set / row["path"])
        assert row["path"] == f"clips/{index:05d}.mp4"
        assert len(frames) == int(row["frames"]) and frames[0].shape == (64, 64, 3)
        assert row["caption"] == f"a {row['colour']} {row['shape']} moves {FOUR_MOVES[row['label']]}"
        _, info = render_clip(np.random.default_rng([5, index]), row["label"], size=64, noise=False)
        half = info["box"] // 2
        for t in (0, len(frames) // 2):
            x, y = info["positions"][t]
            patch = frames[t][y + half - 2:y + half + 2, x + half - 2:x + half + 2].reshape(-1, 3).mean(axis=0)
            assert nearest_colour(patch) == row["colour"], (row["path"], t)
            assert np.abs(patch - COLOURS[row["colour"]]).max() < 40, (row["path"], t, patch)


def test_writes_are_byte_identical(tmp_path, mp4_set):
    again = write_moving_shapes(tmp_path / "again", count=12, seed=5)
    assert folder_hashes(again) == folder_hashes(mp4_set)
    other = write_moving_shapes(tmp_path / "other", count=2, seed=6)
    assert folder_hashes(other)["clips/00000.mp4"] != folder_hashes(mp4_set)["clips/00000.mp4"]


def test_images_write_png_folders(tmp_path):
    first = write_moving_shapes(tmp_path / "a", count=3, seed=2, size=32, images=True)
    second = write_moving_shapes(tmp_path / "b", count=3, seed=2, size=32, images=True)
    assert folder_hashes(first) == folder_hashes(second)
    for index, row in enumerate(read_manifest(first)):
        assert row["path"] == f"clips/{index:05d}"
        names = sorted(p.name for p in (first / row["path"]).iterdir())
        assert names == [f"frame_{t:03d}.png" for t in range(int(row["frames"]))]
        expected, _ = render_clip(np.random.default_rng([2, index]), row["label"], size=32)
        stored = np.stack([np.asarray(Image.open(first / row["path"] / name).convert("RGB")) for name in names])
        np.testing.assert_array_equal(stored, expected)  # PNG is lossless


@pytest.mark.parametrize("kwargs,match", [
    ({"count": 0}, "count must be >= 1, got 0"),
    ({"size": 63}, "size must be even"),
    ({"size": 14}, "size must be >= 16"),
    ({"fps": 0}, "fps must be >= 1"),
    ({"seed": -1}, "seed must be >= 0"),
])
def test_bad_arguments_are_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_moving_shapes(tmp_path, **{"count": 1, "seed": 0, **kwargs})
    assert not (tmp_path / "clips").exists()


# --- CLI ------------------------------------------------------------------------------


def test_cli_writes_and_summarises(tmp_path, capsys):
    out = tmp_path / "video"
    assert main(["generate", "video", str(out), "--count", "9", "--seed", "1", "--size", "32", "--fps", "5"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = read_manifest(out)
    assert summary == {"output": str(out), "files": 9, "frames": sum(int(r["frames"]) for r in rows),
                       "classes": {label: 2 if label == clip_label(1, 8) else 1 for label in CLASSES}}
    with av.open(str(out / rows[0]["path"])) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert stream.average_rate == 5


def test_cli_images_flag(tmp_path, capsys):
    out = tmp_path / "frames"
    assert main(["generate", "video", str(out), "--count", "2", "--seed", "0", "--size", "16", "--images"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["files"] == 2
    assert (out / "clips" / "00000" / "frame_000.png").is_file()


@pytest.mark.parametrize("flags,message", [
    (["--count", "0"], "rayseq: error: video: count must be >= 1, got 0"),
    (["--count", "1", "--size", "33"], "rayseq: error: video: size must be even (yuv420p halves the chroma), got 33"),
])
def test_cli_bad_arguments_exit_2_with_one_line(tmp_path, capsys, flags, message):
    assert main(["generate", "video", str(tmp_path / "x"), "--seed", "0", *flags]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == message and captured.out == ""
