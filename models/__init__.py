"""Single-device PyTorch modules for rayseq.

Nothing here knows about ranks, devices of other processes or Ray: a model is an
ordered list of layers (``model.layers``, a ``ModuleDict`` keyed ``"0".."N-1"``) whose
forward takes and returns tensors, so the pipeline engine in ``pipelines/`` can cut it
into stages anywhere.
"""

from models.config import ModelConfig
from models.seq2vec import SequenceClassifier, build_seq2vec

__all__ = ["ModelConfig", "SequenceClassifier", "build_seq2vec"]
