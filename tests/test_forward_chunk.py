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


# -- the seq2seq decoder (the wavefront streams it over target chunks) --------------------

def _decoder_layers(input_feeding: bool, cell: str) -> list[torch.nn.Module]:
    """Attention layer, a residual decoder layer and the generator of a small model."""
    from models.seq2seq import AttentionDecoderLayer, DecoderLayer, Generator

    torch.manual_seed(0)
    return [AttentionDecoderLayer(cell=cell, input_size=4, hidden_size=5, memory_size=6, attention="luong",
                                  input_feeding=input_feeding, dropout=0.3, stream=4).double().train(),
            DecoderLayer(cell=cell, hidden_size=5, context_size=6, residual=True, dropout=0.3, stream=5
                         ).double().train(),
            Generator(hidden_size=5, context_size=6, vocab_size=7, dropout=0.3, stream=6).double().train()]


def _decode(layers, memory, tgt_x, lengths, size: int | None) -> torch.Tensor:
    """The decoder over whole rows (``size`` None) or over chunks of ``size`` target
    steps, each layer's state carried (a leaf per chunk, as the wavefront has it)."""
    if size is None:
        x = (memory, tgt_x)
        for layer in layers:
            x = layer(x, lengths)
        return x
    states, outs = [None] * len(layers), []
    for offset in range(0, tgt_x.size(1), size):
        x = (memory, tgt_x[:, offset : offset + size])
        for j, layer in enumerate(layers):
            x, states[j] = layer.forward_chunk(x, lengths, offset, states[j])
        outs.append(x)
    return torch.cat(outs, 1)


@pytest.mark.parametrize("size", [1, 3, 20])
@pytest.mark.parametrize("input_feeding, cell", [(True, "lstm"), (False, "gru"), (True, "gru")])
def test_decoder_chunks_equal_whole_rows(size, input_feeding, cell):
    """Logits, the memory's and target embeddings' gradients and every weight's: the
    input-feeding context and the RNN state cross chunk boundaries (full BPTT)."""
    layers = _decoder_layers(input_feeding, cell)
    src_lengths, tgt_lengths = torch.tensor([4, 2, 3]), torch.tensor([WIDTH, 7, 2])
    memory = torch.randn(3, 4, 6, dtype=torch.float64)
    tgt_x = torch.randn(3, WIDTH, 4, dtype=torch.float64)
    tgt_x[tgt_lengths.unsqueeze(1) <= torch.arange(WIDTH)] = 5.0  # padding holds garbage
    results = []
    for chunk in (None, size):
        for layer in layers:
            layer.zero_grad(set_to_none=True)
        m, t = memory.clone().requires_grad_(True), tgt_x.clone().requires_grad_(True)
        with dropout_key(7, 1):
            y = _decode(layers, m, t, (src_lengths, tgt_lengths), chunk)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        results.append((y.detach(), m.grad, t.grad, [p.grad.clone() for layer in layers for p in layer.parameters()]))
    (whole_y, whole_m, whole_t, whole_w), (y, m, t, w) = results
    torch.testing.assert_close(y, whole_y)
    torch.testing.assert_close(m, whole_m)
    valid = (tgt_lengths.unsqueeze(1) > torch.arange(WIDTH)).unsqueeze(-1)
    torch.testing.assert_close(t * valid, whole_t * valid)
    for got, want in zip(w, whole_w):
        torch.testing.assert_close(got, want)
