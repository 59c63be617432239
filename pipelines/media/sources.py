"""Text sources -> ``ray.data.Dataset`` of records.

- classification (:func:`read_split`): ``{text, label, origin, error}``
- translation (:func:`read_pairs`): ``{source, target, origin, error}``

Files are read whole by ``read_binary_files`` and parsed in Ray tasks, so every record
knows where it came from (``origin`` = ``path:line`` or ``path:row N``; for ``parallel``
files ``prefix.{en,de}:line``, naming both files). A bad record (missing label, empty
text/source/target, bytes that are not UTF-8) gets an ``error`` message instead of being
dropped; :func:`check_records` then stops the run on it or, with ``on_bad_record: skip``,
counts and reports it. Parallel files of different line counts are always an error: no
pairing of them can be trusted.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray

from pipelines.config import DataConfig, Recipe
from pipelines.errors import ConfigError, DataError
from pipelines.media.trees import parse_sst_trees

log = logging.getLogger(__name__)

EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}


def resolve(root: str, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() or not root else Path(root).expanduser() / path


def detect_format(path: Path, declared: str, langs: tuple[str, str] | None = None) -> str:
    """The format of ``path``: ``declared`` unless it is ``auto``.

    ``auto`` with ``langs = (source_lang, target_lang)`` picks ``parallel`` when ``path``
    itself does not exist but ``path.<source_lang>`` does (``val`` -> ``val.en``/``val.de``).
    """
    if declared != "auto":
        return declared
    if langs and not path.exists() and _lang_file(path, langs[0]).exists():
        return "parallel"
    if is_hf_folder(path):
        return "hf"
    return EXTENSIONS.get(path.suffix.lower(), "labeled-lines")


def is_hf_folder(path: Path) -> bool:
    """A ``datasets`` ``save_to_disk`` folder."""
    return path.is_dir() and any((path / f).exists() for f in ("dataset_info.json", "dataset_dict.json"))


def _lang_file(prefix: Path, lang: str) -> Path:
    return prefix.with_name(f"{prefix.name}.{lang}")


def _clean(value: Any) -> str:
    return "" if value is None else str(value).strip()


@dataclass(frozen=True)
class RecordSchema:
    """Which record fields a task reads from which columns, and what makes a record bad.

    ``fields`` pairs each record field with its column in the file; ``checks`` are
    ``(field, error)`` applied in order: the first empty field names the record's error.
    """

    fields: tuple[tuple[str, str], ...]
    checks: tuple[tuple[str, str], ...]

    @property
    def columns(self) -> list[str]:
        return [column for _, column in self.fields]

    def record(self, values: Mapping[str, Any] | None, origin: str, error: str = "") -> dict[str, str]:
        """``values`` maps column -> raw value (None for an unreadable row, with ``error``)."""
        out = {name: _clean(values.get(column)) if values else "" for name, column in self.fields}
        if not error:
            error = next((message for name, message in self.checks if not out[name]), "")
        return {**out, "origin": origin, "error": error}


def text_schema(text_column: str = "text", label_column: str = "label") -> RecordSchema:
    """Classification records ``{text, label}``."""
    return RecordSchema(
        fields=(("text", text_column), ("label", label_column)),
        checks=(("label", "missing label"), ("text", "empty text")),
    )


def pair_schema(source_column: str = "source", target_column: str = "target",
                references: tuple[str, ...] = ()) -> RecordSchema:
    """Translation records ``{source, target}``; with ``references`` (columns), also
    ``reference1``, ``reference2``, ... (more references of the same target)."""
    extra = tuple((f"reference{i}", column) for i, column in enumerate(references, start=1))
    return RecordSchema(
        fields=(("source", source_column), ("target", target_column), *extra),
        checks=(("source", "empty source"), ("target", "empty target"),
                *((name, f"empty reference ({column})") for name, column in extra)),
    )


def _record(text: Any, label: Any, origin: str, error: str = "") -> dict[str, str]:
    return text_schema().record({"text": text, "label": label}, origin, error)


def text_lines(data: bytes, path: str) -> Iterator[tuple[int, str | None, str]]:
    """``(line_no, text or None, error)``; each line is decoded on its own."""
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()  # the file's final newline
    for number, raw in enumerate(raw_lines, start=1):
        try:
            yield number, raw.rstrip(b"\r").decode("utf-8"), ""
        except UnicodeDecodeError as err:
            yield number, None, f"not valid UTF-8 (byte {err.start})"


def parse_labeled_lines(data: bytes, path: str) -> list[dict[str, str]]:
    """``LABEL<space>TEXT`` a line (the SST-2 files)."""
    out = []
    for number, line, error in text_lines(data, path):
        origin = f"{path}:{number}"
        if line is None:
            out.append(_record("", "", origin, error))
            continue
        label, _, text = line.strip().partition(" ")
        out.append(_record(text, label, origin, "" if line.strip() else "empty line"))
    return out


def parse_delimited(
    data: bytes, path: str, *, delimiter: str, text_column: str = "text", label_column: str = "label",
    schema: RecordSchema | None = None,
) -> list[dict[str, str]]:
    """CSV/TSV with a header row naming the schema's columns (default: text and label)."""
    schema = schema or text_schema(text_column, label_column)
    out = []
    rows = list(text_lines(data, path))
    if not rows or rows[0][1] is None:
        raise DataError(f"{path}:1: missing or unreadable header row")
    header = next(csv.reader([rows[0][1]], delimiter=delimiter))
    for column in schema.columns:
        if column not in header:
            raise DataError(f"{path}:1: header has no column {column!r} (columns: {header})")
    positions = {column: header.index(column) for column in schema.columns}
    for number, line, error in rows[1:]:
        origin = f"{path}:{number}"
        if line is None:
            out.append(schema.record(None, origin, error))
            continue
        fields = next(csv.reader([line], delimiter=delimiter), [])
        if len(fields) != len(header):
            out.append(schema.record(None, origin, f"expected {len(header)} fields, found {len(fields)}"))
            continue
        out.append(schema.record({column: fields[i] for column, i in positions.items()}, origin))
    return out


def parse_jsonl(
    data: bytes, path: str, *, text_column: str = "text", label_column: str = "label",
    schema: RecordSchema | None = None,
) -> list[dict[str, str]]:
    """One JSON object a line, with the schema's columns as keys."""
    schema = schema or text_schema(text_column, label_column)
    out = []
    for number, line, error in text_lines(data, path):
        origin = f"{path}:{number}"
        if line is None:
            out.append(schema.record(None, origin, error))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            out.append(schema.record(None, origin, f"not valid JSON ({err.msg})"))
            continue
        if not isinstance(obj, dict):
            out.append(schema.record(None, origin, "expected a JSON object"))
            continue
        out.append(schema.record(obj, origin))
    return out


def parse_parquet(
    data: bytes, path: str, *, text_column: str = "text", label_column: str = "label",
    schema: RecordSchema | None = None,
) -> list[dict[str, str]]:
    import pyarrow.parquet as pq

    schema = schema or text_schema(text_column, label_column)
    table = pq.read_table(io.BytesIO(data))
    for column in schema.columns:
        if column not in table.column_names:
            raise DataError(f"{path}: no column {column!r} (columns: {table.column_names})")
    columns = {column: table.column(column).to_pylist() for column in schema.columns}
    return [
        schema.record({column: values[i] for column, values in columns.items()}, f"{path}:row {i + 1}")
        for i in range(table.num_rows)
    ]


def parse_file(data: bytes, path: str, fmt: str, config: DataConfig,
               schema: RecordSchema | None = None) -> list[dict[str, str]]:
    """Records of one file; ``schema`` defaults to classification's text/label columns."""
    schema = schema or text_schema(config.text_column, config.label_column)
    if fmt == "labeled-lines":
        return parse_labeled_lines(data, path)
    if fmt == "sst-trees":
        return parse_sst_trees(text_lines(data, path), path, config.tree_labels)
    if fmt in ("csv", "tsv"):
        return parse_delimited(data, path, delimiter="," if fmt == "csv" else "\t", schema=schema)
    if fmt == "jsonl":
        return parse_jsonl(data, path, schema=schema)
    if fmt == "parquet":
        return parse_parquet(data, path, schema=schema)
    raise DataError(f"{path}: unknown format {fmt!r}")


def load_hf(path: Path, split: str):
    """A ``datasets.Dataset``: a local ``save_to_disk`` folder or a hub name, one split."""
    import datasets

    name = str(path)
    loaded = datasets.load_from_disk(name) if path.exists() else datasets.load_dataset(name, split=split)
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(f"{name}: no split {split!r} (splits: {list(loaded)})")
        loaded = loaded[split]
    return loaded


def named_labels(records: list[dict[str, str]], names: dict[str, str]) -> list[dict[str, str]]:
    """``data.label_names`` applied to classification records: a label that is a key
    becomes its name, a name stays; anything else makes the record bad, naming both sets."""
    if not names:
        return records
    known = set(names.values())
    for record in records:
        label = record["label"]
        if record["error"] or label in known and label not in names:
            continue
        if label in names:
            record["label"] = names[label]
        else:
            record["error"] = (f"label {label!r} is not in data.label_names (labels: {sorted(names)}; "
                               f"names: {sorted(known)})")
    return records


def _read_hf(path: Path, split: str, config: DataConfig) -> ray.data.Dataset:
    name = str(path)
    loaded = load_hf(path, split)
    for column in (config.text_column, config.label_column):
        if column not in loaded.column_names:
            raise DataError(f"{name}[{split}]: no column {column!r} (columns: {loaded.column_names})")
    feature = loaded.features[config.label_column]
    names = getattr(feature, "names", None)
    texts = loaded[config.text_column]
    labels = loaded[config.label_column]
    records = named_labels([
        _record(t, names[label] if names is not None and label is not None else label, f"{name}[{split}]:row {i + 1}")
        for i, (t, label) in enumerate(zip(texts, labels))
    ], config.label_names)
    return records_dataset(records)


def read_file_records(path: Path, which: str, parse: Callable[[bytes, str], list[dict]]) -> ray.data.Dataset:
    """Records of a file, or of every file under a folder (recursively, in name order):
    each file read whole and ``parse(bytes, path)`` in a Ray task."""
    if not path.exists():
        raise DataError(f"data.{which}: file not found: {path}")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise DataError(f"data.{which}: no files in {path}")
    return ray.data.read_binary_files([str(f) for f in files], include_paths=True).flat_map(
        lambda row: parse(row["bytes"], row["path"]))


def _read_files(path: Path, fmt: str, which: str, config: DataConfig, schema: RecordSchema,
                label_names: dict[str, str] | None = None) -> ray.data.Dataset:
    def parse(data: bytes, name: str) -> list[dict[str, str]]:
        return named_labels(parse_file(data, name, fmt, config, schema), label_names or {})

    return read_file_records(path, which, parse)


def read_split(config: DataConfig, which: str) -> ray.data.Dataset:
    """The ``train`` or ``valid`` split of ``config`` as a dataset of records."""
    name = config.train if which == "train" else config.valid
    path = resolve(config.root, name)
    fmt = detect_format(path, config.valid_format if which == "valid" and config.valid_format else config.format)
    if fmt == "hf":
        split = config.split if which == "train" else config.valid_split
        return _read_hf(path, split, config)
    return _read_files(path, fmt, which, config, text_schema(config.text_column, config.label_column),
                       config.label_names)


# ----------------------------------------------------------------------------- translation


def read_pairs(config: DataConfig, which: str, references: tuple[str, ...] = ()) -> ray.data.Dataset:
    """The ``train`` or ``valid`` split as translation records ``{source, target, origin, error}``.

    Formats: ``parallel`` (``PREFIX.<source_lang>`` + ``PREFIX.<target_lang>``), csv/tsv/
    jsonl/parquet with ``data.source_column``/``data.target_column``, and ``hf``.
    ``references``: more target columns (csv/tsv/jsonl/parquet), as ``reference1``, ...
    """
    name = config.train if which == "train" else config.valid
    path = resolve(config.root, name)
    langs = (config.source_lang, config.target_lang) if config.source_lang and config.target_lang else None
    fmt = detect_format(path, config.format, langs)
    if references and fmt in ("hf", "parallel"):
        raise ConfigError(f"data.reference_columns: more references are read from csv/tsv/jsonl/parquet files, "
                          f"not {fmt} (data.{which})")
    if fmt == "hf":
        split = config.split if which == "train" else config.valid_split
        return _read_hf_pairs(path, split, config)
    if fmt == "parallel":
        if langs is None:
            raise DataError(f"data.{which}: parallel data needs data.source_lang and data.target_lang")
        return read_parallel(path, *langs, which=which)
    if fmt == "labeled-lines":
        if not path.exists():
            expected = (f" nor {_lang_file(path, langs[0])}" if langs
                        else " (set data.source_lang and data.target_lang to read PREFIX.<lang> files)")
            raise DataError(f"data.{which}: file not found: {path}{expected}")
        raise DataError(
            f"data.{which}: {path} is labeled-lines (classification); translation reads parallel "
            "PREFIX.<lang> files, csv/tsv/jsonl/parquet with source/target columns, or hf"
        )
    return _read_files(path, fmt, which, config, pair_schema(config.source_column, config.target_column, references))


def _side_lines(path: Path, side: str) -> ray.data.Dataset:
    """One file's lines as rows ``{<side>_line, <side>, <side>_error}``, parsed in a Ray task."""
    name = str(path)

    def parse(row: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {f"{side}_line": number, side: text or "", f"{side}_error": error}
            for number, text, error in text_lines(row["bytes"], name)
        ]

    return ray.data.read_binary_files([name]).flat_map(parse)


def _join_sides(batch: dict[str, np.ndarray], *, origin: str, names: dict[str, str]) -> dict[str, list[str]]:
    """``map_batches``: zipped line rows of both files -> translation records."""
    schema = pair_schema()
    out: dict[str, list[str]] = {"source": [], "target": [], "origin": [], "error": []}
    for i, (s_line, t_line) in enumerate(zip(batch["source_line"], batch["target_line"])):
        if s_line != t_line:  # zip pairs rows by position; this proves it paired the same lines
            raise RuntimeError(f"{origin}: source line {s_line} was paired with target line {t_line}")
        error = next(
            (f"{batch[side + '_error'][i]} in {names[side]}" for side in ("source", "target")
             if batch[side + "_error"][i]),
            "",
        )
        record = schema.record({"source": batch["source"][i], "target": batch["target"][i]}, f"{origin}:{s_line}",
                               error)
        if record["error"] and not error:  # an empty side: say which file
            record["error"] += f" ({names['source' if not record['source'] else 'target']})"
        for key in out:
            out[key].append(record[key])
    return out


def read_parallel(prefix: Path, source_lang: str, target_lang: str, *, which: str = "train") -> ray.data.Dataset:
    """``PREFIX.<source_lang>`` and ``PREFIX.<target_lang>`` paired line by line.

    Each file is read and split into lines in its own Ray task; the two line datasets are
    joined with ``Dataset.zip`` (by row position, which ``materialize`` fixes whatever the
    block layout of each side), and every pair is checked to carry the same line number.
    Records' origin is ``PREFIX.{src,tgt}:LINE``. Different line counts stop the run
    whatever ``on_bad_record`` says.
    """
    files = {"source": _lang_file(prefix, source_lang), "target": _lang_file(prefix, target_lang)}
    for path in files.values():
        if not path.is_file():
            raise DataError(f"data.{which}: parallel file not found: {path} (prefix {prefix})")
    sides = {side: _side_lines(path, side).materialize() for side, path in files.items()}
    counts = {side: ds.count() for side, ds in sides.items()}
    if counts["source"] != counts["target"]:
        raise DataError(
            f"data.{which}: parallel files differ in length: {files['source']} has {counts['source']} lines, "
            f"{files['target']} has {counts['target']} lines"
        )
    origin = str(prefix.with_name(f"{prefix.name}.{{{source_lang},{target_lang}}}"))
    return sides["source"].zip(sides["target"]).map_batches(
        _join_sides,
        fn_kwargs={"origin": origin, "names": {side: path.name for side, path in files.items()}},
        batch_format="numpy",
    )


def _hf_pair_columns(loaded, config: DataConfig, where: str) -> tuple[list[Any], list[Any]]:
    """Source and target values of an hf dataset: configured columns, else columns named
    after the languages (bentrevett/multi30k: ``en``/``de``), else a ``translation`` column
    of ``{lang: text}`` dicts (wmt14, opus_books)."""
    names = loaded.column_names
    if config.source_column in names and config.target_column in names:
        return loaded[config.source_column], loaded[config.target_column]
    langs = (config.source_lang, config.target_lang)
    if all(langs) and all(lang in names for lang in langs):
        return loaded[langs[0]], loaded[langs[1]]
    if all(langs) and "translation" in names:
        rows = loaded["translation"]
        if rows and isinstance(rows[0], dict) and all(lang in rows[0] for lang in langs):
            return [r.get(langs[0]) for r in rows], [r.get(langs[1]) for r in rows]
    missing = [c for c in (config.source_column, config.target_column) if c not in names]
    raise DataError(
        f"{where}: no column {missing[0]!r} (columns: {names}); set data.source_column/target_column, "
        "or data.source_lang/target_lang to use language-named columns or a 'translation' column"
    )


def _read_hf_pairs(path: Path, split: str, config: DataConfig) -> ray.data.Dataset:
    where = f"{path}[{split}]"
    sources, targets = _hf_pair_columns(load_hf(path, split), config, where)
    schema = pair_schema()
    records = [
        schema.record({"source": s, "target": t}, f"{where}:row {i + 1}")
        for i, (s, t) in enumerate(zip(sources, targets))
    ]
    return records_dataset(records)


RECORDS_PER_BLOCK = 1024
"""Rows a block of in-memory records holds (:func:`records_dataset`)."""
MAX_RECORD_BLOCKS = 200
"""At most this many blocks (Ray Data's own floor for reads, ``read_op_min_num_blocks``)."""


def records_dataset(records: list[dict[str, Any]], *, per_block: int = RECORDS_PER_BLOCK) -> ray.data.Dataset:
    """``records`` as a Ray Dataset of ``len / per_block`` blocks (1 to 200). Ray Data's
    ``from_items`` makes 200 blocks of anything with 200 rows or more, so every later
    operation on 300 short records ran 200 tasks (measured: checking a training and a
    validation split of 300 and 75 digit lines took 15 s; as a block each, the whole data
    preparation took 2 s). Media records (paths to decode) ask for blocks of a decoding
    batch, so decoding still spreads over the cluster."""
    blocks = min(MAX_RECORD_BLOCKS, max(1, -(-len(records) // per_block)))
    return ray.data.from_items(records, override_num_blocks=blocks)


@dataclass
class CheckedSplit:
    dataset: ray.data.Dataset
    """Materialized good records ``{text, label, origin}`` or ``{source, target, origin}``."""
    rows: int
    skipped: int
    skipped_examples: list[str]


def check_records(ds: ray.data.Dataset, policy: str, which: str) -> CheckedSplit:
    """Stop on the first bad record, or (``skip``) drop them and say how many and where."""
    ds = ds.materialize()
    # Look for bad records in two small columns: filtering the whole rows would copy every
    # block (decoded frames, features) once more just to find none.
    bad = ds.select_columns(["origin", "error"]).filter(expr="error != ''").materialize()
    skipped = bad.count()
    examples = [f"{r['origin']}: {r['error']}" for r in bad.take(5)]
    if skipped and policy == "error":
        raise DataError(
            f"bad record at {examples[0]} (set data.on_bad_record=skip to skip and count bad records)"
        )
    good = (ds.filter(expr="error == ''") if skipped else ds).drop_columns(["error"]).materialize()
    rows = good.count()
    if skipped:
        log.warning("%s: skipped %d bad record(s), e.g. %s", which, skipped, "; ".join(examples))
    if rows == 0:
        raise DataError(f"data.{which}: no usable records")
    return CheckedSplit(good, rows, skipped, examples)


def origin_order(origin: str) -> tuple[str, int, str]:
    """``path:12`` sorts before ``path:100``: by file, then line number."""
    path, _, where = origin.rpartition(":")
    number = where.removeprefix("row ")
    return (path, int(number), "") if number.isdigit() else (origin, 0, origin)


def carve_validation(train: CheckedSplit, fraction: float,
                     seed: int) -> tuple[CheckedSplit, CheckedSplit, dict[str, Any]]:
    """Hold ``fraction`` of ``train`` out for validation, stratified by ``label`` when the
    records have one. The unit drawn is an origin (a line: one example, or every phrase of
    one tree), so no sentence is on both sides; its stratum is its longest text's label
    (a tree's sentence). Each stratum's units, sorted by file and line, are shuffled with
    ``seed`` and the first ``round(fraction * n)`` held out (at least one of a stratum
    with two or more): the same file, fraction and seed hold out the same records
    whatever the block layout. Returns ``(train, valid, report)``."""
    import random

    columns = ["origin", "label", "text"] if "label" in train.dataset.columns() else ["origin"]
    longest: dict[str, tuple[int, str]] = {}
    for batch in train.dataset.select_columns(columns).iter_batches(batch_size=8192, batch_format="pyarrow"):
        values = [batch.column(c).to_pylist() for c in columns]
        for origin, *rest in zip(*values):
            label, size = (rest[0], len(rest[1])) if rest else ("", 0)
            if origin not in longest or size > longest[origin][0]:
                longest[origin] = (size, label)
    strata: dict[str, list[str]] = {}
    for origin, (_, label) in longest.items():
        strata.setdefault(label, []).append(origin)
    held: set[str] = set()
    rng = random.Random(seed)
    for label in sorted(strata):
        units = sorted(strata[label], key=origin_order)
        rng.shuffle(units)
        held.update(units[:min(max(1, round(fraction * len(units))), len(units) - 1)])  # keep one to train on
    if not held:
        raise DataError(f"data.valid_fraction={fraction} holds out nothing of {len(longest)} training lines")
    import pyarrow as pa
    import pyarrow.compute as pc

    held_out = pa.array(sorted(held))

    def side(batch: pa.Table, inside: bool) -> pa.Table:
        mask = pc.is_in(batch["origin"], value_set=held_out)
        return batch.filter(mask if inside else pc.invert(mask))

    valid, kept = (train.dataset.map_batches(side, fn_kwargs={"inside": inside}, batch_format="pyarrow").materialize()
                   for inside in (True, False))
    valid_rows, kept_rows = valid.count(), kept.count()
    report = {"valid_fraction": fraction, "valid_seed": seed, "valid_lines": len(held),
              "train_lines": len(longest) - len(held)}
    log.info("validation: held out %d of %d training lines (%d of %d records; %.0f%%, stratified by label, seed %d)",
             len(held), len(longest), valid_rows, train.rows, 100 * fraction, seed)
    return (CheckedSplit(kept, kept_rows, train.skipped, train.skipped_examples),
            CheckedSplit(valid, valid_rows, 0, []), report)


def read_checked_splits(data: DataConfig) -> tuple[CheckedSplit, CheckedSplit | None, dict[str, Any]]:
    """The checked ``train`` and validation splits of labelled records: ``data.valid``, or
    the part ``data.valid_fraction`` carves out of the training file (and its report), or
    none."""
    train = check_records(read_split(data, "train"), data.on_bad_record, "train")
    if data.valid_fraction:
        return carve_validation(train, data.valid_fraction, data.valid_seed)
    if data.valid:
        return train, check_records(read_split(data, "valid"), data.on_bad_record, "valid"), {}
    return train, None, {}


def with_index(records: ray.data.Dataset, rows: int) -> ray.data.Dataset:
    """Add ``index`` = row position (0..rows-1) to a materialized dataset, zipped with a range."""
    return records.zip(ray.data.range(rows).rename_columns({"id": "index"})).materialize()


def check_token_budget(recipe: Recipe) -> None:
    """A text application's longest example must fit one batch."""
    if recipe.data.max_length > recipe.batching.max_tokens:
        raise ConfigError(
            "data.max_length must fit the token budget: "
            f"{recipe.data.max_length} > batching.max_tokens {recipe.batching.max_tokens}"
        )

