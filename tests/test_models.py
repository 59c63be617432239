"""Model unit tests: masking, pooling, residuals, seeded dropout. No Ray."""

from __future__ import annotations

import pytest
import torch

from models import ModelConfig, build_seq2vec, frontends, layers
from models.dropout import SeededDropout, dropout_key
from models.layers import PooledClassifier, RecurrentLayer


def small_config(**overrides) -> ModelConfig:
    values = dict(embed_dim=8, hidden_size=8, num_layers=3, dropout=0.0)
    values.update(overrides)
    return ModelConfig(**values)


# DENSE_MAX_PADDING -1: every padded batch packed; 1: every batch dense over its padding.
RNN_PATHS = pytest.mark.parametrize("dense_max_padding", [-1.0, 1.0], ids=["packed", "dense"])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("num_layers", [1, 3])
@RNN_PATHS
def test_padding_does_not_change_outputs(cell, pooling, num_layers, dense_max_padding, monkeypatch):
    monkeypatch.setattr(layers, "DENSE_MAX_PADDING", dense_max_padding)
    torch.manual_seed(0)
    model = build_seq2vec(small_config(cell=cell, pooling=pooling, num_layers=num_layers),
                          frontend=frontends.tokens(30), num_labels=3).eval()
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


@RNN_PATHS
def test_recurrent_layer_zeroes_padded_steps_and_adds_residual(dense_max_padding, monkeypatch):
    monkeypatch.setattr(layers, "DENSE_MAX_PADDING", dense_max_padding)
    layer = RecurrentLayer(cell="lstm", input_size=4, hidden_size=4, bidirectional=False, residual=True, dropout=0.0,
                           stream=1)
    x = torch.randn(2, 5, 4)
    lengths = torch.tensor([5, 3])
    y = layer(x, lengths)
    torch.testing.assert_close(y[1, 3:], x[1, 3:])  # residual only: the RNN part is zero there
    assert y.shape == (2, 5, 4)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("lengths", [[6, 5, 6, 3], [2, 6, 1, 6], [4, 4, 3, 4]])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dense_and_packed_runs_agree_in_values_and_gradients(cell, bidirectional, lengths, dtype, monkeypatch):
    """The dense path over padding (bucketed batches) is the packed computation: same
    outputs, same gradients for inputs and weights, with keyed dropout on and the batch
    wider than its longest row (a micro-batch of a wider batch). float32 is what trains,
    and on CPU its dense LSTM call runs a different kernel (oneDNN) than packing does."""
    torch.manual_seed(0)
    layer = RecurrentLayer(cell=cell, input_size=5, hidden_size=4, bidirectional=bidirectional,
                           residual=False, dropout=0.3, stream=2).to(dtype).train()
    x = torch.randn(4, 8, 5, dtype=dtype, requires_grad=True)
    weights = torch.randn(4, 8, layer.output_size, dtype=dtype)
    runs = []
    for dense_max_padding in (-1.0, 1.0):
        monkeypatch.setattr(layers, "DENSE_MAX_PADDING", dense_max_padding)
        x.grad = None
        layer.zero_grad()
        with dropout_key(3, 1):
            y = layer(x, torch.tensor(lengths))
        (y * weights).sum().backward()
        runs.append((y.detach(), x.grad.clone(), [p.grad.clone() for p in layer.parameters()]))
    (y_packed, dx_packed, dw_packed), (y_dense, dx_dense, dw_dense) = runs
    torch.testing.assert_close(y_dense, y_packed)
    torch.testing.assert_close(dx_dense, dx_packed)
    for dense, packed in zip(dw_dense, dw_packed):
        torch.testing.assert_close(dense, packed)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_nan_in_padding_reaches_no_output_or_gradient_on_the_dense_path(bidirectional, monkeypatch):
    monkeypatch.setattr(layers, "DENSE_MAX_PADDING", 1.0)
    layer = RecurrentLayer(cell="lstm", input_size=3, hidden_size=3, bidirectional=bidirectional, residual=False,
                           dropout=0.0, stream=0)
    x = torch.randn(2, 5, 3)
    x[1, 3:] = float("nan")
    x.requires_grad_(True)
    layer(x, torch.tensor([5, 3])).sum().backward()
    assert torch.isfinite(x.grad).all() and all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_a_row_without_steps_is_refused_on_both_paths():
    layer = RecurrentLayer(cell="gru", input_size=3, hidden_size=3, bidirectional=True, residual=False, dropout=0.0,
                           stream=0)
    for lengths in ([4, 4, 4, 0], [4, 1, 0, 2]):  # 25% padding (dense), 56% (packed)
        with pytest.raises(ValueError, match=r"every row needs at least one step, got lengths \[4, "):
            layer(torch.randn(4, 4, 3), torch.tensor(lengths))


def test_a_nearly_full_cpu_batch_runs_dense_and_a_ragged_one_packed(monkeypatch):
    layer = RecurrentLayer(cell="lstm", input_size=3, hidden_size=3, bidirectional=True, residual=False, dropout=0.0,
                           stream=0)
    calls = []
    monkeypatch.setattr(layers, "pack_padded_sequence",
                        lambda *a, **k: calls.append("packed") or torch.nn.utils.rnn.pack_padded_sequence(*a, **k))
    x = torch.randn(4, 10, 3)
    layer(x, torch.tensor([10, 10, 9, 10]))  # 2.5% padding
    assert calls == []
    layer(x, torch.tensor([10, 3, 2, 4]))  # 52.5% padding
    assert calls == ["packed"]


@pytest.mark.parametrize("device_type, padding, dense", [
    ("cpu", 0.0, True), ("cpu", 0.1, True), ("cpu", layers.DENSE_MAX_PADDING, True), ("cpu", 0.3, False),
    ("cuda", 0.0, True), ("cuda", 0.01, False), ("cuda", 0.5, False),
])
def test_the_dense_or_packed_rule_depends_on_the_device(device_type, padding, dense):
    """On CUDA only a batch without padding skips packing: cuDNN runs packed batches natively."""
    assert layers.runs_dense(device_type, padding) is dense


def test_a_layer_asks_the_rule_with_its_inputs_device_and_padding(monkeypatch):
    asked = []
    monkeypatch.setattr(layers, "runs_dense",
                        lambda device_type, padding: asked.append((device_type, padding)) or False)
    layer = RecurrentLayer(cell="gru", input_size=3, hidden_size=3, bidirectional=False, residual=False, dropout=0.0,
                           stream=0)
    layer(torch.randn(4, 10, 3), torch.tensor([10, 10, 9, 10]))
    assert asked == [("cpu", pytest.approx(0.025))]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("bidirectional", [True, False])
def test_cuda_layer_equals_cpu_layer_on_ragged_and_full_batches(bidirectional):
    torch.manual_seed(0)
    layer = RecurrentLayer(cell="lstm", input_size=5, hidden_size=4, bidirectional=bidirectional, residual=False,
                           dropout=0.0, stream=0).double()
    gpu = RecurrentLayer(cell="lstm", input_size=5, hidden_size=4, bidirectional=bidirectional, residual=False,
                         dropout=0.0, stream=0).double().cuda()
    gpu.load_state_dict(layer.state_dict())
    x = torch.randn(4, 7, 5, dtype=torch.float64)
    for lengths in ([7, 7, 7, 7], [7, 6, 7, 7], [7, 2, 5, 1]):  # dense everywhere, CPU-dense, packed
        lengths = torch.tensor(lengths)
        torch.testing.assert_close(gpu(x.cuda(), lengths).cpu(), layer(x, lengths))


def test_residual_needs_matching_width():
    with pytest.raises(ValueError, match=r"input width == output width \(6 != 4\)"):
        RecurrentLayer(cell="gru", input_size=6, hidden_size=4, bidirectional=False, residual=True, dropout=0.0,
                       stream=0)


def test_stack_layout_is_an_ordered_cuttable_list():
    model = build_seq2vec(small_config(num_layers=4), frontend=frontends.tokens(30), num_labels=2)
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
    head = PooledClassifier(input_size=2, num_labels=2, pooling="mean", bidirectional_input=False, dropout=0.0,
                            stream=0)
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    torch.testing.assert_close(head.pool(x, torch.tensor([2])), torch.tensor([[2.0, 3.0]]))


def test_max_pooling_ignores_padding_even_when_valid_steps_are_negative():
    head = PooledClassifier(input_size=2, num_labels=2, pooling="max", bidirectional_input=False, dropout=0.0, stream=0)
    x = torch.tensor([[[-3.0, 2.0], [-1.0, -4.0], [0.0, 100.0]]])  # step 2 is padding
    torch.testing.assert_close(head.pool(x, torch.tensor([2])), torch.tensor([[-1.0, 2.0]]))


def test_attention_pooling_is_a_softmax_weighted_mean_of_the_valid_steps():
    head = PooledClassifier(input_size=2, num_labels=2, pooling="attention", bidirectional_input=False, dropout=0.0,
                            stream=0)
    x = torch.tensor([[[1.0, 2.0], [3.0, -4.0], [100.0, 100.0]]])  # step 2 is padding
    lengths = torch.tensor([2])
    with torch.no_grad():  # a constant score: every valid step weighs the same -> the mean
        head.scorer[2].weight.zero_()
    torch.testing.assert_close(head.pool(x, lengths), torch.tensor([[2.0, -1.0]]))
    with torch.no_grad():  # score = tanh(first feature): weights softmax(tanh([1, 3]))
        head.scorer[0].weight.copy_(torch.tensor([[1.0, 0.0]]))
        head.scorer[0].bias.zero_()
        head.scorer[2].weight.copy_(torch.tensor([[1.0]]))
    w = torch.tensor([1.0, 3.0]).tanh().softmax(0)
    torch.testing.assert_close(head.pool(x, lengths), (w[:, None] * x[0, :2]).sum(0, keepdim=True))
    assert head.pool(x, lengths).abs().max() < 100  # the padded step's 100s never leak


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
        ({"pooling": "sum"}, r"model.pooling"),
        ({"dropout": 1.0}, r"model.dropout must be in \[0, 1\)"),
        ({"num_layers": -1}, r"model.num_layers must be >= 1 \(seq2vec, and vec2seq on images: >= 0\)"),
        ({"num_layers": 0, "kind": "seq2seq"}, r"model.num_layers must be >= 1"),
    ],
)
def test_model_config_errors_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**overrides)


def test_a_slice_built_alone_has_the_full_models_weights():
    config = small_config(num_layers=3)
    full = build_seq2vec(config, frontend=frontends.tokens(30), num_labels=2, seed=7)
    part = build_seq2vec(config, frontend=frontends.tokens(30), num_labels=2, seed=7, keep=range(2, 4))
    assert list(part.layers.keys()) == ["2", "3"]
    full_state = full.state_dict()
    for name, value in part.state_dict().items():
        torch.testing.assert_close(value, full_state[name], rtol=0, atol=0)
    other_seed = build_seq2vec(config, frontend=frontends.tokens(30), num_labels=2, seed=8)
    assert not torch.equal(other_seed.state_dict()["layers.2.rnn.weight_hh_l0"],
                           full_state["layers.2.rnn.weight_hh_l0"])
    with pytest.raises(ValueError, match="contiguous"):
        build_seq2vec(config, frontend=frontends.tokens(30), num_labels=2, keep=[1, 3])
