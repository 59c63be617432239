"""Text sources -> ``ray.data.Dataset`` of records ``{text, label, origin, error}``.

Files are read whole by ``read_binary_files`` and parsed in Ray tasks, so every record
knows where it came from (``origin`` = ``path:line`` or ``path:row N``). A bad record
(missing label, empty text, bytes that are not UTF-8) gets an ``error`` message instead
of being dropped; :func:`check_records` then stops the run on it or, with
``on_bad_record: skip``, counts and reports it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import ray

from pipelines.config import DataConfig
from pipelines.errors import DataError

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


def detect_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    if path.is_dir() and any((path / f).exists() for f in ("dataset_info.json", "dataset_dict.json")):
        return "hf"
    return EXTENSIONS.get(path.suffix.lower(), "labeled-lines")


def _record(text: Any, label: Any, origin: str, error: str = "") -> dict[str, str]:
    text = "" if text is None else str(text).strip()
    label = "" if label is None else str(label).strip()
    if not error:
        if not label:
            error = "missing label"
        elif not text:
            error = "empty text"
    return {"text": text, "label": label, "origin": origin, "error": error}


def _lines(data: bytes, path: str) -> Iterator[tuple[int, str | None, str]]:
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
    for number, line, error in _lines(data, path):
        origin = f"{path}:{number}"
        if line is None:
            out.append(_record("", "", origin, error))
            continue
        label, _, text = line.strip().partition(" ")
        out.append(_record(text, label, origin, "" if line.strip() else "empty line"))
    return out


def parse_delimited(data: bytes, path: str, *, delimiter: str, text_column: str, label_column: str) -> list[dict[str, str]]:
    """CSV/TSV with a header row naming ``text_column`` and ``label_column``."""
    out = []
    rows = list(_lines(data, path))
    if not rows or rows[0][1] is None:
        raise DataError(f"{path}:1: missing or unreadable header row")
    header = next(csv.reader([rows[0][1]], delimiter=delimiter))
    for column in (text_column, label_column):
        if column not in header:
            raise DataError(f"{path}:1: header has no column {column!r} (columns: {header})")
    ti, li = header.index(text_column), header.index(label_column)
    for number, line, error in rows[1:]:
        origin = f"{path}:{number}"
        if line is None:
            out.append(_record("", "", origin, error))
            continue
        fields = next(csv.reader([line], delimiter=delimiter), [])
        if len(fields) != len(header):
            out.append(_record("", "", origin, f"expected {len(header)} fields, found {len(fields)}"))
            continue
        out.append(_record(fields[ti], fields[li], origin))
    return out


def parse_jsonl(data: bytes, path: str, *, text_column: str, label_column: str) -> list[dict[str, str]]:
    out = []
    for number, line, error in _lines(data, path):
        origin = f"{path}:{number}"
        if line is None:
            out.append(_record("", "", origin, error))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            out.append(_record("", "", origin, f"not valid JSON ({err.msg})"))
            continue
        if not isinstance(obj, dict):
            out.append(_record("", "", origin, "expected a JSON object"))
            continue
        out.append(_record(obj.get(text_column), obj.get(label_column), origin))
    return out


def parse_parquet(data: bytes, path: str, *, text_column: str, label_column: str) -> list[dict[str, str]]:
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data))
    for column in (text_column, label_column):
        if column not in table.column_names:
            raise DataError(f"{path}: no column {column!r} (columns: {table.column_names})")
    texts = table.column(text_column).to_pylist()
    labels = table.column(label_column).to_pylist()
    return [_record(t, l, f"{path}:row {i + 1}") for i, (t, l) in enumerate(zip(texts, labels))]


def parse_file(data: bytes, path: str, fmt: str, config: DataConfig) -> list[dict[str, str]]:
    columns = {"text_column": config.text_column, "label_column": config.label_column}
    if fmt == "labeled-lines":
        return parse_labeled_lines(data, path)
    if fmt in ("csv", "tsv"):
        return parse_delimited(data, path, delimiter="," if fmt == "csv" else "\t", **columns)
    if fmt == "jsonl":
        return parse_jsonl(data, path, **columns)
    if fmt == "parquet":
        return parse_parquet(data, path, **columns)
    raise DataError(f"{path}: unknown format {fmt!r}")


def _read_hf(path: Path, split: str, config: DataConfig) -> ray.data.Dataset:
    import datasets

    name = str(path)
    loaded = datasets.load_from_disk(name) if path.exists() else datasets.load_dataset(name, split=split)
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(f"{name}: no split {split!r} (splits: {list(loaded)})")
        loaded = loaded[split]
    for column in (config.text_column, config.label_column):
        if column not in loaded.column_names:
            raise DataError(f"{name}[{split}]: no column {column!r} (columns: {loaded.column_names})")
    feature = loaded.features[config.label_column]
    names = getattr(feature, "names", None)
    texts = loaded[config.text_column]
    labels = loaded[config.label_column]
    records = [
        _record(t, names[l] if names is not None and l is not None else l, f"{name}[{split}]:row {i + 1}")
        for i, (t, l) in enumerate(zip(texts, labels))
    ]
    return ray.data.from_items(records) if records else ray.data.from_items([])


def read_split(config: DataConfig, which: str) -> ray.data.Dataset:
    """The ``train`` or ``valid`` split of ``config`` as a dataset of records."""
    name = config.train if which == "train" else config.valid
    path = resolve(config.root, name)
    fmt = detect_format(path, config.format)
    if fmt == "hf":
        split = config.split if which == "train" else config.valid_split
        return _read_hf(path, split, config)
    if not path.exists():
        raise DataError(f"data.{which}: file not found: {path}")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise DataError(f"data.{which}: no files in {path}")

    def parse(row: dict[str, Any]) -> list[dict[str, str]]:
        return parse_file(row["bytes"], row["path"], fmt, config)

    return ray.data.read_binary_files([str(f) for f in files], include_paths=True).flat_map(parse)


@dataclass
class CheckedSplit:
    dataset: ray.data.Dataset
    """Materialized good records ``{text, label, origin}``."""
    rows: int
    skipped: int
    skipped_examples: list[str]


def check_records(ds: ray.data.Dataset, policy: str, which: str) -> CheckedSplit:
    """Stop on the first bad record, or (``skip``) drop them and say how many and where."""
    ds = ds.materialize()
    bad = ds.filter(expr="error != ''").materialize()
    skipped = bad.count()
    examples = [f"{r['origin']}: {r['error']}" for r in bad.take(5)]
    if skipped and policy == "error":
        raise DataError(
            f"bad record at {examples[0]} (set data.on_bad_record=skip to skip and count bad records)"
        )
    good = ds.filter(expr="error == ''").drop_columns(["error"]).materialize()
    rows = good.count()
    if skipped:
        log.warning("%s: skipped %d bad record(s), e.g. %s", which, skipped, "; ".join(examples))
    if rows == 0:
        raise DataError(f"data.{which}: no usable records")
    return CheckedSplit(good, rows, skipped, examples)
