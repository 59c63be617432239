"""Music: four-voice chorales (JSB), the next chord predicted voice by voice.

    CSV / MIDI pieces -> windows of chords (transposed copies) -> chord embedding ->
        unidirectional RNN stack -> voice heads (each voice reads the voices above it)
        -> 4 x 128 pitch logits;  scored by next-note accuracy and cross-entropy (nats a
        note) under the Hands-On ML book's protocol;  served on /compose: a primer in,
        sampled chords and a MIDI file out
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from pipelines.apps.base import App, PreparedData, ServeSpec
from pipelines.apps.music.generate import CHORALES
from pipelines.apps.routes import RouteSpec
from pipelines.errors import DataError

MAX_TEMPERATURE = 10.0


class Composed(BaseModel):
    chords: list[list[int]]
    """The sampled chords, ``steps`` of them: 4 MIDI pitches each (soprano first, 0 = rest),
    one per 16th note."""
    primer_steps: int
    """Chords of the primer, which the MIDI file plays first."""
    midi_base64: str
    """The whole piece (primer, then the sampled chords) as a type-1 MIDI file, one track
    per voice, base64-encoded."""


def compose_request(limits: Any) -> type[BaseModel]:
    """The compose body under ``limits`` (``max_primer_chords``, ``max_compose_steps``)."""
    Pitch = Annotated[int, Field(ge=0, le=127)]
    Chord = Annotated[list[Pitch], Field(min_length=4, max_length=4)]

    class ComposeRequest(BaseModel):
        """A primer to continue (or none) and how to sample."""

        model_config = ConfigDict(extra="forbid", strict=True)

        primer: Annotated[list[Chord], Field(
            max_length=limits.max_primer_chords, examples=[[[74, 70, 65, 58], [74, 70, 65, 58]]],
            description=f"chords to continue, at most {limits.max_primer_chords}: 4 MIDI pitches each "
                        "(0-127, 0 = rest; soprano first), one per 16th note; empty: music from nothing")] = []
        steps: Annotated[int, Field(ge=1, le=limits.max_compose_steps, description=(
            f"chords to sample, 1 to {limits.max_compose_steps} (16 a bar of 4/4)"))] = 64
        temperature: Annotated[float, Field(ge=0.0, le=MAX_TEMPERATURE, description=(
            "softmax temperature of every pitch drawn; 0 takes the most probable pitch"))] = 1.0
        top_k: Annotated[int, Field(ge=0, le=128, description=(
            "draw among the k most probable pitches of each voice; 0: all"))] = 0
        seed: Annotated[int, Field(ge=0, le=2**63 - 1, description=(
            "the same primer, options and seed give the same music"))] = 0

    return ComposeRequest


COMPOSE = RouteSpec(
    name="compose",
    answer_key="",
    response=Composed,
    description="""Continue a four-voice piece (or start one) by sampling chords.

Takes JSON `{"primer": [[74, 70, 65, 58], ...], "steps": 64, "temperature": 1.0, "top_k": 0,
"seed": 0}`: chords of 4 MIDI pitches (soprano first, 0 = rest), one per 16th note. Answers
the sampled chords and the whole piece (primer, then continuation) as a MIDI file; with
`Accept: audio/midi` the answer is the MIDI file itself.""",
    json_doc="A primer to continue and how to sample.",
    upload_doc="(music models take JSON only)",
    json_example=(),
    request=compose_request,
    input_field="primer",
    single=True,
    files=(("audio/midi", "midi_base64", "the MIDI file of the whole piece"),),
)


class Music(App):
    name = "music"
    medium = "music"
    shapes = (("music", "text", ""),)
    formats = ("chorales",)
    data_options = frozenset({"window", "window_shift", "transpose"})
    meta_keys = frozenset({"voices", "pitches"})
    metric = "val_accuracy"
    generators = (CHORALES,)
    serve = ServeSpec(route=COMPOSE)

    def check_recipe(self, recipe) -> None:
        from pipelines.errors import ConfigError

        super().check_recipe(recipe)
        longest = max(recipe.data.window + 1, 33)
        if recipe.batching.max_tokens < longest:
            raise ConfigError(f"batching.max_tokens ({recipe.batching.max_tokens}) must hold one window: at least "
                              f"{longest} chords")

    def prepare(self, recipe) -> PreparedData:
        from pipelines.apps.music.data import prepare_chorales

        data = prepare_chorales(recipe)
        return PreparedData(data.train, data.valid, {}, {}, {"voices": 4, "pitches": 128},
                            data.train_stats.batches, data.report)

    def layer_factories(self, config, sizes: dict[str, int]):
        from models.music import chorale_layer_factories

        return chorale_layer_factories(config)

    def build(self, config, sizes: dict[str, int], *, seed: int = 0, keep=None):
        from models.music import build_chorale_model

        return build_chorale_model(config, seed=seed, keep=keep)

    # -- training ---------------------------------------------------------------------

    def step_plan(self, row: dict[str, Any], microbatches: int):
        """Row chunks, each trimmed to its longest row: ``(chords, starts)`` in."""
        import torch

        from pipelines.apps.objectives import tensor
        from pipelines.engine.microbatches import StepPlan

        chords, starts = tensor(row["tokens"]), tensor(row["starts"])
        lengths, labels = tensor(row["lengths"]), tensor(row["labels"])
        plan = StepPlan([], [], [])
        for rows in torch.arange(len(lengths)).tensor_split(min(microbatches, len(lengths))):
            t = int(lengths[rows].max())
            plan.tokens.append((chords[rows, :t], starts[rows]))
            plan.lengths.append(lengths[rows])
            plan.labels.append(labels[rows, :t])
        return plan

    def loss(self, out, targets, label_smoothing: float):
        from models.music import note_loss

        return note_loss(out, targets, label_smoothing=label_smoothing)

    def loss_units(self, plan) -> float:
        return float(sum(int((labels >= 0).sum()) for labels in plan.labels))

    def eval_counts(self, out, targets) -> tuple[float, ...]:
        """``(summed loss, correct notes, scored notes)``."""
        from models.music import note_loss

        scored = targets >= 0
        return float(note_loss(out, targets)), float(((out.argmax(-1) == targets) & scored).sum()), float(scored.sum())

    def validation_metrics(self, loss_sum: float, correct: float, count: float, *more: float) -> dict[str, float]:
        """Per note, under the book's protocol (validation windows of 32 + 1 chords)."""
        return {"val_loss": loss_sum / count, "val_accuracy": correct / count, "val_notes": int(count)}

    # -- checkpoints, inference and scoring -------------------------------------------

    def sizes_from_meta(self, path: Path, meta: dict[str, Any]) -> dict[str, int]:
        if meta.get("voices", 4) != 4 or meta.get("pitches", 128) != 128:
            raise DataError(f"{path}/meta.json: a music model has 4 voices of 128 pitches, got "
                            f"voices={meta.get('voices')!r}, pitches={meta.get('pitches')!r}")
        return {}

    def predictor(self, loaded, *, budget: int | None = None):
        from pipelines.apps.music.predictor import MusicPredictor

        return MusicPredictor(loaded, budget=budget)

    def score(self, checkpoint: Path, recipe, predictions: Path | None = None, *,
              device: str = "cpu") -> dict[str, Any]:
        """Next-note accuracy and cross-entropy (nats a note) on ``recipe.data.valid``,
        teacher-forced: under the book's protocol (windows of 32 + 1 chords every 16,
        every note but a window's first) and over whole pieces (every note but the
        first). With ``predictions``, each piece's whole-piece figures."""
        from pipelines.apps.music.data import PROTOCOL, WHOLE, read_checked
        from pipelines.checkpoint import load_predictor

        pieces = read_checked(recipe.data, "valid")
        predictor = load_predictor(checkpoint, device=device)
        windows = predictor.score([p["chords"] for p in pieces], PROTOCOL)
        whole = predictor.score([p["chords"] for p in pieces], WHOLE)
        report = {**windows, "pieces": len(pieces), "whole": whole}
        if predictions is not None:
            with predictions.open("w", encoding="utf-8") as out:
                for piece in pieces:
                    figures = predictor.score([piece["chords"]], WHOLE)
                    out.write(json.dumps({"origin": piece["origin"], "steps": len(piece["chords"]),
                                          "accuracy": figures["accuracy"], "loss": figures["loss"]}) + "\n")
            report["predictions"] = str(predictions)
        return report


APP = Music()
