"""Parsers, tokenizer and batch planning: pure functions, no Ray."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.config import TokenizerConfig
from pipelines.errors import DataError
from pipelines.media.bucketing import pad_batch, plan_batches
from pipelines.media.sources import parse_delimited, parse_jsonl, parse_labeled_lines, parse_parquet
from pipelines.media.tokenization import encode_batch, train_tokenizer


def errors(records):
    return [(r["origin"], r["error"]) for r in records if r["error"]]


def test_labeled_lines_good_and_bad_records_keep_their_line_numbers():
    data = b"1 a fine film\n0\n1   \n\xff\xfe broken\n0 dull , slow\n"
    records = parse_labeled_lines(data, "f.txt")
    assert len(records) == 5
    assert records[0] == {"text": "a fine film", "label": "1", "origin": "f.txt:1", "error": ""}
    assert errors(records) == [
        ("f.txt:2", "empty text"),
        ("f.txt:3", "empty text"),
        ("f.txt:4", "not valid UTF-8 (byte 0)"),
    ]
    assert records[4]["text"] == "dull , slow"


def test_blank_line_is_a_bad_record_but_final_newline_is_not():
    assert errors(parse_labeled_lines(b"1 a\n\n0 b", "g")) == [("g:2", "empty line")]


def test_csv_and_tsv_columns_and_field_counts():
    data = b'label,text\npositive,"good, really"\nnegative\n,no label\n'
    records = parse_delimited(data, "d.csv", delimiter=",", text_column="text", label_column="label")
    assert records[0]["text"] == "good, really" and records[0]["label"] == "positive"
    assert errors(records) == [("d.csv:3", "expected 2 fields, found 1"), ("d.csv:4", "missing label")]
    tsv = parse_delimited(b"text\tlabel\nhi there\t1\n", "d.tsv", delimiter="\t", text_column="text",
                          label_column="label")
    assert tsv[0]["text"] == "hi there"
    with pytest.raises(DataError, match=r"d.csv:1: header has no column 'text'"):
        parse_delimited(b"sentence,label\nx,1\n", "d.csv", delimiter=",", text_column="text", label_column="label")


def test_jsonl_records():
    lines = [json.dumps({"text": "ok", "label": 1}), "{broken", json.dumps([1, 2]), json.dumps({"text": "x"})]
    records = parse_jsonl("\n".join(lines).encode(), "r.jsonl", text_column="text", label_column="label")
    assert records[0]["label"] == "1"
    assert [e for _, e in errors(records)][0].startswith("not valid JSON")
    assert errors(records)[1:] == [("r.jsonl:3", "expected a JSON object"), ("r.jsonl:4", "missing label")]


def test_parquet_rows(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": ["a b", None], "label": ["x", "y"]}), path)
    records = parse_parquet(path.read_bytes(), str(path), text_column="text", label_column="label")
    assert records[0]["text"] == "a b"
    assert errors(records) == [(f"{path}:row 2", "empty text")]


def test_tokenizer_round_trip_and_reserved_ids():
    texts = ["the movie was not dull", "the plot was brilliant , but the ending was awful"] * 20
    for kind in ("bpe", "wordlevel"):
        tok = train_tokenizer(texts, TokenizerConfig(kind=kind, vocab_size=60, min_frequency=1))
        assert [tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[BOS]", "[EOS]")] == [0, 1, 2, 3]
        ids = tok.encode("The Movie was NOT dull").ids
        assert 0 not in ids
        assert tok.decode(ids) == "the movie was not dull"
    ids, cut = encode_batch(tok, ["the plot was brilliant , but the ending was awful", "the"], max_length=4)
    assert [len(x) for x in ids] == [4, 1] and cut == [True, False]


def test_plan_batches_respects_budget_and_covers_every_example_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 60, size=500)
    for sort in (True, False):
        batches = plan_batches(lengths, max_tokens=256, max_batch_size=32, sort=sort)
        flat = np.concatenate(batches)
        assert sorted(flat.tolist()) == list(range(500))
        for rows in batches:
            assert len(rows) * lengths[rows].max() <= 256
            assert len(rows) <= 32


def test_plan_batches_sorted_pads_less():
    lengths = np.random.default_rng(1).integers(1, 80, size=2000)

    def waste(batches):
        return (sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)
                / sum(len(b) * lengths[b].max() for b in batches))

    assert waste(plan_batches(lengths, max_tokens=1024, max_batch_size=999, sort=True)) < 0.05
    assert waste(plan_batches(lengths, max_tokens=1024, max_batch_size=999, sort=False)) > 0.3


def test_oversized_example_gets_its_own_batch():
    batches = plan_batches(np.array([3, 50, 3]), max_tokens=10, max_batch_size=8, sort=False)
    assert [b.tolist() for b in batches] == [[0], [1], [2]]


def test_pad_batch():
    out = pad_batch([np.array([5, 6, 7]), np.array([8])])
    assert out.tolist() == [[5, 6, 7], [8, 0, 0]] and out.dtype == np.int32
