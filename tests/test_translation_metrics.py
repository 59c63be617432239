"""sacrebleu BLEU/chrF and the Multi30k-style case-insensitive tokenized BLEU. No Ray."""

from __future__ import annotations

import html
import random

import pytest
import sacrebleu

from conftest import SHARED_DATA
from pipelines.scoring.text import tokenize_lc, translation_scores

MULTI30K = SHARED_DATA / "multi30k"
needs_multi30k = pytest.mark.skipif(not (MULTI30K / "tok").is_dir(), reason="shared/data/multi30k is not here")


def test_scores_are_sacrebleu_corpus_scores():
    refs = ["Ein Mann schläft auf einem Sofa.", "Zwei Hunde spielen im Schnee.", "Eine Frau liest."]
    hyps = ["Ein Mann schläft auf dem Sofa.", "zwei hunde spielen im schnee .", "Eine Frau liest ein Buch."]
    scores = translation_scores(hyps, refs)
    assert scores["examples"] == 3
    assert scores["bleu"] == round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2)
    assert scores["chrf"] == round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2)
    assert scores["bleu_tok_lc"] > scores["bleu"]  # the lowercased second line now matches


def test_case_and_tokenization_only_differences_score_100_tok_lc():
    refs = ["A boy sits on a woman's shoulders.", "Two men, one dog."]
    hyps = ["a boy sits on a woman's shoulders .", "two men , one dog ."]
    scores = translation_scores(hyps, refs)
    assert scores["bleu_tok_lc"] == 100.0 and scores["bleu"] < 100.0
    assert translation_scores(refs, refs) == {"bleu": 100.0, "chrf": 100.0, "bleu_tok_lc": 100.0, "examples": 2}


def test_misaligned_lists_are_an_error_and_empty_is_zero():
    with pytest.raises(ValueError, match=r"2 hypotheses for 1 references"):
        translation_scores(["a", "b"], ["a"])
    assert translation_scores([], []) == {"bleu": 0.0, "chrf": 0.0, "bleu_tok_lc": 0.0, "examples": 0}


def _lines(name: str) -> list[str]:
    return (MULTI30K / name).read_text(encoding="utf-8").splitlines()


@needs_multi30k
@pytest.mark.parametrize("lang, agreeing", [("en", 0.97), ("de", 0.99)])
def test_lowercased_13a_tokens_match_the_moses_tok_files(lang, agreeing):
    """The Multi30k literature scores lowercased, normalized, Moses-tokenized text
    (``tok/val.lc.norm.tok.*``); lowercased ``13a`` tokens of the raw file are the same
    tokens on >= 97% (en: 989/1014) and >= 99% (de: 1005/1014) of the lines."""
    raw, tok = _lines(f"val.{lang}"), [html.unescape(t) for t in _lines(f"tok/val.lc.norm.tok.{lang}")]
    same = sum(tokenize_lc(r).split() == t.split() for r, t in zip(raw, tok))
    assert same / len(raw) >= agreeing


def _damage(lines: list[str]) -> list[str]:
    """A poor "system": about 15% of the words dropped and 10% repeated; the last word (with
    the sentence's final period) stays last, as in real output (Moses keeps a period that a
    lowercase word follows, ``sofa. sofa.``, so repeating it would measure that instead)."""
    rng = random.Random(0)
    out = []
    for line in lines:
        *body, last = line.split()
        words = []
        for word in body:
            r = rng.random()
            words += [] if r < 0.15 else [word, word] if r < 0.25 else [word]
        out.append(" ".join(words + [last]))
    return out


@needs_multi30k
@pytest.mark.parametrize("lang", ["en", "de"])
def test_bleu_tok_lc_matches_multi_bleu_on_the_tok_files(lang):
    """``bleu_tok_lc`` on raw text vs ``multi-bleu.perl``-style BLEU (whitespace tokens) of
    Moses-processed hypotheses against the ``tok/`` references. Needs sacremoses (the
    Moses port) to make the literature's side; rayseq itself does not depend on it."""
    sacremoses = pytest.importorskip("sacremoses")
    raw, tok = _lines(f"val.{lang}"), _lines(f"tok/val.lc.norm.tok.{lang}")
    normalize, tokenize = sacremoses.MosesPunctNormalizer(lang=lang), sacremoses.MosesTokenizer(lang=lang)
    hyps = _damage(raw)
    moses = [tokenize.tokenize(normalize.normalize(h.lower()), return_str=True, escape=True) for h in hyps]
    literature = sacrebleu.corpus_bleu(moses, [tok], tokenize="none", force=True).score
    assert abs(translation_scores(hyps, raw)["bleu_tok_lc"] - literature) < 0.1
