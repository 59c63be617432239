"""Sentence classification data without Ray: sentiment trees, label maps, the options
only some applications read, and pretrained word vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.config import DataConfig, recipe_from_dict
from pipelines.errors import ConfigError, DataError
from pipelines.media.embeddings import load_word_vectors
from pipelines.media.sources import named_labels, parse_file, text_lines
from pipelines.media.trees import TreeError, parse_sst_trees, tree_phrases

TREE = "(3 (2 (2 The) (2 Rock)) (4 (3 (2 is) (4 great)) (2 .)))"


def records(text: str, tree_labels: str = "binary") -> list[dict[str, str]]:
    return parse_sst_trees(text_lines(text.encode(), "t.txt"), "t.txt", tree_labels)


def test_every_node_is_a_phrase_root_first():
    phrases = tree_phrases(TREE)
    assert phrases[0] == ("3", ["The", "Rock", "is", "great", "."])
    assert ("2", ["The", "Rock"]) in phrases and ("4", ["great"]) in phrases
    assert len(phrases) == 9  # 5 words + 4 inner nodes


@pytest.mark.parametrize("line, message", [
    ("(3 (2 a) (2 b)", "1 unclosed '(' at the end of the line"),
    ("(3 (2 a)))", "token 8: ')' closes nothing"),
    ("(7 a)", "token 2: label '7' is not 0-4"),
    ("(3 (2 a)) (2 b)", "token 8: a second tree after the first ended"),
    ("(3 ())", "'(' without a label"),
    ("(3 (2 ))", "a node with no words"),
    ("a (2 b)", "token 1: word 'a' outside the tree"),
])
def test_malformed_trees_say_what_and_where(line, message):
    with pytest.raises(TreeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tree_phrases(line)


def test_binary_drops_neutral_lowercases_and_maps_to_stsa_labels():
    out = records(TREE)
    assert [(r["text"], r["label"]) for r in out] == [
        ("the rock is great .", "1"), ("is great .", "1"), ("is great", "1"), ("great", "1")]
    assert all(r["origin"] == "t.txt:1" and r["error"] == "" for r in out)


def test_fine_keeps_five_classes_and_ptb_escapes_lowercase_as_stsa_does():
    out = records("(1 (2 -LRB-) (0 awful))", "fine")
    assert [(r["text"], r["label"]) for r in out] == [("-lrb- awful", "1"), ("-lrb-", "2"), ("awful", "0")]


def test_a_phrase_seen_again_counts_once_with_its_first_label():
    out = records("(4 (4 great) (2 .))\n(3 (4 great) (2 fun))\n", "fine")
    texts = [r["text"] for r in out]
    assert texts.count("great") == 1 and texts.count(".") == 1
    assert next(r for r in out if r["text"] == "great")["origin"] == "t.txt:1"


def test_a_malformed_tree_is_one_bad_record_and_the_others_still_count():
    out = records(f"{TREE}\n(3 (2 broken)\n{TREE.replace('Rock', 'Stone')}\n")
    bad = [r for r in out if r["error"]]
    assert len(bad) == 1 and bad[0]["origin"] == "t.txt:2"
    assert bad[0]["error"].startswith("malformed tree: ")
    assert {r["origin"] for r in out if not r["error"]} == {"t.txt:1", "t.txt:3"}


def test_sst_trees_is_a_format_of_the_text_readers():
    config = DataConfig(format="sst-trees", tree_labels="fine")
    out = parse_file(TREE.encode(), "t.txt", "sst-trees", config)
    assert len(out) == 9 and out[0]["label"] == "3"


# ----------------------------------------------------------------------------- label names


def test_label_names_map_keys_keep_names_and_refuse_the_rest():
    names = DataConfig(label_names={0: "DESC", 1: "ENTY"}).label_names
    assert names == {"0": "DESC", "1": "ENTY"}  # YAML's int keys read as the file's text
    out = named_labels([{"text": "a", "label": label, "origin": f"f:{i}", "error": ""}
                        for i, label in enumerate(["0", "ENTY", "7"])], names)
    assert [r["label"] for r in out[:2]] == ["DESC", "ENTY"] and not out[0]["error"]
    assert out[2]["error"].startswith("label '7' is not in data.label_names (labels: ['0', '1']")


@pytest.mark.parametrize("data, message", [
    ({"label_names": {0: "A", 1: "A"}}, "more than one label is named 'A'"),
    ({"label_names": {0: ""}}, "label 0 maps to '', not a name"),
    ({"label_names": ["A"]}, "expected a mapping"),
    ({"valid_fraction": 1.0}, r"valid_fraction must be in \[0, 1\)"),
    ({"valid_fraction": 0.1}, "data.valid is 'valid.txt' too"),
    ({"tree_labels": "three"}, "data.tree_labels: 'three' is not one of"),
])
def test_sentence_data_options_are_checked(data, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig(**data)


@pytest.mark.parametrize("data, model, message", [
    ({"label_names": {0: "A"}}, {}, "data.label_names is not read by the translate application"),
    ({"valid_fraction": 0.1, "valid": ""}, {}, "data.valid_fraction is not read by the translate application"),
    ({"valid_format": "labeled-lines"}, {}, "data.valid_format: 'labeled-lines' is not read by the translate"),
    ({"valid_format": "trees"}, {}, "data.valid_format: 'trees' is not one of"),
    ({}, {"pretrained_embeddings": "v.txt"}, "model.pretrained_embeddings is not read by the translate"),
])
def test_an_application_refuses_options_it_does_not_read(data, model, message):
    raw = {"data": {"source_lang": "en", "target_lang": "de", **data},
           "model": {"kind": "seq2seq", "decoder": "attention", **model}}
    with pytest.raises(ConfigError, match=message):
        recipe_from_dict(raw)


def test_frozen_embeddings_need_pretrained_ones():
    with pytest.raises(ConfigError, match="set model.pretrained_embeddings too"):
        recipe_from_dict({"model": {"freeze_embeddings": True}})


# ----------------------------------------------------------------------------- word vectors

VOCAB = {"[PAD]": 0, "[UNK]": 1, "▁good": 2, "▁film": 3, "▁paris": 4, "▁zzz": 5, "ing": 6}  # Metaspace tokens
SPECIALS = {"[PAD]", "[UNK]"}


def test_glove_vectors_map_onto_the_vocabulary(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("good 1 2 3\nfilm 4 5 6\nParis 7 8 9\nunused 0 0 0\n")
    vectors = load_word_vectors(path, VOCAB, 3, specials=SPECIALS)
    assert np.array_equal(vectors.matrix[2], [1, 2, 3]) and np.array_equal(vectors.matrix[3], [4, 5, 6])
    assert np.array_equal(vectors.matrix[4], [7, 8, 9])  # a lowercase token finds the capitalised word
    assert np.all(vectors.matrix[0] == 0)  # [PAD] stays zero
    assert (vectors.covered, vectors.words) == (3, 4) and vectors.report()["pretrained_coverage"] == 0.75
    assert vectors.matrix.shape == (7, 3)  # "ing", a piece inside a word, is no word: random, not counted
    assert 0 < np.abs(vectors.matrix[5]).sum() < 100  # the uncovered token: random at the vectors' scale


def test_word2vec_header_and_exact_case_first(tmp_path):
    path = tmp_path / "w2v.vec"
    path.write_text("3 2\nGood 9 9\ngood 1 1\nfilm 2 2\n")
    vectors = load_word_vectors(path, VOCAB, 2, specials=SPECIALS)
    assert np.array_equal(vectors.matrix[2], [1, 1])  # "good" itself, not "Good"


def test_a_dimension_the_recipe_does_not_have_is_a_clear_error(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("good 1 2 3\n")
    with pytest.raises(ConfigError, match="has 3-dimensional vectors but model.embed_dim is 128; "
                                          "set model.embed_dim=3"):
        load_word_vectors(path, VOCAB, 128, specials=SPECIALS)
    (tmp_path / "header.vec").write_text("1 50\ngood " + " ".join(["0"] * 50) + "\n")
    with pytest.raises(ConfigError, match="50-dimensional"):
        load_word_vectors(tmp_path / "header.vec", VOCAB, 3, specials=SPECIALS)


def test_malformed_vector_files_name_the_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("good 1 2 3\nfilm 1 2\n")
    with pytest.raises(DataError, match=r"bad.txt:2: 2 numbers, expected 3"):
        load_word_vectors(path, VOCAB, 3, specials=SPECIALS)
    path.write_text("good 1 2 3\nfilm 1 x 3\n")
    with pytest.raises(DataError, match=r"bad.txt:2: a vector entry is not a number"):
        load_word_vectors(path, VOCAB, 3, specials=SPECIALS)
    path.write_bytes(b"good 1 2 3\n\xff\xfe 1 2 3\n")
    with pytest.raises(DataError, match=r"bad.txt:2: not UTF-8 text"):
        load_word_vectors(path, VOCAB, 3, specials=SPECIALS)
    with pytest.raises(ConfigError, match="no such file"):
        load_word_vectors(tmp_path / "missing.txt", VOCAB, 3, specials=SPECIALS)


def test_frozen_embedding_and_initial_values_reach_the_stage():
    from pipelines import apps
    from pipelines.engine.worker import init_named

    recipe = recipe_from_dict({"model": {"embed_dim": 4, "hidden_size": 8, "pretrained_embeddings": "v.txt",
                                         "freeze_embeddings": True}})
    app = apps.app_for(recipe)
    model = app.build(recipe.model, {"vocab_size": 6, "num_labels": 2})
    weight = torch.arange(24, dtype=torch.float32).reshape(6, 4)
    init_named(model, {"layers.0.embed.weight": weight})
    assert torch.equal(model.layers["0"].embed.weight, weight)
    assert not model.layers["0"].embed.weight.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("layers.0."))
    with pytest.raises(RuntimeError, match=r"initial value of shape \(2, 4\), the model's is \(6, 4\)"):
        init_named(model, {"layers.0.embed.weight": weight[:2]})


# ----------------------------------------------------------------------------- the recipes' data

def test_sst2_recipe_reads_the_treebank_as_the_published_phrase_set():
    """recipes/sst2.yaml on ../shared/data/sst2 (skipped where it is absent): 77,195
    distinct non-neutral phrases, and the sentences (roots) are stsa.binary.train's."""
    from conftest import ROOT, SHARED_DATA
    from pipelines.config import load_recipe

    recipe = load_recipe(ROOT / "recipes" / "sst2.yaml", [f"data.root={SHARED_DATA / 'sst2'}"])
    path = SHARED_DATA / "sst2" / recipe.data.train
    if not path.exists():
        pytest.skip("shared/data/sst2 is not here")
    out = parse_file(path.read_bytes(), str(path), recipe.data.format, recipe.data)
    assert len(out) == 77195 and not any(r["error"] for r in out)
    assert {r["label"] for r in out} == {"0", "1"}
    sentences = {line.split(" ", 1)[1].strip() for line in (path.parent.parent / "stsa.binary.train").open()}
    roots = {r["text"] for r in out if r["text"] in sentences}
    assert len(roots) >= 6900  # all but a few sentences whose "2 1/2" the sentence file spells with a no-break space
    sentence_only = load_recipe(ROOT / "recipes" / "sst2.yaml",
                                ["data.train=stsa.binary.train", "data.format=labeled-lines", "data.valid_format="])
    assert sentence_only.data.valid_format == "" and sentence_only.data.format == "labeled-lines"
