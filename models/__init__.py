"""Single-device PyTorch modules for rayseq.

Nothing here knows about ranks, devices of other processes or Ray: a model is an
ordered list of layers (``model.layers``, a ``ModuleDict`` keyed ``"0".."N-1"``) whose
forward takes and returns tensors (or tuples of tensors), so the pipeline engine in
``pipelines/`` can cut it into stages anywhere.
"""

from models.config import ModelConfig
from models.decoding import Hypothesis, generate
from models.seq2seq import Seq2Seq, build_seq2seq
from models.seq2vec import SequenceClassifier, build_seq2vec

__all__ = ["Hypothesis", "ModelConfig", "Seq2Seq", "SequenceClassifier", "build_seq2seq", "build_seq2vec", "generate"]
