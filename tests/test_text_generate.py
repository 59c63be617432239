"""Conditional text generation without Ray: sampling (temperature, top-k, nucleus,
seeds), the conditioned language model, its predictor, recipe checks and ``rayseq sample``.
Training, eval and the route run in the Ray tier (test_train_cli.py, test_serving.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import last_json_line
from models.decoding import Sampling
from pipelines.checkpoint import load_predictor
from pipelines.config import recipe_from_dict
from pipelines.errors import ConfigError, DataError

PROBS = torch.tensor([[0.5, 0.3, 0.15, 0.05]])


def distribution(**options) -> list[float]:
    return Sampling(generators=[], **options).distribution(PROBS.log())[0].tolist()


def test_top_k_nucleus_and_temperature_shape_the_distribution():
    assert distribution(top_k=2) == pytest.approx([0.625, 0.375, 0, 0])
    # nucleus: the mass before the third token (0.8) already reaches p = 0.8, not 0.81
    assert distribution(top_p=0.8) == pytest.approx([0.625, 0.375, 0, 0])
    assert distribution(top_p=0.81) == pytest.approx([0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0])
    assert distribution(top_p=0.1) == pytest.approx([1, 0, 0, 0])  # the top token always stays
    roots = PROBS[0].sqrt()
    assert distribution(temperature=2.0) == pytest.approx((roots / roots.sum()).tolist())
    assert distribution(temperature=1.0, top_k=0, top_p=1.0) == pytest.approx(PROBS[0].tolist())
    with pytest.raises(ValueError, match="top_p"):
        Sampling(generators=[], top_p=0.0)


def test_draws_follow_the_distribution_and_the_seed():
    """4,000 rows, one generator each: the draws' frequencies are the probabilities; the
    same seeds draw the same tokens."""
    rows = 4000
    log_probs = PROBS.log().expand(rows, -1)

    def draw(offset: int) -> torch.Tensor:
        generators = [torch.Generator().manual_seed(offset + i) for i in range(rows)]
        return Sampling(generators=generators).draw(log_probs)

    drawn = draw(0)
    frequencies = torch.bincount(drawn, minlength=4).double() / rows
    assert frequencies.tolist() == pytest.approx(PROBS[0].tolist(), abs=0.03)
    assert torch.equal(drawn, draw(0)) and not torch.equal(drawn, draw(rows))
    greedy = Sampling(generators=[], temperature=0.0).draw(log_probs[:3])
    assert greedy.tolist() == [0, 0, 0]


@pytest.fixture(scope="module")
def generator(tiny_generator):
    return load_predictor(tiny_generator)


def texts_of(hypotheses) -> list[str]:
    return [h.tokens for h in hypotheses]


def test_a_sample_depends_on_its_seed_alone(generator, tiny_generator):
    """Not on what shares its batch, nor on how many passes the budget cuts."""
    together = generator.sample([0, 1, 0, 1], [5, 6, 7, 8])
    assert texts_of(generator.sample([0], [5])) == texts_of(together[:1])
    assert texts_of(generator.sample([1, 0], [8, 7])) == texts_of(together[:1:-1])
    one_per_pass = load_predictor(tiny_generator, budget=1)
    assert texts_of(one_per_pass.sample([0, 1, 0, 1], [5, 6, 7, 8])) == texts_of(together)
    assert texts_of(generator.sample([0], [9])) != texts_of(together[:1])
    assert together[0].tokens and all(isinstance(h.score, float) and h.score < 0 for h in together)


def test_temperature_zero_and_top_k_one_decode_greedily(generator):
    greedy = [h[0].tokens for h in generator.search([0, 1], beam_size=1)]
    assert texts_of(generator.sample([0, 1], [1, 2], temperature=0.0)) == greedy
    assert texts_of(generator.sample([0, 1], [3, 4], top_k=1)) == greedy
    assert greedy[0] != greedy[1]  # the condition steers the text


def test_min_length_holds_the_end_back(generator):
    """No text ends before ``min_length`` tokens, sampled or searched; the searches'
    scores stay the model's own log-probabilities (EOS ruled out, nothing renormalised)."""
    sampled = generator.sample([0, 1] * 8, list(range(16)), min_length=6, max_length=10)
    assert all(6 <= len(h.tokens) <= 10 for h in sampled)
    assert any(len(h.tokens) < 6 for h in generator.sample([0, 1] * 8, list(range(16)), max_length=10))
    for beam_size in (1, 3):
        found = generator.search([0, 1], beam_size=beam_size, min_length=6, max_length=10)
        assert all(len(h[0].tokens) >= 6 for h in found)
    from models.seq2seq import UNK_ID

    assert all(UNK_ID not in h.tokens for h in sampled)  # a generator writes words, never "unknown"
    with pytest.raises(DataError, match="need 0 <= min_length <= max_length"):
        generator.sample([0], [1], min_length=5, max_length=4)


def test_the_condition_steers_the_likelihood(generator, sentiment_dir):
    """Validation reviews are likelier under their own sentiment than under the other."""
    records = [line.split(" ", 1) for line in (sentiment_dir / "valid.txt").read_text().splitlines()]
    texts = [text for _, text in records]
    own = [generator.condition_id(label) for label, _ in records]
    nll_own, tokens = generator.log_likelihood(texts, own)
    nll_other, _ = generator.log_likelihood(texts, [1 - c for c in own])
    assert tokens == sum(len(generator.tokenizer.encode(t).ids) + 1 for t in texts)
    assert nll_own < nll_other - 0.05 * tokens, (nll_own / tokens, nll_other / tokens)


def test_log_likelihood_is_the_step_by_step_decoder_s(generator):
    """The teacher-forced pass and incremental decoding give the same probabilities."""
    from models.seq2seq import BOS_ID, EOS_ID

    text = "the movie was not dull"
    ids = generator.tokenizer.encode(text).ids + [EOS_ID]
    model = generator.model
    src = torch.tensor([[1]])
    memory = model.encode(src, torch.tensor([1]))
    state, prev, total = model.init_decoder_state(1), torch.tensor([BOS_ID]), 0.0
    for token in ids:
        log_probs, state = model.decode_step(prev, state, memory, torch.tensor([1]))
        total -= float(log_probs[0, token])
        prev = torch.tensor([token])
    nll, tokens = generator.log_likelihood([text], [1])
    assert tokens == len(ids)
    assert nll == pytest.approx(total, rel=1e-5)


def test_run_answers_num_samples_and_beams(generator):
    rows = generator.rows(["positive"])
    five = generator.run(rows, num_samples=5, seed=3)[0]["outputs"]
    assert len(five) == 5 and all(set(o) == {"text", "score"} for o in five)
    two = generator.run(rows, num_samples=2, seed=3)[0]["outputs"]
    assert [o["text"] for o in two] == [o["text"] for o in five[:2]]  # scores: to float rounding of the batch
    assert [o["score"] for o in two] == pytest.approx([o["score"] for o in five[:2]], abs=1e-4)
    assert [o["text"] for o in generator.run(rows, num_samples=2, seed=4)[0]["outputs"]] != [o["text"] for o in two]
    beams = generator.run(rows, num_samples=3, beam_size=3)[0]["outputs"]
    assert [o["score"] for o in beams] == sorted((o["score"] for o in beams), reverse=True)
    assert len({o["text"] for o in beams}) == 3
    with pytest.raises(DataError, match=r"at most beam_size \(2\) texts, asked for 3"):
        generator.run(rows, num_samples=3, beam_size=2)
    short = generator.run(rows, num_samples=4, seed=0, max_length=2)[0]["outputs"]
    assert all(len(o["text"].split()) <= 2 for o in short)


def test_unknown_conditions_are_named(generator):
    with pytest.raises(DataError, match="condition: unknown condition 'neutral'; the model has negative, positive"):
        generator.rows(["neutral"])
    with pytest.raises(DataError, match="condition 1: unknown condition 'x'"):
        generator.rows(["positive", "x"])


def test_meta_and_recipes_are_checked(tiny_generator, tmp_path):
    from pipelines.apps.text_generate.app import APP

    with pytest.raises(DataError, match="needs 'conditions': distinct non-empty strings"):
        APP.sizes_from_meta(tmp_path, {"conditions": ["a", "a"], "tgt_vocab_size": 9})
    with pytest.raises(DataError, match="tgt_vocab_size"):
        APP.sizes_from_meta(tmp_path, {"conditions": ["a"], "tgt_vocab_size": 0})
    for generation, message in (({"top_p": 0.0}, "generation.top_p must be in"),
                                ({"temperature": -1.0}, "generation.temperature, top_k and seed must be >= 0"),
                                ({"num_samples": 0}, "generation.num_samples and generation.max_length")):
        with pytest.raises(ConfigError, match=message):
            recipe_from_dict({"app": "text_generate", "model": {"kind": "language_model"}, "generation": generation})
    with pytest.raises(ConfigError, match="generation is read by conditional text generation"):
        recipe_from_dict({"model": {"kind": "seq2vec"}, "generation": {"temperature": 0.5}})


def test_the_request_body_is_checked():
    from pydantic import ValidationError

    from pipelines.apps.text_generate.app import conditional_request
    from serving.limits import ServeLimits

    body = conditional_request(ServeLimits(max_inputs=8))
    assert body.model_validate({"condition": "positive"}).num_samples == 1
    for bad in ({"condition": "positive", "num_samples": 9}, {"condition": "positive", "top_p": 0.0},
                {"condition": ""}, {"condition": "positive", "beam": 2}, {"num_samples": 2},
                {"condition": "positive", "temperature": "1"}):
        with pytest.raises(ValidationError):
            body.model_validate(bad)


def test_sample_command_prints_seeded_texts(tiny_generator, tiny_checkpoint, capsys):
    from pipelines.cli import main

    args = ["sample", str(tiny_generator), "--condition", "negative", "--num-samples", "3", "--seed", "2",
            "--temperature", "0.7"]
    assert main(args) == 0
    first = last_json_line(capsys.readouterr().out)
    assert first["condition"] == "negative" and len(first["outputs"]) == 3
    want = load_predictor(tiny_generator).run(load_predictor(tiny_generator).rows(["negative"]), num_samples=3,
                                              seed=2, temperature=0.7)[0]["outputs"]
    assert first["outputs"] == json.loads(json.dumps(want))
    assert main(args) == 0 and last_json_line(capsys.readouterr().out) == first
    assert main(["sample", str(tiny_checkpoint), "--condition", "negative"]) != 0
    assert "sample needs a conditional generator" in capsys.readouterr().err
    assert main([*args[:4], "--top-p", "1.5"]) != 0
    assert "generation.top_p must be in (0, 1]" in capsys.readouterr().err


def test_validation_perplexity_is_finite_and_below_uniform(generator, sentiment_dir):
    records = [line.split(" ", 1) for line in (sentiment_dir / "valid.txt").read_text().splitlines()]
    nll, tokens = generator.log_likelihood([t for _, t in records], [generator.condition_id(c) for c, _ in records])
    assert 1.0 < math.exp(nll / tokens) < generator.tokenizer.get_vocab_size() / 4
