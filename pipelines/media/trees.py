"""``sst-trees``: the Stanford Sentiment Treebank's PTB-style trees, one per line, every
node labelled 0-4 (0-1 negative, 2 neutral, 3-4 positive)::

    (3 (2 (2 The) (2 Rock)) (4 (3 (2 is) ...) (2 .)))

Every labelled node becomes a classification record of its words, lowercased as
``stsa.binary.*`` is (``-LRB-`` -> ``-lrb-``), the sentence (root) first. ``binary``
drops neutral nodes and labels the rest ``0``/``1``, the labels of ``stsa.binary.*``;
``fine`` keeps the five classes ``0``-``4``. A phrase seen again in the same file
(``the``, ``is``, a repeated clause) is kept once, with its first label: training
counts each distinct phrase once, as the published phrase sets do. A tree that does not
parse is one bad record naming file and line; its phrases are not used.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pipelines.config import TREE_LABELS

_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_BINARY = {"0": "0", "1": "0", "3": "1", "4": "1"}


class TreeError(ValueError):
    """A line that is not one well-formed sentiment tree (the message says what and where in it)."""


def tree_phrases(line: str) -> list[tuple[str, list[str]]]:
    """``(label, words)`` of every node of one tree, the root first, then in pre-order."""
    tokens = _TOKEN.findall(line)
    if not tokens:
        raise TreeError("empty line")
    nodes: list[tuple[str, list[str]]] = []
    stack: list[int] = []  # indices into nodes of the open nodes
    position = 0
    while position < len(tokens):
        token = tokens[position]
        if token == "(":
            if position + 1 >= len(tokens) or tokens[position + 1] in "()":
                raise TreeError(f"token {position + 1}: '(' without a label")
            label = tokens[position + 1]
            if label not in ("0", "1", "2", "3", "4"):
                raise TreeError(f"token {position + 2}: label {label!r} is not 0-4")
            if not stack and nodes:
                raise TreeError(f"token {position + 1}: a second tree after the first ended")
            stack.append(len(nodes))
            nodes.append((label, []))
            position += 2
        elif token == ")":
            if not stack:
                raise TreeError(f"token {position + 1}: ')' closes nothing")
            closed = stack.pop()
            if not nodes[closed][1]:
                raise TreeError(f"token {position + 1}: a node with no words")
            position += 1
        else:
            if not stack:
                raise TreeError(f"token {position + 1}: word {token!r} outside the tree")
            for open_node in stack:  # a word belongs to every node still open
                nodes[open_node][1].append(token)
            position += 1
    if stack:
        raise TreeError(f"{len(stack)} unclosed '(' at the end of the line")
    return nodes


def parse_sst_trees(lines: Iterator[tuple[int, str | None, str]], path: str, tree_labels: str) -> list[dict[str, str]]:
    """Records ``{text, label, origin, error}`` of a tree file's ``(line_no, text, error)`` lines."""
    if tree_labels not in TREE_LABELS:
        raise ValueError(f"tree_labels must be one of {TREE_LABELS}, got {tree_labels!r}")
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for number, line, error in lines:
        origin = f"{path}:{number}"
        if line is None or error:
            out.append({"text": "", "label": "", "origin": origin, "error": error})
            continue
        try:
            phrases = tree_phrases(line)
        except TreeError as err:
            out.append({"text": "", "label": "", "origin": origin, "error": f"malformed tree: {err}"})
            continue
        for label, words in phrases:
            if tree_labels == "binary":
                if label not in _BINARY:
                    continue
                label = _BINARY[label]
            text = " ".join(words).lower()
            if text in seen:
                continue
            seen.add(text)
            out.append({"text": text, "label": label, "origin": origin, "error": ""})
    return out
