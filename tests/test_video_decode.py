"""Video featurizer: decode, sample, resize and refuse, on clips the tests make with PyAV
(H.264 MP4, Matroska) and Pillow (frame folders). No Ray.

Every test frame carries its index as the grey level of its top band (``8 * index``, mod 256), and a
red square on blue moves right below it, so tests can tell which frames were kept."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import pipelines.media.video.decode as video
from pipelines.config import VideoConfig
from pipelines.errors import DataError
from pipelines.media.video.decode import Clip, ClipTooLong, Probe, VideoFeaturizer, natural_key

BLUE, RED = (0, 0, 160), (230, 20, 20)


def picture(index: int, width: int = 64, height: int = 64) -> np.ndarray:
    """``(height, width, 3)`` RGB: top quarter grey ``8 * (index % 32)``, a 16x16 red square at
    ``x = 2 * index`` (wrapping) in the lower half, blue elsewhere."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BLUE
    image[: height // 4] = 8 * (index % 32)
    x = (2 * index) % (width - 16)
    image[height // 2 : height // 2 + 16, x : x + 16] = RED
    return image


def encode(path: Path | None = None, *, frames: int = 20, fps: int = 30, fmt: str = "mp4",
           codec: str = "libx264", options: dict[str, str] | None = None) -> bytes:
    """A clip of ``frames`` :func:`picture` frames; written to ``path`` when given (MP4
    ``faststart`` rewrites the file, so it needs one), in memory otherwise."""
    target = path if path is not None else io.BytesIO()
    with av.open(target, "w", format=fmt, options=options or {}) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for index in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture(index), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path.read_bytes() if path is not None else target.getvalue()


def frame_folder(folder: Path, count: int, *, ext: str = ".png", size: tuple[int, int] = (64, 64)) -> Path:
    """Frames ``frame_1 .. frame_<count>`` (unpadded, so only a natural sort orders them)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(1, count + 1):
        Image.fromarray(picture(index, *size)).save(folder / f"frame_{index}{ext}")
    return folder


def indices(frames: np.ndarray) -> list[int]:
    """Which :func:`picture` each frame is, read from its grey band."""
    band = frames[:, : frames.shape[1] // 4 - 1].reshape(len(frames), -1).mean(1)
    return [int(round(value / 8)) for value in band]


def featurizer(refuse_longer: bool = False, **config) -> VideoFeaturizer:
    return VideoFeaturizer(VideoConfig(**{"size": 16, **config}), refuse_longer=refuse_longer)


# ---------------------------------------------------------------- decoding and sampling


def test_mp4_decodes_to_resized_uint8_rgb_frames():
    video_featurizer = featurizer()
    clip = video_featurizer(encode(frames=20), "clip.mp4")
    assert isinstance(clip, Clip) and not clip.cut
    assert clip.frames.shape == (20, 16, 16, 3) == (20, *video_featurizer.frame_shape)
    assert clip.frames.dtype == np.uint8 and clip.frames.flags.c_contiguous
    assert indices(clip.frames) == list(range(20))
    assert clip.seconds == pytest.approx(20 / 30, abs=1e-3)
    # frame 6: the square covers source x 12..27 -> output x 3..6, rows 8..11
    frame = clip.frames[6].astype(int)
    assert np.abs(frame[9, 4:6] - RED).max() < 40
    assert np.abs(frame[14, 12] - BLUE).max() < 40


def test_bytes_and_path_give_identical_frames(tmp_path):
    data = encode(frames=12)
    (tmp_path / "clip.mp4").write_bytes(data)
    from_bytes = featurizer()(data, "upload")
    from_path = featurizer()(tmp_path / "clip.mp4", "clip.mp4")
    from_str = featurizer()(str(tmp_path / "clip.mp4"), "clip.mp4")
    assert np.array_equal(from_bytes.frames, from_path.frames) and np.array_equal(from_path.frames, from_str.frames)


def test_other_containers_decode_the_same_frames():
    mkv = featurizer()(encode(frames=10, fmt="matroska"), "clip.mkv")
    avi = featurizer()(encode(frames=10, fmt="avi", codec="mpeg4"), "clip.avi")
    assert indices(mkv.frames) == indices(avi.frames) == list(range(10))


def test_stride_keeps_every_nth_frame():
    clip = featurizer(stride=3)(encode(frames=20), "clip.mp4")
    assert indices(clip.frames) == [0, 3, 6, 9, 12, 15, 18] and not clip.cut


def test_fps_samples_by_timestamp():
    clip = featurizer(fps=10)(encode(frames=30, fps=30), "clip.mp4")
    assert indices(clip.frames) == list(range(0, 30, 3))  # 1 s at 10 fps: 10 frames
    assert indices(featurizer(fps=10, stride=2)(encode(frames=30, fps=30), "clip.mp4").frames) == [0, 6, 12, 18, 24]
    # a rate above the source's keeps every frame once (no duplicates)
    assert indices(featurizer(fps=50)(encode(frames=10, fps=30), "clip.mp4").frames) == list(range(10))


def test_max_frames_cuts_and_stops_decoding(tmp_path):
    clip = featurizer(max_frames=5, stride=2)(encode(frames=20), "clip.mp4")
    assert clip.cut and indices(clip.frames) == [0, 2, 4, 6, 8]
    assert clip.seconds == pytest.approx(10 / 30, abs=1e-3)  # up to frame 10, the next one kept
    exact = featurizer(max_frames=10, stride=2)(encode(frames=20), "clip.mp4")
    assert not exact.cut and len(exact.frames) == 10  # cut only when one more would be kept
    # decoding stops: a clip corrupt past its first frames still yields the first five
    whole = encode(tmp_path / "fast.mp4", frames=60, options={"movflags": "+faststart"})
    broken = whole[: int(len(whole) * 0.8)]
    assert featurizer(max_frames=5)(broken, "broken.mp4").cut
    with pytest.raises(DataError, match=r"broken\.mp4: decoding failed after \d+ frames"):
        featurizer()(broken, "broken.mp4")


def test_probe_reads_the_declared_duration_and_frames():
    probe = featurizer().probe(encode(frames=20, fps=30), "clip.mp4")
    assert isinstance(probe, Probe) and probe.frames == 20
    assert probe.seconds == pytest.approx(20 / 30, abs=1e-3)
    mkv = featurizer().probe(encode(frames=20, fmt="matroska"), "clip.mkv")
    assert mkv.seconds == pytest.approx(20 / 30, abs=1e-3) and mkv.frames is None


# ---------------------------------------------------------------- frame folders


def test_frame_folder_in_natural_order_with_stride(tmp_path):
    folder = frame_folder(tmp_path / "clip", 12)
    (folder / "notes.txt").write_text("not a frame")
    clip = featurizer()(folder, "clip/")
    assert indices(clip.frames) == list(range(1, 13)) and clip.frames.shape == (12, 16, 16, 3)
    assert clip.frames.dtype == np.uint8 and clip.frames.flags.c_contiguous and clip.seconds == 0
    assert indices(featurizer(stride=4)(str(folder), "clip/").frames) == [1, 5, 9]
    assert indices(featurizer(fps=5)(folder, "clip/").frames) == list(range(1, 13))  # no timing: fps ignored
    assert natural_key("frame_2.png") < natural_key("frame_10.png")


def test_frame_folder_cut_and_colours(tmp_path):
    folder = frame_folder(tmp_path / "clip", 12, ext=".jpg", size=(256, 256))
    clip = featurizer(max_frames=4, stride=2)(folder, "clip/")
    assert clip.cut and indices(clip.frames) == [1, 3, 5, 7]
    assert np.abs(clip.frames[0, 14, 12].astype(int) - BLUE).max() < 30  # JPEG draft + BOX keep colour


def test_frame_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty/: no frame images"):
        featurizer()(tmp_path / "empty", "empty/")
    bad = frame_folder(tmp_path / "bad", 3)
    (bad / "frame_2.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"bad/: unreadable frame image 'frame_2\.png'"):
        featurizer()(bad, "bad/")
    mixed = frame_folder(tmp_path / "mixed", 3)
    Image.fromarray(picture(9, 48, 32)).save(mixed / "frame_3.png")
    with pytest.raises(DataError, match=r"mixed/: frame image 'frame_3\.png' is 48x32 but 'frame_1\.png' is 64x64"):
        featurizer()(mixed, "mixed/")


# ---------------------------------------------------------------- bad files


def test_empty_missing_and_non_video_inputs(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    cases = [
        (b"", r"file\[0\] 'a\.mp4': empty file"),
        (tmp_path / "empty.mp4", r"file\[0\] 'a\.mp4': empty file"),
        (tmp_path / "missing.mp4", r"file\[0\] 'a\.mp4': no such file or folder"),
        (b"this is a text file, not a video" * 4, r"file\[0\] 'a\.mp4': not a readable video \(Invalid data"),
    ]
    for source, message in cases:
        with pytest.raises(DataError, match=message):
            featurizer()(source, "file[0] 'a.mp4'")


def test_a_still_image_is_not_a_one_frame_video(tmp_path):
    folder = frame_folder(tmp_path / "clip", 1)
    for ext, name in ((".png", "PNG"), (".jpg", "JPEG")):
        path = tmp_path / f"still{ext}"
        Image.fromarray(picture(3)).save(path)
        with pytest.raises(DataError, match=rf"s: a {name} image, not a video \(a clip stored as frame images"):
            featurizer()(path, "s")
        with pytest.raises(DataError, match=rf"s: a {name} image, not a video"):
            featurizer()(path.read_bytes(), "s")
    assert len(featurizer()(folder, "folder").frames) == 1  # as a folder it is a clip


def test_audio_only_file_has_no_video_stream():
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    with pytest.raises(DataError, match=r"a\.wav: no video stream \(streams: audio\)"):
        featurizer()(buffer.getvalue(), "a.wav")


def test_a_stream_without_frames_is_an_error(tmp_path):
    fragmented = encode(tmp_path / "frag.mp4", frames=10, options={"movflags": "frag_keyframe+empty_moov"})
    header_only = fragmented[: fragmented.index(b"moof") - 4]  # the moov, no fragments
    with pytest.raises(DataError, match=r"frag\.mp4: no video frames decoded"):
        featurizer()(header_only, "frag.mp4")


def test_truncated_files_are_errors_not_shorter_clips(tmp_path):
    # moov at the end (the default): a cut-off MP4 does not open at all
    plain = encode(frames=60)
    with pytest.raises(DataError, match=r"cut\.mp4: not a readable video"):
        featurizer()(plain[: len(plain) // 2], "cut.mp4")
    # faststart: frames decode until the decoder meets the cut, then it raises
    fast = encode(tmp_path / "fast.mp4", frames=60, options={"movflags": "+faststart"})
    with pytest.raises(DataError, match=r"fast\.mp4: decoding failed after \d+ frames .*truncated or corrupt"):
        featurizer()(fast[: int(len(fast) * 0.9)], "fast.mp4")
    # Matroska decodes to the cut silently: the header's duration gives it away
    mkv = encode(frames=60, fmt="matroska")
    with pytest.raises(DataError, match=r"cut\.mkv: truncated or corrupt: 0\.\d+ s of video decoded but the "
                                        r"matroska header declares 2\.00 s"):
        featurizer()(mkv[: int(len(mkv) * 0.6)], "cut.mkv")
    avi = encode(frames=60, fmt="avi", codec="mpeg4")
    with pytest.raises(DataError, match=r"cut\.avi: truncated or corrupt"):
        featurizer()(avi[: int(len(avi) * 0.8)], "cut.avi")


# ---------------------------------------------------------------- serving limits


def test_refuse_longer_by_declared_duration():
    long = encode(frames=60, fps=30)  # 2 s
    with pytest.raises(ClipTooLong, match=r"file\[1\] 'a\.mp4': 2\.0 s of video; the limit is 1\.5 s "
                                          r"\(data\.video\.max_seconds\)"):
        featurizer(refuse_longer=True, max_seconds=1.5)(long, "file[1] 'a.mp4'")
    assert len(featurizer(refuse_longer=True, max_seconds=2.0)(long, "a.mp4").frames) == 60
    assert issubclass(ClipTooLong, DataError)


def test_refuse_longer_by_frames_instead_of_cutting(tmp_path):
    with pytest.raises(ClipTooLong, match=r"a\.mp4: more than 5 frames .*\(data\.video\.max_frames\)"):
        featurizer(refuse_longer=True, max_frames=5)(encode(frames=20), "a.mp4")
    with pytest.raises(ClipTooLong, match=r"clip/: more than 5 frames"):
        featurizer(refuse_longer=True, max_frames=5)(frame_folder(tmp_path / "clip", 8), "clip/")
    assert len(featurizer(refuse_longer=True, max_frames=5, stride=4)(encode(frames=20), "a.mp4").frames) == 5


def test_refuse_longer_by_timestamps_when_the_header_says_nothing(monkeypatch):
    monkeypatch.setattr(video, "_probe", lambda container, stream: Probe(None, None))
    with pytest.raises(ClipTooLong,
                       match=r"a\.mp4: video runs past 1 s; the limit is 1 s \(data\.video\.max_seconds\)"):
        featurizer(refuse_longer=True, max_seconds=1.0, fps=2)(encode(frames=60), "a.mp4")
