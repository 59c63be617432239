"""Ray Data side: sources in every format, bad-record policy, bucketing on a Dataset."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from pipelines.apps.text_classify.data import prepare_text_classification
from pipelines.config import BatchingConfig, DataConfig, recipe_from_dict
from pipelines.errors import DataError
from pipelines.media.bucketing import bucket, padding_stats
from pipelines.media.sources import check_records, read_split

pytestmark = pytest.mark.ray

ROWS = [("positive", "a truly good film"), ("negative", "the plot was dull"), ("positive", "not bad at all")]


def write_all_formats(root):
    (root / "lines.txt").write_text("".join(f"{label} {t}\n" for label, t in ROWS))
    (root / "data.csv").write_text("text,label\n" + "".join(f'"{t}",{label}\n' for label, t in ROWS))
    (root / "data.tsv").write_text("label\ttext\n" + "".join(f"{label}\t{t}\n" for label, t in ROWS))
    (root / "data.jsonl").write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for label, t in ROWS))
    pq.write_table(pa.table({"text": [t for _, t in ROWS], "label": [label for label, _ in ROWS]}),
                   root / "data.parquet")
    import datasets

    hf = datasets.Dataset.from_dict({"text": [t for _, t in ROWS], "label": [label for label, _ in ROWS]})
    hf.save_to_disk(str(root / "hf"))


@pytest.mark.parametrize("name", ["lines.txt", "data.csv", "data.tsv", "data.jsonl", "data.parquet", "hf"])
def test_every_format_reads_the_same_records(ray_head, tmp_path, name):
    write_all_formats(tmp_path)
    ds = read_split(DataConfig(root=str(tmp_path), train=name), "train")
    checked = check_records(ds, "error", "train")
    got = sorted((r["label"], r["text"]) for r in checked.dataset.take_all())
    assert got == sorted(ROWS)


def test_bad_record_stops_with_file_and_line(ray_head, tmp_path):
    (tmp_path / "train.txt").write_bytes(b"1 good\n0 bad\n1\n0 \xff\xfe\n")
    ds = read_split(DataConfig(root=str(tmp_path)), "train")
    with pytest.raises(DataError, match=r"bad record at .*train.txt:3: empty text \(set data.on_bad_record=skip"):
        check_records(ds, "error", "train")
    checked = check_records(read_split(DataConfig(root=str(tmp_path)), "train"), "skip", "train")
    assert checked.rows == 2 and checked.skipped == 2
    assert any("train.txt:4: not valid UTF-8" in e for e in checked.skipped_examples)


def test_missing_file_is_named(ray_head, tmp_path):
    with pytest.raises(DataError, match=r"data.train: file not found: .*nothere.txt"):
        read_split(DataConfig(root=str(tmp_path), train="nothere.txt"), "train")


def featurized_rows(n: int, seed: int = 0) -> ray.data.Dataset:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 40, size=n)
    return ray.data.from_items([
        {"ids": rng.integers(4, 100, size=int(k)).astype(np.int32), "length": int(k), "label": i % 2, "index": i}
        for i, k in enumerate(lengths)
    ], override_num_blocks=4)  # from_items' default of ~200 blocks makes the shuffles crawl


def test_bucketing_on_ray_data_covers_every_example_once_under_budget(ray_head):
    config = BatchingConfig(max_tokens=200, max_batch_size=16, pool_size=128)
    batches = bucket(featurized_rows(700), config, seed=3)
    seen = []
    for row in batches.iter_rows():
        tokens, lengths = row["tokens"], row["lengths"]
        assert tokens.shape[0] * tokens.shape[1] <= 200 and tokens.shape[0] <= 16
        assert tokens.shape[1] == lengths.max()
        for r, n in enumerate(lengths):
            assert (tokens[r, :n] > 0).all() and (tokens[r, n:] == 0).all()
        seen.extend(row["index"].tolist())
    assert sorted(seen) == list(range(700))
    stats = padding_stats(batches)
    assert stats.examples == 700 and stats.padding_fraction < 0.1
    unsorted_config = BatchingConfig(max_tokens=200, max_batch_size=16, pool_size=128, sort=False)
    unsorted = padding_stats(bucket(featurized_rows(700), unsorted_config, seed=3))
    assert unsorted.padding_fraction > 2 * stats.padding_fraction


def test_bucketing_is_deterministic_for_a_seed(ray_head):
    config = BatchingConfig(max_tokens=200, max_batch_size=16, pool_size=128)
    first = [r["index"].tolist() for r in bucket(featurized_rows(300), config, seed=5).iter_rows()]
    again = [r["index"].tolist() for r in bucket(featurized_rows(300), config, seed=5).iter_rows()]
    assert first == again


def test_prepare_text_classification(ray_head, sentiment_dir):
    recipe = recipe_from_dict({
        "data": {"root": str(sentiment_dir), "max_length": 32},
        "tokenizer": {"vocab_size": 200},
        "batching": {"max_tokens": 256},
    })
    data = prepare_text_classification(recipe)
    assert data.labels == ["negative", "positive"]
    assert data.report["train_examples"] == 400 and data.report["valid_examples"] == 100
    assert data.train_stats.examples == 400
    assert 0 <= data.report["padding_fraction"] < 0.1


def test_unseen_validation_label_is_an_error(ray_head, tmp_path):
    (tmp_path / "train.txt").write_text("a one two\nb three four\n")
    (tmp_path / "valid.txt").write_text("a one\nc five\n")
    recipe = recipe_from_dict({"data": {"root": str(tmp_path), "max_length": 8},
                               "tokenizer": {"vocab_size": 20, "min_frequency": 1}})
    with pytest.raises(Exception) as info:
        prepare_text_classification(recipe)
    from pipelines.errors import user_error

    assert "valid.txt:2: label 'c' was not seen in training" in str(user_error(info.value))
