"""Video uploads on the serving routes: upload reading, duration and frame limits and
video cards (no Ray), then the whole Serve application over real HTTP on the session's
Ray head.

The application is deployed once for the module, serving the tiny video classifier and
captioner (random weights, 16x16 frames, at most 24 frames and 10 s) beside a text
classifier (for JSON/upload mismatches), with small limits so each can be hit with a
small request: 4 files, 8 s per file (below the models' own 10 s) and 60 kB per upload
body. Every response goes through :func:`no_server_error`: a 5xx fails the test that got it.
"""

from __future__ import annotations

import io
import zipfile

import httpx
import numpy as np
import pytest

from conftest import assert_error, mp4_bytes, serve_app, wav_bytes
from conftest import post_files as post
from pipelines.checkpoint import load_inference
from pipelines.config import VideoConfig
from pipelines.errors import ConfigError, DataError
from pipelines.media.video.decode import Probe, VideoFeaturizer
from serving.bodies import part_name
from serving.catalog import read_cards
from serving.errors import TooLarge
from serving.limits import ServeLimits
from serving.uploads import Upload
from serving.video import DurationLimit, UploadClips

pytestmark = pytest.mark.serve  # Ray Serve on the shared head: the Ray tier's shards keep these files together

LIMITS = ServeLimits(max_body_bytes=4096, max_upload_bytes=60_000, max_inputs=4, max_video_seconds=8.0,
                     max_batch_tokens=256, batch_wait_timeout_s=0.05, max_beam_size=4, max_generate_length=32)
VIDEO = VideoConfig(size=16, max_frames=24, max_seconds=10.0)  # the tiny checkpoints' data.video
CLASSIFIER, CAPTIONER, TEXT = "tiny_video", "tiny_caption", "tiny_sentiment"
CLIPS = {  # name -> bytes: H.264 MP4s of other sizes, rates and lengths than the model's 16x16
    "circle.mp4": mp4_bytes(frames=8, size=32, fps=10, seed=0),
    "small.mp4": mp4_bytes(frames=12, size=16, fps=25, seed=1),
    "wide.mp4": mp4_bytes(frames=5, size=48, fps=5, seed=2),
}
LONG = mp4_bytes(frames=12, size=16, fps=1)
"""12 s at 1 fps in 3 kB: its header declares more than both limits."""
NINE_SECONDS = mp4_bytes(frames=9, size=16, fps=1)
"""Over the server's 8 s, under the model's 10 s."""
MANY_FRAMES = mp4_bytes(frames=30, size=32, fps=10)
"""3 s, but 30 frames: more than the model's max_frames (24)."""
HALF_MP4 = CLIPS["circle.mp4"][: len(CLIPS["circle.mp4"]) // 2]
"""An MP4 cut off mid-download; its index (``moov``) comes last, so nothing is left to read."""


def png_bytes(seed: int = 0, fmt: str = "PNG") -> bytes:
    """One 32x32 frame image."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


FASTSTART = mp4_bytes(frames=20, faststart=True)
CUT_MID_STREAM = FASTSTART[: len(FASTSTART) * 3 // 4]
FRAMES = {f"frame_{i:03d}.png": png_bytes(i) for i in range(3)}
"""A clip as frame images: what training reads from a folder, but not an upload format."""


@pytest.fixture(autouse=True)
def one_thread():
    """The in-process references run tiny tensors (the replicas use one thread too)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reader(limits: ServeLimits = LIMITS) -> UploadClips:
    """How a replica of the tiny models reads uploads under ``limits``."""
    return UploadClips(VideoFeaturizer(VIDEO, refuse_longer=True), DurationLimit.of(VIDEO, limits))


def uploads(*names: str) -> list[Upload]:
    return [Upload(part_name(i, name), CLIPS[name]) for i, name in enumerate(names)]


# ---------------------------------------------------------------- no Ray


def test_duration_limit_is_the_lower_of_the_model_and_the_server():
    assert DurationLimit.of(VIDEO, LIMITS) == DurationLimit(8.0, "max_video_seconds")
    assert DurationLimit.of(VIDEO, ServeLimits()) == DurationLimit(10.0, "the model's data.video.max_seconds")
    with pytest.raises(TooLarge,
                       match=r"^file\[0\] 'a.mp4': 12.00 s of video; the limit is 8 s \(max_video_seconds\)$"):
        DurationLimit(8.0, "max_video_seconds").check("file[0] 'a.mp4'", 12.0)
    DurationLimit(8.0, "max_video_seconds").check("file[0]", 8.0)  # at the limit is fine


def test_max_video_seconds_is_a_checked_limit_and_a_cli_flag():
    import argparse

    from serving.cli import add_serve_arguments, limits_from_args

    assert ServeLimits().max_video_seconds == 60.0
    with pytest.raises(ConfigError, match="max_video_seconds must be a number > 0, got 0"):
        ServeLimits(max_video_seconds=0)
    assert ServeLimits.from_dict({"max_video_seconds": 12}).max_video_seconds == 12
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["ckpt", "--max-video-seconds", "12.5"])
    assert limits_from_args(args).max_video_seconds == 12.5


def test_upload_clips_read_mp4s_as_the_featurizer_does():
    frames = reader()(uploads(*CLIPS))
    assert [x.shape for x in frames] == [(8, 16, 16, 3), (12, 16, 16, 3), (5, 16, 16, 3)]
    assert all(x.dtype == np.uint8 for x in frames)
    direct = VideoFeaturizer(VIDEO)(CLIPS["wide.mp4"], "wide.mp4").frames
    assert np.array_equal(frames[2], direct)
    assert len(reader()([Upload("file[0]", FASTSTART)])[0]) == 20  # index first or last: both read


class NoDecoding:
    """A featurizer that may probe but must not decode."""

    def __init__(self, probe: Probe | None = None) -> None:
        self.real = VideoFeaturizer(VIDEO, refuse_longer=True)
        self.declared = probe

    def probe(self, data: bytes, origin: str) -> Probe:
        return self.declared or self.real.probe(data, origin)

    def __call__(self, data: bytes, origin: str):
        pytest.fail("decoded a file its header refuses")


def test_upload_clips_refuse_long_clips_from_their_header():
    assert VideoFeaturizer(VIDEO).probe(LONG, "long").seconds == pytest.approx(12.0) and len(LONG) < 5000
    read = UploadClips(NoDecoding(), DurationLimit.of(VIDEO, LIMITS))
    with pytest.raises(TooLarge, match=r"^file\[0\] 'long.mp4': 12.00 s of video; the limit is 8 s "
                                       r"\(max_video_seconds\)$"):
        read([Upload("file[0] 'long.mp4'", LONG)])
    read = UploadClips(NoDecoding(), DurationLimit.of(VIDEO, ServeLimits()))
    with pytest.raises(TooLarge, match=r"12.00 s of video; the limit is 10 s \(the model's data.video.max_seconds\)"):
        read([Upload("file[0]", LONG)])


def test_upload_clips_check_what_was_decoded_when_the_header_is_silent():
    featurizer = VideoFeaturizer(VIDEO, refuse_longer=True)
    featurizer.probe = lambda data, origin: Probe(None, None)  # a raw stream: no declared duration
    read = UploadClips(featurizer, DurationLimit.of(VIDEO, LIMITS))
    with pytest.raises(TooLarge, match=r"^file\[0\] 'nine.mp4': 9.00 s of video; the limit is 8 s "
                                       r"\(max_video_seconds\)$"):
        read([Upload("file[0] 'nine.mp4'", NINE_SECONDS)])
    with pytest.raises(TooLarge, match=r"^file\[0\] 'long.mp4': .* the limit is 10 s \(data.video.max_seconds\)$"):
        read([Upload("file[0] 'long.mp4'", LONG)])  # the featurizer itself keeps to the model's own limit


def test_upload_clips_refuse_more_frames_than_the_model_takes():
    with pytest.raises(TooLarge, match=r"^file\[1\] 'many.mp4': more than 24 frames after sampling; the limit is 24 "
                                       r"frames \(data.video.max_frames\)$"):
        reader()([Upload("file[0]", CLIPS["circle.mp4"]), Upload("file[1] 'many.mp4'", MANY_FRAMES)])


@pytest.mark.parametrize(("data", "message"), [
    (b"", r"^file\[0\] 'x': empty file$"),
    (b"hello, this is not a video", r"^file\[0\] 'x': not a readable video"),
    (np.random.default_rng(0).bytes(5000), r"^file\[0\] 'x': not a readable video"),
    (HALF_MP4, r"^file\[0\] 'x': not a readable video"),
    (CUT_MID_STREAM, r"^file\[0\] 'x': decoding failed after \d+ frames .*truncated or corrupt"),
    (wav_bytes(0.5), r"^file\[0\] 'x': no video stream \(streams: audio\)$"),
    (png_bytes(), r"^file\[0\] 'x': a PNG image, not a video \(.*uploads are encoded video files"),
    (png_bytes(fmt="JPEG"), r"^file\[0\] 'x': a JPEG image, not a video"),
])
def test_upload_clips_name_bad_files(data, message):
    with pytest.raises(DataError, match=message) as info:
        reader()([Upload("file[0] 'x'", data)])
    assert not isinstance(info.value, TooLarge)


def test_cards_of_video_checkpoints(tiny_video_classifier, tiny_video_captioner, tiny_checkpoint):
    from pipelines.media.video.synthetic import CLASSES

    clips, captions, text = read_cards([tiny_video_classifier, tiny_video_captioner, tiny_checkpoint])
    assert (clips.name, clips.kind, clips.task, clips.input) == (CLASSIFIER, "seq2vec", "classify", "video")
    assert clips.labels == tuple(CLASSES) and clips.video == VIDEO and clips.audio is None
    assert (captions.kind, captions.task, captions.input, captions.decode.beam_size) == (
        "vec2seq", "generate", "video", 2)
    assert (text.input, text.video) == ("text", None)


def test_app_builder_checks_video_models_against_the_limits(tiny_video_classifier, tiny_video_captioner):
    from ray.serve import Application

    from serving.app import app_builder

    both = [str(tiny_video_classifier), str(tiny_video_captioner)]
    assert isinstance(app_builder({"checkpoints": both, "limits": {"max_video_seconds": 5}}), Application)
    with pytest.raises(ConfigError, match=r"one input may have 24 frames \(data.video.max_frames\), more than a "
                                          r"whole batch: max_batch_tokens 20"):
        app_builder({"checkpoints": both[:1], "limits": {"max_batch_tokens": 20}})
    with pytest.raises(ConfigError, match=r"24 frames \(data.video.max_frames\), which at max_beam_size 16 makes "
                                          r"384 decoder-row frames, more than a whole batch: max_batch_tokens 256"):
        app_builder({"checkpoints": both[1:], "limits": {"max_batch_tokens": 256}})


# ---------------------------------------------------------------- on Ray Serve


def no_server_error(response: httpx.Response) -> None:
    """httpx response hook: a client mistake is never a 5xx, so any 5xx fails at once."""
    if response.status_code >= 500:
        response.read()
        pytest.fail(f"{response.request.method} {response.request.url.path} answered "
                    f"{response.status_code}: {response.text}")


@pytest.fixture(scope="module")
def client(ray_head, tiny_video_classifier, tiny_video_captioner, tiny_checkpoint):
    """An HTTP client for the deployed application (deleted again after the module)."""
    from serving.app import build_app

    app = build_app([tiny_video_classifier, tiny_video_captioner, tiny_checkpoint], LIMITS)
    with serve_app(ray_head, app) as url, httpx.Client(base_url=url, timeout=60,
                                                       event_hooks={"response": [no_server_error]}) as http:
        yield http


@pytest.fixture(scope="module")
def classifier(tiny_video_classifier):
    """The same checkpoint in-process, without Serve."""
    from pipelines.apps.video_classify.predictor import VideoClassifier

    return VideoClassifier(load_inference(tiny_video_classifier))


@pytest.fixture(scope="module")
def captioner(tiny_video_captioner):
    from pipelines.apps.video_caption.predictor import VideoCaptioner

    return VideoCaptioner(load_inference(tiny_video_captioner))


@pytest.mark.ray
def test_models_list_video_inputs_and_docs_show_uploads(client):
    from pipelines.media.video.synthetic import CLASSES

    assert client.get("/v1/models").json() == {"models": [
        {"name": CLASSIFIER, "kind": "seq2vec", "task": "classify", "labels": list(CLASSES), "input": "video"},
        {"name": CAPTIONER, "kind": "vec2seq", "task": "generate", "input": "video"},
        {"name": TEXT, "kind": "seq2vec", "task": "classify", "labels": ["negative", "positive"]},
    ]}
    for route in ("classify", "generate"):
        body = client.get("/openapi.json").json()["paths"][f"/v1/models/{{name}}/{route}"]["post"]["requestBody"]
        files = body["content"]["multipart/form-data"]["schema"]["properties"]["file"]
        assert files["maxItems"] == LIMITS.max_inputs and "at most 8 s" in files["description"]


@pytest.mark.ray
def test_classify_answers_each_video_in_order(client, classifier):
    names = list(CLIPS)
    want = classifier.predict([(n, CLIPS[n]) for n in names])
    response = post(client, CLASSIFIER, "classify", [(n, CLIPS[n]) for n in names])
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(names)
    for got, expected in zip(predictions, want):
        assert set(got) == {"label", "score", "scores"} and set(got["scores"]) == set(classifier.labels)
        assert got["label"] == expected["label"] and got["score"] == pytest.approx(max(got["scores"].values()))
        assert got["scores"] == pytest.approx(expected["scores"], abs=1e-4)
    backwards = post(client, CLASSIFIER, "classify", [(n, CLIPS[n]) for n in reversed(names)]).json()
    for got, expected in zip(backwards["predictions"], want[::-1]):
        assert got["scores"] == pytest.approx(expected["scores"], abs=1e-4)


@pytest.mark.ray
def test_generate_captions_each_video(client, captioner):
    names = ["wide.mp4", "circle.mp4"]
    blobs = [CLIPS[n] for n in names]
    for options in ({"beam_size": 1, "max_length": 8}, {"beam_size": 3}, {}):  # {}: the recipe's beam 2, 14 tokens
        response = post(client, CAPTIONER, "generate", list(zip(names, blobs)), **options)
        assert response.status_code == 200, response.text
        outputs = response.json()["outputs"]
        want = captioner.predict(list(zip(names, blobs)), **options)
        assert len(outputs) == len(names)
        for got, expected in zip(outputs, want):
            assert set(got) == {"text", "score"} and isinstance(got["text"], str)
            assert got["text"] == expected["text"]
            assert got["score"] == pytest.approx(expected["score"], abs=1e-4)


@pytest.mark.ray
def test_frame_images_are_not_an_upload_format(client):
    assert_error(post(client, CLASSIFIER, "classify", list(FRAMES.items())), 422,
                 "file[0] 'frame_000.png': a PNG image, not a video", "encoded video files")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, data in FRAMES.items():
            zipped.writestr(f"clip/{name}", data)
    assert_error(post(client, CAPTIONER, "generate", [("clip.zip", archive.getvalue())]), 422,
                 "file[0] 'clip.zip': not a readable video")


GOOD = ("circle.mp4", CLIPS["circle.mp4"])


@pytest.mark.ray
@pytest.mark.parametrize(("model", "task", "files", "fields", "status", "fragments"), [
    (CLASSIFIER, "classify", [("empty.mp4", b"")], {}, 422, ["file[0] 'empty.mp4': empty file"]),
    (CLASSIFIER, "classify", [GOOD, ("noise.mp4", np.random.default_rng(1).bytes(4000))], {}, 422,
     ["file[1] 'noise.mp4': not a readable video"]),
    (CLASSIFIER, "classify", [("half.mp4", HALF_MP4)], {}, 422, ["file[0] 'half.mp4': not a readable video"]),
    (CAPTIONER, "generate", [("cut.mp4", CUT_MID_STREAM)], {}, 422,
     ["file[0] 'cut.mp4': decoding failed after", "truncated or corrupt"]),
    (CAPTIONER, "generate", [GOOD, ("tone.wav", wav_bytes(0.5))], {}, 422,
     ["file[1] 'tone.wav': no video stream (streams: audio)"]),
    (CLASSIFIER, "classify", [GOOD, ("big.mp4", np.random.default_rng(2).bytes(LIMITS.max_upload_bytes))], {}, 413,
     ["request body is too large", f"the limit is {LIMITS.max_upload_bytes} bytes (max_upload_bytes)"]),
    (CLASSIFIER, "classify", [GOOD, ("long.mp4", LONG)], {}, 413,
     ["file[1] 'long.mp4': 12.00 s of video; the limit is 8 s (max_video_seconds)"]),
    (CAPTIONER, "generate", [("nine.mp4", NINE_SECONDS)], {}, 413,
     ["file[0] 'nine.mp4': 9.00 s of video; the limit is 8 s (max_video_seconds)"]),
    (CLASSIFIER, "classify", [("many.mp4", MANY_FRAMES)], {}, 413,
     ["file[0] 'many.mp4': more than 24 frames after sampling; the limit is 24 frames (data.video.max_frames)"]),
    (CAPTIONER, "generate", [("many.mp4", MANY_FRAMES)], {}, 413, ["(data.video.max_frames)"]),
    (CLASSIFIER, "classify", [GOOD] * 5, {}, 422, ["file: has 5 items; the limit is 4"]),
    (CAPTIONER, "generate", [], {"beam_size": 2}, 422, ["file: is required", "multipart/form-data parts named 'file'"]),
    (CLASSIFIER, "classify", [], {"note": "hi"}, 422, ["file: is required", "note: is not a known field"]),
    (CAPTIONER, "generate", [GOOD], {"beam_size": 9}, 422, ["beam_size: must be <= 4, got '9'"]),
    (CAPTIONER, "generate", [GOOD], {"max_length": 33}, 422, ["max_length: must be <= 32"]),
    (CLASSIFIER, "classify", [GOOD], {"beam_size": 2}, 422, ["beam_size: is not a known field"]),
    (TEXT, "classify", [GOOD], {}, 415, [f"model '{TEXT}' takes texts as JSON, not multipart/form-data"]),
    (CLASSIFIER, "generate", [GOOD], {}, 404, ["no /generate route", f"/v1/models/{CLASSIFIER}/classify"]),
])
def test_bad_uploads_answer_4xx(client, model, task, files, fields, status, fragments):
    assert_error(post(client, model, task, files, **fields), status, *fragments)


@pytest.mark.ray
def test_video_models_refuse_json(client):
    for model, task in ((CLASSIFIER, "classify"), (CAPTIONER, "generate")):
        assert_error(client.post(f"/v1/models/{model}/{task}", json={"inputs": ["a red circle"]}), 415,
                     f"model '{model}' takes video uploads, not application/json",
                     "multipart/form-data parts named 'file'", "MP4")
    # the models still answer after every refusal above
    assert post(client, CLASSIFIER, "classify", [GOOD]).status_code == 200
