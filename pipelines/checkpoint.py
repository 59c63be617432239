"""Inference checkpoints: what ``rayseq eval``, Ray Serve and ``train.init_from`` load.

``<output>/checkpoint`` holds::

    config.yaml            the resolved recipe
    model.pt               the whole model's state dict (``weights_only`` loadable)
    tokenizer.json         ``tokenizers`` tokenizer trained on the training split (seq2seq:
                           the joint one, or source_tokenizer.json + target_tokenizer.json)
    meta.json              format (CHECKPOINT_FORMAT), app, kind, input, task (the route),
                           decoder, and the application's sizes (``labels``, vocabularies,
                           feature widths: its ``meta_keys``)

A checkpoint is data, never code: ``config.yaml`` is read with ``yaml.safe_load`` into the
validated recipe, ``meta.json`` is checked key by key and against the recipe, and
``model.pt`` with ``torch.load(weights_only=True)``, which refuses (never runs) a pickle
that would call anything. Whatever is wrong is a :class:`DataError` naming the file;
:func:`load_inference` returns a fully loaded model or raises, never half of one. Which
application a checkpoint belongs to comes from ``pipelines.apps`` (its ``app``, or for
checkpoints from before applications had names, its kind, input and decoder).
(Training checkpoints, one shard per pipeline stage, are ``pipelines.engine.shards``.)
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from pipelines import apps
from pipelines.apps.base import App
from pipelines.config import Recipe, recipe_from_dict
from pipelines.errors import DataError, RayseqError

CHECKPOINT_FORMAT = 1
"""``meta.json``'s ``format``: raised when a change would make an older rayseq misread an
inference checkpoint (files absent before the field are format 1, the same layout)."""

COMMON_META_KEYS = frozenset({"format", "app", "kind", "input", "task", "decoder"})
"""``meta.json`` keys of every checkpoint; an application adds its ``meta_keys``."""


def meta_keys() -> frozenset[str]:
    """Every key :func:`export_inference` may write into ``meta.json``; any other is refused."""
    return COMMON_META_KEYS.union(*(app.meta_keys for app in apps.discover().values()))


def export_inference(train_dir: Path, out_dir: Path, *, recipe: Recipe, app: App, files: dict[str, str],
                     meta: dict[str, Any]) -> Path:
    """Merge the training checkpoint's model shard(s) into one inference checkpoint;
    ``files`` (tokenizers) are written beside it, ``meta`` completes ``meta.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(train_dir.glob("model.stage*.pt")):
        state.update(torch.load(shard, weights_only=True))
    torch.save(state, out_dir / "model.pt")
    (out_dir / "config.yaml").write_text(recipe.to_yaml())
    for name, text in files.items():
        (out_dir / name).write_text(text)
    head = {"format": CHECKPOINT_FORMAT, "kind": recipe.model.kind, "input": recipe.model.input, "task": app.route}
    if recipe.model.kind == "seq2seq":
        head["decoder"] = recipe.model.decoder
    if recipe.app:
        head["app"] = recipe.app
    (out_dir / "meta.json").write_text(json.dumps({**head, **meta}, indent=2))
    return out_dir


@dataclass
class InferenceCheckpoint:
    path: Path
    recipe: Recipe
    meta: dict[str, Any]
    tokenizer_json: str | None
    """``tokenizer.json`` of a text classifier (its input) or a speech recognizer (its
    output); translation checkpoints load theirs with
    ``pipelines.media.tokenization.load_translation_tokenizers(path)``; audio classifiers have none."""
    model: torch.nn.Module
    app: App
    device: str = "cpu"

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])


def load_inference(path: str | Path, *, device: str = "cpu") -> InferenceCheckpoint:
    """Load and validate an inference checkpoint; the model comes back in eval mode."""
    path = Path(path)
    for name in ("config.yaml", "model.pt", "meta.json"):
        if not (path / name).is_file():
            raise DataError(f"{path}: not a rayseq checkpoint (missing {name})")
    config = read_checkpoint_config(path)
    missing = config.app.missing_files(path)
    if missing:
        raise DataError(f"{path}: not a rayseq checkpoint (missing {missing})")
    single = path / "tokenizer.json"
    tokenizer_json = single.read_text() if single.is_file() else None
    state = read_state_dict(path, device=device)
    try:
        model = config.app.build(config.recipe.model, config.sizes)
    except (RuntimeError, ValueError, OverflowError, MemoryError) as exc:  # sizes no tensor can have
        raise DataError(f"{path}: config.yaml and meta.json describe a model that cannot be built "
                        f"({_one_line(exc)})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # missing or unexpected keys, shape mismatches
        raise DataError(f"{path / 'model.pt'}: does not fit the model config.yaml and meta.json describe "
                        f"({_one_line(exc, limit=400)})") from None
    model.to(device).eval()
    return InferenceCheckpoint(path, config.recipe, config.meta, tokenizer_json, model, config.app, device)


def load_predictor(path: str | Path, *, device: str = "cpu", budget: int | None = None):
    """The checkpoint's application predictor (``pipelines.inference.predictors``):
    what eval, Serve and the end-of-training scores run."""
    loaded = load_inference(path, device=device)
    return loaded.app.predictor(loaded, budget=budget)


@dataclass(frozen=True)
class CheckpointConfig:
    """What ``config.yaml`` and ``meta.json`` say, validated and consistent."""

    recipe: Recipe
    meta: dict[str, Any]
    app: App
    sizes: dict[str, int]
    """The model builder's size arguments (``app.sizes_from_meta``)."""


def read_checkpoint_config(path: Path) -> CheckpointConfig:
    """``config.yaml`` and ``meta.json`` of the checkpoint in ``path``, each validated and
    checked against the other; :class:`DataError` names the file at fault."""
    meta = _read_meta(path / "meta.json")  # first: a newer format is named before its recipe keys
    recipe = _read_recipe(path / "config.yaml")
    app = apps.app_of_meta(path, meta)
    if meta["task"] != app.route:
        raise DataError(f"{path / 'meta.json'}: task {meta['task']!r}, but a {meta['kind']} {app.medium} model "
                        f"answers {app.route!r}")
    if meta["kind"] != recipe.model.kind:
        raise DataError(f"{path}: meta.json says kind {meta['kind']!r} but config.yaml builds {recipe.model.kind!r}")
    try:
        same = apps.app_for(recipe) is app
    except RayseqError:
        same = False
    if not same:
        raise DataError(f"{path}: meta.json and config.yaml disagree on the model's input or decoder")
    return CheckpointConfig(recipe, meta, app, app.sizes_from_meta(path, meta))


def read_state_dict(path: Path, *, device: str = "cpu", mmap: bool = False) -> dict[str, torch.Tensor]:
    """``model.pt`` of the checkpoint in ``path``: a ``torch.save`` archive of named tensors,
    loaded with ``weights_only=True``. ``mmap`` leaves the tensors on disk (the driver's
    check before deploying)."""
    file = path / "model.pt"
    if not zipfile.is_zipfile(file):  # torch.save's format since 1.6; a bare pickle is refused unread
        raise DataError(f"{file}: not a torch.save archive")
    try:
        state = torch.load(file, map_location=device, weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file; each means "refused"
        raise DataError(f"{file}: refused by torch.load(weights_only=True), it holds more than tensors "
                        f"or is damaged ({_torch_reason(exc)})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise DataError(f"{file}: must hold a state dict (parameter name -> tensor), got {type(state).__name__}")
    return state


def _read_recipe(file: Path) -> Recipe:
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))  # plain data: no !!python tags
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(f"{file}: not valid YAML ({_one_line(exc)})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{file}: must be a YAML mapping (the resolved recipe), got {type(raw).__name__}")
    try:
        return recipe_from_dict(raw)
    except RayseqError as exc:  # ConfigError naming the key
        raise DataError(f"{file}: {exc}") from None


def _read_meta(file: Path) -> dict[str, Any]:
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise DataError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or not all(isinstance(meta.get(key), str) for key in ("kind", "task")):
        raise DataError(f"{file}: needs a JSON object with string fields 'kind' and 'task'")
    version = meta.get("format", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DataError(f"{file}: 'format' must be a positive integer, got {version!r}")
    if version > CHECKPOINT_FORMAT:
        raise DataError(f"{file}: checkpoint format {version} was written by a newer rayseq; this one reads "
                        f"format {CHECKPOINT_FORMAT} and older (upgrade rayseq to load it)")
    known = meta_keys()
    unknown = sorted(set(meta) - known)
    if unknown:
        raise DataError(f"{file}: unknown key(s) {unknown}; known: {sorted(known)}")
    return meta


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _torch_reason(exc: BaseException) -> str:
    """What a ``torch.load`` error found, without its advice to retry with
    ``weights_only=False`` or to allowlist the global: exactly what must not happen here."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and "Weights only load failed" in lines[0]:
        found = next((line for line in lines if "GLOBAL" in line), "weights-only load failed")
        return found.split(". ")[0]
    return _one_line(exc) or type(exc).__name__
