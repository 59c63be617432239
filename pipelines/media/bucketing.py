"""Length bucketing: batches of similar length under a token budget.

Ray Data has no length bucketing, so this is ours, following OpenNMT's and fairseq's
iterators::

    examples --shuffle--> pools of ``pool_size`` --sort each pool by length-->
    cut greedily: rows * longest <= max_tokens --> pad --> shuffle the batches

Each output row of the returned dataset is one padded batch:

    tokens   (rows, longest) int32, padded with 0
             (audio: frames (rows, longest, n_mels) float32, padded with 0)
    lengths  (rows,)         int64, valid tokens (audio: frames) per row
    labels   (rows,)         int64
    index    (rows,)         int64, passed through when the input has an ``index`` column

With ``sort=False`` the same greedy cut runs on the shuffled order (random batching),
which is what the bucketing benchmark compares against.

Translation pairs (:func:`bucket_pairs`) are cut with
``rows * max(longest_source, longest_target) <= max_tokens``, the rule of fairseq
(``num_tokens = max(src_len, tgt_len)``) and OpenNMT (``max_tok_len``), so ``max_tokens``
means what it means in their recipes and neither side's padded tensor (the encoder's
``(rows, S)`` nor the decoder's ``(rows, T)``) exceeds the budget. A sum would halve the
batches those recipes were tuned with and count the two sides as if they cost the same,
which they do not (the decoder also runs the attention and the output softmax).

Each pool is sorted by that cost, ``max(source, target)`` length, then by source, then
target length. fairseq and OpenNMT sort by (source, target), which packs the source side
tightly and leaves the target ragged; sorting by the budget's own cost fills batches up
to it on both sides. Measured on Multi30k train (joint BPE 6000, max_tokens 3072, at most
128 rows, pools of 8192): padding 12.9% -> 6.8% of all slots (source 1.5% -> 9.6%,
target 21% -> 4%: the decoder side, the costlier one, gains), 250 -> 234 batches/epoch.

Each output row is one padded batch::

    src_tokens   (rows, S) int32   source ids, padded with 0; S = longest source
    src_lengths  (rows,)   int64
    tgt_in       (rows, T) int32   [BOS] y, padded with 0 (decoder input, teacher forcing)
    tgt_out      (rows, T) int32   y [EOS], padded with 0 (what the decoder predicts)
    tgt_lengths  (rows,)   int64   len(y) + 1; T = longest
    index        (rows,)   int64   passed through when the input has an ``index`` column

           t=0    1    2    3          (a row with y = [a, b], T = 4)
    tgt_in  BOS   a    b    PAD
    tgt_out  a    b   EOS   PAD        tgt_length = 3
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray

from pipelines.config import BatchingConfig


def plan_batches(lengths: np.ndarray, *, max_tokens: int, max_batch_size: int, sort: bool) -> list[np.ndarray]:
    """Positions in ``lengths`` grouped into batches with ``rows * longest <= max_tokens``.

    A single example longer than the budget still gets a batch of its own (the config
    keeps ``max_length <= max_tokens``, so that only happens on direct calls).
    """
    order = np.argsort(lengths, kind="stable") if sort else np.arange(len(lengths))
    return _greedy_cut(order, np.asarray(lengths), max_tokens=max_tokens, max_batch_size=max_batch_size)


def plan_pair_batches(
    src_lengths: np.ndarray, tgt_lengths: np.ndarray, *, max_tokens: int, max_batch_size: int, sort: bool
) -> list[np.ndarray]:
    """Positions of pairs grouped into batches with ``rows * max(longest_src, longest_tgt) <= max_tokens``.

    ``sort`` orders by ``max(src, tgt)`` (the budget's cost), then source, then target
    length (stable), before the cut; see the module docstring for why.
    """
    src_lengths, tgt_lengths = np.asarray(src_lengths), np.asarray(tgt_lengths)
    cost = np.maximum(src_lengths, tgt_lengths)
    order = np.lexsort((tgt_lengths, src_lengths, cost)) if sort else np.arange(len(src_lengths))
    return _greedy_cut(order, cost, max_tokens=max_tokens, max_batch_size=max_batch_size)


def _greedy_cut(order: np.ndarray, lengths: np.ndarray, *, max_tokens: int, max_batch_size: int) -> list[np.ndarray]:
    """Cut ``order`` into runs with ``rows * max(lengths[run]) <= max_tokens`` and ``rows <= max_batch_size``."""
    batches: list[np.ndarray] = []
    start, longest = 0, 0
    for i, pos in enumerate(order):
        longest_if_added = max(longest, int(lengths[pos]))
        rows_if_added = i - start + 1
        if rows_if_added > 1 and (
            rows_if_added * longest_if_added > max_tokens or rows_if_added > max_batch_size
        ):
            batches.append(order[start:i])
            start, longest_if_added = i, int(lengths[pos])
        longest = longest_if_added
    if start < len(order):
        batches.append(order[start:])
    return batches


def pad_batch(ids: list, value: int = 0) -> np.ndarray:
    """Rows padded with ``value`` to the largest size in every dimension: token ids (or
    tags) ``(rows, longest)`` int32; rows of more dimensions in the first row's dtype:
    audio frames ``(rows, longest, n_mels)``, a tagger's characters ``(rows, longest
    sentence, longest word)``, chords ``(rows, longest, 4)``."""
    first = np.asarray(ids[0])
    dtype = first.dtype if first.ndim > 1 else np.int32
    shape = (len(ids), *(max(np.shape(x)[d] for x in ids) for d in range(first.ndim)))
    out = np.full(shape, value, dtype=dtype)
    for row, x in enumerate(ids):
        x = np.asarray(x)
        out[(row, *(slice(0, n) for n in x.shape))] = x
    return out


def length_sorted_batches(ids: list, max_tokens: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Inference batching: ``ids`` (token id lists) sorted by length and cut under
    ``rows * longest <= max_tokens``; yields ``(rows, tokens (rows, longest) int64,
    lengths (rows,) int64)`` with ``rows`` the positions in ``ids``, to put results back."""
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    for rows in plan_batches(lengths, max_tokens=max_tokens, max_batch_size=len(ids), sort=True):
        yield rows, pad_batch([np.asarray(ids[r]) for r in rows]).astype(np.int64), lengths[rows]


def array_batches(arrays: list[np.ndarray], max_positions: int, *,
                  per_step: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Inference batching of frames (audio features, video frames): ``(rows, padded
    (B, longest, ...) in the arrays' dtype, steps (B,) int64)`` sorted by length with
    ``rows * longest <= max_positions``; ``rows`` are positions in ``arrays``, ``steps``
    the model steps (``len // per_step``: audio's front end takes 4 frames a step)."""
    lengths = np.array([len(x) for x in arrays], dtype=np.int64)
    for rows in plan_batches(lengths, max_tokens=max_positions, max_batch_size=len(arrays), sort=True):
        padded = pad_batch([arrays[r] for r in rows])
        yield rows, padded, lengths[rows] // per_step


class _CutPool:
    """``map_batches`` function: one pool of examples in, its padded batches out."""

    def __init__(self, config: BatchingConfig, sort: bool) -> None:
        self.config = config
        self.sort = sort

    def __call__(self, pool: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
        lengths = np.asarray(pool["length"], dtype=np.int64)
        columns = ["tokens", "lengths", "labels"] + (["index"] if "index" in pool else [])
        out: dict[str, list[Any]] = {name: [] for name in columns}
        for rows in plan_batches(
            lengths,
            max_tokens=self.config.max_tokens,
            max_batch_size=self.config.max_batch_size,
            sort=self.sort,
        ):
            out["tokens"].append(pad_batch([pool["ids"][r] for r in rows]))
            out["lengths"].append(lengths[rows])
            out["labels"].append(np.asarray(pool["label"], dtype=np.int64)[rows])
            if "index" in pool:
                out["index"].append(np.asarray(pool["index"], dtype=np.int64)[rows])
        return out


class _CutPairPool:
    """``map_batches`` function: one pool of translation pairs in, its padded batches out."""

    def __init__(self, config: BatchingConfig, sort: bool) -> None:
        self.config = config
        self.sort = sort

    def __call__(self, pool: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
        src_lengths = np.asarray(pool["src_length"], dtype=np.int64)
        tgt_lengths = np.asarray(pool["tgt_length"], dtype=np.int64)
        columns = (["src_tokens", "src_lengths", "tgt_in", "tgt_out", "tgt_lengths"]
                   + (["index"] if "index" in pool else []))
        out: dict[str, list[Any]] = {name: [] for name in columns}
        for rows in plan_pair_batches(
            src_lengths, tgt_lengths,
            max_tokens=self.config.max_tokens,
            max_batch_size=self.config.max_batch_size,
            sort=self.sort,
        ):
            targets = [pool["tgt_ids"][r] for r in rows]  # [BOS] y [EOS]
            out["src_tokens"].append(pad_batch([pool["src_ids"][r] for r in rows]))
            out["src_lengths"].append(src_lengths[rows])
            out["tgt_in"].append(pad_batch([t[:-1] for t in targets]))
            out["tgt_out"].append(pad_batch([t[1:] for t in targets]))
            out["tgt_lengths"].append(tgt_lengths[rows])
            if "index" in pool:
                out["index"].append(np.asarray(pool["index"], dtype=np.int64)[rows])
        return out


def bucket(ds: ray.data.Dataset, config: BatchingConfig, *, seed: int, shuffle: bool = True) -> ray.data.Dataset:
    """Featurized rows ``{ids, length, label, index}`` -> materialized batch rows.

    ``shuffle=False`` (evaluation) keeps the input order inside each pool and the pool
    order, so results line up with the input.
    """
    return bucket_with(ds, _CutPool(config, sort=config.sort), config, seed=seed, shuffle=shuffle)


def bucket_pairs(ds: ray.data.Dataset, config: BatchingConfig, *, seed: int, shuffle: bool = True) -> ray.data.Dataset:
    """Featurized pairs ``{src_ids, tgt_ids, src_length, tgt_length, index}`` -> batch rows.

    ``tgt_ids`` is ``[BOS] y [EOS]`` and ``tgt_length`` is ``len(y) + 1`` (see
    ``pipelines.media.tokenization.encode_targets``); the batch row layout is in this module's
    docstring. ``shuffle`` as in :func:`bucket`.
    """
    return bucket_with(ds, _CutPairPool(config, sort=config.sort), config, seed=seed, shuffle=shuffle)


def bucket_with(ds: ray.data.Dataset, cut: Any, config: BatchingConfig, *, seed: int,
                shuffle: bool) -> ray.data.Dataset:
    """Featurized rows -> materialized batch rows, ``cut`` turning each pool of
    ``config.pool_size`` rows into its padded batches (:class:`_CutPool` and
    :class:`_CutPairPool` here; an application may bring its own). ``shuffle`` as in
    :func:`bucket`."""
    if shuffle:
        ds = ds.random_shuffle(seed=seed)
    batches = ds.map_batches(
        cut,
        batch_size=config.pool_size,
        batch_format="numpy",
        zero_copy_batch=True,
    )
    # Materialize before shuffling the batches: Ray Data would otherwise fuse the cut into
    # the shuffle's map stage, which feeds it single blocks instead of whole pools.
    batches = batches.materialize()
    return batches.random_shuffle(seed=seed + 1).materialize() if shuffle else batches


STREAM_ABOVE = 1_000_000
"""``batching.stream: auto`` streams a training split of more examples than this: its
bucketed batches, materialized whole, hold 1.1-1.3 KB a translation pair in the object
store (measured on Multi30k-shaped corpora, ``bench/ingest.py``: 375 MiB at 300k pairs,
3.0 GiB at 3M, 4.0 GiB at the peak), about 1.2 GiB at this size: past it, more than
the store of a machine with a few GiB of memory holds without spilling."""


def streams(config: BatchingConfig, examples: int) -> bool:
    """Whether ``examples`` training examples stream under ``config.stream``."""
    return config.stream is True or (config.stream == "auto" and examples > STREAM_ABOVE)


class _StreamPool:
    """``map_batches`` function of a streamed epoch: one pool in (consecutive rows), its
    rows permuted and its batches put in an order, both seeded by ``seed`` and the pool's
    first ``index`` (so every execution of the plan gives the same batches in the same
    order), then ``cut`` into padded batches. A ``truncated`` column of the pool becomes
    one count per batch (the pool's total on its first batch, 0 on the others)."""

    def __init__(self, cut: Any, seed: int) -> None:
        self.cut = cut
        self.seed = seed

    def __call__(self, pool: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        truncated = pool.pop("truncated", None)
        rng = np.random.default_rng([self.seed, int(pool["index"][0])])
        order = rng.permutation(len(pool["index"]))
        out = self.cut({name: values[order] for name, values in pool.items()})
        batches = len(out["index"])
        shuffled = rng.permutation(batches)
        out = {name: [values[i] for i in shuffled] for name, values in out.items()}
        if truncated is not None:
            out["truncated"] = [int(np.sum(truncated))] + [0] * (batches - 1)
        return out


def stream_pairs(ds: ray.data.Dataset, config: BatchingConfig, *, seed: int) -> ray.data.Dataset:
    """Featurized pairs (as :func:`bucket_pairs` takes them, with ``index``) -> a lazy
    dataset of batch rows, bucketed on the fly each time it is iterated (each epoch):
    pools of ``config.pool_size`` consecutive rows (Ray Data's ordered execution keeps
    them the same every time), each permuted, sorted and cut as :func:`bucket_pairs`
    cuts, its batches in a seeded order. Nothing is materialized: no global shuffle of
    the examples or of the batches (the worker's ``train.shuffle_buffer`` shuffles batch
    order per epoch, as for materialized batches)."""
    return stream_with(ds, _CutPairPool(config, sort=config.sort), config, seed=seed)


def stream_with(ds: ray.data.Dataset, cut: Any, config: BatchingConfig, *, seed: int) -> ray.data.Dataset:
    """:func:`stream_pairs` with any pool ``cut`` (as :func:`bucket_with`)."""
    return ds.map_batches(_StreamPool(cut, seed), batch_size=config.pool_size, batch_format="numpy",
                          zero_copy_batch=True)


@dataclass
class PaddingStats:
    batches: int
    examples: int
    tokens: int
    """Real tokens (translation: source + target steps)."""
    padded_slots: int
    """Slots of the padded tensors (translation: ``src_tokens`` + ``tgt_out``)."""
    sides: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Translation only: ``{"source": (tokens, slots), "target": (tokens, slots)}``."""
    truncated: int = 0
    """The batches' ``truncated`` counts, where they carry one (streamed batches' counting pass)."""

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.tokens / self.padded_slots if self.padded_slots else 0.0

    def side_padding_fraction(self, side: str) -> float:
        """Padding fraction of ``source`` or ``target`` alone (translation batches)."""
        tokens, slots = self.sides[side]
        return 1.0 - tokens / slots if slots else 0.0

    @property
    def mean_batch_size(self) -> float:
        return self.examples / self.batches if self.batches else 0.0

    def report(self) -> dict[str, float]:
        """The figures the data-preparation line and the run summary show."""
        sides = {f"{side}_padding_fraction": round(self.side_padding_fraction(side), 4) for side in self.sides}
        return {"train_batches": self.batches, "padding_fraction": round(self.padding_fraction, 4), **sides,
                "mean_batch_size": round(self.mean_batch_size, 1)}


# (padded tensor, lengths) columns of each side of a batch row
_TEXT_SIDES = {"text": ("tokens", "lengths")}
_PAIR_SIDES = {"source": ("src_tokens", "src_lengths"), "target": ("tgt_out", "tgt_lengths")}


def padding_stats(batches: ray.data.Dataset) -> PaddingStats:
    """Count real tokens and padded slots over every batch row (both sides of pair batches)."""

    def measure(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sides = _PAIR_SIDES if "src_tokens" in batch else _TEXT_SIDES
        first_lengths = next(iter(sides.values()))[1]
        out = {"rows": np.array([len(x) for x in batch[first_lengths]])}
        if "truncated" in batch:
            out["truncated"] = np.asarray(batch["truncated"], dtype=np.int64)
        for side, (tensor, lengths) in sides.items():
            out[f"{side}.tokens"] = np.array([int(np.sum(x)) for x in batch[lengths]])
            out[f"{side}.slots"] = np.array([int(t.shape[0] * t.shape[1]) for t in batch[tensor]])
        return out

    stats = batches.map_batches(measure, batch_format="numpy", zero_copy_batch=True)
    totals: dict[str, int] = {"rows": 0, "batches": 0}
    for part in stats.iter_batches(batch_size=None, batch_format="numpy"):
        for key, values in part.items():
            totals[key] = totals.get(key, 0) + int(values.sum())
        totals["batches"] += len(part["rows"])
    sides = {
        side: (totals[f"{side}.tokens"], totals[f"{side}.slots"])
        for side in (*_TEXT_SIDES, *_PAIR_SIDES) if f"{side}.tokens" in totals
    }
    return PaddingStats(
        totals["batches"],
        totals["rows"],
        sum(tokens for tokens, _ in sides.values()),
        sum(slots for _, slots in sides.values()),
        {side: counts for side, counts in sides.items() if side in _PAIR_SIDES},
        totals.get("truncated", 0),
    )
