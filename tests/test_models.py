"""Model unit tests: masking, pooling, residuals, seeded dropout. No Ray."""

from __future__ import annotations

import pytest
import torch

from models import ModelConfig, build_seq2vec
from models.dropout import SeededDropout, dropout_key
from models.layers import PooledClassifier, RecurrentLayer


def small_config(**overrides) -> ModelConfig:
    values = dict(embed_dim=8, hidden_size=8, num_layers=3, dropout=0.0)
    values.update(overrides)
    return ModelConfig(**values)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_padding_does_not_change_outputs(cell, pooling, num_layers):
    torch.manual_seed(0)
    model = build_seq2vec(small_config(cell=cell, pooling=pooling, num_layers=num_layers), vocab_size=30, num_labels=3).eval()
    tokens = torch.randint(4, 30, (3, 7))
    lengths = torch.tensor([7, 4, 2])
    tokens[1, 4:] = 0
    tokens[2, 2:] = 0
    batched = model(tokens, lengths)
    for row in range(3):
        n = int(lengths[row])
        alone = model(tokens[row : row + 1, :n], lengths[row : row + 1])
        torch.testing.assert_close(batched[row : row + 1], alone, rtol=1e-5, atol=1e-6)
    # Garbage in the padded positions must not leak either.
    noisy = tokens.clone()
    noisy[1, 4:] = 17
    noisy[2, 2:] = 23
    torch.testing.assert_close(model(noisy, lengths), batched)


def test_recurrent_layer_zeroes_padded_steps_and_adds_residual():
    layer = RecurrentLayer(cell="lstm", input_size=4, hidden_size=4, bidirectional=False, residual=True, dropout=0.0, stream=1)
    x = torch.randn(2, 5, 4)
    lengths = torch.tensor([5, 3])
    y = layer(x, lengths)
    torch.testing.assert_close(y[1, 3:], x[1, 3:])  # residual only: the RNN part is zero there
    assert y.shape == (2, 5, 4)


def test_residual_needs_matching_width():
    with pytest.raises(ValueError, match=r"input width == output width \(6 != 4\)"):
        RecurrentLayer(cell="gru", input_size=6, hidden_size=4, bidirectional=False, residual=True, dropout=0.0, stream=0)


def test_stack_layout_is_an_ordered_cuttable_list():
    model = build_seq2vec(small_config(num_layers=4), vocab_size=30, num_labels=2)
    assert list(model.layers.keys()) == ["0", "1", "2", "3", "4", "5"]
    rnn = [model.layers[str(i)] for i in range(1, 5)]
    assert [layer.bidirectional for layer in rnn] == [True, False, False, False]
    assert [layer.residual for layer in rnn] == [False, False, True, True]
    assert len(model.layer_costs()) == 6 and all(c > 0 for c in model.layer_costs())
    # Running the layers one by one equals the model's forward: stages can cut anywhere.
    tokens, lengths = torch.randint(1, 30, (2, 5)), torch.tensor([5, 3])
    x = tokens
    for layer in model.layers.values():
        x = layer(x, lengths)
    torch.testing.assert_close(x, model.eval()(tokens, lengths))


def test_last_pooling_on_bidirectional_top_uses_both_ends():
    head = PooledClassifier(input_size=4, num_labels=2, pooling="last", bidirectional_input=True, dropout=0.0, stream=0)
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    pooled = head.pool(x, torch.tensor([3, 2]))
    torch.testing.assert_close(pooled[0], torch.cat([x[0, 2, :2], x[0, 0, 2:]]))
    torch.testing.assert_close(pooled[1], torch.cat([x[1, 1, :2], x[1, 0, 2:]]))


def test_mean_pooling_ignores_padding():
    head = PooledClassifier(input_size=2, num_labels=2, pooling="mean", bidirectional_input=False, dropout=0.0, stream=0)
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    torch.testing.assert_close(head.pool(x, torch.tensor([2])), torch.tensor([[2.0, 3.0]]))


def test_seeded_dropout_depends_only_on_key_and_stream():
    drop = SeededDropout(0.5, stream=3).train()
    x = torch.ones(4, 6)
    with dropout_key(0, 10, 1):
        a = drop(x)
    torch.rand(100)  # disturb the global RNG: must not matter
    with dropout_key(0, 10, 1):
        b = drop(x)
    with dropout_key(0, 11, 1):
        c = drop(x)
    other_stream = SeededDropout(0.5, stream=4).train()
    with dropout_key(0, 10, 1):
        d = other_stream(x)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, d)
    assert set(a.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(drop.eval()(x), x)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"cell": "rnn"}, r"model.cell: 'rnn' is not one of"),
        ({"pooling": "max"}, r"model.pooling"),
        ({"dropout": 1.0}, r"model.dropout must be in \[0, 1\)"),
        ({"num_layers": -1}, r"model.num_layers must be >= 1 \(seq2vec: >= 0\)"),
        ({"num_layers": 0, "kind": "seq2seq"}, r"model.num_layers must be >= 1"),
    ],
)
def test_model_config_errors_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**overrides)


def test_a_slice_built_alone_has_the_full_models_weights():
    config = small_config(num_layers=3)
    full = build_seq2vec(config, vocab_size=30, num_labels=2, seed=7)
    part = build_seq2vec(config, vocab_size=30, num_labels=2, seed=7, keep=range(2, 4))
    assert list(part.layers.keys()) == ["2", "3"]
    full_state = full.state_dict()
    for name, value in part.state_dict().items():
        torch.testing.assert_close(value, full_state[name], rtol=0, atol=0)
    other_seed = build_seq2vec(config, vocab_size=30, num_labels=2, seed=8)
    assert not torch.equal(other_seed.state_dict()["layers.2.rnn.weight_hh_l0"], full_state["layers.2.rnn.weight_hh_l0"])
    with pytest.raises(ValueError, match="contiguous"):
        build_seq2vec(config, vocab_size=30, num_labels=2, keep=[1, 3])
