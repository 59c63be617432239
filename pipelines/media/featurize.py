"""Featurizing over Ray Data tasks: ``map_batches`` with a featurizer class run as plain
tasks instead of an actor pool.

A featurizer holds something costly to build (a tokenizer from its JSON, a vocabulary),
which is why callable classes usually get an actor pool. But a pool of one actor is one
process for the whole split, wherever the cluster is, and it costs a process start
(importing torch and the tokenizers) per split and run. Tasks spread over every CPU
Ray has and run in the job's pooled workers; each worker process builds a featurizer
once per configuration and keeps it (a small cache keyed by the class and its
arguments), so a task pays only a hash of the arguments.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable
from typing import Any

import ray

_BUILT: dict[bytes, Callable] = {}
_KEEP = 4


def _apply(batch: dict, *, make: type, kwargs: dict[str, Any]) -> dict:
    key = hashlib.sha1(pickle.dumps((make.__module__, make.__qualname__, kwargs))).digest()
    featurizer = _BUILT.get(key)
    if featurizer is None:
        while len(_BUILT) >= _KEEP:
            _BUILT.pop(next(iter(_BUILT)))
        featurizer = _BUILT[key] = make(**kwargs)
    return featurizer(batch)


def map_featurized(records: ray.data.Dataset, make: type, *, batch_size: int, **kwargs: Any) -> ray.data.Dataset:
    """``records.map_batches(make(**kwargs))`` (numpy batches) as Ray tasks."""
    return records.map_batches(_apply, fn_kwargs={"make": make, "kwargs": kwargs}, batch_size=batch_size,
                               batch_format="numpy")
