"""Model hyper-parameters: one dataclass, each field documented where it is declared."""

from __future__ import annotations

from dataclasses import dataclass

CELLS = ("lstm", "gru")
POOLINGS = ("last", "mean")


@dataclass(kw_only=True)
class ModelConfig:
    kind: str = "seq2vec"
    """Application shape: ``seq2vec`` (sequence -> label)."""
    cell: str = "lstm"
    """Recurrent cell of every layer: ``lstm`` or ``gru``."""
    embed_dim: int = 128
    """Token embedding width."""
    hidden_size: int = 256
    """Hidden width of each recurrent layer (per direction)."""
    num_layers: int = 2
    """Number of recurrent layers in the stack."""
    bidirectional_bottom: bool = True
    """Make layer 0 bidirectional (GNMT): its output is ``2 * hidden_size`` wide."""
    residual_from: int = 2
    """First layer (0-based) with a residual connection; GNMT uses the third (2)."""
    dropout: float = 0.3
    """Dropout on each recurrent layer's input and on the pooled features."""
    pooling: str = "mean"
    """seq2vec pooling: ``last`` state or masked ``mean`` over valid steps."""

    def __post_init__(self) -> None:
        if self.kind != "seq2vec":
            raise ValueError(f"model.kind: unknown kind {self.kind!r}; known: seq2vec")
        if self.cell not in CELLS:
            raise ValueError(f"model.cell: {self.cell!r} is not one of {CELLS}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"model.pooling: {self.pooling!r} is not one of {POOLINGS}")
        for name in ("embed_dim", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.residual_from < 1:
            raise ValueError(
                f"model.residual_from must be >= 1 (layer 0 changes width), got {self.residual_from}"
            )
