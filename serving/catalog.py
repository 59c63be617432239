"""What the driver learns about each checkpoint before anything is deployed.

Reading ``config.yaml`` and ``meta.json`` (no torch model) is enough to name the
model, list it on ``/v1/models``, pick its deployment and check it against the serving
limits, so a bad path fails on the command line with a clear message instead of as a
replica that never starts. Both are validated as the replica will (``pipelines.checkpoint``),
and ``model.pt`` is opened the same way, ``weights_only`` and memory-mapped (its tensors
stay on disk), so a tampered checkpoint is refused here, before anything is deployed::

    checkpoint/ config.yaml, meta.json, model.pt, tokenizer file(s)
        -> ModelCard(name, app, kind, task, input, labels, max_length, decode, audio, video)
        -> serving.deployments.ModelServer (the application's predictor and ServeSpec)

Tokenizer files depend on the application (``App.missing_files``): a text classifier
has ``tokenizer.json``; a translation model the joint ``tokenizer.json`` or the pair
``source_tokenizer.json`` + ``target_tokenizer.json``; a speech recognizer its
transcript ``tokenizer.json``; a video or image captioner its caption ``tokenizer.json``;
audio and video classifiers none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from pipelines.apps.base import App
from pipelines.checkpoint import read_checkpoint_config, read_state_dict
from pipelines.config import AudioConfig, DecodeConfig, VideoConfig
from pipelines.errors import DataError

CHECKPOINT_FILES = ("config.yaml", "model.pt", "meta.json")
"""Files every checkpoint has; the tokenizer file(s) depend on the application (``App.missing_files``)."""


@dataclass(frozen=True)
class ModelCard:
    name: str
    """URL-safe, unique within the application: the ``{name}`` of ``/v1/models/{name}``."""
    kind: str
    """``seq2vec``, ``seq2seq`` or ``vec2seq`` (``meta.json``)."""
    task: str
    """The route the model answers: ``classify`` or ``generate`` (``meta.json``)."""
    app: App
    """The checkpoint's application: its predictor and ``ServeSpec`` make the model server."""
    labels: tuple[str, ...] | None
    """Label names of a classifier, else None."""
    checkpoint: Path
    """Absolute path: replicas may run in another working directory."""
    max_length: int
    """Tokens kept per text input (the recipe's ``data.max_length``)."""
    input: str = "text"
    """What a request sends: ``text`` (JSON ``inputs``), ``audio``, ``video`` or ``image``
    (multipart ``file`` uploads); ``meta.json``'s ``input``, text on checkpoints from
    before audio."""
    decode: DecodeConfig | None = None
    """A decoding model's settings (the recipe's ``decode``): ``beam_size`` and
    ``max_length`` when a request leaves them out, ``alpha`` and ``max_length_ratio``
    always. None for classifiers."""
    audio: AudioConfig | None = None
    """An audio model's ``data.audio``: the sample rate uploads are resampled to and the
    longest recording it takes (``max_seconds``). None for other models."""
    video: VideoConfig | None = None
    """A video model's ``data.video``: how uploads are sampled and resized, the longest
    clip it takes (``max_seconds``) and the most frames (``max_frames``). None for other
    models."""
    speakers: tuple[str, ...] | None = None
    """The voices of a speech synthesis model (its requests' ``speaker``), else None."""
    words: tuple[str, ...] | None = None
    """The words a speech synthesis model says, else None."""
    conditions: tuple[str, ...] | None = None
    """What a conditional generator writes to order (its requests' ``condition``), else None."""


def read_card(checkpoint: str | Path) -> ModelCard:
    """The card of one inference checkpoint; :class:`DataError` names what is missing."""
    path = Path(checkpoint).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"{checkpoint}: checkpoint folder not found")
    for name in CHECKPOINT_FILES:
        if not (path / name).is_file():
            raise DataError(f"{checkpoint}: not a rayseq checkpoint (missing {name})")
    config = read_checkpoint_config(path)
    recipe, meta, app = config.recipe, config.meta, config.app
    missing = app.missing_files(path)
    if missing:
        raise DataError(f"{checkpoint}: not a rayseq checkpoint (missing {missing})")
    read_state_dict(path, mmap=True)  # a tampered model.pt is refused here, not in a replica
    labels = meta.get("labels")
    return ModelCard(
        name=url_safe(recipe.name),
        kind=meta["kind"],
        task=meta["task"],
        app=app,
        labels=tuple(str(label) for label in labels) if isinstance(labels, list) else None,
        speakers=tuple(meta["speakers"]) if "speakers" in app.meta_keys else None,
        words=tuple(meta["words"]) if "words" in app.meta_keys else None,
        conditions=tuple(meta["conditions"]) if "conditions" in app.meta_keys else None,
        checkpoint=path,
        max_length=recipe.data.max_length,
        decode=recipe.decode if app.serve.route.decoding else None,
        input=app.medium,
        audio=recipe.data.audio if app.medium == "audio" else None,
        video=recipe.data.video if app.medium == "video" else None,
    )


def read_cards(checkpoints: Iterable[str | Path]) -> list[ModelCard]:
    """Cards of all ``checkpoints``, in order, with names made unique (``x``, ``x-2``)."""
    cards = [read_card(path) for path in checkpoints]
    if not cards:
        raise DataError("no checkpoint given: serve needs at least one checkpoint folder")
    taken: set[str] = set()
    unique = []
    for card in cards:
        name, n = card.name, 1
        while name in taken:
            n += 1
            name = f"{card.name}-{n}"
        taken.add(name)
        unique.append(replace(card, name=name))
    return unique


def url_safe(name: str) -> str:
    """Recipe names become path segments: keep letters, digits, ``_``, ``-`` and ``.``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")
    return safe or "model"

