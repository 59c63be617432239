"""Sequence tagging without Ray: tag schemes, CoNLL files, the CRF against brute force,
the tagger model, its vocabularies, entity scores and the predictor's offsets."""

from __future__ import annotations

import itertools
import random
import re

import numpy as np
import pytest
import torch

from models import ModelConfig
from models.crf import CRFScores, log_partition, neg_log_likelihood, path_score, viterbi
from models.tagger import build_tagger, case_of
from pipelines.apps.tag.data import CutTagPool, Featurize
from pipelines.apps.tag.predictor import allowed_mask, tokenize
from pipelines.apps.tag.vocab import TaggerVocab, normalize
from pipelines.config import BatchingConfig, recipe_from_dict
from pipelines.media.sources import text_lines
from pipelines.media.tags import SCHEMES, check, convert, parse_conll, spans, tag_set, to_scheme
from pipelines.scoring.entities import EntityCounts

# ----------------------------------------------------------------------------- schemes

SAME = {  # one sentence's entities in each scheme: PER PER (adjacent), O, LOC
    "iob1": ["I-PER", "I-PER", "B-PER", "O", "I-LOC"],
    "iob2": ["B-PER", "I-PER", "B-PER", "O", "B-LOC"],
    "iobes": ["B-PER", "E-PER", "S-PER", "O", "S-LOC"],
}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_each_scheme_names_the_same_entities(scheme):
    assert check(SAME[scheme], scheme) == ""
    assert spans(SAME[scheme]) == [("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5)]
    for other in SCHEMES:
        assert convert(SAME[scheme], other) == SAME[other]


def test_random_entities_survive_every_conversion():
    rng = random.Random(0)
    for _ in range(300):
        n, entities, i = rng.randint(1, 9), [], 0
        while i < n:
            if rng.random() < 0.5:
                end = min(n, i + rng.randint(1, 3))
                entities.append((rng.choice("AB"), i, end))
                i = end
            else:
                i += 1
        for scheme in SCHEMES:
            tags = to_scheme(entities, n, scheme)
            assert check(tags, scheme) == "", (scheme, tags)
            assert spans(tags) == entities


@pytest.mark.parametrize("tags, scheme, message", [
    (["O", "I-PER"], "iob2", "token 2: 'I-PER' cannot follow 'O' in iob2"),
    (["B-PER", "I-LOC"], "iob2", "token 2: 'I-LOC' cannot follow 'B-PER'"),
    (["I-PER"], "iob2", "token 1: 'I-PER' cannot follow 'the sentence start'"),
    (["O", "B-PER"], "iob1", "token 2: 'B-PER' cannot follow 'O' in iob1"),
    (["I-LOC", "B-PER"], "iob1", "token 2: 'B-PER' cannot follow 'I-LOC'"),
    (["B-PER", "O"], "iobes", "token 2: 'O' cannot follow 'B-PER' in iobes"),
    (["S-PER", "E-PER"], "iobes", "token 2: 'E-PER' cannot follow 'S-PER'"),
    (["O", "B-PER"], "iobes", "token 2: 'B-PER' cannot end a sentence in iobes"),
    (["E-PER"], "iob2", "token 1: tag 'E-PER' is not O or B/I-TYPE (iob2)"),
    (["PER"], "iob1", "token 1: tag 'PER' is not O or I/B-TYPE"),
    (["B-"], "iob2", "tag 'B-' is not O"),
])
def test_a_sequence_the_scheme_forbids_is_named(tags, scheme, message):
    assert message in check(tags, scheme)


def test_spans_read_iob1_as_conlleval_does():
    # an I- after O starts an entity; B- splits two of one type; a type change splits too
    assert spans(["O", "I-ORG", "I-ORG", "B-ORG", "I-MISC", "O"]) == [("ORG", 1, 3), ("ORG", 3, 4), ("MISC", 4, 5)]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_crf_mask_allows_exactly_what_check_allows(scheme):
    tags = tag_set(["LOC", "PER"], scheme)
    allowed = allowed_mask(tags, scheme)
    for n in (1, 2, 3):
        for path in itertools.product(range(len(tags)), repeat=n):
            ok = bool(allowed.start[path[0]]) and bool(allowed.end[path[-1]]) and all(
                bool(allowed.trans[a, b]) for a, b in zip(path, path[1:]))
            assert ok == (check([tags[i] for i in path], scheme) == ""), [tags[i] for i in path]


# ----------------------------------------------------------------------------- CoNLL files

CONLL = """-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
"""


def parse(text: str, *, scheme: str = "iob1", tag_column: int = -1, columns: int | None = None,
          raw: bytes | None = None) -> list[dict]:
    data = raw if raw is not None else text.encode()
    return parse_conll(text_lines(data, "f.txt"), "f.txt", tag_column=tag_column, scheme=scheme, columns=columns)


def test_conll_sentences_skip_docstart_and_name_their_first_line():
    out = parse(CONLL)
    assert [(r["tokens"], r["tags"], r["origin"], r["error"]) for r in out] == [
        (["EU", "rejects", "German", "call", "."], ["I-ORG", "O", "I-MISC", "O", "O"], "f.txt:3", ""),
        (["Peter", "Blackburn"], ["I-PER", "I-PER"], "f.txt:9", "")]


def test_the_tag_column_is_a_recipe_option():
    out = parse(CONLL, tag_column=2, scheme="iob1")  # the chunk column
    assert out[0]["tags"] == ["I-NP", "I-VP", "I-NP", "I-NP", "O"]


@pytest.mark.parametrize("text, columns, scheme, message", [
    ("EU NNP I-ORG\nrejects VBZ I-VP O\n", None, "iob1", "f.txt:1: line 2: 4 columns, the file has 3"),
    ("EU I-ORG extra\n", 2, "iob1", "f.txt:1: line 1: 3 columns, the file has 2"),
    ("EU\n", None, "iob1", "f.txt:1: line 1: 1 column; need a token and a tag"),
    ("a O\nb I-PER\n", None, "iob2", "f.txt:1: token 2: 'I-PER' cannot follow 'O' in iob2 (data.tag_scheme: iob2)"),
    ("\n\na O\nb B-PER\n", None, "iob1", "f.txt:3: token 2: 'B-PER' cannot follow 'O' in iob1"),
])
def test_a_bad_sentence_is_a_bad_record_naming_file_and_line(text, columns, scheme, message):
    bad = [r for r in parse(text, columns=columns, scheme=scheme) if r["error"]]
    assert len(bad) == 1 and f"{bad[0]['origin']}: {bad[0]['error']}".startswith(message)


def test_bytes_that_are_not_utf8_spoil_only_their_sentence():
    out = parse("", raw=b"a O\n\xff O\n\nb O\n")
    assert out[0]["error"] == "line 2: not valid UTF-8 (byte 0)" and out[1] == {
        "tokens": ["b"], "tags": ["O"], "origin": "f.txt:4", "error": ""}


# ----------------------------------------------------------------------------- CRF

def random_scores(g: torch.Generator, batch: int, steps: int, k: int) -> CRFScores:
    return CRFScores(torch.randn(batch, steps, k, generator=g, dtype=torch.float64),
                     torch.randn(k, generator=g, dtype=torch.float64),
                     torch.randn(k, k, generator=g, dtype=torch.float64),
                     torch.randn(k, generator=g, dtype=torch.float64))


def brute_force(scores: CRFScores, b: int, n: int) -> tuple[torch.Tensor, list[int]]:
    """``log Z`` and the best path of row ``b`` (first ``n`` steps) over every path."""
    k = scores.emissions.size(-1)
    best, totals = None, []
    for path in itertools.product(range(k), repeat=n):
        tags = torch.tensor([list(path)])
        one = CRFScores(scores.emissions[b : b + 1, :n], scores.start, scores.trans, scores.end)
        s = path_score(one, tags, torch.tensor([n]))[0]
        totals.append(s)
        if best is None or s > best[0]:
            best = (s, list(path))
    return torch.logsumexp(torch.stack(totals), 0), best[1]


def test_forward_algorithm_and_viterbi_equal_brute_force_over_every_path():
    g = torch.Generator().manual_seed(0)
    scores, lengths = random_scores(g, 4, 4, 3), torch.tensor([4, 1, 3, 2])
    logz, paths = log_partition(scores, lengths), viterbi(scores, lengths)
    for b, n in enumerate(lengths.tolist()):
        expected_z, expected_path = brute_force(scores, b, n)
        assert float(logz[b]) == pytest.approx(float(expected_z), rel=1e-9)
        assert paths[b] == expected_path


def test_masked_moves_are_never_decoded_and_carry_no_probability():
    g = torch.Generator().manual_seed(1)
    tags = tag_set(["PER"], "iobes")  # O B-PER I-PER E-PER S-PER
    allowed = allowed_mask(tags, "iobes")
    scores = random_scores(g, 6, 4, len(tags)).constrained(allowed)
    lengths = torch.tensor([4, 3, 1, 2, 4, 4])
    for path, n in zip(viterbi(scores, lengths), lengths.tolist()):
        assert check([tags[i] for i in path], "iobes") == "" and len(path) == n
    # the allowed paths' probabilities sum to 1
    z = log_partition(scores, lengths)
    for b, n in enumerate(lengths.tolist()):
        legal = [p for p in itertools.product(range(len(tags)), repeat=n) if check([tags[i] for i in p], "iobes") == ""]
        total = torch.logsumexp(torch.stack([path_score(CRFScores(scores.emissions[b:b + 1], scores.start,
                                                                  scores.trans, scores.end),
                                                        torch.tensor([list(p) + [0] * (4 - n)]),
                                                        torch.tensor([n]))[0] for p in legal]), 0)
        assert float(total) == pytest.approx(float(z[b]), abs=1e-6)


def test_the_loss_is_minus_log_probability_and_ignores_padding():
    g = torch.Generator().manual_seed(2)
    scores = random_scores(g, 2, 5, 3)
    tags = torch.tensor([[0, 2, 1, -1, -1], [1, 1, 0, 2, 2]])
    lengths = torch.tensor([3, 5])
    loss = neg_log_likelihood(scores, tags, lengths)
    assert (loss > 0).all()
    changed = CRFScores(scores.emissions.clone(), scores.start, scores.trans, scores.end)
    changed.emissions[0, 3:] = 100.0  # padding steps of row 0
    assert torch.allclose(neg_log_likelihood(changed, tags, lengths), loss)


# ----------------------------------------------------------------------------- model

TAGGER = ModelConfig(kind="tagger", embed_dim=8, hidden_size=6, num_layers=2, char_embed_dim=4, char_channels=5,
                     dropout=0.0)


def test_a_padded_sentence_scores_as_it_does_alone_and_stages_compose():
    torch.manual_seed(0)
    model = build_tagger(TAGGER, num_words=20, num_chars=15, num_tags=5, seed=3).eval()
    words = torch.tensor([[4, 5, 6, 0], [7, 8, 9, 10]])
    cases = torch.tensor([[1, 2, 3, 0], [1, 1, 1, 2]])
    chars = torch.randint(2, 15, (2, 4, 3))
    chars[0, 3] = 0
    chars[1, 2, 2] = 0
    lengths = torch.tensor([3, 4])
    batch = model((words, cases, chars), lengths)
    alone = model((words[:1, :3], cases[:1, :3], chars[:1, :3]), lengths[:1])
    torch.testing.assert_close(batch.emissions[0, :3], alone.emissions[0])
    first = build_tagger(TAGGER, num_words=20, num_chars=15, num_tags=5, seed=3, keep=[0, 1]).eval()
    rest = build_tagger(TAGGER, num_words=20, num_chars=15, num_tags=5, seed=3, keep=[2, 3]).eval()
    torch.testing.assert_close(rest(first((words, cases, chars), lengths), lengths).emissions, batch.emissions)


def test_word_dropout_replaces_words_only_in_training():
    config = ModelConfig(kind="tagger", embed_dim=8, hidden_size=6, num_layers=1, char_embed_dim=4,
                         char_channels=5, dropout=0.0, word_dropout=0.5)
    layer = build_tagger(config, num_words=20, num_chars=15, num_tags=3, seed=0, keep=[0]).layers["0"]
    words = torch.full((4, 50), 7)
    x = (words, torch.ones_like(words), torch.full((4, 50, 2), 3))
    lengths = torch.full((4,), 50)
    layer.eval()
    evaluated = layer(x, lengths)
    assert torch.equal(evaluated, layer(x, lengths))
    layer.train()
    unknown = layer.words.weight[1]
    replaced = (layer(x, lengths)[..., :8] == unknown).all(-1).float().mean()
    assert 0.3 < float(replaced) < 0.7


@pytest.mark.parametrize("token, case", [("the", "lower"), ("Germany", "title"), ("EU", "upper"),
                                         ("McDonald", "mixed"), ("1996", "digits"), ("3-1", "digits"),
                                         (".", "other")])
def test_case_feature(token, case):
    from models.tagger import CASES

    assert CASES[case_of(token)] == case


# ----------------------------------------------------------------------------- vocabularies, features

def vocab(min_frequency: int = 1) -> TaggerVocab:
    sentences = [["EU", "rejects", "German", "call"], ["Peter", "rejects", "1996"]]
    return TaggerVocab.build(sentences, tag_set(["MISC", "ORG", "PER"], "iobes"), "iobes",
                             min_frequency=min_frequency, max_words=100, lowercase=True)


def test_vocabulary_normalises_words_and_keeps_characters():
    v = vocab(min_frequency=2)
    assert v.words == ["[PAD]", "[UNK]", "rejects"] and normalize("1996") == "0000"
    words, cases, chars = v.encode(["Rejects", "2001", "unseen"])
    assert words.tolist() == [2, 1, 1] and cases.tolist() == [2, 5, 1]
    assert chars.shape == (3, 7) and chars[1, 4:].tolist() == [0, 0, 0] and chars[2].tolist().count(1) >= 1
    assert TaggerVocab.from_json(v.to_json(), "v").words == v.words


def test_featurize_converts_tags_and_bucketing_pads_labels_with_minus_one():
    v = vocab()
    featurize = Featurize(v.to_json(), max_length=3)
    out = featurize({"tokens": np.array([["EU", "rejects", "German", "call"], ["Peter"]], dtype=object),
                     "tags": np.array([["I-ORG", "O", "I-MISC", "O"], ["I-PER"]], dtype=object),
                     "origin": np.array(["a:1", "a:7"])})
    assert out["length"].tolist() == [3, 1] and out["truncated"].tolist() == [True, False]
    assert [v.tags[i] for i in out["labels"][0]] == ["S-ORG", "O", "S-MISC"]
    cut = CutTagPool(BatchingConfig(max_tokens=64, max_batch_size=8, pool_size=8), sort=True)
    batch = cut({**{k: out[k] for k in ("words", "cases", "chars", "labels")}, "length": out["length"]})
    (labels,) = batch["labels"]
    assert labels.shape == (2, 3) and (labels == -1).sum() == 2 and batch["chars"][0].shape[:2] == (2, 3)


def test_pad_handles_ragged_matrices():
    from pipelines.media.bucketing import pad_batch

    out = pad_batch([np.ones((2, 3), dtype=np.int32), np.ones((1, 5), dtype=np.int32)], -1)
    assert out.shape == (2, 2, 5) and (out[0, :, 3:] == -1).all() and (out[1, 1] == -1).all()
    assert out.dtype == np.int32 and out[0, :, :3].sum() == 6


# ----------------------------------------------------------------------------- scores, tokens

def test_entity_scores_count_exact_matches_per_type():
    counts = EntityCounts()
    counts.add(["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "I-PER", "O", "B-ORG"])
    counts.add(["I-MISC", "O"], ["I-MISC", "I-MISC"])  # iob1 gold, boundary wrong
    report = counts.report()
    assert (report["precision"], report["recall"], report["f1"]) == (33.33, 33.33, 33.33)
    assert report["per_type"]["PER"]["f1"] == 100.0 and report["per_type"]["LOC"]["recall"] == 0.0
    assert report["per_type"]["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "gold": 0, "predicted": 1}


def test_tokenize_keeps_offsets_into_the_text():
    text = "EU rejects German call, U.S. said on 12.5.1996 (Reuters). Apple Inc. hired Mr. Co.x"
    found = tokenize(text)
    assert [t for t, _, _ in found] == ["EU", "rejects", "German", "call", ",", "U.S.", "said", "on", "12.5.1996",
                                        "(", "Reuters", ")", ".", "Apple", "Inc.", "hired", "Mr.", "Co", ".", "x"]
    assert all(text[s:e] == t for t, s, e in found)


def test_the_predictor_answers_every_token_with_its_offsets(tiny_tagger):
    """``tiny_tagger`` tags every token ``S-PER``: each token is an entity, so every
    offset is checked, and IOB1 answers ``I-PER B-PER B-PER ...``."""
    from pipelines.checkpoint import load_predictor

    texts = ["EU rejects German call to boycott British lamb.", "  Peter Blackburn, U.S. (Reuters)  ", "?!"]
    first, second, third = load_predictor(tiny_tagger).predict(texts)
    assert first["tokens"] == ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]
    assert first["tags"] == ["I-PER", *["B-PER"] * 8]
    for text, answer in zip(texts, (first, second, third)):
        assert [e["text"] for e in answer["entities"]] == answer["tokens"]
        assert all(text[e["start"]:e["end"]] == e["text"] and e["type"] == "PER" for e in answer["entities"])
    assert second["entities"][0] == {"text": "Peter", "type": "PER", "start": 2, "end": 7}
    assert second["tokens"] == ["Peter", "Blackburn", ",", "U.S.", "(", "Reuters", ")"]


def test_a_text_longer_than_the_model_takes_is_refused_by_name(tiny_tagger):
    from pipelines.checkpoint import load_predictor
    from pipelines.errors import DataError

    with pytest.raises(DataError, match="input 1: 17 tokens; this model tags at most 16"):
        load_predictor(tiny_tagger).predict(["fine", " ".join("x" * 17)])


# ----------------------------------------------------------------------------- hf data, recipes

def test_hf_sentences_name_their_class_labels_and_bad_rows():
    import datasets

    from pipelines.apps.tag.data import hf_records
    from pipelines.config import DataConfig

    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    loaded = datasets.Dataset.from_dict({"tokens": [["Peter", "Blackburn"], ["in", "Bonn"], ["x"], []],
                                         "ner_tags": [[1, 2], [0, 4], [0, 0], []]}, features=features)
    out = hf_records(loaded, DataConfig(tag_scheme="iob2"), "conll[train]")
    assert out[0] == {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"], "origin": "conll[train]:row 1",
                      "error": ""}
    assert out[1]["error"] == "token 2: 'I-LOC' cannot follow 'O' in iob2 (data.tag_scheme: iob2)"
    assert out[2]["error"] == "1 tokens but 2 tags" and out[3]["error"] == "no tokens"
    with pytest.raises(Exception, match="no column 'words'.*set data.text_column"):
        hf_records(loaded, DataConfig(text_column="words"), "conll[train]")


def tagger_recipe(**data) -> dict:
    return {"name": "t", "app": "tag", "data": {"format": "conll", **data},
            "model": {"kind": "tagger"}, "batching": {"max_tokens": 512}}


@pytest.mark.parametrize("change, message", [
    ({"data": {"tag_scheme": "bio"}}, "data.tag_scheme: 'bio' is not one of"),
    ({"data": {"tag_column": 0}}, "data.tag_column: column 0 holds the token"),
    ({"model": {"kind": "tagger", "tag_scheme": "iob3"}}, "model.tag_scheme: 'iob3' is not one of"),
    ({"model": {"kind": "tagger", "word_dropout": 1.0}}, "model.word_dropout must be in [0, 1)"),
    ({"data": {"valid_fraction": 0.1, "valid": ""}}, "data.valid_fraction is not read by the tag application"),
    ({"data": {"format": "labeled-lines"}}, "data.format: 'labeled-lines' is not read by the tag application"),
    ({"data": {"max_length": 600}}, "data.max_length must fit the token budget: 600 > batching.max_tokens 512"),
    ({"tokenizer": {"min_frequency": 0}}, "tokenizer.min_frequency must be >= 1"),
])
def test_tagger_recipes_are_checked_by_name(change, message):
    from pipelines import apps
    from pipelines.errors import ConfigError

    raw = tagger_recipe()
    for section, values in change.items():
        raw[section] = {**raw.get(section, {}), **values}
    with pytest.raises((ConfigError, ValueError), match=re.escape(message)):
        apps.check_recipe(recipe_from_dict(raw))


def test_the_conll_recipe_selects_the_tagger():
    from pathlib import Path

    from pipelines import apps
    from pipelines.config import load_recipe

    recipe = load_recipe(Path(__file__).parents[1] / "recipes" / "conll2003.yaml")
    assert apps.check_recipe(recipe).name == "tag"
    assert (recipe.data.tag_scheme, recipe.model.tag_scheme, recipe.data.on_bad_record) == ("iob1", "iobes", "skip")


def test_a_vocabulary_that_does_not_fit_the_model_is_refused_by_name(tiny_tagger, tmp_path):
    import json
    import shutil

    from pipelines.checkpoint import load_predictor
    from pipelines.errors import DataError

    broken = tmp_path / "checkpoint"
    shutil.copytree(tiny_tagger, broken)
    vocab = json.loads((broken / "vocab.json").read_text())
    vocab["tags"] = vocab["tags"][:-1]
    (broken / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(DataError,
                       match=r"vocab.json: does not fit the checkpoint's model \(num_tags: 8 in vocab.json, 9"):
        load_predictor(broken)
