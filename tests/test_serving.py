"""Serving: request schemas, limits, catalog and batch grouping (no Ray), then the whole
Serve application over real HTTP on the session's Ray head.

The application is deployed once for the module, serving a classifier and a translator
side by side, with small limits so every limit can be hit with a small request, and a
long batch wait so concurrent requests reliably share batches.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pydantic import ValidationError

from conftest import assert_error, bursts_until_batched, call_deployment, free_port
from pipelines.checkpoint import load_inference
from pipelines.errors import ConfigError, DataError
from serving.catalog import read_cards
from serving.deployments import BatchItem, item_cost, run_grouped, token_chunks, total_tokens
from serving.errors import describe_error
from serving.limits import ServeLimits
from serving.schemas import ClassifyRequest, GenerateRequest, request_models

pytestmark = pytest.mark.serve  # Ray Serve on the shared head: the Ray tier's shards keep these files together

# max_batch_tokens 64 = the translator's 16-token inputs at max_beam_size 4 (one batch).
LIMITS = ServeLimits(max_body_bytes=4096, max_inputs=8, max_chars=200, max_batch_tokens=64,
                     batch_wait_timeout_s=0.05, max_beam_size=4, max_generate_length=128)
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
SOURCES = [  # English number words, the tiny translator's training domain; lengths 1..9 tokens
    "three hundred and forty-two",
    "five",
    "nine thousand and one",
    "seventy-seven",
    "one thousand, two hundred and thirty-four",
    "eight thousand, eight hundred and eighty-eight",
]


@pytest.fixture(autouse=True)
def one_thread():
    """The in-process references decode tiny tensors, where a second intra-op thread only
    adds synchronisation (and the replicas run with one thread too)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    small = request_models(ServeLimits(max_inputs=2)).body("classify", "text")
    with pytest.raises(ValidationError, match="at most 2 items"):
        small.model_validate({"inputs": ["a", "b", "c"]})
    with pytest.raises(ValidationError, match="at least 1 item"):
        small.model_validate({"inputs": []})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        small.model_validate({"inputs": ["a"], "beam_size": 2})


def test_generate_request_defaults_and_bounds():
    request = GenerateRequest.model_validate({"inputs": ["hallo welt"]})
    assert (request.beam_size, request.max_length) == (None, None)  # the model recipe's decode settings
    request = GenerateRequest.model_validate({"inputs": ["hallo welt"], "beam_size": 4, "max_length": 128})
    assert (request.beam_size, request.max_length) == (4, 128)  # CONTRACT's example
    with pytest.raises(ValidationError) as info:
        GenerateRequest.model_validate({"inputs": ["x"], "beam_size": 0, "max_length": "9"})
    assert [describe_error(e) for e in info.value.errors()] == [
        "beam_size: must be >= 1, got 0",
        "max_length: must be an integer, got a string",
    ]
    with pytest.raises(ValidationError) as info:
        GenerateRequest.model_validate({"inputs": ["x"], "beam_size": 17, "max_length": 513})
    assert [describe_error(e) for e in info.value.errors()] == [
        "beam_size: must be <= 16, got 17",
        "max_length: must be <= 512, got 513",
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
    assert cards[0].decode is None
    with pytest.raises(DataError, match="missing: checkpoint folder not found"):
        read_cards([tiny_checkpoint, tmp_path / "missing"])
    with pytest.raises(DataError, match=r"not a rayseq checkpoint \(missing config.yaml\)"):
        read_cards([tmp_path])


def copy_checkpoint(source, destination, *, without=(), extra=None):
    """A copy of checkpoint ``source`` minus the files ``without``, plus ``extra`` {name: text}."""
    destination.mkdir()
    for path in source.iterdir():
        if path.name not in without:
            (destination / path.name).write_bytes(path.read_bytes())
    for name, text in (extra or {}).items():
        (destination / name).write_text(text)
    return destination


def test_cards_accept_seq2seq_checkpoints_with_either_tokenizer_layout(tiny_checkpoint, tiny_translator, tmp_path):
    classifier, translator = read_cards([tiny_checkpoint, tiny_translator])
    assert (translator.name, translator.kind, translator.task, translator.labels) == (
        "tiny_translation", "seq2seq", "generate", None)
    assert (translator.max_length, translator.decode.beam_size, translator.decode.max_length) == (16, 4, 128)
    joint = (tiny_translator / "tokenizer.json").read_text()
    pair = copy_checkpoint(tiny_translator, tmp_path / "pair", without={"tokenizer.json"},
                           extra={"source_tokenizer.json": joint, "target_tokenizer.json": joint})
    assert read_cards([pair])[0].task == "generate"
    half = copy_checkpoint(pair, tmp_path / "half", without={"target_tokenizer.json"})
    with pytest.raises(DataError, match=r"half: not a rayseq checkpoint \(missing target_tokenizer.json\)"):
        read_cards([half])
    bare = copy_checkpoint(tiny_translator, tmp_path / "bare", without={"tokenizer.json"})
    with pytest.raises(DataError, match=r"missing tokenizer.json, or source_tokenizer.json and target_tokenizer.json"):
        read_cards([bare])
    # a classifier needs its one tokenizer.json, whatever translation files lie around
    lonely = copy_checkpoint(tiny_checkpoint, tmp_path / "lonely", without={"tokenizer.json"},
                             extra={"source_tokenizer.json": joint, "target_tokenizer.json": joint})
    with pytest.raises(DataError, match=r"lonely: not a rayseq checkpoint \(missing tokenizer.json\)"):
        read_cards([lonely])


def decode_item(rows, beam_size: int, max_length: int) -> BatchItem:
    """A queued generate item, as ``ModelServer.answer`` makes one."""
    return BatchItem(rows, options=tuple(sorted({"beam_size": beam_size, "max_length": max_length}.items())))


def test_run_grouped_runs_one_pass_per_option_group(tiny_translator, monkeypatch):
    """A batch mixing beam sizes and lengths: every item gets what a call of its own gives."""
    from pipelines.apps.translate.predictor import Translator

    translator = Translator(load_inference(tiny_translator), budget=LIMITS.max_batch_tokens)
    ids = translator.rows(SOURCES)
    items = [decode_item(ids[:2], 1, 20), decode_item(ids[2:3], 4, 30), decode_item(ids[3:], 1, 20),
             decode_item(ids[:1], 4, 30), decode_item(ids[4:], 2, 30)]
    assert item_cost(items) == sum(dict(item.options)["beam_size"] * len(x) for item in items for x in item.rows)
    passes = []
    real = translator.run

    def counted(rows, **options):
        passes.append((len(rows), options))
        return real(rows, **options)

    monkeypatch.setattr(translator, "run", counted)
    found = run_grouped(translator, items)
    assert passes == [(len(ids[:2]) + len(ids[3:]), {"beam_size": 1, "max_length": 20}),
                      (2, {"beam_size": 4, "max_length": 30}),
                      (len(ids[4:]), {"beam_size": 2, "max_length": 30})]
    for item, got in zip(items, found):
        want = real(item.rows, **dict(item.options))
        assert [answer["text"] for answer in got] == [answer["text"] for answer in want]
        assert [answer["score"] for answer in got] == pytest.approx([answer["score"] for answer in want], abs=1e-4)


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


def test_app_builder_checks_a_translator_against_the_limits(tiny_checkpoint, tiny_translator):
    from ray.serve import Application

    from serving.app import app_builder

    assert isinstance(app_builder({"checkpoints": [str(tiny_checkpoint), str(tiny_translator)]}), Application)
    with pytest.raises(ConfigError, match=r"16 tokens \(data.max_length\), which at max_beam_size 16 makes 256 "
                                          r"decoder-row tokens, more than a whole batch: max_batch_tokens 128"):
        app_builder({"checkpoints": [str(tiny_translator)], "limits": {"max_batch_tokens": 128}})
    with pytest.raises(ConfigError, match=r"decode.beam_size 4 \(a request's default\) is above the serve limit "
                                          r"max_beam_size 2"):
        app_builder({"checkpoints": [str(tiny_translator)], "limits": {"max_beam_size": 2}})
    with pytest.raises(ConfigError, match="decode.max_length 128 .* max_generate_length 100"):
        app_builder({"checkpoints": [str(tiny_translator)], "limits": {"max_generate_length": 100}})


# ---------------------------------------------------------------- on Ray Serve


@pytest.fixture(scope="module")
def client(ray_head, tiny_checkpoint, tiny_translator, tiny_tagger, tiny_music, tiny_tts, tiny_generator):
    """An HTTP client for the deployed application (deleted again after the module)."""
    from ray import serve

    from serving.app import APP_NAME, build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    served = [tiny_checkpoint, tiny_translator, tiny_tagger, tiny_music, tiny_tts, tiny_generator]
    serve.run(build_app(served, LIMITS), name=APP_NAME, route_prefix="/")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        yield http
    serve.delete(APP_NAME)


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    """Predictions of the same checkpoint computed in-process, without Serve."""
    from pipelines.apps.text_classify.predictor import TextClassifier

    return dict(zip(TEXTS, TextClassifier(load_inference(tiny_checkpoint)).predict(TEXTS)))


@pytest.fixture(scope="module")
def translations(tiny_translator):
    """``translations(beam_size, max_length)``: {source: output} from the same checkpoint
    decoded in-process, without Serve (None, None: the recipe's defaults, 4 and 128)."""
    from pipelines.apps.translate.predictor import Translator

    translator = Translator(load_inference(tiny_translator))
    cache: dict[tuple, dict[str, dict]] = {}

    def lookup(beam_size=None, max_length=None) -> dict[str, dict]:
        if (beam_size, max_length) not in cache:
            outputs = translator.predict(SOURCES, beam_size=beam_size, max_length=max_length)
            cache[beam_size, max_length] = dict(zip(SOURCES, outputs))
        return cache[beam_size, max_length]

    return lookup


def assert_same_prediction(got: dict, want: dict) -> None:
    assert got["label"] == want["label"]
    assert got["scores"] == pytest.approx(want["scores"], abs=1e-5)


def assert_same_output(got: dict, want: dict) -> None:
    assert isinstance(got["text"], str) and isinstance(got["score"], float), got
    assert got["text"] == want["text"]
    assert got["score"] == pytest.approx(want["score"], abs=1e-4)


def classify(client: httpx.Client, texts, model: str = "tiny_sentiment") -> httpx.Response:
    return client.post(f"/v1/models/{model}/classify", json={"inputs": texts})


def generate(client: httpx.Client, texts, model: str = "tiny_translation", **options) -> httpx.Response:
    return client.post(f"/v1/models/{model}/generate", json={"inputs": texts, **options})


@pytest.mark.ray
def test_health_models_and_docs(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/v1/models").json() == {"models": [
        {"name": "tiny_sentiment", "kind": "seq2vec", "task": "classify", "labels": ["negative", "positive"]},
        {"name": "tiny_translation", "kind": "seq2seq", "task": "generate"},
        {"name": "tiny_tagger", "kind": "tagger", "task": "tag"},
        {"name": "tiny_music", "kind": "music", "task": "compose", "input": "music"},
        {"name": "tiny_tts", "kind": "synthesis", "task": "synthesize", "speakers": ["alice", "theo"],
         "words": [str(d) for d in range(10)]},
        {"name": "tiny_generate", "kind": "language_model", "task": "generate",
         "conditions": ["negative", "positive"]},
    ]}
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/models/{name}/classify", "/v1/models/{name}/generate", "/v1/models/{name}/tag",
            "/v1/models/{name}/compose", "/v1/models/{name}/synthesize"} <= set(paths)
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
    from serving.app import APP_NAME

    texts = [TEXTS[i % len(TEXTS)] for i in range(16)]

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=60) as http:
            return await asyncio.gather(*(http.post("/v1/models/tiny_sentiment/classify", json={"inputs": [t]})
                                          for t in texts))

    def burst() -> None:
        for text, response in zip(texts, asyncio.run(send_all())):
            assert response.status_code == 200, response.text
            [prediction] = response.json()["predictions"]
            assert_same_prediction(prediction, reference[text])

    stats = bursts_until_batched(
        burst, lambda: call_deployment("Ingress", "batch_stats", "tiny_sentiment", app_name=APP_NAME),
        lambda stats: stats["largest_batch_requests"] > 1)
    assert stats["largest_batch_requests"] > 1, stats  # requests shared a forward pass ...
    assert stats["largest_batch_tokens"] <= LIMITS.max_batch_tokens, stats  # ... within the token budget


@pytest.mark.ray
def test_a_lone_request_does_not_wait_for_company(client):
    """One client, one request at a time: every batch runs at once, none waits the
    batch_wait_timeout_s (50 ms here) for requests that are not coming."""
    from serving.app import APP_NAME

    def stats():
        return call_deployment("Ingress", "batch_stats", "tiny_sentiment", app_name=APP_NAME)

    assert classify(client, TEXTS[:1]).status_code == 200  # may wait once, for an earlier test's clients
    before = stats()
    for text in TEXTS[:4]:
        assert classify(client, [text]).status_code == 200
    after = stats()
    assert after["batches"] - before["batches"] == 4, (before, after)
    assert after["waited_batches"] == before["waited_batches"], (before, after)


@pytest.mark.ray
def test_unknown_model_and_wrong_routes(client):
    assert_error(classify(client, ["fine"], model="nope"), 404, "unknown model 'nope'", "tiny_sentiment")
    assert_error(classify(client, [], model="nope"), 404, "unknown model")  # the model is checked first
    assert_error(client.post("/v1/models/tiny_sentiment/generate", json={"inputs": ["hallo"]}), 404,
                 "no /generate route", "/v1/models/tiny_sentiment/classify")
    assert_error(classify(client, ["five"], model="tiny_translation"), 404,
                 "'tiny_translation' is a generate model (seq2seq)", "no /classify route",
                 "use POST /v1/models/tiny_translation/generate")
    assert_error(generate(client, [], model="tiny_sentiment"), 404, "no /generate route")  # route before body
    assert_error(client.get("/v1/models/tiny_sentiment/classify"), 405, "GET is not allowed", "POST")
    assert_error(client.get("/v1/models/tiny_translation/generate"), 405, "GET is not allowed", "POST")
    assert_error(client.get("/v2/nothing"), 404, "no route for GET /v2/nothing")


@pytest.mark.ray
@pytest.mark.parametrize("beam_size", [1, 4])
def test_generate_answers_each_input_in_order(client, translations, beam_size):
    response = generate(client, SOURCES, beam_size=beam_size, max_length=40)  # > one batch: chunked
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert len(outputs) == len(SOURCES)
    reference = translations(beam_size, 40)
    for source, output in zip(SOURCES, outputs):
        assert set(output) == {"text", "score"}
        assert_same_output(output, reference[source])


@pytest.mark.ray
def test_generate_defaults_come_from_the_recipe(client, translations):
    contract_example = generate(client, SOURCES[:2], beam_size=4, max_length=128)
    assert contract_example.status_code == 200, contract_example.text
    defaults = generate(client, SOURCES[:2])  # recipe decode: beam 4, max_length 128
    assert defaults.status_code == 200, defaults.text
    assert defaults.json() == contract_example.json()
    for source, output in zip(SOURCES, defaults.json()["outputs"]):
        assert_same_output(output, translations(None, None)[source])


@pytest.mark.ray
def test_concurrent_generate_requests_with_mixed_options_share_batches(client, translations):
    from serving.app import APP_NAME

    options = [{"beam_size": beam, "max_length": length} for beam, length in [(1, 20), (2, 30), (4, 30), (1, 40)]]
    calls = [(SOURCES[i % len(SOURCES)], options[i % len(options)]) for i in range(16)]

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=60) as http:
            return await asyncio.gather(*(http.post("/v1/models/tiny_translation/generate",
                                                    json={"inputs": [source], **option})
                                          for source, option in calls))

    def burst() -> None:
        for (source, option), response in zip(calls, asyncio.run(send_all())):
            assert response.status_code == 200, response.text
            [output] = response.json()["outputs"]
            assert_same_output(output, translations(option["beam_size"], option["max_length"])[source])

    stats = bursts_until_batched(
        burst, lambda: call_deployment("Ingress", "batch_stats", "tiny_translation", app_name=APP_NAME),
        lambda stats: stats["largest_batch_requests"] > 1 and stats["largest_batch_groups"] > 1)
    assert stats["largest_batch_requests"] > 1, stats  # requests shared a batch ...
    assert stats["largest_batch_groups"] > 1, stats  # ... with different options ...
    assert stats["largest_batch_tokens"] <= LIMITS.max_batch_tokens, stats  # ... within the token budget


@pytest.mark.ray
@pytest.mark.parametrize(("body", "fragments"), [
    ({"inputs": ["five"], "beam_size": 0}, ["beam_size: must be >= 1, got 0"]),
    ({"inputs": ["five"], "beam_size": 5}, ["beam_size: must be <= 4, got 5"]),
    ({"inputs": ["five"], "max_length": 129}, ["max_length: must be <= 128, got 129"]),
    ({"inputs": ["five"], "max_length": 0}, ["max_length: must be >= 1, got 0"]),
    ({"inputs": []}, ["inputs: must not be empty"]),
    ({"inputs": ["five", " "]}, ["inputs[1]: must not be empty"]),
    ({"inputs": ["five"] * 9}, ["inputs: has 9 items; the limit is 8"]),
    ({"inputs": ["five"], "beam_size": "4"}, ["beam_size: must be an integer, got a string"]),
    ({"inputs": ["five"], "beam_size": 2.5}, ["beam_size: must be an integer, got a number"]),
    ({"inputs": ["five"], "max_length": True}, ["max_length: must be an integer, got a boolean"]),
    ({"inputs": "five"}, ["inputs: must be an array, got a string"]),
    ({"inputs": [5]}, ["inputs[0]: must be a string, got a number"]),
    ({"inputs": ["five"], "beam": 2}, ["beam: is not a known field"]),
])
def test_invalid_generate_bodies_answer_422(client, body, fragments):
    assert_error(client.post("/v1/models/tiny_translation/generate", json=body), 422, *fragments)


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


# ---------------------------------------------------------------- the tag route

TAG_TEXTS = ["EU rejects German call to boycott British lamb.", "  Peter Blackburn, U.S. (Reuters)  ", "?!"]


@pytest.mark.ray
def test_tag_route_answers_tokens_tags_and_offsets(client, tiny_tagger):
    """What the in-process predictor answers, through HTTP (``tests/test_tagging.py``
    checks the offsets themselves)."""
    from pipelines.checkpoint import load_predictor

    response = client.post("/v1/models/tiny_tagger/tag", json={"inputs": TAG_TEXTS})
    assert response.status_code == 200, response.text
    assert response.json() == {"outputs": load_predictor(tiny_tagger).predict(TAG_TEXTS)}


@pytest.mark.ray
@pytest.mark.parametrize(("body", "fragments"), [
    ({"inputs": []}, ["inputs: must not be empty"]),
    ({"inputs": ["fine", "   "]}, ["inputs[1]: must not be empty"]),
    ({"inputs": ["x"] * 9}, ["inputs: has 9 items; the limit is 8"]),
    ({"inputs": ["y" * 201]}, ["inputs[0]: is 201 characters long; the limit is 200"]),
    ({"inputs": ["fine", "a " * 17]}, ["input 1: 17 tokens", "at most 16"]),
    ({"inputs": ["fine"], "beam_size": 2}, ["beam_size: is not a known field"]),
])
def test_bad_tag_requests_answer_422(client, body, fragments):
    assert_error(client.post("/v1/models/tiny_tagger/tag", json=body), 422, *fragments)


@pytest.mark.ray
def test_the_tagger_answers_only_its_route(client):
    assert_error(client.post("/v1/models/tiny_tagger/classify", json={"inputs": ["a"]}), 404,
                 "'tiny_tagger' is a tag model", "use POST /v1/models/tiny_tagger/tag")
    assert_error(client.post("/v1/models/tiny_sentiment/tag", json={"inputs": ["a"]}), 404, "no /tag route")


# ---------------------------------------------------------------- the synthesize route


@pytest.mark.ray
def test_synthesize_route_answers_the_wav_or_json(client, tiny_tts):
    """One input: the WAV file itself, the in-process predictor's audio for the same
    seed; ``Accept: application/json`` or several inputs: base64 WAVs in order."""
    import base64

    from pipelines.checkpoint import load_predictor

    predictor = load_predictor(tiny_tts)
    response = client.post("/v1/models/tiny_tts/synthesize", json={"inputs": ["seven"], "speaker": "theo", "seed": 2})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    want = predictor.predict(["seven"], speaker="theo", seed=2)[0]
    assert response.content == base64.b64decode(want["wav_base64"])
    as_json = client.post("/v1/models/tiny_tts/synthesize", json={"inputs": ["seven"], "speaker": "theo", "seed": 2},
                          headers={"Accept": "application/json"})
    assert as_json.json() == {"outputs": [want]}
    several = client.post("/v1/models/tiny_tts/synthesize", json={"inputs": ["one", "4 1 7"], "speaker": "alice"})
    assert several.status_code == 200 and several.headers["content-type"] == "application/json"
    assert several.json()["outputs"] == predictor.predict(["one", "4 1 7"], speaker="alice", seed=0)


@pytest.mark.ray
@pytest.mark.parametrize(("body", "headers", "status", "fragments"), [
    ({"inputs": ["eleven"], "speaker": "theo"}, {}, 422, ["unknown word 'eleven'", "the model says 0, zero"]),
    ({"inputs": ["one", "two twelve"], "speaker": "theo"}, {}, 422, ["input 1: unknown word 'twelve' (word 2)"]),
    ({"inputs": ["seven"], "speaker": "bob"}, {}, 422, ["unknown speaker 'bob'", "alice, theo"]),
    ({"inputs": ["seven"]}, {}, 422, ["speaker", "required"]),
    ({"inputs": [], "speaker": "theo"}, {}, 422, ["inputs"]),
    ({"inputs": ["seven"], "speaker": "theo", "seed": -1}, {}, 422, ["seed"]),
    ({"inputs": ["seven"], "speaker": "theo", "voice": "x"}, {}, 422, ["voice: is not a known field"]),
    ({"inputs": ["one", "two"], "speaker": "theo"}, {"Accept": "audio/wav"}, 406,
     ["audio/wav holds the answer to one input, and 2 were sent"]),
])
def test_bad_synthesize_requests_answer_4xx(client, body, headers, status, fragments):
    assert_error(client.post("/v1/models/tiny_tts/synthesize", json=body, headers=headers), status, *fragments)


# ---------------------------------------------------------------- conditional generation


@pytest.mark.ray
def test_conditional_generate_answers_seeded_samples(client, tiny_generator):
    """The generate path answers a conditional generator's own body with the in-process
    predictor's texts for the same seed, beside a translator's on the same path."""
    from pipelines.checkpoint import load_predictor

    predictor = load_predictor(tiny_generator)
    body = {"condition": "positive", "num_samples": 3, "temperature": 0.8, "top_p": 0.9, "seed": 5}
    response = client.post("/v1/models/tiny_generate/generate", json=body)
    assert response.status_code == 200, response.text
    want = predictor.run(predictor.rows(["positive"]), **{k: v for k, v in body.items() if k != "condition"})[0]
    got = response.json()["outputs"]
    assert [o["text"] for o in got] == [o["text"] for o in want["outputs"]]
    assert [o["score"] for o in got] == pytest.approx([o["score"] for o in want["outputs"]], abs=1e-4)
    again = client.post("/v1/models/tiny_generate/generate", json={**body, "num_samples": 2}).json()["outputs"]
    assert [o["text"] for o in again] == [o["text"] for o in got[:2]]
    beams = client.post("/v1/models/tiny_generate/generate",
                        json={"condition": "negative", "num_samples": 2, "beam_size": 3}).json()["outputs"]
    assert len(beams) == 2 and beams[0]["score"] >= beams[1]["score"]
    assert generate(client, ["the cat sat on the mat"]).status_code == 200  # the translator's body, same path


@pytest.mark.ray
@pytest.mark.parametrize(("body", "fragments"), [
    ({"condition": "neutral"}, ["unknown condition 'neutral'", "negative, positive"]),
    ({"condition": "positive", "num_samples": 0}, ["num_samples"]),
    ({"condition": "positive", "top_p": 1.5}, ["top_p"]),
    ({"condition": "positive", "temperature": -1}, ["temperature"]),
    ({"condition": "positive", "num_samples": 3, "beam_size": 2}, ["at most beam_size (2) texts, asked for 3"]),
    ({"inputs": ["positive"]}, ["inputs: is not a known field"]),
    ({"condition": "positive", "seed": "1"}, ["seed"]),
])
def test_bad_conditional_generate_requests_answer_422(client, body, fragments):
    assert_error(client.post("/v1/models/tiny_generate/generate", json=body), 422, *fragments)


@pytest.mark.ray
def test_a_translator_refuses_the_conditional_body(client):
    assert_error(client.post("/v1/models/tiny_translation/generate", json={"condition": "positive"}), 422,
                 "inputs", "condition: is not a known field")


# ---------------------------------------------------------------- the compose route

PRIMER = [[74, 70, 65, 58], [74, 70, 65, 58], [75, 70, 67, 55], [0, 70, 67, 55]]


@pytest.mark.ray
def test_compose_route_answers_seeded_music_and_midi(client, tiny_music):
    """What the in-process predictor samples for the same seed, as JSON and, with
    ``Accept: audio/midi``, as the MIDI file itself; composing from nothing works too."""
    from pipelines.checkpoint import load_predictor
    from pipelines.media.chorales import midi_to_chords

    body = {"primer": PRIMER, "steps": 16, "temperature": 1.0, "top_k": 20, "seed": 3}
    response = client.post("/v1/models/tiny_music/compose", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer == load_predictor(tiny_music).predict([PRIMER], steps=16, temperature=1.0, top_k=20, seed=3)[0]
    assert len(answer["chords"]) == 16 and answer["primer_steps"] == 4
    assert client.post("/v1/models/tiny_music/compose", json=body).json() == answer  # same seed, same music
    midi = client.post("/v1/models/tiny_music/compose", json=body, headers={"Accept": "audio/midi"})
    assert midi.status_code == 200 and midi.headers["content-type"] == "audio/midi"
    assert midi_to_chords(midi.content).tolist() == PRIMER + answer["chords"]
    empty = client.post("/v1/models/tiny_music/compose", json={"steps": 8, "seed": 1})
    assert empty.status_code == 200 and len(empty.json()["chords"]) == 8 and empty.json()["primer_steps"] == 0


@pytest.mark.ray
@pytest.mark.parametrize(("body", "fragments"), [
    ({"primer": [[74, 70, 65]], "steps": 4}, ["primer[0]", "at least 4 items"]),
    ({"primer": [[74, 70, 65, 128]], "steps": 4}, ["primer[0][3]: must be <= 127, got 128"]),
    ({"primer": [[74, 70, "E", 58]]}, ["primer[0][2]", "integer"]),
    ({"primer": "C major"}, ["primer: must be an array, got a string"]),
    ({"primer": PRIMER, "steps": 1025}, ["steps: must be <= 1024, got 1025"]),
    ({"primer": PRIMER, "steps": 0}, ["steps: must be >= 1, got 0"]),
    ({"primer": PRIMER, "temperature": -1.0}, ["temperature"]),
    ({"primer": PRIMER, "inputs": ["x"]}, ["inputs: is not a known field"]),
])
def test_bad_compose_requests_answer_422(client, body, fragments):
    assert_error(client.post("/v1/models/tiny_music/compose", json=body), 422, *fragments)


@pytest.mark.ray
def test_the_music_model_answers_only_its_route(client):
    assert_error(client.post("/v1/models/tiny_music/generate", json={"inputs": ["a"]}), 404,
                 "'tiny_music' is a compose model", "use POST /v1/models/tiny_music/compose")
    assert_error(client.post("/v1/models/tiny_tagger/compose", json={"primer": PRIMER}), 404, "no /compose route")
    assert_error(client.post("/v1/models/tiny_music/compose", content=b"steps=4",
                             headers={"Content-Type": "application/x-www-form-urlencoded"}), 415, "takes JSON")
