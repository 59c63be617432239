"""Security defaults of serving (issue 8, item 6).

No Ray: bearer-token auth on the FastAPI app (``create_app`` with stand-in model
handles, in-process), the ``--host`` policy of ``rayseq serve``, the arguments a local
Ray starts with, tampered checkpoints, and request fields that must never reach the
filesystem. On Ray: the real ``rayseq serve`` over real HTTP, with a token.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from conftest import ROOT, assert_error, free_port, mp4_bytes, wav_bytes
from pipelines.apps.audio_classify import app as audio_classify
from pipelines.apps.text_classify import app as text_classify
from pipelines.checkpoint import load_inference
from pipelines.config import AudioConfig, VideoConfig
from pipelines.errors import ConfigError, DataError
from serving.app import ServedModel, create_app
from serving.auth import TOKEN_ENV, ApiToken, route_path
from serving.catalog import ModelCard, read_cards, url_safe
from serving.cli import check_exposure, is_loopback
from serving.limits import ServeLimits

pytestmark = pytest.mark.serve  # Ray Serve on the shared head: the Ray tier's shards keep these files together

TOKEN = "rayseq-test-token_0123456789abcdef"
LIMITS = ServeLimits(max_body_bytes=4096, max_inputs=4)
PREDICTION = {"label": "positive", "score": 0.75, "scores": {"negative": 0.25, "positive": 0.75}}
TEXT_CARD = ModelCard(name="tiny", kind="seq2vec", task="classify", app=text_classify.APP,
                      labels=("negative", "positive"), checkpoint=Path("/nonexistent/tiny"), max_length=32)
AUDIO_CARD = ModelCard(name="digits", kind="seq2vec", task="classify", app=audio_classify.APP,
                       labels=tuple("0123456789"), checkpoint=Path("/nonexistent/digits"), max_length=32, input="audio",
                       audio=AudioConfig(sample_rate=8000, n_mels=16, max_seconds=4.0))
PROBE = "rayseq-probe"
"""Marker in every hostile name and path below: no filesystem call may ever mention it."""


# ---------------------------------------------------------------- stand-ins, no Ray


class _Method:
    """``handle.<method>`` of a deployment: ``.remote(*args, **kwargs)`` is awaitable."""

    def __init__(self, answer: Callable[..., Any], calls: list | None = None) -> None:
        self.answer, self.calls = answer, calls

    def remote(self, *args: Any, **kwargs: Any):
        if self.calls is not None:
            self.calls.append((*args, kwargs))

        async def result() -> Any:
            return self.answer(*args, **kwargs)

        return result()


class StandInHandle:
    """What ``create_app`` uses of a ``DeploymentHandle``: ``answer`` (kept in
    ``calls``) and ``/healthz``'s ``ready``."""

    def __init__(self) -> None:
        self.calls: list[tuple[list, dict]] = []
        self.answer = _Method(lambda inputs, **options: [PREDICTION for _ in inputs], self.calls)
        self.ready = _Method(lambda: None)


def served(*cards: ModelCard) -> dict[str, ServedModel]:
    return {card.name: ServedModel(card, StandInHandle()) for card in cards}


def calls(models: dict[str, ServedModel]) -> list[tuple[list, dict]]:
    return [call for model in models.values() for call in model.handle.calls]


@pytest.fixture
def models() -> dict[str, ServedModel]:
    return served(TEXT_CARD, AUDIO_CARD)


@pytest.fixture
def guarded(models) -> TestClient:
    """The app with a token, over in-process ASGI."""
    with TestClient(create_app(models, LIMITS, ApiToken(TOKEN))) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---------------------------------------------------------------- bearer-token auth

GUARDED = [  # (method, path, JSON body): every route but /healthz, and one that does not exist
    ("GET", "/v1/models", None),
    ("GET", "/openapi.json", None),
    ("GET", "/docs", None),
    ("POST", "/v1/models/tiny/classify", {"inputs": ["fine"]}),
    ("POST", "/v1/models/nope/classify", {"inputs": ["fine"]}),
    ("GET", "/no/such/route", None),
]


def test_without_a_token_the_api_is_open_as_before(models):
    with TestClient(create_app(models, LIMITS)) as client:
        assert client.get("/v1/models").status_code == 200
        assert client.post("/v1/models/tiny/classify", json={"inputs": ["fine"]}).json() == {
            "predictions": [PREDICTION]}
        assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})


def test_healthz_stays_open(guarded):
    assert guarded.get("/healthz").json() == {"status": "ok"}
    assert guarded.get("/healthz", headers=bearer("wrong-token-wrong-token")).status_code == 200


@pytest.mark.parametrize(("method", "path", "body"), GUARDED)
def test_a_missing_or_non_bearer_credential_is_401(guarded, models, method, path, body):
    for headers in ({}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"},
                    {"Authorization": "Bearer   "}, {"Authorization": TOKEN}):
        response = guarded.request(method, path, json=body, headers=headers)
        assert_error(response, 401, "Authorization: Bearer <token>")
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert calls(models) == []


@pytest.mark.parametrize(("method", "path", "body"), GUARDED)
def test_a_wrong_token_is_403(guarded, models, method, path, body):
    for wrong in ("wrong-token-wrong-token", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "é" * 20):
        response = guarded.request(method, path, json=body,
                                   headers={"Authorization": f"Bearer {wrong}".encode()})
        assert_error(response, 403, "not this server's")
        assert "www-authenticate" not in response.headers
    assert calls(models) == []


def test_the_token_opens_every_route(guarded, models):
    assert [m["name"] for m in guarded.get("/v1/models", headers=bearer(TOKEN)).json()["models"]] == [
        "tiny", "digits"]
    assert guarded.get("/docs", headers=bearer(TOKEN)).status_code == 200
    response = guarded.post("/v1/models/tiny/classify", json={"inputs": ["fine"]}, headers=bearer(TOKEN))
    assert response.json() == {"predictions": [PREDICTION]}
    # the scheme is case-insensitive (RFC 7235); the route's own errors come through
    assert guarded.get("/v1/models", headers={"Authorization": f"bearer  {TOKEN}"}).status_code == 200
    assert_error(guarded.post("/v1/models/nope/classify", json={"inputs": ["x"]}, headers=bearer(TOKEN)), 404,
                 "unknown model 'nope'")
    assert calls(models) == [(["fine"], {})]


def test_websockets_need_the_token_too(guarded):
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as info, guarded.websocket_connect("/v1/models"):
        pass
    assert info.value.code == 1008


def test_a_client_without_the_token_cannot_make_the_server_read_a_body(guarded):
    """Auth runs before the body limit: no body is buffered for an unknown client."""
    big = b'{"inputs": ["' + b"z" * (LIMITS.max_body_bytes * 4) + b'"]}'
    response = guarded.post("/v1/models/tiny/classify", content=big, headers={"content-type": "application/json"})
    assert_error(response, 401)
    response = guarded.post("/v1/models/tiny/classify", content=big,
                            headers={"content-type": "application/json", **bearer(TOKEN)})
    assert_error(response, 413, "max_body_bytes")


def test_openapi_declares_the_bearer_scheme_but_never_the_token(guarded):
    schema = guarded.get("/openapi.json", headers=bearer(TOKEN)).json()
    assert schema["components"]["securitySchemes"]["bearerAuth"]["type"] == "http"
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert schema["security"] == [{"bearerAuth": []}]
    assert schema["paths"]["/healthz"]["get"]["security"] == []
    assert TOKEN not in json.dumps(schema)


def test_the_token_is_never_echoed(guarded):
    responses = [guarded.request(method, path, json=body, headers=headers)
                 for method, path, body in GUARDED + [("GET", "/healthz", None)]
                 for headers in ({}, bearer(TOKEN + "x"), bearer(TOKEN), {"Authorization": f"Basic {TOKEN}"})]
    for response in responses:
        assert TOKEN not in response.text and TOKEN not in str(response.headers)
    assert TOKEN not in repr(ApiToken(TOKEN))


def test_tokens_are_compared_in_constant_time(guarded, monkeypatch):
    import hmac

    import serving.auth

    compared, real = [], hmac.compare_digest

    def spy(a, b):
        compared.append((type(a), type(b)))
        return real(a, b)

    monkeypatch.setattr(serving.auth.hmac, "compare_digest", spy)
    assert guarded.get("/v1/models", headers=bearer(TOKEN)).status_code == 200
    assert guarded.get("/v1/models", headers=bearer("wrong-token-wrong-token")).status_code == 403
    assert compared == [(bytes, bytes), (bytes, bytes)]


def test_the_token_comes_from_the_environment_and_must_be_usable():
    assert ApiToken.from_env({}) is None
    assert ApiToken.from_env({TOKEN_ENV: TOKEN}) == ApiToken(TOKEN)
    with pytest.raises(ConfigError, match=f"{TOKEN_ENV} is set but empty"):
        ApiToken.from_env({TOKEN_ENV: " "})
    for bad in ("short", "has spaces inside it here", "quote\"quote\"quote\"", "newline-at-the-end-of-it\n"):
        with pytest.raises(ConfigError, match=f"{TOKEN_ENV} must be at least 16 characters") as info:
            ApiToken.from_env({TOKEN_ENV: bad})
        assert bad.strip() not in str(info.value)


@pytest.mark.parametrize(("scope", "path"), [
    ({"path": "/healthz"}, "/healthz"),
    ({"path": "/api/healthz", "root_path": "/api"}, "/healthz"),
    ({"path": "/api", "root_path": "/api"}, "/"),
    ({"path": "/healthz/../v1/models"}, "/healthz/../v1/models"),  # only the exact path is open
])
def test_open_paths_are_matched_exactly_under_a_root_path(scope, path):
    assert route_path(scope) == path


# ---------------------------------------------------------------- rayseq serve: --host policy and Ray


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_token(host):
    assert is_loopback(host)
    assert check_exposure(host, None, allow_unauthenticated=False) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "10.0.0.1", "serve.example.com"])
def test_beyond_loopback_a_token_or_an_explicit_opt_out_is_needed(host):
    assert not is_loopback(host)
    with pytest.raises(ConfigError, match=f"--host {re.escape(host)} serves beyond this machine: set {TOKEN_ENV}"):
        check_exposure(host, None, allow_unauthenticated=False)
    assert check_exposure(host, None, allow_unauthenticated=True).startswith("warning: serving without auth")
    assert "TLS" in check_exposure(host, ApiToken(TOKEN), allow_unauthenticated=False)


def test_serve_refuses_an_open_public_host_before_starting_ray(tiny_checkpoint, monkeypatch, capsys):
    import pipelines.runtime
    from pipelines.cli import main

    def no_ray(**_):
        raise AssertionError("Ray must not start")

    monkeypatch.setattr(pipelines.runtime, "init_ray", no_ray)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert main(["serve", str(tiny_checkpoint), "--host", "0.0.0.0"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("rayseq: error: --host 0.0.0.0 serves beyond this machine") and "\n" not in error
    monkeypatch.setenv(TOKEN_ENV, "")
    assert main(["serve", str(tiny_checkpoint)]) == 2
    assert f"{TOKEN_ENV} is set but empty" in capsys.readouterr().err


def test_serve_help_names_the_token_variable(capsys):
    import serving.auth
    import serving.cli
    from pipelines.cli import main

    assert serving.cli.TOKEN_ENV == serving.auth.TOKEN_ENV
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert TOKEN_ENV in help_text and "--allow-unauthenticated" in help_text


def test_a_local_ray_keeps_its_dashboard_on_loopback(monkeypatch):
    """``rayseq serve`` (and train) start a local Ray through ``init_ray``: its dashboard,
    which can submit jobs, must only listen on 127.0.0.1 (Serve itself runs without it
    too, but ``serve status`` and the replica logs need it)."""
    import ray

    from pipelines import runtime

    started = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: started.append(kwargs) or SimpleNamespace(dashboard_url=""))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    runtime.init_ray()
    [options] = started
    assert options["address"] == "local"
    assert options["dashboard_host"] == "127.0.0.1"
    assert options.get("include_dashboard") in (None, False)


# ---------------------------------------------------------------- tampered checkpoints


def tampered(source: Path, destination: Path, files: dict[str, str | bytes]) -> Path:
    """A copy of checkpoint ``source`` with ``files`` ({name: content}) replaced."""
    destination.mkdir()
    for path in source.iterdir():
        (destination / path.name).write_bytes(path.read_bytes())
    for name, content in files.items():
        (destination / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return destination


def edited_yaml(checkpoint: Path, section: str, key: str, value: Any) -> str:
    import yaml

    config = yaml.safe_load((checkpoint / "config.yaml").read_text())
    config[section][key] = value
    return yaml.safe_dump(config)


def edited_meta(checkpoint: Path, **changes: Any) -> str:
    meta = json.loads((checkpoint / "meta.json").read_text())
    return json.dumps({**meta, **changes})


class RunsCode:
    """Unpickled with plain ``pickle``, this creates the file it names: what a malicious
    checkpoint would do with ``os.system`` instead."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


CONFIG_CASES = {  # case: (the tampered file, given the checkpoint; the error after "<checkpoint>/")
    "unknown key": (lambda c: {"config.yaml": edited_yaml(c, "model", "evil", 1)},
                    r"config\.yaml: unknown key 'model\.evil'"),
    "wrong type": (lambda c: {"config.yaml": edited_yaml(c, "data", "max_length", "32")},
                   r"config\.yaml: data\.max_length: expected int, got '32'"),
    "negative size": (lambda c: {"config.yaml": edited_yaml(c, "model", "hidden_size", -16)},
                      r"config\.yaml: model\.hidden_size must be >= 1, got -16"),
    "non-string key": (lambda c: {"config.yaml": "1: 2\n"}, r"config\.yaml: unknown key '1'"),
    "not a mapping": (lambda c: {"config.yaml": "- 1\n- 2\n"}, r"config\.yaml: must be a YAML mapping"),
    "empty": (lambda c: {"config.yaml": ""}, r"config\.yaml: must be a YAML mapping"),
    "not YAML": (lambda c: {"config.yaml": "model: [unclosed\n"}, r"config\.yaml: not valid YAML"),
    "negative vocabulary": (lambda c: {"meta.json": edited_meta(c, vocab_size=-5)},
                            r"meta\.json: needs 'vocab_size' as integers >= 1, got vocab_size=-5"),
    "boolean size": (lambda c: {"meta.json": edited_meta(c, vocab_size=True)}, r"meta\.json: needs 'vocab_size'"),
    "duplicate labels": (lambda c: {"meta.json": edited_meta(c, labels=["a", "a"])},
                         r"meta\.json: needs 'labels': 2 or more distinct non-empty strings"),
    "labels not strings": (lambda c: {"meta.json": edited_meta(c, labels=[{"x": 1}, 2])},
                           r"meta\.json: needs 'labels'"),
    "unknown meta key": (lambda c: {"meta.json": edited_meta(c, loader="pickle")},
                         r"meta\.json: unknown key\(s\) \['loader'\]"),
    "newer format": (lambda c: {"meta.json": edited_meta(c, format=2)},
                     r"meta\.json: checkpoint format 2 was written by a newer rayseq; this one reads format 1"),
    "format not an integer": (lambda c: {"meta.json": edited_meta(c, format="1")},
                              r"meta\.json: 'format' must be a positive integer, got '1'"),
    "wrong route": (lambda c: {"meta.json": edited_meta(c, task="generate")},
                    r"meta\.json: task 'generate', but a seq2vec text model answers 'classify'"),
    "not JSON": (lambda c: {"meta.json": "{kind: seq2vec"}, r"meta\.json: not valid JSON"),
    "not an object": (lambda c: {"meta.json": "[]"}, r"meta\.json: needs a JSON object"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_tampered_config_or_meta_fails_on_the_driver_and_in_the_replica(tiny_checkpoint, tmp_path, case):
    files, message = CONFIG_CASES[case]
    bad = tampered(tiny_checkpoint, tmp_path / "bad", files(tiny_checkpoint))
    with pytest.raises(DataError, match=f"^{re.escape(str(bad))}/{message}"):
        read_cards([bad])  # rayseq serve, before Ray starts
    with pytest.raises(DataError, match=f"^{re.escape(str(bad))}/{message}"):
        load_inference(bad)  # a model replica, rayseq eval


def test_a_checkpoint_from_before_the_format_field_still_loads(tiny_checkpoint, tmp_path):
    meta = json.loads((tiny_checkpoint / "meta.json").read_text())
    assert meta.pop("format") == 1  # training writes it
    old = tampered(tiny_checkpoint, tmp_path / "old", {"meta.json": json.dumps(meta)})
    assert load_inference(old).labels == load_inference(tiny_checkpoint).labels


@pytest.mark.parametrize("fixture", ["tiny_checkpoint", "tiny_translator", "tiny_audio_classifier",
                                     "tiny_speech_recognizer", "tiny_video_classifier", "tiny_video_captioner"])
def test_every_kind_of_checkpoint_training_writes_passes_the_checks(request, fixture):
    checkpoint = request.getfixturevalue(fixture)
    [card] = read_cards([checkpoint])
    assert load_inference(checkpoint).meta["task"] == card.task


def test_yaml_tags_that_would_run_code_are_refused(tiny_checkpoint, tmp_path):
    ran = tmp_path / "ran"
    config = f"!!python/object/apply:os.system ['touch {ran}']\n"
    bad = tampered(tiny_checkpoint, tmp_path / "bad", {"config.yaml": config})
    for load in (lambda: read_cards([bad]), lambda: load_inference(bad)):
        with pytest.raises(DataError, match=r"config\.yaml: not valid YAML .*python/object/apply"):
            load()
    assert not ran.exists()


@pytest.mark.parametrize("layout", ["torch.save archive", "bare pickle"])
def test_a_model_pt_that_would_run_code_is_refused_unrun(tiny_checkpoint, tmp_path, layout):
    ran = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    state = {**torch.load(tiny_checkpoint / "model.pt", weights_only=True), "extra": RunsCode(ran)}
    if layout == "torch.save archive":
        torch.save(state, evil)
        expected = r"model\.pt: refused by torch\.load\(weights_only=True\).*GLOBAL io\.open was not an allowed"
    else:
        evil.write_bytes(pickle.dumps(state))
        expected = r"model\.pt: not a torch\.save archive"
    bad = tampered(tiny_checkpoint, tmp_path / "bad", {"model.pt": evil.read_bytes()})
    with pytest.raises(DataError, match=f"^{re.escape(str(bad))}/{expected}") as info:
        read_cards([bad])
    assert not re.search("weights_only=False|add_safe_globals", str(info.value))  # no advice to load it anyway
    with pytest.raises(DataError, match=f"^{re.escape(str(bad))}/{expected}"):
        load_inference(bad)
    assert not ran.exists()


def test_sizes_no_model_can_have_fail_with_the_checkpoint_named(tiny_checkpoint, tmp_path):
    bad = tampered(tiny_checkpoint, tmp_path / "bad", {"meta.json": edited_meta(tiny_checkpoint, vocab_size=2**62)})
    with pytest.raises(DataError, match=rf"^{re.escape(str(bad))}: config.yaml and meta.json describe a model that "
                                        "cannot be built"):
        load_inference(bad)


def test_a_model_pt_that_does_not_fit_never_half_loads(tiny_checkpoint, tmp_path):
    state = torch.load(tiny_checkpoint / "model.pt", weights_only=True)
    name = next(iter(state))
    resized = tmp_path / "resized.pt"
    torch.save({**state, name: torch.zeros(3, 3)}, resized)
    bad = tampered(tiny_checkpoint, tmp_path / "resized", {"model.pt": resized.read_bytes()})
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))}/model\.pt: does not fit the model .*size mismatch"):
        load_inference(bad)
    missing = tmp_path / "missing.pt"
    torch.save({k: v for k, v in state.items() if k != name}, missing)
    bad = tampered(tiny_checkpoint, tmp_path / "missing", {"model.pt": missing.read_bytes()})
    with pytest.raises(DataError, match=r"model\.pt: does not fit .*Missing key"):
        load_inference(bad)
    listed = tmp_path / "listed.pt"
    torch.save(list(state.values()), listed)
    bad = tampered(tiny_checkpoint, tmp_path / "listed", {"model.pt": listed.read_bytes()})
    for load in (lambda: read_cards([bad]), lambda: load_inference(bad)):
        with pytest.raises(DataError, match=r"model\.pt: must hold a state dict \(parameter name -> tensor\), got"):
            load()
    assert load_inference(tiny_checkpoint).model.training is False  # the untouched one still loads


# ---------------------------------------------------------------- request fields never reach the filesystem

_recorded: list[tuple[str, tuple]] | None = None
_FILESYSTEM_EVENTS = ("open", "os.", "shutil.", "tempfile.", "glob.", "pathlib.")


def _audit(event: str, args: tuple) -> None:
    if _recorded is not None and event.startswith(_FILESYSTEM_EVENTS):
        _recorded.append((event, args))


@pytest.fixture(scope="module")
def filesystem_calls():
    """``with filesystem_calls() as seen:`` records every filesystem audit event (open,
    os.*, shutil.*, ...) of this process, any thread, into ``seen``. Audit hooks cannot
    be removed: outside the ``with`` it records nothing."""
    sys.addaudithook(_audit)

    @contextlib.contextmanager
    def recording():
        global _recorded
        _recorded = []
        try:
            yield _recorded
        finally:
            _recorded = None

    return recording


def mentions_probe(events: list[tuple[str, tuple]]) -> list[tuple[str, tuple]]:
    return [(event, args) for event, args in events if PROBE in repr(args)]


def test_the_filesystem_probe_sees_file_access_in_any_thread(filesystem_calls, tmp_path):
    """The control: without it, an empty record could mean a blind probe."""
    with filesystem_calls() as seen:
        worker = threading.Thread(target=(tmp_path / f"{PROBE}.txt").write_text, args=("x",))
        worker.start()
        worker.join()
        os.listdir(tmp_path)
    assert [event for event, _ in mentions_probe(seen)] == ["open"]
    assert ("os.listdir", (str(tmp_path),)) in seen


HOSTILE_NAMES = [f"..%2F..%2F{PROBE}", f"%2Ftmp%2F{PROBE}", f"..%5C..%5C{PROBE}", f"{PROBE}%00.pt", f"~{PROBE}",
                 f"..{PROBE}..", f"%2E%2E%2F{PROBE}"]


def test_model_names_in_urls_are_only_looked_up(models, filesystem_calls):
    with TestClient(create_app(models, LIMITS)) as client, filesystem_calls() as seen:
        for name in HOSTILE_NAMES:
            response = client.post(f"/v1/models/{name}/classify", json={"inputs": ["fine"]})
            assert response.status_code == 404, response.text  # an unknown model, or no such route
    assert mentions_probe(seen) == []
    assert calls(models) == []


def test_upload_filenames_are_only_labels(models, filesystem_calls):
    names = [f"../../{PROBE}.wav", f"/tmp/{PROBE}.wav", f"C:\\{PROBE}\\x.wav", f"{PROBE}\x00.wav"]
    data = wav_bytes()
    parts = [("file", (name, data, "audio/wav")) for name in names]
    with TestClient(create_app(models, LIMITS)) as client, filesystem_calls() as seen:
        response = client.post("/v1/models/digits/classify", files=parts)
        assert response.status_code == 200, response.text
        # a form field or a text "file" field that looks like a path is a 422, not a path
        assert_error(client.post("/v1/models/digits/classify", files=parts[:1], data={"path": f"/tmp/{PROBE}"}),
                     422, "path: is not a known field")
        assert_error(client.post("/v1/models/digits/classify", files=[("file", (None, f"/etc/{PROBE}"))]), 422,
                     "must be a file part")
    assert mentions_probe(seen) == []
    [(uploads, _)] = calls(models)
    assert [upload.data for upload in uploads] == [data] * len(names)  # the bytes travel, not a path
    assert uploads[0].name == f"file[0] '../../{PROBE}.wav'"  # a label, as sent
    assert all(upload.name.startswith(f"file[{i}] '") for i, upload in enumerate(uploads))


def test_model_replicas_read_uploads_from_memory_and_name_them_only_in_messages(filesystem_calls):
    from pipelines.media.audio.features import AudioFeaturizer
    from pipelines.media.video.decode import VideoFeaturizer
    from serving import audio, video
    from serving.uploads import Upload

    read_audio = audio.UploadFeaturizer(AudioFeaturizer(AUDIO_CARD.audio),
                                        audio.DurationLimit.of(AUDIO_CARD.audio, ServeLimits()))
    config = VideoConfig(size=16, max_frames=24, max_seconds=10.0)
    read_video = video.UploadClips(VideoFeaturizer(config), video.DurationLimit.of(config, ServeLimits()))
    name = f"file[0] '../../{PROBE}'"
    clip = mp4_bytes()
    with filesystem_calls() as seen:
        assert len(read_audio([Upload(name, wav_bytes())])) == 1
        assert len(read_video([Upload(name, clip)])) == 1
        for read in (read_audio, read_video):
            with pytest.raises(DataError, match=re.escape(name)):
                read([Upload(name, b"not a media file")])
    assert mentions_probe(seen) == []


@pytest.mark.parametrize("recipe_name", ["../../etc/passwd", "/abs/path", "..", "a/../../b", "C:\\x\\..\\y"])
def test_model_names_from_recipes_are_url_segments(recipe_name):
    name = url_safe(recipe_name)
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name), name  # no separator, no leading dot


# ---------------------------------------------------------------- on Ray: the real CLI over real HTTP


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (Linux /proc/net/tcp*)."""
    import socket

    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:
                raw = bytes.fromhex(address)
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(socket.inet_ntop(family, words))
    return found


def process_tree(root: int) -> list[str]:
    """Command lines of ``root`` and every process under it."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            children.setdefault(int(stat.read_text().rsplit(")", 1)[1].split()[1]), []).append(int(stat.parent.name))
    lines, stack = [], [root]
    while stack:
        pid = stack.pop()
        with contextlib.suppress(OSError):
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        stack.extend(children.get(pid, []))
    return lines


@pytest.mark.ray
def test_rayseq_serve_asks_for_the_token_over_http(ray_head, tiny_checkpoint):
    """``rayseq serve`` joins the session's head (RAY_ADDRESS), as inside ``ray job
    submit``: it starts no Ray, so no dashboard; a local one is covered by
    ``test_a_local_ray_keeps_its_dashboard_on_loopback``."""
    from ray import serve
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    serve_was_running = bool(serve.status().proxies)
    env = {**os.environ, TOKEN_ENV: TOKEN}
    command = [sys.executable, "-m", "pipelines.cli", "serve", str(tiny_checkpoint), "--port", str(free_port())]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    output: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in process.stdout:
            output.append(line)
            if line.startswith("models at "):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 240
        while not ready.wait(1):
            assert process.poll() is None and time.monotonic() < deadline, "".join(output)[-3000:]
        # Serve keeps the port it was first started with on this head: read it back
        port = ServeSubmissionClient(ray_head["dashboard"]).get_serve_details()["http_options"]["port"]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            assert http.get("/healthz").json() == {"status": "ok"}
            missing = http.get("/v1/models")
            assert_error(missing, 401, "Authorization: Bearer <token>")
            assert missing.headers["www-authenticate"].startswith("Bearer")
            assert_error(http.get("/openapi.json", headers=bearer(TOKEN + "x")), 403)
            assert [m["name"] for m in http.get("/v1/models", headers=bearer(TOKEN)).json()["models"]] == [
                "tiny_sentiment"]
            answer = http.post("/v1/models/tiny_sentiment/classify", json={"inputs": ["fine"]}, headers=bearer(TOKEN))
            assert answer.status_code == 200, answer.text
            assert_error(http.post("/v1/models/tiny_sentiment/classify", json={"inputs": ["fine"]}), 401)
        assert listening_addresses(port) <= {"127.0.0.1", "::1"}, listening_addresses(port)  # the default --host
        assert not [line for line in process_tree(process.pid) if "dashboard" in line]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if not serve_was_running and not serve.status().applications:
            serve.shutdown()  # so a later serve.start() gets the port it asks for
    assert process.returncode == 0, "".join(output)[-3000:]
    assert TOKEN not in "".join(output)
