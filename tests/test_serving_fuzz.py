"""Fuzzing the HTTP API: whatever a client sends, the answer is never a 5xx.

Every response, fuzzed or hand-made, is held to the HTTP API (``docs/http-api.md``) by
:func:`check_response`: no 5xx; every error is JSON ``{"error": str}``; a 2xx matches the
response schema of ``/openapi.json`` and has one answer per input.

No Ray (most of the examples): the FastAPI app of ``create_app`` over stand-in model
handles, called in-process through schemathesis's ASGI client. A stand-in
(:class:`StandInReplica`) answers as a model server does, without a model: uploads
are read by the checkpoint's own reader (``serving.audio``, ``serving.video``), so a file
the real replica refuses is refused here too, and its ``DataError`` comes back wrapped
as Ray wraps it; texts and options are checked against what the ingress promises the
replica, so a breach surfaces as the 500 it would cause there. Four kinds of request:

- schemathesis's *coverage* cases: boundary values and one-field-wrong bodies for every
  operation of ``/openapi.json``, and unexpected methods; deterministic, no randomness;
- schemathesis + Hypothesis *fuzzing*: positive (schema-valid) and negative bodies,
  derandomized and bounded;
- *raw* bodies from hand strategies: any bytes, any JSON, hand-built multipart bodies
  with odd boundaries, names and file names, under several content types;
- *hand-made* cases, each checking the status and that the message names what is wrong.

On Ray (``@pytest.mark.ray``): the real Serve application, real replicas side by side,
a smaller fuzz sweep and the hand-made cases over real HTTP; only real replicas find
replica-side bugs (a tokenizer or decoder choking on what the ingress let through).

The ``{name}`` of ``/v1/models/{name}/...`` is any string in ``/openapi.json``, and each
route takes JSON and multipart bodies; a fuzzer left to that spends nearly every example
on a 404 or a 415. So each fuzz sweep reads the document with ``{name}`` pinned to one
model and bodies to the kind it takes (:func:`api_schema`); the coverage cases keep both
kinds of body and still mutate the name, and sweeps with ``{name}`` left free cover
unknown names.

schemathesis's own pytest entry (``schema.parametrize()`` with a fixture-made schema)
fails on pytest 9 (it reads ``request.node._nodeid``), so the sweeps draw its Hypothesis
strategies with a plain ``@given`` instead, and its pytest plugin is off (pyproject.toml).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import json
import traceback
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import urljoin

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ray.exceptions import RayTaskError
from schemathesis import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from conftest import mp4_bytes, serve_app, wav_bytes
from pipelines.errors import DataError
from pipelines.media.audio.features import AudioFeaturizer
from pipelines.media.video.decode import VideoFeaturizer
from serving import audio as audio_uploads
from serving import video as video_uploads
from serving.app import ServedModel, create_app
from serving.catalog import ModelCard, read_cards
from serving.limits import ServeLimits
from serving.uploads import Upload

pytestmark = pytest.mark.serve  # Ray Serve on the shared head: the Ray tier's shards keep these files together

# Small limits, so the fuzzer reaches each of them. max_body_bytes leaves room for what
# Python's json module cannot read although it is small: an integer of more than 4300
# digits, and arrays nested 1000 deep. The rest is what the real replicas need:
# max_batch_tokens 128 >= the translator's 16 tokens x max_beam_size 4 and the
# captioner's 24 frames x 4; 300 audio frames (3 s) <= 128 x 4.
LIMITS = ServeLimits(max_body_bytes=8192, max_upload_bytes=64_000, max_inputs=4, max_chars=200,
                     max_audio_seconds=3.0, max_video_seconds=5.0, max_batch_tokens=128,
                     batch_wait_timeout_s=0.005, max_beam_size=4, max_generate_length=128)
TEXT, TRANSLATOR, AUDIO, VIDEO = "tiny_sentiment", "tiny_translation", "tiny_digits", "tiny_caption"
GENERATOR = "tiny_generate"
JSON, MULTIPART, NDJSON = "application/json", "multipart/form-data", "application/x-ndjson"
MODELS = {TEXT: ("classify", JSON), TRANSLATOR: ("generate", JSON), AUDIO: ("classify", MULTIPART),
          VIDEO: ("generate", MULTIPART), GENERATOR: ("generate", JSON)}
"""The models every app here serves (the recipe names of the tiny checkpoints), with the
route each answers and the body it takes there."""
ROUTES = {task: f"/v1/models/{{name}}/{task}" for task in ("classify", "generate")}
WAV = wav_bytes(0.5)
MP4 = mp4_bytes(frames=8, size=16)


@pytest.fixture(scope="module")
def cards(tiny_checkpoint, tiny_translator, tiny_audio_classifier, tiny_video_captioner,
          tiny_generator) -> list[ModelCard]:
    cards = read_cards([tiny_checkpoint, tiny_translator, tiny_audio_classifier, tiny_video_captioner, tiny_generator])
    assert {card.name: card.task for card in cards} == {model: task for model, (task, _) in MODELS.items()}
    return cards


# ---------------------------------------------------------------- stand-in model deployments


class StandInReplica:
    """A model server without a model: ``answer(inputs, **options)`` (a classifier takes no
    options, a decoder ``beam_size`` and ``max_length``) and ``stream(inputs, max_length=)``
    answer made-up results, one per input, shaped as the real ones
    (``serving.deployments.ModelServer``). Uploads go through the checkpoint's own reader
    first, which raises the same ``DataError`` / ``TooLarge`` as in the real replica."""

    def __init__(self, card: ModelCard, limits: ServeLimits) -> None:
        self.card = card
        self.limits = limits
        self.read = None
        if card.input == "audio":
            limit = audio_uploads.DurationLimit.of(card.audio, limits)
            self.read = audio_uploads.UploadFeaturizer(AudioFeaturizer(card.audio), limit)
        elif card.input == "video":
            limit = video_uploads.DurationLimit.of(card.video, limits)
            self.read = video_uploads.UploadClips(VideoFeaturizer(card.video, refuse_longer=True), limit)

    async def answer(self, inputs: list, **options: Any) -> list[dict[str, Any]]:
        if self.card.conditions is not None:
            return self._write(inputs, options)
        await self._take(inputs)
        if not self.card.app.serve.route.decoding:
            assert not options, f"options {options!r} got through to a classifier"
            share = 1 / len(self.card.labels)
            return [{"label": self.card.labels[0], "score": share, "scores": dict.fromkeys(self.card.labels, share)}
                    for _ in inputs]
        assert set(options) <= {"beam_size", "max_length"}, f"options {options!r} got through"
        self._check_option(options.get("beam_size"), self.limits.max_beam_size)
        self._check_option(options.get("max_length"), self.limits.max_generate_length)
        return [{"text": "stand-in output", "score": -1.0} for _ in inputs]

    def _write(self, inputs: list, options: dict[str, Any]) -> list[dict[str, Any]]:
        """A conditional generator: one condition in (an unknown one is the replica's
        DataError, a 422), ``num_samples`` texts out."""
        assert isinstance(inputs, list) and len(inputs) == 1 and isinstance(inputs[0], str), inputs
        if inputs[0] not in self.card.conditions:
            raise DataError(f"condition: unknown condition {inputs[0]!r}")
        assert set(options) <= {"num_samples", "temperature", "top_k", "top_p", "seed", "max_length", "min_length",
                                "beam_size"}
        self._check_option(options.get("beam_size"), self.limits.max_beam_size)
        self._check_option(options.get("max_length"), self.limits.max_generate_length)
        shortest = options.get("min_length")
        assert shortest is None or (type(shortest) is int and 0 <= shortest <= self.limits.max_generate_length)
        if shortest is not None and shortest > (options.get("max_length") or shortest):
            raise DataError("need 0 <= min_length <= max_length")
        samples = options["num_samples"]
        assert type(samples) is int and 1 <= samples <= self.limits.max_inputs, samples
        if options.get("beam_size") is not None and samples > options["beam_size"]:
            raise DataError("num_samples: beam search returns at most beam_size texts")
        return [{"outputs": [{"text": "stand-in output", "score": -1.0}] * samples}]

    async def stream(self, inputs: list, *, max_length: int | None = None) -> AsyncIterator[dict[str, Any]]:
        await self._take(inputs)
        self._check_option(max_length, self.limits.max_generate_length)
        for index in range(len(inputs)):
            yield {"type": "token", "index": index, "token": 5, "delta": "stand-in"}
            yield {"type": "final", "index": index, "delta": "", "text": "stand-in", "score": -1.0, "tokens": [5]}

    async def ready(self) -> bool:
        return True

    @staticmethod
    def _check_option(value: Any, limit: int) -> None:
        assert value is None or (type(value) is int and 1 <= value <= limit), f"option {value!r} got through"

    async def _take(self, inputs: list) -> None:
        """What the ingress promises a replica (a text replica would fail on anything else),
        then the real reader over uploads, in a worker thread as the replica runs it."""
        assert isinstance(inputs, list) and 1 <= len(inputs) <= self.limits.max_inputs, inputs
        if self.read is None:
            for text in inputs:
                assert isinstance(text, str) and text.strip() and len(text) <= self.limits.max_chars, repr(text)
                text.encode("utf-8")  # the tokenizer takes no unpaired surrogates
        else:
            assert all(isinstance(upload, Upload) and isinstance(upload.data, bytes) for upload in inputs), inputs
            await asyncio.to_thread(self.read, inputs)


class StandInHandle:
    """``handle.<method>.remote(...)`` as on a ``DeploymentHandle``: an awaitable, or an
    async iterator for a streaming method, whose replica-side exception comes back as Ray
    delivers it (a ``RayTaskError`` that is also an instance of the original's class)."""

    def __init__(self, replica: StandInReplica) -> None:
        self.replica = replica

    def options(self, **_: Any) -> StandInHandle:
        return self  # stream=True: the stand-in's streaming methods stream anyway

    def __getattr__(self, method: str) -> Any:
        call = getattr(self.replica, method)

        async def remote_call(*args: Any, **kwargs: Any) -> Any:
            try:
                return await call(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - Ray wraps whatever the replica raises
                raise ray_wrapped(method, exc) from None

        async def remote_stream(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            try:
                async for item in call(*args, **kwargs):
                    yield item
            except Exception as exc:  # noqa: BLE001
                raise ray_wrapped(method, exc) from None

        return SimpleNamespace(remote=remote_stream if inspect.isasyncgenfunction(call) else remote_call)


def ray_wrapped(method: str, exc: Exception) -> Exception:
    return RayTaskError(method, traceback.format_exc(), exc).as_instanceof_cause()


def stand_in_app(cards: list[ModelCard]):
    models = {card.name: ServedModel(card, StandInHandle(StandInReplica(card, LIMITS))) for card in cards}
    return create_app(models, LIMITS)


@pytest.fixture(scope="module")
def in_process(cards) -> requests.Session:
    """A ``requests`` session whose requests run the stand-in app in this process. An
    exception the app does not handle (a 500) propagates out of the call, so the failing
    example shows its traceback."""
    with asgi.get_client(stand_in_app(cards)) as session:
        yield session


# ---------------------------------------------------------------- the contract every response keeps; sending requests


def check_response(status: int, content_type: str, content: bytes, what: str) -> Any:
    """The contract for any request; ``what`` says how to repeat it. Returns the JSON body
    (the list of items of a JSON-lines stream)."""
    assert status < 500, f"{status} {content[:500]!r}\nfor {what}"
    media_type = content_type.split(";")[0]
    if status < 300 and media_type == NDJSON:
        return [json.loads(line) for line in content.splitlines()]
    assert media_type == JSON, f"{status} {content_type} for {what}"
    body = json.loads(content)
    if status >= 400:
        assert isinstance(body, dict) and list(body) == ["error"], f"{status} {body!r} for {what}"
        message = body["error"]
        assert isinstance(message, str) and message, f"{status} {body!r} for {what}"
        assert "\n" not in message, f"not one sentence but a traceback? {message!r} for {what}"
    return body


def check_http(response: requests.Response, what: str) -> Any:
    """:func:`check_response` of a ``requests`` response."""
    return check_response(response.status_code, response.headers.get("content-type", ""), response.content, what)


def check_case(case: schemathesis.Case, session: requests.Session) -> None:
    """Send a schemathesis case through ``session`` and hold the answer to the contract:
    a 2xx also to the documented response schema, with one answer per input sent."""
    response = case.call(base_url=session.base_url, session=session)
    what = case.as_curl_command(base_url=session.base_url)
    body = check_response(response.status_code, response.headers.get("content-type", [""])[0], response.content,
                          what)
    if response.status_code >= 300:
        return
    case.validate_response(response, checks=[response_schema_conformance, content_type_conformance])
    if case.operation.method.upper() == "POST":
        if isinstance(body, list):  # streamed: a final item per input
            answers = [item for item in body if item["type"] == "final"]
        else:
            [answers] = body.values()
        if case.media_type == JSON and "condition" in case.body:  # a conditional generator: num_samples texts
            sent = [None] * case.body.get("num_samples", 1)
        else:
            sent = case.body["inputs" if case.media_type == JSON else "file"]
        assert len(answers) == len(sent), f"{len(answers)} answers to {len(sent)} inputs for {what}"


def raw(body: bytes | str, content_type: str | None = JSON, chunked: bool = False) -> dict[str, Any]:
    """A body sent as it is (``chunked``: in 1 kB chunks, without a Content-Length)."""
    return {"data": body.encode() if isinstance(body, str) else body, "content_type": content_type,
            "chunked": chunked}


def upload(*files: tuple[str | None, bytes], **fields: str) -> dict[str, Any]:
    """A multipart body: ``files`` as ``file`` parts ``(file name, bytes)``, then form ``fields``."""
    parts = [("file", (name, data, "application/octet-stream")) for name, data in files]
    return {"files": parts + [(key, (None, value)) for key, value in fields.items()]}


def post(session: requests.Session, model: str, task: str, request: dict[str, Any]) -> requests.Response:
    """POST ``request`` (a :func:`raw`, :func:`upload` or ``{"json": value}``) to a model's route."""
    request = dict(request)
    headers = {}
    if "data" in request:
        content_type = request.pop("content_type")
        if content_type is not None:
            headers["content-type"] = content_type
        if request.pop("chunked"):
            body = request["data"]
            request["data"] = (body[start:start + 1024] for start in range(0, len(body), 1024))
    return session.post(f"/v1/models/{model}/{task}", headers=headers, **request)


# ---------------------------------------------------------------- schemathesis sweeps


@functools.cache
def api_schema(model: str | None = None, media_type: str | None = None) -> schemathesis.BaseSchema:
    """The app's ``/openapi.json`` with ``{name}`` pinned to ``model`` (any string if None)
    and request bodies to ``media_type`` (both if None). The document depends on the
    limits only, not on the models served."""
    document = copy.deepcopy(create_app({}, LIMITS).openapi())
    for route in ROUTES.values():
        route_doc = document["paths"][route]["post"]
        if model is not None:
            [parameter] = route_doc["parameters"]
            parameter["schema"] = {"type": "string", "enum": [model]}
        if media_type is not None:
            content = route_doc["requestBody"]["content"]
            route_doc["requestBody"]["content"] = {media_type: content[media_type]}
    return schemathesis.openapi.from_dict(document)


def operation(method: str, path: str, **pinned: str | None) -> schemathesis.APIOperation:
    return api_schema(**pinned)[path][method]


SWEEPS = [
    *[pytest.param(model, "POST", ROUTES[task], id=f"{task}-{model}") for model, (task, _) in MODELS.items()],
    *[pytest.param(None, "POST", route, id=f"{task}-any-name") for task, route in ROUTES.items()],
    pytest.param(None, "GET", "/healthz", id="healthz"),
    pytest.param(None, "GET", "/v1/models", id="models"),
]
"""Operations to sweep, as ``(model the {name} is pinned to, method, path)``."""


@pytest.mark.parametrize(("model", "method", "path"), SWEEPS)
def test_coverage_cases_never_get_a_server_error(in_process, model, method, path):
    """Every schemathesis coverage case: boundary sizes and values, each field wrong in
    turn (type, missing, null, out of range), both media types, unexpected methods."""
    api = operation(method, path, model=model)
    schema = api.schema
    cases = list(schema.iter_coverage_cases(api, generation_modes=list(GenerationMode),
                                            generation_config=schema.config.generation))
    assert cases
    for case in cases:
        check_case(case, in_process)


FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
"""Deterministic Hypothesis runs (the same examples on every machine), without time limits."""


def fuzz_targets(examples: dict[str, int]) -> list:
    """``SWEEPS`` x generation modes, with a number of examples per mode ``{mode: n}``;
    operations that take no input have no negative cases."""
    return [pytest.param(*sweep.values, GenerationMode(mode), count, id=f"{sweep.id}-{mode}")
            for sweep in SWEEPS for mode, count in examples.items()
            if mode == "positive" or sweep.values[1] == "POST"]


@pytest.mark.parametrize(("model", "method", "path", "mode", "examples"),
                         fuzz_targets({"positive": 50, "negative": 80}))
def test_fuzzed_requests_never_get_a_server_error(in_process, model, method, path, mode, examples):
    fuzz(in_process, model, method, path, mode, examples)


def fuzz(session: requests.Session, model: str | None, method: str, path: str, mode: GenerationMode,
         examples: int) -> None:
    """``examples`` Hypothesis examples of ``method path`` in ``mode``. With a ``model``,
    its name stays as it is and bodies are what it takes, so that no example is spent
    on a 404 or 415 (the coverage cases and hand-made cases have those)."""
    if model is None:
        strategy = operation(method, path).as_strategy(generation_mode=mode)
    else:
        pinned = operation(method, path, model=model, media_type=MODELS[model][1])
        strategy = pinned.as_strategy(generation_mode=mode, path_parameters={"name": model})

    @settings(FUZZ, max_examples=examples)
    @given(case=strategy)
    def sweep(case: schemathesis.Case) -> None:
        check_case(case, session)

    sweep()


# ---------------------------------------------------------------- raw bodies from hand strategies

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
REQUEST_LIKE = st.fixed_dictionaries({"inputs": JSON_VALUES},
                                     optional={"beam_size": JSON_VALUES, "max_length": JSON_VALUES})
"""JSON that almost makes a request: the right keys, anything as values."""


@st.composite
def form_parts(draw) -> bytes:
    """One multipart part: a (maybe odd) name and file name, maybe a content type, any content."""
    name = draw(st.sampled_from(["file", "beam_size", "max_length", "inputs"]) | st.text(max_size=10))
    disposition = f'form-data; name="{name}"'
    filename = draw(st.none() | st.text(max_size=20))
    if filename is not None:
        disposition += f'; filename="{filename}"'
    headers = [f"Content-Disposition: {disposition}"]
    if draw(st.booleans()):
        headers.append(f"Content-Type: {draw(st.sampled_from(['audio/wav', 'video/mp4', 'text/plain', '']))}")
    content = draw(st.binary(max_size=100) | st.sampled_from([WAV, MP4, b"", b"2", "9" * 5000]))
    content = content.encode() if isinstance(content, str) else content
    return "\r\n".join(headers).encode() + b"\r\n\r\n" + content


HEADER_CHARACTERS = st.characters(min_codepoint=32, max_codepoint=255, exclude_categories=["Cc"])
"""What HTTP lets a header value hold: Latin-1, no control characters."""


@st.composite
def multipart_bodies(draw) -> tuple[bytes, str]:
    """A multipart body of any parts, maybe cut short, with a boundary in its Content-Type
    that is usually (not always) the one it uses."""
    boundary = draw(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=80))
    parts = draw(st.lists(form_parts(), max_size=4))
    body = b"".join(f"--{boundary}\r\n".encode() + part + b"\r\n" for part in parts) + f"--{boundary}--\r\n".encode()
    cut = draw(st.none() | st.integers(0, len(body)))
    declared = draw(st.sampled_from([boundary, f'"{boundary}"', ""]) | st.text(HEADER_CHARACTERS, max_size=10))
    return body[:cut], f"{MULTIPART}; boundary={declared}"


CONTENT_TYPES = st.sampled_from([JSON, "application/vnd.api+json", MULTIPART, "text/plain", "application/octet-stream",
                                 "application/x-www-form-urlencoded", None])
RAW_BODIES = st.one_of(
    st.tuples(st.binary(max_size=200), CONTENT_TYPES),
    st.tuples(JSON_VALUES.map(json.dumps).map(str.encode), CONTENT_TYPES),
    st.tuples(REQUEST_LIKE.map(json.dumps).map(str.encode), st.just(JSON)),
    multipart_bodies(),
)
"""``(body, Content-Type)``: bytes, JSON and multipart bodies beside what the schema describes."""


def post_raw(session: requests.Session, model: str, body: bytes, content_type: str | None) -> None:
    response = post(session, model, MODELS[model][0], raw(body, content_type))
    check_http(response, f"POST /v1/models/{model}/... Content-Type: {content_type} body {body[:300]!r}")


@settings(FUZZ, max_examples=150)
@given(model=st.sampled_from(list(MODELS)), sent=RAW_BODIES)
def test_raw_bodies_never_get_a_server_error(in_process, model, sent):
    post_raw(in_process, model, *sent)


# ---------------------------------------------------------------- hand-made cases


def hand(label: str, model: str, request: dict[str, Any], status: int, *fragments: str, task: str | None = None):
    """A hand-made case: ``request`` to ``model`` (on its own route unless ``task``) answers
    ``status`` with a message holding every one of ``fragments``."""
    return pytest.param(model, task or MODELS[model][0], request, status, fragments, id=label)


OVERSIZED = '{"inputs": ["' + "x" * 9000 + '"]}'
HAND_CASES = [
    # not JSON, or JSON that Python's json module cannot read
    hand("malformed-json", TEXT, raw('{"inputs": ["a"'), 400, "malformed JSON body", "(at character 15)"),
    hand("form-urlencoded-as-json", TEXT, raw("inputs=a"), 400, "malformed JSON body: Expecting value"),
    hand("invalid-utf8", TEXT, raw(b'{"inputs": ["caf\xe9"]}'), 400, "the body is not valid UTF-8", "byte 16"),
    hand("nan-beam-size", TRANSLATOR, raw('{"inputs": ["five"], "beam_size": NaN}'), 422,
         "beam_size: must be an integer, got a number"),
    hand("infinite-max-length", TRANSLATOR, raw('{"inputs": ["five"], "max_length": -Infinity}'), 422,
         "max_length: must be an integer, got a number"),
    hand("huge-beam-size", TRANSLATOR, {"json": {"inputs": ["five"], "beam_size": 10**30}}, 422,
         f"beam_size: must be <= 4, got {10**30}"),
    hand("int-too-long-to-parse", TRANSLATOR, raw('{"inputs": ["five"], "max_length": ' + "9" * 5000 + "}"), 400,
         "malformed JSON body: an integer with more than 4300 digits"),
    hand("deeply-nested", TEXT, raw('{"inputs": ' + "[" * 3000 + "]" * 3000 + "}"), 400,
         "malformed JSON body: arrays or objects nested too deeply"),
    hand("nested-inputs", TEXT, {"json": {"inputs": [[["a"]]]}}, 422, "inputs[0]: must be a string, got an array"),
    hand("duplicate-keys-last-wins", TEXT, raw('{"inputs": ["fine"], "inputs": [""]}'), 422,
         "inputs[0]: must not be empty"),
    hand("unpaired-surrogate", TEXT, raw('{"inputs": ["\\ud800"]}'), 422, "inputs[0]: is not valid Unicode"),
    # JSON of the wrong shape
    hand("empty-body", TEXT, raw(b""), 422, "body: is required", '{"inputs": ["some text"]}'),
    hand("array-body", TEXT, {"json": ["a"]}, 422, "body: must be a JSON object, got an array"),
    hand("null-body", TEXT, raw("null"), 422, "body: must be a JSON object, got null"),
    hand("inputs-a-string", TEXT, {"json": {"inputs": "a"}}, 422, "inputs: must be an array, got a string"),
    hand("input-a-number", TEXT, {"json": {"inputs": [1]}}, 422, "inputs[0]: must be a string, got a number"),
    hand("empty-inputs", TEXT, {"json": {"inputs": []}}, 422, "inputs: must not be empty"),
    hand("empty-string", TEXT, {"json": {"inputs": [""]}}, 422, "inputs[0]: must not be empty"),
    hand("blank-string", TRANSLATOR, {"json": {"inputs": ["five", " \t\n"]}}, 422, "inputs[1]: must not be empty"),
    hand("text-too-long", TEXT, {"json": {"inputs": ["x" * 201]}}, 422,
         "inputs[0]: is 201 characters long; the limit is 200"),
    hand("too-many-inputs", TEXT, {"json": {"inputs": ["a"] * 5}}, 422, "inputs: has 5 items; the limit is 4"),
    hand("string-beam-size", TRANSLATOR, {"json": {"inputs": ["five"], "beam_size": "4"}}, 422,
         "beam_size: must be an integer, got a string"),
    hand("bool-max-length", TRANSLATOR, {"json": {"inputs": ["five"], "max_length": True}}, 422,
         "max_length: must be an integer, got a boolean"),
    hand("negative-beam-size", TRANSLATOR, {"json": {"inputs": ["five"], "beam_size": -1}}, 422,
         "beam_size: must be >= 1, got -1"),
    hand("unknown-field", TRANSLATOR, {"json": {"inputs": ["five"], "beam": 2}}, 422, "beam: is not a known field"),
    hand("options-to-a-classifier", TEXT, {"json": {"inputs": ["a"], "beam_size": 2}}, 422,
         "beam_size: is not a known field"),
    # sizes: the body limits
    hand("oversized-by-content-length", TEXT, raw(OVERSIZED), 413,
         f"request body is too large ({len(OVERSIZED)} bytes); the limit is 8192 bytes (max_body_bytes)"),
    hand("oversized-chunked", TEXT, raw(OVERSIZED, chunked=True), 413,
         "request body is too large (more than 8192 bytes); the limit is 8192 bytes (max_body_bytes)"),
    hand("oversized-upload", AUDIO, upload(("big.wav", bytes(70_000))), 413,
         "the limit is 64000 bytes (max_upload_bytes)"),
    # content types
    hand("text-plain", TEXT, raw('{"inputs": ["a"]}', "text/plain"), 415,
         f"model '{TEXT}' takes texts as JSON, not text/plain", "Content-Type: application/json"),
    hand("no-content-type", TEXT, raw('{"inputs": ["a"]}', None), 415, "not a body without Content-Type"),
    hand("multipart-to-text-model", TEXT, upload(("a.wav", WAV)), 415,
         f"model '{TEXT}' takes texts as JSON, not multipart/form-data"),
    hand("json-to-audio-model", AUDIO, {"json": {"inputs": ["one"]}}, 415,
         f"model '{AUDIO}' takes audio uploads, not application/json", "parts named 'file'"),
    hand("json-to-video-model", VIDEO, {"json": {"inputs": ["one"]}}, 415,
         f"model '{VIDEO}' takes video uploads, not application/json"),
    # multipart bodies
    hand("no-file-part", AUDIO, upload(beam_size="2"), 422, "file: is required", "parts named 'file'"),
    hand("file-part-without-filename", AUDIO, upload(file="just text"), 422,
         "file[0]: must be a file part (one with a filename), got a text field"),
    hand("garbage-audio", AUDIO, upload(("noise.wav", bytes(range(256)) * 4)), 422,
         "file[0] 'noise.wav': not a readable audio file"),
    hand("empty-audio", AUDIO, upload(("empty.wav", b"")), 422, "file[0] 'empty.wav': empty file"),
    hand("garbage-video", VIDEO, upload(("noise.mp4", bytes(range(256)) * 4)), 422,
         "file[0] 'noise.mp4': not a readable video"),
    hand("audio-as-video", VIDEO, upload(("clip.mp4", MP4), ("tone.wav", WAV)), 422,
         "file[1] 'tone.wav': no video stream"),
    hand("too-many-files", AUDIO, upload(*[("a.wav", WAV)] * 5), 422, "file: has 5 items; the limit is 4"),
    hand("form-beam-size-nan", VIDEO, upload(("clip.mp4", MP4), beam_size="NaN"), 422,
         "beam_size: must be an integer, got a string"),
    hand("form-max-length-huge", VIDEO, upload(("clip.mp4", MP4), max_length="9" * 5000), 422,
         "max_length: Unable to parse input string as an integer"),
    hand("form-beam-size-too-big", VIDEO, upload(("clip.mp4", MP4), beam_size="5"), 422,
         "beam_size: must be <= 4, got '5'"),
    hand("truncated-multipart", AUDIO, raw(b"--x\r\ngarbage", f"{MULTIPART}; boundary=x"), 422,
         "file: is required"),  # python-multipart reads it as a form without parts
    hand("multipart-without-boundary", AUDIO, raw(b"--x\r\ngarbage", MULTIPART), 400,
         "malformed multipart/form-data body"),
    # routes
    hand("wrong-route", TEXT, {"json": {"inputs": ["a"]}}, 404, f"model '{TEXT}' is a classify model", task="generate"),
    hand("unknown-model", "nope", {"json": {"inputs": ["a"]}}, 404, "unknown model 'nope'", task="classify"),
    # and what works, so the sweeps above are known to reach the models
    hand("text-ok", TEXT, {"json": {"inputs": ["a warm and funny film", "dull"]}}, 200),
    hand("translate-ok", TRANSLATOR, {"json": {"inputs": ["five"], "beam_size": 1, "max_length": 8}}, 200),
    hand("audio-ok", AUDIO, upload(("tone.wav", WAV)), 200),
    hand("video-ok", VIDEO, upload(("clip.mp4", MP4), beam_size="1", max_length="4"), 200),
    hand("translate-streamed", TRANSLATOR, {"json": {"inputs": ["five", "six"], "stream": True, "max_length": 4}}, 200),
    hand("video-streamed", VIDEO, upload(("clip.mp4", MP4), stream="true", max_length="4"), 200),
]


def check_hand_case(session: requests.Session, model: str, task: str, request: dict[str, Any], status: int,
                    fragments: tuple[str, ...]) -> None:
    response = post(session, model, task, request)
    body = check_http(response, f"POST /v1/models/{model}/{task}")
    assert response.status_code == status, body
    for fragment in fragments:
        assert fragment in body["error"], body["error"]


@pytest.mark.parametrize(("model", "task", "sent", "status", "fragments"), HAND_CASES)
def test_hand_made_requests_answer_what_is_wrong(in_process, model, task, sent, status, fragments):
    check_hand_case(in_process, model, task, sent, status, fragments)


PATH_NAMES = ["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "..", "tiny_sentiment%00", "..%5C..%5Cwindows", "%252e%252e",
              "tiny_sentiment%2F..%2Ftiny_sentiment", "~root", "%C0%AE%C0%AE"]
"""Model names a client could hope to reach a file with (raw, as they go in the URL)."""


@pytest.mark.parametrize("name", PATH_NAMES)
def test_model_names_are_looked_up_never_opened(in_process, monkeypatch, name):
    """A name is a key of the model table: a 404, and no file opened meanwhile."""

    def no_files(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a request for model {name!r} opened a file: {args}")

    monkeypatch.setattr("builtins.open", no_files)
    monkeypatch.setattr("os.open", no_files)
    check_path_name(in_process, name)


def check_path_name(session: requests.Session, name: str) -> None:
    response = session.post(f"/v1/models/{name}/classify", json={"inputs": ["a"]})
    body = check_http(response, f"POST /v1/models/{name}/classify")
    assert response.status_code == 404, body
    assert body["error"].startswith(("unknown model ", "no route for POST ")), body  # .. may be resolved client-side


# ---------------------------------------------------------------- on Ray Serve: real replicas over HTTP


class HttpSession(requests.Session):
    """A ``requests`` session with URLs relative to ``base_url``, as the in-process one has."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        return super().request(method, urljoin(self.base_url, url), *args, **kwargs)


@pytest.fixture(scope="module")
def over_http(ray_head, tiny_checkpoint, tiny_translator, tiny_audio_classifier, tiny_video_captioner):
    """A session to the real application, its four models side by side (deleted after the module)."""
    from serving.app import build_app

    checkpoints = [tiny_checkpoint, tiny_translator, tiny_audio_classifier, tiny_video_captioner]
    with serve_app(ray_head, build_app(checkpoints, LIMITS)) as url, HttpSession(url) as session:
        yield session


@pytest.mark.ray
@pytest.mark.parametrize(("model", "method", "path", "mode", "examples"),
                         fuzz_targets({"positive": 15, "negative": 15}))
def test_fuzzed_requests_to_real_replicas_never_get_a_server_error(over_http, model, method, path, mode, examples):
    fuzz(over_http, model, method, path, mode, examples)


@pytest.mark.ray
@settings(FUZZ, max_examples=60)
@given(model=st.sampled_from(list(MODELS)), sent=RAW_BODIES)
def test_raw_bodies_to_real_replicas_never_get_a_server_error(over_http, model, sent):
    post_raw(over_http, model, *sent)


@pytest.mark.ray
@pytest.mark.parametrize(("model", "task", "sent", "status", "fragments"), HAND_CASES)
def test_hand_made_requests_to_real_replicas_answer_what_is_wrong(over_http, model, task, sent, status, fragments):
    check_hand_case(over_http, model, task, sent, status, fragments)


@pytest.mark.ray
@pytest.mark.parametrize("name", PATH_NAMES)
def test_model_names_over_http_are_looked_up(over_http, name):
    check_path_name(over_http, name)
