"""Token-level tags: the IOB1, IOB2 (BIO) and IOBES schemes, entity spans, and the
CoNLL column files taggers read.

A tag is ``O`` or ``P-TYPE`` with a prefix ``P``::

    scheme  prefixes    an entity is                    e.g. "EU rejects German call"
    iob1    I, B        I-X..., B-X only to start one   I-ORG O I-MISC O
                        right after another X
    iob2    B, I        B-X I-X...                       B-ORG O B-MISC O
    iobes   B, I, E, S  S-X alone, else B-X I-X... E-X   S-ORG O S-MISC O

Every scheme names the same entities (:func:`spans`: ``(type, start, end)``, ``end``
exclusive), so converting is spans -> tags (:func:`to_scheme`). A sequence the scheme
forbids (IOB2 ``O I-PER``, IOBES ``B-PER O``) is an error naming the position
(:func:`check`); :func:`allowed_moves` gives the same rules as a CRF mask.

CoNLL files (:func:`parse_conll`): whitespace-separated columns, the token first, one
token a line, a blank line between sentences, ``-DOCSTART-`` lines skipped. Which column
holds the tag is ``data.tag_column`` (default the last); ``token-tag`` files have exactly
two. A sentence with a line of another column count than the file's first, a tag its
scheme does not allow, or bytes that are not UTF-8 is a bad record ``path:line`` (its
first line).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

SCHEMES = ("iob1", "iob2", "iobes")
PREFIXES = {"iob1": "IB", "iob2": "BI", "iobes": "BIES"}

Span = tuple[str, int, int]


class TagError(ValueError):
    """A tag sequence its scheme does not allow."""


def split_tag(tag: str) -> tuple[str, str]:
    """``B-PER`` -> ``("B", "PER")``; ``O`` -> ``("O", "")``."""
    if tag == "O":
        return "O", ""
    prefix, dash, kind = tag.partition("-")
    if not dash or len(prefix) != 1 or not kind:
        return "?", tag
    return prefix, kind


def _may_follow(prev: str | None, tag: str, scheme: str) -> bool:
    """Whether ``tag`` may come right after ``prev`` (None: at the sentence start)."""
    p, kind = split_tag(tag)
    q, before = split_tag(prev) if prev is not None else ("O", "")
    if scheme == "iob1":
        return p != "B" or (q in "IB" and q != "O" and before == kind)
    if scheme == "iob2":
        return p != "I" or (q in "BI" and q != "O" and before == kind)
    # iobes: inside an entity only I/E of its type may follow; outside, only O/B/S
    inside = q in ("B", "I")
    if p in ("I", "E"):
        return inside and before == kind
    return not inside


def _may_end(tag: str, scheme: str) -> bool:
    return scheme != "iobes" or split_tag(tag)[0] not in ("B", "I")


def check(tags: Sequence[str], scheme: str) -> str:
    """``""`` for a sequence ``scheme`` allows, else what is wrong and at which token (1-based)."""
    prefixes = PREFIXES[scheme]
    prev = None
    for i, tag in enumerate(tags):
        p, _ = split_tag(tag)
        if p != "O" and (p == "?" or p not in prefixes):
            return f"token {i + 1}: tag {tag!r} is not O or {'/'.join(prefixes)}-TYPE ({scheme})"
        if not _may_follow(prev, tag, scheme):
            return f"token {i + 1}: {tag!r} cannot follow {prev or 'the sentence start'!r} in {scheme}"
        prev = tag
    if prev is not None and not _may_end(prev, scheme):
        return f"token {len(tags)}: {prev!r} cannot end a sentence in {scheme}"
    return ""


def _ends(prev: str, tag: str, prev_kind: str, kind: str) -> bool:
    return (prev in ("E", "S") or (prev in ("B", "I") and tag in ("B", "S", "O"))
            or (prev != "O" and prev_kind != kind))


def _starts(prev: str, tag: str, prev_kind: str, kind: str) -> bool:
    return (tag in ("B", "S") or (prev in ("E", "S", "O") and tag in ("E", "I"))
            or (tag != "O" and prev_kind != kind))


def spans(tags: Sequence[str]) -> list[Span]:
    """The entities of a tag sequence in any scheme, ``(type, start, end)`` with ``end``
    exclusive, read as conlleval and ``seqeval`` (default mode) read them: an entity
    starts at ``B``/``S``, at an ``I``/``E`` after ``O``/``E``/``S``, or where the type
    changes; it ends after ``E``/``S``, before ``B``/``S``/``O``, or where the type changes."""
    found: list[Span] = []
    prev, prev_kind, begin = "O", "", 0
    for i, tag in enumerate([*tags, "O"]):
        p, kind = split_tag(tag)
        if p == "O":
            kind = ""
        if _ends(prev, p, prev_kind, kind):
            found.append((prev_kind, begin, i))
        if _starts(prev, p, prev_kind, kind):
            begin = i
        prev, prev_kind = p, kind
    return found


def to_scheme(entities: Sequence[Span], length: int, scheme: str) -> list[str]:
    """The ``length`` tags of ``scheme`` that mark exactly ``entities`` (non-overlapping)."""
    tags = ["O"] * length
    last_end, last_kind = -1, ""
    for kind, start, end in sorted(entities, key=lambda s: s[1]):
        if scheme == "iobes":
            if end - start == 1:
                tags[start] = f"S-{kind}"
            else:
                tags[start:end] = [f"B-{kind}", *[f"I-{kind}"] * (end - start - 2), f"E-{kind}"]
        elif scheme == "iob2":
            tags[start:end] = [f"B-{kind}", *[f"I-{kind}"] * (end - start - 1)]
        else:
            first = "B" if start == last_end and kind == last_kind else "I"
            tags[start:end] = [f"{first}-{kind}", *[f"I-{kind}"] * (end - start - 1)]
        last_end, last_kind = end, kind
    return tags


def convert(tags: Sequence[str], scheme: str) -> list[str]:
    """``tags`` (any scheme, checked) in ``scheme``."""
    return to_scheme(spans(tags), len(tags), scheme)


def tag_set(types: Sequence[str], scheme: str) -> list[str]:
    """Every tag of ``scheme`` over entity ``types``: ``O`` first, then by type."""
    return ["O", *(f"{p}-{t}" for t in sorted(types) for p in PREFIXES[scheme])]


def allowed_moves(tags: Sequence[str], scheme: str) -> tuple[list[bool], list[list[bool]], list[bool]]:
    """The scheme's rules over a tag set: ``(may start, may follow [from][to], may end)``."""
    start = [_may_follow(None, t, scheme) for t in tags]
    trans = [[_may_follow(a, b, scheme) for b in tags] for a in tags]
    end = [_may_end(t, scheme) for t in tags]
    return start, trans, end


# ----------------------------------------------------------------------------- CoNLL files

def parse_conll(lines: Iterator[tuple[int, str | None, str]], path: str, *, tag_column: int, scheme: str,
                columns: int | None = None) -> list[dict]:
    """Sentences of a CoNLL file as records ``{tokens, tags, origin, error}`` (see the
    module docstring); ``columns`` fixes the column count (``token-tag``: 2), else the
    file's first token line sets it."""
    records: list[dict] = []
    tokens: list[str] = []
    tags: list[str] = []
    first, error = 0, ""

    def flush() -> None:
        nonlocal tokens, tags, first, error
        if tokens or error:
            if not error:
                problem = check(tags, scheme)
                error = f"{problem} (data.tag_scheme: {scheme})" if problem else ""
            records.append({"tokens": tokens, "tags": tags, "origin": f"{path}:{first}", "error": error})
        tokens, tags, first, error = [], [], 0, ""

    for number, line, problem in lines:
        if line is not None and not line.strip():
            flush()
            continue
        if not first:
            first = number
        if line is None:
            error = error or f"line {number}: {problem}"
            continue
        fields = line.split()
        if fields[0] == "-DOCSTART-":
            first = 0 if not tokens else first
            continue
        if columns is None:
            columns = len(fields)
            if columns < 2:
                error = error or f"line {number}: 1 column; need a token and a tag"
                columns = None
                continue
        if len(fields) != columns:
            error = error or f"line {number}: {len(fields)} columns, the file has {columns}"
            continue
        if not -columns <= tag_column < columns or tag_column in (0, -columns):
            error = error or f"line {number}: data.tag_column {tag_column} is not a tag column of {columns}"
            continue
        tokens.append(fields[0])
        tags.append(fields[tag_column])
    flush()
    return records
