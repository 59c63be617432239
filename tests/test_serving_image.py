"""Image uploads on the generate route: upload reading, the pixel limit and image cards
(no Ray); then the route over real HTTP: the FastAPI application ``rayseq serve`` runs
in each ingress replica, served by uvicorn on a local port with the models in-process
(no Ray), and the same application deployed on Ray Serve (``ray``).

The tiny captioner has random weights, reads 16x16 images and refuses more than 64x64
pixels; a text classifier sits beside it (for JSON/upload mismatches). The limits are
small so each can be hit with a small request: 4 files and 60 kB per upload body. Every
response goes through :func:`no_server_error`: a 5xx fails the test that got it.
"""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest

from conftest import assert_error, free_port, image_bytes, serve_app, wav_bytes
from conftest import post_files as post
from pipelines.checkpoint import load_inference
from pipelines.config import ImageConfig
from pipelines.errors import ConfigError, DataError
from pipelines.media.image.decode import ImageReader
from serving.bodies import part_name
from serving.catalog import read_cards
from serving.errors import TooLarge
from serving.image import UploadImages
from serving.limits import ServeLimits
from serving.uploads import Upload

pytestmark = pytest.mark.serve  # Ray Serve on the shared head: the Ray tier's shards keep these files together

LIMITS = ServeLimits(max_body_bytes=4096, max_upload_bytes=60_000, max_inputs=4, max_batch_tokens=256,
                     batch_wait_timeout_s=0.05, max_beam_size=4, max_generate_length=32)
IMAGE = ImageConfig(size=16, max_pixels=64 * 64)  # the tiny captioner's data.image
CAPTIONER, TEXT = "tiny_image_caption", "tiny_sentiment"
IMAGES = {  # name -> bytes: other sizes and formats than the model's 16x16
    "seven.png": image_bytes((40, 40), seed=0),
    "grey.png": image_bytes((64, 64), mode="L", seed=1),
    "photo.jpg": image_bytes((48, 32), fmt="JPEG", seed=2),
}
GOOD = ("seven.png", IMAGES["seven.png"])


@pytest.fixture(autouse=True)
def one_thread():
    """The in-process references run tiny tensors (the replicas use one thread too)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def uploads(*names: str) -> list[Upload]:
    return [Upload(part_name(i, name), IMAGES[name]) for i, name in enumerate(names)]


# ---------------------------------------------------------------- no Ray


def test_upload_images_read_each_file_as_the_reader_does():
    frames = UploadImages(ImageReader(IMAGE))(uploads(*IMAGES))
    assert [x.shape for x in frames] == [(1, 16, 16, 3)] * 3 and all(x.dtype == np.uint8 for x in frames)
    assert np.array_equal(frames[2], ImageReader(IMAGE)(IMAGES["photo.jpg"], "photo.jpg"))


@pytest.mark.parametrize("data, error, message", [
    (image_bytes((65, 64)), TooLarge, r"^file\[0\] 'x': 65x64 = 4,160 pixels; the limit is 4,096 "
                                      r"\(data.image.max_pixels\)$"),
    (b"", DataError, r"^file\[0\] 'x': empty file$"),
    (wav_bytes(0.2), DataError, r"^file\[0\] 'x': not a readable image; images are PNG, JPEG, BMP or WebP$"),
    (image_bytes(fmt="GIF"), DataError, r"^file\[0\] 'x': a GIF image; images are PNG, JPEG, BMP or WebP$"),
])
def test_upload_images_refuse_bad_files_naming_them(data, error, message):
    with pytest.raises(error, match=message) as info:
        UploadImages(ImageReader(IMAGE))([Upload("file[0] 'x'", data)])
    if error is DataError:
        assert not isinstance(info.value, TooLarge)  # a 422, not a 413


def test_cards_and_limits_of_image_checkpoints(tiny_image_captioner, tiny_checkpoint):
    from ray.serve import Application

    from serving.app import app_builder, model_info
    from serving.deployments import MEDIA, check_limits

    card, text = read_cards([tiny_image_captioner, tiny_checkpoint])
    assert (card.name, card.kind, card.task, card.input, card.decode.beam_size) == (
        CAPTIONER, "vec2seq", "generate", "image", 2)
    assert (card.audio, card.video, text.input) == (None, None, "text")
    assert model_info(card) == {"name": CAPTIONER, "kind": "vec2seq", "task": "generate", "input": "image"}
    assert MEDIA["image"].largest_input(card, LIMITS) == (1, "one image")
    check_limits(card, LIMITS)
    assert isinstance(app_builder({"checkpoints": [str(tiny_image_captioner)]}), Application)
    with pytest.raises(ConfigError, match=r"one input may have 1 images \(one image\), which at max_beam_size 16 "
                                          r"makes 16 decoder-row images, more than a whole batch"):
        app_builder({"checkpoints": [str(tiny_image_captioner)], "limits": {"max_batch_tokens": 8}})


# ---------------------------------------------------------------- over HTTP


def no_server_error(response: httpx.Response) -> None:
    """httpx response hook: a client mistake is never a 5xx, so any 5xx fails at once."""
    if response.status_code >= 500:
        response.read()
        pytest.fail(f"{response.request.method} {response.request.url.path} answered "
                    f"{response.status_code}: {response.text}")


@pytest.fixture(scope="module")
def local_url(tiny_image_captioner, tiny_checkpoint):
    """The ingress's FastAPI application with both models in-process (``LocalModel``, as
    an ingress replica holds them), served by uvicorn on a local port: real HTTP, no Ray.
    ``@serve.batch`` only runs inside a Serve replica, so requests run unbatched."""
    import uvicorn

    from serving.app import LocalModel, ServedModel, create_app

    cards = read_cards([tiny_image_captioner, tiny_checkpoint])
    app = create_app({card.name: ServedModel(card, LocalModel(card, LIMITS, batching=False)) for card in cards},
                     LIMITS)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def local(local_url):
    with httpx.Client(base_url=local_url, timeout=60, event_hooks={"response": [no_server_error]}) as http:
        yield http


@pytest.fixture(scope="module")
def captioner(tiny_image_captioner):
    """The same checkpoint in-process, without HTTP."""
    from pipelines.apps.image_caption.predictor import ImageCaptioner

    return ImageCaptioner(load_inference(tiny_image_captioner))


def check_captions(client: httpx.Client, captioner) -> None:
    names = ["photo.jpg", "seven.png", "grey.png"]
    files = [(n, IMAGES[n]) for n in names]
    for options in ({"beam_size": 1, "max_length": 8}, {"beam_size": 3}, {}):  # {}: the recipe's beam 2
        response = post(client, CAPTIONER, "generate", files, **options)
        assert response.status_code == 200, response.text
        outputs = response.json()["outputs"]
        want = captioner.predict(files, **options)
        assert len(outputs) == len(names)
        for got, expected in zip(outputs, want):
            assert set(got) == {"text", "score"} and got["text"] == expected["text"]
            assert got["score"] == pytest.approx(expected["score"], abs=1e-4)


def test_models_list_the_image_input_and_docs_show_uploads(local):
    assert local.get("/v1/models").json() == {"models": [
        {"name": CAPTIONER, "kind": "vec2seq", "task": "generate", "input": "image"},
        {"name": TEXT, "kind": "seq2vec", "task": "classify", "labels": ["negative", "positive"]},
    ]}
    body = local.get("/openapi.json").json()["paths"]["/v1/models/{name}/generate"]["post"]["requestBody"]
    assert body["content"]["multipart/form-data"]["schema"]["properties"]["file"]["maxItems"] == LIMITS.max_inputs


def test_generate_captions_each_image_in_order(local, captioner):
    check_captions(local, captioner)


def test_generate_streams_greedy_captions(local, captioner):
    files = [(n, IMAGES[n]) for n in ("grey.png", "photo.jpg")]
    response = post(local, CAPTIONER, "generate", files, stream="true", max_length=6)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/x-ndjson")
    import json

    finals = sorted((item for item in map(json.loads, response.text.splitlines()) if item["type"] == "final"),
                    key=lambda item: item["index"])
    assert [f["text"] for f in finals] == [o["text"] for o in captioner.predict(files, beam_size=1, max_length=6)]


BAD_UPLOADS = [
    ([("notes.txt", b"just some notes")], {}, 422,
     ["file[0] 'notes.txt': not a readable image; images are PNG, JPEG, BMP or WebP"]),
    ([GOOD, ("tone.wav", wav_bytes(0.3))], {}, 422, ["file[1] 'tone.wav': not a readable image"]),
    ([GOOD, ("anim.gif", image_bytes(fmt="GIF"))], {}, 422, ["file[1] 'anim.gif': a GIF image"]),
    ([("empty.png", b"")], {}, 422, ["file[0] 'empty.png': empty file"]),
    ([("half.png", IMAGES["seven.png"][:900])], {}, 422, ["file[0] 'half.png': truncated or corrupt image"]),
    ([GOOD, ("big.png", image_bytes((80, 80)))], {}, 413,
     ["file[1] 'big.png': 80x80 = 6,400 pixels; the limit is 4,096 (data.image.max_pixels)"]),
    ([GOOD, ("huge.bmp", np.random.default_rng(2).bytes(LIMITS.max_upload_bytes))], {}, 413,
     ["request body is too large", f"the limit is {LIMITS.max_upload_bytes} bytes (max_upload_bytes)"]),
    ([GOOD] * 5, {}, 422, ["file: has 5 items; the limit is 4"]),
    ([], {"beam_size": 2}, 422, ["file: is required", "multipart/form-data parts named 'file'"]),
    ([], {"image": "seven.png"}, 422, ["file: is required", "image: is not a known field"]),
    ([GOOD], {"beam_size": 9}, 422, ["beam_size: must be <= 4, got '9'"]),
    ([GOOD], {"stream": "true", "beam_size": 2}, 422, ["stream decodes greedily"]),
]


@pytest.mark.parametrize(("files", "fields", "status", "fragments"), BAD_UPLOADS)
def test_bad_uploads_answer_4xx(local, files, fields, status, fragments):
    assert_error(post(local, CAPTIONER, "generate", files, **fields), status, *fragments)


def test_a_text_part_named_file_wrong_routes_and_json_are_4xx(local):
    response = local.post(f"/v1/models/{CAPTIONER}/generate", files=[("file", (None, "seven.png"))])
    assert_error(response, 422, "file[0]: must be a file part (one with a filename), got a text field")
    assert_error(local.post(f"/v1/models/{CAPTIONER}/generate", json={"inputs": ["seven top left"]}), 415,
                 f"model '{CAPTIONER}' takes image uploads, not application/json",
                 "multipart/form-data parts named 'file'", "PNG or JPEG")
    assert_error(post(local, CAPTIONER, "classify", [GOOD]), 404, "no /classify route",
                 f"/v1/models/{CAPTIONER}/generate")
    assert_error(post(local, TEXT, "classify", [GOOD]), 415, f"model '{TEXT}' takes texts as JSON")
    assert post(local, CAPTIONER, "generate", [GOOD]).status_code == 200  # still answering after all that


# ---------------------------------------------------------------- on Ray Serve


@pytest.fixture(scope="module")
def served(ray_head, tiny_image_captioner, tiny_checkpoint):
    """An HTTP client for the application deployed on Ray Serve (deleted after the module)."""
    from serving.app import build_app

    app = build_app([tiny_image_captioner, tiny_checkpoint], LIMITS)
    with serve_app(ray_head, app) as url, httpx.Client(base_url=url, timeout=60,
                                                       event_hooks={"response": [no_server_error]}) as http:
        yield http


@pytest.mark.ray
def test_serve_captions_images_and_answers_bad_uploads_4xx(served, captioner):
    check_captions(served, captioner)
    for files, fields, status, fragments in BAD_UPLOADS:
        assert_error(post(served, CAPTIONER, "generate", files, **fields), status, *fragments)
