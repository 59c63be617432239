"""Serving: request schemas and limits (no Ray), then the whole Serve application over
real HTTP on the session's Ray head.

The application is deployed once for the module, with small limits so every limit can
be hit with a small request, and a long batch wait so concurrent requests reliably
share batches.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pydantic import ValidationError

from conftest import free_port
from pipelines.errors import ConfigError, DataError
from serving.catalog import read_cards
from serving.deployments import token_chunks, total_tokens
from serving.errors import describe_error
from serving.limits import ServeLimits
from serving.schemas import ClassifyRequest, GenerateRequest, request_models

LIMITS = ServeLimits(max_body_bytes=4096, max_inputs=8, max_chars=200, max_batch_tokens=64,
                     batch_wait_timeout_s=0.05)
TEXTS = [
    "a warm and funny film",
    "dull",
    "the plot was not good but the acting was great",
    "i did not like it",
    "one of the best movies of the year",
    "boring",
    "not bad at all",
    "the worst script i have ever read and the pacing drags",
]


# ---------------------------------------------------------------- no Ray


def test_classify_request_enforces_the_limits():
    assert ClassifyRequest.model_validate({"inputs": ["fine", "also fine"]}).inputs == ["fine", "also fine"]
    with pytest.raises(ValidationError) as info:
        ClassifyRequest.model_validate({"inputs": ["ok", "  ", 3, "x" * 2001]})
    assert [describe_error(e) for e in info.value.errors()] == [
        "inputs[1]: must not be empty",
        "inputs[2]: must be a string, got a number",
        "inputs[3]: is 2001 characters long; the limit is 2000",
    ]
    small = request_models(ServeLimits(max_inputs=2)).classify
    with pytest.raises(ValidationError, match="at most 2 items"):
        small.model_validate({"inputs": ["a", "b", "c"]})
    with pytest.raises(ValidationError, match="at least 1 item"):
        small.model_validate({"inputs": []})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        small.model_validate({"inputs": ["a"], "beam_size": 2})


def test_generate_request_defaults_and_bounds():
    request = GenerateRequest.model_validate({"inputs": ["hallo welt"]})
    assert (request.beam_size, request.max_length) == (4, 128)
    with pytest.raises(ValidationError) as info:
        GenerateRequest.model_validate({"inputs": ["x"], "beam_size": 0, "max_length": "9"})
    assert [describe_error(e) for e in info.value.errors()] == [
        "beam_size: must be >= 1, got 0",
        "max_length: must be an integer, got a string",
    ]


def test_serve_limits_are_validated():
    with pytest.raises(ConfigError, match="max_inputs must be an integer >= 1, got 0"):
        ServeLimits(max_inputs=0)
    with pytest.raises(ConfigError, match=r"unknown serve limit\(s\) \['max_input'\]"):
        ServeLimits.from_dict({"max_input": 3})


def test_token_chunks_keep_order_and_budget():
    ids = [[1] * 5, [2] * 3, [3] * 4, [4] * 9, [5]]
    chunks = token_chunks(ids, budget=8)
    assert [row for chunk in chunks for row in chunk] == ids
    assert [total_tokens([chunk]) for chunk in chunks] == [8, 4, 9, 1]  # a 9-token row stands alone


def test_cards_name_models_uniquely_and_name_bad_folders(tiny_checkpoint, tmp_path):
    cards = read_cards([tiny_checkpoint, tiny_checkpoint])
    assert [card.name for card in cards] == ["tiny_sentiment", "tiny_sentiment-2"]
    assert cards[0].labels == ("negative", "positive") and cards[0].task == "classify"
    with pytest.raises(DataError, match="missing: checkpoint folder not found"):
        read_cards([tiny_checkpoint, tmp_path / "missing"])
    with pytest.raises(DataError, match=r"not a rayseq checkpoint \(missing config.yaml\)"):
        read_cards([tmp_path])


def test_app_builder_reads_serve_config_args(tiny_checkpoint):
    from ray.serve import Application

    from serving.app import app_builder

    app = app_builder({"checkpoints": [str(tiny_checkpoint)], "limits": {"max_inputs": 4}})
    assert isinstance(app, Application)
    with pytest.raises(ConfigError, match="'checkpoints' must be a non-empty list"):
        app_builder({"checkpoints": []})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['checkpoint'\]"):
        app_builder({"checkpoint": [str(tiny_checkpoint)]})
    with pytest.raises(ConfigError, match="one input may have 32 tokens"):
        app_builder({"checkpoints": [str(tiny_checkpoint)], "limits": {"max_batch_tokens": 16}})


# ---------------------------------------------------------------- on Ray Serve


@pytest.fixture(scope="module")
def client(ray_head, tiny_checkpoint):
    """An HTTP client for the deployed application (deleted again after the module)."""
    from ray import serve

    from serving.app import APP_NAME, build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app([tiny_checkpoint], LIMITS), name=APP_NAME, route_prefix="/")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        yield http
    serve.delete(APP_NAME)


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    """Predictions of the same checkpoint computed in-process, without Serve."""
    from pipelines.inference import TextClassifier

    return dict(zip(TEXTS, TextClassifier(tiny_checkpoint).classify(TEXTS)))


def assert_error(response: httpx.Response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    for fragment in fragments:
        assert fragment in message, message


def assert_same_prediction(got: dict, want: dict) -> None:
    assert got["label"] == want["label"]
    assert got["scores"] == pytest.approx(want["scores"], abs=1e-5)


def classify(client: httpx.Client, texts, model: str = "tiny_sentiment") -> httpx.Response:
    return client.post(f"/v1/models/{model}/classify", json={"inputs": texts})


@pytest.mark.ray
def test_health_models_and_docs(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/v1/models").json() == {"models": [
        {"name": "tiny_sentiment", "kind": "seq2vec", "task": "classify", "labels": ["negative", "positive"]},
    ]}
    assert "/v1/models/{name}/classify" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


@pytest.mark.ray
def test_classify_answers_each_input_in_order(client, reference):
    response = classify(client, TEXTS)  # 8 texts, more tokens than one batch: split into chunks
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(TEXTS)
    for text, prediction in zip(TEXTS, predictions):
        assert prediction["label"] in {"negative", "positive"}
        assert sum(prediction["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction["score"] == max(prediction["scores"].values())
        assert_same_prediction(prediction, reference[text])
    pair = classify(client, TEXTS[:2]).json()["predictions"]
    singles = [classify(client, [text]).json()["predictions"][0] for text in TEXTS[:2]]
    for got, want in zip(pair, singles):
        assert_same_prediction(got, want)


@pytest.mark.ray
def test_concurrent_requests_share_token_budgeted_batches(client, reference):
    from ray import serve

    from serving.app import APP_NAME

    texts = [TEXTS[i % len(TEXTS)] for i in range(16)]

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=60) as http:
            return await asyncio.gather(*(http.post("/v1/models/tiny_sentiment/classify", json={"inputs": [t]})
                                          for t in texts))

    for text, response in zip(texts, asyncio.run(send_all())):
        assert response.status_code == 200, response.text
        [prediction] = response.json()["predictions"]
        assert_same_prediction(prediction, reference[text])
    model = serve.get_deployment_handle("classify-tiny_sentiment", app_name=APP_NAME)
    stats = model.batch_stats.remote().result()
    assert stats["largest_batch_requests"] > 1, stats  # requests shared a forward pass ...
    assert stats["largest_batch_tokens"] <= LIMITS.max_batch_tokens, stats  # ... within the token budget


@pytest.mark.ray
def test_unknown_model_and_wrong_routes(client):
    assert_error(classify(client, ["fine"], model="nope"), 404, "unknown model 'nope'", "tiny_sentiment")
    assert_error(classify(client, [], model="nope"), 404, "unknown model")  # the model is checked first
    assert_error(client.post("/v1/models/tiny_sentiment/generate", json={"inputs": ["hallo"]}), 404,
                 "no /generate route", "/v1/models/tiny_sentiment/classify")
    assert_error(client.get("/v1/models/tiny_sentiment/classify"), 405, "GET is not allowed", "POST")
    assert_error(client.get("/v2/nothing"), 404, "no route for GET /v2/nothing")


@pytest.mark.ray
@pytest.mark.parametrize(("body", "fragments"), [
    ({"inputs": []}, ["inputs: must not be empty"]),
    ({"inputs": ["fine", ""]}, ["inputs[1]: must not be empty"]),
    ({"inputs": ["fine", "   "]}, ["inputs[1]: must not be empty"]),
    ({"inputs": ["x"] * 9}, ["inputs: has 9 items; the limit is 8"]),
    ({"inputs": ["fine", "y" * 201]}, ["inputs[1]: is 201 characters long; the limit is 200"]),
    ({"inputs": "one text"}, ["inputs: must be an array, got a string"]),
    ({"inputs": ["fine", 7]}, ["inputs[1]: must be a string, got a number"]),
    ({"text": ["fine"]}, ["inputs: is required", "text: is not a known field"]),
    (["fine"], ["body: must be a JSON object"]),
])
def test_invalid_bodies_answer_422(client, body, fragments):
    assert_error(client.post("/v1/models/tiny_sentiment/classify", json=body), 422, *fragments)


@pytest.mark.ray
def test_unreadable_and_oversized_bodies(client):
    url = "/v1/models/tiny_sentiment/classify"
    json_type = {"content-type": "application/json"}
    assert_error(client.post(url, content=b'{"inputs": ["fine"', headers=json_type), 400, "malformed JSON")
    assert_error(client.post(url, content=b'{"inputs": ["\xff\xfe"]}', headers=json_type), 400, "not valid UTF-8")
    assert_error(client.post(url, content=b'{"inputs": ["x\\ud800"]}', headers=json_type), 422,
                 "inputs[0]: is not valid Unicode")
    assert_error(client.post(url, content=b'{"inputs": ["fine"]}', headers={"content-type": "text/plain"}),
                 415, "Content-Type: application/json")
    big = b'{"inputs": ["' + b"z" * LIMITS.max_body_bytes + b'"]}'
    assert_error(client.post(url, content=big, headers=json_type), 413, "too large", "4096 bytes")

    def chunked():  # no Content-Length: only counting the received bytes can catch it
        yield b'{"inputs": ["'
        for _ in range(LIMITS.max_body_bytes // 512 + 1):
            yield b"z" * 512
        yield b'"]}'

    response = client.post(url, content=chunked(), headers=json_type)
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "too large", "the limit is 4096 bytes")
