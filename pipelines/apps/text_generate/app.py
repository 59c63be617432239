"""Conditional text generation (vec2seq, text out): sentences written to order, e.g. a
positive or a negative movie review.

    labelled texts (SST-2 sentences or treebank phrases) -> (condition, tokens) pairs ->
        condition embedding -> LSTM language model reading it at every step ->
        sampling (temperature, top-k, nucleus; seeded) or greedy / beam search;
        judged by a separately trained classifier (condition accuracy), perplexities
        and diversity (distinct-n, self-BLEU);  served on /generate: a condition in,
        samples out
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from pipelines.apps.base import App, PreparedData, ServeSpec, checked_sizes, has_tokenizer
from pipelines.apps.objectives import Tokens
from pipelines.apps.routes import GenerateResponse, RouteSpec
from pipelines.errors import DataError

MAX_TEMPERATURE = 10.0


def conditional_request(limits: Any) -> type[BaseModel]:
    """The generate body of a conditional generator under ``limits`` (``max_inputs``
    samples, ``max_generate_length``, ``max_beam_size``)."""

    class ConditionalGenerateRequest(BaseModel):
        """A condition and how to sample (or search)."""

        model_config = ConfigDict(extra="forbid", strict=True)

        condition: Annotated[str, Field(min_length=1, max_length=128, examples=["positive"],
                                        description="what to write: one of the model's conditions (GET /v1/models)")]
        num_samples: Annotated[int, Field(ge=1, le=limits.max_inputs, description=(
            f"texts to return, 1 to {limits.max_inputs}"))] = 1
        temperature: Annotated[float | None, Field(ge=0.0, le=MAX_TEMPERATURE, description=(
            "softmax temperature of every token drawn; 0: the most probable token; "
            "default: the recipe's generation.temperature"))] = None
        top_k: Annotated[int | None, Field(ge=0, le=1_000_000, description=(
            "draw among the k most probable tokens; 0: all; default: the recipe's generation.top_k"))] = None
        top_p: Annotated[float | None, Field(gt=0.0, le=1.0, description=(
            "nucleus sampling: draw among the fewest tokens whose probability reaches p; "
            "default: the recipe's generation.top_p"))] = None
        seed: Annotated[int, Field(ge=0, le=2**63 - 1, description=(
            "the same condition, options and seed give the same texts"))] = 0
        max_length: Annotated[int | None, Field(ge=1, le=limits.max_generate_length, description=(
            f"most tokens a text has, 1 to {limits.max_generate_length}; default: the recipe's "
            "generation.max_length"))] = None
        min_length: Annotated[int | None, Field(ge=0, le=limits.max_generate_length, description=(
            "fewest tokens a text has (its end is not drawn before); default: the recipe's "
            "generation.min_length"))] = None
        beam_size: Annotated[int | None, Field(ge=1, le=limits.max_beam_size, description=(
            "search instead of sampling: the num_samples most probable texts of a beam this wide "
            "(1: greedy); sampling options are then unused"))] = None

    return ConditionalGenerateRequest


CONDITIONAL_GENERATE = RouteSpec(
    name="generate",
    answer_key="outputs",
    response=GenerateResponse,
    description="""A conditional generator writes texts to order.

Takes JSON `{"condition": "positive", "num_samples": 4, "temperature": 0.8, "top_k": 0,
"top_p": 0.9, "seed": 0}`; the model's conditions are listed by `GET /v1/models`. Answers
`{"outputs": [{"text", "score"}]}`, `num_samples` texts, each drawn with its own seed
(the first k of n samples are the k of a request for k). With `beam_size` the texts are
the beam's most probable, best first.""",
    json_doc="A condition and how to sample.",
    upload_doc="(conditional generators take JSON only)",
    json_example=(),
    request=conditional_request,
    input_field="condition",
    single=True,
)


class TextGenerate(Tokens, App):
    name = "text_generate"
    medium = "text"
    shapes = (("language_model", "text", ""),)
    wavefront_blocker = ("its conditioned decoder layer has no chunked form yet; translate's encoder-decoder "
                         "has one")
    formats = ("labeled-lines", "sst-trees", "csv", "tsv", "jsonl", "parquet", "hf")
    data_options = frozenset({"valid_format", "valid_fraction", "label_names", "tree_labels"})
    meta_keys = frozenset({"conditions", "tgt_vocab_size"})
    samples_text = True
    serve = ServeSpec(route=CONDITIONAL_GENERATE)

    def check_recipe(self, recipe) -> None:
        from pipelines.media.sources import check_token_budget

        super().check_recipe(recipe)
        check_token_budget(recipe)

    def prepare(self, recipe) -> PreparedData:
        from pipelines.apps.text_generate.data import prepare_generation

        data, conditions = prepare_generation(recipe)
        vocab = data.tokenizer.get_vocab_size()
        sizes = {"num_conditions": len(conditions), "tgt_vocab_size": vocab}
        meta = {"conditions": conditions, "tgt_vocab_size": vocab}
        return PreparedData(data.train, data.valid, sizes, {"tokenizer.json": data.tokenizer.to_str()}, meta,
                            data.train_stats.batches, data.report)

    def layer_factories(self, config, sizes: dict[str, int]):
        from models.language_model import language_model_layer_factories

        return language_model_layer_factories(config, num_conditions=sizes["num_conditions"],
                                              vocab_size=sizes["tgt_vocab_size"])

    def build(self, config, sizes: dict[str, int], *, seed: int = 0, keep=None):
        from models.language_model import build_language_model

        return build_language_model(config, num_conditions=sizes["num_conditions"],
                                    vocab_size=sizes["tgt_vocab_size"], seed=seed, keep=keep)

    def missing_files(self, path: Path) -> str | None:
        return has_tokenizer(path)

    def sizes_from_meta(self, path: Path, meta: dict[str, Any]) -> dict[str, int]:
        conditions = meta.get("conditions")
        if not isinstance(conditions, list) or not conditions or len(set(conditions)) < len(conditions) \
                or not all(isinstance(c, str) and c for c in conditions):
            raise DataError(f"{path}/meta.json: needs 'conditions': distinct non-empty strings")
        return {"num_conditions": len(conditions), **checked_sizes(path, meta, ("tgt_vocab_size",))}

    def predictor(self, loaded, *, budget: int | None = None):
        from pipelines.apps.text_generate.predictor import ConditionalGenerator

        return ConditionalGenerator(loaded, budget=budget)

    def score(self, checkpoint: Path, recipe, predictions: Path | None = None, *,
              device: str = "cpu") -> dict[str, Any]:
        from pipelines.apps.text_generate.evaluate import evaluate

        return evaluate(checkpoint, recipe, predictions, device=device)

    def final_scores(self, checkpoint: Path, recipe) -> dict[str, Any]:
        """The validation perplexity with every figure that needs no other checkpoint."""
        if not recipe.data.valid and not recipe.data.valid_fraction:
            return {}
        from pipelines.apps.text_generate.evaluate import evaluate

        scores = evaluate(checkpoint, recipe, judged=False)
        print(f"validation: perplexity {scores['perplexity']:.2f}; {scores['examples']} samples: distinct-2 "
              f"{scores['distinct_2']:.3f}, self-BLEU {scores['self_bleu']:.1f}", flush=True)
        return {f"val_{k}": scores[k] for k in ("perplexity", "distinct_2", "self_bleu")}


APP = TextGenerate()
