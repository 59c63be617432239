"""``RecurrentLayer.forward_chunk`` over time chunks equals ``forward`` over whole rows:
outputs, input gradients and weight gradients (float64, dropout on), on the dense chunk
path, the packed one and the default rule, for rows that end inside a chunk and before
one (their state after their end runs on over zeros on the dense path and must reach no
valid output)."""

from __future__ import annotations

import pytest
import torch

from models import layers
from models.dropout import dropout_key
from models.layers import RecurrentLayer

WIDTH = 10
# chunks of 3 steps: [0, 3) [3, 6) [6, 9) [9, 10)
LENGTHS = {
    "full": [10, 10, 10, 10],
    "ragged": [10, 7, 2, 9, 10],  # row 2 ends in chunk 0, before chunks 1-3; rows 1, 3 end inside one
    "short_tail": [10, 3, 4, 10],  # row 1 ends exactly at a chunk boundary
}


def _layer(cell: str, residual: bool, dropout: float) -> RecurrentLayer:
    torch.manual_seed(0)
    return RecurrentLayer(cell=cell, input_size=4, hidden_size=4, bidirectional=False, residual=residual,
                          dropout=dropout, stream=3).double().train()


def _grads(layer: RecurrentLayer, x: torch.Tensor, run) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    layer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    with dropout_key(7, 1):
        y = run(x)
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)  # every output matters differently
    (y * weights).sum().backward()
    return y.detach(), x.grad, [p.grad.clone() for p in layer.parameters()]


def _chunked(layer: RecurrentLayer, x: torch.Tensor, lengths: torch.Tensor, size: int = 3) -> torch.Tensor:
    state, outs = None, []
    for offset in range(0, x.size(1), size):
        y, state = layer.forward_chunk(x[:, offset : offset + size], lengths, offset, state)
        outs.append(y)
    return torch.cat(outs, 1)


@pytest.mark.parametrize("chunk_path", ["dense", "packed", "rule"])
@pytest.mark.parametrize("case", list(LENGTHS))
@pytest.mark.parametrize("cell, residual", [("lstm", False), ("gru", True)])
def test_chunks_equal_whole_rows(chunk_path, case, cell, residual, monkeypatch):
    lengths = torch.tensor(LENGTHS[case])
    layer = _layer(cell, residual, dropout=0.3)
    x = torch.randn(len(lengths), WIDTH, 4, dtype=torch.float64)
    x[lengths.unsqueeze(1) <= torch.arange(WIDTH)] = 5.0  # padding holds garbage
    whole = _grads(layer, x, lambda x: layer(x, lengths))
    if chunk_path != "rule":
        monkeypatch.setattr(RecurrentLayer, "_runs_dense", staticmethod(lambda *a: chunk_path == "dense"))
    chunked = _grads(layer, x, lambda x: _chunked(layer, x, lengths))
    valid = (lengths.unsqueeze(1) > torch.arange(WIDTH)).unsqueeze(-1)
    torch.testing.assert_close(chunked[0], whole[0])
    torch.testing.assert_close(chunked[1] * valid, whole[1] * valid)
    for got, want in zip(chunked[2], whole[2]):
        torch.testing.assert_close(got, want)


def test_a_full_chunk_runs_dense_and_a_ragged_one_packed(monkeypatch):
    """The chunk path asks the same rule as whole rows, with the chunk's own padding."""
    calls = []
    monkeypatch.setattr(layers, "pack_padded_sequence",
                        lambda *a, **k: calls.append(int(a[1].numel())) or torch.nn.utils.rnn.pack_padded_sequence(
                            *a, **k))
    layer = _layer("lstm", False, dropout=0.0)
    lengths = torch.tensor([10, 10, 9, 2])  # chunk 0: full; 1, 2: 25% padding (row 3 ended); 3: 50%
    _chunked(layer, torch.randn(4, WIDTH, 4, dtype=torch.float64), lengths)
    assert calls == [2]  # only the last chunk packs, over its 2 live rows


def test_nan_in_a_dense_chunks_padding_reaches_no_output_or_gradient(monkeypatch):
    monkeypatch.setattr(layers, "DENSE_MAX_PADDING", 1.0)
    layer = _layer("lstm", False, dropout=0.0)
    x = torch.randn(3, WIDTH, 4, dtype=torch.float64)
    lengths = torch.tensor([10, 4, 1])
    x[1, 4:] = float("nan")
    x[2, 1:] = float("nan")
    x.requires_grad_(True)
    y = _chunked(layer, x, lengths)
    assert torch.isfinite(y).all()
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and all(torch.isfinite(p.grad).all() for p in layer.parameters())
