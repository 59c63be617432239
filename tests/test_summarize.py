"""Summarization without Ray: the pointer-generator's copy distribution and coverage,
incremental decoding = teacher forcing, n-gram blocking, extended ids, the predictor's
length limit, ROUGE wiring and the dialogues generator."""

from __future__ import annotations

import json
import math

import pytest
import torch

from models.config import ModelConfig
from models.decoding import BeamSearch, GreedySearch, generate, repeated_ngram_tokens
from models.pointer import build_pointer, copy_log_probs, copy_loss
from pipelines.apps.summarize.generate import dialogue_record, write_dialogues
from pipelines.apps.summarize.words import Words, detokenize, train_word_tokenizer
from pipelines.config import TokenizerConfig
from pipelines.errors import InputTooLarge

V = 20
CONFIG = ModelConfig(kind="pointer_generator", embed_dim=8, hidden_size=12, num_layers=2, decoder_layers=2,
                     input_feeding=True, coverage=True, coverage_weight=0.5, dropout=0.0)


def model(config: ModelConfig = CONFIG, seed: int = 0):
    return build_pointer(config, vocab_size=V, seed=seed).eval()


SRC = torch.tensor([[5, 6, V, 7, V + 1, 9], [8, V, 9, 0, 0, 0]])
SRC_LENGTHS = torch.tensor([6, 3])
TGT_IN = torch.tensor([[2, 5, V, 7], [2, 9, V, 0]])
TGT_LENGTHS = torch.tensor([4, 3])


def test_copy_distribution_sums_to_one_over_the_extended_vocabulary():
    log_probs, coverage_loss = model()((SRC, TGT_IN), (SRC_LENGTHS, TGT_LENGTHS))
    assert log_probs.shape == (2, 4, V + 2)  # two source words outside the vocabulary in the batch
    probs = log_probs.exp()
    torch.testing.assert_close(probs[0].sum(-1), torch.ones(4))
    torch.testing.assert_close(probs[1, :3].sum(-1), torch.ones(3))  # its 4th step is padding
    assert coverage_loss.shape == (2, 4) and float(coverage_loss[1, 3]) == 0.0
    assert float(coverage_loss[:, 0].abs().max()) == 0.0  # nothing covered before the first step
    assert float(coverage_loss[:, 1:3].min()) > 0.0


def test_copy_mixture_by_hand():
    vocab = torch.tensor([[[0.5, 0.25, 0.25]]])
    p_gen = torch.tensor([[[0.8]]])
    attention = torch.tensor([[[0.5, 0.25, 0.25]]])
    src = torch.tensor([[1, 4, 1]])  # id 4: the second unknown word (3 + 1)
    probs = copy_log_probs(vocab, p_gen, attention, src).exp()[0, 0]
    expected = torch.tensor([0.4, 0.2 + 0.2 * 0.75, 0.2, 0.0, 0.2 * 0.25])
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=0)


def test_a_word_only_the_source_has_is_written_when_the_model_points_at_it():
    m = model()
    generator = m.layers[str(len(m.layers) - 1)]
    with torch.no_grad():  # p_gen -> 0: every output word is copied by attention
        generator.gate.weight.zero_()
        m.layers["4"].gate_input.bias.fill_(-30.0)
    src = torch.tensor([[V, V, V, V, 11]])  # one unknown word four times, one known word
    found = generate(m, src, torch.tensor([5]), beam_size=1, max_length=1, max_length_ratio=10)
    assert found[0][0].tokens == [V]  # 4/5 of any attention lands on it unless peaked on 11
    words = Words(train_word_tokenizer(["hello world"],
                                       TokenizerConfig(kind="wordlevel", vocab_size=50, min_frequency=1)))
    ids, outside = words.source(words.split("hello Zorblat"))
    assert ids == [words.vocab["hello"], words.size] and outside == ["zorblat"]
    assert words.words([words.size, words.vocab["hello"], words.eos, 7], outside) == ["zorblat", "hello"]


def test_decode_step_equals_teacher_forcing_with_coverage():
    m = model()
    log_probs, _ = m((SRC, TGT_IN), (SRC_LENGTHS, TGT_LENGTHS))
    memory, state = m.encode(SRC, SRC_LENGTHS), m.init_decoder_state(2)
    for t in range(3):  # both rows' valid steps
        step, state = m.decode_step(TGT_IN[:, t], state, memory, SRC_LENGTHS)
        torch.testing.assert_close(step, log_probs[:, t], atol=1e-5, rtol=1e-5)
    assert state[-1].shape == (1, 2, 6)  # the coverage took the source's width
    torch.testing.assert_close(state[-1].sum(-1), torch.full((1, 2), 3.0))  # 3 attention rows of mass 1


def test_coverage_changes_attention_and_can_be_switched_off():
    plain = ModelConfig(**{**vars(CONFIG), "coverage": False})
    _, no_loss = model(plain)((SRC, TGT_IN), (SRC_LENGTHS, TGT_LENGTHS))
    assert float(no_loss.abs().sum()) == 0.0
    assert sum(p.numel() for p in model().parameters()) > sum(p.numel() for p in model(plain).parameters())


def test_copy_loss_is_the_extended_likelihood_plus_coverage():
    m = model()
    out = m((SRC, TGT_IN), (SRC_LENGTHS, TGT_LENGTHS))
    targets = torch.tensor([[5, V, 7, 3], [V, 9, 3, 0]])
    log_probs, coverage = out
    expected = -sum(float(log_probs[b, t, targets[b, t]]) for b in range(2) for t in range(4) if targets[b, t])
    expected += float(coverage.sum())
    assert float(copy_loss(out, targets)) == pytest.approx(expected, rel=1e-5)
    smoothed = float(copy_loss(out, targets, 0.1))
    assert smoothed != pytest.approx(float(copy_loss(out, targets)))
    out[0].sum().backward()  # differentiable through the scatter
    assert m.layers["0"].embedding.embed.weight.grad is not None


def test_repeated_ngram_tokens():
    assert repeated_ngram_tokens([[1, 2, 3, 1, 2]], 3) == [(0, 3)]
    assert repeated_ngram_tokens([[1, 2, 3, 1, 2], [4, 4]], 2) == [(0, 3), (1, 4)]
    assert repeated_ngram_tokens([[1, 2]], 3) == []


class Repeater:
    """An incremental decoder that always wants tokens 5 6 5 6 ... (then EOS is unlikely)."""

    def encode(self, src, lengths):
        return torch.zeros(src.size(0), 1, 1)

    def init_decoder_state(self, batch):
        return (torch.zeros(1, batch, 1),)

    def reorder_state(self, state, index):
        return tuple(t.index_select(1, index) for t in state)

    def decode_step(self, prev, state, memory, lengths):
        logits = torch.full((prev.size(0), 10), -5.0)
        logits[:, 5] = torch.where(prev == 5, -1.0, 2.0)
        logits[:, 6] = torch.where(prev == 5, 2.0, -1.0)
        logits[:, 7] = 0.5
        return torch.log_softmax(logits, -1), state


@pytest.mark.parametrize("strategy", [GreedySearch, BeamSearch])
def test_no_repeat_ngram_blocks_repeats(strategy):
    src, lengths = torch.zeros(1, 3, dtype=torch.int64), torch.tensor([3])
    free = strategy(max_length=6, max_length_ratio=10).search(Repeater(), src, lengths)[0][0].tokens
    assert free[:4] == [5, 6, 5, 6]
    blocked = strategy(max_length=6, max_length_ratio=10, no_repeat_ngram=2).search(Repeater(), src, lengths)[0][0]
    pairs = list(zip(blocked.tokens, blocked.tokens[1:]))
    assert len(pairs) == len(set(pairs)) and blocked.tokens[:2] == [5, 6]
    with pytest.raises(ValueError, match="no_repeat_ngram"):
        strategy(no_repeat_ngram=-1)


def test_min_length_holds_the_end_back():
    m = model()
    found = generate(m, SRC, SRC_LENGTHS, beam_size=3, max_length=8, max_length_ratio=10, min_length=6)
    assert all(len(h[0].tokens) >= 6 for h in found)


def test_words_turn_markers_and_detokenize():
    words = Words(train_word_tokenizer(["#Person1#: Hi, Mr. Smith's here."],
                                       TokenizerConfig(kind="wordlevel", min_frequency=1)))
    assert words.split("#Person1#: Hi, Mr. Smith's here.") == [
        "#person1#", ":", "hi", ",", "mr", ".", "smith", "'s", "here", "."]
    assert detokenize(["#person1#", "asks", "#person2#", "for", "$", "5", ".", "she", "agrees", "(", "twice", ")"]) \
        == "#Person1# asks #Person2# for $5. She agrees (twice)"
    src, outside = words.source(["#person1#", "meets", "zora", "and", "zora", "'s", "dog"])
    assert outside == ["meets", "zora", "and", "dog"] and src[2] == src[4] == words.size + 1
    assert words.target(["zora", "barks", "hi"], outside) == [words.size + 1, words.unk, words.vocab["hi"]]


def test_dialogues_generator_needs_copying(tmp_path):
    import random

    record = dialogue_record(random.Random(3))
    assert record["dialogue"].startswith("#Person") and record["summary"]
    write_dialogues(tmp_path, size=200, seed=1)
    train = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    valid = [json.loads(line) for line in (tmp_path / "valid.jsonl").read_text().splitlines()]
    assert len(train) == 200 and len(valid) == 50
    names = lambda rows: {w for r in rows for w in r["summary"].split() if w[0].isupper() and w.isalpha()}  # noqa: E731
    for r in train:  # every capitalised summary word but the weekdays and "Doctor" is in its dialogue
        assert all(w in r["dialogue"] for w in r["summary"].replace(",", " ").replace(".", " ").split()
                   if w[0].isupper() and w not in ("Doctor",))
    unseen = names(valid) - names(train)
    assert len(unseen) > len(names(valid)) / 2  # most validation names never occur in training


class _Loaded:
    def __init__(self, path, max_length):
        from pipelines.config import recipe_from_dict

        self.path, self.device = path, torch.device("cpu")
        self.recipe = recipe_from_dict({"app": "summarize", "data": {"max_length": max_length},
                                        "tokenizer": {"kind": "wordlevel"}, "model": vars(CONFIG)})
        self.model = model()


def test_predictor_refuses_long_texts_unless_cutting(tmp_path):
    from pipelines.apps.summarize.predictor import Summarizer

    tokenizer = train_word_tokenizer(["a b c d e f g"],
                                     TokenizerConfig(kind="wordlevel", vocab_size=V, min_frequency=1))
    (tmp_path / "tokenizer.json").write_text(tokenizer.to_str())
    predictor = Summarizer(_Loaded(tmp_path, 4), budget=1000)
    rows = predictor.rows(["a b c d", "a Zed"])
    assert rows[1].outside == ["zed"]
    with pytest.raises(InputTooLarge, match="input 1: 5 words; this model reads at most 4"):
        predictor.rows(["a", "a b c d e"])
    predictor.refuse_longer = False
    assert len(predictor.rows(["a b c d e"])[0]) == 4
    out = predictor.run(predictor.rows(["a b zed zed"]), beam_size=2, max_length=3, min_length=0)
    assert isinstance(out[0]["text"], str) and math.isfinite(out[0]["score"])


def test_trained_summarizer_copies_names_it_never_saw(tiny_summarizer, dialogues_dir):
    """A summarizer trained on 800 generated dialogues writes the made-up names of
    validation dialogues (absent from training, outside its vocabulary) by copying them."""
    from pipelines.checkpoint import load_predictor

    predictor = load_predictor(tiny_summarizer)
    valid = [json.loads(line) for line in (dialogues_dir / "valid.jsonl").read_text().splitlines()][:40]
    train_text = (dialogues_dir / "train.jsonl").read_text()
    outputs = predictor.run(predictor.rows([r["dialogue"] for r in valid]))
    unseen = copied = 0
    for record, out in zip(valid, outputs):
        name = record["summary"].split()[0]  # every scene's summary starts with a made-up name
        if name not in train_text and name.lower() not in predictor.words.vocab:
            unseen += 1
            copied += name.lower() in out["text"].lower()
    assert unseen >= 20 and copied >= unseen // 2, (unseen, copied, [o["text"] for o in outputs[:5]])


def test_text2text_benchmark_quick_run(tmp_path, torch_threads):
    """``bench/text2text.py --quick``: both applications trained and decoded, figures written.
    One torch thread, as every test process runs: the bench's default 2 spun on a loaded
    machine (114 s in the suite, 12 s alone with one)."""
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT))
    from bench import text2text

    out = tmp_path / "text2text.json"
    assert text2text.main(["--quick", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {r["application"]: r for r in report["results"]}
    assert set(rows) == {"translate", "summarize"}
    for row in rows.values():
        assert row["train"]["tokens_per_s"] > 0 and row["decode"]["sentences_per_s"] > 0
        assert row["train"]["target_tokens_per_s"] < row["train"]["tokens_per_s"]
    assert rows["summarize"]["decode"]["no_repeat_ngram"] == 3 and rows["summarize"]["data"] == "generated"


def test_more_reference_columns_are_read_and_checked():
    from pipelines.media.sources import pair_schema, parse_jsonl

    lines = [{"dialogue": "#Person1#: Hi.", "summary": "A greets.", "summary2": "Someone says hi."},
             {"dialogue": "#Person1#: Bye.", "summary": "A leaves.", "summary2": ""}]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    records = parse_jsonl(data, "test.jsonl", schema=pair_schema("dialogue", "summary", ("summary2",)))
    assert records[0]["reference1"] == "Someone says hi." and records[0]["error"] == ""
    assert records[1]["error"] == "empty reference (summary2)" and records[1]["origin"] == "test.jsonl:2"
    plain = parse_jsonl(data, "test.jsonl", schema=pair_schema("dialogue", "summary"))
    assert "reference1" not in plain[0] and plain[1]["error"] == ""


def test_summaries_write_names_as_their_source_does():
    words = Words(train_word_tokenizer(["hello there"], TokenizerConfig(kind="wordlevel", min_frequency=1)))
    text = "#Person1#: Hello Jimmy, see you in Calgary? Hello.\n#Person2#: Sure, Jimmy. Bye."
    casing = words.casing(text)
    assert casing == {"jimmy": "Jimmy", "calgary": "Calgary"}  # "Hello" only starts sentences
    assert detokenize(["#person1#", "meets", "jimmy", "in", "calgary", ".", "hello"], casing) == \
        "#Person1# meets Jimmy in Calgary. Hello"
