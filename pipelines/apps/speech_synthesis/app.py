"""Speech synthesis (vec2seq, audio out): say a word in the voice of a known speaker.

    FSDD-style recordings {word}_{speaker}_{take}.wav -> log-mel frames (normalised per
        band over the training split) -> Tacotron-style decoder conditioned on the word
        and speaker embeddings (pre-net, deep LSTM stack, r frames and a stop token a
        step, post-net) -> Griffin-Lim -> 16-bit WAV;  judged by classifiers trained on
        real recordings (intelligibility, speaker accuracy) and by mel-cepstral distance
        to the real takes;  served on /synthesize: texts and a speaker in, WAV out
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from pipelines.apps.base import App, PreparedData, ServeSpec, checked_sizes
from pipelines.apps.routes import RouteSpec
from pipelines.errors import ConfigError, DataError


class SynthesizedAudio(BaseModel):
    wav_base64: str
    """The audio as a 16-bit mono WAV file, base64-encoded."""
    sample_rate: int
    seconds: float


class SynthesizeResponse(BaseModel):
    outputs: list[SynthesizedAudio]


def synthesize_request(limits: Any) -> type[BaseModel]:
    """The synthesize body under ``limits`` (``max_inputs``, ``max_chars``)."""
    Text = Annotated[str, StringConstraints(min_length=1, max_length=limits.max_chars)]

    class SynthesizeRequest(BaseModel):
        """Texts to say, whose voice, and the seed of the sampling."""

        model_config = ConfigDict(extra="forbid", strict=True)

        inputs: Annotated[list[Text], Field(
            min_length=1, max_length=limits.max_inputs, examples=[["seven"]],
            description=f"1 to {limits.max_inputs} texts of known words (digits: \"seven\", \"four one seven\", "
                        "\"417\"); each becomes one recording, its words joined by short pauses")]
        speaker: Annotated[str, Field(min_length=1, max_length=128, examples=["theo"],
                                      description="whose voice: one of the model's speakers")]
        seed: Annotated[int, Field(ge=0, le=2**63 - 1, description=(
            "the same texts, speaker and seed give the same audio"))] = 0

    return SynthesizeRequest


SYNTHESIZE = RouteSpec(
    name="synthesize",
    answer_key="outputs",
    response=SynthesizeResponse,
    description="""Say each input in the voice of `speaker`.

Takes JSON `{"inputs": ["seven"], "speaker": "theo", "seed": 0}`. One input is answered
with the WAV file itself (`audio/wav`, 16-bit mono); with `Accept: application/json`, or
for several inputs, the answer is `{"outputs": [{"wav_base64", "sample_rate", "seconds"}]}`,
one per input in order. An unknown word or speaker is a 422 naming it.""",
    json_doc="Texts to say and whose voice.",
    upload_doc="(speech synthesis models take JSON only)",
    json_example=("seven",),
    request=synthesize_request,
    files=(("audio/wav", "wav_base64", "the WAV file of a single input"),),
    file_by_default=True,
)


class SpeechSynthesis(App):
    name = "speech_synthesis"
    medium = "text"
    shapes = (("synthesis", "text", ""),)
    formats = ("audio-folder",)
    meta_keys = frozenset({"words", "speakers", "feature_dim", "frame_mean", "frame_std"})
    metric = "val_mse"
    eval_width = 4
    synthesizes = True
    serve = ServeSpec(route=SYNTHESIZE)

    def check_recipe(self, recipe) -> None:
        super().check_recipe(recipe)
        audio, model = recipe.data.audio, recipe.model
        if audio.speed_perturb or audio.tail_cut_copies or audio.label_field:
            raise ConfigError("data.audio.speed_perturb, tail_cut_copies and label_field are for classifiers; "
                              "speech synthesis reads the word and speaker from each file's name and learns the "
                              "recordings as they are: leave them unset")
        if recipe.train.label_smoothing:
            raise ConfigError("train.label_smoothing smooths class targets; speech synthesis regresses frames: "
                              "leave it at 0")
        longest = audio.centred_frames(int(audio.max_seconds * audio.sample_rate)) + model.frames_per_step
        if recipe.batching.max_tokens < longest:
            raise ConfigError(f"batching.max_tokens ({recipe.batching.max_tokens}) must hold one recording: "
                              f"a data.audio.max_seconds one has up to {longest} frames")

    def prepare(self, recipe) -> PreparedData:
        from pipelines.apps.speech_synthesis.data import prepare_speech

        data = prepare_speech(recipe)
        n_mels = recipe.data.audio.n_mels
        sizes = {"frame_size": n_mels, "num_words": len(data.words), "num_speakers": len(data.speakers)}
        meta = {"words": data.words, "speakers": data.speakers, "feature_dim": n_mels, **data.scale.meta()}
        return PreparedData(data.train, data.valid, sizes, {}, meta, data.train_stats.batches, data.report)

    def layer_factories(self, config, sizes: dict[str, int]):
        from models.speech import synthesis_layer_factories

        return synthesis_layer_factories(config, sizes)

    def build(self, config, sizes: dict[str, int], *, seed: int = 0, keep=None):
        from models.speech import build_synthesis_model

        return build_synthesis_model(config, sizes, seed=seed, keep=keep)

    # -- training ---------------------------------------------------------------------

    def step_plan(self, row: dict[str, Any], microbatches: int):
        """Row chunks, each trimmed to its longest row (whole decoder steps): ``(frames,
        conditions)`` in, decoder steps as lengths, frames and mask as labels."""
        import torch

        from pipelines.apps.objectives import frames as float_tensor
        from pipelines.apps.objectives import tensor
        from pipelines.engine.microbatches import StepPlan

        dtype = torch.get_default_dtype()  # float64 in the equivalence tests
        frames, conditions = float_tensor(row["tokens"]).to(dtype), tensor(row["conditions"])
        steps, labels = tensor(row["steps"]), float_tensor(row["labels"]).to(dtype)
        r = frames.size(1) // int(steps.max())  # frames are padded to whole steps of the longest row
        plan = StepPlan([], [], [])
        for rows in torch.arange(len(steps)).tensor_split(min(microbatches, len(steps))):
            t = int(steps[rows].max()) * r
            plan.tokens.append((frames[rows, :t], conditions[rows]))
            plan.lengths.append(steps[rows])
            plan.labels.append(labels[rows, :t])
        return plan

    def loss(self, out, targets, label_smoothing: float):
        from models.speech import frame_loss

        return frame_loss(out, targets)

    def loss_units(self, plan) -> float:
        return float(sum(float(labels[..., -1].sum()) for labels in plan.labels))

    def eval_counts(self, out, targets) -> tuple[float, ...]:
        """``(summed loss, frames whose stop call is right, real frames, summed squared
        error of the post-net frames per band)``."""
        import torch.nn.functional as F

        from models.speech import frame_loss, split_output

        frame_size = targets.size(-1) - 1
        mask = targets[..., frame_size]
        before, after, stop = split_output(out[:, : targets.size(1)], frame_size)
        last = mask * (1 - F.pad(mask[:, 1:], (0, 1)))  # each row's last real frame
        right = (((stop > 0).float() == last).float() * mask).sum()
        squared = (((after - targets[..., :frame_size]) ** 2).mean(-1) * mask).sum()
        return float(frame_loss(out, targets)), float(right), float(mask.sum()), float(squared)

    def validation_metrics(self, loss_sum: float, correct: float, count: float, *more: float) -> dict[str, float]:
        """Per real frame: the loss, the post-net frames' mean squared error (normalised
        log-mel units) and how often the stop token is called right."""
        return {"val_loss": loss_sum / count, "val_mse": more[0] / count, "val_stop_accuracy": correct / count,
                "val_frames": int(count)}

    # -- checkpoints, inference and scoring -------------------------------------------

    def sizes_from_meta(self, path: Path, meta: dict[str, Any]) -> dict[str, int]:
        names = {}
        for key in ("words", "speakers"):
            values = meta.get(key)
            if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values) \
                    or len(set(values)) < len(values):
                raise DataError(f"{path}/meta.json: needs {key!r}: distinct non-empty strings")
            names[key] = len(values)
        frame_size = checked_sizes(path, meta, ("feature_dim",))["feature_dim"]
        return {"frame_size": frame_size, "num_words": names["words"], "num_speakers": names["speakers"]}

    def predictor(self, loaded, *, budget: int | None = None):
        from pipelines.apps.speech_synthesis.predictor import SpeechSynthesizer

        return SpeechSynthesizer(loaded, budget=budget)

    def eval_data(self, raw: dict[str, Any]) -> None:
        from pipelines.media.audio.folders import without_valid_takes

        without_valid_takes(raw)

    def score(self, checkpoint: Path, recipe, predictions: Path | None = None, *,
              device: str = "cpu") -> dict[str, Any]:
        from pipelines.apps.speech_synthesis.evaluate import evaluate

        return evaluate(checkpoint, recipe, predictions, device=device)


APP = SpeechSynthesis()
