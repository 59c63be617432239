"""ROUGE-1/2/L (rouge-score F1 with stemming, x100): hand-computed pairs, tokenization,
the mean over several references against the best one, and the input checks. No Ray."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipelines.scoring.rouge import _scorer, example_rouge, rouge_scores

HYP = "the cat sat on the mat"


def test_hand_computed_pair():
    # 6 tokens each, 5 shared unigrams: P = R = 5/6. Bigrams: the cat, cat sat, sat on,
    # on the, the mat against the cat, cat was, was on, on the, the mat: 3 of 5 shared.
    # LCS "the cat on the mat" = 5 of 6.
    scores = rouge_scores([HYP], ["the cat was on the mat"])
    assert scores == {"rouge1": 83.33, "rouge2": 60.0, "rougeL": 83.33, "examples": 1, "references_per_example": 1}


def test_each_rouge_type_measures_its_own_thing():
    # Same bag of words (rouge1 100); bigrams the cat, sat on, on the, the mat of 5 shared
    # (80); longest common subsequence "the sat on the", 4 of 6 (66.67).
    assert example_rouge(HYP, ["the mat sat on the cat"]) == {"rouge1": 100.0, "rouge2": 80.0, "rougeL": 66.67}


def test_identical_and_disjoint():
    text = "#Person1# asks #Person2# to book a table for two at seven."
    assert example_rouge(text, [text]) == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    assert example_rouge("red green blue", ["one two three"]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_stemming_is_on():
    # Porter stemming: cats -> cat, running / runs -> run (unstemmed, nothing would match).
    assert example_rouge("cats running", ["cat runs"]) == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}


def test_case_and_punctuation_do_not_count():
    # rouge-score lowercases and turns every non-[a-z0-9] run into a space: "#Person1#" is
    # the word "person1".
    assert example_rouge("#Person1# left.", ["#person1# left"]) == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    assert _scorer()._tokenizer.tokenize("#Person2#: Hi, I'm Bob!") == ["person2", "hi", "i", "m", "bob"]


def test_empty_hypothesis_scores_zero():
    zero = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert example_rouge("", [HYP]) == zero
    assert example_rouge(" ... !", [HYP]) == zero  # no [a-z0-9]: no tokens
    assert example_rouge("", [""]) == zero  # empty against empty is 0 too, not 100
    # It still counts in the corpus mean.
    scores = rouge_scores([HYP, ""], [HYP, HYP])
    assert (scores["rouge1"], scores["rouge2"], scores["rougeL"], scores["examples"]) == (50.0, 50.0, 50.0, 2)


def test_corpus_score_is_the_mean_over_examples():
    # Per example: 83.33.../60/83.33... and 0; the mean is rounded once, at the end.
    scores = rouge_scores([HYP, "red green"], ["the cat was on the mat", "blue"])
    assert (scores["rouge1"], scores["rouge2"], scores["rougeL"]) == (41.67, 30.0, 41.67)


def test_several_references_mean_and_max():
    refs = [HYP, "the cat was on the mat"]  # 100/100/100 and 83.33/60/83.33
    assert example_rouge(HYP, refs) == {"rouge1": 91.67, "rouge2": 80.0, "rougeL": 91.67}
    # Another example, first, with one reference (a plain string), scoring 0.
    scores = rouge_scores(["red green", HYP], ["blue", refs])
    assert scores == {
        "rouge1": 45.83, "rouge2": 40.0, "rougeL": 45.83,  # (91.67 + 0) / 2, (80 + 0) / 2
        "rouge1_max": 50.0, "rouge2_max": 50.0, "rougeL_max": 50.0,  # (100 + 0) / 2
        "examples": 2, "references_per_example": 2,
    }


def test_single_reference_lists_give_no_max_figures():
    scores = rouge_scores([HYP, HYP], [[HYP], HYP])
    assert not any(key.endswith("_max") for key in scores)
    assert scores["rouge1"] == 100.0 and scores["references_per_example"] == 1


def test_input_errors():
    with pytest.raises(ValueError, match="2 hypotheses for 1"):
        rouge_scores([HYP, HYP], [HYP])
    with pytest.raises(ValueError, match="example 1 has no references"):
        rouge_scores([HYP, HYP], [[HYP], []])
    with pytest.raises(ValueError, match="no references"):
        example_rouge(HYP, [])
    with pytest.raises(TypeError):
        rouge_scores(HYP, HYP)  # a bare string is not one example per character
    assert rouge_scores([], []) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0, "examples": 0,
                                    "references_per_example": 0}


def test_scorer_built_once():
    assert _scorer() is _scorer()
    assert sorted(_scorer().rouge_types) == ["rouge1", "rouge2", "rougeL"]


def test_needs_no_nltk_data(tmp_path):
    # The stemmer is pure code: with every NLTK data path empty, scoring still works.
    code = (
        "import nltk; nltk.data.path[:] = []\n"
        "from pipelines.scoring.rouge import example_rouge\n"
        "print(example_rouge('cats running', ['cat runs'])['rouge1'])\n"
    )
    env = {"NLTK_DATA": str(tmp_path), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "100.0"
