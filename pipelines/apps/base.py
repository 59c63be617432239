"""What an application is: the protocol every ``pipelines/apps/<name>/`` implements.

An application is one thing a user trains and serves (translation, spoken digits, ...).
It owns everything that differs from one application to the next, and nothing else::

    identity      name, route (the HTTP route and meta.json's ``task``), medium (what a
                  request sends and the first layer reads), the legacy
                  ``(model.kind, model.input, model.decoder)`` shapes it answers for, its
                  data formats, meta.json keys and dataset generators
    recipe        check_recipe(recipe): what only this application requires
    data          prepare(recipe) -> PreparedData (Ray Data: read, featurize, bucket)
    model         layer_factories / build (``models/`` building blocks, front end chosen here)
    training      step_plan, loss, loss_units, eval_counts, validation_metrics: what the
                  engine (``pipelines.engine``) is handed; it never names an application
    inference     predictor(loaded) -> a Predictor (rows / run / stream), used alike by
                  ``rayseq eval``, the end-of-training scores and Ray Serve
    scoring       score(checkpoint, recipe, predictions): ``rayseq eval``'s figures
    serving       serve: a ServeSpec (route, what a request sends, limits it checks)

Applications are found by discovery (``pipelines.apps``: every sub-package with an
``APP``), so adding one is one new folder. Shared code lives by job: ``pipelines.media``
(formats, tokenization, audio, video), ``pipelines.engine``, ``pipelines.inference``,
``pipelines.scoring`` and the shared objectives of ``pipelines.apps.objectives``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipelines.apps.routes import RouteSpec
from pipelines.errors import ConfigError, DataError

# Annotations name types this module must not import (it sits below the recipe schema,
# which looks applications up): Recipe (pipelines.config), ModelConfig (models.config),
# StepPlan (pipelines.engine.schedules), torch tensors and modules.
Recipe = ModelConfig = StepPlan = Tensor = Module = Any


@dataclass
class PreparedData:
    """What the training driver needs from an application's data preparation."""

    train: Any
    """Bucketed, shuffled training batches (a materialized ``ray.data.Dataset``)."""
    valid: Any
    """Bucketed validation batches, or None."""
    sizes: dict[str, int]
    """The model builder's size arguments (vocabularies, labels)."""
    files: dict[str, str]
    """Files the inference checkpoint carries (tokenizers)."""
    meta: dict[str, Any]
    """``meta.json`` fields beyond format, app, kind, input, task and decoder."""
    batches: int
    report: dict[str, Any] = field(default_factory=dict)
    initial: dict[str, Any] = field(default_factory=dict)
    """Starting values of some parameters (whole-model names -> tensors), e.g. pretrained
    word vectors; each stage takes the ones it holds."""
    stage_s: dict[str, float] = field(default_factory=dict)
    """Wall seconds of each data-preparation stage, where the application times them."""


class Predictor(Protocol):
    """One loaded checkpoint answering inputs; what eval, Serve and the end-of-training
    scores share. ``rows`` turns a request's inputs (texts, or uploads as
    ``(name, bytes)``) into model rows (token ids, frames) whose ``len`` is what a batch
    budget counts; ``run`` answers rows, one JSON-able dict each, in order::

        classify:  {"label", "score", "scores"}        generate:  {"text", "score"}
        tag:       {"tokens", "tags", "entities"}
    """

    recipe: Recipe

    def rows(self, inputs: list) -> list: ...

    def run(self, rows: list, **options: Any) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class ServeSpec:
    """How an application is served (``serving`` builds its route and model server from
    this; applications never import serving)."""

    route: RouteSpec
    """The POST route ``/v1/models/{name}/<route.name>`` (``pipelines.apps.routes``)."""
    streaming: bool = False
    """``decoding`` routes: the predictor can ``stream`` greedy decoding."""
    no_stream: str = ""
    """Why a streaming request is refused, when ``streaming`` is off."""
    per_token: int = 1
    """Row units (frames) per token of the serving batch budget (audio: 4 frames a step)."""


@dataclass(frozen=True)
class DatasetGenerator:
    """A built-in dataset: ``rayseq generate <name>`` and a recipe's ``data.generate``.

    ``write(recipe_data, root)`` writes the recipe's generated dataset into ``root``;
    ``add_arguments(parser)`` / ``command(args) -> summary`` are its CLI subcommand;
    ``check(generate_config)`` raises ConfigError for settings it cannot honour."""

    name: str
    help: str
    write: Callable[[Any, Path], None]
    add_arguments: Callable[[argparse.ArgumentParser], None]
    command: Callable[[argparse.Namespace], dict[str, Any]]
    check: Callable[[Any], None] = lambda generate: None


DATA_OPTIONS = frozenset({"valid_format", "valid_fraction", "label_names", "tree_labels", "tag_scheme", "tag_column",
                          "window", "window_shift", "transpose", "reference_columns"})
"""``data`` keys only some applications read (``App.data_options``)."""


class App:
    """Base of every application; subclasses set the identity and override the rest."""

    name: str = ""
    """Registry key; the recipe's ``app:`` value and meta.json's ``app``."""
    medium: str = "text"
    """What the first layer reads and a request sends: ``text``, ``audio``, ``video`` or
    ``image`` (``model.input``); ``serving.deployments.MEDIA`` says how each is served."""
    shapes: tuple[tuple[str, str, str], ...] = ()
    """The ``(model.kind, model.input, model.decoder)`` a recipe without ``app:`` names
    to select this application (decoder ``""`` where the kind has none)."""
    formats: tuple[str, ...] = ()
    """``data.format`` values it reads (``auto`` picks among them)."""
    pretrained_embeddings: bool = False
    """It reads ``model.pretrained_embeddings`` (else a recipe setting it is refused)."""
    data_options: frozenset[str] = frozenset()
    """Optional ``data`` keys it honours among :data:`DATA_OPTIONS`; a recipe that sets
    another is refused by name instead of silently ignored."""
    meta_keys: frozenset[str] = frozenset()
    """``meta.json`` keys it writes beyond the common ones."""
    metric: str = "val_loss"
    """The validation figure the progress line shows."""
    eval_width: int = 3
    """How many counts ``eval_counts`` returns: ``(loss, correct, scored)`` and any more."""
    wavefront: bool = False
    """Its layers stream over time chunks (``parallel.schedule: wavefront``)."""
    wavefront_blocker: str = ""
    """Why a model that looks streamable is not (the wavefront's refusal says it)."""
    loss_per_step: bool = False
    """Its loss is a sum over time steps (the wavefront may score chunks one by one)."""
    synthesizes: bool = False
    """It reads the recipe's ``synthesis`` section (else a recipe setting it is refused)."""
    samples_text: bool = False
    """It reads the recipe's ``generation`` section (else a recipe setting it is refused)."""
    generators: tuple[DatasetGenerator, ...] = ()
    serve: ServeSpec | None = None
    variants: tuple[App, ...] = ()
    """The same application with another model (speech-to-text with CTC): each declares
    its own ``shapes`` and training objective, and shares this one's name."""

    @property
    def route(self) -> str:
        """The route its checkpoints answer (meta.json's ``task``)."""
        return self.serve.route.name

    def variant(self, key: tuple[str, str, str]) -> App:
        """This application, or the variant whose ``shapes`` hold the model shape ``key``."""
        return next((app for app in (self, *self.variants) if key in app.shapes), self)

    # -- recipe ---------------------------------------------------------------------

    def check_recipe(self, recipe: Recipe) -> None:
        """What only this application requires of a recipe (ConfigError naming the key)."""
        for key in ("format", "valid_format"):
            fmt = getattr(recipe.data, key)
            if fmt and fmt != "auto" and fmt not in self.formats:
                raise ConfigError(f"data.{key}: {fmt!r} is not read by the {self.name} application; "
                                  f"it reads {', '.join(self.formats)}")
        if recipe.model.pretrained_embeddings and not self.pretrained_embeddings:
            raise ConfigError(f"model.pretrained_embeddings is not read by the {self.name} application "
                              "(text classification reads it); leave it unset")
        defaults = type(recipe.data)()
        for key in sorted(DATA_OPTIONS - self.data_options):
            if getattr(recipe.data, key) != getattr(defaults, key):
                raise ConfigError(f"data.{key} is not read by the {self.name} application "
                                  f"(set: {getattr(recipe.data, key)!r}); leave it unset")
        if recipe.synthesis != type(recipe.synthesis)() and not self.synthesizes:
            raise ConfigError(f"synthesis is read by speech synthesis only, not by the {self.name} application; "
                              "leave it unset")
        if recipe.generation != type(recipe.generation)() and not self.samples_text:
            raise ConfigError(f"generation is read by conditional text generation (app text_generate) only, not by "
                              f"the {self.name} application; leave it unset")
        if recipe.parallel.schedule == "wavefront" and not self.wavefront:
            why = f" ({self.wavefront_blocker})" if self.wavefront_blocker else ""
            raise ConfigError(f"parallel.schedule: wavefront runs applications whose layers stream over time "
                              f"chunks; {self.name} does not{why}, so use gpipe or 1f1b")

    # -- data and model -------------------------------------------------------------

    def prepare(self, recipe: Recipe) -> PreparedData:
        raise NotImplementedError

    def layer_factories(self, config: ModelConfig, sizes: dict[str, int]) -> list[Callable[[], Module]]:
        raise NotImplementedError

    def build(self, config: ModelConfig, sizes: dict[str, int], *, seed: int = 0, keep=None) -> Module:
        raise NotImplementedError

    def tied_layers(self, config: ModelConfig) -> tuple[int, int] | None:
        """Two layer indices that share weights and so must land on one stage, or None."""
        return None

    # -- training (the engine's side) -----------------------------------------------

    def step_plan(self, row: dict[str, Any], microbatches: int) -> StepPlan:
        raise NotImplementedError

    def loss(self, out: Tensor, targets: Tensor, label_smoothing: float) -> Tensor:
        raise NotImplementedError

    def loss_units(self, plan: StepPlan) -> float:
        raise NotImplementedError

    def eval_counts(self, out: Tensor, targets: Tensor) -> tuple[float, ...]:
        raise NotImplementedError

    def validation_metrics(self, loss_sum: float, correct: float, count: float, *more: float) -> dict[str, float]:
        raise NotImplementedError

    def training_task(self, prepared: PreparedData) -> App:
        """What the engine is handed for a run on ``prepared`` data: this application, or
        a copy bound to what the run's data decided (a tagger's tag set)."""
        return self

    # -- checkpoints, inference and scoring -----------------------------------------

    def missing_files(self, path: Path) -> str | None:
        """What a checkpoint folder lacks of the files inference needs, else None."""
        return None

    def sizes_from_meta(self, path: Path, meta: dict[str, Any]) -> dict[str, int]:
        """The builder's size arguments from a checkpoint's ``meta.json``, checked."""
        raise NotImplementedError

    def predictor(self, loaded, *, budget: int | None = None) -> Predictor:
        """A predictor over ``loaded`` (``pipelines.checkpoint.InferenceCheckpoint``);
        ``budget`` bounds one forward pass in row units (tokens or frames)."""
        raise NotImplementedError

    def score(self, checkpoint: Path, recipe: Recipe, predictions: Path | None = None, *,
              device: str = "cpu") -> dict[str, Any]:
        """``rayseq eval``: the checkpoint scored on ``recipe.data.valid``; with
        ``predictions``, every record's prediction written there too. Models run on
        ``device`` (``pipelines.devices``: checked already), in this process or in Ray
        actors reserving a GPU for it (``pipelines.scoring.records``)."""
        raise NotImplementedError

    def final_scores(self, checkpoint: Path, recipe: Recipe) -> dict[str, Any]:
        """Scores beyond the engine's validation pass, for the end-of-training summary."""
        return {}

    def eval_data(self, raw: dict[str, Any]) -> None:
        """Adjust a checkpoint's raw recipe before ``rayseq eval`` reads ``--data`` with it."""

    def __repr__(self) -> str:
        return f"<app {self.name}>"


def checked_sizes(path, meta: dict[str, Any], names: tuple[str, ...]) -> dict[str, int]:
    """``meta.json``'s integer sizes ``names``, each >= 1, else a DataError naming them."""
    bad = [k for k in names if not isinstance(meta.get(k), int) or isinstance(meta[k], bool) or meta[k] < 1]
    if bad:
        raise DataError(f"{path}/meta.json: needs {' and '.join(repr(k) for k in names)} as integers >= 1, "
                        f"got {', '.join(f'{k}={meta.get(k)!r}' for k in bad)}")
    return {k: meta[k] for k in names}


def labels_from_meta(path, meta: dict[str, Any]) -> int:
    """The number of ``meta.json``'s ``labels``: 2 or more distinct non-empty strings."""
    labels = meta.get("labels")
    if (not isinstance(labels, list) or len(labels) < 2 or len(set(map(str, labels))) < len(labels)
            or not all(isinstance(label, str) and label for label in labels)):
        raise DataError(f"{path}/meta.json: needs 'labels': 2 or more distinct non-empty strings")
    return len(labels)


def has_tokenizer(path: Path) -> str | None:
    """``missing_files`` of an application with one ``tokenizer.json``."""
    return None if (path / "tokenizer.json").is_file() else "tokenizer.json"
