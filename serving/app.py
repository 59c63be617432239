"""The rayseq Serve application: a FastAPI ingress in front of one model deployment
per checkpoint.

    HTTP -> Ingress (FastAPI: limits, validation, JSON errors, route -> model by task)
              -> DeploymentHandle -> TextClassifierDeployment  /classify  (seq2vec: tokenize,
                                                                          @serve.batch, model)
              -> DeploymentHandle -> TranslatorDeployment      /generate  (seq2seq: tokenize,
                                                                          @serve.batch, greedy/beam)

One application serves any mix of checkpoints (``rayseq serve A B``); each model
answers the route of its task (``meta.json``), and the other route is a 404 naming
the right one.

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

# No ``from __future__ import annotations``: FastAPI reads the request model of each
# route from its annotation, and those models are local to ``create_app``.

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fastapi import Depends, FastAPI, HTTPException
from ray import serve
from ray.serve.handle import DeploymentHandle

from pipelines.errors import ConfigError, DataError
from serving.body_limit import BodySizeLimit
from serving.catalog import ModelCard, read_cards
from serving.deployments import DEPLOYMENTS, with_options
from serving.errors import install_error_handlers
from serving.limits import ServeLimits
from serving.schemas import ClassifyResponse, ErrorBody, GenerateResponse, Health, ModelList, request_models

APP_NAME = "rayseq"
"""Name of the Serve application that ``rayseq serve`` and the tests run."""

_CLIENT_ERRORS = {
    404: {"model": ErrorBody, "description": "Unknown model, or a model that does not answer this route"},
    413: {"model": ErrorBody, "description": "Body larger than max_body_bytes"},
    422: {"model": ErrorBody, "description": "Body that breaks the request schema or a limit"},
}


@dataclass(frozen=True)
class ServedModel:
    card: ModelCard
    handle: DeploymentHandle
    """Handle of the model's deployment; it has a method named after ``card.task``."""


def create_app(models: dict[str, ServedModel], limits: ServeLimits) -> FastAPI:
    """The HTTP API of CONTRACT.md over ``models`` (keyed by name), enforcing ``limits``."""
    bodies = request_models(limits)
    ClassifyBody, GenerateBody = bodies.classify, bodies.generate

    app = FastAPI(
        title="rayseq",
        summary="Recurrent sequence models served with Ray Serve",
        description="Errors are JSON `{\"error\": message}`; 4xx means the request is wrong, 5xx is a bug.",
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)

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

    @app.post("/v1/models/{name}/classify", response_model=ClassifyResponse, responses=_CLIENT_ERRORS)
    async def classify(body: ClassifyBody, model: ServedModel = Depends(serving("classify"))) -> dict[str, Any]:
        """Label each text; ``predictions[i]`` belongs to ``inputs[i]``."""
        return {"predictions": await model.handle.classify.remote(body.inputs)}

    @app.post("/v1/models/{name}/generate", response_model=GenerateResponse, responses=_CLIENT_ERRORS)
    async def generate(body: GenerateBody, model: ServedModel = Depends(serving("generate"))) -> dict[str, Any]:
        """Decode an output text for each input; ``outputs[i]`` belongs to ``inputs[i]``.
        ``beam_size`` / ``max_length`` left out take the checkpoint recipe's ``decode`` values."""
        outputs = await model.handle.generate.remote(body.inputs, beam_size=body.beam_size, max_length=body.max_length)
        return {"outputs": outputs}

    return app


def model_info(card: ModelCard) -> dict[str, Any]:
    """A model's entry in ``GET /v1/models``."""
    info: dict[str, Any] = {"name": card.name, "kind": card.kind, "task": card.task}
    if card.labels is not None:
        info["labels"] = list(card.labels)
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
        deployment = DEPLOYMENTS.get(card.task)
        if deployment is None:
            raise DataError(f"{card.checkpoint}: task {card.task!r} cannot be served yet; servable tasks: {sorted(DEPLOYMENTS)}")
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
