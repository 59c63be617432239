"""A summarizer on the generate route over real HTTP: the ingress's FastAPI application
served by uvicorn with the model in-process (no Ray), then deployed on Ray Serve
(``ray``). The tiny summarizer (conftest) reads at most 120 words; longer texts answer
413, not a summary of their first part. Every response goes through
:func:`no_server_error`: a 5xx fails the test that got it."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from conftest import assert_error, free_port, serve_app
from serving.catalog import read_cards
from serving.limits import ServeLimits

pytestmark = pytest.mark.serve  # Ray Serve on the shared head: the Ray tier's shards keep these files together

LIMITS = ServeLimits(max_inputs=4, max_chars=1500, max_batch_tokens=1024, batch_wait_timeout_s=0.05, max_beam_size=4,
                     max_generate_length=64)
NAME = "tiny_summarize"


def no_server_error(response: httpx.Response) -> None:
    if response.status_code >= 500:
        response.read()
        pytest.fail(f"{response.request.url.path} answered {response.status_code}: {response.text}")


def summarize(client: httpx.Client, texts, **options) -> httpx.Response:
    return client.post(f"/v1/models/{NAME}/generate", json={"inputs": texts, **options})


@pytest.fixture(scope="module")
def dialogues(dialogues_dir) -> list[str]:
    return [json.loads(line)["dialogue"] for line in (dialogues_dir / "valid.jsonl").read_text().splitlines()[:3]]


@pytest.fixture(scope="module")
def summarizer(tiny_summarizer):
    from pipelines.checkpoint import load_predictor

    return load_predictor(tiny_summarizer)


@pytest.fixture(scope="module")
def local(tiny_summarizer):
    import uvicorn

    from serving.app import LocalModel, ServedModel, create_app

    cards = read_cards([tiny_summarizer])
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
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                      event_hooks={"response": [no_server_error]}) as http:
        yield http
    server.should_exit = True
    thread.join(timeout=10)


def check_summaries(client: httpx.Client, summarizer, dialogues: list[str]) -> None:
    """The in-process predictor's summaries (the recipe's beam, minimum length and
    n-gram blocking; then options of the request), in input order."""
    for options in ({}, {"beam_size": 1, "max_length": 6}):
        response = summarize(client, dialogues, **options)
        assert response.status_code == 200, response.text
        want = summarizer.run(summarizer.rows(dialogues), **options)
        got = response.json()["outputs"]
        assert [o["text"] for o in got] == [o["text"] for o in want]
        assert [o["score"] for o in got] == pytest.approx([o["score"] for o in want], abs=1e-4)


def test_models_list_the_summarizer(local):
    assert local.get("/v1/models").json() == {"models": [{"name": NAME, "kind": "pointer_generator",
                                                          "task": "generate"}]}


def test_summaries_equal_the_in_process_predictor(local, summarizer, dialogues):
    check_summaries(local, summarizer, dialogues)


@pytest.mark.parametrize(("body", "status", "fragments"), [
    ({"inputs": ["#Person1#: Hi.", "#Person1#: " + "word " * 130]}, 413,
     ["input 1: 132 words; this model reads at most 120 (its data.max_length)"]),
    ({"inputs": ["#Person1#: Hi."], "stream": True}, 422, ["stream", "beam search"]),
    ({"inputs": []}, 422, ["inputs"]),
    ({"inputs": ["x" * 1501]}, 422, ["inputs"]),
    ({"inputs": ["#Person1#: Hi."], "beam_size": 9}, 422, ["beam_size"]),
    ({"inputs": ["#Person1#: Hi."], "condition": "positive"}, 422, ["condition: is not a known field"]),
])
def test_bad_requests_answer_4xx(local, body, status, fragments):
    assert_error(local.post(f"/v1/models/{NAME}/generate", json=body), status, *fragments)
    assert summarize(local, ["#Person1#: Hi."]).status_code == 200  # still answering


@pytest.mark.ray
def test_summaries_on_ray_serve(ray_head, tiny_summarizer, summarizer, dialogues):
    """Deployed on Serve (batched replicas): the same summaries, and the 413."""
    from serving.app import build_app

    with serve_app(ray_head, build_app([tiny_summarizer], LIMITS)) as url, \
            httpx.Client(base_url=url, timeout=60, event_hooks={"response": [no_server_error]}) as client:
        check_summaries(client, summarizer, dialogues)
        assert_error(summarize(client, ["#Person1#: " + "word " * 130]), 413, "input 0: 132 words")
