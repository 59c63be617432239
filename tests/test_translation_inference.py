"""``pipelines.apps.translate.predictor.Translator`` on a tiny untrained seq2seq checkpoint, no Ray:
input order survives the length-sorted passes, n-best lists are sorted, options left
out come from the recipe, bad options are refused by name and ``load_predictor`` gives
each checkpoint its own predictor class."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines.apps.translate.predictor import Translator
from pipelines.checkpoint import load_inference, load_predictor
from pipelines.media.bucketing import plan_batches

SOURCES = [  # deliberately not sorted by length
    "eight thousand, eight hundred and eighty-eight",
    "five",
    "three hundred and forty-two",
    "nine thousand and one",
    "seventy-seven",
    "one thousand, two hundred and thirty-four",
    "thirteen",
]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: a second intra-op thread only adds synchronisation."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def translator(tiny_translator) -> Translator:
    # A small budget, so the sources run in several length-sorted passes.
    return Translator(load_inference(tiny_translator), budget=24)


def tokens(found):
    return [[h.tokens for h in n_best] for n_best in found]


@pytest.mark.parametrize("beam_size", [1, 3])
def test_outputs_follow_input_order_whatever_the_passes(translator, beam_size):
    ids = translator.rows(SOURCES)
    lengths = np.array([len(x) for x in ids])
    assert list(lengths) != sorted(lengths)
    passes = plan_batches(lengths, max_tokens=max(24 // beam_size, int(lengths.max())), max_batch_size=len(ids),
                          sort=True)
    assert len(passes) > 1, "the budget should cut the sources into several passes"

    together = translator.search(ids, beam_size=beam_size, max_length=30)
    alone = [translator.search([x], beam_size=beam_size, max_length=30)[0] for x in ids]
    assert tokens(together) == tokens(alone)
    assert [h[0].score for h in together] == pytest.approx([h[0].score for h in alone], abs=1e-4)
    assert all(len(h[0].tokens) <= 30 for h in together)


def test_n_best_lists_are_sorted_and_start_with_the_best(translator):
    ids = translator.rows(SOURCES)
    found = translator.search(ids, beam_size=4, max_length=25, n_best=3)
    best = translator.search(ids, beam_size=4, max_length=25)
    for n_best, one in zip(found, best):
        assert 1 <= len(n_best) <= 3
        scores = [h.score for h in n_best]
        assert scores == sorted(scores, reverse=True)
        assert n_best[0].tokens == one[0].tokens
    assert any(len(n_best) == 3 for n_best in found)


def test_translate_gives_the_contract_objects_with_the_recipe_defaults(translator):
    assert (translator.recipe.decode.beam_size, translator.recipe.decode.max_length) == (4, 128)
    outputs = translator.predict(SOURCES[:3])
    assert len(outputs) == 3
    for output in outputs:
        assert set(output) == {"text", "score"}
        assert isinstance(output["text"], str) and isinstance(output["score"], float)
    assert outputs == translator.predict(SOURCES[:3], beam_size=4, max_length=128, alpha=0.6)
    greedy = translator.predict(SOURCES[:3], beam_size=1, max_length=5)
    assert [o["text"] for o in greedy] == [translator.detokenize(h[0].tokens) for h in
                                           translator.search(translator.rows(SOURCES[:3]), beam_size=1,
                                                             max_length=5)]
    assert translator.search([]) == [] and translator.predict([]) == []


def test_bad_options_are_refused_and_checkpoints_load_their_own_predictor(translator, tiny_checkpoint,
                                                                           tiny_translator):
    from pipelines.apps.text_classify.predictor import TextClassifier

    with pytest.raises(ValueError, match="beam_size must be >= 1, got 0"):
        translator.search(translator.rows(["five"]), beam_size=0)
    with pytest.raises(ValueError, match=r"n_best must be in \[1, beam_size\]"):
        translator.search(translator.rows(["five"]), beam_size=2, n_best=3)
    # The old "a seq2vec checkpoint, not seq2seq" refusal is gone: load_predictor picks the
    # checkpoint's own class, so a seq2vec checkpoint never becomes a Translator.
    assert type(load_predictor(tiny_checkpoint)) is TextClassifier
    assert type(load_predictor(tiny_translator, budget=24)) is Translator


def load_bench_decode():
    """``bench/decode.py`` as a module (bench/ is a folder of scripts, not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "decode.py"
    spec = importlib.util.spec_from_file_location("bench_decode", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_decode_benchmark_quick_run(tiny_translator, tmp_path, capsys):
    bench = load_bench_decode()
    data = tmp_path / "sources.en"
    data.write_text("\n".join(SOURCES * 2) + "\n\n")
    out = tmp_path / "decode.json"
    assert bench.main(["--quick", "--checkpoint", str(tiny_translator), "--data", str(data), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["data"]["sentences"] == 12 and report["machine"]["torch_threads"] == 1
    assert [arm["arm"] for arm in report["results"]["arms"]] == [
        "greedy batched", "greedy one by one", "beam 4 batched", "beam 4 one by one",
        "beam 8 batched", "beam 8 one by one"]
    assert all(beam["agree"] == 1.0 for beam in report["results"]["beams"])  # batching changes nothing
    assert "length cap" in report["notes"][0]  # an untrained model: flagged
    assert bench.main(["--checkpoint", str(tmp_path / "none")]) == 2
    assert "rayseq train recipes/demo_translation.yaml" in capsys.readouterr().err
