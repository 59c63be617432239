"""Pure inference on an inference checkpoint: texts in, label probabilities out.

Shared by ``rayseq eval`` (inside Ray Data ``map_batches``), the Serve deployments and
the plain-FastAPI benchmark peer, so all three run the same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.bucketing import length_sorted_batches
from pipelines.checkpoint import load_inference
from pipelines.tokenization import encode_batch, load_tokenizer


class TextClassifier:
    def __init__(self, checkpoint: str | Path, *, device: str = "cpu", max_tokens: int = 8192) -> None:
        loaded = load_inference(checkpoint, device=device)
        self.model = loaded.model
        self.labels = loaded.labels
        self.tokenizer = load_tokenizer(loaded.tokenizer_json)
        self.max_length = loaded.recipe.data.max_length
        self.device = device
        self.max_tokens = max_tokens

    def encode(self, texts: list[str]) -> list[list[int]]:
        return encode_batch(self.tokenizer, texts, self.max_length)[0]

    @torch.inference_mode()
    def probabilities(self, ids: list[list[int]]) -> np.ndarray:
        """``(len(ids), labels)`` probabilities; rows are run sorted by length in chunks of
        at most ``max_tokens`` padded tokens and put back in input order."""
        out = np.zeros((len(ids), len(self.labels)), dtype=np.float32)
        for rows, tokens, lengths in length_sorted_batches(ids, self.max_tokens):
            logits = self.model(torch.from_numpy(tokens).to(self.device), torch.from_numpy(lengths))
            out[rows] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out

    def classify(self, texts: list[str]) -> list[dict[str, Any]]:
        return predictions(self.probabilities(self.encode(texts)), self.labels)


def predictions(probs: np.ndarray, labels: list[str]) -> list[dict[str, Any]]:
    """``(texts, labels)`` probabilities -> the HTTP contract's prediction objects."""
    return [
        {
            "label": labels[int(row.argmax())],
            "score": float(row.max()),
            "scores": {name: float(p) for name, p in zip(labels, row)},
        }
        for row in probs
    ]
