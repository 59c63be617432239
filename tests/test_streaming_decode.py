"""Streaming greedy generation (``GreedySearch.steps``, ``pipelines.inference.streaming``) on scripted
models and the tiny untrained checkpoints, no Ray: the stream carries exactly the greedy
output (text, score, tokens), one token item per output token, and runs one decoder step
per ``next``."""

from __future__ import annotations

import random
from collections import defaultdict
from functools import partial

import numpy as np
import pytest
import torch

from models.decoding import GreedySearch, generate
from models.seq2seq import BOS_ID, EOS_ID, Seq2Seq
from pipelines.apps.translate.predictor import Translator
from pipelines.checkpoint import load_inference
from pipelines.inference.streaming import TextDeltas
from pipelines.media.tokenization import decode
from test_decoding import A, B, BigramModel, random_model, random_sources

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run faster on one thread

SOURCES = [  # not sorted by length, so the passes reorder them
    "eight thousand, eight hundred and eighty-eight",
    "five",
    "three hundred and forty-two",
    "seventy-seven",
    "one thousand, two hundred and thirty-four",
]


def streamed(items) -> dict[int, dict]:
    """Per input index, in index order: its token ids, deltas and final item, checking the stream's
    grammar on the way: token items, then exactly one final item, nothing after it."""
    out: dict[int, dict] = defaultdict(lambda: {"tokens": [], "deltas": [], "final": None})
    for item in items:
        got = out[item["index"]]
        assert got["final"] is None, f"an item for input {item['index']} after its final one: {item}"
        if item["type"] == "token":
            got["tokens"].append(item["token"])
            got["deltas"].append(item["delta"])
        else:
            assert item["type"] == "final" and set(item) == {"type", "index", "delta", "text", "score", "tokens"}
            got["deltas"].append(item["delta"])
            got["final"] = item
    assert all(got["final"] is not None for got in out.values())
    return dict(sorted(out.items()))  # input order (passes run in length order)


def assert_stream_is_the_greedy_output(stream: dict[int, dict], outputs: list[dict], hypotheses) -> None:
    assert sorted(stream) == list(range(len(outputs)))
    for i, (output, (best,)) in enumerate(zip(outputs, hypotheses)):
        got = stream[i]
        assert "".join(got["deltas"]) == got["final"]["text"] == output["text"]
        assert got["final"]["score"] == pytest.approx(output["score"], abs=1e-5)
        assert got["tokens"] == got["final"]["tokens"] == best.tokens


def count_decode_steps(monkeypatch) -> list[None]:
    """A list that grows by one per ``Seq2Seq.decode_step`` call from now on."""
    calls: list[None] = []
    original = Seq2Seq.decode_step

    def counted(model, *args, **kwargs):
        calls.append(None)
        return original(model, *args, **kwargs)

    monkeypatch.setattr(Seq2Seq, "decode_step", counted)
    return calls


# -- models.decoding: GreedySearch.steps ---------------------------------------------------


def test_steps_are_the_greedy_search():
    model = random_model(cell="gru")
    src, lengths = random_sources()
    search = GreedySearch(alpha=0.6, max_length=12)
    steps = list(search.steps(model, model.encode(src, lengths), lengths))
    found = search.search(model, src, lengths)
    for row, (hyp,) in enumerate(found):
        ran = [s for s in steps if bool(s.running[row])]
        assert [int(s.tokens[row]) for s in ran] == hyp.tokens + [EOS_ID]
        assert [bool(s.finished[row]) for s in ran] == [False] * len(hyp.tokens) + [True]
        assert float(ran[-1].scores[row]) == hyp.score
    assert generate(model, src, lengths, max_length=12) == found


def test_steps_stop_at_eos_per_row_and_at_the_source_and_hard_length_limits():
    # Never wants to stop: rows end only at their limits min(8, int(1.5 * src_len + 1)) = 4, 8, 8.
    model = BigramModel({BOS_ID: {A: -0.1}, A: {A: -0.1}}, default=-5.0)
    src, lengths = torch.ones(3, 6, dtype=torch.int64), torch.tensor([2, 5, 6])
    search = GreedySearch(alpha=0.0, max_length=8, max_length_ratio=1.5, max_length_offset=1)
    steps = list(search.steps(model, model.encode(src, lengths), lengths))
    assert len(steps) == 9  # 8 tokens, then the forced EOS
    assert [s.running.tolist() for s in steps[4:6]] == [[True, True, True], [False, True, True]]
    assert steps[4].finished.tolist() == [True, False, False]
    assert steps[-1].length.tolist() == [5, 9, 9]

    # Says EOS at once: one step, every row finished, nothing before the EOS.
    eager = BigramModel({BOS_ID: {EOS_ID: -0.1, A: -1.0}, A: {B: -0.1}})
    (step,) = GreedySearch(alpha=0.0).steps(eager, eager.encode(src, lengths), lengths)
    assert step.finished.all() and step.scores.tolist() == pytest.approx([-0.1] * 3)


# -- pipelines.inference.streaming.TextDeltas -----------------------------------------------


def test_text_deltas_join_into_the_decoded_text_whatever_the_tokenizer(tiny_translator, tiny_speech_recognizer,
                                                                        tiny_video_captioner):
    from pipelines.apps.speech_to_text.predictor import SpeechRecognizer
    from pipelines.apps.video_caption.predictor import VideoCaptioner

    tokenizers = [Translator(load_inference(tiny_translator)).tokenizers.target,  # BPE: pieces join without spaces
                  SpeechRecognizer(load_inference(tiny_speech_recognizer)).tokenizer,  # word level
                  VideoCaptioner(load_inference(tiny_video_captioner)).tokenizer]
    rng = random.Random(0)
    for tokenizer in tokenizers:
        for _ in range(50):
            ids = [rng.randrange(1, tokenizer.get_vocab_size()) for _ in range(rng.randrange(0, 12))]
            ids = [i for i in ids if i != EOS_ID]
            deltas = TextDeltas(partial(decode, tokenizer))
            sent = "".join(deltas.add(i) for i in ids)
            full, rest = deltas.rest()
            assert (sent, rest) == (full, "") and full == decode(tokenizer, ids)


def test_text_deltas_hold_back_an_unfinished_character():
    # A byte-level decoder shows half a character as U+FFFD until its second byte comes.
    pieces = {1: "a", 2: "\ufffd", 3: "é"}

    def detokenize(tokens):
        text = "".join(pieces[t] for t in tokens)
        return text.replace("\ufffdé", "é")

    deltas = TextDeltas(detokenize)
    assert [deltas.add(t) for t in (1, 2, 3, 1)] == ["a", "", "é", "a"]
    deltas.add(2)
    assert deltas.rest() == ("aéa\ufffd", "\ufffd")


# -- pipelines: Translator.stream, SpeechRecognizer.stream, VideoCaptioner.stream (Decoder.stream)


@pytest.fixture(scope="module")
def translator(tiny_translator) -> Translator:
    # A small budget, so the sources run in several length-sorted passes.
    return Translator(load_inference(tiny_translator), budget=24)


@pytest.mark.parametrize("max_length", [5, 30])
def test_translation_stream_is_the_greedy_translation(translator, max_length):
    stream = streamed(translator.stream(translator.rows(SOURCES), max_length=max_length))
    outputs = translator.predict(SOURCES, beam_size=1, max_length=max_length)
    found = translator.search(translator.rows(SOURCES), beam_size=1, max_length=max_length)
    assert_stream_is_the_greedy_output(stream, outputs, found)
    assert all(len(got["tokens"]) <= max_length for got in stream.values())
    # The case that needs prefix decoding: a BPE piece that joins the previous one.
    assert any(d and not d.startswith(" ") for got in stream.values() for d in got["deltas"][1:]), \
        "expected some subword pieces in the untrained model's output"


def test_translation_stream_keeps_the_source_length_limit(translator):
    ids = translator.rows(SOURCES)
    stream = streamed(translator.stream(ids, max_length=100, max_length_ratio=0.5))
    found = translator.search(ids, beam_size=1, max_length=100, max_length_ratio=0.5)
    assert [stream[i]["tokens"] for i in range(len(ids))] == [h[0].tokens for h in found]
    assert all(len(stream[i]["tokens"]) <= int(0.5 * len(x) + 10) for i, x in enumerate(ids))


def test_an_empty_output_still_ends_with_a_final_item(translator, monkeypatch):
    # max_length 0: EOS is forced at the first step.
    stream = streamed(translator.stream(translator.rows(SOURCES[:2]), max_length=0))
    outputs = translator.predict(SOURCES[:2], beam_size=1, max_length=0)
    assert [(got["tokens"], got["final"]["text"]) for got in stream.values()] == [([], ""), ([], "")]
    assert [got["final"]["score"] for got in stream.values()] == pytest.approx([o["score"] for o in outputs])

    # A model that chooses EOS first, under no length pressure.
    def eos_first(model, prev_tokens, state, memory, src_lengths):
        log_probs, state = original(model, prev_tokens, state, memory, src_lengths)
        return log_probs.index_fill(1, torch.tensor([EOS_ID]), 0.0), state

    original = Seq2Seq.decode_step
    monkeypatch.setattr(Seq2Seq, "decode_step", eos_first)
    (item,) = translator.stream(translator.rows(["five"]), max_length=20)
    assert (item["type"], item["text"], item["delta"], item["tokens"]) == ("final", "", "", [])
    assert item["score"] == translator.predict(["five"], beam_size=1, max_length=20)[0]["score"]


def test_the_stream_is_lazy_one_decoder_step_per_item(translator, monkeypatch):
    calls = count_decode_steps(monkeypatch)
    items = translator.stream(translator.rows(["three hundred and forty-two"]), max_length=12)
    assert len(calls) == 0
    assert next(items)["type"] == "token" and len(calls) == 1
    # One source: each item is one step's (the final one the EOS step's), run when asked for.
    for n, item in enumerate(items, start=2):  # noqa: B007 - item: the last one, checked after the loop
        assert len(calls) == n
    assert item["type"] == "final" and n == len(item["tokens"]) + 1 > 2


def test_bad_limits_are_refused_before_the_stream_starts(translator):
    with pytest.raises(ValueError, match="max_length must be >= 0, got -1"):
        translator.stream(translator.rows(["five"]), max_length=-1)
    assert list(translator.stream([])) == []


def test_speech_recognizer_streams_its_greedy_transcripts(tiny_speech_recognizer, monkeypatch):
    from pipelines.apps.speech_to_text.predictor import SpeechRecognizer

    recognizer = SpeechRecognizer(load_inference(tiny_speech_recognizer))
    rng = np.random.default_rng(0)
    features = [rng.standard_normal((frames, 16)).astype(np.float32) for frames in (40, 64, 24)]
    stream = streamed(recognizer.stream(features, max_length=8))
    outputs = recognizer.run(features, beam_size=1, max_length=8)
    found = recognizer.search(features, beam_size=1, max_length=8)
    assert_stream_is_the_greedy_output(stream, outputs, found)
    monkeypatch.setattr(SpeechRecognizer, "ctc", property(lambda self: True))
    with pytest.raises(ValueError, match="streaming needs an attention decoder; .* model.decoder is ctc"):
        recognizer.stream(features)


def test_video_captioner_streams_its_greedy_captions(tiny_video_captioner):
    from pipelines.apps.video_caption.predictor import VideoCaptioner

    captioner = VideoCaptioner(load_inference(tiny_video_captioner))
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (frames, 16, 16, 3), dtype=np.uint8) for frames in (8, 5, 12)]
    stream = streamed(captioner.stream(clips))
    outputs = captioner.run(clips, beam_size=1)
    assert_stream_is_the_greedy_output(stream, outputs, captioner.search(clips, beam_size=1))
