"""Audio uploads on the serving routes: upload reading, duration limits, form models and
audio cards (no Ray), then the whole Serve application over real HTTP on the session's
Ray head.

The application is deployed once for the module, serving the tiny audio classifier and
speech recognizer (random weights, 8 kHz, at most 4 s) beside a text classifier (for
JSON/upload mismatches), with small limits so each can be hit with a small request:
4 files, 3 s per file (below the models' own 4 s) and 120 kB per upload body.
"""

from __future__ import annotations

import asyncio
import io

import httpx
import pytest
from fastapi import UploadFile
from pydantic import ValidationError
from starlette.datastructures import FormData

from conftest import assert_error, bursts_until_batched, call_deployment, serve_app, wav_bytes
from conftest import post_files as post
from pipelines.checkpoint import load_inference
from pipelines.config import AudioConfig
from pipelines.errors import ConfigError, DataError
from pipelines.media.audio.features import AudioFeaturizer
from serving.audio import DurationLimit, Upload, UploadFeaturizer, header_seconds, most_frames
from serving.bodies import form_fields, part_name
from serving.catalog import read_cards
from serving.errors import TooLarge, describe_error
from serving.limits import ServeLimits
from serving.schemas import request_models

pytestmark = pytest.mark.serve  # Ray Serve on the shared head: the Ray tier's shards keep these files together

LIMITS = ServeLimits(max_body_bytes=4096, max_upload_bytes=120_000, max_inputs=4, max_audio_seconds=3.0,
                     max_batch_tokens=1024, batch_wait_timeout_s=0.05, max_beam_size=4, max_generate_length=32)
AUDIO = AudioConfig(sample_rate=8000, n_mels=16, max_seconds=4.0)  # the tiny checkpoints' data.audio
DIGITS, SPEECH, TEXT = "tiny_digits", "tiny_speech", "tiny_sentiment"
RECORDINGS = {  # name -> bytes: formats, rates and channel counts an upload may come in
    "tone.wav": wav_bytes(0.5, freq=440.0),
    "tone.flac": wav_bytes(0.7, freq=880.0, fmt="FLAC"),
    "stereo16k.wav": wav_bytes(0.6, rate=16000, freq=300.0, channels=2),
    "deep24.wav": wav_bytes(1.2, freq=150.0, subtype="PCM_24"),
}
HALF_WAV = RECORDINGS["tone.wav"][: len(RECORDINGS["tone.wav"]) // 2]
"""A WAV cut off mid-download: its header promises twice the samples there are."""


@pytest.fixture(autouse=True)
def one_thread():
    """The in-process references run tiny tensors (the replicas use one thread too)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def silence(seconds: float, rate: int = 8000) -> bytes:
    """A FLAC of digital silence: a few bytes per second, so a long one fits any body limit."""
    import numpy as np
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(int(seconds * rate), dtype=np.int16), rate, format="FLAC")
    return buffer.getvalue()


def uploads(*names: str) -> list[Upload]:
    return [Upload(part_name(i, name), RECORDINGS[name]) for i, name in enumerate(names)]


# ---------------------------------------------------------------- no Ray


def test_duration_limit_is_the_lower_of_the_model_and_the_server():
    assert DurationLimit.of(AUDIO, LIMITS) == DurationLimit(3.0, "max_audio_seconds")
    assert DurationLimit.of(AUDIO, ServeLimits()) == DurationLimit(4.0, "the model's data.audio.max_seconds")
    with pytest.raises(TooLarge, match=r"^file\[0\] 'a.wav': 3.50 s of audio; the limit is 3 s \(max_audio_seconds\)$"):
        DurationLimit(3.0, "max_audio_seconds").check("file[0] 'a.wav'", 3.5)
    DurationLimit(3.0, "max_audio_seconds").check("file[0]", 3.0)  # at the limit is fine


def test_serve_limits_check_the_upload_limits():
    with pytest.raises(ConfigError, match="max_audio_seconds must be a number > 0, got 0"):
        ServeLimits(max_audio_seconds=0)
    with pytest.raises(ConfigError, match="max_upload_bytes must be an integer >= 1, got 2.5"):
        ServeLimits(max_upload_bytes=2.5)
    assert ServeLimits.from_dict({"max_audio_seconds": 12}).max_audio_seconds == 12


def test_upload_featurizer_reads_every_format_at_the_model_rate():
    featurizer = AudioFeaturizer(AUDIO)
    read = UploadFeaturizer(featurizer, DurationLimit.of(AUDIO, LIMITS))
    frames = read(uploads(*RECORDINGS))
    assert [x.shape[1] for x in frames] == [16] * len(RECORDINGS)
    assert [len(x) for x in frames] == [52, 72, 64, 124]  # 100 frames/s whatever the rate, padded to multiples of 4
    longest = read([Upload("file[0]", wav_bytes(3.0))])[0]
    assert len(longest) == most_frames(AUDIO, 3.0) == 304  # 301 frames padded to 304: what check_limits reckons with


def test_upload_featurizer_refuses_long_files_from_their_header(monkeypatch):
    featurizer = AudioFeaturizer(AUDIO)
    read = UploadFeaturizer(featurizer, DurationLimit.of(AUDIO, LIMITS))
    quiet = silence(600.0)
    assert len(quiet) < 30_000 and header_seconds(quiet) == pytest.approx(600.0)
    monkeypatch.setattr(featurizer, "decode", lambda *_: pytest.fail("decoded a file its header refuses"))
    with pytest.raises(TooLarge, match=r"file\[0\] 'quiet.flac': 600.00 s of audio; the limit is 3 s"):
        read([Upload("file[0] 'quiet.flac'", quiet)])
    monkeypatch.undo()
    monkeypatch.setattr("serving.audio.header_seconds", lambda data: None)  # no usable header: decode decides
    with pytest.raises(TooLarge, match="3.50 s of audio"):
        read([Upload("file[0]", wav_bytes(3.5))])


def test_header_seconds_without_a_usable_header():
    assert header_seconds(wav_bytes(0.5, rate=16000)) == pytest.approx(0.5)
    assert header_seconds(b"") is None
    assert header_seconds(b"just some text") is None
    unknown = bytearray(wav_bytes(0.5, fmt="FLAC"))
    unknown[21] &= 0xF0  # STREAMINFO's 36-bit sample count: 0 means "unknown"
    unknown[22:26] = bytes(4)
    assert header_seconds(bytes(unknown)) is None


@pytest.mark.parametrize(("data", "message"), [
    (b"", r"^file\[0\] 'x': empty file$"),
    (b"hello, this is not a recording", r"^file\[0\] 'x': not a readable audio file"),
    (HALF_WAV, r"^file\[0\] 'x': truncated WAV file \(\d+ bytes of samples missing\)"),
    (wav_bytes(0.01), r"^file\[0\] 'x': too short \(10 ms\)"),
])
def test_upload_featurizer_names_bad_files(data, message):
    read = UploadFeaturizer(AudioFeaturizer(AUDIO), DurationLimit.of(AUDIO, LIMITS))
    with pytest.raises(DataError, match=message) as info:
        read([Upload("file[0] 'x'", data)])
    assert not isinstance(info.value, TooLarge)


def test_forms_become_upload_models():
    form = FormData([("file", UploadFile(io.BytesIO(b"a"), filename="a.wav")),
                     ("beam_size", "2"), ("file", UploadFile(io.BytesIO(b"b"), filename="b.flac"))])
    fields = form_fields(form)
    assert [f.filename for f in fields["file"]] == ["a.wav", "b.flac"] and fields["beam_size"] == "2"
    upload = request_models(LIMITS).body("generate", "audio")
    assert upload.model_validate(fields).beam_size == 2  # form fields are text
    assert form_fields(FormData([("beam_size", "1"), ("beam_size", "2")])) == {"beam_size": ["1", "2"]}
    assert (part_name(1, "seven.wav"), part_name(0, None), part_name(2, "")) == (
        "file[1] 'seven.wav'", "file[0]", "file[2]")


@pytest.mark.parametrize(("fields", "errors"), [
    ({"beam_size": "2"}, ["file: is required, send one or more multipart/form-data parts named 'file'"]),
    ({"file": ["text"]}, ["file[0]: must be a file part (one with a filename), got a text field"]),
    ({"file": "many"}, ["file: has 5 items; the limit is 4"]),
    ({"file": "one", "beam_size": "9", "max_length": "0"}, ["beam_size: must be <= 4, got '9'",
                                                            "max_length: must be >= 1, got '0'"]),
    ({"file": "one", "beam_size": "two"}, ["beam_size: must be an integer, got a string"]),
    ({"file": "one", "beam_size": ["1", "2"]}, ["beam_size: must be an integer, got an array"]),
    ({"file": "one", "beam": "2"}, ["beam: is not a known field"]),
])
def test_upload_models_name_what_is_wrong(fields, errors):
    files = {"one": 1, "many": 5}
    if isinstance(fields.get("file"), str):
        fields = {**fields, "file": [UploadFile(io.BytesIO(b""), filename="a.wav")] * files[fields["file"]]}
    with pytest.raises(ValidationError) as info:
        request_models(LIMITS).body("generate", "audio").model_validate(fields)
    described = [describe_error(e) for e in info.value.errors()]
    assert len(described) == len(errors), described
    for got, want in zip(described, errors):
        assert got.startswith(want), described


def test_cards_of_audio_checkpoints(tiny_audio_classifier, tiny_speech_recognizer, tiny_checkpoint):
    digits, speech, text = read_cards([tiny_audio_classifier, tiny_speech_recognizer, tiny_checkpoint])
    assert (digits.name, digits.kind, digits.task, digits.input) == (DIGITS, "seq2vec", "classify", "audio")
    assert digits.labels == tuple("0123456789") and digits.audio.max_seconds == 4.0
    assert (speech.task, speech.input, speech.decode.beam_size) == ("generate", "audio", 2)
    assert speech.audio.sample_rate == 8000
    assert (text.input, text.audio) == ("text", None)


def test_app_builder_checks_audio_models_against_the_limits(tiny_audio_classifier, tiny_speech_recognizer):
    from ray.serve import Application

    from serving.app import app_builder

    both = [str(tiny_audio_classifier), str(tiny_speech_recognizer)]
    assert isinstance(app_builder({"checkpoints": both}), Application)
    with pytest.raises(ConfigError, match=r"one input may have 404 frames \(4 s, the model's data.audio.max_seconds\), "
                                          r"more than a whole batch: 320 frames \(max_batch_tokens 80 x 4\)"):
        app_builder({"checkpoints": both[:1], "limits": {"max_batch_tokens": 80}})
    with pytest.raises(ConfigError, match=r"304 frames \(3 s, max_audio_seconds\), which at max_beam_size 16 makes "
                                          r"4864 decoder-row frames, more than a whole batch: 4096 frames"):
        app_builder({"checkpoints": both[1:], "limits": {"max_batch_tokens": 1024, "max_audio_seconds": 3}})


# ---------------------------------------------------------------- on Ray Serve


@pytest.fixture(scope="module")
def client(ray_head, tiny_audio_classifier, tiny_speech_recognizer, tiny_checkpoint):
    """An HTTP client for the deployed application (deleted again after the module)."""
    from serving.app import build_app

    app = build_app([tiny_audio_classifier, tiny_speech_recognizer, tiny_checkpoint], LIMITS)
    with serve_app(ray_head, app) as url, httpx.Client(base_url=url, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def classifier(tiny_audio_classifier):
    """The same checkpoint in-process, without Serve."""
    from pipelines.apps.audio_classify.predictor import AudioClassifier

    return AudioClassifier(load_inference(tiny_audio_classifier))


@pytest.fixture(scope="module")
def recognizer(tiny_speech_recognizer):
    from pipelines.apps.speech_to_text.predictor import SpeechRecognizer

    return SpeechRecognizer(load_inference(tiny_speech_recognizer))


@pytest.mark.ray
def test_models_list_inputs_and_docs_show_both_bodies(client):
    assert client.get("/v1/models").json() == {"models": [
        {"name": DIGITS, "kind": "seq2vec", "task": "classify", "labels": list("0123456789"), "input": "audio"},
        {"name": SPEECH, "kind": "seq2seq", "task": "generate", "input": "audio"},
        {"name": TEXT, "kind": "seq2vec", "task": "classify", "labels": ["negative", "positive"]},
    ]}
    openapi = client.get("/openapi.json")
    assert openapi.status_code == 200
    for route in ("classify", "generate"):
        body = openapi.json()["paths"][f"/v1/models/{{name}}/{route}"]["post"]["requestBody"]["content"]
        assert set(body) == {"application/json", "multipart/form-data"}
        assert body["multipart/form-data"]["schema"]["properties"]["file"]["maxItems"] == LIMITS.max_inputs
    assert client.get("/docs").status_code == 200


@pytest.mark.ray
def test_classify_answers_each_upload_in_order(client, classifier):
    names = list(RECORDINGS)  # WAV, FLAC, stereo 16 kHz (resampled), 24-bit
    want = classifier.predict([(n, RECORDINGS[n]) for n in names])
    response = post(client, DIGITS, "classify", [(n, RECORDINGS[n]) for n in names])
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(names)
    for got, expected in zip(predictions, want):
        assert got["label"] in classifier.labels and got["label"] == expected["label"]
        assert got["scores"] == pytest.approx(expected["scores"], abs=1e-4)
    backwards = post(client, DIGITS, "classify", [(n, RECORDINGS[n]) for n in reversed(names)]).json()
    for got, expected in zip(backwards["predictions"], want[::-1]):
        assert got["scores"] == pytest.approx(expected["scores"], abs=1e-4)


@pytest.mark.ray
def test_generate_transcribes_each_upload(client, recognizer):
    names = ["tone.wav", "stereo16k.wav", "tone.flac"]
    blobs = [RECORDINGS[n] for n in names]
    for options in ({"beam_size": 1, "max_length": 8}, {}):  # {}: the recipe's decode (beam 2, 12 tokens)
        response = post(client, SPEECH, "generate", list(zip(names, blobs)), **options)
        assert response.status_code == 200, response.text
        outputs = response.json()["outputs"]
        want = recognizer.predict(list(zip(names, blobs)), **options)
        assert len(outputs) == len(names)
        for got, expected in zip(outputs, want):
            assert set(got) == {"text", "score"} and isinstance(got["text"], str)
            assert got["text"] == expected["text"]
            assert got["score"] == pytest.approx(expected["score"], abs=1e-4)


@pytest.mark.ray
def test_concurrent_uploads_share_batches(client):
    """Uploads that arrive together can share a forward pass (each upload is decoded in the
    ingress before it queues, so whether one burst overlaps depends on timing)."""
    from serving.app import APP_NAME

    names = [list(RECORDINGS)[i % len(RECORDINGS)] for i in range(16)]

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=60) as http:
            return await asyncio.gather(*(http.post(f"/v1/models/{DIGITS}/classify",
                                                    files=[("file", (n, RECORDINGS[n]))]) for n in names))

    def burst() -> None:
        assert [r.status_code for r in asyncio.run(send_all())] == [200] * len(names)

    stats = bursts_until_batched(burst, lambda: call_deployment("Ingress", "batch_stats", DIGITS, app_name=APP_NAME),
                                 lambda stats: stats["largest_batch_requests"] > 1)
    assert stats["largest_batch_requests"] > 1, stats
    assert stats["largest_batch_tokens"] <= LIMITS.max_batch_tokens * 4, stats  # frames: 4 per token


GOOD = ("tone.wav", RECORDINGS["tone.wav"])


@pytest.mark.ray
@pytest.mark.parametrize(("model", "task", "files", "fields", "status", "fragments"), [
    (DIGITS, "classify", [("empty.wav", b"")], {}, 422, ["file[0] 'empty.wav': empty file"]),
    (DIGITS, "classify", [GOOD, ("notes.txt", b"not a recording at all")], {}, 422,
     ["file[1] 'notes.txt': not a readable audio file"]),
    (DIGITS, "classify", [("cut.wav", HALF_WAV)], {}, 422,
     ["file[0] 'cut.wav': truncated WAV file"]),
    (SPEECH, "generate", [("click.wav", wav_bytes(0.01))], {}, 422, ["file[0] 'click.wav': too short (10 ms)"]),
    (DIGITS, "classify", [GOOD, ("long.wav", wav_bytes(3.5))], {}, 413,
     ["file[1] 'long.wav': 3.50 s of audio; the limit is 3 s (max_audio_seconds)"]),
    (SPEECH, "generate", [("quiet.flac", silence(600.0))], {}, 413, ["file[0] 'quiet.flac': 600.00 s of audio"]),
    (DIGITS, "classify", [GOOD] * 5, {}, 422, ["file: has 5 items; the limit is 4"]),
    (SPEECH, "generate", [], {"beam_size": 2}, 422, ["file: is required", "multipart/form-data parts named 'file'"]),
    (SPEECH, "generate", [GOOD], {"beam_size": 9}, 422, ["beam_size: must be <= 4, got '9'"]),
    (SPEECH, "generate", [GOOD], {"beam_size": "two"}, 422, ["beam_size: must be an integer, got a string"]),
    (SPEECH, "generate", [GOOD], {"max_length": 33}, 422, ["max_length: must be <= 32"]),
    (DIGITS, "classify", [GOOD], {"beam_size": 2}, 422, ["beam_size: is not a known field"]),
    (DIGITS, "classify", [(f"{i}.wav", wav_bytes(2.9)) for i in range(3)], {}, 413,  # 3 x 46 kB
     ["request body is too large", f"the limit is {LIMITS.max_upload_bytes} bytes (max_upload_bytes)"]),
    (TEXT, "classify", [GOOD], {}, 415, [f"model '{TEXT}' takes texts as JSON, not multipart/form-data",
                                         "Content-Type: application/json"]),
    (DIGITS, "generate", [GOOD], {}, 404, ["no /generate route", f"/v1/models/{DIGITS}/classify"]),
])
def test_bad_uploads_answer_4xx(client, model, task, files, fields, status, fragments):
    assert_error(post(client, model, task, files, **fields), status, *fragments)


@pytest.mark.ray
def test_audio_models_refuse_json_and_malformed_forms(client):
    assert_error(client.post(f"/v1/models/{DIGITS}/classify", json={"inputs": ["one"]}), 415,
                 f"model '{DIGITS}' takes audio uploads, not application/json",
                 "multipart/form-data parts named 'file'")
    assert_error(client.post(f"/v1/models/{SPEECH}/generate", content=b"--x\r\ngarbage",
                             headers={"content-type": "multipart/form-data"}), 400,
                 "malformed multipart/form-data body")
    # text models keep their JSON route beside the audio ones (the rest: tests/test_serving.py)
    assert client.post(f"/v1/models/{TEXT}/classify", json={"inputs": ["still fine"]}).status_code == 200
