"""One clip (encoded bytes, a video file, or a folder of frame images) -> model input frames.

    bytes / file --PyAV: demux, decode (one thread)--> frames with timestamps
                 --sample: first frame at or after each 1/fps tick (fps > 0), then every
                   stride-th; stop once max_frames are kept and another would be--> kept frames
                 --swscale AREA resize to size x size, rgb24--> frames (T, size, size, 3) uint8
    folder       --natural sort of image names, every stride-th--> Pillow decode, RGB,
                   BOX resize--> frames (T, size, size, 3) uint8

The same :class:`VideoFeaturizer` runs in Ray Data (training ingest and ``rayseq eval``)
and in the Serve replicas (uploads), so a model sees an upload exactly as it saw its
training clips. Frames stay uint8 here: four times less object-store and network traffic
than float32, and the model's front end normalises them on its own device.

Resizing drops the aspect ratio (``data.video.size`` squares) and averages: each output
pixel is the mean of the source pixels it covers (swscale ``AREA`` for video, Pillow
``BOX`` for images, after JPEG draft-mode DCT scaling), so the usual large shrink does not
alias (1-pixel stripes at 320 -> 32 come out flat grey with both) and the two paths agree.
``AREA`` also costs less than swscale's ``BILINEAR`` (measured ~0.6x). A source smaller
than ``size`` is enlarged (``AREA`` then acts as bilinear, ``BOX`` as nearest).

Nothing is silently dropped: a decoder error part-way through, or a container that
declares a longer video than decodes (MKV/WebM/AVI read to a cut-off end without an error),
is a :class:`~pipelines.errors.DataError`. Training cuts clips at ``max_frames`` (and
counts them); serving (``refuse_longer=True``) refuses them with :class:`ClipTooLong`.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from pipelines.config import VideoConfig
from pipelines.errors import DataError
from pipelines.media.image.decode import square_rgb

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

_HEADER_DURATION_FORMATS = {"mov", "mp4", "matroska", "webm", "avi"}
"""Containers whose header declares the duration (so a shorter decode means truncation).
Stream formats (MPEG-TS, raw H.264) only have FFmpeg's estimate: a cut-off stream there is
indistinguishable from a shorter one and decodes as one."""

_TICK_SLACK = 1e-6
"""Fraction of a sample period a timestamp may fall short of its tick (float rounding)."""


class ClipTooLong(DataError):
    """An upload over a limit (duration by header, or more than max_frames frames); serving answers 413."""


@dataclass
class Clip:
    frames: np.ndarray
    """``(T, size, size, 3)`` uint8 RGB, C-contiguous, ``T >= 1``."""
    cut: bool
    """More frames were available than ``max_frames`` (training cuts and counts)."""
    seconds: float
    """Source time the kept frames were drawn from: first frame to the end of the last one
    decoded (or to the frame that would have been kept next, when cut). Best effort; 0 for
    frame folders, which carry no timing."""


@dataclass
class Probe:
    seconds: float | None
    """Declared duration of the video stream (else of the container); None if not declared."""
    frames: int | None
    """Declared frame count of the video stream; None if unknown."""


class VideoFeaturizer:
    """Decode, sample and resize clips the way :class:`~pipelines.config.VideoConfig` says.

    ``refuse_longer`` (serving): an upload over ``max_seconds`` (by header or by decoded
    timestamps) or with more than ``max_frames`` kept frames raises :class:`ClipTooLong`
    instead of being cut.
    """

    def __init__(self, config: VideoConfig, *, refuse_longer: bool = False) -> None:
        self.config = config
        self.refuse_longer = refuse_longer

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.config.size, self.config.size, 3)

    def __call__(self, source: bytes | str | Path, origin: str) -> Clip:
        """Encoded bytes, a video file, or a folder of frame images -> :class:`Clip`."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            if not len(source):
                raise DataError(f"{origin}: empty file")
            return self._decode_video(io.BytesIO(source), origin)
        path = Path(source)
        if path.is_dir():
            return self._read_folder(path, origin)
        if not path.is_file():
            raise DataError(f"{origin}: no such file or folder ({path})")
        if path.stat().st_size == 0:
            raise DataError(f"{origin}: empty file")
        return self._decode_video(str(path), origin)

    def probe(self, data: bytes, origin: str) -> Probe:
        """What an encoded clip's header declares, without decoding a frame."""
        if not data:
            raise DataError(f"{origin}: empty file")
        with _open(io.BytesIO(data), origin) as container:
            return _probe(container, _video_stream(container, origin))

    # ------------------------------------------------------------------ video files

    def _decode_video(self, file: io.BytesIO | str, origin: str) -> Clip:
        config = self.config
        with _open(file, origin) as container:
            stream = _video_stream(container, origin)
            if self.refuse_longer:
                self._refuse_declared(_probe(container, stream), origin)
            # One thread to decode (and to scale, below): Ray runs one decode task per core,
            # and for small clips FFmpeg's thread pools cost more to start than they save
            # (measured on 2 cores, 8-20 frame 64x64 H.264 clips -> 32x32: 5-6k frames/s
            # single-threaded, 3-3.7k with frame threads, 600-850 with FFmpeg's defaults,
            # whose scaler starts threads for every frame).
            stream.codec_context.thread_count = 1
            rate = float(stream.average_rate or stream.guessed_rate or 0)
            sampler = _Sampler(config.fps, config.stride)
            frames: list[np.ndarray] = []
            cut, start, end, decoded = False, None, None, 0
            try:
                for frame in container.decode(stream):
                    time = frame.time if frame.time is not None else (decoded / rate if rate else None)
                    decoded += 1
                    if time is None and config.fps > 0:
                        raise DataError(f"{origin}: frames carry no timestamps and the stream no frame rate, "
                                        f"so data.video.fps cannot sample it (set it to 0)")
                    if time is not None:
                        start = time if start is None else start
                        time -= start
                        if self.refuse_longer and time >= config.max_seconds:
                            raise ClipTooLong(f"{origin}: video runs past {config.max_seconds:g} s; the limit "
                                              f"is {config.max_seconds:g} s (data.video.max_seconds)")
                    if not sampler(time):
                        end = _frame_end(frame, time, rate)
                        continue
                    if len(frames) == config.max_frames:
                        self._refuse_frames(origin)
                        cut, end = True, time
                        break
                    frames.append(frame.to_ndarray(width=config.size, height=config.size, format="rgb24",
                                                   interpolation="AREA", threads=1))
                    end = _frame_end(frame, time, rate)
            except av.error.FFmpegError as err:
                raise DataError(f"{origin}: decoding failed after {decoded} frames ({_reason(err)}); "
                                f"the file is truncated or corrupt") from None
            if not frames:
                raise DataError(f"{origin}: no video frames decoded (empty or truncated video stream)")
            if not cut and end is not None:
                _check_complete(container, stream, max(start, 0.0) + end, decoded, rate, origin)
        return Clip(np.stack(frames), cut, end or 0.0)

    def _refuse_declared(self, probe: Probe, origin: str) -> None:
        limit = self.config.max_seconds
        if probe.seconds is not None and probe.seconds > limit:
            raise ClipTooLong(f"{origin}: {probe.seconds:.1f} s of video; the limit is {limit:g} s "
                              f"(data.video.max_seconds)")

    def _refuse_frames(self, origin: str) -> None:
        if self.refuse_longer:
            limit = self.config.max_frames
            raise ClipTooLong(f"{origin}: more than {limit} frames after sampling; the limit is {limit} "
                              f"frames (data.video.max_frames)")

    # ------------------------------------------------------------------ frame folders

    def _read_folder(self, folder: Path, origin: str) -> Clip:
        """Frame images in natural name order (``frame_2`` before ``frame_10``). Images have
        no timestamps, so ``fps`` does not apply: ``stride`` alone picks frames. Hidden
        files (``.``-names, e.g. macOS ``._frame.png``) are skipped."""
        names = sorted((p for p in folder.iterdir()
                        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()),
                       key=lambda p: (natural_key(p.name), p.name))
        if not names:
            raise DataError(f"{origin}: no frame images ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
        sampler = _Sampler(0.0, self.config.stride)
        frames: list[np.ndarray] = []
        first: tuple[str, tuple[int, int]] | None = None
        cut = False
        for path in names:
            if not sampler(None):
                continue
            if len(frames) == self.config.max_frames:
                self._refuse_frames(origin)
                cut = True
                break
            image, size = self._load_image(path, origin)
            first = first or (path.name, size)
            if size != first[1]:
                raise DataError(f"{origin}: frame image '{path.name}' is {size[0]}x{size[1]} but "
                                f"'{first[0]}' is {first[1][0]}x{first[1][1]}; a clip's frames must share one size")
            frames.append(image)
        return Clip(np.stack(frames), cut, 0.0)

    def _load_image(self, path: Path, origin: str) -> tuple[np.ndarray, tuple[int, int]]:
        """``(size, size, 3)`` uint8 RGB and the image's own ``(width, height)``."""
        side = self.config.size
        try:
            with Image.open(path) as image:
                size = image.size
                image.draft("RGB", (side, side))  # JPEG: decode at 1/2..1/8 scale, still >= side
                frame = square_rgb(image, side)  # the image medium's resize: the two paths agree
        except (OSError, SyntaxError, Image.DecompressionBombError) as err:
            raise DataError(f"{origin}: unreadable frame image '{path.name}' ({_reason(err)})") from None
        return frame, size


class _Sampler:
    """Which frames to keep: the first at or after each ``1/fps`` tick from the first frame
    (``fps > 0``; a frame fills at most one tick, so a higher ``fps`` than the source's keeps
    every frame, never duplicates), then every ``stride``-th of those."""

    def __init__(self, fps: float, stride: int) -> None:
        self.fps, self.stride = fps, stride
        self.tick = 0  # the next sample time is tick / fps
        self.passed = 0  # frames through the fps stage

    def __call__(self, time: float | None) -> bool:
        if self.fps > 0:
            position = time * self.fps
            if position < self.tick - _TICK_SLACK:
                return False
            self.tick = math.floor(position + _TICK_SLACK) + 1
        self.passed += 1
        return (self.passed - 1) % self.stride == 0


def natural_key(name: str) -> list[str | int]:
    """Sort key that orders digit runs by value: ``frame_2`` before ``frame_10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _open(file: io.BytesIO | str, origin: str) -> av.container.InputContainer:
    """An opened video container; a still image (which FFmpeg would read as a one-frame
    video) is refused: a clip stored as images is a folder of them."""
    try:
        container = av.open(file, metadata_errors="ignore")
    except av.error.FFmpegError as err:
        raise DataError(f"{origin}: not a readable video ({_reason(err)})") from None
    image = _image_format(container.format.name)
    if image is not None:
        container.close()
        raise DataError(f"{origin}: a {image} image, not a video (a clip stored as frame images is a folder "
                        "of them; uploads are encoded video files: MP4, WebM, ...)")
    return container


def _image_format(demuxer: str) -> str | None:
    """``PNG``, ``JPEG``, ... for FFmpeg's still-image demuxers (``image2``, ``*_pipe``), else None."""
    if demuxer.startswith("image2"):
        return "still"
    return demuxer.removesuffix("_pipe").upper() if demuxer.endswith("_pipe") else None


def _video_stream(container: av.container.InputContainer, origin: str) -> av.VideoStream:
    if not container.streams.video:
        kinds = ", ".join(stream.type for stream in container.streams) or "none"
        raise DataError(f"{origin}: no video stream (streams: {kinds})")
    stream = container.streams.video[0]
    if stream.codec_context is None:  # FFmpeg has no decoder for it, or a cut-off header hid the codec
        raise DataError(f"{origin}: the video stream's codec is unknown or not supported (truncated header?)")
    return stream


def _probe(container: av.container.InputContainer, stream: av.VideoStream) -> Probe:
    seconds = _video_seconds(container, stream)
    if seconds is None and container.duration:
        seconds = container.duration / av.time_base
    return Probe(seconds, stream.frames or None)


def _video_seconds(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    """The video stream's own declared duration: its header field, Matroska's ``DURATION``
    tag, or the container's when the video is its only stream (else audio may set it)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", stream.metadata.get("DURATION", ""))
    if tag:
        return int(tag[1]) * 3600 + int(tag[2]) * 60 + float(tag[3])
    if container.duration and len(container.streams) == 1:
        return container.duration / av.time_base
    return None


def _check_complete(container: av.container.InputContainer, stream: av.VideoStream, end: float,
                    decoded: int, rate: float, origin: str) -> None:
    """A cut-off file that decoded to its cut without an error (Matroska, WebM, AVI): fewer
    frames than an AVI header counts (FFmpeg re-measures an AVI's duration from what is
    there), or an ``end`` (timestamp from 0) more than two frames short of the declared
    duration. Measuring from 0, not the first frame, errs towards passing files whose header
    counts from their first frame; MP4's frame count is not used, as edit lists may hide frames."""
    formats = set(container.format.name.split(","))
    kind = container.format.name.split(",")[0]
    if "avi" in formats and stream.frames and decoded < stream.frames:
        raise DataError(f"{origin}: truncated or corrupt: {decoded} frames decoded but the avi header "
                        f"declares {stream.frames}")
    declared = _video_seconds(container, stream) if _HEADER_DURATION_FORMATS & formats else None
    if declared is not None and end < declared - (2 / rate if rate else 0.1):
        raise DataError(f"{origin}: truncated or corrupt: {end:.2f} s of video decoded but the "
                        f"{kind} header declares {declared:.2f} s")


def _frame_end(frame: av.VideoFrame, time: float | None, rate: float) -> float | None:
    """When ``frame`` (at ``time`` from the first) stops showing."""
    if time is None:
        return None
    if frame.duration and frame.time_base:
        return time + float(frame.duration * frame.time_base)
    return time + (1 / rate if rate else 0.0)


def _reason(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
