"""Single-device PyTorch modules for rayseq.

Nothing here knows about ranks, devices of other processes or Ray: a model is an
ordered list of layers (``model.layers``, a ``ModuleDict`` keyed ``"0".."N-1"``) whose
forward takes and returns tensors (or tuples of tensors), so the pipeline engine in
``pipelines/`` can cut it into stages anywhere.

The names below load on first use: ``models.config`` is imported by the data pipeline,
whose Ray Data workers must not pay for importing torch (~1.5 s of CPU each).
"""

from __future__ import annotations

import importlib

_LAZY = {"ModelConfig": "models.config", "Hypothesis": "models.decoding", "generate": "models.decoding",
         "Seq2Seq": "models.seq2seq", "build_seq2seq": "models.seq2seq",
         "SequenceClassifier": "models.seq2vec", "build_seq2vec": "models.seq2vec"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
