"""Serving while replicas come and go: autoscaling under load, replicas killed mid-load,
and ``/healthz`` while a model has no live replica.

First without Ray: ``/healthz`` and the ingress's one retry of a model call whose replica
was lost, over stand-in model handles (``create_app``, as ``test_serving_stream`` does).
Then on the session's Ray head (in Serve's throughput mode, as ``conftest`` sets it up),
driven by ``bench.load``'s closed-loop clients from a background thread:

    autoscaling     default shape, autoscaling Ingress: 1 replica -> more under load -> 1,
                    no errors (the separate shape scales by the same Serve options)
    ingress killed  default shape, 2 Ingress replicas, one SIGKILLed mid-load: only the
                    requests it had accepted may fail (the HTTP proxy re-sends none of
                    those, and no ingress code is left to); Serve replaces it
    model killed    separate models, 2 model replicas, one SIGKILLed mid-load: < 1% errors
                    (the ingress retries), no timeouts, back to 2 replicas, /healthz 200
    /healthz        the same application, both model replicas SIGKILLed: 503 naming the
                    model until Serve has started a replacement, then 200

Each Ray test prints its load summary and the replica states it saw over time
(``pytest -s``). Replicas take ~10 s to start; deleting an application drains a
stopped ingress replica for ``RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S`` (2 s
here, ``pipelines.runtime``; Ray's default is 30 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError
from ray.serve.exceptions import ReplicaUnavailableError

from bench.load import LoadResult, run_load
from conftest import serve_app
from pipelines.errors import DataError
from serving.limits import ServeLimits

pytestmark = pytest.mark.serve  # Ray Serve on the shared head: the Ray tier's shards keep these files together

MODEL = "tiny_sentiment"
MODEL_DEPLOYMENT = f"classify-{MODEL}"
BODIES = [json.dumps({"inputs": texts}).encode()
          for texts in (["a warm and funny film", "dull"], ["not bad at all"], ["boring", "one of the best"])]
CONCURRENCY = 8
"""Closed-loop clients: 4x the autoscaling target of one replica."""
LOAD_TIMEOUT_S = 10.0
"""A request unanswered this long counts as a ``timeout`` error: nothing may hang."""
POLL_S = 0.5
AUTOSCALING = {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 2,
               "metrics_interval_s": 0.5, "look_back_period_s": 2.0,
               "upscale_delay_s": 0.5, "downscale_delay_s": 3.0}
"""Serve's defaults wait 30 s to scale up and 600 s to scale down; these react in seconds."""


# ---------------------------------------------------------------- no Ray


class StandIn:
    """A model handle whose methods are the given async functions, called as a
    ``DeploymentHandle``'s are (``handle.<method>.remote(...)``, awaited); it counts the
    calls of each."""

    def __init__(self, **methods: Callable[..., Any]) -> None:
        from serving.app import LocalMethod

        self.calls: Counter[str] = Counter()
        for name, method in methods.items():
            setattr(self, name, LocalMethod(self._counted(name, method)))

    def _counted(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return method(*args, **kwargs)

        return call

    def options(self, **_: Any) -> StandIn:
        return self


async def ready() -> bool:
    return True


async def died() -> bool:
    raise ActorDiedError()


async def silent() -> bool:
    await asyncio.sleep(3600)
    return True


def failing(*errors: Exception) -> Callable[..., Any]:
    """A classifier's ``answer`` that raises ``errors`` in turn, then answers."""
    pending = list(errors)

    async def answer(inputs: list[str]) -> list[dict[str, Any]]:
        if pending:
            raise pending.pop(0)
        return [{"label": "positive", "score": 0.9, "scores": {"negative": 0.1, "positive": 0.9}} for _ in inputs]

    return answer


@pytest.fixture(scope="module")
def card(tiny_checkpoint):
    from serving.catalog import read_cards

    return read_cards([tiny_checkpoint])[0]


def app_over(card, handles: dict[str, StandIn]):
    """The ingress's FastAPI app over ``handles``, each a model named by its key."""
    from serving.app import ServedModel, create_app

    models = {name: ServedModel(replace(card, name=name), handle) for name, handle in handles.items()}
    return create_app(models, ServeLimits())


def call(app, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def send() -> httpx.Response:
        # A 500 is answered, not raised: the app's catch-all handler is under test too.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.request(method, path, **kwargs)

    return asyncio.run(send())


def test_healthz_is_200_when_every_model_answers(card):
    response = call(app_over(card, {"one": StandIn(ready=ready), "two": StandIn(ready=ready)}), "GET", "/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.parametrize(("not_ready", "reason"), [(died, "ActorDiedError"), (silent, "no answer within 0.2 s")],
                         ids=["replica-died", "no-answer"])
def test_healthz_is_503_naming_the_model_that_is_not_ready(card, monkeypatch, not_ready, reason):
    import serving.app

    monkeypatch.setattr(serving.app, "HEALTH_TIMEOUT_S", 0.2)
    app = app_over(card, {"fine": StandIn(ready=ready), "gone": StandIn(ready=not_ready)})
    response = call(app, "GET", "/healthz")
    assert response.status_code == 503, response.text
    assert response.json() == {"error": f"model 'gone' is not ready ({reason})"}


@pytest.mark.parametrize(("errors", "status", "calls"), [
    ([ActorDiedError()], 200, 2),
    ([ActorUnavailableError("connection lost", None)], 200, 2),
    ([ReplicaUnavailableError("replica gone")], 200, 2),
    ([ActorDiedError(), ActorDiedError()], 503, 2),  # once only: a second loss is an outage (retry later)
    ([DataError("inputs[0]: unreadable")], 422, 1),  # the client's mistake: never retried
    ([RuntimeError("a bug")], 500, 1),
], ids=["died-once", "unavailable-once", "replica-unavailable-once", "died-twice", "client-error", "bug"])
def test_a_model_call_is_retried_once_only_when_its_replica_was_lost(card, errors, status, calls):
    model = StandIn(answer=failing(*errors))
    response = call(app_over(card, {MODEL: model}), "POST", f"/v1/models/{MODEL}/classify",
                    json={"inputs": ["fine", "dull"]})
    assert response.status_code == status, response.text
    assert model.calls["answer"] == calls
    if status == 200:
        assert [p["label"] for p in response.json()["predictions"]] == ["positive", "positive"]


def test_a_stream_whose_replica_died_before_its_first_line_is_retried(tiny_translator):
    from serving.catalog import read_cards

    lost = [ActorDiedError()]

    async def stream(inputs: list[str], max_length: int | None) -> AsyncIterator[dict[str, Any]]:
        if lost:
            raise lost.pop()
        for index, text in enumerate(inputs):
            yield {"type": "final", "index": index, "text": text, "score": 0.0, "tokens": []}

    (translator,) = read_cards([tiny_translator])
    model = StandIn(stream=stream)
    response = call(app_over(translator, {"translator": model}), "POST", "/v1/models/translator/generate",
                    json={"inputs": ["five", "nine"], "stream": True})
    assert response.status_code == 200, response.text
    assert [json.loads(line)["text"] for line in response.text.splitlines()] == ["five", "nine"]
    assert model.calls["stream"] == 2


# ---------------------------------------------------------------- on Ray Serve


def replica_states(deployment: str) -> dict[str, int]:
    """How many replicas of ``deployment`` are in each state: ``{"RUNNING": 1, "STARTING": 2}``."""
    from ray import serve

    from serving.app import APP_NAME

    overview = serve.status().applications[APP_NAME].deployments[deployment]
    return {getattr(state, "value", state): count for state, count in overview.replica_states.items()}


def running_replica_pids(ray_head: dict, deployment: str) -> list[int]:
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    from serving.app import APP_NAME

    details = ServeSubmissionClient(ray_head["dashboard"]).get_serve_details()
    replicas = details["applications"][APP_NAME]["deployments"][deployment]["replicas"]
    return [replica["pid"] for replica in replicas if replica["state"] == "RUNNING"]


class ReplicaTimeline:
    """One deployment's replica states as polled: ``[(seconds, {"RUNNING": 2}), ...]``,
    a sample kept only when the states changed. Failures show it."""

    def __init__(self, deployment: str) -> None:
        self.deployment = deployment
        self.start = time.monotonic()
        self.samples: list[tuple[float, dict[str, int]]] = []

    def now(self) -> dict[str, int]:
        states = replica_states(self.deployment)
        if not self.samples or self.samples[-1][1] != states:
            self.samples.append((round(time.monotonic() - self.start, 1), states))
        return states

    def restart(self) -> None:
        """Count from now, forgetting the samples so far."""
        self.start = time.monotonic()
        self.samples.clear()

    def watch(self, seconds: float) -> None:
        """Poll for ``seconds``."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.now()
            time.sleep(POLL_S)

    def wait_until(self, condition: Callable[[dict[str, int]], bool], what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition(self.now()):
            if time.monotonic() > deadline:
                pytest.fail(f"{self.deployment}: not {what} within {timeout_s:g} s; states seen: {self.samples}")
            time.sleep(POLL_S)


class BackgroundLoad:
    """``bench.load.run_load`` on ``url`` from a thread, in rounds of ``round_s`` until
    the ``with`` block ends; ``result`` sums the rounds. (A round's last requests are
    cut, uncounted, when it ends: rounds let the load last as long as the test needs.)"""

    def __init__(self, url: str, *, concurrency: int = CONCURRENCY, round_s: float = 3.0) -> None:
        self.url, self.concurrency, self.round_s = url, concurrency, round_s
        self.result = LoadResult(concurrency=concurrency, seconds=0.0, ok=0, errors=0, error_kinds=Counter())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="background-load", daemon=True)
        self._failure: BaseException | None = None

    def _run(self) -> None:
        try:
            self._run_rounds()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            self._failure = exc

    def _run_rounds(self) -> None:
        while not self._stop.is_set():
            part = asyncio.run(run_load(self.url, BODIES, concurrency=self.concurrency, seconds=self.round_s,
                                        warmup_s=0.0, timeout_s=LOAD_TIMEOUT_S))
            total = self.result
            total.seconds += part.seconds
            total.ok += part.ok
            total.errors += part.errors
            total.error_kinds.update(part.error_kinds)
            total.latencies_ms.extend(part.latencies_ms)

    def __enter__(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=self.round_s + LOAD_TIMEOUT_S + 5)
        assert not self._thread.is_alive(), "the load thread did not stop"
        if self._failure is not None:
            raise self._failure


def classify_url(base: str) -> str:
    return f"{base}/v1/models/{MODEL}/classify"


def healthz(base: str) -> httpx.Response:
    return httpx.get(f"{base}/healthz", timeout=LOAD_TIMEOUT_S)


@pytest.mark.ray
def test_autoscaling_adds_ingress_replicas_under_load_and_removes_them_after(ray_head, tiny_checkpoint):
    """Serve's autoscaler compares the requests in flight with the target per replica:
    8 clients over a target of 2 ask for the 3 replicas allowed; without load 1 is enough."""
    from serving.app import build_app

    app = build_app([tiny_checkpoint], deployment_options={"autoscaling_config": AUTOSCALING})
    with serve_app(ray_head, app) as url:
        timeline = ReplicaTimeline("Ingress")
        timeline.wait_until(lambda states: states == {"RUNNING": 1}, "at min_replicas", timeout_s=30)
        with BackgroundLoad(classify_url(url)) as load:
            timeline.wait_until(lambda states: states.get("RUNNING", 0) > 1, "scaled up under load", timeout_s=90)
        print("autoscaling load:", load.result.summary())
        assert load.result.ok > 0
        assert load.result.errors == 0, load.result.summary()
        # Only RUNNING replicas take requests; in Serve's throughput mode a stopped ingress
        # replica then drains for 30 s (RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S).
        timeline.wait_until(lambda states: states.get("RUNNING") == 1 and "STARTING" not in states,
                            "back at min_replicas", timeout_s=60)
        print("Ingress replicas over time:", timeline.samples)


def kill_one_of_two_replicas_mid_load(ray_head: dict, url: str, deployment: str) -> LoadResult:
    """SIGKILL one of ``deployment``'s two replicas 3 s into a load that goes on for at
    least 6 s more, check that nothing hung and that Serve replaced it, and return the
    load's result."""
    timeline = ReplicaTimeline(deployment)
    timeline.wait_until(lambda states: states == {"RUNNING": 2}, "at 2 replicas", timeout_s=60)
    victim = running_replica_pids(ray_head, deployment)[0]
    with BackgroundLoad(classify_url(url)) as load:
        timeline.watch(3)
        os.kill(victim, signal.SIGKILL)
        timeline.restart()
        timeline.watch(6)
    summary = load.result.summary()
    print(f"{deployment}: load with a replica killed: {summary}")
    assert load.result.ok > 0
    assert "timeout" not in load.result.error_kinds, summary
    timeline.wait_until(lambda states: states == {"RUNNING": 2}, "back at 2 replicas", timeout_s=90)
    print(f"{deployment}: replicas over time since the kill: {timeline.samples}")
    assert any(states.get("RUNNING", 0) < 2 for _, states in timeline.samples), timeline.samples
    assert victim not in running_replica_pids(ray_head, deployment)
    assert healthz(url).status_code == 200
    return load.result


@pytest.mark.ray
def test_killing_an_ingress_replica_mid_load_fails_only_the_requests_it_held(ray_head, tiny_checkpoint):
    """In the default shape the models live in the ingress replicas, and what forwards
    HTTP to them re-sends no request a replica had accepted: those fail (a 500, or a
    connection cut mid-answer), every other request is answered. Each client has one
    request in flight, so at most CONCURRENCY fail."""
    from serving.app import build_app

    app = build_app([tiny_checkpoint], deployment_options={"num_replicas": 2})
    with serve_app(ray_head, app) as url:
        result = kill_one_of_two_replicas_mid_load(ray_head, url, "Ingress")
    assert result.errors <= CONCURRENCY, result.summary()


@pytest.fixture(scope="module")
def separate_models_url(ray_head, tiny_checkpoint):
    """Base URL of the tiny classifier in the separate-models shape, at 2 model replicas
    (deployed last in this module: it stays up until the module ends)."""
    from serving.app import build_app

    app = build_app([tiny_checkpoint], deployment_options={"num_replicas": 2}, separate_models=True)
    with serve_app(ray_head, app) as url:
        yield url


@pytest.mark.ray
def test_killing_a_model_replica_mid_load_loses_no_requests(ray_head, separate_models_url):
    """The ingress sends a request whose model replica died once more
    (``serving.app.once_more_if_replica_lost``); Serve routes it to the live replica."""
    result = kill_one_of_two_replicas_mid_load(ray_head, separate_models_url, MODEL_DEPLOYMENT)
    assert result.summary()["error_rate"] < 0.01, result.summary()


@pytest.mark.ray
def test_healthz_is_503_while_a_model_has_no_live_replica(ray_head, separate_models_url):
    """Both model replicas killed at once: the ingress is up, but the model cannot
    answer until Serve has started a replacement."""
    timeline = ReplicaTimeline(MODEL_DEPLOYMENT)
    timeline.wait_until(lambda states: states == {"RUNNING": 2}, "at 2 replicas", timeout_s=60)
    assert healthz(separate_models_url).status_code == 200
    for pid in running_replica_pids(ray_head, MODEL_DEPLOYMENT):
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    answers: list[tuple[float, int, str]] = []  # (seconds since the kill, status, body)
    while not answers or answers[-1][1] != 200:
        assert time.monotonic() - killed < 90, f"/healthz never came back: {answers}"
        response = healthz(separate_models_url)
        answers.append((round(time.monotonic() - killed, 1), response.status_code, response.text))
        time.sleep(POLL_S)
    print("/healthz after the kill:", [(at, status) for at, status, _ in answers])
    unready = [body for _, status, body in answers if status == 503]
    assert [status for _, status, _ in answers] == [503] * len(unready) + [200], answers
    assert unready, f"no 503 while the replicas were replaced: {answers}"
    assert all(f"model '{MODEL}' is not ready" in json.loads(body)["error"] for body in unready), unready
