"""Synthetic video for classification and captioning: a shape moving once around a square.

Each clip shows one filled shape (square, circle or triangle; red, green, blue or
yellow) on a static, smooth, random background with fresh Gaussian pixel noise in every
frame. The shape visits the four corners of a square loop, ``per_side`` frames per side
(2..5, so 8..20 frames), and stops one step before it is back at the start.

The class is the *order* of the moves, named by the first two: ``left-up`` starts at the
loop's bottom-right corner and moves left, up, right, down. The first move and the
perpendicular second one fix the start corner and the sense of rotation; moves 3 and 4
are their opposites. For the same geometry all eight classes visit exactly the same
positions, each once, only in a different order, and everything else (background,
shape, colour, noise) is drawn independently of the class. So no single frame, no set of
frames and hence no average over frames tells the classes apart: a model has to see the
sequence, which is what an RNN over per-frame features is for.

The caption says what happens, in order: ``a red square moves left then up then right
then down``. Shape and colour are visible in any frame; the four moves are not.

:func:`write_moving_shapes` writes ``clips/00000.mp4``... (H.264, yuv420p) or
``clips/00000/frame_000.png``... folders, and a ``manifest.csv``::

    path,label,caption,shape,colour,frames
    clips/00000.mp4,up-right,a blue circle moves up then right then down then left,circle,blue,12

Clip ``i`` is drawn from ``numpy.random.default_rng([seed, i])``; labels come in shuffled
blocks of eight, so any ``count`` is balanced within one clip per class, and the same
arguments give the same bytes.

Usage (see ``rayseq generate video --help``)::

    rayseq generate video OUT_DIR --count N --seed S [--size 64] [--fps 10] [--images]
"""

from __future__ import annotations

import csv
import multiprocessing
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.errors import ConfigError

MOVES: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
"""Unit step ``(dx, dy)`` of each move in image coordinates: x right, y down."""

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}

CLASSES = ("left-up", "up-left", "left-down", "down-left", "right-up", "up-right", "right-down", "down-right")
"""Labels, ``{first move}-{second move}``; moves 3 and 4 are the opposites of 1 and 2."""

SHAPES = ("square", "circle", "triangle")

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (40, 80, 235),
    "yellow": (240, 220, 40),
}
"""RGB of each shape colour: saturated and far apart in hue, so they survive 4:2:0 chroma
and a 32x32 downscale against the unsaturated background."""

PER_SIDE = (2, 5)
"""Frames per side of the loop (inclusive bounds); a clip has ``4 * per_side`` frames."""

SIDE = (14 / 64, 26 / 64)
"""Loop side length as a fraction of the frame size (14..26 px at 64 px)."""

BOX = (22 / 64, 26 / 64)
"""Shape bounding box as a fraction of the frame size (22..26 px at 64 px, 11..13 px
after the recipes' downscale to 32x32). At 16..20 px (8..10 at 32) a circle and a square
differ by a few blurred corner pixels: a captioner trained on them confused the two in
10% of held-out clips (exact match 89.3%, every other word 99.7% right)."""

BACKGROUND_GRID = 4
"""The background is a ``4 x 4 x 3`` random grid upsampled bilinearly: smooth blotches."""

BACKGROUND_LEVEL = (80.0, 170.0)
"""Mean grey of a clip's background: never so dark or light that a colour vanishes."""

BACKGROUND_SPREAD = 20.0
"""Standard deviation of each grid value around that grey, per channel: mild tints."""

NOISE_SIGMA = (10.0, 15.0)
"""Per-clip standard deviation of the per-frame Gaussian pixel noise, out of 255."""

MANIFEST_HEADER = ("path", "label", "caption", "shape", "colour", "frames")

ENCODER_OPTIONS = {"crf": "18", "preset": "medium", "threads": "1", "x264-params": "asm=0"}
"""libx264 settings: near-transparent quality; one thread and x264's plain C code, so the
bytes are reproducible. Its assembly is not: on an AVX-512 CPU (AMD EPYC) twelve encodes
of one clip gave four different files, and its AVX2 code writes other bytes than its C
code. C only is about 30 ms a 64 px clip against 13 ms."""

SUPERSAMPLE = 4
"""Shape masks are drawn at 4x resolution and averaged: anti-aliased edges."""


def parse_label(label: str) -> tuple[str, str, str, str]:
    """The four moves of class ``label``: ``"left-up"`` -> ``("left", "up", "right", "down")``."""
    if label not in CLASSES:
        raise ValueError(f"label must be one of {', '.join(CLASSES)}; got {label!r}")
    first, second = label.split("-")
    return first, second, OPPOSITE[first], OPPOSITE[second]


def _loop(corner_box: tuple[int, int], side: int, per_side: int) -> np.ndarray:
    """The loop's ``4 * per_side`` integer positions, clockwise from its top-left corner.

    Every class walks this one list (from its own corner, in its own sense), so all
    classes visit the very same positions even where ``side / per_side`` is not whole.
    """
    x0, y0 = corner_box
    steps = np.round(np.arange(per_side) * side / per_side).astype(np.int64)
    fixed = np.zeros(per_side, dtype=np.int64)
    edges = (  # (x, y) along each edge, clockwise: top, right, bottom, left
        (x0 + steps, y0 + fixed),
        (x0 + side + fixed, y0 + steps),
        (x0 + side - steps, y0 + side + fixed),
        (x0 + fixed, y0 + side - steps),
    )
    return np.concatenate([np.stack(edge, axis=1) for edge in edges])


def clip_positions(label: str, *, corner_box: tuple[int, int], side: int, per_side: int) -> np.ndarray:
    """Top-left ``(x, y)`` of the shape's box in each frame, ``(4 * per_side, 2)`` int64.

    ``corner_box`` is the loop's top-left corner and ``side`` its side length (pixels).
    Frame ``t`` sits about ``t * side / per_side`` along the loop from the start corner,
    so frames ``0, per_side, 2 * per_side, 3 * per_side`` are the four corners.
    """
    first, second = parse_label(label)[:2]
    if side < 1 or per_side < 1:
        raise ValueError(f"side and per_side must be >= 1, got side={side}, per_side={per_side}")
    loop = _loop(corner_box, side, per_side)
    step_x, step_y = MOVES[first][0] + MOVES[second][0], MOVES[first][1] + MOVES[second][1]
    # The start corner is the one the first two moves lead away from: left -> the right edge.
    start = {(1, 1): 0, (-1, 1): 1, (-1, -1): 2, (1, -1): 3}[(step_x, step_y)] * per_side
    clockwise = loop[(start + per_side) % len(loop)] - loop[start]
    sense = 1 if np.array_equal(np.sign(clockwise), MOVES[first]) else -1
    return loop[(start + sense * np.arange(len(loop))) % len(loop)]


def caption(label: str, shape: str, colour: str) -> str:
    """``a red square moves left then up then right then down``."""
    return f"a {colour} {shape} moves " + " then ".join(parse_label(label))


def shape_alpha(shape: str, box: int) -> np.ndarray:
    """Coverage in [0, 1] of ``shape`` filling a ``box x box`` square, ``(box, box)`` float32.

    The triangle points up with its base on the box's bottom edge; all three shapes
    cover the box's centre, where the tests read the colour back.
    """
    fine = (np.arange(box * SUPERSAMPLE) + 0.5) / SUPERSAMPLE - box / 2  # sample points, centred
    x, y = fine[None, :], fine[:, None]
    half = box / 2
    if shape == "square":
        inside = np.ones((len(fine), len(fine)), dtype=bool)
    elif shape == "circle":
        inside = x**2 + y**2 <= half**2
    elif shape == "triangle":
        inside = np.abs(x) <= (y + half) / 2  # apex at the top centre, base at the bottom
    else:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}; got {shape!r}")
    return inside.reshape(box, SUPERSAMPLE, box, SUPERSAMPLE).mean(axis=(1, 3), dtype=np.float32)


def geometry_ranges(size: int) -> dict[str, tuple[int, int]]:
    """Inclusive integer bounds of the loop side and the shape box at frame ``size``."""
    return {"side": (round(SIDE[0] * size), round(SIDE[1] * size)),
            "box": (round(BOX[0] * size), round(BOX[1] * size))}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour field, ``(size, size, 3)`` float32 in [0, 255]."""
    level = rng.uniform(*BACKGROUND_LEVEL)
    grid = level + rng.normal(0.0, BACKGROUND_SPREAD, (BACKGROUND_GRID, BACKGROUND_GRID, 3))
    where = np.linspace(0.0, BACKGROUND_GRID - 1, size)
    low = np.minimum(where.astype(np.int64), BACKGROUND_GRID - 2)
    weight = (where - low)[:, None, None]
    rows = grid[low] * (1 - weight) + grid[low + 1] * weight  # (size, grid, 3)
    field = rows[:, low] * (1 - weight[:, 0][None]) + rows[:, low + 1] * weight[:, 0][None]
    return np.clip(field, 0, 255).astype(np.float32)


def _check_size(size: int) -> None:
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")


def render_clip(rng: np.random.Generator, label: str, *, size: int,
                noise: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """One clip of class ``label``: RGB frames ``(T, size, size, 3)`` uint8 and its info.

    Everything but the order of positions is drawn from ``rng`` in a fixed sequence that
    ignores ``label``, so one ``rng`` state rendered as two classes gives the same frames
    in another order. ``noise=False`` leaves out the per-frame pixel noise (drawn last).
    Info: ``label, caption, shape, colour, frames`` (T) and, for tests, ``positions``
    ``(T, 2)`` (top-left of the shape's box) and ``box`` (its side in pixels).
    """
    parse_label(label)
    _check_size(size)
    ranges = geometry_ranges(size)
    per_side = int(rng.integers(PER_SIDE[0], PER_SIDE[1] + 1))
    side = int(rng.integers(ranges["side"][0], ranges["side"][1] + 1))
    box = int(rng.integers(ranges["box"][0], ranges["box"][1] + 1))
    room = size - box - side  # >= 0 for every size >= 16: the shape never leaves the frame
    corner_box = (int(rng.integers(0, room + 1)), int(rng.integers(0, room + 1)))
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = tuple(COLOURS)[int(rng.integers(len(COLOURS)))]
    background = _background(rng, size)

    positions = clip_positions(label, corner_box=corner_box, side=side, per_side=per_side)
    alpha = shape_alpha(shape, box)[:, :, None]
    paint = np.asarray(COLOURS[colour], dtype=np.float32) * alpha
    frames = np.empty((len(positions), size, size, 3), dtype=np.uint8)
    for t, (x, y) in enumerate(positions):
        frame = background.copy()
        frame[y:y + box, x:x + box] = frame[y:y + box, x:x + box] * (1 - alpha) + paint
        frames[t] = np.round(frame)
    if noise:
        sigma = rng.uniform(*NOISE_SIGMA)
        noisy = frames + sigma * rng.standard_normal(frames.shape, dtype=np.float32)
        frames = np.round(np.clip(noisy, 0, 255)).astype(np.uint8)
    info = {"label": label, "caption": caption(label, shape, colour), "shape": shape, "colour": colour,
            "frames": len(positions), "positions": positions, "box": box}
    return frames, info


def clip_label(seed: int, index: int) -> str:
    """Label of clip ``index``: each block of eight clips holds every class once, in an
    order drawn from ``(seed, block)``, so the first ``n`` clips are balanced for any ``n``."""
    order = np.random.default_rng([seed, index // len(CLASSES), 1]).permutation(len(CLASSES))
    return CLASSES[order[index % len(CLASSES)]]


def check_arguments(*, count: int, seed: int, size: int, fps: int) -> None:
    """Raise ``ValueError`` naming the first bad argument of :func:`write_moving_shapes`."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    _check_size(size)
    if size % 2:
        raise ValueError(f"size must be even (yuv420p halves the chroma), got {size}")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")


def _write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    """H.264 in MP4, yuv420p at ``fps``; single-threaded libx264 writes the same bytes each time."""
    import av

    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options=dict(ENCODER_OPTIONS))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


def _write_pngs(folder: Path, frames: np.ndarray) -> None:
    from PIL import Image

    folder.mkdir(exist_ok=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"frame_{t:03d}.png")


def _write_clip(index: int, *, out: Path, seed: int, size: int, fps: int, images: bool) -> tuple:
    """Render and write clip ``index``; its manifest row."""
    frames, info = render_clip(np.random.default_rng([seed, index]), clip_label(seed, index), size=size)
    name = f"{index:05d}" if images else f"{index:05d}.mp4"
    if images:
        _write_pngs(out / "clips" / name, frames)
    else:
        _write_mp4(out / "clips" / name, frames, fps)
    return (f"clips/{name}", *(info[key] for key in MANIFEST_HEADER[1:]))


def write_moving_shapes(out_dir: str | Path, *, count: int, seed: int, size: int = 64, fps: int = 10,
                        images: bool = False, workers: int | None = None) -> Path:
    """Write ``count`` clips to ``out_dir/clips/`` and ``out_dir/manifest.csv``; return ``out_dir``.

    MP4 (H.264) by default; ``images=True`` writes a folder of PNG frames per clip
    instead (``fps`` is then unused). Manifest paths are relative to ``out_dir``. Clips
    are written by ``workers`` processes (default: one per CPU; encoding is ~30 ms a clip
    at 64 px); each clip depends only on ``(seed, index)``, so the files are the same
    whatever the number of workers. The manifest is written last: a folder without one
    is an interrupted write, and the video-folder reader refuses it.
    """
    check_arguments(count=count, seed=seed, size=size, fps=fps)
    out = Path(out_dir)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    write = partial(_write_clip, out=out, seed=seed, size=size, fps=fps, images=images)
    workers = min(workers or os.cpu_count() or 1, max(count // 64, 1))
    if workers == 1:
        rows = [write(index) for index in range(count)]
    else:  # spawn: the caller may hold threads (Ray, torch) that fork would copy mid-flight
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = list(pool.map(write, range(count), chunksize=32))
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(MANIFEST_HEADER)
        writer.writerows(rows)
    return out


def video_command(out_dir: Path, *, count: int, seed: int, size: int, fps: int, images: bool) -> dict[str, Any]:
    """``rayseq generate video``: a bad argument is a :class:`ConfigError` (one CLI line)."""
    try:
        check_arguments(count=count, seed=seed, size=size, fps=fps)
    except ValueError as err:
        raise ConfigError(f"video: {err}") from err
    out = write_moving_shapes(out_dir, count=count, seed=seed, size=size, fps=fps, images=images)
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    labels = Counter(row["label"] for row in rows)
    return {"output": str(out), "files": len(rows), "frames": sum(int(row["frames"]) for row in rows),
            "classes": {label: labels[label] for label in CLASSES}}
