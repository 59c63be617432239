"""Media folders' manifests: ``manifest.csv`` / ``manifest.jsonl`` naming each file and its target.

Audio and video folders (``docs/data-formats.md``) share one reader: a row's ``path`` is relative to
the manifest's folder, and its target column (``label``, ``transcript`` or ``caption``)
must be non-empty. A bad row does not stop the listing: it becomes a record with
``error`` set and its origin (``manifest.csv:row 3 (a.mp4)``), for
``pipelines.media.sources.check_records`` to stop on or count like any bad record.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from pipelines.errors import DataError

MANIFESTS = ("manifest.csv", "manifest.jsonl")


def find_manifest(folder: Path) -> Path | None:
    return next((folder / name for name in MANIFESTS if (folder / name).is_file()), None)


def record(path: str, origin: str, target: str, value: str, error: str = "") -> dict[str, str]:
    return {"path": path, target: value, "origin": origin, "error": error}


def read_manifest(manifest: Path, target: str, *, folders: bool = False) -> list[dict[str, str]]:
    """Records ``{path, <target>, origin, error}`` in manifest order; ``folders`` lets a
    path name a folder (a video stored as frame images) as well as a file."""
    try:
        text = manifest.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{manifest}: not valid UTF-8 (byte {err.start})") from None
    if manifest.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        missing = {"path", target} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{manifest}: needs columns path and {target}; missing {', '.join(sorted(missing))}")
        rows = [(f"{manifest}:row {i}", row) for i, row in enumerate(reader, start=1)]
    else:
        rows = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                rows.append((f"{manifest}:{i}", {"__error__": f"not valid JSON ({err.msg})"}))
                continue
            rows.append((f"{manifest}:{i}", row if isinstance(row, dict) else {"__error__": "not a JSON object"}))
    records = []
    for origin, row in rows:
        name, value = str(row.get("path") or "").strip(), str(row.get(target) or "").strip()
        error = row.get("__error__", "") or ("missing path" if not name else f"missing {target}" if not value else "")
        path = manifest.parent / name
        if not error and not (path.is_file() or (folders and path.is_dir())):
            error = f"no such {'file or folder' if folders else 'file'} {path}"
        records.append(record(str(path), f"{origin} ({name})" if name else origin, target, value, error))
    return records


def list_manifest_folder(folder: Path, *, target: str, kind: str, folders: bool = False) -> list[dict[str, str]]:
    """Records ``{path, <target>, origin, error}`` of a ``video`` or ``image`` folder
    (``kind``), in manifest order; ``target`` is the manifest column a record needs
    (``label`` or ``caption``); ``folders``: a path may name a folder (of video frames)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder ({kind}-folder data is a folder with a {' or '.join(MANIFESTS)})")
    manifest = find_manifest(folder)
    if manifest is None:
        article = "an" if kind[0] in "aeiou" else "a"
        raise DataError(f"{folder}: {article} {kind} folder needs a {' or '.join(MANIFESTS)} "
                        f"with path,{target} columns")
    return read_manifest(manifest, target, folders=folders)
