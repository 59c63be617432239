"""Translation data: pair sources, tokenizers, (source, target) bucketing, prepare_translation.

Unit tests first (no Ray); the ``ray``-marked ones share the session's local Ray.
"""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from conftest import SHARED_DATA
from pipelines.apps.translate.data import prepare_translation
from pipelines.apps.translate.generate import number_pair, write_translation
from pipelines.config import DataConfig, TokenizerConfig, apply_overrides, recipe_from_dict
from pipelines.errors import ConfigError, DataError
from pipelines.media.bucketing import bucket_pairs, padding_stats, plan_pair_batches, stream_pairs
from pipelines.media.sources import check_records, pair_schema, parse_delimited, parse_jsonl, parse_parquet, read_pairs
from pipelines.media.tokenization import (
    decode,
    encode_targets,
    load_translation_tokenizers,
    save_translation_tokenizers,
    train_tokenizer,
    train_translation_tokenizers,
)

MULTI30K = SHARED_DATA / "multi30k"
PAIRS = [("a man sleeps .", "ein mann schläft ."), ("two dogs play", "zwei hunde spielen"),
         ("hi , there", "hallo , da")]
SCHEMA = pair_schema()


def errors(records):
    return [(r["origin"], r["error"]) for r in records if r["error"]]


# ------------------------------------------------------------------------------ unit


def test_pair_schema_in_delimited_jsonl_and_parquet(tmp_path):
    csv = b'source,target\n"hi, you","hallo, du"\nonly source,\n,nur ziel\n'
    records = parse_delimited(csv, "p.csv", delimiter=",", schema=SCHEMA)
    assert records[0] == {"source": "hi, you", "target": "hallo, du", "origin": "p.csv:2", "error": ""}
    assert errors(records) == [("p.csv:3", "empty target"), ("p.csv:4", "empty source")]
    with pytest.raises(DataError, match=r"p.tsv:1: header has no column 'target'"):
        parse_delimited(b"source\tde\nx\ty\n", "p.tsv", delimiter="\t", schema=SCHEMA)
    lines = [json.dumps({"en": "a", "de": "b"}), b"\xff".decode("latin-1")]
    custom = pair_schema("en", "de")
    jsonl = parse_jsonl("\n".join(lines).encode("utf-8"), "p.jsonl", schema=custom)
    assert jsonl[0]["source"] == "a" and jsonl[0]["target"] == "b"
    assert errors(jsonl)[0][0] == "p.jsonl:2"
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"source": ["x y", "z"], "target": ["u v", None]}), path)
    rows = parse_parquet(path.read_bytes(), str(path), schema=SCHEMA)
    assert rows[0]["target"] == "u v" and errors(rows) == [(f"{path}:row 2", "empty target")]


def test_target_ids_get_bos_and_eos_and_decode_stops_at_eos():
    tok = train_tokenizer(["ein mann schläft", "zwei hunde spielen"] * 10,
                          TokenizerConfig(vocab_size=60, min_frequency=1, lowercase=False))
    ids, cut = encode_targets(tok, ["ein mann schläft", "zwei hunde spielen"], max_length=2)
    assert all(x[0] == 2 and x[-1] == 3 for x in ids)  # [BOS] ... [EOS]
    assert cut == [True, True] and all(len(x) == 4 for x in ids)
    full, _ = encode_targets(tok, ["ein mann schläft"], max_length=50)
    y = full[0][1:-1]
    assert decode(tok, full[0]) == "ein mann schläft"  # BOS dropped, stops at EOS
    assert decode(tok, np.array(y + [3, 0, 0, 17])) == "ein mann schläft"  # what follows EOS is ignored
    empty, _ = encode_targets(tok, [""], max_length=5)
    assert empty == [[2, 3]]  # tgt_length 1: the decoder learns to stop


@pytest.mark.parametrize("kind", ["bpe", "wordlevel"])
def test_a_joint_tokenizer_read_in_one_pass_is_the_same(kind):
    """``both`` (each batch's sources, then its targets: one pass over the split) trains
    the tokenizer that all sources, then all targets, train."""
    pairs = [number_pair(n) for n in range(2, 400)]
    sources, targets = [s for s, _ in pairs], [t for _, t in pairs]

    def interleaved():
        for start in range(0, len(pairs), 64):
            yield from sources[start:start + 64]
            yield from targets[start:start + 64]

    config = TokenizerConfig(kind=kind, vocab_size=200, min_frequency=2, lowercase=False, joint=True)
    one_pass = train_translation_tokenizers(lambda: iter(()), lambda: iter(()), config, both=interleaved)
    two_passes = train_translation_tokenizers(lambda: iter(sources), lambda: iter(targets), config)
    assert one_pass.source.to_str() == two_passes.source.to_str()


@pytest.mark.parametrize("joint", [True, False])
def test_translation_tokenizers_save_and_load(tmp_path, joint):
    sources = ["three hundred and one", "forty-two", "seven"] * 5
    targets = ["dreihunderteins", "zweiundvierzig", "sieben"] * 5
    config = TokenizerConfig(vocab_size=40, min_frequency=1, lowercase=False, joint=joint)
    tokenizers = train_translation_tokenizers(lambda: iter(sources), lambda: iter(targets), config)
    assert tokenizers.joint is joint and (tokenizers.source is tokenizers.target) is joint
    for tok in (tokenizers.source, tokenizers.target):
        assert [tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[BOS]", "[EOS]")] == [0, 1, 2, 3]
    files = save_translation_tokenizers(tokenizers, tmp_path / "ckpt")
    expected = ["tokenizer.json"] if joint else ["source_tokenizer.json", "target_tokenizer.json"]
    assert [f.name for f in files] == expected
    loaded = load_translation_tokenizers(tmp_path / "ckpt")
    assert loaded.joint is joint
    assert loaded.target.encode("zweiundvierzig").ids == tokenizers.target.encode("zweiundvierzig").ids
    assert decode(loaded.source, loaded.source.encode("forty-two").ids) == "forty-two"
    with pytest.raises(DataError, match=r"no translation tokenizer \(missing tokenizer.json, or source_tokenizer.json"):
        load_translation_tokenizers(tmp_path)
    if not joint:  # half a pair is named, not silently replaced by nothing
        (tmp_path / "ckpt" / "target_tokenizer.json").unlink()
        with pytest.raises(DataError, match=r"no translation tokenizer \(missing target_tokenizer.json\)"):
            load_translation_tokenizers(tmp_path / "ckpt")


def test_plan_pair_batches_covers_every_pair_once_under_the_budget():
    rng = np.random.default_rng(0)
    src = rng.integers(1, 50, size=600)
    tgt = np.clip(src + rng.integers(-5, 10, size=600), 1, None)  # correlated, as translations are
    for sort in (True, False):
        batches = plan_pair_batches(src, tgt, max_tokens=256, max_batch_size=32, sort=sort)
        assert sorted(np.concatenate(batches).tolist()) == list(range(600))
        for rows in batches:
            assert len(rows) * max(src[rows].max(), tgt[rows].max()) <= 256 and len(rows) <= 32

    def waste(batches):
        slots = sum(len(b) * (src[b].max() + tgt[b].max()) for b in batches)
        return 1 - (src.sum() + tgt.sum()) / slots

    sorted_batches = plan_pair_batches(src, tgt, max_tokens=1024, max_batch_size=999, sort=True)
    unsorted_batches = plan_pair_batches(src, tgt, max_tokens=1024, max_batch_size=999, sort=False)
    assert waste(sorted_batches) < 0.15 < 0.3 < waste(unsorted_batches)
    order = np.concatenate(sorted_batches)
    keys = list(zip(np.maximum(src, tgt)[order], src[order], tgt[order]))
    assert keys == sorted(keys)  # by the budget's cost, then source, then target length


def test_translation_generator_is_seeded_aligned_and_disjoint(tmp_path):
    assert number_pair(342) == ("three hundred and forty-two", "dreihundertzweiundvierzig")
    a = write_translation(tmp_path / "a", size=200, seed=3)
    b = write_translation(tmp_path / "b", size=200, seed=3)
    for name in ("train.en", "train.de", "valid.en", "valid.de"):
        assert (a / name).read_text() == (b / name).read_text()
    read = lambda name: (a / name).read_text().splitlines()  # noqa: E731
    train, valid = read("train.en"), read("valid.en")
    assert len(train) == 200 and len(read("train.de")) == 200 and len(valid) == len(read("valid.de")) == 50
    german = dict(number_pair(n) for n in range(2, 10_000))  # English words -> German words
    numbers: dict[str, set[str]] = {"train": set(), "valid": set()}
    for split in numbers:
        for en, de in zip(read(f"{split}.en"), read(f"{split}.de")):
            number = " ".join(en.split(" ")[2:-1])  # "We have <number> apples."
            assert de.split(" ")[2] == german[number] and de[0].isupper() and de.endswith(".")
            numbers[split].add(number)
    assert not numbers["train"] & numbers["valid"]  # validation numbers are new
    with pytest.raises(ValueError, match=r"size 9000 \+ validation 2250 exceeds the 9998 numbers 2..9999"):
        write_translation(tmp_path / "c", size=9000, seed=0)


def test_translation_config_keys_are_validated_and_overridable():
    raw = apply_overrides({}, [  # a translation recipe: only its application reads data.format=parallel
        "model.kind=seq2seq", "data.format=parallel", "data.source_lang=en", "data.target_lang=de",
        "data.max_target_length=40", "data.source_column=en", "data.target_column=de", "tokenizer.joint=false",
    ])
    recipe = recipe_from_dict(raw)
    assert recipe.data.target_max_length == 40 and recipe.tokenizer.joint is False
    assert recipe_from_dict({"data": {"max_length": 20}}).data.target_max_length == 20  # 0: max_length
    with pytest.raises(ConfigError, match=r"unknown key 'data.source_langs'"):
        apply_overrides({}, ["data.source_langs=en"])
    with pytest.raises(ConfigError, match=r"data.format=parallel needs data.source_lang and data.target_lang"):
        recipe_from_dict({"data": {"format": "parallel", "source_lang": "en"}})
    with pytest.raises(ConfigError, match=r"data.source_lang and data.target_lang are both 'en'"):
        DataConfig(source_lang="en", target_lang="en")
    with pytest.raises(ConfigError, match=r"data.target_lang: 'de/x' is not a language code"):
        DataConfig(source_lang="en", target_lang="de/x")
    with pytest.raises(ConfigError, match=r"data.max_target_length must be >= 0"):
        DataConfig(max_target_length=-1)
    with pytest.raises(ConfigError, match=r"tokenizer.joint: expected bool"):
        recipe_from_dict({"tokenizer": {"joint": "yes"}})
    with pytest.raises(ConfigError, match=r"data.generate.size: translation draws distinct numbers from 2..9999"):
        recipe_from_dict({"data": {"generate": {"name": "translation", "size": 9000}}})


@pytest.mark.skipif(not (MULTI30K / "train.de").exists(), reason="shared/data/multi30k is not here")
def test_metaspace_round_trip_on_multi30k():
    """Detokenized output is readable text: every val line comes back as its NFKC form
    (casing, punctuation and German quotes kept; NFKC turns the one no-break space into a space)."""
    texts = [line for lang in ("en", "de") for line in (MULTI30K / f"train.{lang}").read_text().splitlines()]
    tok = train_tokenizer(texts, TokenizerConfig(vocab_size=8000, lowercase=False))
    for lang in ("en", "de"):
        for line in (MULTI30K / f"val.{lang}").read_text().splitlines():
            ids = tok.encode(line, add_special_tokens=False).ids
            assert decode(tok, ids) == unicodedata.normalize("NFKC", line)


# ------------------------------------------------------------------------------ Ray


def write_parallel(root, prefix, sources, targets):
    (root / f"{prefix}.en").write_text("".join(s + "\n" for s in sources))
    (root / f"{prefix}.de").write_text("".join(t + "\n" for t in targets))


def parallel_config(root, **kw) -> DataConfig:
    return DataConfig(root=str(root), train="train", valid="valid", source_lang="en", target_lang="de", **kw)


@pytest.mark.ray
def test_parallel_lines_stay_aligned_across_ray_blocks(ray_head, tmp_path):
    """Line i of the source is paired with line i of the target, even when Ray Data cuts the
    two sides into differently sized blocks (German lines are longer than English ones)."""
    n = 1000
    write_parallel(tmp_path, "train", [f"s{i} " + "x" * (i % 7) for i in range(1, n + 1)],
                   [f"t{i} " + "yy" * (i % 11) for i in range(1, n + 1)])
    context = ray.data.DataContext.get_current()
    saved = context.target_max_block_size
    context.target_max_block_size = 8 * 1024  # many small blocks, laid out differently per side
    try:
        from pipelines.media.sources import _side_lines

        layouts = [_side_lines(tmp_path / f"train.{lang}", side).materialize().num_blocks()
                   for lang, side in (("en", "source"), ("de", "target"))]
        checked = check_records(read_pairs(parallel_config(tmp_path), "train"), "error", "train")
    finally:
        context.target_max_block_size = saved
    assert min(layouts) > 1 and layouts[0] != layouts[1]
    records = checked.dataset.take_all()
    assert len(records) == n
    for i, r in enumerate(records, start=1):
        assert r["source"].split()[0] == f"s{i}" and r["target"].split()[0] == f"t{i}"
        assert r["origin"] == f"{tmp_path}/train.{{en,de}}:{i}"


@pytest.mark.ray
def test_parallel_files_of_different_lengths_name_both(ray_head, tmp_path):
    write_parallel(tmp_path, "train", ["a", "b", "c"], ["x", "y"])
    for policy in ("error", "skip"):  # no policy can pair them
        with pytest.raises(DataError, match=(
            rf"data.train: parallel files differ in length: {tmp_path}/train.en has 3 lines, "
            rf"{tmp_path}/train.de has 2 lines"
        )):
            check_records(read_pairs(parallel_config(tmp_path, on_bad_record=policy), "train"), policy, "train")
    with pytest.raises(DataError, match=r"data.valid: file not found: .*/valid nor .*/valid.en"):
        read_pairs(parallel_config(tmp_path), "valid")


@pytest.mark.ray
def test_bad_pairs_stop_with_file_and_line_or_are_counted(ray_head, tmp_path):
    (tmp_path / "train.en").write_bytes(b"one\ntwo\n\xff\xfe three\nfour\n")
    (tmp_path / "train.de").write_bytes(b"eins\n\ndrei\nvier\n")
    with pytest.raises(DataError, match=(
        r"bad record at .*train.\{en,de\}:2: empty target \(train.de\) \(set data.on_bad_record=skip"
    )):
        check_records(read_pairs(parallel_config(tmp_path), "train"), "error", "train")
    checked = check_records(read_pairs(parallel_config(tmp_path), "train"), "skip", "train")
    assert checked.rows == 2 and checked.skipped == 2
    assert any(e.endswith("train.{en,de}:3: not valid UTF-8 (byte 0) in train.en") for e in checked.skipped_examples)
    assert [r["source"] for r in checked.dataset.take_all()] == ["one", "four"]


def write_pair_formats(root):
    sources, targets = [s for s, _ in PAIRS], [t for _, t in PAIRS]
    write_parallel(root, "par", sources, targets)
    (root / "d.tsv").write_text("target\tsource\n" + "".join(f"{t}\t{s}\n" for s, t in PAIRS))
    (root / "d.csv").write_text("source,target\n" + "".join(f'"{s}","{t}"\n' for s, t in PAIRS))
    (root / "d.jsonl").write_text("".join(json.dumps({"source": s, "target": t}) + "\n" for s, t in PAIRS))
    pq.write_table(pa.table({"source": sources, "target": targets}), root / "d.parquet")
    import datasets

    datasets.Dataset.from_dict({"source": sources, "target": targets}).save_to_disk(str(root / "hf"))
    datasets.Dataset.from_dict({"en": sources, "de": targets}).save_to_disk(str(root / "hf_langs"))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"translation": [{"en": s, "de": t} for s, t in PAIRS]})}).save_to_disk(str(root / "hf_wmt"))


@pytest.mark.ray
@pytest.mark.parametrize("name", ["par", "d.tsv", "d.csv", "d.jsonl", "d.parquet", "hf", "hf_langs", "hf_wmt"])
def test_every_pair_format_reads_the_same_pairs(ray_head, tmp_path, name):
    write_pair_formats(tmp_path)
    config = DataConfig(root=str(tmp_path), train=name, source_lang="en", target_lang="de")
    checked = check_records(read_pairs(config, "train"), "error", "train")
    assert [(r["source"], r["target"]) for r in checked.dataset.take_all()] == PAIRS


def featurized_pairs(n: int, seed: int = 0) -> ray.data.Dataset:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        s, y = int(rng.integers(1, 30)), int(rng.integers(0, 30))
        rows.append({
            "src_ids": rng.integers(4, 100, size=s).astype(np.int32),
            "tgt_ids": np.array([2, *rng.integers(4, 100, size=y), 3], dtype=np.int32),
            "src_length": s, "tgt_length": y + 1, "index": i,
        })
    # a few blocks, as featurize's output has (from_items would make 200, and the
    # all-to-all shuffle over them costs a minute on two cores)
    return ray.data.from_items(rows, override_num_blocks=4)


@pytest.mark.ray
def test_bucket_pairs_every_pair_once_under_budget_with_shifted_targets(ray_head):
    from pipelines.config import BatchingConfig

    config = BatchingConfig(max_tokens=240, max_batch_size=16, pool_size=128)
    batches = bucket_pairs(featurized_pairs(500), config, seed=3)
    seen = []
    for row in batches.iter_rows():
        src, tgt_in, tgt_out = row["src_tokens"], row["tgt_in"], row["tgt_out"]
        rows, (S, T) = src.shape[0], (src.shape[1], tgt_in.shape[1])
        assert rows * max(S, T) <= 240 and rows <= 16 and tgt_out.shape == tgt_in.shape
        assert S == row["src_lengths"].max() and T == row["tgt_lengths"].max()
        for r, (n, m) in enumerate(zip(row["src_lengths"], row["tgt_lengths"])):
            assert (src[r, :n] > 0).all() and (src[r, n:] == 0).all()
            assert tgt_in[r, 0] == 2 and tgt_out[r, m - 1] == 3  # [BOS] y / y [EOS]
            assert (tgt_in[r, 1:m] == tgt_out[r, : m - 1]).all()  # shifted by one step
            assert (tgt_in[r, m:] == 0).all() and (tgt_out[r, m:] == 0).all()
        seen.extend(row["index"].tolist())
    assert sorted(seen) == list(range(500))
    stats = padding_stats(batches)
    assert stats.examples == 500 and set(stats.sides) == {"source", "target"}
    assert stats.tokens == sum(stats.sides[s][0] for s in stats.sides)
    assert stats.side_padding_fraction("source") < 0.3 and stats.side_padding_fraction("target") < 0.3
    unsorted = padding_stats(bucket_pairs(featurized_pairs(500), BatchingConfig(
        max_tokens=240, max_batch_size=16, pool_size=128, sort=False), seed=3))
    assert unsorted.padding_fraction > stats.padding_fraction + 0.1


def batch_rows(batches: ray.data.Dataset) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Each batch row as (its examples' indexes, its src_tokens shape), in iteration order."""
    return [(tuple(row["index"].tolist()), row["src_tokens"].shape) for row in batches.iter_rows()]


@pytest.mark.ray
def test_stream_pairs_buckets_every_pair_once_the_same_way_each_epoch(ray_head):
    """Streamed batches: every pair once under the budget, and every iteration (epoch)
    of the lazy plan gives the same batches in the same order (a seed's batches)."""
    from pipelines.config import BatchingConfig

    config = BatchingConfig(max_tokens=240, max_batch_size=16, pool_size=128, stream=True)
    streamed = stream_pairs(featurized_pairs(500), config, seed=3)
    first, second = batch_rows(streamed), batch_rows(streamed)
    assert first == second
    assert sorted(i for indexes, _ in first for i in indexes) == list(range(500))
    assert all(len(indexes) * shape[1] <= 240 and len(indexes) <= 16 for indexes, shape in first)
    assert batch_rows(stream_pairs(featurized_pairs(500), config, seed=4)) != first  # the seed matters
    stats = padding_stats(streamed)
    assert stats.examples == 500 and stats.batches == len(first) and stats.padding_fraction < 0.3


@pytest.mark.ray
def test_prepare_translation_streams_or_materializes(ray_head, tmp_path):
    """``batching.stream``: the same pairs, truncation count and tokenizers either way;
    streamed training batches are a lazy plan that gives the same batches each epoch."""
    from ray.data.dataset import MaterializedDataset

    write_translation(tmp_path, size=300, seed=2)
    prepared = {}
    for stream in (True, False):
        raw = {
            "data": {"root": str(tmp_path), "train": "train", "valid": "valid", "source_lang": "en",
                     "target_lang": "de", "max_length": 6, "max_target_length": 8},
            "tokenizer": {"vocab_size": 120, "lowercase": False},
            "batching": {"max_tokens": 256, "pool_size": 64, "stream": stream},
        }
        data = prepared[stream] = prepare_translation(recipe_from_dict(raw))
        assert data.report["streamed"] is stream and data.report["train_examples"] == 300
        assert isinstance(data.train, MaterializedDataset) is not stream
        rows = batch_rows(data.train)
        assert len(rows) == data.train_stats.batches and data.train_stats.examples == 300
        assert sorted(i for indexes, _ in rows for i in indexes) == list(range(300))
        assert batch_rows(data.train) == rows  # a second epoch: the same batches, the same order
    assert prepared[True].report["truncated_examples"] == prepared[False].report["truncated_examples"] > 0
    assert prepared[True].tokenizers.source.to_str() == prepared[False].tokenizers.source.to_str()


def test_batching_stream_accepts_true_false_and_auto():
    assert recipe_from_dict({}).batching.stream == "auto"
    for value in (True, False, "auto"):
        assert recipe_from_dict({"batching": {"stream": value}}).batching.stream == value
    with pytest.raises(ConfigError, match="batching.stream must be true, false or auto"):
        recipe_from_dict({"batching": {"stream": "sometimes"}})


@pytest.mark.ray
def test_prepare_translation_on_generated_numbers(ray_head, tmp_path):
    write_translation(tmp_path, size=400, seed=1)
    raw = {
        "data": {"root": str(tmp_path), "train": "train", "valid": "valid", "source_lang": "en", "target_lang": "de",
                 "max_length": 64, "max_target_length": 48},
        "tokenizer": {"vocab_size": 120, "lowercase": False, "joint": False},
        "batching": {"max_tokens": 256},
    }
    data = prepare_translation(recipe_from_dict(raw))
    report = data.report
    assert report["train_examples"] == 400 and report["valid_examples"] == 100
    assert report["skipped_records"] == 0 and report["truncated_examples"] == 0
    assert data.train_stats.examples == 400 and 0 <= report["padding_fraction"] < 0.2
    assert {"source_padding_fraction", "target_padding_fraction", "train_batches", "mean_batch_size"} <= set(report)
    # validation batches line up with their references by index, and decode to them
    references = {r["index"]: r for r in data.valid_records.take_all()}
    assert sorted(references) == list(range(100))
    seen = 0
    for row in data.valid.iter_rows():
        for r, index in enumerate(row["index"]):
            ref = references[int(index)]
            assert decode(data.tokenizers.source, row["src_tokens"][r]) == ref["source"]
            assert decode(data.tokenizers.target, row["tgt_out"][r]) == ref["target"]
            seen += 1
    assert seen == 100
    raw["data"]["max_target_length"] = 256
    with pytest.raises(ConfigError,
                       match=r"data.max_target_length \+ 1 \(the \[EOS\] step\) must fit the token budget"):
        prepare_translation(recipe_from_dict(raw))


@pytest.mark.ray
def test_unknown_column_in_hf_pairs_is_named(ray_head, tmp_path):
    import datasets

    datasets.Dataset.from_dict({"english": ["a"], "german": ["b"]}).save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(DataError, match=r"hf\[train\]: no column 'source' \(columns: \['english', 'german'\]\)"):
        read_pairs(DataConfig(root=str(tmp_path), train="hf"), "train")
    with pytest.raises(DataError, match=r"no column 'missing'"):
        read_pairs(DataConfig(root=str(tmp_path), train="hf", source_column="english", target_column="missing"),
                   "train")
    checked = check_records(read_pairs(DataConfig(root=str(tmp_path), train="hf", source_column="english",
                                                  target_column="german"), "train"), "error", "train")
    assert checked.dataset.take_all()[0]["origin"] == f"{tmp_path}/hf[train]:row 1"
