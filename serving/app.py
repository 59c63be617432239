"""The rayseq Serve application: a FastAPI ingress that holds the models (default) or
fronts one model deployment per checkpoint (``separate_models``).

    default:           HTTP -> Ingress replica (FastAPI: limits, validation, JSON errors;
                                LocalModel per checkpoint: rows, batcher, model)
    separate_models:   HTTP -> Ingress replica (FastAPI) -> DeploymentHandle -> model replica

Nothing here names an application: each checkpoint's application (``pipelines.apps``)
gives its model server (``serving.deployments.ModelServer``: its predictor, the rows of
its medium, its batcher) and its route; the POST routes are those the applications
answer (``pipelines.apps.routes``: ``/classify``, ``/generate``, ...), built from their
descriptions with request models made from the limits (``serving.schemas``).

One hop is the default because on a small node a second hop (a Serve handle call to
another process) costs more CPU per request than batching saves (bench/serve.py measures
both). In Serve's high-throughput mode (``pipelines.runtime.use_serve_throughput_mode``,
what ``rayseq serve`` runs) HAProxy holds the HTTP port and forwards to the ingress
replicas, which serve HTTP themselves.

One application serves any mix of checkpoints (``rayseq serve A B``); each model
answers the route of its task (``meta.json``), and any other route is a 404 naming
the right one. Text models take JSON ``{"inputs": [...]}``; audio, video and image
models take the same routes as ``multipart/form-data`` with one ``file`` part per
recording, video file or image (``serving.bodies``), decoded by the model server.

Build it from Python with :func:`build_app`, from a Serve config with
:func:`app_builder` (a full one: ``deploy/serve_config.yaml``)::

    applications:
      - name: rayseq
        route_prefix: /
        import_path: serving.app:app_builder
        args:
          checkpoints: [runs/demo/checkpoint]
          limits: {max_inputs: 32}
          separate_models: true    # optional: a deployment per model
          deployment_options:      # Serve options for what holds the models
            autoscaling_config: {min_replicas: 1, max_replicas: 4, target_ongoing_requests: 32}
        deployments:               # Serve's own per-deployment overrides, by name
          - name: Ingress
            num_replicas: 2

The ingress is named ``Ingress``, separate model deployments ``<route>-<model name>``
(``classify-demo_sentiment``); Serve applies a config's ``deployments:`` entries over what the
builder set.

The FastAPI app is made per replica by :func:`create_app`, a plain function of the
model table and the limits, so its routes and errors can be tested without Ray.
"""

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from pipelines.apps.routes import RouteSpec
from pipelines.errors import ConfigError
from serving.auth import ApiToken, require_token
from serving.bodies import openapi_body, read_inputs
from serving.body_limit import BodySizeLimit
from serving.catalog import ModelCard, read_cards
from serving.deployments import ModelServer, check_limits, with_options
from serving.errors import client_error, error_response, install_error_handlers
from serving.limits import ServeLimits
from serving.placement import ReplicaDevice
from serving.schemas import ErrorBody, Health, ModelList, all_routes, request_models, served_routes

APP_NAME = "rayseq"
"""Name of the Serve application that ``rayseq serve`` and the tests run."""

_CLIENT_ERRORS = {
    400: {"model": ErrorBody, "description": "Malformed JSON or multipart body"},
    404: {"model": ErrorBody, "description": "Unknown model, or a model that does not answer this route"},
    413: {"model": ErrorBody, "description": "Body larger than max_body_bytes (JSON) or max_upload_bytes "
                                             "(multipart), a recording or video longer than its duration "
                                             "limit, or a video with more frames than data.video.max_frames"},
    415: {"model": ErrorBody, "description": "JSON sent to an audio or video model, or an upload to a text model"},
    422: {"model": ErrorBody, "description": "Body that breaks the request schema or a limit, or a file that "
                                             "is not readable audio or video (named in the message)"},
}


HEALTH_TIMEOUT_S = 2.0
"""How long ``/healthz`` waits for each model's no-op call."""


_STREAMING_RESPONSES = {
    **_CLIENT_ERRORS,
    200: {"description": "The outputs; with `\"stream\": true`, JSON lines while decoding",
          "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
}


@dataclass(frozen=True)
class ServedModel:
    card: ModelCard
    handle: Any
    """Whatever answers ``handle.answer.remote(inputs, **options)`` (awaited): the
    ``DeploymentHandle`` of the model's deployment, or a :class:`LocalModel`."""


def create_app(models: dict[str, ServedModel], limits: ServeLimits, token: ApiToken | None = None) -> FastAPI:
    """The HTTP API (``docs/http-api.md``) over ``models`` (keyed by name), enforcing ``limits``;
    with a ``token``, every route but /healthz asks for it (``serving.auth``)."""
    routes = served_routes()
    bodies = request_models(limits)

    app = FastAPI(
        title="rayseq",
        summary="Recurrent sequence models served with Ray Serve",
        description="Errors are JSON `{\"error\": message}`; 4xx means the request is wrong, 5xx is a bug.",
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes, max_upload_bytes=limits.max_upload_bytes)
    require_token(app, token)  # added last, so it runs first: no body is read for a client without it

    def serving(task: str) -> Callable[[str], Awaitable[ServedModel]]:
        """Dependency resolving ``{name}`` to a model that answers ``task``. It runs before
        the body is validated, so an unknown model is a 404 whatever the body says.

        ``async`` although it never awaits: FastAPI runs a plain ``def`` dependency on a
        worker thread, and in a Serve replica (whose event loop has no root task for
        anyio to tie its threads to) that started and stopped a thread per request."""

        async def lookup(name: str) -> ServedModel:
            model = models.get(name)
            if model is None:
                raise HTTPException(404, f"unknown model {name!r}; known models: {', '.join(sorted(models))}")
            if model.card.task != task:
                raise HTTPException(
                    404,
                    f"model {name!r} is a {model.card.task} model ({model.card.kind}) and has no /{task} "
                    f"route; use POST /v1/models/{name}/{model.card.task}",
                )
            return model

        return lookup

    @app.get("/healthz", response_model=Health, responses={503: {"model": ErrorBody, "description": "A model "
                                                                 "has no replica ready to answer"}})
    async def healthz() -> Any:
        """Ready to answer every route: each model answers a no-op call within
        ``HEALTH_TIMEOUT_S`` (a model in its own deployment may have no live replica)."""
        for name, model in models.items():
            try:
                await asyncio.wait_for(model.handle.ready.remote(), HEALTH_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - any failure means not ready
                timed_out = isinstance(exc, asyncio.TimeoutError)
                reason = f"no answer within {HEALTH_TIMEOUT_S:g} s" if timed_out else type(exc).__name__
                who = "a model" if token else f"model {name!r}"  # /healthz is open: names only when /v1/models is
                return error_response(503, f"{who} is not ready ({reason})")
        return {"status": "ok"}

    @app.get("/v1/models", response_model=ModelList, response_model_exclude_none=True)
    async def list_models() -> dict[str, Any]:
        return {"models": [model_info(model.card) for model in models.values()]}

    async def answer(model: ServedModel, inputs: list, options: dict[str, Any]) -> list[dict[str, Any]]:
        """The model's answers to ``inputs``, one per input, in order. A bad upload is only
        found by the model replica; its error comes back as a 4xx."""
        async with client_errors():
            return await once_more_if_replica_lost(lambda: model.handle.answer.remote(inputs, **options))

    async def streamed(model: ServedModel, inputs: list, options: dict[str, Any]) -> StreamingResponse:
        """JSON lines of the model's greedy decoding as it goes. The first item is awaited
        before the response starts, so a bad upload still gets its 4xx status (and a lost
        replica a second try; once lines are sent, a lost replica cuts the stream short)."""

        async def start() -> tuple[AsyncIterator[dict[str, Any]], dict[str, Any]]:
            items = model.handle.options(stream=True).stream.remote(inputs, **options)
            return items, await anext(items)

        async with client_errors():
            items, first = await once_more_if_replica_lost(start)

        async def lines() -> AsyncIterator[bytes]:
            yield json_line(first)
            try:
                async for item in items:
                    yield json_line(item)
            except Exception as exc:  # noqa: BLE001 - the status is sent: say so in the stream itself
                yield json_line({"type": "error", "error": f"decoding stopped: {type(exc).__name__}"})
                raise

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    def add_route(route: RouteSpec) -> None:
        """``POST /v1/models/{name}/<route>``: read the body the model takes, answer it,
        or, on a decoding route with ``"stream": true``, stream greedy decoding."""

        # Depends() in the default is FastAPI's idiom: a marker it reads, not a value shared between calls
        async def endpoint(request: Request, model: ServedModel = Depends(serving(route.name))) -> Any:  # noqa: B008
            spec = model.card.app.serve.route  # the model's own body on a shared path
            inputs, options = await read_inputs(request, model.card, bodies)
            if options.pop("stream", False):
                return await streamed(model, inputs, {k: v for k, v in options.items() if k != "beam_size"})
            media = accepted_file(request, spec, len(inputs))
            answers = await answer(model, inputs, options)
            if media is not None:  # the file itself, e.g. Accept: audio/midi
                return Response(base64.b64decode(answers[0][media[1]]), media_type=media[0])
            return answers[0] if spec.single else {spec.answer_key: answers}

        responses = _STREAMING_RESPONSES if route.decoding else _CLIENT_ERRORS
        if route.files:
            content = {media: {"schema": {"type": "string", "format": "binary"}} for media, _, _ in route.files}
            described = "; ".join(f"`Accept: {media}`: {what}" for media, _, what in route.files)
            responses = {**responses, 200: {"description": f"The answer as JSON; {described}", "content": content}}
        app.post(f"/v1/models/{{name}}/{route.name}", name=route.name, response_model=route.response,
                 description=route.description, responses=responses,
                 openapi_extra=openapi_body(bodies, bodies.bodies(route.name, all_routes())))(endpoint)

    for route in routes:
        add_route(route)

    return app


@asynccontextmanager
async def client_errors() -> AsyncIterator[None]:
    """A model's error that is the client's (``serving.errors.client_error``) as the
    HTTP error it is; a model with no replica to answer (lost twice, none running, its
    queue full) as a 503 the client may retry; anything else goes on up: a 500."""
    try:
        yield
    except UNAVAILABLE as exc:
        raise HTTPException(503, f"the model is unavailable right now ({type(exc).__name__}); retry shortly",
                            headers={"Retry-After": "1"}) from None
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is the client's
        error = client_error(exc)
        if error is None:
            raise
        raise error from None


REPLICA_LOST = (RayActorError, ReplicaUnavailableError)
"""What a handle call raises when the model replica serving it died or cannot be reached
(Ray's ``ActorDiedError`` and ``ActorUnavailableError`` are both ``RayActorError``)."""

UNAVAILABLE = (*REPLICA_LOST, BackPressureError, DeploymentUnavailableError)
"""What a handle call raises when no replica can take the request now: a 503, not a bug."""

T = TypeVar("T")


async def once_more_if_replica_lost(call: Callable[[], Awaitable[T]]) -> T:
    """``call()``, sent once more if the model replica it went to was lost meanwhile.

    Serve re-sends a request its replica had not yet accepted, but one it had accepted
    fails with the replica (``ActorDiedError``; ``ActorUnavailableError`` when handles
    call over gRPC, as in throughput mode): without this, a 500 for each request a
    killed replica was working on (tests/test_serving_resilience.py). Inference is
    idempotent, so sending it again, to a replica that is alive, costs only time. Once
    only: a second loss means the model has no live replica, and retrying would hide
    that outage. A client error or a bug in the model is never retried."""
    try:
        return await call()
    except REPLICA_LOST:
        return await call()


def accepted_file(request: Request, route: RouteSpec, inputs: int) -> tuple[str, str, str] | None:
    """The route's file answer (``RouteSpec.files``) whose media type the request's
    ``Accept`` header names, the route's default file for one input unless it asks for
    JSON, or None: JSON. A file asked for by name for several inputs is a 406 (one file
    holds one answer)."""
    accepted = {part.split(";")[0].strip().lower() for part in request.headers.get("accept", "").split(",")}
    named = next((file for file in route.files if file[0] in accepted), None)
    if named is not None and inputs > 1:
        raise HTTPException(406, f"{named[0]} holds the answer to one input, and {inputs} were sent: send one "
                                 "input, or ask for Accept: application/json")
    if named is None and route.file_by_default and inputs == 1 and "application/json" not in accepted:
        return route.files[0]
    return named


def json_line(item: dict[str, Any]) -> bytes:
    return json.dumps(item, ensure_ascii=False).encode() + b"\n"


def model_info(card: ModelCard) -> dict[str, Any]:
    """A model's entry in ``GET /v1/models``."""
    info: dict[str, Any] = {"name": card.name, "kind": card.kind, "task": card.task}
    if card.labels is not None:
        info["labels"] = list(card.labels)
    for key in ("speakers", "words", "conditions"):
        if getattr(card, key) is not None:
            info[key] = list(getattr(card, key))
    if card.input != "text":  # text models keep the original shape of ``/v1/models``
        info["input"] = card.input
    return info


class LocalMethod:
    """A model's method called the way a ``DeploymentHandle`` is (``.remote(...)``,
    awaited), for a model living in the calling process."""

    def __init__(self, method: Callable[..., Awaitable[Any]]) -> None:
        self.method = method

    def remote(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        return self.method(*args, **kwargs)


class LocalModel:
    """A model server (``serving.deployments.ModelServer``) built inside the ingress
    replica, behind the handle interface the routes call: ``model.answer.remote(...)``."""

    def __init__(self, card: ModelCard, limits: ServeLimits, batching: bool, device: str = "cpu") -> None:
        self.server = ModelServer.func_or_class(card, limits, batching, device)
        for method in ("answer", "ready", "stream"):
            setattr(self, method, LocalMethod(getattr(self.server, method)))

    def options(self, **_: Any) -> "LocalModel":
        """As ``DeploymentHandle.options``; in-process calls need none (``stream=True``
        included: calling an async generator method gives its items already)."""
        return self


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=256)
@serve.ingress()
class Ingress:
    """Builds the FastAPI app in the replica (``__serve_build_asgi_app__`` runs after
    ``__init__``) over each model: loaded right here (``None`` for its handle: the
    default, one hop per request) or reached through the handle of its own deployment
    (``separate_models``). Either way the replica allows many requests in flight: they
    must reach a model together to be batched."""

    def __init__(self, models: list[tuple[ModelCard, DeploymentHandle | None]], limits: ServeLimits,
                 token: ApiToken | None = None, *, batching: bool = True, device: str = "cpu") -> None:
        self.models = {card.name: ServedModel(card, LocalModel(card, limits, batching, device) if handle is None
                                              else handle)
                       for card, handle in models}
        self.limits = limits
        self.token = token

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.models, self.limits, self.token)

    async def batch_stats(self, name: str) -> dict[str, int]:
        """Model ``name``'s batching so far (``serving.deployments.BatchStats``): this
        replica's, or one replica's of its own deployment."""
        handle = self.models[name].handle
        if isinstance(handle, LocalModel):
            return handle.server.batch_stats()
        return await handle.batch_stats.remote()


INGRESS_OPTIONS = {"ray_actor_options": {"num_cpus": 0.5}, "max_ongoing_requests": 32}
"""Serve options of an ingress that holds the models: a model replica's share of a node,
and at most 32 requests in flight. More wait in front of it (in HAProxy's queue, in
throughput mode), where waiting costs no Python: with 128 clients and 256 allowed, one
2-core replica served 104 classify req/s (p99 1.6 s); with 32 allowed, 208 (p99 0.63 s)
(bench/serve.py, 6 s runs). 32 requests still fill a batch of short texts."""


def build_app(checkpoints: Sequence[str | Path], limits: ServeLimits | None = None,
              deployment_options: Mapping[str, Any] | None = None, *, batching: bool = True,
              separate_models: bool = False, placement: ReplicaDevice | None = None) -> serve.Application:
    """The Serve application for ``checkpoints``; model names come from each recipe's
    ``name`` (made unique).

    By default every ingress replica loads the models itself and answers in one hop
    (HTTP proxy -> ingress replica): on a small node, a second hop to a model replica
    costs more CPU per request than batching saves. ``separate_models`` gives each
    model deployments of its own behind a thin ingress, so models scale (and are
    placed, e.g. on GPU nodes) independently. ``deployment_options`` (Serve options
    such as ``autoscaling_config``; see ``serving.deployments.DEPLOYMENT_OPTIONS``)
    apply to whatever holds the models: the ingress, or every model deployment.
    ``batching=False`` runs each request alone (``rayseq serve --no-batching``: the
    serving benchmark's comparison). ``placement`` (``serving.placement``): the device
    of the replicas holding models and the GPUs each reserves (default: CPU).

    Bad checkpoints raise :class:`DataError`, and limits a model cannot run under or
    options Serve rejects :class:`ConfigError`, here, on the driver, before anything
    is deployed."""
    limits = limits or ServeLimits()
    options = deployment_options or {}
    placement = placement or ReplicaDevice()
    device = placement.device
    models = []
    for card in read_cards(checkpoints):
        check_limits(card, limits)  # ConfigError naming the limit
        if separate_models:
            configured = with_options(ModelServer, name=f"{card.task}-{card.name}",
                                      options=placement.options(options, ModelServer.ray_actor_options))
            models.append((card, configured.bind(card, limits, batching, device)))
        else:
            models.append((card, None))
    ingress = Ingress if separate_models else with_options(
        Ingress, name="Ingress", options=placement.options({**INGRESS_OPTIONS, **options}, Ingress.ray_actor_options))
    token = ApiToken.from_env()  # passed as an argument: the replica's env is not ours
    return ingress.bind(models, limits, token, batching=batching, device=device)


APP_ARGS = ("checkpoints", "limits", "deployment_options", "batching", "separate_models", "device",
            "gpus_per_replica")
"""The ``args`` of a Serve config application whose ``import_path`` is :func:`app_builder`."""


def app_builder(args: dict[str, Any]) -> serve.Application:
    """Serve config ``import_path`` entry: ``args`` are ``{"checkpoints": [...]}`` and,
    optionally, ``{"limits": {<ServeLimits field>: value}}`` and
    ``{"deployment_options": {<Serve option>: value}}``, ``{"batching": false}``,
    ``{"separate_models": true}`` and ``{"device": "cuda", "gpus_per_replica": 0.5}``
    (see :func:`build_app` and ``serving.placement``)."""
    unknown = sorted(set(args) - set(APP_ARGS))
    if unknown:
        raise ConfigError(f"serve args: unknown key(s) {unknown}; known: {list(APP_ARGS)}")
    checkpoints = args.get("checkpoints")
    if isinstance(checkpoints, (str, Path)):
        checkpoints = [checkpoints]
    if not isinstance(checkpoints, list) or not checkpoints:
        raise ConfigError("serve args: 'checkpoints' must be a non-empty list of checkpoint folders")
    limits, options = args.get("limits") or {}, args.get("deployment_options") or {}
    if not isinstance(limits, dict):
        raise ConfigError("serve args: 'limits' must be a mapping of ServeLimits fields")
    if not isinstance(options, dict):
        raise ConfigError("serve args: 'deployment_options' must be a mapping of Serve deployment options")
    switches = {key: args.get(key, default) for key, default in (("batching", True), ("separate_models", False))}
    for key, value in switches.items():
        if not isinstance(value, bool):
            raise ConfigError(f"serve args: {key!r} must be true or false, got {value!r}")
    placement = ReplicaDevice(args.get("device", "cpu"), args.get("gpus_per_replica"),
                              names=("serve args: device", "serve args: gpus_per_replica"))
    return build_app(checkpoints, ServeLimits.from_dict(limits), options, **switches, placement=placement)
