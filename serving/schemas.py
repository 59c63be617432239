"""HTTP request and response bodies (pydantic), as written in CONTRACT.md.

Request models carry the application's limits as ordinary pydantic constraints, so the
same numbers that reject a request also show in ``/openapi.json``. Because limits are
chosen per application, request models are made by :func:`request_models`;
``ClassifyRequest`` and ``GenerateRequest`` at module level use the default limits.

Generate options a request leaves out (``beam_size``, ``max_length``: None here) are
filled in by the model deployment from the checkpoint recipe's ``decode`` section, so
one application can serve models with different defaults.

Requests are strict (no ``"4"`` -> ``4``, no ``true`` -> ``1``) and reject unknown
fields, so a typo such as ``beam_szie`` is reported instead of silently ignored.
"""

# No ``from __future__ import annotations``: the request models are built inside a
# function and pydantic must see their real annotation objects.

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

from serving.limits import ServeLimits


def _not_blank(text: str) -> str:
    """A text of only whitespace tokenizes to nothing; the model would see ``[UNK]``.
    (Unpaired surrogates, which the tokenizer cannot take, pydantic rejects itself.)"""
    if not text.strip():
        raise PydanticCustomError("blank_text", "must not be empty")
    return text


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


@dataclass(frozen=True)
class RequestModels:
    """The request body models of one application (one set of limits)."""

    classify: type[BaseModel]
    generate: type[BaseModel]


def request_models(limits: ServeLimits) -> RequestModels:
    """Request models that enforce ``limits``: 1..``max_inputs`` texts, each non-blank
    and at most ``max_chars`` characters; generate's ``beam_size`` and ``max_length``
    bounded by ``max_beam_size`` and ``max_generate_length``."""
    Text = Annotated[str, StringConstraints(max_length=limits.max_chars), AfterValidator(_not_blank)]
    Texts = Annotated[
        list[Text],
        Field(min_length=1, max_length=limits.max_inputs,
              description=f"1 to {limits.max_inputs} non-empty texts of at most {limits.max_chars} characters"),
    ]

    class ClassifyRequest(_Request):
        """Texts to classify; one prediction comes back per text, in the same order."""

        inputs: Texts = Field(examples=[["a warm and funny film", "dull from start to end"]])

    class GenerateRequest(_Request):
        """Source texts for a sequence-to-sequence model; one output per text, in order."""

        inputs: Texts = Field(examples=[["the cat sat on the mat"]])
        beam_size: int | None = Field(
            None, ge=1, le=limits.max_beam_size, examples=[4],
            description=f"beams kept while decoding, 1 (greedy) to {limits.max_beam_size}; "
                        "default: the model recipe's decode.beam_size (4 unless the recipe says otherwise)")
        max_length: int | None = Field(
            None, ge=1, le=limits.max_generate_length, examples=[128],
            description=f"most output tokens per text, 1 to {limits.max_generate_length}; "
                        "default: the model recipe's decode.max_length (128 unless the recipe says otherwise)")

    return RequestModels(classify=ClassifyRequest, generate=GenerateRequest)


_DEFAULT_MODELS = request_models(ServeLimits())
ClassifyRequest = _DEFAULT_MODELS.classify
GenerateRequest = _DEFAULT_MODELS.generate


class Prediction(BaseModel):
    label: str
    """The most probable label."""
    score: float
    """Its probability."""
    scores: dict[str, float]
    """Probability of every label (they sum to 1)."""


class ClassifyResponse(BaseModel):
    predictions: list[Prediction]


class GeneratedText(BaseModel):
    text: str
    score: float
    """Log-probability of ``text`` (and its end) under the model, divided by GNMT's length
    penalty ``((5 + tokens) / 6) ** alpha`` (``alpha``: the recipe's ``decode.alpha``)."""


class GenerateResponse(BaseModel):
    outputs: list[GeneratedText]


class ModelInfo(BaseModel):
    name: str
    """The ``{name}`` of ``/v1/models/{name}/...``."""
    kind: str
    """Application shape: ``seq2vec``, ``seq2seq`` or ``vec2seq``."""
    task: str
    """The route the model answers: ``classify`` or ``generate``."""
    labels: list[str] | None = None
    """Label names (classifiers only)."""


class ModelList(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ErrorBody(BaseModel):
    """Every error, 4xx or 5xx, has this body."""

    error: str
