"""Streaming generation over HTTP: ``"stream": true`` answers JSON lines while decoding.

Checked against the non-streamed greedy answer of the same checkpoint: per input, the
deltas joined are its text, and the final line's text and score are the greedy output.
First in-process (``create_app`` over a model loaded in the test, as the default
graph shape loads it in the ingress replica), then through Ray Serve in both shapes
(models in the ingress; models in deployments of their own, reached by a streaming
handle).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from conftest import serve_app
from serving.limits import ServeLimits

pytestmark = pytest.mark.serve  # Ray Serve on the shared head: the Ray tier's shards keep these files together

SOURCES = ["three hundred and forty-two", "five", "nine thousand and one"]
LIMITS = ServeLimits(max_inputs=8, max_beam_size=4, max_generate_length=128)


@pytest.fixture(scope="module")
def greedy(tiny_translator):
    """{source: {"text", "score"}} of greedy decoding, without streaming or Serve."""
    from pipelines.checkpoint import load_predictor

    return dict(zip(SOURCES, load_predictor(tiny_translator).predict(SOURCES, beam_size=1)))


def lines_of(response: httpx.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


def assert_streams_greedy(items: list[dict], sources: list[str], greedy: dict) -> None:
    """Every input's tokens, then exactly one final line equal to the greedy output."""
    for index, source in enumerate(sources):
        mine = [item for item in items if item["index"] == index]
        *tokens, final = mine
        assert [t["type"] for t in tokens] == ["token"] * len(tokens) and final["type"] == "final"
        assert "".join(item["delta"] for item in mine) == final["text"] == greedy[source]["text"]
        assert final["score"] == pytest.approx(greedy[source]["score"], abs=1e-4)
        assert [t["token"] for t in tokens] == final["tokens"]


# ---------------------------------------------------------------- no Ray


@pytest.fixture(scope="module")
def local_app(tiny_translator):
    from serving.app import LocalModel, ServedModel, create_app
    from serving.catalog import read_cards

    (card,) = read_cards([tiny_translator])
    # batching=False: @serve.batch only runs inside a Serve replica (the Ray tests batch)
    return create_app({card.name: ServedModel(card, LocalModel(card, LIMITS, batching=False))}, LIMITS)


def post(app, body: dict) -> httpx.Response:
    async def send():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            return await http.post("/v1/models/tiny_translation/generate", json=body)

    return asyncio.run(send())


def test_stream_lines_join_to_the_greedy_output(local_app, greedy):
    assert_streams_greedy(lines_of(post(local_app, {"inputs": SOURCES, "stream": True})), SOURCES, greedy)
    assert_streams_greedy(lines_of(post(local_app, {"inputs": SOURCES, "stream": True, "beam_size": 1})),
                          SOURCES, greedy)


def test_stream_respects_max_length(local_app):
    items = lines_of(post(local_app, {"inputs": SOURCES, "stream": True, "max_length": 2}))
    for final in (item for item in items if item["type"] == "final"):
        assert len(final["tokens"]) <= 2


@pytest.mark.parametrize(("body", "fragment"), [
    ({"inputs": SOURCES, "stream": True, "beam_size": 4}, "stream decodes greedily: beam_size must be 1"),
    ({"inputs": SOURCES, "stream": "yes"}, "stream"),
    ({"inputs": [], "stream": True}, "inputs"),
])
def test_bad_stream_requests_answer_422_before_streaming(local_app, body, fragment):
    response = post(local_app, body)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["error"]


def test_without_stream_the_answer_is_unchanged(local_app, greedy):
    response = post(local_app, {"inputs": SOURCES, "beam_size": 1})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert [o["text"] for o in response.json()["outputs"]] == [greedy[s]["text"] for s in SOURCES]


# ---------------------------------------------------------------- on Ray Serve


@pytest.fixture(scope="module", params=[False, True], ids=["models-in-ingress", "separate-models"])
def served(request, ray_head, tiny_translator):
    from serving.app import build_app

    with serve_app(ray_head, build_app([tiny_translator], LIMITS, separate_models=request.param)) as url:
        yield url


@pytest.mark.ray
def test_serve_streams_tokens_as_they_are_decoded(served, greedy):
    with httpx.Client(base_url=served, timeout=60) as http:
        with http.stream("POST", "/v1/models/tiny_translation/generate",
                         json={"inputs": SOURCES, "stream": True}) as response:
            assert response.status_code == 200
            chunks = [json.loads(line) for line in response.iter_lines() if line]
        assert_streams_greedy(chunks, SOURCES, greedy)
        refused = http.post("/v1/models/tiny_translation/generate",
                            json={"inputs": SOURCES, "stream": True, "beam_size": 2})
        assert refused.status_code == 422, refused.text


def test_a_stream_that_breaks_after_its_first_line_ends_with_an_error_line(tiny_translator):
    """The 200 is already sent, so the stream itself must say it stopped early."""
    from serving.app import ServedModel, create_app
    from serving.catalog import read_cards

    class Breaking:
        def options(self, **_):
            return self

        class stream:  # noqa: N801 - stands in for a handle method
            @staticmethod
            def remote(inputs, **options):
                async def items():
                    yield {"type": "token", "index": 0, "token": 5, "delta": "ein"}
                    raise RuntimeError("replica lost mid-stream")

                return items()

    (card,) = read_cards([tiny_translator])
    app = create_app({card.name: ServedModel(card, Breaking())}, LIMITS)

    async def send():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # as a server logs and goes on
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.post("/v1/models/tiny_translation/generate", json={"inputs": SOURCES[:1], "stream": True})

    response = asyncio.run(send())
    assert response.status_code == 200
    *tokens, last = [json.loads(line) for line in response.text.splitlines()]
    assert [t["type"] for t in tokens] == ["token"]
    assert last == {"type": "error", "error": "decoding stopped: RuntimeError"}
