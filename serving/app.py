"""The rayseq Serve application: a FastAPI ingress in front of one model deployment
per checkpoint.

    HTTP -> Ingress (FastAPI: limits, validation, JSON errors, route -> model by task)
              -> DeploymentHandle -> TextClassifierDeployment   /classify  (seq2vec: tokenize,
                                                                           @serve.batch, model)
              -> DeploymentHandle -> TranslatorDeployment       /generate  (seq2seq: tokenize,
                                                                           @serve.batch, greedy/beam)
              -> DeploymentHandle -> AudioClassifierDeployment  /classify  (seq2vec: decode, log-mel,
                                                                           @serve.batch, model)
              -> DeploymentHandle -> SpeechRecognizerDeployment /generate  (seq2seq: decode, log-mel,
                                                                           @serve.batch, greedy/beam)
              -> DeploymentHandle -> VideoClassifierDeployment  /classify  (seq2vec: decode, sample,
                                                                           resize, @serve.batch, model)
              -> DeploymentHandle -> VideoCaptionerDeployment   /generate  (vec2seq/seq2seq: decode,
                                                                           sample, resize, @serve.batch,
                                                                           greedy/beam)

One application serves any mix of checkpoints (``rayseq serve A B``); each model
answers the route of its task (``meta.json``), and the other route is a 404 naming
the right one. Text models take JSON ``{"inputs": [...]}``; audio and video models
take the same routes as ``multipart/form-data`` with one ``file`` part per recording or
video file (``serving.bodies``), which the ingress ships, undecoded, to the model replica.

Build it from Python with :func:`build_app`, from a Serve config with
:func:`app_builder` (a full one: ``deploy/serve_config.yaml``)::

    applications:
      - name: rayseq
        route_prefix: /
        import_path: serving.app:app_builder
        args:
          checkpoints: [runs/demo/checkpoint]
          limits: {max_inputs: 32}
          deployment_options:      # Serve options for every model deployment
            autoscaling_config: {min_replicas: 1, max_replicas: 4, target_ongoing_requests: 32}
        deployments:               # Serve's own per-deployment overrides, by name
          - name: Ingress
            num_replicas: 2

Model deployments are named ``<task>-<model name>`` (``classify-demo_sentiment``), the
ingress ``Ingress``; Serve applies a config's ``deployments:`` entries over what the
builder set.

The FastAPI app is made per replica by :func:`create_app`, a plain function of the
model table and the limits, so its routes and errors can be tested without Ray.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fastapi import Depends, FastAPI, HTTPException, Request
from ray import serve
from ray.serve.handle import DeploymentHandle

from pipelines.errors import ConfigError, DataError
from serving.bodies import openapi_body, read_inputs
from serving.body_limit import BodySizeLimit
from serving.catalog import ModelCard, read_cards
from serving.deployments import DEPLOYMENTS, with_options
from serving.errors import client_error, install_error_handlers
from serving.limits import ServeLimits
from serving.schemas import ClassifyResponse, ErrorBody, GenerateResponse, Health, ModelList, request_models

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


@dataclass(frozen=True)
class ServedModel:
    card: ModelCard
    handle: DeploymentHandle
    """Handle of the model's deployment; it has a method named after ``card.task``."""


def create_app(models: dict[str, ServedModel], limits: ServeLimits) -> FastAPI:
    """The HTTP API of CONTRACT.md over ``models`` (keyed by name), enforcing ``limits``."""
    bodies = request_models(limits)

    app = FastAPI(
        title="rayseq",
        summary="Recurrent sequence models served with Ray Serve",
        description="Errors are JSON `{\"error\": message}`; 4xx means the request is wrong, 5xx is a bug.",
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes, max_upload_bytes=limits.max_upload_bytes)

    def serving(task: str) -> Callable[[str], ServedModel]:
        """Dependency resolving ``{name}`` to a model that answers ``task``. It runs before
        the body is validated, so an unknown model is a 404 whatever the body says."""

        def lookup(name: str) -> ServedModel:
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

    @app.get("/healthz", response_model=Health)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models", response_model=ModelList, response_model_exclude_none=True)
    async def list_models() -> dict[str, Any]:
        return {"models": [model_info(model.card) for model in models.values()]}

    async def answer(request: Request, model: ServedModel) -> list[dict[str, Any]]:
        """The model's answers to the request's inputs, one per input, in order. A bad
        upload is only found by the model replica; its error comes back as a 4xx."""
        inputs, options = await read_inputs(request, model.card, bodies)
        try:
            return await getattr(model.handle, model.card.task).remote(inputs, **options)
        except Exception as exc:  # noqa: BLE001 - anything that is not the client's is re-raised: a 500
            error = client_error(exc)
            if error is None:
                raise
            raise error from None

    @app.post("/v1/models/{name}/classify", response_model=ClassifyResponse, responses=_CLIENT_ERRORS,
              openapi_extra=openapi_body(bodies, "classify"))
    async def classify(request: Request, model: ServedModel = Depends(serving("classify"))) -> dict[str, Any]:
        """Label each input; `predictions[i]` belongs to input `i`.

        Text models (no `input` on `/v1/models`) take JSON `{"inputs": [text, ...]}`.
        Audio models (`"input": "audio"`) take `multipart/form-data` with one `file` part
        per recording (WAV, FLAC, ...; any sample rate, mono or stereo); video models
        (`"input": "video"`) the same with one encoded video file (MP4, WebM, ...) per part."""
        return {"predictions": await answer(request, model)}

    @app.post("/v1/models/{name}/generate", response_model=GenerateResponse, responses=_CLIENT_ERRORS,
              openapi_extra=openapi_body(bodies, "generate"))
    async def generate(request: Request, model: ServedModel = Depends(serving("generate"))) -> dict[str, Any]:
        """Decode an output text for each input; `outputs[i]` belongs to input `i`.

        Text models take JSON `{"inputs": [...], "beam_size": 4, "max_length": 128}`; speech
        models (`"input": "audio"`) and video captioners (`"input": "video"`) take
        `multipart/form-data` with one `file` part per recording or video file and optional
        form fields `beam_size` and `max_length`. Options left out take the checkpoint
        recipe's `decode` values."""
        return {"outputs": await answer(request, model)}

    return app


def model_info(card: ModelCard) -> dict[str, Any]:
    """A model's entry in ``GET /v1/models``."""
    info: dict[str, Any] = {"name": card.name, "kind": card.kind, "task": card.task}
    if card.labels is not None:
        info["labels"] = list(card.labels)
    if card.input != "text":  # text models keep CONTRACT.md's original shape
        info["input"] = card.input
    return info


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=256)
@serve.ingress()
class Ingress:
    """Holds a handle per model and builds the FastAPI app in the replica, where the
    handles exist (``__serve_build_asgi_app__`` runs after ``__init__``). Its routes
    only validate and forward, so it is cheap and allows many requests in flight:
    they must reach the model replicas together to be batched."""

    def __init__(self, models: list[tuple[ModelCard, DeploymentHandle]], limits: ServeLimits) -> None:
        self.models = {card.name: ServedModel(card, handle) for card, handle in models}
        self.limits = limits

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.models, self.limits)


def build_app(checkpoints: Sequence[str | Path], limits: ServeLimits | None = None,
              deployment_options: Mapping[str, Any] | None = None) -> serve.Application:
    """The Serve application for ``checkpoints``; model names come from each recipe's
    ``name`` (made unique). ``deployment_options`` (Serve options such as
    ``autoscaling_config``; see ``serving.deployments.DEPLOYMENT_OPTIONS``) apply to
    every model deployment. Bad checkpoints raise :class:`DataError`, and limits a
    model cannot run under or options Serve rejects :class:`ConfigError`, here, on the
    driver, before anything is deployed."""
    limits = limits or ServeLimits()
    models = []
    for card in read_cards(checkpoints):
        deployment = DEPLOYMENTS.get((card.task, card.input))
        if deployment is None:
            servable = ", ".join(f"{task} ({input})" for task, input in DEPLOYMENTS)
            raise DataError(f"{card.checkpoint}: task {card.task!r} on {card.input} input cannot be served yet; "
                            f"servable: {servable}")
        deployment.func_or_class.check_limits(card, limits)  # ConfigError naming the limit
        configured = with_options(deployment, name=f"{card.task}-{card.name}", options=deployment_options or {})
        models.append((card, configured.bind(str(card.checkpoint), limits)))
    return Ingress.bind(models, limits)


APP_ARGS = ("checkpoints", "limits", "deployment_options")
"""The ``args`` of a Serve config application whose ``import_path`` is :func:`app_builder`."""


def app_builder(args: dict[str, Any]) -> serve.Application:
    """Serve config ``import_path`` entry: ``args`` are ``{"checkpoints": [...]}`` and,
    optionally, ``{"limits": {<ServeLimits field>: value}}`` and
    ``{"deployment_options": {<Serve option>: value}}`` (see :func:`build_app`)."""
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
    return build_app(checkpoints, ServeLimits.from_dict(limits), options)
