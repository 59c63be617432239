"""The serving benchmark's own parts: the closed-loop load generator counts what it
should (successes, each kind of failure, timeouts, its bounds), and the plain-FastAPI
peer answers what rayseq's app answers. No Ray."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import httpx
import pytest

from conftest import ROOT, free_port

sys.path.insert(0, str(ROOT))

from bench.load import run_load  # noqa: E402


@pytest.fixture(scope="module")
def server():
    """A uvicorn server in a thread: /ok answers 200, /bad 422, /slow after 2 s."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.post("/ok")
    async def ok(body: dict) -> dict:
        return {"echo": body}

    @app.post("/bad")
    async def bad() -> JSONResponse:
        return JSONResponse({"error": "no"}, status_code=422)

    @app.post("/slow")
    async def slow() -> dict:
        await asyncio.sleep(2)
        return {}

    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)


def load(url: str, **options):
    options = {"concurrency": 4, "seconds": 1.0, "warmup_s": 0.2, **options}
    return asyncio.run(run_load(url, [b'{"inputs": ["a"]}', b'{"inputs": ["b"]}'], **options))


def test_successes_are_counted_with_their_latencies(server):
    result = load(server + "/ok")
    summary = result.summary()
    assert result.ok > 10 and result.errors == 0
    assert len(result.latencies_ms) == result.ok
    assert summary["rps"] == pytest.approx(result.ok / result.seconds, rel=0.01)
    assert 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"] <= summary["max_ms"]


def test_error_statuses_are_failures_by_kind(server):
    result = load(server + "/bad")
    assert result.ok == 0 and result.errors > 0
    assert result.error_kinds == {"status 422": result.errors}
    assert result.summary()["error_rate"] == 1.0


def test_a_late_answer_is_a_timeout_and_nothing_hangs(server):
    started = time.monotonic()
    result = load(server + "/slow", concurrency=2, seconds=1.5, warmup_s=0.0, timeout_s=0.5)
    assert time.monotonic() - started < 5
    assert result.ok == 0 and set(result.error_kinds) == {"timeout"}


def test_requests_cut_off_by_the_window_are_not_counted(server):
    result = load(server + "/slow", concurrency=2, seconds=1.0, warmup_s=0.0, timeout_s=30)
    assert result.ok == 0 and result.errors == 0  # still running when the window closed


def test_the_request_bound_stops_the_run(server):
    result = load(server + "/ok", seconds=30, warmup_s=0.0, max_requests=20)
    assert result.ok == 20 and result.seconds < 30


def test_a_refused_connection_is_an_error_not_a_crash():
    result = load(f"http://127.0.0.1:{free_port()}/ok", concurrency=2, seconds=0.5, warmup_s=0.0)
    assert result.ok == 0 and result.errors > 0
    assert set(result.error_kinds) == {"ConnectionRefusedError"}


def test_the_peer_answers_as_rayseq_does(tiny_checkpoint, one_thread):
    from bench.serve_peer import peer_app
    from pipelines.apps.text_classify.predictor import TextClassifier
    from pipelines.checkpoint import load_inference

    texts = ["a warm and funny film", "dull"]

    async def ask():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=peer_app([str(tiny_checkpoint)])),
                                     base_url="http://peer") as http:
            return await http.post("/v1/models/tiny_sentiment/classify", json={"inputs": texts}), \
                await http.post("/v1/models/nope/classify", json={"inputs": texts})

    answer, unknown = asyncio.run(ask())
    assert answer.status_code == 200, answer.text
    want = TextClassifier(load_inference(tiny_checkpoint)).predict(texts)
    assert [p["label"] for p in answer.json()["predictions"]] == [w["label"] for w in want]
    assert unknown.status_code == 404
